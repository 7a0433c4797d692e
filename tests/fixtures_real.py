"""Tiny archives in exactly the published layouts of CIFAR-10, CUB-200-2011, Stanford Cars and
GLUE SST-2, and a loopback HTTP server to download them from (no test reaches the internet).

Each image's colour encodes its class (:func:`class_colour`), so a test can check that images and
labels stay paired through subsampling, shuffling and resizing.
"""

from __future__ import annotations

import http.server
import io
import pickle
import re
import tarfile
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

N_PARTS = 15
PART_NAMES = [
    "back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg",
    "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat",
]  # fmt: skip


def class_colour(label: int) -> tuple[int, int, int]:
    """The constant RGB colour of every fixture image of class ``label`` (labels 0..4)."""
    return (30 + 50 * label, 200 - 40 * label, 60 + 30 * label)


def label_of(image: np.ndarray) -> int:
    """Inverse of :func:`class_colour` from a (3, H, W) uint8 image (robust to JPEG noise)."""
    return int(round((float(image[0].mean()) - 30) / 50))


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _jpeg(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


# --------------------------------------------------------------------------------------- CIFAR-10


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def cifar10_archive(
    path: Path, per_class: int = 2, n_classes: int = 4, omit=(), payload: Path | None = None
) -> Path:
    """``cifar-10-python.tar.gz``: data_batch_1..5 and test_batch (``per_class`` images of each
    class), batches.meta; ``payload`` puts a code-running object into data_batch_1."""
    root = "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    with tarfile.open(path, "w:gz") as tar:
        for number, name in enumerate(names):
            labels = [c for c in range(n_classes) for _ in range(per_class)]
            data = np.stack(
                [np.repeat(np.array(class_colour(c), np.uint8), 32 * 32) for c in labels]
            )
            batch = {
                b"batch_label": f"batch {number}".encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img_{number}_{i}.png".encode() for i in range(len(labels))],
            }
            if payload is not None and name == "data_batch_1":
                batch[b"extra"] = Payload(payload)
            if name not in omit:
                _add(tar, f"{root}/{name}", pickle.dumps(batch, protocol=2))
        meta = {
            b"label_names": [f"class_{c}".encode() for c in range(n_classes)],
            b"num_cases_per_batch": per_class * n_classes,
            b"num_vis": 3072,
        }
        if "batches.meta" not in omit:
            _add(tar, f"{root}/batches.meta", pickle.dumps(meta, protocol=2))
        _add(tar, f"{root}/readme.html", b"<html></html>")
    return path


# -------------------------------------------------------------------------------------------- CUB


def cub_part_locations(width: int, height: int, rich: bool) -> list[tuple[float, float, int]]:
    """Part p at a 5x3 grid point; a 'poor' image has only parts 0 and 1 visible."""
    locs = []
    for p in range(N_PARTS):
        visible = rich or p < 2
        x, y = (p % 5 + 1) * width / 6, (p // 5 + 1) * height / 4
        locs.append((round(x, 1), round(y, 1), 1) if visible else (0.0, 0.0, 0))
    return locs


def cub_archive(
    path: Path, n_classes: int = 3, train_per_class: int = 3, test_per_class: int = 2, omit=()
) -> dict:
    """``CUB_200_2011.tgz``; returns {image id: (member, label, is_train, (w, h), parts, box)}.

    Test images alternate rich (15 visible parts) and poor (2 visible parts)."""
    root = "CUB_200_2011"
    images, labels, split, boxes, locs = [], [], [], [], []
    truth, files = {}, {}
    image_id = 0
    for c in range(n_classes):
        folder = f"{c + 1:03d}.Bird_{c}"
        for k in range(train_per_class + test_per_class):
            image_id += 1
            is_train = k < train_per_class
            width, height = 60 + 7 * image_id, 40 + 5 * image_id
            member = f"{folder}/Bird_{c}_{image_id:04d}.jpg"
            box = (0.1 * width, 0.2 * height, 0.6 * width, 0.5 * height)  # x, y, w, h
            parts = cub_part_locations(width, height, rich=is_train or k % 2 == 0)
            images.append(f"{image_id} {member}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {int(is_train)}")
            boxes.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in box))
            locs += [f"{image_id} {p + 1} {x} {y} {v}" for p, (x, y, v) in enumerate(parts)]
            files[f"{root}/images/{member}"] = _jpeg(width, height, class_colour(c))
            truth[image_id] = (member, c, is_train, (width, height), parts, box)
    files |= {
        f"{root}/images.txt": images,
        f"{root}/classes.txt": [f"{c + 1} {c + 1:03d}.Bird_{c}" for c in range(n_classes)],
        f"{root}/image_class_labels.txt": labels,
        f"{root}/train_test_split.txt": split,
        f"{root}/bounding_boxes.txt": boxes,
        f"{root}/parts/parts.txt": [f"{p + 1} {n}" for p, n in enumerate(PART_NAMES)],
        f"{root}/parts/part_locs.txt": locs,
        f"{root}/README": ["CUB-200-2011 fixture"],
        "attributes.txt": ["1 has_bill_shape::curved"],
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            if name.split("/", 1)[-1] in omit:
                continue
            data = content if isinstance(content, bytes) else ("\n".join(content) + "\n").encode()
            _add(tar, name, data)
    return truth


# ------------------------------------------------------------------------------------------- Cars


def _annotations(rows: list[tuple[int, int, int, int, int, str]], with_class: bool) -> np.ndarray:
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + (["class"] if with_class else [])
    dtype = [(f, "O") for f in fields + ["fname"]]
    out = np.empty((1, len(rows)), dtype=dtype)
    for i, (x1, y1, x2, y2, label, fname) in enumerate(rows):
        values = [np.uint16(x1), np.uint16(y1), np.uint16(x2), np.uint16(y2)]
        values += [np.uint8(label)] if with_class else []
        out[0, i] = (*values, fname)
    return out


def _mat(variables: dict) -> bytes:
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, variables)
    return buffer.getvalue()


