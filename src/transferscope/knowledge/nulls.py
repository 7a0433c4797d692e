"""What chance gives: null models for every metric that compares two salient sets.

Random-overlap null (docs/references.md §4). Two salient sets A and B of sizes a_k and b_k,
placed independently at random among the C_k = C(n, k) subsets of order k: their overlap K_k
is hypergeometric,

    E K_k = a_k b_k / C_k,      Var K_k = a_k b_k (C_k − a_k)(C_k − b_k) / (C_k² (C_k − 1)).

With sign agreement a shared term must also keep its sign. Two random terms agree with
probability ρ = π⁺_A π⁺_B + π⁻_A π⁻_B (π± = each model's own share of positive / negative
salient terms on that sample), so the sign-matched overlap is X_k | K_k ~ Binomial(K_k, ρ):

    E X_k = ρ E K_k,            Var X_k = ρ(1 − ρ) E K_k + ρ² Var K_k.

Orders are placed independently, so pooled over orders the means and variances add. The null of
a share |A ∩ B| / |A| is E X / |A| (|A| is fixed); "1 − share" metrics (discarded, new,
exclusive, scratch-only) take 1 − that. p-values come from draws of the same null
(``random_overlap_draws``), so they are exact up to Monte Carlo error, not normal approximations.
"""

from __future__ import annotations

from math import comb

import numpy as np

from transferscope.knowledge.metrics import ratio


def universe_sizes(n_players: int) -> np.ndarray:
    """C(n, k) for k = 0..n: how many subsets of each order there are."""
    return np.array([comb(n_players, k) for k in range(n_players + 1)], dtype=float)


def counts_by_order(mask, orders: np.ndarray) -> np.ndarray:
    """(…, n + 1) counts of the true entries of ``mask`` (…, 2^n) per subset order."""
    mask = np.asarray(mask, dtype=bool)
    return np.stack([(mask & (orders == k)).sum(-1) for k in range(orders.max() + 1)], -1)


def sign_agreement_probability(i_a, m_a, i_b, m_b) -> np.ndarray:
    """ρ per sample: the chance that a random salient term of A and one of B share a sign."""

    def positive_share(values, mask):
        mask = np.asarray(mask, dtype=bool)
        share = ratio((mask & (np.asarray(values) > 0)).sum(-1), mask.sum(-1))
        return np.nan_to_num(share, nan=0.5)  # an empty set constrains nothing

    p_a, p_b = positive_share(i_a, m_a), positive_share(i_b, m_b)
    return p_a * p_b + (1 - p_a) * (1 - p_b)


