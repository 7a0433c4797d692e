"""``digits``: scikit-learn's bundled 8×8 handwritten digits (1,797 images, offline), upsampled.

The source task classifies ``source_classes`` (default 0–4), the target task the disjoint
``target_classes`` (default 5–9): the same pen strokes, new classes. Per source digit, a
``source_train_fraction`` of its images is for training and the rest for testing; per target
digit, ``target_train_per_class`` images train and the rest test, so every image of the chosen
digits is used exactly once. Class names are the digits as strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferscope.data import params as check
from transferscope.data.format import write_image_dataset

DEFAULT_PARAMS = {
    "seed": 0,
    "image_size": 32,
    "source_classes": [0, 1, 2, 3, 4],
    "target_classes": [5, 6, 7, 8, 9],
    "source_train_fraction": 0.8,
    "target_train_per_class": 10,
}
NAME = "digits"
CHANNELS = 1  # greyscale


def load_images(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 images (N, 1, image_size, image_size) (values 0–16 scaled to
    0–255, bilinear upsampling) and their digits (N,), in scikit-learn's order."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    small = np.rint(bunch.images * (255 / 16)).astype(np.uint8)
    images = np.stack(
        [
            np.asarray(
                Image.fromarray(im).resize((image_size, image_size), Image.Resampling.BILINEAR)
            )
            for im in small
        ]
    )
    return images[:, None], bunch.target.astype(np.int64)


def _check(p: dict[str, Any]) -> None:
    check.integer(NAME, p, "seed")
    check.integer(NAME, p, "image_size", 8)
    check.number(NAME, p, "source_train_fraction", 0.01, 0.99)
    check.integer(NAME, p, "target_train_per_class", 1)
    for key in ("source_classes", "target_classes"):
        value = p[key]
        if (
            not isinstance(value, list)
            or not value
            or len(set(value)) != len(value)
            or not all(isinstance(d, int) and 0 <= d <= 9 for d in value)
        ):
            raise check.invalid(NAME, key, value, "must be a non-empty list of distinct digits 0-9")
    both = sorted(set(p["source_classes"]) & set(p["target_classes"]))
    if both:
        raise ValueError(
            f"datasets.{NAME}: source_classes and target_classes must be disjoint; both hold "
            f"{both} (a target class must be new to the source model)"
        )


def _split_indices(rng, labels, classes, n_train) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: per class a random ``n_train(count)`` of its images train."""
    train, test = [], []
    for digit in classes:
        index = rng.permutation(np.flatnonzero(labels == digit))
        k = n_train(len(index))
        train.append(index[:k])
        test.append(index[k:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def prepare(p: dict[str, Any], out: Path) -> Path:
    """Write the digits dataset with full params ``p`` to ``out``; returns ``out``."""
    _check(p)
    images, labels = load_images(p["image_size"])
    smallest = min(int((labels == d).sum()) for d in p["target_classes"])
    if p["target_train_per_class"] >= smallest:
        raise check.invalid(
            NAME,
            "target_train_per_class",
            p["target_train_per_class"],
            f"must be below {smallest}, the image count of the rarest target digit "
            "(the rest are the test split)",
        )
    rng = np.random.default_rng(p["seed"])
    fraction, per_class = p["source_train_fraction"], p["target_train_per_class"]
    splits = {
        "source": _split_indices(
            rng, labels, p["source_classes"], lambda n: max(1, min(n - 1, round(fraction * n)))
        ),
        "target": _split_indices(rng, labels, p["target_classes"], lambda n: per_class),
    }
    tasks, classes = {}, {}
    for task, (train, test) in splits.items():
        digits = p[f"{task}_classes"]
        lookup = {d: i for i, d in enumerate(digits)}
        classes[task] = [str(d) for d in digits]
        tasks[task] = {
            split: (images[index], np.array([lookup[d] for d in labels[index]], dtype=np.int64))
            for split, index in (("train", train), ("test", test))
        }
    rules = {
        "source": f"which digit: {', '.join(classes['source'])} (scikit-learn's 8x8 digits)",
        "target": f"which digit: {', '.join(classes['target'])}: classes new to the source",
    }
    return write_image_dataset(out, NAME, p, tasks, classes, rules)
