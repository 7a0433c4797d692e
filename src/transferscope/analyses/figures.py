"""Figures of the representation analyses, each written as a PNG atomically.

Figures are built on matplotlib.figure.Figure directly (no pyplot state, no GUI backend);
the Agg canvas renders them. `transferscope.io.atomic_path` yields a temporary name without
the .png suffix, so every save passes format="png".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
from matplotlib import colormaps
from matplotlib.figure import Figure

from transferscope.analyses.criticality import CriticalityResult
from transferscope.io import atomic_path


def _save(fig: Figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150)


def plot_cka_heatmap(
    matrix: np.ndarray,
    path: str | os.PathLike,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    row_name: str = "model A",
    col_name: str = "model B",
    title: str = "",
) -> None:
    """Layer × layer CKA heat map, colours fixed to [0, 1] (debiased values < 0 show as 0)."""
    matrix = np.asarray(matrix)
    if matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"matrix {matrix.shape} does not match {len(row_labels)} × {len(col_labels)} labels"
        )
    side = 2.0 + 0.3 * max(matrix.shape)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, origin="lower", cmap="magma", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    ax.set_xlabel(col_name)
    ax.set_ylabel(row_name)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="linear CKA")
    _save(fig, path)


def plot_barrier_curves(
    curves: Mapping[str, Sequence[Sequence[Mapping]]], path: str | os.PathLike, title: str = ""
) -> None:
    """Loss and accuracy along the interpolation path, one colour per pair type.

    ``curves`` maps a pair type ("P-T/P-T", "RI-T/RI-T", …) to its pairs' `barrier_curve`
    outputs; each pair is a thin line, the pair type's mean a thick one.
    """
    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    colours = [f"C{i}" for i in range(10)]
    for k, (pair_type, pair_curves) in enumerate(curves.items()):
        colour = colours[k % len(colours)]
        for ax, key in zip(axes, ("loss", "accuracy")):
            series = [
                (np.array([r["lambda"] for r in c]), np.array([r[key] for r in c]))
                for c in pair_curves
            ]
            for lam, values in series:
                ax.plot(lam, values, color=colour, alpha=0.3, linewidth=0.8)
            if series and all(np.array_equal(series[0][0], lam) for lam, _ in series):
                mean = np.mean([values for _, values in series], axis=0)
                ax.plot(series[0][0], mean, color=colour, linewidth=2.0, label=pair_type)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.set_xlabel("λ")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def plot_criticality_heatmaps(
    results: Sequence[CriticalityResult], path: str | os.PathLike, title: str = ""
) -> None:
    """One (α, σ) heat map of mean perturbed loss per module; dots mark feasible points."""
    if not results:
        raise ValueError("no criticality results to plot")
    cols = min(4, len(results))
    rows = -(-len(results) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    finite = np.concatenate([r.losses[np.isfinite(r.losses)] for r in results])
    vmax = float(np.quantile(finite, 0.95)) if finite.size else 1.0
    image = None
    for ax, result in zip(axes, results):
        image = ax.imshow(
            result.losses.T, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax
        )
        a_idx, s_idx = np.nonzero(result.feasible)
        ax.scatter(a_idx, s_idx, s=6, color="white")
        ax.set_xticks(range(result.alphas.size), [f"{a:.1f}" for a in result.alphas], fontsize=5)
        ax.set_yticks(range(result.sigmas.size), [f"{s:.2g}" for s in result.sigmas], fontsize=5)
        relation = "≤" if result.on_grid_edge else "="  # an edge argmin only bounds μ
        ax.set_title(f"{result.module}  μ{relation}{result.criticality:.3g}", fontsize=8)
        ax.set_xlabel("α", fontsize=7)
        ax.set_ylabel("σ", fontsize=7)
    for ax in axes[len(results) :]:
        ax.set_visible(False)
    fig.colorbar(image, ax=list(axes[: len(results)]), label="mean loss")
    fig.suptitle(title)
    _save(fig, path)


def plot_criticality_bars(
    criticality: Mapping[str, Mapping[str, float]],
    path: str | os.PathLike,
    title: str = "",
    bounds: Mapping[str, set[str]] | None = None,
) -> None:
    """Grouped bars of μ per module, one group member per model (e.g. P-T vs RI-T).

    ``criticality`` maps model label → module → μ. Symmetric-log axis (μ spans decades and
    can be 0); infeasible modules (μ = inf) are drawn as hatched bars marked ∞; the modules in
    ``bounds[label]`` (argmin on the grid's edge) as pale bars marked ≤: upper bounds only.
    """
    bounds = bounds or {}
    modules = list(dict.fromkeys(m for values in criticality.values() for m in values))
    finite = [v for values in criticality.values() for v in values.values() if np.isfinite(v)]
    top = max(finite, default=1.0) * 10 or 1.0
    fig = Figure(figsize=(max(6.0, 0.5 * len(modules) * max(1, len(criticality))), 4))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(criticality))
    x = np.arange(len(modules))
    for k, (label, values) in enumerate(criticality.items()):
        mu = np.array([values.get(m, np.nan) for m in modules], dtype=float)
        infinite = np.isinf(mu)
        edge = np.array([m in bounds.get(label, ()) for m in modules], dtype=bool)
        measured = np.where(infinite | edge, np.nan, mu)
        ax.bar(x + k * width, measured, width, label=label, color=f"C{k}")
        ax.bar(x + k * width, np.where(edge, mu, np.nan), width, color=f"C{k}", alpha=0.35)
        for xi in x[edge & np.isfinite(mu)]:
            ax.text(xi + k * width, mu[xi], "≤", ha="center", va="bottom", color=f"C{k}")
        for xi in x[infinite]:
            ax.bar(xi + k * width, top, width, fill=False, hatch="//", edgecolor=f"C{k}")
            ax.text(xi + k * width, top, "∞", ha="center", va="bottom", color=f"C{k}")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xticks(x + width * (len(criticality) - 1) / 2, modules, rotation=60, fontsize=7)
    ax.set_ylabel("module criticality μ")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.set_layout_engine("constrained")
    _save(fig, path)


def plot_spectra(spectra: pl.DataFrame, path: str | os.PathLike, title: str = "") -> None:
    """Singular values against their rank, one line per parameter, log scale.

    ``spectra`` is `weight_spectra` output, optionally with a "model" column (one panel each).
    """
    models = spectra["model"].unique(maintain_order=True).to_list() if "model" in spectra else [""]
    fig = Figure(figsize=(5 * len(models), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(models), squeeze=False)).ravel()
    params = spectra["parameter"].unique(maintain_order=True).to_list()
    cmap = colormaps["viridis"]
    colour = {p: cmap(i / max(1, len(params) - 1)) for i, p in enumerate(params)}
    for ax, model in zip(axes, models):
        part = spectra.filter(pl.col("model") == model) if model else spectra
        for (param,), group in part.group_by("parameter", maintain_order=True):
            ax.plot(
                group["index"] + 1,
                group["singular_value"],
                color=colour[param],
                lw=0.8,
                label=param,
            )
        ax.set_yscale("log")
        ax.set_xscale("log")
        ax.set_xlabel("rank (colour: layer depth, dark = early)")
        ax.set_ylabel("singular value")
        ax.set_title(str(model))
        if len(params) <= 12:  # beyond that a legend hides the lines
            ax.legend(fontsize=6)
    fig.suptitle(title)
    _save(fig, path)
