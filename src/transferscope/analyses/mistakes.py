"""Common and uncommon mistakes of pairs of models on the same evaluation samples.

For correctness vectors c_a, c_b ∈ {0, 1}ⁿ: common mistakes = #{i: ¬c_a,i ∧ ¬c_b,i} (both
wrong), uncommon = #{i: c_a,i ≠ c_b,i} (exactly one wrong). Neyshabur, Sedghi, Zhang 2020
(Sec. 3.2) find P-T models share more mistakes with each other than RI-T models do, and
inspect the samples a P-T model gets wrong but an RI-T model gets right.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import combinations

import numpy as np
import polars as pl
import torch


def _correctness(values, name: str) -> np.ndarray:
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name}: correctness must be 1-D (one entry per sample), got {arr.shape}")
    if arr.dtype != np.bool_:
        if not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name}: correctness must be boolean or 0/1")
        arr = arr.astype(bool)
    return arr


def _pair(correct_a, correct_b, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    a, b = _correctness(correct_a, names[0]), _correctness(correct_b, names[1])
    if a.shape != b.shape:
        raise ValueError(
            f"{names[0]} has {a.size} samples but {names[1]} has {b.size}; "
            "mistakes compare the same samples"
        )
    return a, b


def pair_mistakes(correct_a, correct_b, names: tuple[str, str] = ("a", "b")) -> dict[str, int]:
    """Counts n, both_wrong (common), only_a_wrong, only_b_wrong, uncommon, both_right."""
    a, b = _pair(correct_a, correct_b, names)
    only_a, only_b = int((~a & b).sum()), int((a & ~b).sum())
    return {
        "n": int(a.size),
        "both_wrong": int((~a & ~b).sum()),
        "only_a_wrong": only_a,
        "only_b_wrong": only_b,
        "uncommon": only_a + only_b,
        "both_right": int((a & b).sum()),
    }


def mistakes_table(
    correct: Mapping[str, object], pairs: Iterable[tuple[str, str]] | None = None
) -> pl.DataFrame:
    """One row per model pair (model_a, model_b, and the `pair_mistakes` counts).

    ``correct`` maps model name → correctness vector; ``pairs`` defaults to all unordered
    pairs in the mapping's order.
    """
    pairs = list(combinations(correct, 2) if pairs is None else pairs)
    unknown = sorted({m for pair in pairs for m in pair} - set(correct))
    if unknown:
        raise ValueError(f"pairs name models without correctness vectors: {unknown}")
    rows = [
        {"model_a": a, "model_b": b, **pair_mistakes(correct[a], correct[b], (a, b))}
        for a, b in pairs
    ]
    schema = {"model_a": pl.String, "model_b": pl.String}
    schema |= {k: pl.Int64 for k in ("n", "both_wrong", "only_a_wrong", "only_b_wrong")}
    schema |= {"uncommon": pl.Int64, "both_right": pl.Int64}
    return pl.DataFrame(rows, schema=schema)


def pt_wrong_rit_right(pt_correct, rit_correct, indices=None) -> np.ndarray:
    """Samples the P-T model gets wrong and the RI-T model right, in sample order.

    Returns positions 0…n−1, or the matching entries of ``indices`` (e.g. dataset indices).
    """
    pt, rit = _pair(pt_correct, rit_correct, ("P-T", "RI-T"))
    positions = np.flatnonzero(~pt & rit)
    if indices is None:
        return positions
    idx = np.asarray(indices)
    if idx.shape != pt.shape:
        raise ValueError(f"indices has shape {idx.shape}, correctness vectors {pt.shape}")
    return idx[positions]
