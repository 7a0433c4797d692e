"""Module criticality (Chatterji, Neyshabur, Sedghi, "The intriguing role of module
criticality in the generalization of deep networks", ICLR 2020).

For one module with initial weights θ⁰ and final weights θ^F (all other modules final):

    θ_α = (1−α)θ⁰ + αθ^F,
    μ = min_{(α, σ) on the grid} α²‖θ^F − θ⁰‖²_F / σ²
        subject to  E_{u ~ N(0, σ²I)} L(θ_α + u) ≤ (1 + ε_rel) · L(θ^F),

the expectation estimated by the mean over ``draws`` noise samples. The reference code
(google-research/meta-dataset `analysis/transferability/criticality.py`, docs/references.md §2)
uses α = linspace(0, 1, 11), σ = linspace(1e-16, 1, 11), 10 draws, ε_rel = 0.01: this
function's defaults. The workflow runs the grid of the config's ``analyses.criticality``
(default 5 α × 4 σ geometric in [0.001, 0.1], 2 draws, to fit the default run), and every
result carries the grid it was computed on (``grid``). A small μ means the module can be rewound
towards its initial value while staying in a wide valley: a non-critical module.

On a grid, μ is bracketed only when its argmin has grid neighbours on every side. When the
argmin sits on the grid's edge it is not a measurement but an upper bound (``on_grid_edge``;
``summary()`` then reports ``criticality`` as null beside ``criticality_upper_bound``):
at the largest σ, a larger noise scale might also meet the constraint with a smaller score;
at the smallest σ (of several), a smaller σ with a smaller α might; at the largest α, the
constraint is met only without rewinding on the grid, so μ measures the noise scale alone.
μ = 0 (met at α = 0, or an unchanged module) is exact, not an edge.

Choices not fixed by the sources: the noise is added to the module's parameters only
(its BatchNorm buffers stay final); the model is evaluated in eval() mode; a module whose
final weights equal its initial ones has μ = 0 (the numerator is 0 at every point); if no
grid point meets the constraint, μ = inf (the reference's argmin would silently pick α = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from transferscope.analyses.distances import check_same_architecture, module_of

DEFAULT_ALPHAS = tuple(np.linspace(0.0, 1.0, 11).tolist())
DEFAULT_SIGMAS = tuple(np.linspace(1e-16, 1.0, 11).tolist())
DEFAULT_DRAWS = 10
DEFAULT_EPS_REL = 0.01


@dataclass(frozen=True)
class CriticalityResult:
    """Criticality of one module plus the (α, σ) grid of mean perturbed losses."""

    module: str
    criticality: float
    alpha: float | None  # argmin point; None when no point is feasible
    sigma: float | None
    alphas: np.ndarray
    sigmas: np.ndarray
    losses: np.ndarray  # (len(alphas), len(sigmas)) mean loss over the noise draws
    final_loss: float
    threshold: float  # (1 + ε_rel) · final_loss
    distance_sq: float  # ‖θ^F − θ⁰‖²_F over the module's parameters
    draws: int = 1

    @property
    def feasible(self) -> np.ndarray:
        return self.losses <= self.threshold

    @property
    def grid(self) -> str:
        """The grid searched, in words (it differs from the reference's 11 α × 11 σ, 10 draws)."""
        return (
            f"{self.alphas.size} α in [{self.alphas.min():.3g}, {self.alphas.max():.3g}] × "
            f"{self.sigmas.size} σ in [{self.sigmas.min():.3g}, {self.sigmas.max():.3g}], "
            f"{self.draws} draws"
        )

    @property
    def edge(self) -> str | None:
        """Why the argmin is on the grid's edge (μ is then an upper bound), or None."""
        if self.alpha is None or self.criticality == 0.0:
            return None  # infeasible everywhere (μ = inf) or exactly 0
        reasons = []
        if self.alpha == self.alphas.max():
            reasons.append(f"met only at the largest α ({self.alpha:.3g}): no rewinding passes")
        if self.sigma == self.sigmas.max():
            reasons.append(f"at the largest σ ({self.sigma:.3g}): a larger σ may pass")
        elif self.sigma == self.sigmas.min() and self.sigmas.size > 1:
            reasons.append(f"at the smallest σ ({self.sigma:.3g}): a smaller σ may score lower")
        return "; ".join(reasons) or None

    @property
    def on_grid_edge(self) -> bool:
        return self.edge is not None

    def grid_frame(self) -> pl.DataFrame:
        """Long table (module, alpha, sigma, loss, feasible) for heat maps."""
        a, s = np.meshgrid(self.alphas, self.sigmas, indexing="ij")
        return pl.DataFrame(
            {
                "module": [self.module] * a.size,
                "alpha": a.ravel(),
                "sigma": s.ravel(),
                "loss": self.losses.ravel(),
                "feasible": self.feasible.ravel(),
            }
        )

    def summary(self) -> dict:
        """One table row: μ, or null and an upper bound when the argmin is on the grid's edge."""
        return {
            "module": self.module,
            "criticality": None if self.on_grid_edge else self.criticality,
            "criticality_upper_bound": self.criticality if self.on_grid_edge else None,
            "on_grid_edge": self.on_grid_edge,
            "grid_edge": self.edge,
            "grid": self.grid,
            "alpha": self.alpha,
            "sigma": self.sigma,
            "final_loss": self.final_loss,
            "threshold": self.threshold,
            "distance_sq": self.distance_sq,
        }


def module_names(model: nn.Module, depth: int = 1) -> list[str]:
    """Parameter-owning modules cut to ``depth`` name components, in parameter order.

    depth 1 on a ResNet: ["conv1", "bn1", "layer1", …, "fc"]; depth 2 splits stages into
    blocks ("layer1.0", …); shallower leaves (e.g. "conv1") stay as they are.
    """
    if depth < 1:
        raise ValueError(f"depth must be ≥ 1, got {depth}")
    names: dict[str, None] = {}
    for name, _ in model.named_parameters():
        names.setdefault(module_of(name, depth))
    return list(names)


def _in_module(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_criticality(
    model: nn.Module,
    init_state: Mapping[str, torch.Tensor],
    final_state: Mapping[str, torch.Tensor],
    module_prefix: str,
    evaluate_loss: Callable[[nn.Module], float],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    draws: int = DEFAULT_DRAWS,
    generator: torch.Generator | None = None,
    eps_rel: float = DEFAULT_EPS_REL,
) -> CriticalityResult:
    """Criticality of the parameters whose names start with ``module_prefix`` (see module doc).

    ``model`` supplies the architecture; it is loaded with ``final_state`` for the analysis
    and given back its own state and train/eval flags afterwards. ``evaluate_loss(model)``
    returns the mean loss on the evaluation data (a float). Noise comes from ``generator``
    (a CPU torch.Generator; default seeded with 0) in a fixed order, so results repeat.
    Cost: len(alphas)·len(sigmas)·draws + 1 evaluations.
    """
    check_same_architecture(init_state, final_state, ("initial state", "final state"))
    alpha_arr = np.asarray(alphas, dtype=np.float64)
    sigma_arr = np.asarray(sigmas, dtype=np.float64)
    if alpha_arr.ndim != 1 or sigma_arr.ndim != 1 or not alpha_arr.size or not sigma_arr.size:
        raise ValueError("alphas and sigmas must be non-empty 1-D sequences")
    if not np.all(sigma_arr > 0):
        raise ValueError(f"sigmas must be > 0 (μ divides by σ²), got {sigma_arr.tolist()}")
    if draws < 1:
        raise ValueError(f"draws must be ≥ 1, got {draws}")
    params = {n: p for n, p in model.named_parameters() if _in_module(n, module_prefix)}
    if not params:
        raise ValueError(
            f"no parameters under module {module_prefix!r}; modules: {module_names(model, 2)}"
        )
    missing = [n for n in params if n not in final_state]
    if missing:
        raise ValueError(f"parameters {missing} of the model are not in the given states")
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    theta0 = {n: init_state[n].detach().to(p.device, torch.float64) for n, p in params.items()}
    theta_f = {n: final_state[n].detach().to(p.device, torch.float64) for n, p in params.items()}
    distance_sq = float(sum(((theta_f[n] - theta0[n]) ** 2).sum() for n in params))

    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = {m: m.training for m in model.modules()}
    losses = np.empty((alpha_arr.size, sigma_arr.size))
    try:
        model.load_state_dict(final_state)
        model.eval()
        final_loss = float(evaluate_loss(model))
        for i, alpha in enumerate(alpha_arr):
            base = {n: torch.lerp(theta0[n], theta_f[n], float(alpha)) for n in params}
            for j, sigma in enumerate(sigma_arr):
                total = 0.0
                for _ in range(draws):
                    with torch.no_grad():
                        for n, p in params.items():
                            noise = torch.randn(
                                p.shape,
                                generator=generator,
                                dtype=torch.float64,
                                device=generator.device,
                            )
                            p.copy_(base[n] + sigma * noise.to(p.device))
                    total += float(evaluate_loss(model))
                losses[i, j] = total / draws
    finally:
        model.load_state_dict(saved)
        for m, training in modes.items():
            m.train(training)

    threshold = (1.0 + eps_rel) * final_loss
    feasible = losses <= threshold
    score = np.where(
        feasible, alpha_arr[:, None] ** 2 * distance_sq / sigma_arr[None, :] ** 2, np.inf
    )
    # an unchanged module has numerator 0 at every point, feasible or not
    criticality = 0.0 if distance_sq == 0.0 else float(score.min())
    if np.isfinite(score).any():
        i, j = np.unravel_index(np.argmin(score), score.shape)
        alpha_star, sigma_star = float(alpha_arr[i]), float(sigma_arr[j])
    else:
        alpha_star = sigma_star = None
    return CriticalityResult(
        module=module_prefix,
        criticality=criticality,
        alpha=alpha_star,
        sigma=sigma_star,
        alphas=alpha_arr,
        sigmas=sigma_arr,
        losses=losses,
        final_loss=final_loss,
        threshold=threshold,
        distance_sq=distance_sq,
        draws=draws,
    )
