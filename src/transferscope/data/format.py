"""The prepared-dataset format: ``data/<name>/manifest.json`` plus exactly one data file.

Image datasets store ``arrays.safetensors``: for each task (``source``, ``target``) and split
(``train``, ``test``) a uint8 tensor ``<task>_<split>_x`` of shape (N, C, H, W) and an int64
tensor ``<task>_<split>_y`` of class indices (a dataset may add arrays, e.g. CUB's part
locations). Text datasets store ``sentences.parquet`` with columns ``task``, ``split``, ``text``
and ``label``. Loading from safetensors and parquet runs no code.

``manifest.json`` (format_version 1) holds ``name``, ``modality`` (image | text), ``params`` (the
full generator or downloader parameters), ``files`` (the data file), ``content_sha256`` (SHA-256
of that file, checked on every load), ``tasks`` (per task its ``classes`` and the ``train`` and
``test`` sizes), ``rules`` (what decides the label: planted rules, vocabulary or a description)
and, for images, ``image`` (channels, height, width and the per-channel ``mean``/``std`` of the
pixels in [0, 1] over both tasks' training splits).

Writers validate everything first and then write into a temporary directory that replaces the
dataset only when complete (``transferscope.io.atomic_dir``): a failure leaves the previous
dataset, or nothing, in place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transferscope.io import atomic_dir, atomic_path, sha256_file, write_json

FORMAT_VERSION = 1
TASKS = ("source", "target")
SPLITS = ("train", "test")
MANIFEST = "manifest.json"
DATA_FILES = {"image": "arrays.safetensors", "text": "sentences.parquet"}
_REQUIRED = ("name", "modality", "format_version", "files", "content_sha256", "tasks", "params")


@dataclass
class Split:
    """One (task, split) of a prepared dataset: ``x`` is a uint8 tensor (N, C, H, W) of images
    or a list of N sentences, ``y`` an int64 tensor of indices into ``classes``."""

    task: str
    split: str
    x: Any
    y: Any
    classes: list[str]

    def __len__(self) -> int:
        return len(self.y)


def _prepare_hint(data_dir: Path, name: str = "<name>") -> str:
    return f"run `transferscope data prepare {name} --out {data_dir}` to (re)create it"


# ------------------------------------------------------------------------------------- reading


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prepared dataset, checked for the keys every reader relies on."""
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prepared dataset here; {_prepare_hint(data_dir)}")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); {_prepare_hint(data_dir)}") from None
    name = manifest.get("name", "<name>") if isinstance(manifest, dict) else "<name>"
    problem = _manifest_problem(manifest)
    if problem:
        raise ValueError(f"{path}: {problem}; {_prepare_hint(data_dir, name)}")
    return manifest


def _manifest_problem(manifest: Any) -> str | None:
    """What is wrong with a loaded manifest, or None."""
    if not isinstance(manifest, dict):
        return "not a JSON object"
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        return f"not a dataset manifest (missing keys {missing})"
    if manifest["format_version"] != FORMAT_VERSION:
        return f"format_version {manifest['format_version']!r}, this code reads {FORMAT_VERSION}"
    modality = manifest["modality"]
    if modality not in DATA_FILES:
        return f"modality {modality!r} unknown; allowed: {sorted(DATA_FILES)}"
    if manifest["files"] != [DATA_FILES[modality]]:
        return f"files {manifest['files']!r}, expected {[DATA_FILES[modality]]}"
    if modality == "image" and "image" not in manifest:
        return "an image dataset without its 'image' block"
    for task in TASKS:
        entry = manifest["tasks"].get(task) if isinstance(manifest["tasks"], dict) else None
        if not isinstance(entry, dict) or not {"classes", *SPLITS} <= set(entry):
            return f"tasks.{task} must hold 'classes', 'train' and 'test'"
    return None


def manifest_hash(data_dir: str | Path) -> str:
    """SHA-256 of ``manifest.json``: it pins the content hash, params and classes of a dataset."""
    read_manifest(data_dir)
    return sha256_file(Path(data_dir) / MANIFEST)