def cars_files(
    folder: Path, n_classes: int = 3, train_per_class: int = 2, test_per_class: int = 2, omit=()
) -> dict[str, Path]:
    """The four Stanford Cars files (devkit layout) in ``folder``: {param prefix: path}."""
    folder.mkdir(parents=True, exist_ok=True)
    names = np.empty((1, n_classes), dtype=object)
    names[0] = [f"Make{c} Model {2010 + c}" for c in range(n_classes)]
    rows = {"train": [], "test": []}
    images = {"train": {}, "test": {}}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        number = 0
        for c in range(n_classes):
            for _ in range(per_class):
                number += 1
                width, height = 50 + 9 * number, 30 + 4 * number
                fname = f"{number:05d}.jpg"
                rows[split].append((3, 2, width - 4, height - 3, c + 1, fname))
                images[split][f"cars_{split}/{fname}"] = _jpeg(width, height, class_colour(c))
    devkit = {
        "devkit/cars_meta.mat": _mat({"class_names": names}),
        "devkit/cars_train_annos.mat": _mat({"annotations": _annotations(rows["train"], True)}),
        "devkit/cars_test_annos.mat": _mat({"annotations": _annotations(rows["test"], False)}),
        "devkit/README.txt": b"cars 196 devkit fixture",
    }
    paths = {}
    for prefix, fname, members in (
        ("train_images_", "cars_train.tgz", images["train"]),
        ("test_images_", "cars_test.tgz", images["test"]),
        ("devkit_", "car_devkit.tgz", devkit),
    ):
        paths[prefix] = folder / fname
        with tarfile.open(paths[prefix], "w:gz") as tar:
            for name, data in members.items():
                if name not in omit:
                    _add(tar, name, data)
    paths["test_labels_"] = folder / "cars_test_annos_withlabels.mat"
    paths["test_labels_"].write_bytes(_mat({"annotations": _annotations(rows["test"], True)}))
    return paths


# ------------------------------------------------------------------------------------------ SST-2


