"""``sst2``: the Stanford Sentiment Treebank's binary task (Socher et al. 2013) in its GLUE
version, as a target task: train = ``SST-2/train.tsv`` (67,349 sentences), test =
``SST-2/dev.tsv`` (872; GLUE's test set has no labels). Labels: 0 negative, 1 positive.
"""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from transferscope.data import real
from transferscope.data.download import fetch_files
from transferscope.data.format import write_text_dataset

DEFAULT_PARAMS = {
    "url": "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
    "sha256": "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
    "train_per_class": None,
    "test_per_class": None,
    "source_per_class": 50,
    "seed": 0,
    "cache_dir": None,
}
NAME = "sst2"
FILES = {"": "SST-2.zip"}
CLASSES = ["negative", "positive"]
MEMBERS = {"train": "SST-2/train.tsv", "test": "SST-2/dev.tsv"}


def parse_tsv(text: str, source: str) -> tuple[list[str], np.ndarray]:
    """Sentences (stripped) and labels of a GLUE ``sentence<TAB>label`` file with a header."""
    rows = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not rows or rows[0][:2] != ["sentence", "label"]:
        raise ValueError(f"{source}: expected the header 'sentence<TAB>label'")
    sentences, labels = [], []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or row[1] not in ("0", "1"):
            raise ValueError(f"{source}: line {number} is not 'sentence<TAB>0|1': {row!r}")
        sentences.append(row[0].strip())
        labels.append(int(row[1]))
    return sentences, np.array(labels, dtype=np.int64)


def read_archive(path: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """The verified zip's splits: {"train": (sentences, labels), "test": (...)} (test = dev)."""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        out = {}
        for split, member in MEMBERS.items():
            if member not in names:
                raise real.missing_member(path, member, NAME)
            text = archive.read(member).decode("utf-8")
            out[split] = parse_tsv(text, f"{path}: {member}")
    return out


def prepare(p: dict[str, Any], out: Path) -> Path:
    """Download (or reuse) GLUE SST-2 and write it with full params ``p`` to ``out``."""
    real.check_common(NAME, p)
    (archive,) = fetch_files(NAME, p, FILES).values()
    content = read_archive(archive)
    rng = np.random.default_rng(p["seed"])
    target = {}
    for split, (sentences, labels) in content.items():
        index = real.per_class_order(labels, p[f"{split}_per_class"], rng)
        target[split] = ([sentences[i] for i in index], labels[index])
    tasks = real.with_placeholder_source(target, p["source_per_class"])
    classes = {task: list(CLASSES) for task in ("source", "target")}
    rules = real.rules(
        "SST-2: is a movie-review sentence negative or positive", p["source_per_class"]
    )
    return write_text_dataset(out, NAME, p, tasks, classes, rules)
