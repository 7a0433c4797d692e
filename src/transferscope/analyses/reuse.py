"""Helpers of the feature-reuse (block shuffling) and intermediate-checkpoint stages:
epochs to a fixed accuracy and the two figures."""

from __future__ import annotations

from transferscope.analyses.outputs import _pyplot


def epochs_to_accuracy(metrics, threshold: float):
    """First epoch whose test accuracy reaches ``threshold`` (None if none does)."""
    import polars as pl

    hit = metrics.filter(pl.col("test_accuracy") >= threshold)
    return int(hit["epoch"].min()) if hit.height else None


def reuse_figure(frame, size, path, dpi, exp) -> None:
    import polars as pl

    from transferscope.figures import REGIME_COLORS, save_figure

    plt = _pyplot()
    numeric = [
        "accuracy_pt",
        "accuracy_rit",
        "relative_gap",
        "epochs_to_threshold_pt",
        "epochs_to_threshold_rit",
    ]
    agg = frame.group_by("block_size").agg(pl.col(numeric).mean()).sort("block_size")
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    x = agg["block_size"].to_list()
    for key, regime, label in (("pt", "finetune", "P-T"), ("rit", "scratch", "RI-T")):
        axes[0].plot(
            x, agg[f"accuracy_{key}"], marker="o", color=REGIME_COLORS[regime], label=label
        )
        axes[0].scatter(
            frame["block_size"],
            frame[f"accuracy_{key}"],
            s=8,
            color=REGIME_COLORS[regime],
            alpha=0.4,
        )
        axes[2].plot(
            x,
            agg[f"epochs_to_threshold_{key}"],
            marker="o",
            color=REGIME_COLORS[regime],
            label=label,
        )
    axes[1].plot(x, agg["relative_gap"], marker="o", color="k")
    axes[1].axhline(0, color="grey", lw=0.8)
    titles = (
        "final test accuracy",
        "relative gap (A_PT − A_RIT) / A_PT",
        f"epochs to test accuracy ≥ {frame['threshold'][0]:.2f}",
    )
    for ax, title in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [f"{b}" + (" (none)" if b == size else "") for b in x])
        ax.set_xlabel("block size of the shuffle (pixels)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle(
        f"{exp}: feature reuse under block shuffling (seeds {sorted(set(frame['seed']))}; "
        "missing points: threshold never reached)",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, path, dpi)


def intermediate_figure(frame, path, dpi, exp) -> None:
    import polars as pl

    from transferscope.figures import REGIME_COLORS, save_figure

    plt = _pyplot()
    points = frame.filter(~pl.col("reference"))
    agg = (
        points.group_by("pretrain_epoch")
        .agg(pl.col("target_test_accuracy", "source_test_accuracy").mean())
        .sort("pretrain_epoch")
    )
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.scatter(
        points["pretrain_epoch"],
        points["target_test_accuracy"],
        s=10,
        alpha=0.5,
        color=REGIME_COLORS["finetune"],
    )
    ax.plot(
        agg["pretrain_epoch"],
        agg["target_test_accuracy"],
        marker="o",
        color=REGIME_COLORS["finetune"],
        label="P-T from epoch k: target test accuracy",
    )
    ax.plot(
        agg["pretrain_epoch"],
        agg["source_test_accuracy"],
        marker="s",
        ls=":",
        color=REGIME_COLORS["pretrain"],
        label="P at epoch k: source test accuracy",
    )
    ref = frame.filter(pl.col("reference"))["target_test_accuracy"].mean()
    ax.axhline(
        ref, ls="--", color=REGIME_COLORS["scratch"], label="RI-T (scratch): target test accuracy"
    )
    ax.set_xlabel("pre-training epoch k of the initialisation")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{exp}: fine-tuning from intermediate pre-training checkpoints", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi)
