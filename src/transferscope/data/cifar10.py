"""``cifar10``: CIFAR-10 (Krizhevsky 2009), 60,000 32×32 photos of 10 classes, as a target task.

Train: ``data_batch_1`` … ``data_batch_5``; test: ``test_batch``; class names from
``batches.meta``. The batches are Python pickles, which can run code when loaded, so they are
opened only after the archive's SHA-256 has been verified, and then through an unpickler that
accepts nothing but numpy arrays, lists, dicts, bytes and numbers (:func:`safe_loads`).
"""

from __future__ import annotations

import importlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from transferscope.data import real
from transferscope.data.download import fetch_files
from transferscope.data.format import write_image_dataset

DEFAULT_PARAMS = {
    "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "sha256": "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    "image_size": 32,
    "interpolation": "bilinear",  # to image_size: bilinear | bicubic, the model's pretrained_cfg
    "train_per_class": None,
    "test_per_class": None,
    "source_per_class": 2,
    "seed": 0,
    "cache_dir": None,
}
NAME = "cifar10"
FILES = {"": "cifar-10-python.tar.gz"}
ROOT = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),  # how protocol 2 stores bytes
}


class _ArraysOnly(pickle.Unpickler):
    """An unpickler that can build numpy arrays and plain containers, and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}")
        where, attr = _ALLOWED_GLOBALS[(module, name)]
        return getattr(importlib.import_module(where), attr)


def safe_loads(data: bytes, source: str) -> Any:
    """Unpickle ``data`` (Python 2 pickles included) allowing only arrays and plain data; any
    other global is a ValueError naming ``source``."""
    try:
        return _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{source}: {err} (only numpy arrays and plain data are allowed)"
        ) from None


def read_archive(path: Path) -> dict[str, Any]:
    """The verified archive's contents: {"classes": names, "train": (x, y), "test": (x, y)} with
    x uint8 (N, 3, 32, 32) and y int64, in the batches' order."""
    wanted = {f"{ROOT}/{name}" for name in [*TRAIN_BATCHES, "test_batch", "batches.meta"]}
    found = {}
    for member, data in real.tar_members(path, wanted.__contains__):
        found[member] = safe_loads(data, f"{path}: member {member}")
    for member in sorted(wanted):
        if member not in found:
            raise real.missing_member(path, member, NAME)

    def batches(names):
        parts = [found[f"{ROOT}/{n}"] for n in names]
        x = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in parts])
        y = np.concatenate([np.asarray(b[b"labels"], dtype=np.int64) for b in parts])
        return x.reshape(-1, 3, 32, 32), y

    names = found[f"{ROOT}/batches.meta"][b"label_names"]
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return {"classes": classes, "train": batches(TRAIN_BATCHES), "test": batches(["test_batch"])}


def _resize(x: np.ndarray, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """uint8 images (N, 3, 32, 32) at ``size``² (``interpolation``); unchanged at 32."""
    if size == x.shape[-1]:
        return x
    from PIL import Image

    out = np.empty((len(x), 3, size, size), dtype=np.uint8)
    for i, image in enumerate(x):
        resized = Image.fromarray(image.transpose(1, 2, 0)).resize(
            (size, size), real.resampling(interpolation)
        )
        out[i] = np.asarray(resized).transpose(2, 0, 1)
    return out


def prepare(p: dict[str, Any], out: Path) -> Path:
    """Download (or reuse) CIFAR-10 and write it with full params ``p`` to ``out``."""
    real.check_common(NAME, p)
    (archive,) = fetch_files(NAME, p, FILES).values()
    content = read_archive(archive)
    rng = np.random.default_rng(p["seed"])
    target = {}
    for split in ("train", "test"):
        x, y = content[split]
        index = real.per_class_order(y, p[f"{split}_per_class"], rng)
        target[split] = (_resize(x[index], p["image_size"], p["interpolation"]), y[index])
    tasks = real.with_placeholder_source(target, p["source_per_class"])
    classes = {task: content["classes"] for task in ("source", "target")}
    rules = real.rules(
        "CIFAR-10: which of 10 object classes a 32x32 photo shows", p["source_per_class"]
    )
    return write_image_dataset(out, NAME, p, tasks, classes, rules)
