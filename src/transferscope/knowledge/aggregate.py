"""Aggregates: interaction caches -> knowledge tables (Parquet + CSV) with bootstrap intervals.

Each public function is one workflow rule: ``transfer_tables`` (preserved / discarded / new /
exclusive knowledge, overall and by order, and how faithfully the salient interactions alone
rebuild each final model's game), ``convergence_tables`` (similarity to the final
epoch, final-set share, directness) and ``link_tables`` (Spearman correlations with accuracy).
Intervals: percentile bootstrap of the mean, over seeds and over samples within seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferscope.interactions.extract import read_cache_metadata
from transferscope.interactions.transforms import subset_sizes
from transferscope.io import atomic_path
from transferscope.knowledge import metrics
from transferscope.knowledge.caches import KINDS, check_comparable, seed_caches

RATIOS = (
    "preserved_ratio",
    "discarded_ratio",
    "new_ratio",
    "preserved_strength_ratio",
    "new_strength_ratio",
    "exclusive_share",
    "scratch_only_ratio",
    "scratch_only_strength_ratio",
    "n_pre",
    "n_ft",
    "n_preserved",
    "n_discarded",
    "n_new",
    "n_scratch_only",
)


def write_table(frame, path: str | Path) -> None:
    """A table as Parquet with a CSV beside it (both atomic)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
    with atomic_path(path.with_suffix(".csv")) as tmp:
        frame.write_csv(tmp)


def _orders(n_subsets: int) -> np.ndarray:
    """|S| of every subset index (the one popcount: transforms.subset_sizes)."""
    return subset_sizes(n_subsets.bit_length() - 1).numpy()


def transfer_samples(summaries: list[Path], sign_agreement: bool = True):
    """Per-sample transfer metrics, per (experiment, seed, kind, order); order 0 = all orders."""
    import polars as pl

    frames = []
    for summary in summaries:
        seed = seed_caches(summary)
        pre, ft, sc = seed.final("probe"), seed.final("finetune"), seed.final("scratch")
        check_comparable(pre, ft)
        check_comparable(pre, sc)
        orders = _orders(pre.I["and"].shape[-1])
        for kind in KINDS:
            for order in range(orders.max() + 1):
                keep = orders > 0 if order == 0 else orders == order
                row = metrics.transfer_metrics(
                    *(c.I[kind] * keep for c in (pre, ft, sc)),
                    *(c.salient[kind] & keep for c in (pre, ft, sc)),
                    sign_agreement=sign_agreement,
                )
                frames.append(
                    pl.DataFrame(row).with_columns(
                        experiment=pl.lit(seed.experiment),
                        seed=pl.lit(seed.seed),
                        kind=pl.lit(kind),
                        order=pl.lit(order),
                        sample=pl.Series(pre.meta["sample_index"]),
                    )
                )
    return pl.concat(frames, how="vertical_relaxed")


def summarise(frame, keys: list[str], columns, resamples: int, confidence: float):
    """Long table: keys…, metric, mean, low, high, n_seeds, n_samples (hierarchical bootstrap)."""
    import polars as pl

    rows = []
    for group_key, group in frame.group_by(keys, maintain_order=True):
        per_seed = group.partition_by("seed")
        for column in columns:
            mean, low, high, n_seeds, n_samples = metrics.hierarchical_bootstrap_ci(
                [g[column].to_numpy() for g in per_seed], resamples, confidence
            )
            rows.append(
                dict(
                    zip(keys, group_key),
                    metric=column,
                    mean=mean,
                    low=low,
                    high=high,
                    n_seeds=n_seeds,
                    n_samples=n_samples,
                )
            )
    return pl.DataFrame(rows)


FAITHFULNESS = ("salient_error", "full_error", "salient_share", "gap")


def faithfulness_samples(summaries: list[Path]):
    """Per (experiment, seed, regime, sample) of the final pre-trained (probe), fine-tuned and
    scratch models: the relative error of rebuilding v(x_T) over all 2^n masks from the salient
    interactions alone and from all of them (``salient.reconstruction_error``), the salient
    share of the 2·(2^n − 1) non-empty AND and OR terms, and the decomposition's certified gap."""
    import polars as pl

    frames = []
    for summary in summaries:
        seed = seed_caches(summary)
        for regime in ("probe", "finetune", "scratch"):
            # the metadata holds all of it: no need to read the interaction table
            meta = read_cache_metadata(seed.directory / seed.caches[regime][-1])
            found = meta["decomposition"]
            terms = 2 * (2 ** meta["n_players"] - 1)
            frames.append(
                pl.DataFrame(
                    {
                        "sample": meta["sample_index"],
                        "salient_error": found["salient_reconstruction_error"],
                        "full_error": found["full_reconstruction_error"],
                        "salient_share": np.asarray(found["salient_count"]) / terms,
                        "gap": found["gap"],
                    }
                ).with_columns(
                    experiment=pl.lit(seed.experiment),
                    seed=pl.lit(seed.seed),
                    regime=pl.lit(regime),
                )
            )
    return pl.concat(frames, how="vertical_relaxed")


