"""``sentiment``: generated sentences whose label follows a planted negation rule.

A sentence fills a template with a noun or venue of its task's domain (source: movies, target:
restaurants) and one or two sentiment phrases ``[negation] [intensifier] word``. A phrase's
polarity is its word's polarity (``POSITIVE`` = 1, ``NEGATIVE`` = 0), flipped by a negation;
intensifiers change nothing. All phrases of a sentence agree, and that is the label (0 negative,
1 positive). Sentences are unique within a task (no train/test leakage), labels are balanced,
and every split holds both plain and negated sentences. The words are ordinary English, so a
pre-trained sentence encoder (all-MiniLM-L6-v2) reads each word as one token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferscope.data import params as check
from transferscope.data.format import SPLITS, TASKS, write_text_dataset

DEFAULT_PARAMS = {
    "seed": 0,
    "source_train": 400,
    "target_train": 60,
    "test": 200,
    "negation_prob": 0.35,
    "intensifier_prob": 0.3,
}
NAME = "sentiment"
CLASSES = ["negative", "positive"]
POSITIVE = ["good", "great", "excellent", "wonderful", "delightful", "superb", "pleasant", "fine"]
NEGATIVE = ["bad", "terrible", "awful", "boring", "dreadful", "poor", "horrible", "dull"]
NEGATIONS = ["not", "never", "hardly"]
INTENSIFIERS = ["very", "really", "truly", "quite"]
DOMAINS = {
    "source": {
        "name": "movies",
        "nouns": ["film", "movie", "plot", "script", "acting", "cast", "ending", "story"],
        "venues": ["cinema", "theater", "festival", "premiere"],
    },
    "target": {
        "name": "restaurants",
        "nouns": ["meal", "soup", "service", "dessert", "pasta", "menu", "wine", "steak"],
        "venues": ["restaurant", "cafe", "pub", "diner"],
    },
}
TEMPLATES = [
    "the {noun} was {phrase}",
    "the {noun} at the {venue} was {phrase}",
    "i thought the {noun} was {phrase}",
    "honestly the {noun} was {phrase}",
    "our evening at the {venue} was {phrase}",
    "the {noun} was {phrase} and {phrase}",
]
MAX_WORDS = max(len(t.split(" ")) + 2 * t.count("{phrase}") for t in TEMPLATES)
"""Words in the longest sentence: every phrase at its longest (negation, intensifier, word)."""


def polarity(word: str) -> int:
    """1 for a positive word, 0 for a negative one."""
    if word in POSITIVE:
        return 1
    if word in NEGATIVE:
        return 0
    raise ValueError(f"'{word}' is not a sentiment word; allowed: {POSITIVE + NEGATIVE}")


def phrase_label(word: str, negation: str | None = None) -> int:
    """The label a phrase expresses: the word's polarity, flipped by a negation."""
    return polarity(word) ^ int(negation is not None)


def phrase(word: str, negation: str | None = None, intensifier: str | None = None) -> list[str]:
    """The words of a phrase: ``[negation] [intensifier] word``."""
    return [w for w in (negation, intensifier) if w] + [word]


def sample_phrase(rng: np.random.Generator, label: int, p: dict[str, Any]) -> list[str]:
    """A random phrase expressing ``label``: negated with ``negation_prob`` (then its word has
    the opposite polarity), with an intensifier with ``intensifier_prob``."""
    negated = bool(rng.random() < p["negation_prob"])
    words = POSITIVE if label ^ int(negated) else NEGATIVE
    word = str(words[rng.integers(len(words))])
    negation = str(NEGATIONS[rng.integers(len(NEGATIONS))]) if negated else None
    use = rng.random() < p["intensifier_prob"]
    intensifier = str(INTENSIFIERS[rng.integers(len(INTENSIFIERS))]) if use else None
    return phrase(word, negation, intensifier)


def sample_sentence(rng: np.random.Generator, task: str, label: int, p: dict[str, Any]) -> str:
    """A random sentence of ``task``'s domain expressing ``label``."""
    domain = DOMAINS[task]
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    words = []
    for token in template.split(" "):
        if token == "{phrase}":
            words += sample_phrase(rng, label, p)
        elif token in ("{noun}", "{venue}"):
            choices = domain["nouns" if token == "{noun}" else "venues"]
            words.append(str(choices[rng.integers(len(choices))]))
        else:
            words.append(token)
    return " ".join(words)


def vocabulary() -> dict[str, Any]:
    """The planted rule and its word lists, as recorded in the manifest's ``rules``."""
    return {
        "rule": "label = polarity of the sentiment word, flipped by a negation before it "
        "(intensifiers change nothing); all phrases of a sentence agree",
        "positive_words": POSITIVE,
        "negative_words": NEGATIVE,
        "negations": NEGATIONS,
        "intensifiers": INTENSIFIERS,
        "domains": DOMAINS,
        "templates": TEMPLATES,
        "max_words": MAX_WORDS,
    }


def _check(p: dict[str, Any]) -> None:
    check.integer(NAME, p, "seed")
    for key in ("source_train", "target_train", "test"):
        check.integer(NAME, p, key, 2)
    for key in ("negation_prob", "intensifier_prob"):
        check.number(NAME, p, key, 0.0, 1.0)


def _split(rng, task: str, n: int, p: dict[str, Any], seen: set[str]) -> tuple[list, np.ndarray]:
    """``n`` new sentences (not in ``seen``), balanced labels; the first is plain and the second
    negated, so both kinds occur; stored shuffled."""
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        forced = {0: 0.0, 1: 1.0}.get(i, p["negation_prob"])
        for _ in range(1000):
            text = sample_sentence(rng, task, label, {**p, "negation_prob": forced})
            if text not in seen:
                break
        else:
            raise ValueError(
                f"datasets.{NAME}: could not generate {n} distinct {task} sentences; "
                "ask for fewer (source_train, target_train, test)"
            )
        seen.add(text)
        texts.append(text)
        labels.append(label)
    order = rng.permutation(n)
    return [texts[i] for i in order], np.array(labels, dtype=np.int64)[order]


def prepare(p: dict[str, Any], out: Path) -> Path:
    """Write the sentiment dataset with full params ``p`` to ``out``; returns ``out``."""
    _check(p)
    rng = np.random.default_rng(p["seed"])
    tasks = {}
    for task in TASKS:
        seen: set[str] = set()
        sizes = {"train": p[f"{task}_train"], "test": p["test"]}
        tasks[task] = {split: _split(rng, task, sizes[split], p, seen) for split in SPLITS}
    classes = {task: list(CLASSES) for task in TASKS}
    return write_text_dataset(out, NAME, p, tasks, classes, vocabulary())
