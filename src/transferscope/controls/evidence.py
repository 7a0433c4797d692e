"""The controls' knowledge tables and claim rows (results/evidence/controls/).

For each control C (``transferscope.controls``) and experiment, with the real P's runs of the
same seeds beside it (docs/references.md §4, Controls):

* ``accuracy``: final test accuracy of every run compared (P's pre-training and its control on
  the source test set; probe, fine-tune and scratch on the target test set), per seed.
* ``overlap_samples`` / ``overlap``: the preserved share Ω_pre,C in Ω_ft,C (the control's probe
  standing for the control P, as the main pipeline's probe stands for P) with its random-overlap
  null, computed by the same functions as the main overlap table
  (``knowledge.overlaps.overlap_samples``/``overlap_table``, ``knowledge.nulls``).
* ``claim_rows``: pre-verdict rows (``knowledge.claims.write_claim_rows``):

  (a) "fine-tuning's gain needs P's knowledge": target accuracy fine-tuned from P against
      fine-tuned from C (the scratch baseline is common to both gains, so the gains differ by
      exactly this), test items pooled over seeds, Fisher's exact test
      (``lens_claims.accuracy_difference_p``); and "part of the gain is not P's knowledge":
      fine-tuned from C against scratch;
  (b) "fine-tuning preserves more of P's knowledge than of C's": the preserved share beyond
      chance (share − random null), P's minus C's, paired by seed and sample; hierarchical
      bootstrap interval and sign-flip p-value as the main knowledge claims
      (``claims._paired_row``), per kind (AND, OR).

A row is withheld, with its reason, when a regime it needs did not learn
(``claims.learning_status``; the control's own runs are named ``probe-<control>`` …), or when
the control P learned the source task (then it is not a knowledge-free control).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferscope.controls import CONTROLS, pretrain_variant, regime_variant

STUDY = "control: P without its knowledge"
NAMES = {"permuted-weights": "P with permuted weights", "permuted-labels": "P on permuted labels"}


# ------------------------------------------------------------------------------------ tables


def accuracy_table(main_runs, control_runs):
    """(experiment, control, regime, seed, task, test_accuracy, epochs) of every run's final
    epoch; ``control`` is '' for the real P's runs."""
    import polars as pl

    from transferscope.io import read_json

    rows = []
    for control, paths in [("", main_runs), *control_runs.items()]:
        for path in paths:
            summary = read_json(Path(path))
            rows.append(
                dict(
                    experiment=summary["experiment"],
                    control=control,
                    regime=summary["regime"],
                    seed=int(summary["seed"]),
                    task="source" if summary["regime"] == "pretrain" else "target",
                    test_accuracy=float(summary["final"]["test_accuracy"]),
                    epochs=int(summary["epochs"]),
                )
            )
    schema = dict(experiment=pl.String, control=pl.String, regime=pl.String, seed=pl.Int64,
                  task=pl.String, test_accuracy=pl.Float64, epochs=pl.Int64)  # fmt: skip
    return pl.DataFrame(rows, schema=schema).sort(["experiment", "control", "regime", "seed"])


def preserved_counts(summaries: dict[str, list], sign_agreement: bool = True) -> dict:
    """{control: {(experiment, kind, "preserved"): [(seed, sample index, counts)]}} of the
    control's probe (standing for the control P) in its fine-tune, in the layout of
    ``knowledge.overlaps.overlap_counts``."""
    from transferscope.interactions.transforms import subset_sizes
    from transferscope.knowledge import nulls
    from transferscope.knowledge.caches import KINDS, check_comparable, seed_caches

    found: dict = {}
    for control, paths in summaries.items():
        for summary in paths:
            seed = seed_caches(summary)
            pre, ft = seed.final("probe"), seed.final("finetune")
            check_comparable(pre, ft)
            orders = subset_sizes(pre.I["and"].shape[-1].bit_length() - 1).numpy()
            for kind in KINDS:
                counts = nulls.overlap_counts(
                    pre.salient[kind], pre.I[kind], ft.salient[kind], ft.I[kind], orders,
                    sign_agreement,
                )  # fmt: skip
                found.setdefault(control, {}).setdefault(
                    (seed.experiment, kind, "preserved"), []
                ).append((str(seed.seed), pre.meta["sample_index"], counts))
    return found


def overlap_tables(found: dict, resamples: int, confidence: float):
    """(samples, table) of every control, with a ``control`` column."""
    import polars as pl

    from transferscope.knowledge.overlaps import overlap_samples, overlap_table

    samples, tables = [], []
    for control in sorted(found):
        part = overlap_samples(found[control])
        tables.append(
            overlap_table(found[control], part, resamples, confidence).with_columns(
                control=pl.lit(control)
            )
        )
        samples.append(part.with_columns(control=pl.lit(control)))
    first = ["control"]
    samples, table = pl.concat(samples), pl.concat(tables)
    return (
        samples.select(first + [c for c in samples.columns if c not in first]),
        table.select(first + [c for c in table.columns if c not in first]),
    )


