"""``cars``: Stanford Cars (Krause et al. 2013), 16,185 photos of 196 car models, as a target task
(the devkit split: 8,144 train / 8,041 test).

Four files: the two image archives (``cars_train/*.jpg``, ``cars_test/*.jpg``), the devkit
(``devkit/cars_meta.mat``: class names; ``devkit/cars_train_annos.mat``: boxes, classes, file
names) and the test labels (``cars_test_annos_withlabels.mat``). Their original host is offline
and only the MD5 values of the original files are published (the ones torchvision checked), so
the four ``*_sha256`` params default to those ``md5:`` pins: place the files in the cache by
hand, or point the ``*_url`` params at a copy (see docs/datasets.md). MATLAB files are read with
scipy (no code runs).

Images are squashed to ``image_size``² (``crop: bbox`` crops to the annotated box first; the
devkit's boxes are 1-based inclusive pixel corners).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from transferscope.data import params as check
from transferscope.data import real
from transferscope.data.download import fetch_files
from transferscope.data.format import write_image_dataset

DEFAULT_PARAMS = {
    "train_images_url": "https://ai.stanford.edu/~jkrause/car196/cars_train.tgz",
    "train_images_sha256": "md5:065e5b463ae28d29e77c1b4b166cfe61",
    "test_images_url": "https://ai.stanford.edu/~jkrause/car196/cars_test.tgz",
    "test_images_sha256": "md5:4ce7ebf6a94d07f1952d94dd34c4d501",
    "devkit_url": "https://ai.stanford.edu/~jkrause/cars/car_devkit.tgz",
    "devkit_sha256": "md5:c3b158d763b6e2245038c8ad08e45376",
    "test_labels_url": "https://ai.stanford.edu/~jkrause/car196/cars_test_annos_withlabels.mat",
    "test_labels_sha256": "md5:b0a2b23655a3edd16d84508592a98d10",
    "image_size": 64,
    "interpolation": "bilinear",  # to image_size: bilinear | bicubic, the model's pretrained_cfg
    "crop": "none",
    "train_per_class": None,
    "test_per_class": None,
    "source_per_class": 2,
    "seed": 0,
    "cache_dir": None,
}
NAME = "cars"
FILES = {
    "train_images_": "cars_train.tgz",
    "test_images_": "cars_test.tgz",
    "devkit_": "car_devkit.tgz",
    "test_labels_": "cars_test_annos_withlabels.mat",
}
DEVKIT = ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat")


def _mat(data: bytes, variable: str, source: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        value = loadmat(io.BytesIO(data), squeeze_me=True)[variable]
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{source}: no readable '{variable}' ({err})") from None
    return np.atleast_1d(value)


def _annotations(records: np.ndarray, folder: str) -> list[dict[str, Any]]:
    """[{member, label (0-based), box (left, top, right, bottom)}] of devkit annotation records."""
    return [
        {
            "member": f"{folder}/{r['fname']}",
            "label": int(r["class"]) - 1,
            "box": (
                float(r["bbox_x1"]) - 1,
                float(r["bbox_y1"]) - 1,
                float(r["bbox_x2"]),
                float(r["bbox_y2"]),
            ),
        }  # fmt: skip
        for r in records
    ]


def read_devkit(devkit: Path, test_labels: Path) -> dict[str, Any]:
    """Class names and the train and test annotations of the verified devkit files."""
    found = dict(real.tar_members(devkit, set(DEVKIT).__contains__))
    for member in DEVKIT:
        if member not in found:
            raise real.missing_member(devkit, member, NAME)
    classes = [str(n) for n in _mat(found[DEVKIT[0]], "class_names", f"{devkit}: {DEVKIT[0]}")]
    train = _mat(found[DEVKIT[1]], "annotations", f"{devkit}: {DEVKIT[1]}")
    test = _mat(test_labels.read_bytes(), "annotations", str(test_labels))
    return {
        "classes": classes,
        "train": _annotations(train, "cars_train"),
        "test": _annotations(test, "cars_test"),
    }


def read_images(
    archive: Path, notes: list[dict], size: int, crop: str, interpolation: str = "bilinear"
) -> np.ndarray:
    """uint8 (N, 3, size, size): the annotated images of a verified archive, in ``notes`` order,
    decoded while streaming through it."""
    where = {n["member"]: i for i, n in enumerate(notes)}
    out = np.zeros((len(notes), 3, size, size), dtype=np.uint8)
    seen = set()
    for member, data in real.tar_members(archive, where.__contains__):
        box = notes[where[member]]["box"]
        region = (lambda w, h, box=box: box) if crop == "bbox" else None
        out[where[member]] = real.decode_image(data, size, region, interpolation)[0]
        seen.add(member)
    for member in where:
        if member not in seen:
            raise real.missing_member(archive, member, NAME)
    return out


def prepare(p: dict[str, Any], out: Path) -> Path:
    """Download (or reuse) Stanford Cars and write it with full params ``p`` to ``out``."""
    real.check_common(NAME, p)
    check.choice(NAME, p, "crop", ("none", "bbox"))
    files = fetch_files(NAME, p, FILES)
    meta = read_devkit(files["devkit_"], files["test_labels_"])
    rng = np.random.default_rng(p["seed"])
    target = {}
    for split in ("train", "test"):
        notes = meta[split]
        labels = np.array([n["label"] for n in notes], dtype=np.int64)
        notes = [notes[i] for i in real.per_class_order(labels, p[f"{split}_per_class"], rng)]
        x = read_images(
            files[f"{split}_images_"], notes, p["image_size"], p["crop"], p["interpolation"]
        )
        target[split] = (x, np.array([n["label"] for n in notes], dtype=np.int64))
    tasks = real.with_placeholder_source(target, p["source_per_class"])
    classes = {task: meta["classes"] for task in ("source", "target")}
    rules = real.rules(
        "Stanford Cars: which of 196 car models a photo shows", p["source_per_class"]
    )
    return write_image_dataset(out, NAME, p, tasks, classes, rules)
