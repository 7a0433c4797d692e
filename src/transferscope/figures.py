"""Training figures: per-epoch accuracy and loss of every regime, mean over seeds with spread."""

from __future__ import annotations

from pathlib import Path

from transferscope.io import atomic_path, read_json

REGIME_COLORS = {
    "pretrain": "#7f7f7f",
    "probe": "#2ca02c",
    "finetune": "#1f77b4",
    "scratch": "#d62728",
}


def save_figure(fig, path: str | Path, dpi: int = 120) -> None:
    """Write a matplotlib figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def run_metrics(run_dirs: list[Path]):
    """One long table (experiment, regime, seed, epoch, metrics…) from the runs' metrics.csv."""
    import polars as pl

    frames = []
    for run in run_dirs:
        settings = read_json(run / "settings.json")["settings"]
        frames.append(
            pl.read_csv(run / "metrics.csv").with_columns(
                experiment=pl.lit(settings["experiment"]),
                regime=pl.lit(settings["regime"]),
                seed=pl.lit(settings["seed"]),
            )
        )
    return pl.concat(frames, how="diagonal_relaxed")


def training_curves(run_dirs: list[Path], out: Path, dpi: int = 120) -> None:
    """Test accuracy and test loss per epoch; one row per experiment, one line per regime
    (mean over seeds, band = min..max over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl

    table = run_metrics(run_dirs)
    experiments = sorted(table["experiment"].unique())
    fig, axes = plt.subplots(
        len(experiments), 2, figsize=(10, 3.2 * len(experiments)), squeeze=False
    )
    for row, exp in enumerate(experiments):
        for col, metric in enumerate(["test_accuracy", "test_loss"]):
            ax = axes[row, col]
            sub = table.filter(pl.col("experiment") == exp)
            for regime in ["pretrain", "probe", "finetune", "scratch"]:
                curve = (
                    sub.filter(pl.col("regime") == regime)
                    .group_by("epoch")
                    .agg(
                        mean=pl.col(metric).mean(),
                        low=pl.col(metric).min(),
                        high=pl.col(metric).max(),
                        seeds=pl.len(),
                    )
                    .sort("epoch")
                )
                if curve.height == 0:
                    continue
                label = f"{regime} ({curve['seeds'].max()} seeds)"
                if regime == "pretrain":
                    label += ", source task"
                color = REGIME_COLORS[regime]
                ax.plot(curve["epoch"], curve["mean"], marker="o", ms=3, color=color, label=label)
                ax.fill_between(curve["epoch"], curve["low"], curve["high"], color=color, alpha=0.2)
            ax.set_title(f"{exp}: {metric.replace('_', ' ')}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(metric.replace("_", " "))
            ax.grid(alpha=0.3)
            if metric == "test_accuracy":
                ax.set_ylim(0, 1.02)
                ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Training curves (line = mean over seeds, band = range)")
    fig.tight_layout()
    save_figure(fig, out, dpi)
