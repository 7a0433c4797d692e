"""Datasets in one format (see ``format.py``): each has a source and a target task with train
and test splits, stored as ``data/<name>/manifest.json`` plus one verified data file.

Offline: ``digits`` (scikit-learn's digits), ``shapes`` (generated images with planted parts and
logical rules), ``sentiment`` (generated sentences with a planted negation rule). Downloaded
through pooch with pinned checksums: ``cifar10``, ``cub``, ``cars``, ``sst2`` (``download.py``).

Importing this package is light (no torch): heavy libraries load inside the functions.
"""

from __future__ import annotations

from transferscope.data.format import (
    Split,
    dataset_mean_image,
    load_split,
    manifest_hash,
    normalize_images,
    read_manifest,
)
from transferscope.data.registry import DATASETS, dataset_names, prepare_dataset

__all__ = [
    "DATASETS",
    "Split",
    "dataset_mean_image",
    "dataset_names",
    "load_split",
    "manifest_hash",
    "normalize_images",
    "prepare_dataset",
    "read_manifest",
]
