"""Overlap tables: every comparison of two salient sets, beside what chance gives.

A comparison "A in B" is the share |A ∩ B| / |A| of A's salient terms that B also has (same
sign with sign agreement). Its random null keeps each set's size per order and places the terms
at random (``nulls``); its excess is the observed share minus that null. The comparisons:

    preserved          Ω_pre in Ω_ft    (discarded = 1 − this)
    preserved_of_ft    Ω_ft in Ω_pre    (new = 1 − this)
    also_in_scratch    P in Ω_sc        (P = Ω_pre ∩ Ω_ft; exclusive = 1 − this)
    new_in_scratch     N in Ω_sc        (N = Ω_ft \\ P: the control for also_in_scratch)
    scratch_in_ft      Ω_sc in Ω_ft     (scratch-only = 1 − this)
    pre_in_scratch     Ω_pre in Ω_sc    (P against a model that inherited nothing from it)
    finetune_runs      Ω_ft,a in Ω_ft,b (two fine-tuning seeds: what two runs share anyway)
    scratch_runs       Ω_sc,a in Ω_sc,b (two scratch seeds)

Order groups: ``all`` (every order ≥ 1), each order ``k``, ``low`` (orders 1–2) and ``high``
(orders ≥ 3). docs/references.md §1 (the metrics) and §4 (the nulls).
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np

from transferscope.knowledge import metrics, nulls
from transferscope.knowledge.caches import KINDS, check_comparable, seed_caches

RUN_PAIRS = {"finetune_runs": "finetune", "scratch_runs": "scratch"}
LOW_ORDERS = 2  # orders 1..LOW_ORDERS are "low", the rest "high"


def order_groups(n_players: int) -> dict[str, np.ndarray]:
    """Order group name -> bool over orders 0..n (order 0, the empty set, is never in one)."""
    k = np.arange(n_players + 1)
    groups = {"all": k >= 1, "low": (k >= 1) & (k <= LOW_ORDERS), "high": k > LOW_ORDERS}
    groups.update({str(order): k == order for order in range(1, n_players + 1)})
    return {name: keep for name, keep in groups.items() if keep.any()}


def _sets(pre, ft, sc, kind, sign_agreement):
    """(mask, signed values) of every set the comparisons name, for one kind (AND or OR)."""
    preserved = metrics.shared(
        pre.salient[kind], ft.salient[kind], pre.I[kind], ft.I[kind], sign_agreement
    )
    return {
        "pre": (pre.salient[kind], pre.I[kind]),
        "ft": (ft.salient[kind], ft.I[kind]),
        "sc": (sc.salient[kind], sc.I[kind]),
        # preserved terms carry the pre-trained sign (the same as the fine-tuned one when shared)
        "P": (preserved, pre.I[kind]),
        "N": (ft.salient[kind] & ~preserved, ft.I[kind]),
    }


PAIRS = {
    "preserved": ("pre", "ft"),
    "preserved_of_ft": ("ft", "pre"),
    "also_in_scratch": ("P", "sc"),
    "new_in_scratch": ("N", "sc"),
    "scratch_in_ft": ("sc", "ft"),
    "pre_in_scratch": ("pre", "sc"),
}


def overlap_counts(summaries: list[Path], sign_agreement: bool = True):
    """{(experiment, kind, comparison): [(seed label, sample index, counts)]}: the observed
    overlaps and null ingredients (``nulls.overlap_counts``) of every comparison, per seed (or
    seed pair for the independent-runs comparisons)."""
    from transferscope.interactions.transforms import subset_sizes

    found: dict = {}
    finals: dict = {}
    for summary in summaries:
        seed = seed_caches(summary)
        pre, ft, sc = seed.final("probe"), seed.final("finetune"), seed.final("scratch")
        check_comparable(pre, ft)
        check_comparable(pre, sc)
        orders = subset_sizes(pre.I["and"].shape[-1].bit_length() - 1).numpy()
        finals[(seed.experiment, seed.seed)] = (ft, sc, orders)
        for kind in KINDS:
            sets = _sets(pre, ft, sc, kind, sign_agreement)
            for name, (a, b) in PAIRS.items():
                counts = nulls.overlap_counts(*sets[a], *sets[b], orders, sign_agreement)
                found.setdefault((seed.experiment, kind, name), []).append(
                    (str(seed.seed), pre.meta["sample_index"], counts)
                )
    for experiment in sorted({e for e, _ in finals}):
        seeds = sorted(s for e, s in finals if e == experiment)
        for (a, b), kind in ((p, k) for p in combinations(seeds, 2) for k in KINDS):
            first, second = finals[(experiment, a)], finals[(experiment, b)]
            for name, regime in RUN_PAIRS.items():
                x, y = (run[0 if regime == "finetune" else 1] for run in (first, second))
                check_comparable(x, y)
                counts = nulls.overlap_counts(
                    x.salient[kind], x.I[kind], y.salient[kind], y.I[kind], first[2], sign_agreement
                )
                found.setdefault((experiment, kind, name), []).append(
                    (f"{a}-{b}", x.meta["sample_index"], counts)
                )
    return found


def overlap_samples(found: dict):
    """Per (experiment, kind, comparison, orders, seed, sample): observed share, its random
    null's mean and standard deviation, and the excess (observed − null mean)."""
    import polars as pl

    frames = []
    for (experiment, kind, name), per_seed in found.items():
        n_players = per_seed[0][2]["universe"].size - 1
        for group, keep in order_groups(n_players).items():
            for label, samples, counts in per_seed:
                share, null, sd = nulls.null_share(counts, keep)
                frames.append(
                    pl.DataFrame(
                        {
                            "sample": np.asarray(samples),
                            "share": share,
                            "null": null,
                            "null_sd": sd,
                            "excess": share - null,
                        }
                    ).with_columns(
                        experiment=pl.lit(experiment),
                        kind=pl.lit(kind),
                        comparison=pl.lit(name),
                        orders=pl.lit(group),
                        seed=pl.lit(label),
                    )
                )
    columns = ["experiment", "kind", "comparison", "orders", "seed", "sample"]
    table = pl.concat(frames, how="vertical_relaxed")
    return table.select(columns + [c for c in table.columns if c not in columns])


