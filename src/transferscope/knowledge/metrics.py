"""Knowledge metrics on salient interaction sets — one place for every formula.

Notation (Jiang, Cheng, Li, arXiv 2410.08455; formulas reconstructed, see docs/references.md §1):
Ω_pre, Ω_ft, Ω_sc are the salient sets (|I(S)| > τ·max|I|, S ≠ ∅) of the pre-trained model
(through its probe), the fine-tuned and the scratch model on one sample; AND and OR sets are
handled separately by the caller. With sign agreement on, S is *shared* by two models only if
it is salient in both with the same sign of I(S).

    preserved  P = Ω_pre ∩ Ω_ft          discarded D = Ω_pre \\ P          new N = Ω_ft \\ P
    preserved ratio = |P| / |Ω_pre|      new ratio = |N| / |Ω_ft|
    strength-weighted: Σ_{S∈P}|I_pre(S)| / Σ_{S∈Ω_pre}|I_pre(S)|, etc.
    exclusive share  = 1 − |P ∩ Ω_sc| / |P|     (preserved knowledge the scratch model lacks)
    scratch-only     = Ω_sc \\ Ω_ft               (knowledge only the scratch model encodes)
    similarity(I_t, I_T) = Σ_S min(u_t, u_T) / Σ_S max(u_t, u_T),  u = [max(I,0); −min(I,0)]
                           (weighted Jaccard; 1 when both are zero, so every curve ends at 1)
    directness = |Ω_T| / |∪_t Ω_t|

A ratio with an empty denominator is undefined (NaN) and left out of means, never counted 0.
All functions are vectorised over leading (sample) dimensions; the last dimension is the 2^n
subsets in the project's convention (S at index Σ_{i∈S} 2^i).
"""

from __future__ import annotations

import numpy as np


def shared(mask_a, mask_b, i_a, i_b, sign_agreement: bool = True):
    """Salient in both (and with the same sign of I when ``sign_agreement``)."""
    both = mask_a & mask_b
    return both & (np.sign(i_a) == np.sign(i_b)) if sign_agreement else both


def ratio(numerator, denominator):
    """numerator / denominator, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def transfer_metrics(i_pre, i_ft, i_sc, m_pre, m_ft, m_sc, sign_agreement: bool = True) -> dict:
    """Per-sample preserved / discarded / new / exclusive knowledge (arrays over samples)."""
    a_pre, a_ft, a_sc = np.abs(i_pre), np.abs(i_ft), np.abs(i_sc)
    preserved = shared(m_pre, m_ft, i_pre, i_ft, sign_agreement)
    discarded = m_pre & ~preserved
    new = m_ft & ~preserved
    common = preserved & shared(m_ft, m_sc, i_ft, i_sc, sign_agreement)
    scratch_only = m_sc & ~shared(m_ft, m_sc, i_ft, i_sc, sign_agreement)
    count = lambda m: m.sum(-1)  # noqa: E731
    strength = lambda m, a: (a * m).sum(-1)  # noqa: E731
    out = {
        "n_pre": count(m_pre),
        "n_ft": count(m_ft),
        "n_sc": count(m_sc),
        "n_preserved": count(preserved),
        "n_discarded": count(discarded),
        "n_new": count(new),
        "n_preserved_in_scratch": count(common),
        "n_scratch_only": count(scratch_only),
        "strength_preserved": strength(preserved, a_pre),
        "strength_discarded": strength(discarded, a_pre),
        "strength_new": strength(new, a_ft),
        "strength_scratch_only": strength(scratch_only, a_sc),
    }
    out["preserved_ratio"] = ratio(out["n_preserved"], out["n_pre"])
    out["discarded_ratio"] = ratio(out["n_discarded"], out["n_pre"])
    out["new_ratio"] = ratio(out["n_new"], out["n_ft"])
    out["preserved_share_of_ft"] = ratio(out["n_preserved"], out["n_ft"])
    out["preserved_strength_ratio"] = ratio(out["strength_preserved"], strength(m_pre, a_pre))
    out["new_strength_ratio"] = ratio(out["strength_new"], strength(m_ft, a_ft))
    out["exclusive_share"] = 1.0 - ratio(out["n_preserved_in_scratch"], out["n_preserved"])
    out["scratch_only_ratio"] = ratio(out["n_scratch_only"], out["n_sc"])
    out["scratch_only_strength_ratio"] = ratio(out["strength_scratch_only"], strength(m_sc, a_sc))
    return out


def weighted_jaccard(i_a, i_b):
    """Σ min(u_a, u_b) / Σ max(u_a, u_b) with u = [max(I,0); −min(I,0)]; 1 when both are 0."""
    u_a = np.concatenate([np.maximum(i_a, 0), np.maximum(-i_a, 0)], axis=-1)
    u_b = np.concatenate([np.maximum(i_b, 0), np.maximum(-i_b, 0)], axis=-1)
    low, high = np.minimum(u_a, u_b).sum(-1), np.maximum(u_a, u_b).sum(-1)
    out = np.ones(np.shape(high))
    np.divide(low, high, out=out, where=high > 0)
    return out


def convergence_metrics(interactions, masks) -> dict:
    """Per epoch and sample, against the final epoch: similarity and share of the final set
    already salient; and per sample, directness. Inputs are (epochs, samples, 2^n)."""
    interactions, masks = np.asarray(interactions), np.asarray(masks, dtype=bool)
    final_i, final_m = interactions[-1], masks[-1]
    union = masks.any(axis=0)
    return {
        "similarity": weighted_jaccard(interactions, final_i[None]),
        "final_share": ratio((masks & final_m[None]).sum(-1), final_m.sum(-1)[None]),
        "directness": ratio(final_m.sum(-1), union.sum(-1)),
    }


def bootstrap_ci(values, resamples: int = 1000, confidence: float = 0.95, seed: int = 0):
    """(mean, low, high, n) of the finite values: percentile bootstrap of the mean."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(values.mean()), float(low), float(high), int(values.size)


