"""Figures of the per-experiment stage: mistakes gallery, similarity, criticality."""

from __future__ import annotations

from pathlib import Path

from transferscope.analyses.outputs import _pyplot, note_figure
from transferscope.analyses.pairwise import PAIR_TYPES


def gallery_figure(x, y, indices, pt_pred, rit_pred, classes, limit, path, dpi, title) -> None:
    """Samples P-T gets wrong and RI-T right (dataset index, label, both predictions)."""
    from transferscope.analyses.mistakes import pt_wrong_rit_right
    from transferscope.figures import save_figure

    positions = pt_wrong_rit_right(pt_pred == y, rit_pred == y)
    if positions.size == 0:
        note_figure(path, f"{title}: none in the {len(y)} evaluated samples", dpi)
        return
    plt = _pyplot()
    shown = positions[:limit]
    cols = min(8, len(shown))
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.9 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, pos in zip(axes.ravel(), shown.tolist()):
        img = x[pos].float()
        img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-12)
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray")
        else:
            ax.imshow(img[:3].permute(1, 2, 0).numpy())
        ax.set_title(
            f"#{indices[pos]} y={int(y[pos])}\nP-T {int(pt_pred[pos])} | RI-T {int(rit_pred[pos])}",
            fontsize=7,
        )
    fig.suptitle(f"{title} ({positions.size} of {len(y)}; first {len(shown)} shown)", fontsize=8)
    legend = "classes: " + "; ".join(f"{k} = {name}" for k, name in enumerate(classes))
    fig.text(0.5, 0.0, legend, ha="center", va="top", fontsize=6, wrap=True)
    fig.tight_layout()
    save_figure(fig, path, dpi)


def similarity_figure(cka, dist, modules, path, dpi, exp) -> None:
    """Heat maps pair type × module: mean diagonal CKA and mean relative weight distance."""
    import numpy as np
    import polars as pl

    from transferscope.figures import save_figure

    plt = _pyplot()
    diag = cka.filter(pl.col("diagonal"))
    types = [t for t in PAIR_TYPES if diag.filter(pl.col("pair_type") == t).height]
    cka_m = np.array(
        [
            [
                diag.filter((pl.col("pair_type") == t) & (pl.col("module_a") == m))["cka"].mean()
                for m in modules
            ]
            for t in types
        ],
        dtype=float,
    )
    dist_modules = dist["module"].unique(maintain_order=True).to_list()
    dist_m = np.array(
        [
            [
                _mean_or_nan(
                    dist.filter((pl.col("pair_type") == t) & (pl.col("module") == m))["relative"]
                )
                for m in dist_modules
            ]
            for t in types
        ],
        dtype=float,
    )
    fig, axes = plt.subplots(
        1, 2, figsize=(4 + 0.7 * (len(modules) + len(dist_modules)), 1.5 + 0.5 * len(types))
    )
    for ax, matrix, cols, label, kwargs in (
        (axes[0], cka_m, modules, "linear CKA (mean over pairs)", {"vmin": 0, "vmax": 1}),
        (axes[1], dist_m, dist_modules, "relative ℓ2 distance ‖θa−θb‖/‖θa‖", {}),
    ):
        image = ax.imshow(matrix, aspect="auto", cmap="viridis", **kwargs)
        ax.set_xticks(
            range(len(cols)), [c.replace("backbone.", "") for c in cols], rotation=60, fontsize=7
        )
        ax.set_yticks(range(len(types)), types, fontsize=8)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                if np.isfinite(matrix[i, j]):
                    ax.text(
                        j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w"
                    )
        fig.colorbar(image, ax=ax, label=label)
    axes[0].set_title("feature similarity per module")
    axes[1].set_title("weight distance per module")
    fig.suptitle(f"{exp}: P = probe backbone (P's), eval subset of the target test set")
    fig.tight_layout()
    save_figure(fig, path, dpi)


def _mean_or_nan(series) -> float:
    return float(series.mean()) if series.len() else float("nan")


def criticality_figures(results, seed, out_dir: Path, exp: str) -> None:
    """Heat maps (P-T and RI-T modules of one seed) and bars of μ per module and model."""
    from dataclasses import replace

    from transferscope.analyses.figures import plot_criticality_bars, plot_criticality_heatmaps

    shown = [replace(r, module=f"{role}: {r.module}") for role, s, r in results if s == seed]
    plot_criticality_heatmaps(
        shown,
        out_dir / "criticality_heatmaps.png",
        title=f"{exp} seed{seed}: mean perturbed loss over (α, σ); dots: within (1+ε)·final loss",
    )
    bars: dict[str, dict[str, float]] = {}
    bounds: dict[str, set[str]] = {}
    for role, s, r in results:
        bars.setdefault(f"{role} seed{s}", {})[r.module] = r.criticality
        if r.on_grid_edge:
            bounds.setdefault(f"{role} seed{s}", set()).add(r.module)
    plot_criticality_bars(
        bars,
        out_dir / "criticality_bars.png",
        title=f"{exp}: module criticality on {results[0][2].grid} (θ⁰: P for P-T, RI for "
        "RI-T; hatched: infeasible; pale ≤: argmin on the grid's edge, an upper bound)",
        bounds=bounds,
    )