def transfer_tables(
    summaries, out_dir, sign_agreement=True, resamples=1000, confidence=0.95, data_dirs=None
):
    """transfer(_samples) and faithfulness tables, and planted-part preservation where
    datasets plant rules."""
    from transferscope.knowledge.planted import part_preservation_table

    planted = part_preservation_table([Path(s) for s in summaries], data_dirs or {}, sign_agreement)
    write_table(planted, Path(out_dir) / "planted.parquet")
    samples = transfer_samples([Path(s) for s in summaries], sign_agreement)
    write_table(samples, Path(out_dir) / "transfer_samples.parquet")
    table = summarise(samples, ["experiment", "kind", "order"], RATIOS, resamples, confidence)
    write_table(table, Path(out_dir) / "transfer.parquet")
    faithful = faithfulness_samples([Path(s) for s in summaries])
    table = summarise(faithful, ["experiment", "regime"], FAITHFULNESS, resamples, confidence)
    write_table(table, Path(out_dir) / "faithfulness.parquet")


def convergence_samples(summaries: list[Path]):
    """Per (experiment, seed, regime, epoch, sample): similarity to the final epoch (AND and OR
    interactions together), share of the final salient set, and directness."""
    import polars as pl

    frames = []
    for summary in summaries:
        seed = seed_caches(summary)
        for regime in ("finetune", "scratch"):
            epochs = seed.epochs(regime)
            for cache in epochs[1:]:
                check_comparable(epochs[0], cache)
            both = np.stack([np.concatenate([c.I["and"], c.I["or"]], -1) for c in epochs])
            salient = np.stack(
                [np.concatenate([c.salient["and"], c.salient["or"]], -1) for c in epochs]
            )
            result = metrics.convergence_metrics(both, salient)
            n_epochs, n_samples = result["similarity"].shape
            frames.append(
                pl.DataFrame(
                    {
                        "epoch": np.repeat(np.arange(n_epochs), n_samples),
                        "sample": np.tile(epochs[0].meta["sample_index"], n_epochs),
                        "similarity": result["similarity"].ravel(),
                        "final_share": result["final_share"].ravel(),
                        "directness": np.tile(result["directness"], n_epochs),
                    }
                ).with_columns(
                    experiment=pl.lit(seed.experiment),
                    seed=pl.lit(seed.seed),
                    regime=pl.lit(regime),
                )
            )
    return pl.concat(frames, how="vertical_relaxed")


def convergence_tables(summaries, out_dir, resamples=1000, confidence=0.95):
    samples = convergence_samples([Path(s) for s in summaries])
    write_table(samples, Path(out_dir) / "convergence_samples.parquet")
    table = summarise(
        samples,
        ["experiment", "regime", "epoch"],
        ["similarity", "final_share"],
        resamples,
        confidence,
    )
    write_table(table, Path(out_dir) / "convergence.parquet")
    final = samples.filter(samples["epoch"] == samples["epoch"].max())
    write_table(
        summarise(final, ["experiment", "regime"], ["directness"], resamples, confidence),
        Path(out_dir) / "directness.parquet",
    )


def link_tables(
    transfer_samples_path,
    convergence_samples_path,
    run_summaries,
    out_dir,
    resamples=1000,
    confidence=0.95,
):
    """Spearman ρ (bootstrap CI) of preserved share vs target accuracy across experiments and
    seeds, and of epoch-wise similarity vs epoch-wise test accuracy per regime."""
    import polars as pl

    from transferscope.figures import run_metrics

    runs = run_metrics([Path(s).parent for s in run_summaries])
    final_acc = (
        runs.filter(pl.col("regime") == "finetune")
        .group_by(["experiment", "seed"])
        .agg(pl.col("test_accuracy").sort_by("epoch").last())
    )
    preserved = (
        pl.read_parquet(transfer_samples_path)
        .filter(pl.col("order") == 0)
        .group_by(["experiment", "seed", "kind"])
        .agg(pl.col("preserved_ratio").drop_nans().mean())
        .join(final_acc, on=["experiment", "seed"])
        # group_by's order is arbitrary, and the seeded bootstrap resamples rows in order
        .sort(["experiment", "seed", "kind"])
    )
    rows = []
    for kind in KINDS:
        sub = preserved.filter(pl.col("kind") == kind)
        rho, low, high, n = metrics.spearman_ci(
            sub["preserved_ratio"], sub["test_accuracy"], resamples, confidence
        )
        rows.append(
            dict(
                link=f"preserved_ratio[{kind}] vs fine-tuned test accuracy",
                regime="finetune",
                rho=rho,
                low=low,
                high=high,
                n_pairs=n,
            )
        )
    epochwise = (
        pl.read_parquet(convergence_samples_path)
        .group_by(["experiment", "seed", "regime", "epoch"])
        .agg(pl.col("similarity").mean())
        .join(
            runs.select(["experiment", "seed", "regime", "epoch", "test_accuracy"]),
            on=["experiment", "seed", "regime", "epoch"],
        )
        .sort(["experiment", "seed", "regime", "epoch"])
    )
    for regime in ("finetune", "scratch"):
        sub = epochwise.filter(pl.col("regime") == regime)
        rho, low, high, n = metrics.spearman_ci(
            sub["similarity"], sub["test_accuracy"], resamples, confidence
        )
        rows.append(
            dict(
                link="similarity to final vs test accuracy, per epoch",
                regime=regime,
                rho=rho,
                low=low,
                high=high,
                n_pairs=n,
            )
        )
    write_table(pl.DataFrame(rows), Path(out_dir) / "links.parquet")