# ------------------------------------------------------------------------------------ claims


def control_status(main_runs, control_runs: dict, data_dirs: dict, alpha: float) -> dict:
    """``claims.learning_status`` of the real runs, and of each control's runs under the names
    ``pretrain-<control>``, ``probe-<control>``, ``finetune-<control>``."""
    from transferscope.knowledge.claims import learning_status

    status = dict(learning_status(main_runs, data_dirs, alpha))
    for control, paths in control_runs.items():
        for (experiment, regime), entry in learning_status(paths, data_dirs, alpha).items():
            status[(experiment, regime_variant(regime, control))] = entry
    return status


def _control_learned_source(status: dict, experiment: str, control: str) -> str:
    """The reason the control is no control when its P learned the source task ('' if not)."""
    s = status.get((experiment, pretrain_variant(control)))
    if s is None:
        return f"no {pretrain_variant(control)} run in this run"
    if s["learned"]:
        return (
            f"{NAMES[control]} scores {s['accuracy']:.2f} on the source test set (chance "
            f"{s['chance']:.2f}, p = {s['p_value']:.2g}): it kept source-task knowledge, so it "
            "is not a knowledge-free control"
        )
    return ""


def _pooled(accuracy, experiment: str, control: str, regime: str, seeds) -> tuple[float, int]:
    """(mean test accuracy over ``seeds``, number of seeds found) of one arm."""
    import polars as pl

    arm = accuracy.filter(
        (pl.col("experiment") == experiment)
        & (pl.col("control") == control)
        & (pl.col("regime") == regime)
        & pl.col("seed").is_in(list(seeds))
    )
    return (float(arm["test_accuracy"].mean()) if arm.height else float("nan")), arm.height


