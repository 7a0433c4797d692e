"""Null models and verdicts: formulas against brute force, planted inheritance recovered."""

from __future__ import annotations

from math import comb

import numpy as np
import polars as pl
import pytest

from transferscope.interactions.transforms import subset_sizes
from transferscope.knowledge import claims, metrics, nulls, overlaps

N_PLAYERS = 6
ORDERS = subset_sizes(N_PLAYERS).numpy()


def _random_game(rng, sizes, positive=0.5):
    """One sample's salient set: ``sizes[k]`` random subsets of order k, signed at random."""
    values = np.zeros(2**N_PLAYERS)
    for k, size in enumerate(sizes):
        pool = np.flatnonzero(ORDERS == k)
        chosen = rng.choice(pool, size=size, replace=False)
        values[chosen] = np.where(rng.random(size) < positive, 1.0, -1.0)
    return values


@pytest.mark.parametrize("sign_agreement", [False, True])
def test_analytic_null_matches_monte_carlo_of_random_sets(sign_agreement):
    """Brute force: place sets of the same sizes per order at random (signs drawn with each
    model's frequency) and count the (sign-matched) overlap; the hypergeometric moments agree
    within the Monte Carlo standard error, per order and pooled."""
    rng = np.random.default_rng(1)
    sizes_a, sizes_b = [0, 3, 9, 12, 4, 2, 1], [0, 4, 5, 10, 8, 1, 0]
    pos_a, pos_b = 0.7, 0.4
    draws = 4000
    observed = np.zeros((draws, N_PLAYERS + 1))
    for d in range(draws):
        a, b = _random_game(rng, sizes_a, pos_a), _random_game(rng, sizes_b, pos_b)
        both = metrics.shared(a != 0, b != 0, a, b, sign_agreement)
        observed[d] = nulls.counts_by_order(both, ORDERS)
    rho = pos_a * pos_b + (1 - pos_a) * (1 - pos_b) if sign_agreement else 1.0
    mean, var = nulls.random_overlap_moments(sizes_a, sizes_b, nulls.universe_sizes(N_PLAYERS), rho)
    se = np.sqrt(var / draws)
    assert np.all(np.abs(observed.mean(0) - mean) <= 4 * se + 1e-12)
    assert np.allclose(observed.var(0), var, rtol=0.15, atol=1e-3)
    pooled = observed.sum(1)
    assert abs(pooled.mean() - mean.sum()) <= 4 * np.sqrt(var.sum() / draws)
    assert pooled.var() == pytest.approx(var.sum(), rel=0.15)


def test_sign_agreement_probability_uses_each_models_own_signs():
    a = np.array([[0, 1, 1, 1, -1, 0, 0, 0]], float)  # 3/4 positive
    b = np.array([[0, 1, -1, 0, 0, 0, 0, 0]], float)  # 1/2 positive
    rho = nulls.sign_agreement_probability(a, a != 0, b, b != 0)
    assert rho[0] == pytest.approx(0.75 * 0.5 + 0.25 * 0.5)


def test_null_draws_have_the_analytic_moments():
    rng = np.random.default_rng(0)
    a, b, c, rho = np.array([3, 10]), np.array([5, 4]), np.array([20, 15]), 0.6
    draws = nulls.random_overlap_draws(rng, a, b, c, rho, 200000)
    mean, var = nulls.random_overlap_moments(a, b, c, rho)
    assert np.allclose(draws.mean(0), mean, atol=0.01)
    assert np.allclose(draws.var(0), var, rtol=0.02)


def test_holm_matches_its_definition_by_brute_force():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.2])
    adjusted = nulls.holm(p)
    finite = [0.01, 0.04, 0.03, 0.2]
    m = len(finite)
    ranked = sorted(finite)
    expected = {}
    running = 0.0
    for i, value in enumerate(ranked):
        running = max(running, min(1.0, (m - i) * value))
        expected[value] = running
    assert np.isnan(adjusted[2])
    for i in (0, 1, 3, 4):
        assert adjusted[i] == pytest.approx(expected[p[i]])
    assert np.all(adjusted[np.isfinite(adjusted)] >= p[np.isfinite(p)])


def test_verdict_reaches_every_value():
    assert claims.verdict(0.2, 0.1, 0.3, 0.001, +1, 0.05) == claims.SUPPORTED
    assert claims.verdict(0.2, 0.1, 0.3, 0.001, -1, 0.05) == claims.CONTRADICTED
    assert claims.verdict(0.2, -0.1, 0.3, 0.001, +1, 0.05) == claims.NULL  # interval spans 0
    assert claims.verdict(0.2, 0.1, 0.3, 0.2, +1, 0.05) == claims.NULL  # p too large
    assert claims.verdict(-0.4, np.nan, np.nan, 0.001, -1, 0.05) == claims.SUPPORTED


