"""Deep linear networks trained by gradient descent against the closed forms (small d)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from tests.theory_support import one_thread  # noqa: F401  (autouse fixture)
from transferscope.theory import linear
from transferscope.theory.phase import DIAGRAMS, PHASE_COLUMNS, phase_table
from transferscope.theory.simulate import (
    GDSettings,
    end_to_end,
    feature_map,
    init_deep_linear,
    pretrain_population,
    simulate_grid,
    train_deep_linear,
)

D = 40
THETAS, GAMMAS, SIGMAS = [0.4, 1.2], [0.4, 2.5], [0.0, 0.3]


@pytest.fixture(scope="module")
def runs() -> pl.DataFrame:
    return simulate_grid(
        THETAS,
        GAMMAS,
        SIGMAS,
        d=D,
        width=16,
        instances=24,
        readout_ridge=0.3,
        transfer=GDSettings(lr=0.02, steps=6_000),
        progress=False,
    )


def _theory(method, theta, gamma, sigma):
    if method == "scratch":
        return linear.scratch_risk(gamma, sigma, d=D)
    if method == "finetune":
        return linear.finetune_risk(theta, gamma, sigma, d=D)
    ridge = 0.3 if method == "linear_ridge" else 0.0
    return linear.linear_transfer_risk(theta, gamma, sigma, ridge=ridge, d=D)


def test_gd_deep_linear_matches_closed_forms(runs):
    """Mean risk over converged instances within 4 standard errors + 0.03 of the finite-d form.

    The 0.03 allows for the deep network's departure from the idealised estimators (fine-tuning
    can also rescale β_s outside the row space of X, the paper's neglected 1 + O(σ²) factor).
    """
    assert runs["converged"].all()
    stats = (
        runs.filter(pl.col("method") != "ridge_scratch")
        .group_by("method", "gamma", "n", "sigma", "theta")
        .agg(pl.col("risk").mean().alias("mean"), pl.col("risk").std().alias("std"), pl.len())
    )
    assert stats.height == 2 * 2 * (1 + 3 * 2)
    for row in stats.iter_rows(named=True):
        expected = _theory(row["method"], row["theta"], row["n"] / D, row["sigma"])
        tol = 4 * row["std"] / np.sqrt(row["len"]) + 0.03
        assert abs(row["mean"] - expected) <= tol, (row, float(expected))


def test_gd_scratch_is_the_minimum_norm_fit(runs):
    """Implicit bias, run by run: at σ = 0 the tuned ridge has λ* = 0, i.e. X⁺y on the same data."""
    pair = runs.filter(pl.col("sigma") == 0.0).pivot(
        on="method", index=["gamma", "instance"], values="risk", aggregate_function="first"
    )
    assert np.allclose(pair["scratch"], pair["ridge_scratch"], atol=1e-4)


def test_transferability_tables_follow_theory(runs):
    for name in ("linear", "finetune", "linear_ridge"):
        table = phase_table(runs, DIAGRAMS[name], D, readout_ridge=0.3)
        assert table.columns[:9] == PHASE_COLUMNS
        assert (table["n_unconverged"] == 0).all() and (table["n_instances"] == 24).all()
        se = table["sim_std"] / np.sqrt(24)
        assert (table["difference"].abs() <= 4 * se + 0.05).all(), table
    # fine-tuning beyond interpolation: 𝒯 = 0 (both reach the least-squares fit)
    ft = phase_table(runs, DIAGRAMS["finetune"], D).filter(pl.col("gamma") > 1)
    assert (ft["simulation"].abs() < 0.01).all()


def test_unconverged_runs_are_flagged_and_excluded():
    out = simulate_grid(
        [0.5],
        [0.5],
        [0.2],
        d=12,
        width=4,
        instances=3,
        progress=False,
        scratch=GDSettings(lr=0.1, steps=3),
        transfer=GDSettings(lr=0.01, steps=3),
    )
    trained = out.filter(pl.col("method") != "ridge_scratch")
    assert not trained["converged"].any()
    assert (trained["steps"] == 3).all() and (trained["gap"] > 1e-6).all()
    table = phase_table(out, DIAGRAMS["linear"], 12)
    assert table["simulation"].is_null().all() and table["sim_std"].is_null().all()
    assert table["n_unconverged"].to_list() == [3] and table["n_instances"].to_list() == [3]
    assert table["difference"].is_null().all() and table["theory"].is_not_null().all()


def test_pretraining_gives_a_rank_one_unit_feature():
    gen = torch.Generator().manual_seed(3)
    beta_s = torch.randn(3, 25, generator=gen, dtype=torch.float64)
    beta_s /= beta_s.norm(dim=1, keepdim=True)
    init = init_deep_linear(3, 25, 10, 2, 1e-5, gen)
    pre = pretrain_population(beta_s, init, GDSettings(lr=0.1, steps=3000, tol=1e-12))
    assert pre.converged.all()
    assert torch.allclose(end_to_end(pre.params), beta_s, atol=1e-5)
    svals = torch.linalg.svdvals(feature_map(pre.params))
    assert torch.allclose(svals[:, 0], torch.ones(3, dtype=torch.float64), atol=1e-4)
    assert (svals[:, 1] < 1e-3).all()  # the rest is the ~α initialisation
    left = torch.linalg.svd(feature_map(pre.params)).U[:, :, 0]
    assert torch.allclose((left * beta_s).sum(1).abs(), torch.ones(3, dtype=torch.float64))


def test_depth_three_reaches_the_minimum_norm_fit():
    """Depth is configurable; deeper nets need a larger init to leave the saddle in time."""
    d, n = 20, 10
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, n, d, generator=gen, dtype=torch.float64)
    beta = torch.randn(1, d, generator=gen, dtype=torch.float64)
    y = (x @ beta[..., None])[..., 0]
    sigma_mat = x.transpose(1, 2) @ x / n
    b = (x.transpose(1, 2) @ y[..., None])[..., 0] / n
    init = init_deep_linear(1, d, 8, 3, 0.02, gen)
    zero = torch.zeros(1, dtype=torch.float64)
    res = train_deep_linear(
        init, b, (y**2).mean(1), zero, GDSettings(0.02, 20_000, 1e-10), sigma_mat
    )
    assert res.converged.all()
    min_norm = torch.linalg.pinv(x[0]) @ y[0]
    # the init leaves an O(α²) component outside the row space of X
    assert (end_to_end(res.params)[0] - min_norm).norm() < 0.01 * min_norm.norm()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"depth": 0}, r"depth L.*L=0"),
        ({"thetas": [2.0]}, r"theta=2\.0"),
        ({"gammas": [-0.5]}, r"gamma=-0\.5"),
        ({"sigmas": [-1.0]}, r"sigma=-1\.0"),
        ({"readout_ridge": -0.1}, r"readout_ridge=-0\.1"),
    ],
)
def test_simulate_grid_rejects_bad_input(kwargs, match):
    args = {"thetas": [0.1], "gammas": [0.5], "sigmas": [0.0], **kwargs}
    with pytest.raises(ValueError, match=match):
        simulate_grid(args.pop("thetas"), args.pop("gammas"), args.pop("sigmas"), d=8, **args)


def test_gd_settings_reject_bad_values():
    with pytest.raises(ValueError, match=r"lr=0"):
        GDSettings(lr=0, steps=10)
    with pytest.raises(ValueError, match=r"steps=-1"):
        GDSettings(lr=0.1, steps=-1)
