"""Feature overlap: how much of a target a ridge readout on frozen features cannot explain.

The bridge from theory to real networks. "Features are fate" (Tahir, Ganguli, Rotskoff,
arXiv 2410.08194) predicts the transfer error of a pre-trained model as
    R_transfer ≈ C(n) + ‖P⊥f_t‖²,
where P⊥f_t is the part of the target function outside the span of the pre-trained features.
Here ‖P⊥f_t‖²/‖f_t − E f_t‖² is estimated as 1 − R² of a ridge readout fitted on frozen features
and scored on held-out data; for classification the targets are one-hot labels (or logits) and
the readout's accuracy is reported beside it.

Readout: features are centred with the training mean and divided by one scalar, the root of their
mean variance (so `ridge` is relative to the average feature variance and the geometry of the
representation is unchanged); targets are centred with the training mean (the intercept). Then
    W = (ΦᵀΦ/n + λI)⁻¹Φᵀ(Y − Ȳ)/n = Φᵀ(ΦΦᵀ/n + λI)⁻¹(Y − Ȳ)/n,
solved in whichever of the two forms is smaller, in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["RidgeReadout", "feature_overlap", "fit_ridge_readout"]


@dataclass
class RidgeReadout:
    """A fitted readout; `predict` maps raw features (..., n, p) to targets (..., n, k)."""

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    intercept: torch.Tensor

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        feats = (features.to(self.weight.dtype) - self.mean) / self.scale
        return feats @ self.weight + self.intercept


def fit_ridge_readout(features: torch.Tensor, targets: torch.Tensor, ridge: float) -> RidgeReadout:
    """Ridge readout on features (..., n, p) for targets (..., n, k); leading axes are a batch."""
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0; got ridge={ridge}")
    feats, targ = features.to(torch.float64), targets.to(torch.float64)
    n, p = feats.shape[-2:]
    mean = feats.mean(-2, keepdim=True)
    scale = (feats - mean).pow(2).mean((-2, -1), keepdim=True).sqrt().clamp_min(1e-300)
    phi = (feats - mean) / scale
    intercept = targ.mean(-2, keepdim=True)
    resid = targ - intercept
    if p <= n:
        eye = torch.eye(p, dtype=phi.dtype, device=phi.device)
        gram = phi.transpose(-2, -1) @ phi / n + ridge * eye
        weight = _solve(gram, phi.transpose(-2, -1) @ resid / n)
    else:  # dual form: n × n system
        eye = torch.eye(n, dtype=phi.dtype, device=phi.device)
        kernel = phi @ phi.transpose(-2, -1) / n + ridge * eye
        weight = phi.transpose(-2, -1) @ _solve(kernel, resid / n)
    return RidgeReadout(mean, scale, weight, intercept)


def _solve(mat: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve, falling back to least squares where the system is singular (ridge = 0)."""
    try:
        return torch.linalg.solve(mat, rhs)
    except torch.linalg.LinAlgError:
        return torch.linalg.pinv(mat, hermitian=True) @ rhs


def _as_tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array; got {type(value).__name__}") from err


def _targets(name: str, y: torch.Tensor, classes: int | None) -> torch.Tensor:
    """Integer labels (n,) become one-hot (n, classes); float (n,) becomes (n, 1)."""
    if y.ndim == 1 and classes is not None:
        if y.numel() and (int(y.min()) < 0):
            raise ValueError(f"{name} class labels must be >= 0; got {int(y.min())}")
        return torch.nn.functional.one_hot(y.long(), classes).to(torch.float64)
    if y.ndim == 1:
        return y.to(torch.float64)[:, None]
    if y.ndim != 2:
        raise ValueError(
            f"{name} must be 1-D labels or a 2-D (n, k) target; got shape {tuple(y.shape)}"
        )
    return y.to(torch.float64)


def feature_overlap(features_train, y_train, features_test, y_test, ridge: float = 1e-3) -> dict:
    """Share of the target NOT explained by a ridge readout on frozen features, on held-out data.

    Arguments are numpy arrays or torch tensors: features (n, p); targets either integer class
    labels (n,) (classification: one-hot targets, accuracy reported), or float targets (n,) or
    (n, k) such as logits (regression; for (n, k) targets accuracy compares argmaxes).
    Returns a dict:
        unexplained  1 − R² = Σ‖Y − Ŷ‖² / Σ‖Y − Ȳ_test‖² on the test set (the feature-overlap
                     estimate of ‖P⊥f_t‖²/‖f_t‖²; can exceed 1 when the readout is worse than the
                     test mean),
        r2           R² = 1 − unexplained,
        accuracy     fraction of test argmax predictions equal to the test argmax target (None for
                     a single regression output),
        mse          mean over samples of ‖Y − Ŷ‖²,
        n_train, n_test, n_features, n_outputs, ridge.
    """
    f_tr, f_te = (
        _as_tensor("features_train", features_train),
        _as_tensor("features_test", features_test),
    )
    y_tr, y_te = _as_tensor("y_train", y_train), _as_tensor("y_test", y_test)
    if f_tr.ndim != 2 or f_te.ndim != 2:
        raise ValueError(
            f"features must be 2-D (n, p); got features_train {tuple(f_tr.shape)}, "
            f"features_test {tuple(f_te.shape)}"
        )
    if f_tr.shape[1] != f_te.shape[1]:
        raise ValueError(
            f"features_train has {f_tr.shape[1]} features but features_test has {f_te.shape[1]}"
        )
    if len(y_tr) != len(f_tr) or len(y_te) != len(f_te):
        raise ValueError(
            f"sample counts differ: features_train {len(f_tr)} vs y_train {len(y_tr)}, "
            f"features_test {len(f_te)} vs y_test {len(y_te)}"
        )
    if len(f_tr) < 2 or len(f_te) < 1:
        raise ValueError(f"need >= 2 training and >= 1 test samples; got {len(f_tr)}, {len(f_te)}")
    labels = y_tr.ndim == 1 and not torch.is_floating_point(y_tr)
    classes = int(max(y_tr.max(), y_te.max())) + 1 if labels else None
    t_tr, t_te = _targets("y_train", y_tr, classes), _targets("y_test", y_te, classes)
    if t_tr.shape[1] != t_te.shape[1]:
        raise ValueError(f"y_train has {t_tr.shape[1]} outputs but y_test has {t_te.shape[1]}")
    for name, arr in (("features_train", f_tr), ("features_test", f_te)):
        if not torch.isfinite(arr.to(torch.float64)).all():
            raise ValueError(f"{name} contains NaN or infinite values")

    readout = fit_ridge_readout(f_tr, t_tr, ridge)
    pred = readout.predict(f_te)
    sse = float(((t_te - pred) ** 2).sum())
    sst = float(((t_te - t_te.mean(0, keepdim=True)) ** 2).sum())
    unexplained = sse / sst if sst > 0 else float("nan")
    accuracy = None
    if labels:
        accuracy = float((pred.argmax(1) == y_te.long()).double().mean())
    elif t_te.shape[1] > 1:
        accuracy = float((pred.argmax(1) == t_te.argmax(1)).double().mean())
    return {
        "unexplained": unexplained,
        "r2": 1 - unexplained,
        "accuracy": accuracy,
        "mse": sse / len(t_te),
        "n_train": len(f_tr),
        "n_test": len(f_te),
        "n_features": int(f_tr.shape[1]),
        "n_outputs": int(t_tr.shape[1]),
        "ridge": float(ridge),
    }
