"""``shapes``: generated images whose class is a logical rule over parts planted on a grid.

An image is a ``grid``×``grid`` board of cells (the same cells as the interaction players of a
``grid``×``grid`` patch grid). A cell is empty (dark noise) or holds one glyph from ``GLYPHS``
drawn in a bright intensity from ``INTENSITY_RANGE``. Each class is one rule (``_LAYOUT``):

* ``and``: all its parts present; ``or``: at least one of its alternatives present;
* ``and_not``: its present parts, and its absent part missing.

Every image satisfies exactly its own class's rule. Decoys make the logic necessary: the single
parts of an AND rule and the present-plus-absent parts of an AND-NOT rule also appear in images
of other classes, and an OR class shows each alternative alone and both together. The source and
target tasks share parts and one whole rule, and the target adds parts of its own, so the
manifest's ``rules`` say which knowledge can transfer (``shared``, ``source_only``,
``target_only``: lists of {part, cell}).

Parts are placed on a 3×3 layout; on a larger grid, layout row or column r goes to
``(r * (grid - 1) + 1) // 2``. A cell index is ``row * grid + col``.

Graded variants (``shared_fraction`` f ∈ [0, 1], docs/evidence.md): both tasks use the rules of
``_GRADED_RULES`` over k = 4 planted parts (slots) each, and the target keeps the source's part
in the first s = round(f·k) slots; each other slot's part is the same glyph moved to a cell that
no source part uses, so the two tasks share exactly s of their k parts (f = 1: the target's rules
are the source's) and the interaction players of unshared parts never coincide. Unset (the
default), the layout above is used and the dataset is byte-identical to one made before the
parameter existed (``OPTIONAL_PARAMS``: it is recorded in the manifest only when set).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from transferscope.data import params as check
from transferscope.data.format import TASKS, write_image_dataset

DEFAULT_PARAMS = {
    "seed": 0,
    "image_size": 32,
    "grid": 3,
    "channels": 1,
    "noise": 0.2,
    "distractors": 2,
    "train_per_class": 200,
    "target_train_per_class": 20,
    "test_per_class": 50,
}
OPTIONAL_PARAMS = {"shared_fraction": None}
"""Params recorded in the manifest only when set (``transferscope.data.params.merge``)."""
NAME = "shapes"
GLYPHS = ["square", "cross", "circle", "triangle"]
INTENSITY_RANGE = (0.6, 1.0)  # glyph pixels, as a fraction of 255; noise stays below `noise`

_LAYOUT = {
    "source": [
        {
            "class": "cross_and_circle",
            "type": "and",
            "present": [("cross", 0, 0), ("circle", 1, 1)],
            "absent": [],
        },
        {
            "class": "square_or_square",
            "type": "or",
            "present": [("square", 0, 2), ("square", 2, 0)],
            "absent": [],
        },
        {
            "class": "triangle_without_cross",
            "type": "and_not",
            "present": [("triangle", 2, 2)],
            "absent": [("cross", 0, 0)],
        },
        {
            "class": "circle_and_triangle",
            "type": "and",
            "present": [("circle", 0, 1), ("triangle", 2, 1)],
            "absent": [],
        },
    ],
    "target": [
        {
            "class": "cross_and_circle",
            "type": "and",
            "present": [("cross", 0, 0), ("circle", 1, 1)],
            "absent": [],
        },
        {
            "class": "triangle_without_square",
            "type": "and_not",
            "present": [("triangle", 2, 2)],
            "absent": [("square", 0, 2)],
        },
        {
            "class": "cross_or_cross",
            "type": "or",
            "present": [("cross", 1, 0), ("cross", 1, 2)],
            "absent": [],
        },
        {
            "class": "square_and_circle",
            "type": "and",
            "present": [("square", 2, 0), ("circle", 2, 1)],
            "absent": [],
        },
    ],
}
"""task -> one rule per class: (glyph, row, col) on a 3x3 layout. A literal (read by plan.py)."""

_GRADED_SLOTS = [
    # (glyph, source cell, target cell when the slot is not shared) on the 3x3 layout
    ("cross", (0, 0), (2, 2)),
    ("circle", (1, 1), (0, 1)),
    ("square", (0, 2), (2, 1)),
    ("triangle", (2, 0), (1, 0)),
]
_GRADED_RULES = [
    # (type, present slots, absent slots): one rule per class, the same in both tasks
    ("and", [0, 1], []),
    ("and_not", [0], [1]),
    ("and_not", [1], [0]),
    ("or", [2, 3], []),
]
"""The graded layout: k = 4 slots, four classes per task (a literal, as ``_LAYOUT``)."""


# ---------------------------------------------------------------------------------------- rules


def _cell(row: int, col: int, grid: int) -> int:
    scale = lambda r: (r * (grid - 1) + 1) // 2  # noqa: E731
    return scale(row) * grid + scale(col)


def shared_slots(shared_fraction: float) -> int:
    """s = round(f·k): how many of the k graded slots the target keeps from the source."""
    return round(shared_fraction * len(_GRADED_SLOTS))


def graded_layout(shared_fraction: float) -> dict[str, list[dict[str, Any]]]:
    """The layout (as ``_LAYOUT``) whose tasks share s = round(f·k) of their k planted parts
    (module docstring): slot i holds its source part in the source task, and in the target task
    too when i < s, else the same glyph on its own target cell. Class names name the parts,
    ``<glyph><cell on the 3x3 layout>``."""
    s = shared_slots(shared_fraction)
    layout: dict[str, list[dict[str, Any]]] = {}
    for task in TASKS:
        parts = [
            (glyph, *(cell if task == "source" or i < s else moved))
            for i, (glyph, cell, moved) in enumerate(_GRADED_SLOTS)
        ]
        name = [f"{g}{3 * r + c}" for g, r, c in parts]
        joiner = {"and": "_and_", "and_not": "_without_", "or": "_or_"}
        layout[task] = [
            {
                "class": joiner[kind].join(name[i] for i in present + absent),
                "type": kind,
                "present": [parts[i] for i in present],
                "absent": [parts[i] for i in absent],
            }
            for kind, present, absent in _GRADED_RULES
        ]
    return layout


def rules_manifest(grid: int, shared_fraction: float | None = None) -> dict[str, Any]:
    """The rules on a ``grid``×``grid`` board: per task a list of {class, type, present, absent,
    players} (parts as {part, cell}; players = the sorted cells the rule reads), plus the parts
    ``shared`` by both tasks and those ``source_only`` and ``target_only``. ``shared_fraction``
    (not None) takes the graded layout, and the rules then record it and ``k``, the number of
    planted parts per task."""
    layout = _LAYOUT if shared_fraction is None else graded_layout(shared_fraction)
    rules: dict[str, Any] = {}
    for task in TASKS:
        rules[task] = []
        for spec in layout[task]:
            parts = {
                key: [{"part": g, "cell": _cell(r, c, grid)} for g, r, c in spec[key]]
                for key in ("present", "absent")
            }
            cells = sorted({p["cell"] for p in parts["present"] + parts["absent"]})
            rules[task].append(
                {"class": spec["class"], "type": spec["type"], **parts, "players": cells}
            )
    used = {
        task: {(p["part"], p["cell"]) for r in rules[task] for p in r["present"] + r["absent"]}
        for task in TASKS
    }
    for key, parts in (
        ("shared", used["source"] & used["target"]),
        ("source_only", used["source"] - used["target"]),
        ("target_only", used["target"] - used["source"]),
    ):
        rules[key] = [{"part": g, "cell": c} for g, c in sorted(parts, key=lambda p: (p[1], p[0]))]
    rules["grid"] = grid
    rules["glyphs"] = list(GLYPHS)
    if shared_fraction is not None:
        rules["shared_fraction"] = shared_fraction
        rules["k"] = len(_GRADED_SLOTS)
    return rules


def rule_holds(rule: dict[str, Any], cells: dict[int, str]) -> bool:
    """Whether ``rule`` holds on a board {cell: glyph}."""
    present = [cells.get(p["cell"]) == p["part"] for p in rule["present"]]
    absent = [cells.get(p["cell"]) == p["part"] for p in rule["absent"]]
    if rule["type"] == "or":
        return any(present)
    return all(present) and not any(absent)


def _only_own(rules: list[dict], cells: dict[int, str], label: int) -> bool:
    return [rule_holds(r, cells) for r in rules] == [i == label for i in range(len(rules))]


def _decoys(rules: list[dict], label: int) -> list[list[tuple[int, str]]]:
    """Part sets that other classes' images carry so that rule ``label``'s logic is needed."""
    out = []
    for rule in rules:
        parts = [(p["cell"], p["part"]) for p in rule["present"]]
        if rule["type"] == "and":
            out += [[part] for part in parts]
        elif rule["type"] == "and_not":
            out.append(parts + [(p["cell"], p["part"]) for p in rule["absent"]])
    own = rules[label]
    mine = {(p["cell"], p["part"]) for p in own["present"] + own["absent"]}
    return [d for d in out if not set(d) <= mine]


def _merged(cells: dict[int, str], parts) -> dict[int, str] | None:
    """``cells`` plus ``parts``, or None where a part's cell holds another glyph."""
    out = dict(cells)
    for cell, glyph in parts:
        if out.setdefault(cell, glyph) != glyph:
            return None
    return out


