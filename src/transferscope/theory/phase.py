"""Phase diagrams of transferability over (θ, γ): theory, simulation and their difference.

A diagram pairs a transfer method with a scratch baseline (Tahir, Ganguli, Rotskoff,
arXiv 2410.08194): 𝒯(θ, γ, σ) = E[R_baseline − R_transfer]. The simulated value is the mean over
instances of the paired difference (same design X and noise) over runs where both the baseline
and the transfer run converged; the others are counted in n_unconverged, never averaged in.

The theory column uses the finite-n closed forms of `linear` at the simulated n = round(γd)
(so the comparison is like for like); the tuned-ridge baseline uses its asymptotic form.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import polars as pl
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from transferscope.io import atomic_path
from transferscope.theory import linear

__all__ = [
    "DIAGRAMS",
    "Diagram",
    "asymptotic_transferability",
    "phase_table",
    "plot_phase_diagrams",
]

PHASE_COLUMNS = [
    "theta",
    "gamma",
    "sigma",
    "theory",
    "simulation",
    "sim_std",
    "n_instances",
    "n_unconverged",
    "difference",
]


@dataclass(frozen=True)
class Diagram:
    """A transfer method against a scratch baseline (method names of `simulate.simulate_grid`)."""

    name: str
    label: str
    transfer: str  # "linear", "linear_ridge" or "finetune"
    baseline: str  # "scratch" (minimum norm, GD) or "ridge_scratch" (tuned ridge)


DIAGRAMS = {
    "linear": Diagram("linear", "linear transfer vs scratch", "linear", "scratch"),
    "finetune": Diagram("finetune", "fine-tuning vs scratch", "finetune", "scratch"),
    "linear_tuned": Diagram(
        "linear_tuned", "linear transfer vs tuned-ridge scratch", "linear", "ridge_scratch"
    ),
    "finetune_tuned": Diagram(
        "finetune_tuned", "fine-tuning vs tuned-ridge scratch", "finetune", "ridge_scratch"
    ),
    "linear_ridge": Diagram(
        "linear_ridge", "ridge-readout transfer vs scratch", "linear_ridge", "scratch"
    ),
}


def _theory_baseline(diagram: Diagram) -> str:
    return "tuned_ridge" if diagram.baseline == "ridge_scratch" else "min_norm"


def theory_values(diagram: Diagram, theta, gamma, sigma, d, readout_ridge=0.0) -> np.ndarray:
    """Closed-form 𝒯 for a diagram (finite n = γd when d is given)."""
    base = _theory_baseline(diagram)
    if diagram.transfer == "finetune":
        return linear.finetune_transferability(theta, gamma, sigma, d=d, baseline=base)
    ridge = readout_ridge if diagram.transfer == "linear_ridge" else 0.0
    return linear.linear_transferability(theta, gamma, sigma, ridge=ridge, d=d, baseline=base)


def asymptotic_transferability(diagram: Diagram, theta, gamma, sigma, readout_ridge=0.0):
    """𝒯 as d → ∞ (used for the boundary contours drawn over the diagrams)."""
    return theory_values(diagram, theta, gamma, sigma, None, readout_ridge)


def phase_table(
    runs: pl.DataFrame, diagram: Diagram, d: int, readout_ridge: float = 0.0
) -> pl.DataFrame:
    """One row per (θ, γ, σ) with the columns of PHASE_COLUMNS (difference = theory − simulation).

    runs: the per-run table of `simulate.simulate_grid`.
    """
    keys = ["gamma", "n", "sigma", "instance"]
    base = runs.filter(pl.col("method") == diagram.baseline).select(
        *keys, pl.col("risk").alias("base_risk"), pl.col("converged").alias("base_ok")
    )
    paired = (
        runs.filter(pl.col("method") == diagram.transfer)
        .join(base, on=keys, how="left")
        .with_columns(
            (pl.col("base_risk") - pl.col("risk")).alias("t"),
            (pl.col("converged") & pl.col("base_ok").fill_null(False)).alias("ok"),
        )
    )
    table = (
        paired.group_by("theta", "gamma", "n", "sigma")
        .agg(
            pl.col("t").filter(pl.col("ok")).mean().alias("simulation"),
            pl.col("t").filter(pl.col("ok")).std().alias("sim_std"),
            pl.len().cast(pl.Int64).alias("n_instances"),
            (~pl.col("ok")).sum().cast(pl.Int64).alias("n_unconverged"),
        )
        .sort("sigma", "theta", "gamma")
    )
    theory = theory_values(
        diagram,
        table["theta"].to_numpy(),
        table["n"].to_numpy() / d,  # the simulated n, not the nominal γ
        table["sigma"].to_numpy(),
        d,
        readout_ridge,
    )
    return (
        table.with_columns(pl.Series("theory", theory, dtype=pl.Float64))
        .with_columns(
            pl.col("simulation").fill_nan(None),
            (pl.col("theory") - pl.col("simulation")).alias("difference"),
        )
        .select(PHASE_COLUMNS)
    )


# --------------------------------------------------------------------------- figures
def _edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; end cells mirrored)."""
    if len(centres) == 1:
        return np.array([centres[0] - 0.5, centres[0] + 0.5])
    mid = (centres[1:] + centres[:-1]) / 2
    return np.concatenate([[2 * centres[0] - mid[0]], mid, [2 * centres[-1] - mid[-1]]])