def overlap_table(found: dict, samples, resamples: int, confidence: float, draws: int = 2000):
    """One row per (experiment, kind, comparison, orders): mean observed share, mean random
    null, the excess with its bootstrap interval (over seeds, then samples) and the two-sided
    Monte Carlo p-value of the observed mean share under the random null."""
    import polars as pl

    rows = []
    for (experiment, kind, name), per_seed in found.items():
        n_players = per_seed[0][2]["universe"].size - 1
        for group, keep in order_groups(n_players).items():
            sub = samples.filter(
                (pl.col("experiment") == experiment)
                & (pl.col("kind") == kind)
                & (pl.col("comparison") == name)
                & (pl.col("orders") == group)
            )
            per = sub.partition_by("seed", maintain_order=True)
            excess = metrics.hierarchical_bootstrap_ci(
                [g["excess"].to_numpy() for g in per], resamples, confidence
            )
            pooled = {
                key: np.concatenate([c[key] for _, _, c in per_seed])
                for key in ("overlap", "size_a", "size_b", "rho")
            }
            pooled["universe"] = per_seed[0][2]["universe"]
            rows.append(
                {
                    "experiment": experiment,
                    "kind": kind,
                    "comparison": name,
                    "orders": group,
                    "share": _seed_mean(per, "share"),
                    "null": _seed_mean(per, "null"),
                    "excess": excess[0],
                    "excess_low": excess[1],
                    "excess_high": excess[2],
                    # the pooled rows enter the claims, Holm-corrected over dozens of tests: the
                    # Monte Carlo floor 2/(draws + 1) must sit well below α / tests there
                    "p_value": nulls.random_share_p_value(
                        pooled, keep, draws * 10 if group == "all" else draws
                    ),
                    "n_seeds": excess[3],
                    "n_samples": excess[4],
                }
            )
    return pl.DataFrame(rows)


def _seed_mean(per_seed, column: str) -> float:
    """Mean over seeds of the per-seed mean of the finite values (the bootstrap's statistic)."""
    means = [np.nanmean(v) for g in per_seed if np.isfinite(v := g[column].to_numpy()).any()]
    return float(np.mean(means)) if means else float("nan")


def overlap_tables(
    summaries, out_dir, sign_agreement=True, resamples=1000, confidence=0.95, draws=2000
) -> None:
    """overlap_samples and overlap (summary) tables under ``out_dir``."""
    from transferscope.knowledge.aggregate import write_table

    found = overlap_counts([Path(s) for s in summaries], sign_agreement)
    samples = overlap_samples(found)
    write_table(samples, Path(out_dir) / "overlap_samples.parquet")
    table = overlap_table(found, samples, resamples, confidence, draws)
    write_table(table, Path(out_dir) / "overlap.parquet")
