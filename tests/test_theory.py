"""Closed forms of transfer in linear regression: Monte Carlo agreement, limits, bad input.

Every Monte Carlo check draws the estimator the closed form describes (numpy lstsq for the
minimum-norm fit, an explicit ridge solve, the readout regression on z = Xβ_s) and asserts the
formula lies within 4 standard errors of the sample mean (plus a stated finite-d allowance where
the formula is asymptotic). Seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.theory_support import one_thread  # noqa: F401  (autouse fixture)
from transferscope.theory import linear

RNG_SEED = 1234


def _unit_pair(rng, d):
    beta_s = rng.standard_normal(d)
    beta_s /= np.linalg.norm(beta_s)
    nu = rng.standard_normal(d)
    nu -= nu @ beta_s * beta_s
    return beta_s, nu / np.linalg.norm(nu)


def _assert_mc(samples, expected, extra=0.0):
    samples = np.asarray(samples)
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(samples.mean() - expected) <= 4 * se + extra, (samples.mean(), expected, se)


def _mc_min_norm(d, n, sigma, draws, rng, start=None, target=None):
    """Risks of β̂ = start + X⁺(y − X·start), the least-squares fit closest to `start`."""
    beta_s, nu = _unit_pair(rng, d)
    target = beta_s if target is None else target(beta_s, nu)
    start = np.zeros(d) if start is None else start(beta_s, nu)
    risks = []
    for _ in range(draws):
        x = rng.standard_normal((n, d))
        y = x @ target + sigma * rng.standard_normal(n)
        fit = start + np.linalg.lstsq(x, y - x @ start, rcond=None)[0]
        risks.append(np.sum((fit - target) ** 2))
    return np.array(risks)


# --------------------------------------------------------------------------- Monte Carlo
@pytest.mark.parametrize(("n", "sigma"), [(120, 0.2), (280, 0.2), (280, 0.0), (600, 0.3)])
def test_scratch_risk_matches_min_norm_lstsq(n, sigma):
    d, rng = 400, np.random.default_rng(RNG_SEED + n)
    risks = _mc_min_norm(d, n, sigma, 30, rng)
    _assert_mc(risks, linear.scratch_risk(n / d, sigma, d=d))
    # the asymptotic form differs from the finite one only by O(1/d)
    assert abs(linear.scratch_risk(n / d, sigma) - linear.scratch_risk(n / d, sigma, d=d)) < 0.02


@pytest.mark.parametrize("theta", [0.4, 1.3])
def test_finetune_risk_and_transferability_match_monte_carlo(theta):
    d, n, sigma = 400, 200, 0.2
    target = lambda bs, nu: np.cos(theta) * bs + np.sin(theta) * nu  # noqa: E731
    tuned = _mc_min_norm(
        d, n, sigma, 25, np.random.default_rng(7), start=lambda bs, nu: bs, target=target
    )
    scratch = _mc_min_norm(d, n, sigma, 25, np.random.default_rng(7), target=target)
    _assert_mc(tuned, linear.finetune_risk(theta, n / d, sigma, d=d))
    # same designs and noise: the paired difference has small variance
    _assert_mc(scratch - tuned, linear.finetune_transferability(theta, n / d, sigma, d=d))


@pytest.mark.parametrize(("n", "ridge"), [(8, 0.0), (30, 0.0), (8, 0.3), (30, 1.0)])
def test_linear_transfer_risk_matches_readout_regression(n, ridge):
    """The readout on the rank-one feature z = Xβ_s: α̂ = zᵀy/(zᵀz + nλ), β̂ = α̂β_s.

    With x isotropic, z = Xβ_s and w = Xν are independent N(0, I_n), which is what is drawn.
    """
    theta, sigma, draws = 0.7, 0.3, 40_000
    rng = np.random.default_rng(RNG_SEED + n)
    z, w, eps = rng.standard_normal((3, draws, n))
    y = np.cos(theta) * z + np.sin(theta) * w + sigma * eps
    alpha = (z * y).sum(1) / ((z * z).sum(1) + n * ridge)
    risks = (alpha - np.cos(theta)) ** 2 + np.sin(theta) ** 2
    d = 100  # only n = γd enters
    _assert_mc(risks, linear.linear_transfer_risk(theta, n / d, sigma, ridge=ridge, d=d))


def test_linear_transfer_readout_on_explicit_design():
    """Same estimator with an explicit d = 400 design and a noisy rank-one feature map."""
    d, n, theta, sigma = 400, 40, 0.9, 0.2
    rng = np.random.default_rng(5)
    beta_s, nu = _unit_pair(rng, d)
    beta_t = np.cos(theta) * beta_s + np.sin(theta) * nu
    risks = []
    for _ in range(400):
        x = rng.standard_normal((n, d))
        y = x @ beta_t + sigma * rng.standard_normal(n)
        z = x @ beta_s
        fit = np.linalg.lstsq(z[:, None], y, rcond=None)[0][0] * beta_s
        risks.append(np.sum((fit - beta_t) ** 2))
    _assert_mc(risks, linear.linear_transfer_risk(theta, n / d, sigma, d=d))


@pytest.mark.parametrize(("gamma", "sigma"), [(0.5, 0.5), (1.0, 0.5), (1.6, 0.3)])
def test_tuned_ridge_risk_matches_monte_carlo(gamma, sigma):
    d = 400
    n = int(gamma * d)
    lam = linear.optimal_ridge(gamma, sigma)
    rng = np.random.default_rng(RNG_SEED)
    beta, _ = _unit_pair(rng, d)
    risks = []
    for _ in range(12):
        x = rng.standard_normal((n, d))
        y = x @ beta + sigma * rng.standard_normal(n)
        fit = np.linalg.solve(x.T @ x + n * lam * np.eye(d), x.T @ y)
        risks.append(np.sum((fit - beta) ** 2))
    # asymptotic formula: allow 3% for finite d = 400
    expected = linear.tuned_scratch_risk(gamma, sigma)
    _assert_mc(risks, expected, extra=0.03 * expected)
    assert np.isclose(linear.ridge_risk(gamma, sigma, lam), expected)


# --------------------------------------------------------------------------- limits
def test_theta_zero_never_transfers_negatively():
    gammas = np.concatenate([np.linspace(0.05, 3, 60), [1.0]])
    for sigma in (0.0, 0.2, 1.0):
        t_asym = linear.linear_transferability(0.0, gammas, sigma)
        t_fin = linear.linear_transferability(0.0, gammas, sigma, d=200)
        t_ft = linear.finetune_transferability(0.0, gammas, sigma)
        assert (t_asym >= 0).all() and (t_fin >= 0).all() and (t_ft >= 0).all()
        strict = (gammas < 1) | (sigma > 0)  # at σ = 0, γ ≥ 1 both fits are exact
        assert (t_asym[strict] > 0).all()
        assert (linear.negative_transfer_boundary(0.0, sigma).over_start == np.inf).all()


def test_linear_transfer_risk_tends_to_sin2_theta():
    thetas = np.linspace(0, np.pi / 2, 7)
    gammas = np.array([0.5, 5.0, 50.0, 5e4])
    risks = linear.linear_transfer_risk(thetas[:, None], gammas, 0.0, d=100)
    assert (np.diff(risks, axis=1) <= 1e-15).all()  # decreasing in γ
    assert np.allclose(risks[:, -1], np.sin(thetas) ** 2, atol=1e-5)
    assert np.allclose(linear.linear_transfer_risk(thetas, 1.0, 0.0), np.sin(thetas) ** 2)


def test_scratch_risk_diverges_at_interpolation_threshold():
    assert linear.scratch_risk(1.0, 0.2) == np.inf
    near = linear.scratch_risk(1 + np.array([-1e-6, 1e-6]), 0.2)
    assert (near > 1e4).all()
    assert linear.scratch_risk(1.0, 0.0) == 0.0  # no noise, no peak
    finite = linear.scratch_risk(np.array([0.9, 0.99, 0.999]), 0.2, d=10_000)
    assert (np.diff(finite) > 0).all() and finite[-1] > 3
    assert linear.scratch_risk(1.0, 0.2, d=500) == np.inf
    assert np.isfinite(linear.tuned_scratch_risk(1.0, 0.2))


def test_finetune_transferability_zero_beyond_interpolation():
    thetas = np.linspace(0, np.pi / 2, 9)[:, None]
    gammas = np.array([1.0, 1.2, 2.0, 10.0])
    assert np.all(linear.finetune_transferability(thetas, gammas, 0.2) == 0)
    below = linear.finetune_transferability(thetas, 0.5, 0.2)[:, 0]
    angle = linear.finetune_negative_transfer_angle()
    assert ((below > 0) == (thetas[:, 0] < angle - 1e-12)).all()


def test_ridge_readout_risk_increases_with_ridge():
    ridges = np.linspace(0, 2, 21)
    risk = linear.linear_transfer_risk(0.6, 1.0, 0.0, ridge=ridges)
    assert (np.diff(risk) > 0).all()
    finite = linear.linear_transfer_risk(0.6, 2.0, 0.0, ridge=np.array([0.1, 0.5]), d=50_000)
    assert np.allclose(finite, risk[[1, 5]], atol=1e-3)


def test_tuned_ridge_beats_min_norm_and_removes_the_band():
    gammas = np.linspace(0.05, 3, 300)
    for sigma in (0.1, 0.5):
        tuned = linear.tuned_scratch_risk(gammas, sigma)
        assert (tuned <= linear.scratch_risk(gammas, sigma) + 1e-12).all()
        assert (np.diff(tuned) < 0).all()  # monotone: no double descent
        ridges = np.linspace(0.01, 3, 50)[:, None]
        assert (linear.ridge_risk(gammas, sigma, ridges) >= tuned - 1e-12).all()


@pytest.mark.parametrize("sigma", [0.0, 0.2])
@pytest.mark.parametrize("theta", [0.3, 0.8, 1.4])
def test_negative_transfer_boundaries_are_sign_changes(theta, sigma):
    band = linear.negative_transfer_boundary(theta, sigma)
    edges = [band.under_start, band.under_end, band.over_start]
    edges = [float(e) for e in edges if np.isfinite(e) and 0 < e and e != 1.0]
    for edge in edges:
        assert abs(linear.linear_transferability(theta, edge, sigma)) < 1e-9
    inside = [
        g
        for g in (
            0.5 * (float(band.under_start) + float(band.under_end)),
            float(band.over_start) + 0.5,
        )
        if np.isfinite(g)
    ]
    for gamma in inside:
        assert linear.linear_transferability(theta, gamma, sigma) < 0
    if sigma > 0:  # the positive band around γ = 1
        assert linear.linear_transferability(theta, 1.0 + 1e-3, sigma) > 0
        gamma_star = linear.tuned_negative_transfer_boundary(theta, sigma)
        t = linear.linear_transferability(theta, gamma_star, sigma, baseline="tuned_ridge")
        assert abs(t) < 1e-9
        assert (
            linear.linear_transferability(
                theta, np.linspace(gamma_star + 1e-3, 5, 50), sigma, baseline="tuned_ridge"
            )
            < 0
        ).all()


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: linear.scratch_risk(0.0, 0.1), r"gamma.*gamma=0\.0"),
        (lambda: linear.scratch_risk([0.5, -1.0], 0.1), r"gamma=-1\.0"),
        (lambda: linear.scratch_risk(0.5, -0.1), r"sigma.*sigma=-0\.1"),
        (lambda: linear.linear_transfer_risk(2.0, 0.5, 0.1), r"theta.*theta=2\.0"),
        (lambda: linear.linear_transfer_risk(-0.1, 0.5, 0.1), r"theta=-0\.1"),
        (lambda: linear.linear_transfer_risk(0.1, 0.5, 0.1, ridge=-1), r"ridge=-1"),
        (lambda: linear.finetune_transferability(np.nan, 0.5, 0.1), r"theta=nan"),
        (lambda: linear.scratch_risk(0.5, 0.1, d=0), r"d=0"),
        (lambda: linear.linear_transferability(0.1, 0.5, 0.1, baseline="x"), r"baseline='x'"),
        (lambda: linear.check_depth(0), r"depth L.*L=0"),
    ],
)
def test_bad_input_names_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