def data_file(data_dir: str | Path, manifest: dict[str, Any]) -> Path:
    """The dataset's data file, after checking its SHA-256 against the manifest."""
    data_dir = Path(data_dir)
    path = data_dir / manifest["files"][0]
    hint = _prepare_hint(data_dir, manifest["name"])
    if not path.is_file():
        raise FileNotFoundError(f"{path}: data file missing; {hint}")
    actual = sha256_file(path)
    if actual != manifest["content_sha256"]:
        raise ValueError(
            f"{path}: sha256 {actual} does not match the manifest's {manifest['content_sha256']} "
            f"(corrupt or changed since it was written); {hint}"
        )
    return path


def _check_names(task: str, split: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task '{task}'; allowed: 'source', 'target'")
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; allowed: 'train', 'test'")


def load_split(data_dir: str | Path, task: str, split: str) -> Split:
    """One (task, split) of a prepared dataset as a :class:`Split` (data verified first)."""
    import torch

    _check_names(task, split)
    manifest = read_manifest(data_dir)
    classes = list(manifest["tasks"][task]["classes"])
    if manifest["modality"] == "image":
        arrays = load_arrays(data_dir, [f"{task}_{split}_x", f"{task}_{split}_y"], manifest)
        x, y = arrays.values()
    else:
        import polars as pl

        table = pl.read_parquet(data_file(data_dir, manifest)).filter(
            (pl.col("task") == task) & (pl.col("split") == split)
        )
        x, y = table["text"].to_list(), torch.from_numpy(table["label"].to_numpy().astype(np.int64))
    return Split(task, split, x, y.to(torch.int64), classes)


def load_arrays(
    data_dir: str | Path, keys: list[str], manifest: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Named tensors of an image dataset's ``arrays.safetensors`` (verified first): {key: tensor}."""
    from safetensors import safe_open

    manifest = manifest or read_manifest(data_dir)
    path = data_file(data_dir, manifest)
    with safe_open(path, framework="pt") as handle:
        stored = set(handle.keys())
        missing = [key for key in keys if key not in stored]
        if missing:
            raise ValueError(
                f"{path}: arrays {missing} missing; {_prepare_hint(Path(data_dir), manifest['name'])}"
            )
        return {key: handle.get_tensor(key) for key in keys}


def normalize_images(x, manifest: dict[str, Any], preprocessing: dict[str, Any] | None = None):
    """Stored uint8 images (N, C, H, W) as float32, standardised per channel: with the mean and
    std of ``preprocessing`` (a pre-trained model's own, ``transferscope.models.
    image_preprocessing``) when given, else with the dataset's training mean and std (so the
    dataset mean maps to 0). One float32 copy: the arithmetic runs in place."""
    import torch

    if x.dtype != torch.uint8:
        raise ValueError(f"normalize_images expects the stored uint8 images, got {x.dtype}")
    mean, std = _channel_stats(manifest, preprocessing)
    out = x.to(torch.float32)
    return out.div_(255).sub_(mean).div_(std)


def _channel_stats(manifest: dict[str, Any], preprocessing: dict[str, Any] | None):
    """(mean, std) as float32 (1, C, 1, 1) of the model's preprocessing or of the dataset."""
    import torch

    stats = preprocessing if preprocessing is not None else manifest["image"]
    channels = manifest["image"]["channels"]
    if len(stats["mean"]) != channels or len(stats["std"]) != channels:
        raise ValueError(
            f"{stats.get('source', 'normalisation')}: {len(stats['mean'])} channels, dataset "
            f"'{manifest['name']}' has {channels}"
        )
    mean = torch.tensor(stats["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(stats["std"], dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel stays constant
    return mean, std


def dataset_mean_image(manifest: dict[str, Any], preprocessing: dict[str, Any] | None = None):
    """The dataset's mean pixel in the units :func:`normalize_images` produces: float32 (C, 1, 1);
    zero under the dataset's own statistics (the "mean" masking baseline)."""
    import torch

    mean, std = _channel_stats(manifest, preprocessing)
    dataset_mean = torch.tensor(manifest["image"]["mean"], dtype=torch.float32).view(1, -1, 1, 1)
    return ((dataset_mean - mean) / std)[0]


# ------------------------------------------------------------------------------------- writing


def _check_tasks(tasks: dict, classes: dict[str, list[str]], image: bool) -> None:
    """Both tasks and splits present, labels in range, image shapes consistent; else ValueError."""
    shape = None
    for task in TASKS:
        if task not in tasks or task not in classes:
            raise ValueError(f"dataset without task '{task}': both 'source' and 'target' needed")
        for split in SPLITS:
            if split not in tasks[task]:
                raise ValueError(f"{task}: split '{split}' missing; both 'train' and 'test' needed")
            x, y = tasks[task][split]
            y = np.asarray(y)
            where, k = f"{task}/{split}", len(classes[task])
            if len(x) != len(y) or len(y) == 0:
                raise ValueError(f"{where}: {len(x)} samples and {len(y)} labels; need N > 0 each")
            if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k:
                raise ValueError(f"{where}: labels must lie in [0, {k}) (integers)")
            if image:
                if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
                    raise ValueError(f"{where}: images must be a uint8 array (N, C, H, W)")
                if shape is not None and x.shape[1:] != shape:
                    raise ValueError(f"{where}: image shape {x.shape[1:]}, others {shape}")
                shape = x.shape[1:]
            elif not all(isinstance(text, str) and text for text in x):
                raise ValueError(f"{where}: sentences must be non-empty strings")


def pixel_stats(
    arrays: list[np.ndarray], chunk_values: int = 1 << 19
) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 images in [0, 1], summed exactly in
    integers over chunks of about ``chunk_values`` pixel values (no copy of the whole data)."""
    channels = arrays[0].shape[1]
    chunk = max(1, chunk_values // max(1, int(np.prod(arrays[0].shape[1:]))))
    total = np.zeros(channels, dtype=np.int64)
    squares = np.zeros(channels, dtype=np.int64)
    count = 0
    for x in arrays:
        for start in range(0, len(x), chunk):
            block = x[start : start + chunk].astype(np.int64)
            total += block.sum(axis=(0, 2, 3))
            squares += np.square(block, out=block).sum(axis=(0, 2, 3))
            count += block.shape[0] * block.shape[2] * block.shape[3]
    mean = total / count
    var = np.maximum(squares / count - mean**2, 0.0)
    return (mean / 255).tolist(), (np.sqrt(var) / 255).tolist()


def _manifest(name, modality, params, tasks, classes, rules, sha, extra) -> dict[str, Any]:
    manifest = {
        "name": name,
        "modality": modality,
        "format_version": FORMAT_VERSION,
        "params": params,
        "files": [DATA_FILES[modality]],
        "content_sha256": sha,
        "tasks": {
            task: {"classes": list(classes[task])}
            | {split: len(tasks[task][split][1]) for split in SPLITS}
            for task in TASKS
        },
        "rules": rules,
    }
    return manifest | (extra or {})


def write_image_dataset(
    out: str | Path,
    name: str,
    params: dict[str, Any],
    tasks: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
    classes: dict[str, list[str]],
    rules: Any = None,
    arrays: dict[str, np.ndarray] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write an image dataset to ``out`` atomically; returns ``out``.

    ``tasks[task][split] = (x uint8 (N, C, H, W), y class indices)``, ``classes[task]`` the class
    names, ``rules`` what decides the label, ``arrays`` further named arrays for the data file and
    ``extra`` further manifest keys."""
    _check_tasks(tasks, classes, image=True)
    mean, std = pixel_stats([tasks[task]["train"][0] for task in TASKS])
    channels, height, width = tasks["source"]["train"][0].shape[1:]
    tensors = {}
    for task in TASKS:
        for split in SPLITS:
            x, y = tasks[task][split]
            tensors[f"{task}_{split}_x"] = np.ascontiguousarray(x)
            tensors[f"{task}_{split}_y"] = np.asarray(y, dtype=np.int64)
    for key, value in (arrays or {}).items():
        tensors[key] = np.ascontiguousarray(value)
    image = {"channels": int(channels), "height": int(height), "width": int(width)}
    image |= {"mean": mean, "std": std}
    out = Path(out)
    with atomic_dir(out) as tmp:
        with atomic_path(tmp / DATA_FILES["image"]) as path:  # the usual file mode
            write_safetensors(path, tensors)
        sha = sha256_file(tmp / DATA_FILES["image"])
        manifest = _manifest(name, "image", params, tasks, classes, rules, sha, extra)
        write_json(tmp / MANIFEST, manifest | {"image": image})
    return out


SAFETENSORS_DTYPES = {"uint8": "U8", "int64": "I64", "float32": "F32", "float64": "F64",
                      "int32": "I32", "bool": "BOOL"}  # fmt: skip


def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write numpy arrays as a safetensors file byte for byte as ``safetensors.torch.save``
    would, streaming each array from its own memory: the file is never built in memory (that
    copy doubled the peak memory of preparing a dataset)."""
    import json

    import torch
    from safetensors.torch import save

    unknown = {a.dtype.name for a in arrays.values()} - set(SAFETENSORS_DTYPES)
    if unknown or any(a.dtype.byteorder == ">" for a in arrays.values()):
        raise ValueError(f"write_safetensors: unsupported dtypes {sorted(unknown)} or byte order")
    # the tensor order is safetensors' own (by dtype, then name): ask it, with empty stand-ins
    empty = {k: torch.from_numpy(np.empty(0, dtype=a.dtype)) for k, a in arrays.items()}
    stand_in = save(empty)
    order = json.loads(stand_in[8 : 8 + int.from_bytes(stand_in[:8], "little")]).keys()
    header, offset = {}, 0
    for key in order:
        array = arrays[key]
        entry = {"dtype": SAFETENSORS_DTYPES[array.dtype.name], "shape": list(array.shape)}
        header[key] = entry | {"data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # safetensors pads the header to a multiple of 8 bytes
    with open(path, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little") + text)
        for key in order:
            if arrays[key].nbytes:  # an empty array adds no bytes (and no view can be cast)
                handle.write(memoryview(np.ascontiguousarray(arrays[key]).reshape(-1)).cast("B"))


def write_text_dataset(
    out: str | Path,
    name: str,
    params: dict[str, Any],
    tasks: dict[str, dict[str, tuple[list[str], np.ndarray]]],
    classes: dict[str, list[str]],
    rules: Any = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a text dataset to ``out`` atomically; returns ``out``.

    ``tasks[task][split] = (sentences, class indices)``; otherwise as :func:`write_image_dataset`."""
    import polars as pl

    _check_tasks(tasks, classes, image=False)
    rows = {"task": [], "split": [], "text": [], "label": []}
    for task in TASKS:
        for split in SPLITS:
            texts, labels = tasks[task][split]
            rows["task"] += [task] * len(texts)
            rows["split"] += [split] * len(texts)
            rows["text"] += list(texts)
            rows["label"] += np.asarray(labels, dtype=np.int64).tolist()
    table = pl.DataFrame(rows, schema={"task": pl.String, "split": pl.String, "text": pl.String,
                                       "label": pl.Int64})  # fmt: skip
    out = Path(out)
    with atomic_dir(out) as tmp:
        with atomic_path(tmp / DATA_FILES["text"]) as path:
            table.write_parquet(path)
        sha = sha256_file(tmp / DATA_FILES["text"])
        write_json(
            tmp / MANIFEST, _manifest(name, "text", params, tasks, classes, rules, sha, extra)
        )
    return out
