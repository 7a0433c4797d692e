"""What the downloaded datasets share: their common params, archive members, per-class subsets,
resizing, and the placeholder source task.

A real dataset is a TARGET task; its source is the pre-trained weights. The format still needs
``source`` splits, so each is the first ``source_per_class`` items of each class of the target's
split (in stored order): a placeholder that no experiment on real data trains on (they set
``training.pretrain.epochs: 0``).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from transferscope.data import params as check

COMMON_KEYS = ("seed", "train_per_class", "test_per_class", "source_per_class", "cache_dir")


INTERPOLATIONS = {"bilinear": "BILINEAR", "bicubic": "BICUBIC"}  # timm's names -> PIL's


def check_common(name: str, p: dict[str, Any]) -> None:
    """The params every real dataset has (and ``image_size`` / ``interpolation`` where it has
    them)."""
    check.integer(name, p, "seed")
    check.integer(name, p, "train_per_class", 1, optional=True)
    check.integer(name, p, "test_per_class", 1, optional=True)
    check.integer(name, p, "source_per_class", 1)
    if "image_size" in p:
        check.integer(name, p, "image_size", 8)
    if "interpolation" in p:
        check.choice(name, p, "interpolation", tuple(INTERPOLATIONS))


def missing_member(archive: Path, member: str, name: str) -> ValueError:
    """The error for a member the published layout has but ``archive`` lacks."""
    return ValueError(
        f"{archive}: member '{member}' expected but not found; this is not the published "
        f"layout of {name}. Delete the file and point datasets.{name} at the original one"
    )


def tar_members(archive: Path, wanted) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of the regular files of a tar archive for which ``wanted(name)`` is true,
    in archive order, in one streaming pass (nothing is unpacked to disk)."""
    with tarfile.open(archive, mode="r|*") as tar:
        for member in tar:
            if member.isfile() and wanted(member.name):
                yield member.name, tar.extractfile(member).read()


def resampling(interpolation: str):
    """PIL's resampling filter for a timm ``pretrained_cfg`` interpolation name."""
    from PIL import Image

    return getattr(Image.Resampling, INTERPOLATIONS[interpolation])


def decode_image(
    data: bytes, size: int, box=None, interpolation: str = "bilinear"
) -> tuple[np.ndarray, tuple[int, int]]:
    """An encoded image as uint8 RGB (3, size, size), the region ``box(width, height)`` =
    (left, top, right, bottom) squashed to a square (default: the whole image) with
    ``interpolation`` (the one the model's pre-trained weights were trained with); and the
    original (width, height)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        region = box(*image.size) if box is not None else None
        resized = image.convert("RGB").resize((size, size), resampling(interpolation), box=region)
        original = image.size
    return np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1), original


def per_class_order(labels: np.ndarray, per_class: int | None, rng) -> np.ndarray:
    """Indices of at most ``per_class`` random items of each class (all where None), shuffled."""
    labels = np.asarray(labels)
    if per_class is None:
        return rng.permutation(len(labels))
    keep = []
    for c in np.unique(labels):
        index = np.flatnonzero(labels == c)
        keep.append(rng.choice(index, size=min(per_class, len(index)), replace=False))
    return rng.permutation(np.sort(np.concatenate(keep)))


def first_per_class(labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of the first ``k`` items of each class, in order."""
    seen: dict[int, int] = {}
    first = []
    for i, label in enumerate(np.asarray(labels).tolist()):
        if seen.get(label, 0) < k:
            seen[label] = seen.get(label, 0) + 1
            first.append(i)
    return np.array(first, dtype=np.int64)


def with_placeholder_source(target: dict[str, tuple], k: int) -> dict[str, dict[str, tuple]]:
    """{task: {split: (x, y)}} from the target splits: the source split is the first ``k`` items
    of each class of the target split (``x`` an array or a list)."""
    source = {}
    for split, (x, y) in target.items():
        index = first_per_class(y, k)
        xs = x[index] if isinstance(x, np.ndarray) else [x[i] for i in index]
        source[split] = (xs, np.asarray(y)[index])
    return {"source": source, "target": target}


def rules(description: str, k: int) -> dict[str, str]:
    """The manifest's ``rules`` of a real dataset: what the target is, what the source is."""
    return {
        "target": description,
        "source": f"placeholder: the first {k} items of each class of the TARGET task's splits; "
        "the real source task is the pre-training of the imported weights "
        "(training.pretrain.epochs: 0)",
    }