def random_overlap_moments(a, b, universe, rho=1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the (sign-matched) overlap of two random sets (module docstring);
    elementwise over broadcast arrays of sizes ``a``, ``b`` and universe sizes ``universe``."""
    a, b, c = (np.asarray(x, dtype=float) for x in (a, b, universe))
    rho = np.asarray(rho, dtype=float)
    mean_k = ratio(a * b, c)
    var_k = ratio(a * b * (c - a) * (c - b), c**2 * (c - 1))
    mean_k, var_k = np.nan_to_num(mean_k), np.nan_to_num(var_k)  # C = 0 or 1: no variance
    return rho * mean_k, rho * (1 - rho) * mean_k + rho**2 * var_k


def random_overlap_draws(rng, a, b, universe, rho, draws: int) -> np.ndarray:
    """``draws`` samples of the sign-matched random overlap, shape (draws, *broadcast shape)."""
    a, b, c = np.broadcast_arrays(*(np.asarray(x, dtype=np.int64) for x in (a, b, universe)))
    rho = np.broadcast_to(np.asarray(rho, dtype=float), a.shape)
    size = (draws, *a.shape)
    overlap = rng.hypergeometric(
        np.broadcast_to(a, size), np.broadcast_to(c - a, size), np.broadcast_to(b, size)
    )
    return rng.binomial(overlap, np.broadcast_to(rho, size))


def overlap_counts(m_a, i_a, m_b, i_b, orders, sign_agreement: bool = True) -> dict:
    """Observed overlap of A in B and what the random null needs, per sample and order.

    Returns (samples, n + 1) arrays ``overlap``, ``size_a``, ``size_b``, (n + 1,) ``universe``
    and (samples,) ``rho`` (1 without sign agreement). Order 0 (∅) is never salient."""
    from transferscope.knowledge.metrics import shared

    both = shared(m_a, m_b, i_a, i_b, sign_agreement)
    n_players = int(orders.max())
    rho = (
        sign_agreement_probability(i_a, m_a, i_b, m_b)
        if sign_agreement
        else np.ones(np.shape(m_a)[:-1])
    )
    return {
        "overlap": counts_by_order(both, orders),
        "size_a": counts_by_order(m_a, orders),
        "size_b": counts_by_order(m_b, orders),
        "universe": universe_sizes(n_players),
        "rho": rho,
    }


def null_share(counts: dict, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample, over the orders in ``keep`` (bool, n + 1): observed share |A ∩ B| / |A|, its
    random-null expectation E X / |A| and the null's standard deviation sd X / |A|."""
    size = counts["size_a"][:, keep].sum(-1)
    mean, var = random_overlap_moments(
        counts["size_a"][:, keep],
        counts["size_b"][:, keep],
        counts["universe"][keep],
        counts["rho"][:, None],
    )
    return (
        ratio(counts["overlap"][:, keep].sum(-1), size),
        ratio(mean.sum(-1), size),
        ratio(np.sqrt(var.sum(-1)), size),
    )


def random_share_p_value(counts: dict, keep, draws: int = 2000, seed: int = 0) -> float:
    """Two-sided Monte Carlo p-value of the mean share over samples against the random null.

    Each draw places every sample's sets at random (sizes per order kept) and takes the same
    mean of per-sample shares as the observation; p = 2·min(P(≥), P(≤)) with the +1 rule."""
    size = counts["size_a"][:, keep].sum(-1)
    usable = size > 0
    if not usable.any():
        return float("nan")
    observed = np.mean(counts["overlap"][usable][:, keep].sum(-1) / size[usable])
    rng = np.random.default_rng(seed)
    simulated = random_overlap_draws(
        rng,
        counts["size_a"][usable][:, keep],
        counts["size_b"][usable][:, keep],
        counts["universe"][keep],
        counts["rho"][usable][:, None],
        draws,
    )
    means = (simulated.sum(-1) / size[usable]).mean(-1)
    return two_sided(means, observed)


def two_sided(null_draws, observed: float) -> float:
    """2·min(P(null ≥ obs), P(null ≤ obs)) with the +1 rule (never 0), capped at 1."""
    null_draws = np.asarray(null_draws, dtype=float)
    tol = 1e-12 * max(1.0, abs(observed))  # ties count as extreme as the observation
    greater = (1 + np.sum(null_draws >= observed - tol)) / (1 + null_draws.size)
    less = (1 + np.sum(null_draws <= observed + tol)) / (1 + null_draws.size)
    return float(min(1.0, 2 * min(greater, less)))


def sign_flip_p_value(groups, draws: int = 20000, seed: int = 0) -> float:
    """Two-sided p-value that the mean of paired differences is 0: each difference keeps or
    flips its sign at random (the pair's two members are exchangeable under the null).

    ``groups``: per seed, an array of per-sample differences; the statistic is the mean over
    seeds of the per-seed means, as in ``metrics.hierarchical_bootstrap_ci``."""
    groups = [np.asarray(g, float)[np.isfinite(np.asarray(g, float))] for g in groups]
    groups = [g for g in groups if g.size]
    if not groups:
        return float("nan")
    observed = float(np.mean([g.mean() for g in groups]))
    rng = np.random.default_rng(seed)
    flipped = np.mean(
        [(g * rng.choice([-1.0, 1.0], size=(draws, g.size))).mean(-1) for g in groups], axis=0
    )
    return two_sided(flipped, observed)


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN and is not counted as a test):
    sort the m finite p ascending, p̃_(i) = max_{j ≤ i} min(1, (m − j + 1)·p_(j))."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out
