"""Across experiments: preserved shares from the knowledge tables, CKA / barrier beside them
(the three views), rank correlations and the comparison figures."""

from __future__ import annotations

import math
from pathlib import Path

from transferscope.analyses.model_figures import _mean_or_nan
from transferscope.analyses.outputs import _pyplot
from transferscope.analyses.pairwise import BARRIER_PAIR_TYPES, PAIR_TYPES


def preserved_shares(transfer: str | Path, transfer_samples: str | Path | None = None):
    """(experiment-level preserved_ratio, AND, all orders, with interval; per-seed mean over
    samples) from the knowledge tables."""
    import polars as pl

    transfer = Path(transfer)
    if not transfer.is_file():
        raise FileNotFoundError(f"{transfer}: not found; run `snakemake {transfer}` first")
    level = (
        pl.read_parquet(transfer)
        .filter(
            (pl.col("metric") == "preserved_ratio")
            & (pl.col("order") == 0)
            & (pl.col("kind") == "and")
        )
        .select(
            "experiment",
            preserved_share=pl.col("mean"),
            preserved_low=pl.col("low"),
            preserved_high=pl.col("high"),
            preserved_n_seeds=pl.col("n_seeds"),
        )
    )
    per_seed = None
    if transfer_samples is not None:
        per_seed = (
            pl.read_parquet(transfer_samples)
            .filter((pl.col("order") == 0) & (pl.col("kind") == "and"))
            .with_columns(pl.col("preserved_ratio").fill_nan(None))
            .group_by("experiment", "seed")
            .agg(
                preserved_share_seed=pl.col("preserved_ratio").mean(),
                preserved_samples=pl.col("preserved_ratio").count(),
            )
            .with_columns(pl.col("seed").cast(pl.Int64))
        )
    return level, per_seed


def _col(frame, name) -> list:
    """A column as floats (None -> NaN), or NaNs where the column is absent."""
    if name not in frame.columns:
        return [float("nan")] * frame.height
    return [float("nan") if v is None else float(v) for v in frame[name].to_list()]


def _spearman(x, y) -> dict:
    import numpy as np

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    n = int(keep.sum())
    if n < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return {"rho": None, "n": n}
    from scipy.stats import spearmanr

    return {"rho": float(spearmanr(x[keep], y[keep]).statistic), "n": n}


def views_table(pairs):
    """Per experiment: the three views of 'how much of P survives in P-T' and their baselines.

    representation: CKA(P-T, P) > CKA(RI-T, P) (output module); landscape: the P-T/P-T barrier
    is below the RI-T/RI-T barrier (NaN with one seed); interaction: the preserved share."""
    import polars as pl

    def mean_of(frame, t, col):
        sub = frame.filter(pl.col("pair_type") == t)
        return (
            float(sub[col].mean())
            if sub.height and col in sub.columns and sub[col].null_count() < sub.height
            else float("nan")
        )

    rows = []
    for (exp,), frame in pairs.group_by("experiment", maintain_order=True):
        row = {
            "experiment": exp,
            "preserved_share": float(frame["preserved_share"][0])
            if frame["preserved_share"][0] is not None
            else float("nan"),
            "preserved_low": frame["preserved_low"][0],
            "preserved_high": frame["preserved_high"][0],
            "cka_pt_p": mean_of(frame, "P-T/P", "cka_output"),
            "cka_rit_p": mean_of(frame, "RI-T/P", "cka_output"),
            "distance_pt_p": mean_of(frame, "P-T/P", "weight_distance_relative"),
            "distance_rit_p": mean_of(frame, "RI-T/P", "weight_distance_relative"),
            "barrier_pt_pt": mean_of(frame, "P-T/P-T", "barrier_loss"),
            "barrier_rit_rit": mean_of(frame, "RI-T/RI-T", "barrier_loss"),
            "barrier_pt_rit": mean_of(frame, "P-T/RI-T", "barrier_loss"),
        }
        row["representation_pt_closer_to_p"] = row["cka_pt_p"] > row["cka_rit_p"]
        finite = math.isfinite(row["barrier_pt_pt"]) and math.isfinite(row["barrier_rit_rit"])
        row["landscape_pt_share_basin"] = (
            (row["barrier_pt_pt"] < row["barrier_rit_rit"]) if finite else None
        )
        rows.append(row)
    return pl.DataFrame(
        rows,
        schema_overrides={
            "landscape_pt_share_basin": pl.Boolean,
            "preserved_low": pl.Float64,
            "preserved_high": pl.Float64,
        },
    )