def _board(rng, rules, label: int, j: int, grid: int, distractors: int) -> dict[int, str]:
    """The j-th board of class ``label``: its rule's parts (an OR cycles through each alternative
    alone and all together), one decoy (cycled), then random distractor glyphs."""
    rule = rules[label]
    present = [(p["cell"], p["part"]) for p in rule["present"]]
    if rule["type"] == "or":
        patterns = [[i] for i in range(len(present))] + [list(range(len(present)))]
        present = [present[i] for i in patterns[j % len(patterns)]]
    cells = _merged({}, present)
    options = [d for d in _decoys(rules, label) if d]
    for t in range(len(options)):
        candidate = _merged(cells, options[(j + t) % len(options)])
        if candidate is not None and _only_own(rules, candidate, label):
            cells = candidate
            break
    for _ in range(20):
        free = [c for c in range(grid * grid) if c not in cells]
        k = min(int(rng.integers(0, distractors + 1)), len(free))
        picked = rng.choice(free, size=k, replace=False) if k else []
        glyphs = rng.integers(0, len(GLYPHS), size=k)
        candidate = _merged(cells, [(int(c), GLYPHS[g]) for c, g in zip(picked, glyphs)])
        if candidate is not None and _only_own(rules, candidate, label):
            return candidate
    return cells