def _found(rng, inherit: float, samples=24, seeds=(0, 1, 2)):
    """Synthetic caches' overlap counts: Ω_ft keeps a share ``inherit`` of Ω_pre's terms (same
    sign) and fills up to its size with random others; inherit=None draws Ω_ft independently."""
    per_seed = []
    sizes = [0, 3, 6, 6, 3, 1, 0]
    for seed in seeds:
        pre = np.stack([_random_game(rng, sizes) for _ in range(samples)])
        ft = np.stack([_random_game(rng, sizes) for _ in range(samples)])
        if inherit is not None:
            for row in range(samples):
                terms = np.flatnonzero(pre[row])
                keep = terms[rng.random(terms.size) < inherit]
                ft[row, keep] = pre[row, keep]
        counts = nulls.overlap_counts(pre != 0, pre, ft != 0, ft, ORDERS, True)
        per_seed.append((str(seed), list(range(samples)), counts))
    return {("planted", "and", "preserved"): per_seed}


def _preserved_verdict(found):
    samples = overlaps.overlap_samples(found)
    table = overlaps.overlap_table(found, samples, resamples=200, confidence=0.95, draws=1000)
    row = claims._pick(table, "planted", "and", "preserved", "all").row(0, named=True)
    base = {"study": "test", "experiment": "planted", "kind": "and"}
    out = claims.finalise([claims._random_row(row, base, "inherits", "share", +1, "")], 0.05)
    return out.row(0, named=True)


def test_planted_inheritance_is_supported_and_independent_games_are_not():
    rng = np.random.default_rng(3)
    inherited = _preserved_verdict(_found(rng, inherit=0.6))
    assert inherited["verdict"] == claims.SUPPORTED
    assert inherited["observed"] > inherited["null"] + 0.3
    independent = _preserved_verdict(_found(rng, inherit=None))
    assert independent["verdict"] == claims.NULL
    assert abs(independent["excess"]) < 0.1


def test_a_claim_against_a_regime_the_run_lacks_is_withheld_and_the_rest_written(tmp_path):
    status = {("e", "probe"): {"learned": True}, ("e", "finetune"): {"learned": True}}
    assert claims._unlearned(status, "e", ("probe", "finetune")) == ""
    reason = claims._unlearned(status, "e", ("probe", "finetune", "scratch"))
    assert reason == "no scratch runs in this run"
    rows = [
        dict(study="s", claim="a", experiment="e", kind="and", metric="m", observed=0.5,
             null=0.1, excess=0.4, low=0.3, high=0.5, p_value=0.001, direction=1, n=10,
             reason=""),
        dict(study="s", claim="b", experiment="e", kind="and", metric="m", reason=reason),
    ]  # fmt: skip
    table = claims.finalise(rows, 0.05)
    assert table["verdict"].to_list() == [claims.SUPPORTED, claims.NOT_TESTED]
    assert table["reason"][1] == "no scratch runs in this run"


def test_did_not_learn_is_decided_against_the_majority_class():
    status = {("e", "scratch"): {"learned": False, "accuracy": 0.53, "chance": 0.5,
                                 "p_value": 0.2}}  # fmt: skip
    reason = claims._unlearned(status, "e", ("scratch",))
    assert reason.startswith("scratch did not learn") and "0.530" in reason


def test_within_experiment_link_ignores_differences_between_experiments():
    """Pooled, the two experiments give a strong positive link (experiment 'b' is higher on
    both axes); within each, the link is negative — and that is what is reported."""
    rows = []
    for exp, shift in (("a", 0.0), ("b", 10.0)):
        for i, (x, y) in enumerate([(1, 3), (2, 2), (3, 1), (4, 0.5)]):
            rows.append({"experiment": exp, "seed": i, "x": x + shift, "y": y + shift})
    table = pl.DataFrame(rows)
    pooled = metrics.spearman_ci(table["x"], table["y"], resamples=10)[0]
    rho, p, n = claims.within_experiment_link(table, "x", "y")
    assert pooled > 0.3 and rho == pytest.approx(-1.0) and n == 8
    # 4!·4! = 576 permutations, one as extreme as the observation: 2·(1 + 1)/(1 + 576)
    assert p == pytest.approx(4 / 577)


def test_partial_spearman_removes_a_shared_trend():
    rng = np.random.default_rng(0)
    epoch = np.repeat(np.arange(20), 5).astype(float)
    x, y = epoch + rng.normal(size=epoch.size), epoch + rng.normal(size=epoch.size)
    assert metrics.spearman_ci(x, y, resamples=10)[0] > 0.9
    assert abs(metrics.partial_spearman(x, y, epoch)) < 0.25
    z = rng.normal(size=epoch.size)
    assert metrics.partial_spearman(epoch + z, epoch + z, epoch) == pytest.approx(1.0)


def test_universe_sizes_are_binomials():
    assert nulls.universe_sizes(5).tolist() == [comb(5, k) for k in range(6)]