def view_sentence(row: dict) -> str:
    def pct(v):
        return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.0f}%"

    def num(v):
        return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"

    parts = [
        f"{row['experiment']}: P-T keeps {pct(row['preserved_share'])} of P's salient AND "
        f"interactions (interval {pct(row['preserved_low'])}–{pct(row['preserved_high'])})",
        f"CKA(P-T, P) = {num(row['cka_pt_p'])} vs CKA(RI-T, P) = {num(row['cka_rit_p'])} "
        f"({'P-T is closer to P' if row['representation_pt_closer_to_p'] else 'P-T is not closer to P'})",
    ]
    if row["landscape_pt_share_basin"] is None:
        parts.append("barriers need two seeds")
    else:
        parts.append(
            f"barrier P-T/P-T = {num(row['barrier_pt_pt'])} vs RI-T/RI-T = {num(row['barrier_rit_rit'])} "
            f"({'P-T models share a basin more than RI-T models' if row['landscape_pt_share_basin'] else 'no sign that P-T models share a basin more'})"
        )
    return "; ".join(parts) + "."


def side_by_side_figure(pairs, path, dpi) -> None:
    import numpy as np
    import polars as pl

    from transferscope.figures import save_figure

    plt = _pyplot()
    exps = pairs["experiment"].unique(maintain_order=True).to_list()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / max(1, len(exps))
    panels = ((axes[0], "cka_output", PAIR_TYPES), (axes[1], "barrier_loss", BARRIER_PAIR_TYPES))
    for k, exp in enumerate(exps):
        sub = pairs.filter(pl.col("experiment") == exp)
        for ax, col, types in panels:
            vals = [
                _mean_or_nan(sub.filter(pl.col("pair_type") == t)[col].drop_nulls()) for t in types
            ]
            ax.bar(np.arange(len(types)) + k * width, vals, width, label=exp, color=f"C{k}")
        pt = sub.filter(pl.col("pair_type") == "P-T/P")
        if "preserved_share_seed" in pt.columns:
            axes[2].scatter(
                pt["preserved_share_seed"],
                pt["cka_output"],
                color=f"C{k}",
                label=f"{exp} (per seed)",
            )
        share = sub["preserved_share"][0]
        if share is not None:
            axes[2].axvline(share, color=f"C{k}", ls=":", lw=1)
    titles = ("CKA at the backbone output", "loss barrier (BN recomputed)")
    for (ax, _, types), title in zip(panels, titles):
        ticks = np.arange(len(types)) + width * (len(exps) - 1) / 2
        ax.set_xticks(ticks, types, rotation=30, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    axes[2].set_xlabel("preserved share of P's salient AND interactions (dotted: experiment mean)")
    axes[2].set_ylabel("CKA(P-T, P)")
    axes[2].set_title("interaction view vs representation view", fontsize=9)
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=7)
    fig.suptitle(
        "Do the views agree? Representations (CKA), landscape (barrier), interactions (preserved share)",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, path, dpi)


def bridge_figure(bridge, path, dpi) -> None:
    import polars as pl

    from transferscope.figures import save_figure

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, exp in enumerate(bridge["experiment"].unique(maintain_order=True).to_list()):
        sub = bridge.filter(pl.col("experiment") == exp)
        axes[0].scatter(sub["unexplained"], sub["transferability"], color=f"C{k}", label=exp)
        if "preserved_share_seed" in sub.columns:
            axes[1].scatter(
                sub["unexplained"], sub["preserved_share_seed"], color=f"C{k}", label=exp
            )
    axes[0].set_ylabel("transferability = scratch test error − fine-tune test error")
    axes[1].set_ylabel("preserved share (AND, all orders; per seed)")
    for ax in axes:
        ax.set_xlabel("unexplained share 1 − R² of a ridge readout on P's frozen features")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].axhline(0, color="grey", lw=0.8)
    fig.suptitle(
        "Theory bridge: feature overlap of the pre-trained features (one point per seed)",
        fontsize=10,
    )
    fig.tight_layout()
    save_figure(fig, path, dpi)
