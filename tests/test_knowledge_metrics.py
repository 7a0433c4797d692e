"""Knowledge metrics on hand-built interaction sets with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from transferscope.knowledge import metrics


def _sets(*members, size=8):
    """Interactions with value +1 on the given subsets (all salient)."""
    out = np.zeros((len(members), size))
    for row, subsets in enumerate(members):
        out[row, list(subsets)] = 1.0
    return out


def test_preserved_discarded_new_counts_and_ratios():
    i_pre = _sets({1, 2, 3, 4})
    i_ft = _sets({3, 4, 5})
    i_sc = _sets({4, 6})
    m = [x != 0 for x in (i_pre, i_ft, i_sc)]
    out = metrics.transfer_metrics(i_pre, i_ft, i_sc, *m)
    assert out["n_preserved"][0] == 2 and out["n_discarded"][0] == 2 and out["n_new"][0] == 1
    assert out["preserved_ratio"][0] == pytest.approx(0.5)
    assert out["new_ratio"][0] == pytest.approx(1 / 3)
    # preserved {3, 4}; the scratch model has 4 of them -> half is exclusive to pre-training
    assert out["exclusive_share"][0] == pytest.approx(0.5)
    # scratch-only: {6} (4 is shared with the fine-tuned model)
    assert out["n_scratch_only"][0] == 1 and out["scratch_only_ratio"][0] == pytest.approx(0.5)


def test_sign_disagreement_is_not_shared_unless_disabled():
    i_pre, i_ft = _sets({1, 2}), -_sets({1, 2})
    i_sc = _sets(set())
    m = [x != 0 for x in (i_pre, i_ft, i_sc)]
    on = metrics.transfer_metrics(i_pre, i_ft, i_sc, *m, sign_agreement=True)
    off = metrics.transfer_metrics(i_pre, i_ft, i_sc, *m, sign_agreement=False)
    assert on["n_preserved"][0] == 0 and on["n_discarded"][0] == 2 and on["n_new"][0] == 2
    assert off["n_preserved"][0] == 2 and off["preserved_ratio"][0] == 1.0


def test_strength_weighting_uses_magnitudes():
    i_pre = np.array([[0.0, 3.0, 1.0, 0.0]])
    i_ft = np.array([[0.0, 2.0, 0.0, 5.0]])
    i_sc = np.zeros((1, 4))
    m = [x != 0 for x in (i_pre, i_ft, i_sc)]
    out = metrics.transfer_metrics(i_pre, i_ft, i_sc, *m)
    assert out["strength_preserved"][0] == 3.0 and out["strength_discarded"][0] == 1.0
    assert out["preserved_strength_ratio"][0] == pytest.approx(0.75)
    assert out["new_strength_ratio"][0] == pytest.approx(5 / 7)


def test_empty_sets_give_undefined_not_zero():
    empty = np.zeros((1, 8))
    out = metrics.transfer_metrics(empty, empty, empty, empty != 0, empty != 0, empty != 0)
    assert out["n_preserved"][0] == 0
    for key in ("preserved_ratio", "new_ratio", "exclusive_share", "scratch_only_ratio"):
        assert np.isnan(out[key][0]), key


def test_identical_models_preserve_everything():
    i = np.random.default_rng(0).normal(size=(5, 16))
    m = np.abs(i) > 0.5
    out = metrics.transfer_metrics(i, i, i, m, m, m)
    finite = np.isfinite(out["preserved_ratio"])
    assert np.all(out["preserved_ratio"][finite] == 1) and np.all(out["n_new"] == 0)
    assert np.all(out["exclusive_share"][finite] == 0)


def test_weighted_jaccard_known_values_and_bounds():
    assert metrics.weighted_jaccard(np.array([1.0, -2.0]), np.array([1.0, -2.0])) == 1.0
    assert metrics.weighted_jaccard(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == 0.0
    # positive and negative parts are kept apart: opposite signs share nothing
    assert metrics.weighted_jaccard(np.array([1.0]), np.array([-1.0])) == 0.0
    assert metrics.weighted_jaccard(np.array([2.0, 1.0]), np.array([1.0, 1.0])) == pytest.approx(
        2 / 3
    )
    assert metrics.weighted_jaccard(np.zeros(3), np.zeros(3)) == 1.0
    rng = np.random.default_rng(1)
    values = metrics.weighted_jaccard(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)))
    assert np.all((values >= 0) & (values <= 1))


def test_convergence_curve_ends_at_one_and_directness():
    # three epochs of one sample: {1} -> {1, 2} -> {2}; union {1, 2}, final {2}
    i = np.array([[[0, 1.0, 0, 0]], [[0, 1.0, 1.0, 0]], [[0, 0, 2.0, 0]]])
    out = metrics.convergence_metrics(i, i != 0)
    assert out["similarity"][-1, 0] == 1.0
    assert out["similarity"][0, 0] == 0.0
    assert out["similarity"][1, 0] == pytest.approx(1 / 3)  # min 1 / max (1 + 2)
    assert out["final_share"][:, 0].tolist() == [0.0, 1.0, 1.0]
    assert out["directness"][0] == pytest.approx(0.5)


def test_single_epoch_and_no_salient_interaction():
    i = np.zeros((1, 2, 4))
    i[0, 0, 1] = 1.0
    out = metrics.convergence_metrics(i, i != 0)
    assert out["similarity"].tolist() == [[1.0, 1.0]]
    assert out["directness"][0] == 1.0 and np.isnan(out["directness"][1])


def test_bootstrap_interval_covers_mean_and_ignores_nan():
    values = np.r_[np.random.default_rng(0).normal(2.0, 1.0, 400), np.nan]
    mean, low, high, n = metrics.bootstrap_ci(values, 500)
    assert n == 400 and low < mean < high and low < 2.0 < high
    assert high - low < 0.3
    seeds = [np.full(10, 1.0), np.full(10, 3.0)]
    mean, low, high, n_seeds, n_samples = metrics.hierarchical_bootstrap_ci(seeds, 300)
    assert (mean, n_seeds, n_samples) == (2.0, 2, 20) and low == 1.0 and high == 3.0


def test_spearman_matches_scipy_and_monotone_is_one():
    from scipy.stats import spearmanr

    x = np.arange(10.0)
    rho, low, high, n = metrics.spearman_ci(x, x**3, 200)
    assert rho == pytest.approx(1.0) and n == 10
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert metrics.spearman_ci(a, b, 100)[0] == pytest.approx(spearmanr(a, b).statistic)
    assert np.isnan(metrics.spearman_ci([1, 2], [3, 4])[0])