def hierarchical_bootstrap_ci(groups, resamples=1000, confidence=0.95, seed=0):
    """Mean and interval over seeds *and* samples: resample seeds, then samples within each.

    ``groups`` is a list (one per seed) of per-sample arrays. Returns (mean, low, high, n_seeds,
    n_samples)."""
    groups = [np.asarray(g, float)[np.isfinite(np.asarray(g, float))] for g in groups]
    groups = [g for g in groups if g.size]
    if not groups:
        return float("nan"), float("nan"), float("nan"), 0, 0
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for r in range(resamples):
        picks = rng.integers(0, len(groups), len(groups))
        stats[r] = np.mean(
            [groups[k][rng.integers(0, groups[k].size, groups[k].size)].mean() for k in picks]
        )
    tail = (1 - confidence) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    mean = float(np.mean([g.mean() for g in groups]))
    return mean, float(low), float(high), len(groups), int(sum(g.size for g in groups))


def spearman_ci(x, y, resamples=1000, confidence=0.95, seed=0):
    """Spearman's ρ (scipy) with a percentile bootstrap interval over pairs; NaN if < 3 pairs."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan"), int(x.size)
    rho = float(spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(resamples):
        idx = rng.integers(0, x.size, x.size)
        if np.ptp(x[idx]) > 0 and np.ptp(y[idx]) > 0:
            boots.append(spearmanr(x[idx], y[idx]).statistic)
    tail = (1 - confidence) / 2
    low, high = np.quantile(boots, [tail, 1 - tail]) if boots else (np.nan, np.nan)
    return rho, float(low), float(high), int(x.size)


def partial_spearman(x, y, z) -> float:
    """Spearman's ρ of x and y given z: the Pearson correlation of the ranks of x and y after
    each is regressed (least squares, with intercept) on the ranks of z; NaN if undefined."""
    from scipy.stats import rankdata

    rx, ry, rz = (rankdata(np.asarray(v, float)) for v in (x, y, z))
    design = np.column_stack([np.ones_like(rz), rz])
    resid = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in (rx, ry)]
    scale = np.linalg.norm(resid[0]) * np.linalg.norm(resid[1])
    return float(resid[0] @ resid[1] / scale) if scale > 1e-12 else float("nan")


def partial_spearman_ci(x, y, z, resamples=1000, confidence=0.95, seed=0):
    """``partial_spearman`` with a percentile bootstrap interval over triples; NaN if < 4."""
    x, y, z = (np.asarray(v, float) for v in (x, y, z))
    keep = np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
    x, y, z = x[keep], y[keep], z[keep]
    if x.size < 4:
        return float("nan"), float("nan"), float("nan"), int(x.size)
    rho = partial_spearman(x, y, z)
    rng = np.random.default_rng(seed)
    boots = [
        partial_spearman(x[i], y[i], z[i]) for i in rng.integers(0, x.size, (resamples, x.size))
    ]
    boots = np.asarray(boots)[np.isfinite(boots)]
    tail = (1 - confidence) / 2
    low, high = np.quantile(boots, [tail, 1 - tail]) if boots.size else (np.nan, np.nan)
    return rho, float(low), float(high), int(x.size)
