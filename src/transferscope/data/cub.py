"""``cub``: CUB-200-2011 (Wah et al. 2011), 11,788 photos of 200 bird species with bounding boxes
and 15 annotated part locations, as a target task (split: ``train_test_split.txt``).

Images are squashed to ``image_size``² (``crop: bbox`` crops to the annotated box first). The
part locations go along: ``arrays.safetensors`` holds ``target_train_parts`` and
``target_test_parts``, float32 (N, 15, 3) = (x, y, visible) in pixels of the stored image; an
invisible part, or one outside a ``bbox`` crop, is (0, 0, 0). The manifest's ``parts`` block
names the parts, orders them by how often they are visible in the training split (``priority``)
and counts the test images that have ``part_players`` usable parts at ``part_radius`` ×
``image_size`` pixels (see ``transferscope.data.parts``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferscope.data import params as check
from transferscope.data import real
from transferscope.data.download import fetch_files
from transferscope.data.format import load_arrays, read_manifest, write_image_dataset
from transferscope.data.parts import choose_parts, part_player_masks, usable_part_images

__all__ = [
    "choose_parts",
    "load_parts",
    "part_player_masks",
    "prepare",
    "require_part_images",
    "usable_part_images",
]

DEFAULT_PARAMS = {
    "url": "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
    "sha256": "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
    "image_size": 64,
    "interpolation": "bilinear",  # to image_size: bilinear | bicubic, the model's pretrained_cfg
    "crop": "none",
    "part_players": 8,
    "part_radius": 0.05,
    "train_per_class": None,
    "test_per_class": None,
    "source_per_class": 2,
    "seed": 0,
    "cache_dir": None,
}
NAME = "cub"
FILES = {"": "CUB_200_2011.tgz"}
ROOT = "CUB_200_2011"
TABLES = {
    "images": "images.txt",
    "labels": "image_class_labels.txt",
    "split": "train_test_split.txt",
    "boxes": "bounding_boxes.txt",
    "classes": "classes.txt",
    "part_names": "parts/parts.txt",
    "part_locs": "parts/part_locs.txt",
}
N_PARTS = 15


def _rows(text: str, fields: int) -> list[list[str]]:
    """Whitespace-separated rows; the last field keeps its spaces (e.g. 'left eye')."""
    return [line.split(None, fields - 1) for line in text.splitlines() if line.strip()]


def read_archive(path: Path) -> dict[str, Any]:
    """The verified archive in one pass: {"tables": {key: text}, "images": {member: bytes}}.
    Images stay encoded in memory (about 1.1 GB for the full archive): the tables they need
    (boxes for ``crop: bbox``) may come after them in the archive."""
    wanted_tables = {f"{ROOT}/{file}": key for key, file in TABLES.items()}
    tables, images = {}, {}
    for member, data in real.tar_members(
        path, lambda m: m in wanted_tables or m.startswith(f"{ROOT}/images/")
    ):
        if member in wanted_tables:
            tables[wanted_tables[member]] = data.decode()
        else:
            images[member] = data
    for key, file in TABLES.items():
        if key not in tables:
            raise real.missing_member(path, f"{ROOT}/{file}", NAME)
    return {"tables": tables, "images": images}


def _annotations(path: Path, content: dict[str, Any]) -> dict[str, Any]:
    """Per image (in images.txt order): member, label, is_train, box, parts (15, 3) as given."""
    tables = content["tables"]
    ids = [int(i) for i, _ in _rows(tables["images"], 2)]
    member = {int(i): f"{ROOT}/images/{rel}" for i, rel in _rows(tables["images"], 2)}
    label = {int(i): int(c) - 1 for i, c in _rows(tables["labels"], 2)}
    train = {int(i): s == "1" for i, s in _rows(tables["split"], 2)}
    box = {int(r[0]): tuple(float(v) for v in r[1:]) for r in _rows(tables["boxes"], 5)}
    parts = {i: np.zeros((N_PARTS, 3), dtype=np.float64) for i in ids}
    for i, p, x, y, visible in _rows(tables["part_locs"], 5):
        parts[int(i)][int(p) - 1] = (float(x), float(y), float(visible.split()[0]))
    for i in ids:
        if member[i] not in content["images"]:
            raise real.missing_member(path, member[i], NAME)
    classes = [name.split(".", 1)[-1] for _, name in _rows(tables["classes"], 2)]
    names = [name.strip() for _, name in _rows(tables["part_names"], 2)]
    return {"ids": ids, "member": member, "label": label, "train": train, "box": box,
            "parts": parts, "classes": classes, "part_names": names}  # fmt: skip


def _image_and_parts(
    data: bytes, parts: np.ndarray, box, size: int, crop: str, interpolation: str = "bilinear"
):
    """The stored image (3, size, size) and its parts in its pixels: scaled with the image,
    moved with a ``bbox`` crop; invisible or cropped-away parts are (0, 0, 0)."""
    x, y, w, h = box
    region = (lambda width, height: (x, y, x + w, y + h)) if crop == "bbox" else None
    pixels, (width, height) = real.decode_image(data, size, region, interpolation)
    left, top, right, bottom = region(width, height) if region else (0, 0, width, height)
    out = np.zeros((N_PARTS, 3), dtype=np.float32)
    for p, (px, py, visible) in enumerate(parts):
        if visible > 0 and left <= px <= right and top <= py <= bottom:
            out[p] = ((px - left) * size / (right - left), (py - top) * size / (bottom - top), 1)
    return pixels, out


def _check(p: dict[str, Any]) -> None:
    real.check_common(NAME, p)
    check.choice(NAME, p, "crop", ("none", "bbox"))
    check.integer(NAME, p, "part_players", 1)
    if p["part_players"] > N_PARTS:
        raise check.invalid(NAME, "part_players", p["part_players"], f"at most {N_PARTS} parts")
    check.number(NAME, p, "part_radius", 1e-6, 1.0)


def parts_info(train: np.ndarray, test: np.ndarray, names: list[str], p: dict) -> dict[str, Any]:
    """The manifest's ``parts`` block from the stored train and test parts."""
    import torch

    visible_train = (train[..., 2] > 0).sum(axis=0)
    priority = sorted(range(N_PARTS), key=lambda q: (-int(visible_train[q]), q))
    radius = p["part_radius"] * p["image_size"]
    usable = usable_part_images(torch.from_numpy(test), p["part_players"], radius, priority)
    visible = (test[..., 2] > 0).sum(axis=1)
    return {
        "names": names,
        "coordinates": "(x, y, visible) in pixels of the stored image; (0, 0, 0) = not visible",
        "priority": priority,
        "part_players": p["part_players"],
        "part_radius": p["part_radius"],
        "radius_px": radius,
        "train_images": len(train),
        "test_images": len(test),
        "test_images_with_players": int(usable.sum()),
        "test_images_with_at_least_k_visible": [int((visible >= k).sum()) for k in range(16)],
    }