def sst2_zip(path: Path, train_per_class: int = 6, dev_per_class: int = 3, omit=()) -> dict:
    """``SST-2.zip`` (GLUE layout); returns {split: [(sentence, label)]} for train and dev."""
    rows = {}
    for split, per_class in (("train", train_per_class), ("dev", dev_per_class)):
        rows[split] = [
            (f"{split} sentence {i} is {'good' if label else 'bad'} , really ", label)
            for i in range(per_class)
            for label in (0, 1)
        ]
    with zipfile.ZipFile(path, "w") as archive:
        for split, items in rows.items():
            body = "".join(f"{s}\t{label}\n" for s, label in items)
            if f"SST-2/{split}.tsv" not in omit:
                archive.writestr(f"SST-2/{split}.tsv", "sentence\tlabel\n" + body)
        archive.writestr("SST-2/test.tsv", "index\tsentence\n0\tunlabelled test sentence\n")
        archive.writestr("SST-2/original/README.txt", "SST fixture")
    return {split: [(s.strip(), label) for s, label in items] for split, items in rows.items()}


# ------------------------------------------------------------------------------------------ server


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        name = self.path.lstrip("/").split("?")[0]
        self.server.requests.append(name)
        self.server.ranges.append(self.headers.get("Range"))
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if ranged and (Path(self.directory) / name).is_file():  # the rest from a byte offset
            data = (Path(self.directory) / name).read_bytes()
            start = int(ranged.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:])
            return
        if name in self.server.truncate:  # announce the full size, send half, hang up
            data = (Path(self.directory) / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # keep test output quiet
        pass


class LoopbackServer:
    """Serves ``root`` on 127.0.0.1 (a free port) in a thread; records the paths requested.

    Names in ``truncate`` are served cut off after half their bytes (an interrupted download);
    a ``Range: bytes=N-`` request gets the rest from byte N (206), as real servers send it.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(_Handler, directory=str(self.root))
        )
        self.httpd.requests = []
        self.httpd.ranges = []  # the Range header of each request (None: the whole file)
        self.httpd.truncate = set()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests

    @property
    def ranges(self) -> list[str | None]:
        return self.httpd.ranges

    @property
    def truncate(self) -> set[str]:
        return self.httpd.truncate

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------ Hugging Face Hub cache

HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache_entry(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Put ``files`` into a Hugging Face Hub cache exactly as the Hub client leaves them:
    ``models--<org>--<name>/blobs/<sha256>``, ``snapshots/<commit>/<file>`` (relative links to
    the blobs) and ``refs/main`` (the commit). Returns the snapshot directory."""
    import hashlib
    import os

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / HUB_COMMIT
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(HUB_COMMIT)
    return snapshot


def timm_hub_weights(cache: Path, name: str, seed: int = 0) -> dict:
    """Randomly initialised weights of timm model ``name`` (``arch.tag``) in the cache under its
    Hub repo (``timm/<name>``), as ``model.safetensors`` and ``config.json``; returns the state."""
    import json

    import timm
    import torch
    from safetensors.torch import save

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    cfg = model.pretrained_cfg
    config = {"architecture": name.partition(".")[0], "num_classes": model.num_classes,
              "pretrained_cfg": {k: v for k, v in cfg.items() if k != "hf_hub_id"}}  # fmt: skip
    hub_cache_entry(
        cache, cfg["hf_hub_id"],
        {"model.safetensors": save(state), "config.json": json.dumps(config).encode()},
    )  # fmt: skip
    return state


def bert_shaped_hub_model(cache: Path, repo_id: str, words: list[str], seed: int = 0) -> dict:
    """A small randomly initialised BERT (the real architecture, few and narrow layers) with a
    WordPiece vocabulary of ``words``, in the cache under ``repo_id``; returns its state."""
    import json
    import tempfile

    import torch
    from transformers import BertConfig, BertModel

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    torch.manual_seed(seed)
    model = BertModel(config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    files["vocab.txt"] = ("\n".join(vocab) + "\n").encode()
    files["tokenizer_config.json"] = json.dumps(
        {"do_lower_case": True, "model_max_length": 64, "tokenizer_class": "BertTokenizer"}
    ).encode()
    hub_cache_entry(cache, repo_id, files)
    return model.state_dict()