def _grid(table: pl.DataFrame, sigma: float, column: str):
    sub = table.filter(pl.col("sigma") == sigma)
    thetas, gammas = np.unique(sub["theta"].to_numpy()), np.unique(sub["gamma"].to_numpy())
    values = np.full((len(thetas), len(gammas)), np.nan)
    ti = np.searchsorted(thetas, sub["theta"].to_numpy())
    gi = np.searchsorted(gammas, sub["gamma"].to_numpy())
    values[ti, gi] = sub[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return thetas, gammas, values


def _symmetric_norm(values: np.ndarray, cap: float) -> TwoSlopeNorm:
    finite = np.abs(values[np.isfinite(values)])
    lim = min(float(finite.max()) if finite.size else 1.0, cap) or 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim)


def plot_phase_diagrams(
    tables: dict[str, pl.DataFrame],
    path: str | os.PathLike,
    *,
    title: str,
    readout_ridge: float = 0.0,
    cap: float = 1.5,
) -> None:
    """Rows: (diagram, σ); columns: theory, simulation, theory − simulation.

    Cells with no converged run are grey. The asymptotic zero contour (negative-transfer
    boundary) is drawn over theory and simulation; for tuned-ridge diagrams the minimum-norm
    boundary is drawn dashed beside it, so the vanishing band near γ = 1 is visible.
    Colour scales are symmetric around 0 (red: positive transfer), clipped at ±cap.
    """
    rows = [(name, s) for name, t in tables.items() for s in np.unique(t["sigma"].to_numpy())]
    # fixed spacing: a layout engine re-measures every label of the 12+ panels (slow)
    fig = Figure(figsize=(15, 3.4 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    fig.subplots_adjust(
        left=0.05, right=0.97, bottom=0.04, top=1 - 0.35 / len(rows), hspace=0.42, wspace=0.32
    )
    for r, (name, sigma) in enumerate(rows):
        diagram, table = DIAGRAMS[name], tables[name]
        thetas, gammas, theory = _grid(table, sigma, "theory")
        _, _, sim = _grid(table, sigma, "simulation")
        _, _, diff = _grid(table, sigma, "difference")
        norm = _symmetric_norm(np.concatenate([theory.ravel(), sim.ravel()]), cap)
        for c, (values, what) in enumerate(
            [(theory, "theory"), (sim, "simulation"), (diff, "theory − simulation")]
        ):
            ax = axes[r, c]
            ax.set_facecolor("0.8")  # NaN cells (no converged run) stay grey
            shown = np.clip(values, -1e3, 1e3)  # ±∞ (finite-d theory at n = d ± 1) saturates
            mesh = ax.pcolormesh(
                _edges(gammas),
                _edges(thetas),
                np.ma.masked_invalid(shown),
                cmap="RdBu_r",
                norm=norm if c < 2 else _symmetric_norm(values, cap),
            )
            fig.colorbar(
                mesh,
                ax=ax,
                label=r"$\mathcal{T}$ = E[R_scratch − R_transfer]"
                if c < 2
                else r"$\Delta\mathcal{T}$",
            )
            if c < 2:
                _draw_boundaries(ax, diagram, sigma, gammas, thetas, readout_ridge)
            ax.set_xlabel("γ = n/d")
            ax.set_ylabel("θ (rad)")
            ax.set_title(f"{diagram.label}, σ = {sigma:g}: {what}", fontsize=9)
    fig.suptitle(f"{title}\ngrey cells: no run converged within the step budget")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _draw_boundaries(ax, diagram, sigma, gammas, thetas, readout_ridge) -> None:
    g = np.linspace(max(gammas.min() * 0.9, 1e-3), gammas.max() * 1.05, 301)
    t = np.linspace(0, min(np.pi / 2, thetas.max() * 1.05), 200)
    if diagram.name == "finetune":  # 𝒯 = (1 − γ)(2cos θ − 1): θ = π/3 below γ = 1, zero above
        ax.plot([g[0], 1], [np.pi / 3] * 2, "k-")
        ax.axvline(1.0, color="k", linestyle=":", linewidth=0.8)
        return
    gg, tt = np.meshgrid(g, t)
    styles = [(diagram, "solid", 1.5)]
    if diagram.baseline == "ridge_scratch":  # the untuned boundary, dashed, for comparison
        styles.append((DIAGRAMS[diagram.transfer], "dashed", 0.8))
    for which, style, width in styles:
        if which.name == "finetune":
            ax.plot([g[0], 1], [np.pi / 3] * 2, "k", linestyle=style, linewidth=width)
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            z = asymptotic_transferability(which, tt, gg, sigma, readout_ridge)
        z = np.nan_to_num(z, posinf=1e3, neginf=-1e3)
        if z.min() < 0 < z.max():
            ax.contour(gg, tt, z, levels=[0.0], colors="k", linestyles=style, linewidths=width)