def prepare(p: dict[str, Any], out: Path) -> Path:
    """Download (or reuse) CUB-200-2011 and write it with full params ``p`` to ``out``."""
    _check(p)
    (archive,) = fetch_files(NAME, p, FILES).values()
    content = read_archive(archive)
    notes = _annotations(archive, content)
    rng = np.random.default_rng(p["seed"])
    target, parts = {}, {}
    for split in ("train", "test"):
        ids = [i for i in notes["ids"] if notes["train"][i] == (split == "train")]
        labels = np.array([notes["label"][i] for i in ids], dtype=np.int64)
        ids = [ids[j] for j in real.per_class_order(labels, p[f"{split}_per_class"], rng)]
        made = [
            _image_and_parts(
                content["images"][notes["member"][i]], notes["parts"][i], notes["box"][i],
                p["image_size"], p["crop"], p["interpolation"],
            )
            for i in ids
        ]  # fmt: skip
        x = np.stack([m[0] for m in made])
        target[split] = (x, np.array([notes["label"][i] for i in ids], dtype=np.int64))
        parts[split] = np.stack([m[1] for m in made]).astype(np.float32)
    del content
    tasks = real.with_placeholder_source(target, p["source_per_class"])
    classes = {task: notes["classes"] for task in ("source", "target")}
    rules = real.rules(
        "CUB-200-2011: which of 200 bird species a photo shows", p["source_per_class"]
    )
    info = parts_info(parts["train"], parts["test"], notes["part_names"], p)
    arrays = {f"target_{split}_parts": parts[split] for split in ("train", "test")}
    return write_image_dataset(out, NAME, p, tasks, classes, rules, arrays, {"parts": info})


def load_parts(data_dir: str | Path, split: str):
    """The part locations of the target ``split``: float32 (N, 15, 3) = (x, y, visible) in
    pixels of the stored images (in their order), and the manifest's ``parts`` block."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split '{split}'; allowed: 'train', 'test'")
    manifest = read_manifest(data_dir)
    if "parts" not in manifest:
        raise ValueError(f"{data_dir}: dataset '{manifest['name']}' has no part locations")
    key = f"target_{split}_parts"
    return load_arrays(data_dir, [key], manifest)[key], manifest["parts"]


def require_part_images(usable: int, samples: int, info: dict[str, Any]) -> None:
    """Stop when fewer target test images have usable parts than ``interactions.samples`` asks
    for: a game on fewer images than configured would be compared with others silently."""
    if usable >= samples:
        return
    n, radius = info["part_players"], info["radius_px"]
    raise ValueError(
        f"only {usable} CUB test images have {n} visible parts at least {radius:g} px apart "
        f"(datasets.cub.part_players = {n}, part_radius = {info['part_radius']}), fewer than "
        f"interactions.samples = {samples}. Lower one of these keys; the manifest's "
        f"parts.test_images_with_at_least_k_visible counts the images with k visible parts"
    )