# -------------------------------------------------------------------------------------- drawing


def cell_bounds(size: int, grid: int) -> list[tuple[int, int]]:
    """[(start, end)] of the ``grid`` cells along a side of ``size`` pixels (as the players'
    ``transferscope.interactions.players.grid_bounds``)."""
    edges = [(2 * i * size + grid) // (2 * grid) for i in range(grid + 1)]  # halves round up
    return list(zip(edges[:-1], edges[1:]))


def glyph_mask(glyph: str, side: int) -> np.ndarray:
    """A boolean ``side``×``side`` drawing of ``glyph``."""
    r = (side - 1) / 2
    rows, cols = np.mgrid[0:side, 0:side]
    if glyph == "square":  # outline
        return (rows == 0) | (rows == side - 1) | (cols == 0) | (cols == side - 1)
    if glyph == "cross":  # plus sign, two pixels thick on an even side
        return (np.abs(rows - r) < 1) | (np.abs(cols - r) < 1)
    if glyph == "circle":  # ring
        return np.abs(np.hypot(rows - r, cols - r) - r) < 0.8
    if glyph == "triangle":  # filled, apex up
        return np.abs(cols - r) <= rows / max(side - 1, 1) * r + 0.5
    raise ValueError(f"unknown glyph '{glyph}'; allowed: {GLYPHS}")


def render(rng, placements: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """uint8 images (N, channels, size, size) of boards ``placements`` (N, grid²) of glyph
    indices (-1 = empty): noise in [0, noise] everywhere, each glyph centred in its cell with a
    margin, one intensity per glyph and channel from ``INTENSITY_RANGE``."""
    size, grid, channels = p["image_size"], p["grid"], p["channels"]
    n = len(placements)
    x = np.rint(rng.uniform(0, p["noise"], size=(n, channels, size, size)) * 255).astype(np.uint8)
    bounds = cell_bounds(size, grid)
    for i, row in enumerate(placements):
        for cell in np.flatnonzero(row >= 0):
            (r0, r1), (c0, c1) = bounds[cell // grid], bounds[cell % grid]
            extent = min(r1 - r0, c1 - c0)
            side = extent - 2 * max(1, extent // 8)
            top, left = r0 + (r1 - r0 - side) // 2, c0 + (c1 - c0 - side) // 2
            mask = glyph_mask(GLYPHS[row[cell]], side)
            level = np.rint(rng.uniform(*INTENSITY_RANGE, size=channels) * 255).astype(np.uint8)
            patch = x[i, :, top : top + side, left : left + side]
            patch[:, mask] = level[:, None]
    return x


# ------------------------------------------------------------------------------------- generate


def _check(p: dict[str, Any]) -> None:
    check.integer(NAME, p, "seed")
    check.integer(NAME, p, "grid", 3)
    check.choice(NAME, p, "channels", (1, 3))
    check.number(NAME, p, "noise", 0.0, INTENSITY_RANGE[0] - 0.05)
    check.integer(NAME, p, "distractors", 0)
    for key in ("train_per_class", "target_train_per_class", "test_per_class"):
        check.integer(NAME, p, key, 1)
    check.integer(NAME, p, "image_size", 8)
    fraction = p.get("shared_fraction")
    if fraction is not None and (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not 0 <= fraction <= 1
    ):
        raise check.invalid(
            NAME, "shared_fraction", fraction, "must be a number in [0, 1], or null (the default)"
        )
    if p["image_size"] // p["grid"] < 7:
        raise check.invalid(
            NAME, "image_size", p["image_size"], f"too small for grid={p['grid']}: cells need 7 px"
        )


def generate(p: dict[str, Any]) -> dict[str, dict[str, tuple[np.ndarray, ...]]]:
    """The dataset for full params ``p``: {task: {split: (x uint8 (N, C, S, S), y int64 (N,),
    placements int64 (N, grid²))}}; a placement is an index into ``GLYPHS`` or -1 (empty).
    Deterministic given ``p``."""
    rules = rules_manifest(p["grid"], p.get("shared_fraction"))
    rng = np.random.default_rng(p["seed"])
    out: dict[str, dict[str, tuple[np.ndarray, ...]]] = {}
    for task in TASKS:
        train = p["train_per_class"] if task == "source" else p["target_train_per_class"]
        out[task] = {}
        for split, per_class in (("train", train), ("test", p["test_per_class"])):
            boards, labels = [], []
            for label in range(len(rules[task])):
                for j in range(per_class):
                    boards.append(_board(rng, rules[task], label, j, p["grid"], p["distractors"]))
                    labels.append(label)
            placements = np.full((len(boards), p["grid"] ** 2), -1, dtype=np.int64)
            for i, cells in enumerate(boards):
                for cell, glyph in cells.items():
                    placements[i, cell] = GLYPHS.index(glyph)
            order = rng.permutation(len(boards))
            placements, y = placements[order], np.array(labels, dtype=np.int64)[order]
            out[task][split] = (render(rng, placements, p), y, placements)
    return out


def prepare(p: dict[str, Any], out: Path) -> Path:
    """Write the shapes dataset with full params ``p`` to ``out``; returns ``out``."""
    _check(p)
    rules = rules_manifest(p["grid"], p.get("shared_fraction"))
    generated = generate(p)
    tasks = {
        task: {split: (x, y) for split, (x, y, _) in splits.items()}
        for task, splits in generated.items()
    }
    classes = {task: [r["class"] for r in rules[task]] for task in TASKS}
    return write_image_dataset(out, NAME, p, tasks, classes, rules)
