"""Linear interpolation between two models' weights and the loss barrier along the path.

Θ_λ = (1−λ)Θ₁ + λΘ₂ for every floating-point tensor of the state dict (Neyshabur, Sedghi,
Zhang 2020, `ckpt_interpolation.py`: all tensors, 20–50 points); integer buffers such as
BatchNorm's num_batches_tracked are taken from Θ₁.

barrier height = max_λ [L(Θ_λ) − ((1−λ)L(Θ₁) + λL(Θ₂))]  (0 at the endpoints, so ≥ 0 when
they are on the grid); the paper finds none between P-T models and one between RI-T models.

Their Fixup ResNet has no BatchNorm. For models with BatchNorm the interpolated running
statistics are not the statistics of the interpolated network, which inflates barriers;
``bn_loader`` recomputes them on training data for every Θ_λ (endpoints included, so all
points are treated alike), and each output row records whether that was done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from transferscope.analyses.distances import check_same_architecture

State = Mapping[str, torch.Tensor]


def interpolate_state(
    sd1: State, sd2: State, lam: float, labels: tuple[str, str] = ("state 1", "state 2")
) -> dict[str, torch.Tensor]:
    """(1−λ)·sd1 + λ·sd2 for floating tensors (exact at λ = 0 and 1), sd1's other tensors."""
    check_same_architecture(sd1, sd2, labels)
    out = {}
    for key, a in sd1.items():
        b = sd2[key]
        if a.is_floating_point() and b.is_floating_point():
            # lerp returns a exactly at 0 and b exactly at 1
            out[key] = torch.lerp(a.detach(), b.detach().to(a.device, a.dtype), float(lam))
        else:
            out[key] = a.detach().clone()
    return out


def recompute_bn(model: nn.Module, loader: Iterable, max_batches: int | None = None) -> int:
    """Reset and recompute every BatchNorm layer's running statistics on ``loader``.

    As torch.optim.swa_utils.update_bn: momentum None (exact cumulative average over the
    batches), but only the BatchNorm layers are put in train mode (dropout stays off).
    Batches are tensors or tuples whose first element is the input. Modes and momenta are
    restored. Returns the number of BatchNorm layers (0: nothing to do, loader not read).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    device = next(model.parameters()).device
    seen = 0
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for batch in loader:
                if max_batches is not None and seen >= max_batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
                seen += 1
    finally:
        for m, momentum in momenta.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.train(training)
    if seen == 0:
        raise ValueError("recompute_bn: the loader yielded no batches; statistics are reset")
    return len(norms)


def barrier_curve(
    model_fn: Callable[[], nn.Module],
    sd1: State,
    sd2: State,
    evaluate: Callable[[nn.Module], Mapping[str, float]],
    lambdas: Sequence[float],
    bn_loader: Iterable | None = None,
    labels: tuple[str, str] = ("state 1", "state 2"),
) -> list[dict]:
    """Evaluate Θ_λ for each λ: rows {"lambda", "loss", "accuracy", "bn_recomputed"}.

    ``model_fn()`` builds a fresh model of the architecture; ``evaluate(model)`` returns at
    least "loss" and "accuracy". With ``bn_loader`` BatchNorm statistics are recomputed
    (`recompute_bn`) for every point; "bn_recomputed" is True only if the model has any.
    """
    check_same_architecture(sd1, sd2, labels)
    rows = []
    for lam in lambdas:
        model = model_fn()
        model.load_state_dict(interpolate_state(sd1, sd2, lam, labels))
        recomputed = bn_loader is not None and recompute_bn(model, bn_loader) > 0
        metrics = evaluate(model)
        rows.append(
            {
                "lambda": float(lam),
                "loss": float(metrics["loss"]),
                "accuracy": float(metrics["accuracy"]),
                "bn_recomputed": bool(recomputed),
            }
        )
    return rows


def barrier_height(losses: Sequence[float], lambdas: Sequence[float]) -> float:
    """max_λ [L(λ) − ((1−λ)L(0) + λL(1))]; λ = 0 and λ = 1 must be among ``lambdas``."""
    loss, lam = np.asarray(losses, dtype=np.float64), np.asarray(lambdas, dtype=np.float64)
    if loss.shape != lam.shape or loss.ndim != 1:
        raise ValueError(f"losses {loss.shape} and lambdas {lam.shape} must be equal-length 1-D")
    start, end = np.flatnonzero(lam == 0.0), np.flatnonzero(lam == 1.0)
    if not len(start) or not len(end):
        raise ValueError("lambdas must include both endpoints 0 and 1 for the barrier height")
    if not np.all(np.isfinite(loss)):
        raise ValueError(f"losses must be finite, got {loss.tolist()}")
    chord = (1.0 - lam) * loss[start[0]] + lam * loss[end[0]]
    return float(np.max(loss - chord))
