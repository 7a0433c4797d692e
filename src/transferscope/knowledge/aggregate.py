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


FAITHFULNESS = ("salient_error", "full_error", "noise_share", "salient_share", "gap")


def faithfulness_samples(summaries: list[Path]):
    """Per (experiment, seed, regime, sample) of the final pre-trained (probe), fine-tuned and
    scratch models, against the model's own game v (not v + q, which the decomposition
    rebuilds exactly by construction): the relative errors ‖v − v_S‖ / ‖v − v(∅)‖ of rebuilding
    v over all 2^n masks from the salient interactions alone and from all of them
    (``salient.reconstruction_error`` with q = 0), the noise share ‖q‖ / ‖v − v(∅)‖ (the full
    error equals this share: every term together rebuilds v − v(∅) + q), the salient share of the 2·(2^n − 1)
    non-empty AND and OR terms, and the decomposition's certified gap."""
    import polars as pl
    import torch

    from transferscope.interactions.salient import reconstruction_error

    frames = []
    for summary in summaries:
        seed = seed_caches(summary)
        for regime in ("probe", "finetune", "scratch"):
            cache = seed.final(regime)
            v = torch.from_numpy(cache.game["v"] - cache.game["v"][:, :1])
            masks = [torch.from_numpy(cache.salient[k]) for k in KINDS]
            # every term, I(∅) included: all of them rebuild v − v(∅) + q exactly
            terms = [torch.from_numpy(cache.game[f"I_{k}"]) for k in KINDS]
            salient_error, full_error = reconstruction_error(v, *terms, *masks)
            scale = np.linalg.norm(v.numpy(), axis=-1)
            noise = metrics.ratio(np.linalg.norm(cache.game["q"], axis=-1), scale)
            found = cache.meta["decomposition"]
            n_terms = 2 * (2 ** cache.meta["n_players"] - 1)
            frames.append(
                pl.DataFrame(
                    {
                        "sample": cache.meta["sample_index"],
                        "salient_error": salient_error.numpy(),
                        "full_error": full_error.numpy(),
                        "noise_share": noise,
                        "salient_share": np.asarray(found["salient_count"]) / n_terms,
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
    import polars as pl

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
    # each run's own last epoch: runs of one table may train for different numbers of epochs
    last = pl.col("epoch") == pl.col("epoch").max().over(["experiment", "seed", "regime"])
    final = samples.filter(last)
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
    """Links to accuracy, computed within experiments so that a difference between experiments
    cannot pass for a link: (1) per kind, the mean over experiments of Spearman's ρ between the
    per-seed preserved share and the fine-tuned test accuracy, p-value from permuting accuracy
    among seeds within each experiment (``claims.within_experiment_link``); (2) per experiment
    and regime, the partial Spearman ρ of epoch-wise similarity to the final interactions and
    epoch-wise test accuracy given the epoch (both rise with training; the epoch is the
    confounder), with a bootstrap interval over runs."""
    import polars as pl

    from transferscope.figures import run_metrics
    from transferscope.knowledge.claims import within_experiment_link

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
        rho, p, n = within_experiment_link(sub, "preserved_ratio", "test_accuracy")
        rows.append(
            dict(
                link=f"preserved_ratio[{kind}] vs fine-tuned test accuracy, within experiment",
                experiment="all (strata)",
                regime="finetune",
                rho=rho,
                low=float("nan"),
                high=float("nan"),
                p_value=p,
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
    for (experiment, regime), sub in epochwise.group_by(
        ["experiment", "regime"], maintain_order=True
    ):
        rho, low, high, n = metrics.partial_spearman_ci(
            sub["similarity"], sub["test_accuracy"], sub["epoch"], resamples, confidence
        )
        rows.append(
            dict(
                link="similarity to final vs test accuracy, per epoch, given the epoch",
                experiment=experiment,
                regime=regime,
                rho=rho,
                low=low,
                high=high,
                p_value=float("nan"),
                n_pairs=n,
            )
        )
    write_table(
        pl.DataFrame(rows).sort(["link", "experiment", "regime"]), Path(out_dir) / "links.parquet"
    )
