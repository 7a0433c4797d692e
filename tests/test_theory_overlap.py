"""Feature overlap (ridge readout on frozen features) and the ReLU student–teacher sweep."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from tests.theory_support import one_thread  # noqa: F401  (autouse fixture)
from transferscope.theory.overlap import feature_overlap, fit_ridge_readout
from transferscope.theory.relu import relu_sweep


def _split(rng, n, p):
    return rng.standard_normal((n, p)), rng.standard_normal((n, p))


def test_target_inside_the_span_is_explained():
    rng = np.random.default_rng(0)
    f_tr, f_te = _split(rng, 2000, 20)
    w = rng.standard_normal(20)
    noise = 0.05
    out = feature_overlap(
        f_tr,
        f_tr @ w + noise * rng.standard_normal(2000),
        f_te,
        f_te @ w + noise * rng.standard_normal(2000),
    )
    share = noise**2 / (w @ w + noise**2)  # the noise is the only unexplained part
    assert out["unexplained"] == pytest.approx(share, abs=2e-3)
    assert out["r2"] == pytest.approx(1 - out["unexplained"])
    assert out["accuracy"] is None and out["n_features"] == 20 and out["n_outputs"] == 1


def test_half_of_the_target_outside_the_span():
    """y = F·w + G·v with G independent of the features: 1 − R² ≈ ‖v‖²/(‖w‖² + ‖v‖²)."""
    rng = np.random.default_rng(1)
    f_tr, f_te = _split(rng, 4000, 10)
    g_tr, g_te = _split(rng, 4000, 10)
    w, v = rng.standard_normal(10), rng.standard_normal(10)
    out = feature_overlap(f_tr, f_tr @ w + g_tr @ v, f_te, f_te @ w + g_te @ v)
    assert out["unexplained"] == pytest.approx(v @ v / (w @ w + v @ v), abs=0.03)


def test_independent_target_is_unexplained():
    rng = np.random.default_rng(2)
    f_tr, f_te = _split(rng, 500, 20)
    y_tr, y_te = rng.standard_normal((2, 500, 3))  # three "logits"
    out = feature_overlap(torch.as_tensor(f_tr), torch.as_tensor(y_tr), f_te, y_te)
    assert 0.95 <= out["unexplained"] <= 1.15  # held-out: a little worse than the mean
    assert out["n_outputs"] == 3 and 0.2 <= out["accuracy"] <= 0.5


def test_classification_labels_become_one_hot():
    rng = np.random.default_rng(3)
    f_tr, f_te = _split(rng, 1500, 8)
    proj = rng.standard_normal((8, 4))
    lab_tr, lab_te = (f_tr @ proj).argmax(1), (f_te @ proj).argmax(1)
    good = feature_overlap(f_tr, lab_tr, f_te, lab_te)
    assert good["accuracy"] > 0.85 and good["n_outputs"] == 4 and good["unexplained"] < 0.7
    chance = feature_overlap(f_tr, rng.permutation(lab_tr), f_te, lab_te)
    assert chance["accuracy"] < 0.45 and chance["unexplained"] > 0.95
    assert chance["unexplained"] > good["unexplained"] + 0.3


def test_dual_and_primal_forms_agree():
    """p > n uses the n × n system; it must equal the primal ridge solution."""
    rng = np.random.default_rng(4)
    feats, y = rng.standard_normal((30, 50)), rng.standard_normal((30, 2))
    lam = 0.1
    readout = fit_ridge_readout(torch.as_tensor(feats), torch.as_tensor(y), lam)
    phi = (feats - feats.mean(0)) / np.sqrt(((feats - feats.mean(0)) ** 2).mean())
    primal = np.linalg.solve(phi.T @ phi / 30 + lam * np.eye(50), phi.T @ (y - y.mean(0)) / 30)
    assert np.allclose(readout.weight.numpy(), primal)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.ones((5, 3)), np.ones(5), np.ones((4, 2)), np.ones(4)), r"features_test has 2"),
        ((np.ones((5, 3)), np.ones(4), np.ones((4, 3)), np.ones(4)), r"sample counts differ"),
        (
            (np.full((5, 3), np.nan), np.ones(5), np.ones((4, 3)), np.ones(4)),
            r"features_train.*NaN",
        ),
        ((np.ones(5), np.ones(5), np.ones((4, 3)), np.ones(4)), r"features must be 2-D"),
        ((np.ones((5, 3)), -np.ones(5, int), np.ones((4, 3)), np.ones(4, int)), r"y_train.*>= 0"),
    ],
)
def test_feature_overlap_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        feature_overlap(*args)
    with pytest.raises(ValueError, match=r"ridge=-1"):
        fit_ridge_readout(torch.ones(4, 2), torch.ones(4, 1), -1)


SMALL_RELU = {
    "d": 8,
    "teacher_width": 8,
    "width": 24,
    "instances": 3,
    "n_source": 600,
    "n_test": 500,
    "n_overlap": 1000,
    "source_steps": 300,
    "transfer_steps": 100,
}


def test_relu_overlap_grows_with_missing_units():
    table = relu_sweep([0.0, 0.75], [200], progress=False, **SMALL_RELU)
    assert table.height == 4 and set(table["method"]) == {"readout", "finetune"}
    readout = table.filter(pl.col("method") == "readout").sort("mu")
    overlap, risk = readout["overlap"].to_list(), readout["risk_transfer"].to_list()
    assert overlap[1] > overlap[0] + 0.1  # removed teacher units leave the feature span
    assert risk[1] > risk[0]
    # transfer risk is at least the part of f_t outside the features (up to sampling error)
    assert (readout["risk_transfer"] > 0.8 * readout["overlap"]).all()
    assert readout["predicted"].is_not_nan().all()  # n = 200 > width + 1


def test_relu_sweep_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"unknown relu settings \['depth'\]"):
        relu_sweep(depth=3)
    with pytest.raises(ValueError, match=r"mus must lie in \[0, 1\)"):
        relu_sweep([1.0], [10])
    with pytest.raises(ValueError, match=r"ns must be >= 2"):
        relu_sweep([0.0], [1])
