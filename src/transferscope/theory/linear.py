"""Closed-form risks and transferability for linear regression transfer.

Setting (Tahir, Ganguli, Rotskoff, "Features are fate", arXiv 2410.08194,
docs/references.md §3): x ~ N(0, I_d); source y = β_sᵀx + ε, target y = β_tᵀx + ε, ε ~ N(0, σ²);
‖β_s‖ = ‖β_t‖ = 1 and β_t = cos θ·β_s + sin θ·ν with ν ⊥ β_s. The target has n = γd samples.
Risk R = ‖β̂ − β_t‖² (the excess test error, since x is isotropic). Transferability
𝒯 = E[R_scratch − R_transfer]: positive means pre-training helps.

Estimators (the limits of gradient descent on a deep linear network from small initialisation):

* scratch: the minimum-norm least-squares fit X⁺y (row-space argument: gradient descent from
  ~0 never leaves the row space of X);
* linear transfer: the pre-trained hidden layer is rank one along β_s (with unit singular value),
  so retraining the readout fits the scalar α in β̂ = α·β_s;
* full fine-tuning: the least-squares fit closest to β_s, β̂ = β_s + X⁺(y − Xβ_s);
* tuned ridge scratch (the reviewers' baseline): ridge regression (XᵀX + nλI)⁻¹Xᵀy at the
  optimal λ.

Every function broadcasts over numpy arrays and returns a float ndarray (0-d for scalar input).
Asymptotic forms (d = None) take d, n → ∞ with γ = n/d fixed; finite forms take d and set n = γd.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "NegativeTransferBoundary",
    "finetune_negative_transfer_angle",
    "finetune_risk",
    "finetune_transferability",
    "linear_transfer_risk",
    "linear_transferability",
    "mp_stieltjes",
    "negative_transfer_boundary",
    "optimal_ridge",
    "ridge_risk",
    "scratch_risk",
    "tuned_negative_transfer_boundary",
    "tuned_scratch_risk",
]

BASELINES = ("min_norm", "tuned_ridge")
_CHI2_NODES = 2048  # quantile nodes for E over a χ²_n variable (finite-n ridge readout)


# --------------------------------------------------------------------------- validation
def _first_bad(values: np.ndarray, bad: np.ndarray) -> float:
    return float(values[bad].flat[0])


def check_gamma(gamma) -> np.ndarray:
    """γ = n/d as a float array; every entry must be finite and > 0."""
    gamma = np.asarray(gamma, dtype=float)
    bad = ~(np.isfinite(gamma) & (gamma > 0))
    if bad.any():
        raise ValueError(f"gamma must be finite and > 0; got gamma={_first_bad(gamma, bad)}")
    return gamma


def check_theta(theta) -> np.ndarray:
    """Angle θ between source and target (radians), every entry in [0, π/2]."""
    theta = np.asarray(theta, dtype=float)
    bad = ~((theta >= 0) & (theta <= np.pi / 2))  # NaN fails both comparisons
    if bad.any():
        raise ValueError(f"theta must lie in [0, pi/2] radians; got theta={_first_bad(theta, bad)}")
    return theta


def check_sigma(sigma) -> np.ndarray:
    """Label-noise standard deviation σ ≥ 0."""
    sigma = np.asarray(sigma, dtype=float)
    bad = ~(np.isfinite(sigma) & (sigma >= 0))
    if bad.any():
        raise ValueError(f"sigma must be finite and >= 0; got sigma={_first_bad(sigma, bad)}")
    return sigma


def check_ridge(ridge, name: str = "ridge") -> np.ndarray:
    ridge = np.asarray(ridge, dtype=float)
    bad = ~(np.isfinite(ridge) & (ridge >= 0))
    if bad.any():
        raise ValueError(f"{name} must be finite and >= 0; got {name}={_first_bad(ridge, bad)}")
    return ridge


def check_d(d) -> int | None:
    """Input dimension: None (asymptotic) or an integer ≥ 1."""
    if d is None:
        return None
    if isinstance(d, bool) or not float(d).is_integer() or d < 1:
        raise ValueError(f"d must be None or an integer >= 1; got d={d!r}")
    return int(d)


def check_depth(depth) -> int:
    """Network depth L: an integer ≥ 1."""
    if isinstance(depth, bool) or not float(depth).is_integer() or depth < 1:
        raise ValueError(f"depth L must be an integer >= 1; got L={depth!r}")
    return int(depth)


def check_baseline(baseline: str) -> str:
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}; got baseline={baseline!r}")
    return baseline


# --------------------------------------------------------------------------- scratch
def scratch_risk(gamma, sigma, d=None) -> np.ndarray:
    """Risk of the minimum-norm least-squares fit (gradient descent from zero) on the target.

    Asymptotic (d = None), the double descent with its pole at γ = 1 when σ > 0:
        R = (1 − γ) + σ²γ/(1 − γ)   for γ < 1,
        R = σ²/(γ − 1)              for γ > 1,
        R = ∞ at γ = 1 (0 when σ = 0).
    Finite n = γd (Gaussian design, exact expectations; E[(XXᵀ)⁻¹] = I/(d − n − 1) for n < d − 1
    and E[(XᵀX)⁻¹] = I/(n − d − 1) for n > d + 1, inverse-Wishart means):
        R = 1 − n/d + σ²n/(d − n − 1)   for n < d − 1,
        R = σ²d/(n − d − 1)             for n > d + 1,
        R = ∞ in between when σ > 0 (the expectation diverges).
    The n < d form is the paper's (docs/references.md §3); the n > d form is the same inverse-Wishart step.
    """
    gamma, sigma, d = check_gamma(gamma), check_sigma(sigma), check_d(d)
    gamma, sigma = np.broadcast_arrays(gamma, sigma)
    s2 = sigma**2
    with np.errstate(divide="ignore", invalid="ignore"):
        if d is None:
            under = (1 - gamma) + s2 * gamma / (1 - gamma)
            over = s2 / (gamma - 1)
            at_one = np.where(s2 > 0, np.inf, 0.0)
            return np.where(gamma < 1, under, np.where(gamma > 1, over, at_one))
        n = gamma * d
        under = 1 - n / d + np.where(s2 > 0, s2 * n / (d - n - 1), 0.0)
        over = np.where(s2 > 0, s2 * d / (n - d - 1), 0.0)
        under = np.where((d - n - 1 > 0) | (s2 == 0), under, np.inf)
        over = np.where((n - d - 1 > 0) | (s2 == 0), over, np.inf)
        return np.where(n < d, under, over)


def mp_stieltjes(z, ratio) -> np.ndarray:
    """Marchenko–Pastur Stieltjes transform m(z) = lim (1/d) tr(XᵀX/n − z)⁻¹ for real z < 0.

    With c = d/n = ratio, m solves c·z·m² − (1 − c − z)·m + 1 = 0; for z = −λ < 0 the root that
    is positive is m(−λ) = [√((1 − c + λ)² + 4cλ) − (1 − c + λ)] / (2cλ).
    """
    lam, c = -np.asarray(z, dtype=float), np.asarray(ratio, dtype=float)
    a = 1 - c + lam
    return (np.sqrt(a**2 + 4 * c * lam) - a) / (2 * c * lam)


def _mp_stieltjes_derivative(z, ratio, m) -> np.ndarray:
    """m'(z) from differentiating the MP equation: m' = −(c m² + m) / (2 c z m − (1 − c − z))."""
    z, c = np.asarray(z, dtype=float), np.asarray(ratio, dtype=float)
    return -(c * m**2 + m) / (2 * c * z * m - (1 - c - z))


def ridge_risk(gamma, sigma, ridge, signal=1.0) -> np.ndarray:
    """Asymptotic risk of ridge regression β̂ = (XᵀX + nλI)⁻¹Xᵀy for ‖β‖² = signal.

    With c = 1/γ and m the MP Stieltjes transform (Dobriban & Wager 2018; the expectation over a
    uniformly random direction of β gives the trace forms):
        R(λ) = signal·λ²·m'(−λ) + σ²c·(m(−λ) − λ·m'(−λ)).
    λ = 0 is the minimum-norm fit: this returns `scratch_risk` scaled by signal in its bias term.
    """
    gamma, sigma, ridge = check_gamma(gamma), check_sigma(sigma), check_ridge(ridge)
    signal = check_ridge(signal, "signal")
    gamma, sigma, ridge, signal = np.broadcast_arrays(gamma, sigma, ridge, signal)
    c = 1 / gamma
    safe = np.where(ridge > 0, ridge, 1.0)  # λ = 0 handled by the ridgeless form below
    m = mp_stieltjes(-safe, c)
    dm = _mp_stieltjes_derivative(-safe, c, m)
    risk = signal * safe**2 * dm + sigma**2 * c * (m - safe * dm)
    with np.errstate(divide="ignore", invalid="ignore"):
        ridgeless = np.where(gamma < 1, signal * (1 - gamma), 0.0) + np.where(
            gamma < 1,
            sigma**2 * gamma / (1 - gamma),
            np.where(gamma > 1, sigma**2 / (gamma - 1), np.where(sigma > 0, np.inf, 0.0)),
        )
    return np.where(ridge > 0, risk, ridgeless)


def optimal_ridge(gamma, sigma, signal=1.0) -> np.ndarray:
    """λ* = σ²/(γ·signal) minimises the expected ridge risk for every d, not only asymptotically.

    Each eigenvalue s of XᵀX/n contributes (λ²·signal + σ²c·s)/(s + λ)² (times 1/d) to the risk,
    with λ-derivative 2s(λ·signal − σ²c)/(s + λ)³, zero at λ = σ²c/signal for every s (c = 1/γ).
    """
    gamma, sigma = check_gamma(gamma), check_sigma(sigma)
    signal = check_ridge(signal, "signal")
    with np.errstate(divide="ignore"):
        return sigma**2 / (gamma * signal)


def tuned_scratch_risk(gamma, sigma) -> np.ndarray:
    """Scratch risk of ridge regression with λ tuned per γ (λ* = σ²/γ), asymptotic:

        R* = λ*·m(−λ*) = ½[√((γ − 1 + σ²)² + 4σ²) − (γ − 1 + σ²)],

    finite at γ = 1 and decreasing in γ: tuning the ridge removes the double-descent peak.
    At σ = 0 it equals the minimum-norm risk max(1 − γ, 0).
    """
    gamma, sigma = check_gamma(gamma), check_sigma(sigma)
    t = gamma - 1 + sigma**2
    return 0.5 * (np.sqrt(t**2 + 4 * sigma**2) - t)


def _baseline_risk(gamma, sigma, d, baseline: str) -> np.ndarray:
    if check_baseline(baseline) == "tuned_ridge":
        return tuned_scratch_risk(gamma, sigma)
    return scratch_risk(gamma, sigma, d)


# --------------------------------------------------------------------------- linear transfer
def _chi2_mean(func, n: np.ndarray) -> np.ndarray:
    """E[func(q)] for q ~ χ²_n by the midpoint rule in probability (quantile nodes).

    func is smooth and bounded where this is used (ridge > 0), so the rule converges like 1/K².
    """
    u = (np.arange(_CHI2_NODES) + 0.5) / _CHI2_NODES
    q = stats.chi2.ppf(u, np.asarray(n)[..., None])
    return func(q).mean(axis=-1)


def linear_transfer_risk(theta, gamma, sigma, ridge=0.0, d=None) -> np.ndarray:
    """Risk of linear transfer: the readout retrained on the frozen rank-one pre-trained feature.

    β̂ = α̂·β_s with α̂ the readout fit on z = Xβ_s. Writing y = cos θ·z + e, e ~ N(0, τ²) with
    τ² = sin²θ + σ², and q = zᵀz ~ χ²_n:
        ridge = 0 (least squares): E R = sin²θ + (σ² + sin²θ)/(n − 2)  (E[1/q] = 1/(n − 2)),
            infinite for n ≤ 2, and → sin²θ as γ → ∞ (the part of β_t outside span(β_s) stays);
        ridge λ > 0, readout (FᵀF + nλI)⁻¹Fᵀy (unit feature norm):
            E R = sin²θ + E_q[(n²λ²cos²θ + τ²q)/(q + nλ)²].
    Asymptotic (d = None, n → ∞): R(λ) = 1 − (1 + 2λ)/(1 + λ)²·cos²θ, increasing in λ; at λ = 0 it
    is sin²θ for every γ (one readout parameter, no estimation error).
    """
    theta, gamma, sigma = check_theta(theta), check_gamma(gamma), check_sigma(sigma)
    ridge, d = check_ridge(ridge), check_d(d)
    theta, gamma, sigma, ridge = np.broadcast_arrays(theta, gamma, sigma, ridge)
    sin2, cos2 = np.sin(theta) ** 2, np.cos(theta) ** 2
    if d is None:
        return 1 - (1 + 2 * ridge) / (1 + ridge) ** 2 * cos2
    n = gamma * d
    tau2 = sin2 + sigma**2
    with np.errstate(divide="ignore"):
        ols = np.where(n > 2, sin2 + tau2 / (n - 2), np.inf)
    if not (ridge > 0).any():
        return ols
    lam_n = (n * ridge)[..., None]
    ridged = sin2 + _chi2_mean(
        lambda q: (lam_n**2 * cos2[..., None] + tau2[..., None] * q) / (q + lam_n) ** 2, n
    )
    return np.where(ridge > 0, ridged, ols)


def linear_transferability(
    theta, gamma, sigma, ridge=0.0, d=None, baseline: str = "min_norm"
) -> np.ndarray:
    """𝒯_lin = R_scratch(γ, σ) − R_linear(θ, γ, σ, λ).

    Asymptotic, minimum-norm baseline: 𝒯 = (1 − γ) + σ²γ/(1 − γ) − sin²θ for γ < 1 and
    σ²/(γ − 1) − sin²θ for γ > 1; baseline="tuned_ridge" replaces R_scratch by `tuned_scratch_risk`
    (asymptotic form even when d is given).
    """
    base = _baseline_risk(gamma, sigma, d, baseline)
    with np.errstate(invalid="ignore"):
        return base - linear_transfer_risk(theta, gamma, sigma, ridge, d)


# --------------------------------------------------------------------------- fine-tuning
def finetune_risk(theta, gamma, sigma, d=None) -> np.ndarray:
    """Risk of full fine-tuning, β̂ = β_s + X⁺(y − Xβ_s) (gradient descent from β_s).

    The bias is the part of β_t − β_s outside the row space, ‖β_t − β_s‖² = 2(1 − cos θ); the
    noise term equals the scratch one:
        R = 2(1 − cos θ)(1 − γ) + σ²γ/(1 − γ)  for γ < 1,  σ²/(γ − 1) for γ > 1 (asymptotic);
    finite n replaces 1 − γ by 1 − n/d and the noise terms as in `scratch_risk`.
    """
    theta = check_theta(theta)
    scratch = scratch_risk(gamma, sigma, d)  # validates gamma, sigma, d
    gamma = np.asarray(gamma, dtype=float)
    unfitted = np.clip(1 - gamma, 0, None)  # 1 − n/d is the same expression with γ = n/d
    return scratch - unfitted + 2 * (1 - np.cos(theta)) * unfitted


def finetune_transferability(theta, gamma, sigma, d=None, baseline: str = "min_norm") -> np.ndarray:
    """𝒯_ft = (1 − γ)(2 cos θ − 1) for γ < 1 and 0 for γ ≥ 1 (the noise terms cancel).

    Gradient descent moves β only within the data's row space, so for γ ≥ 1 fine-tuning and
    scratch reach the same least-squares fit. The paper notes a neglected 1 + O(σ²) factor from
    the deep network's dynamics; here σ enters only through the tuned-ridge baseline, where
    𝒯 = tuned_scratch_risk(γ, σ) − finetune_risk(θ, γ, σ). The finite-n form is the same with
    γ = n/d.
    """
    theta, gamma, sigma = check_theta(theta), check_gamma(gamma), check_sigma(sigma)
    check_d(d)
    if check_baseline(baseline) == "tuned_ridge":
        with np.errstate(invalid="ignore"):
            return tuned_scratch_risk(gamma, sigma) - finetune_risk(theta, gamma, sigma, d)
    theta, gamma, _ = np.broadcast_arrays(theta, gamma, sigma)
    return np.clip(1 - gamma, 0, None) * (2 * np.cos(theta) - 1)


def finetune_negative_transfer_angle() -> float:
    """θ above which fine-tuning transfers negatively for every γ < 1: 2 cos θ = 1, θ = π/3."""
    return float(np.pi / 3)


# --------------------------------------------------------------------------- phase boundaries
class NegativeTransferBoundary(NamedTuple):
    """Linear transfer is negative for under_start < γ < under_end and for γ > over_start.

    under_* are NaN where no negative region exists below γ = 1; over_start is ∞ at θ = 0.
    The band under_end ≤ γ ≤ over_start around γ = 1 is the "anomalous" positive transfer
    caused by the scratch model's double descent.
    """

    under_start: np.ndarray
    under_end: np.ndarray
    over_start: np.ndarray


def negative_transfer_boundary(theta, sigma) -> NegativeTransferBoundary:
    """Where the asymptotic linear transferability 𝒯_lin(θ, γ, σ) changes sign.

    γ > 1: 𝒯 < 0 iff σ²/(γ − 1) < sin²θ, i.e. γ > 1 + σ²/sin²θ (docs/references.md §3).
    γ < 1: with u = 1 − γ and s² = sin²θ, 𝒯 < 0 iff u² − (s² + σ²)u + σ² < 0, i.e. u between the
    roots u± = [(s² + σ²) ± √((s² + σ²)² − 4σ²)]/2; so γ ∈ (1 − u₊, 1 − u₋) ∩ (0, 1).
    At σ = 0 this is cos²θ < γ < 1 and γ > 1.
    """
    theta, sigma = np.broadcast_arrays(check_theta(theta), check_sigma(sigma))
    s2, v2 = np.sin(theta) ** 2, sigma**2
    disc = (s2 + v2) ** 2 - 4 * v2
    root = np.sqrt(np.clip(disc, 0, None))
    u_hi, u_lo = (s2 + v2 + root) / 2, (s2 + v2 - root) / 2
    start, end = np.clip(1 - u_hi, 0, 1), np.clip(1 - u_lo, 0, 1)
    empty = (disc <= 0) | (start >= end)
    with np.errstate(divide="ignore"):
        over = np.where(s2 > 0, 1 + v2 / np.where(s2 > 0, s2, 1.0), np.inf)
    return NegativeTransferBoundary(
        np.where(empty, np.nan, start), np.where(empty, np.nan, end), over
    )


def tuned_negative_transfer_boundary(theta, sigma) -> np.ndarray:
    """γ* above which linear transfer is negative against the tuned-ridge scratch baseline.

    Solving tuned_scratch_risk(γ*, σ) = sin²θ (it is decreasing in γ):
        γ* = cos²θ·(1 + σ²/sin²θ)   (∞ at θ = 0).
    One threshold, no band: the positive-transfer band near γ = 1 disappears.
    """
    theta, sigma = np.broadcast_arrays(check_theta(theta), check_sigma(sigma))
    s2 = np.sin(theta) ** 2
    with np.errstate(divide="ignore"):
        return np.where(
            s2 > 0, np.cos(theta) ** 2 * (1 + sigma**2 / np.where(s2 > 0, s2, 1)), np.inf
        )