def control_claims(
    accuracy,
    main_samples,
    control_samples,
    status: dict,
    test_sizes: dict[str, int],
    alpha: float,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> list[dict]:
    """Pre-verdict claim rows (module docstring) per experiment and control.

    ``accuracy``: ``accuracy_table``; ``main_samples``: the main ``overlap_samples`` table;
    ``control_samples``: this stage's; ``status``: ``control_status``; ``test_sizes``:
    experiment -> number of target test items."""
    import polars as pl

    from transferscope.knowledge.claims import _unlearned
    from transferscope.knowledge.lens_claims import accuracy_difference_p

    rows: list[dict] = []
    pairs = accuracy.filter(pl.col("control") != "").select("experiment", "control").unique()
    for experiment, control in sorted(pairs.iter_rows()):
        name = NAMES.get(control, control)
        ft_c, probe_c = regime_variant("finetune", control), regime_variant("probe", control)
        seeds = sorted(
            accuracy.filter(
                (pl.col("experiment") == experiment)
                & (pl.col("control") == control)
                & (pl.col("regime") == "finetune")
            )["seed"].to_list()
        )
        not_control = _control_learned_source(status, experiment, control)
        a_p, n_p = _pooled(accuracy, experiment, "", "finetune", seeds)
        a_c, n_c = _pooled(accuracy, experiment, control, "finetune", seeds)
        a_s, n_s = _pooled(accuracy, experiment, "", "scratch", seeds)
        n_items = test_sizes[experiment] * len(seeds)
        k_p, k_c, k_s = (int(round(a * n_items)) if np.isfinite(a) else 0 for a in (a_p, a_c, a_s))
        missing = "" if n_p == n_c == n_s == len(seeds) else "seeds missing from one arm"
        base = dict(study=STUDY, experiment=experiment, kind="")
        rows.append(
            dict(
                base,
                claim=f"fine-tuning's gain needs P's knowledge (P beats {name})",
                metric="target accuracy, fine-tuned from P",
                observed=a_p,
                null_name=f"fine-tuned from {name}, same seeds and settings",
                null=a_c,
                excess=a_p - a_c,
                p_value=accuracy_difference_p(k_p, k_c, n_items) if not missing else np.nan,
                direction=+1,
                n=n_items,
                reason=_unlearned(status, experiment, ("finetune", ft_c)) or not_control or missing,
            )
        )
        rows.append(
            dict(
                base,
                claim=f"part of the gain is not P's knowledge ({name} beats scratch)",
                metric=f"target accuracy, fine-tuned from {name}",
                observed=a_c,
                null_name="scratch, same seeds",
                null=a_s,
                excess=a_c - a_s,
                p_value=accuracy_difference_p(k_c, k_s, n_items) if not missing else np.nan,
                direction=+1,
                n=n_items,
                reason=_unlearned(status, experiment, (ft_c, "scratch")) or not_control or missing,
            )
        )
        needs = _unlearned(status, experiment, ("probe", "finetune", probe_c, ft_c))
        for kind in ("and", "or"):
            rows.append(
                _preserved_row(
                    main_samples, control_samples, experiment, control, kind, seeds,
                    needs or not_control, resamples, confidence,
                )
            )  # fmt: skip
    return rows


def _excess_by_seed(samples, experiment: str, kind: str, seeds, control: str | None = None):
    """{seed: (sample -> share − random null)} of the preserved comparison, all orders."""
    import polars as pl

    picked = samples.filter(
        (pl.col("experiment") == experiment)
        & (pl.col("kind") == kind)
        & (pl.col("comparison") == "preserved")
        & (pl.col("orders") == "all")
        & pl.col("seed").is_in([str(s) for s in seeds])
    )
    if control is not None:
        picked = picked.filter(pl.col("control") == control)
    return picked.select("seed", "sample", "excess")


def _preserved_row(main_samples, control_samples, experiment, control, kind, seeds, reason,
                   resamples, confidence) -> dict:  # fmt: skip
    import polars as pl

    from transferscope.knowledge.claims import _by_seed, _paired_row

    real = _excess_by_seed(main_samples, experiment, kind, seeds)
    ctrl = _excess_by_seed(control_samples, experiment, kind, seeds, control)
    pair = real.join(ctrl, on=["seed", "sample"], suffix="_control").sort(["seed", "sample"])
    pair = pair.with_columns(d=pl.col("excess") - pl.col("excess_control"))

    def seed_mean(column):
        means = [np.nanmean(v) for v in _by_seed(pair, column) if np.isfinite(v).any()]
        return float(np.mean(means)) if means else float("nan")

    name = NAMES.get(control, control)
    return _paired_row(
        _by_seed(pair, "d"),
        +1,
        resamples,
        confidence,
        study=STUDY,
        experiment=experiment,
        kind=kind,
        claim=f"fine-tuning preserves more of P's knowledge than of {name}'s",
        metric="preserved share beyond chance (Ω_pre in Ω_ft minus its random null), P",
        observed=seed_mean("excess"),
        null_name=f"the same for {name} (its probe in its fine-tune), same seeds and samples",
        null=seed_mean("excess_control"),
        reason=reason or ("" if pair.height else "no sample in both the main and control tables"),
    )


# ------------------------------------------------------------------------------------- stage


def evidence(
    interactions: dict[str, list],
    main_runs,
    control_runs: dict[str, list],
    main_overlap_samples,
    data_dirs: dict[str, str],
    out_dir,
    sign_agreement: bool = True,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> None:
    """results/evidence/controls/{accuracy,overlap_samples,overlap,claim_rows}.parquet (+ CSV):
    ``interactions``: control -> its extraction summaries; ``main_runs``: the real P's run
    summaries (pretrain, probe, finetune, scratch); ``control_runs``: control -> its run
    summaries; ``main_overlap_samples``: results/knowledge/overlap_samples.parquet."""
    import polars as pl

    from transferscope.data import read_manifest
    from transferscope.knowledge.aggregate import write_table
    from transferscope.knowledge.claims import write_claim_rows

    unknown = sorted((set(interactions) | set(control_runs)) - set(CONTROLS))
    if unknown:
        raise ValueError(f"unknown controls {unknown}; allowed: {list(CONTROLS)}")
    out_dir = Path(out_dir)
    alpha = 1 - confidence
    accuracy = accuracy_table(main_runs, control_runs)
    write_table(accuracy, out_dir / "accuracy.parquet")
    samples, table = overlap_tables(
        preserved_counts(interactions, sign_agreement), resamples, confidence
    )
    write_table(samples, out_dir / "overlap_samples.parquet")
    write_table(table, out_dir / "overlap.parquet")
    status = control_status(
        main_runs, {c: list(p) for c, p in control_runs.items()}, data_dirs, alpha
    )
    test_sizes = {
        e: int(read_manifest(d)["tasks"]["target"]["test"])
        for e, d in data_dirs.items()
        if e in set(accuracy["experiment"].to_list())
    }
    rows = control_claims(
        accuracy,
        pl.read_parquet(main_overlap_samples),
        samples,
        status,
        test_sizes,
        alpha,
        resamples,
        confidence,
    )
    write_claim_rows(rows, out_dir / "claim_rows.parquet")
