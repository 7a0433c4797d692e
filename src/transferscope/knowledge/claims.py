"""The claims table: each headline finding of the studies, tested on this run, with a verdict.

Every row holds an observed value, the null it is held against, the excess over that null with
its bootstrap interval, a p-value and a verdict from ``verdict`` (the one place that turns
numbers into words; no verdict is ever typed). Nulls (docs/references.md §4):

* ``random``: salient sets of the same sizes per order placed at random (``nulls``);
* empirical: the same overlap with a model that inherited nothing (P in scratch), the
  fine-tuned model's own new terms, or the other regime of a paired comparison;
* ``half``: the value 0.5, for "most / a small share".

p-values: Monte Carlo under the random null, sign flips of paired per-sample differences,
or permutations within experiments (``nulls``). Every testable row of the table is one test;
the p-values are adjusted together with Holm's step-down method, which controls the
family-wise error rate at α = 1 − ``knowledge.confidence`` without assuming independence.

A regime whose final test accuracy is not above chance (one-sided binomial test of the correct
answers pooled over seeds against the majority-class rate of the test set, at α) "did not
learn": every claim that compares against it is withheld with that reason, never tested.
"""

from __future__ import annotations

from itertools import permutations, product
from math import factorial
from pathlib import Path

import numpy as np

from transferscope.knowledge import metrics, nulls

SUPPORTED = "supported"
NULL = "not distinguishable from the null"
CONTRADICTED = "contradicted"
NOT_TESTED = "not testable"

COLUMNS = (
    "study",
    "claim",
    "experiment",
    "kind",
    "metric",
    "observed",
    "null_name",
    "null",
    "excess",
    "low",
    "high",
    "p_value",
    "p_adjusted",
    "direction",
    "tolerance",
    "n",
    "verdict",
    "reason",
)


def verdict(
    excess: float, low: float, high: float, p_adjusted: float, direction: int, alpha: float
) -> str:
    """``supported`` when the adjusted p-value is below α, the interval of the excess (when the
    row has one) excludes 0, and the excess lies on the side of 0 that the claim predicts
    (``direction`` +1: observed above the null; −1: below); ``contradicted`` when the same holds
    on the other side; ``not distinguishable from the null`` otherwise."""
    if not np.isfinite(p_adjusted) or p_adjusted >= alpha or not np.isfinite(excess):
        return NULL
    if np.isfinite(low) and np.isfinite(high) and low <= 0 <= high:
        return NULL
    if excess == 0:
        return NULL
    return SUPPORTED if np.sign(excess) == direction else CONTRADICTED


def equivalence_verdict(low: float, high: float, tolerance: float) -> str:
    """For a claim of equality (``direction`` 0): ``low``..``high`` bound the largest
    |difference| the data allow. ``supported`` when even the largest is within ``tolerance``,
    ``contradicted`` when even the smallest exceeds it, ``not distinguishable`` otherwise."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return NULL
    if high < tolerance:
        return SUPPORTED
    return CONTRADICTED if low > tolerance else NULL


def finalise(rows: list[dict], alpha: float):
    """Holm-adjust the testable rows' p-values together, then give every row its verdict."""
    import polars as pl

    tested = [i for i, r in enumerate(rows) if not r.get("reason") and r["direction"] != 0]
    adjusted = nulls.holm([rows[i]["p_value"] for i in tested])
    for i, p in zip(tested, adjusted):
        rows[i]["p_adjusted"] = float(p)
        r = rows[i]
        r.setdefault("low", float("nan"))
        r.setdefault("high", float("nan"))
        r["verdict"] = verdict(r["excess"], r["low"], r["high"], float(p), r["direction"], alpha)
    for r in rows:
        if not r.get("reason") and r["direction"] == 0:
            r["verdict"] = equivalence_verdict(r["low"], r["high"], r["tolerance"])
    for row in rows:
        row.setdefault("p_adjusted", float("nan"))
        row.setdefault("verdict", NOT_TESTED)
        row.setdefault("reason", "")
        for key in COLUMNS:
            row.setdefault(key, "" if key in _TEXT else None if key in _INTS else float("nan"))
    schema = {k: (pl.String if k in _TEXT else pl.Int64 if k in _INTS else pl.Float64)
              for k in COLUMNS}  # fmt: skip
    return pl.DataFrame([{k: r[k] for k in COLUMNS} for r in rows], schema=schema)


_TEXT = ("study", "claim", "experiment", "kind", "metric", "null_name", "verdict", "reason")
_INTS = ("direction", "n")


# ----------------------------------------------------------------------- did a regime learn?


def majority_class_rate(data_dir, task: str) -> float:
    """Chance on a task's test set: the share of its most frequent class."""
    from transferscope.data.format import load_split

    labels = load_split(data_dir, task, "test").y.numpy()
    return float(np.bincount(labels).max() / labels.size)


def learning_status(run_summaries, data_dirs: dict[str, str], alpha: float) -> dict:
    """{(experiment, regime): {accuracy, chance, p_value, learned, imported}} from the final
    test accuracies of target-task regimes; pre-training is scored on its source task, or
    marked ``imported`` when its run trained no epoch (its head was never trained)."""
    from scipy.stats import binomtest

    from transferscope.data import read_manifest
    from transferscope.io import read_json

    correct: dict = {}
    for path in run_summaries:
        summary = read_json(Path(path))
        key = (summary["experiment"], summary["regime"])
        entry = correct.setdefault(key, {"k": 0, "n": 0, "acc": [], "epochs": summary["epochs"]})
        data = data_dirs[summary["experiment"]]
        task = "source" if summary["regime"] == "pretrain" else "target"
        tests = read_manifest(data)["tasks"][task]["test"]
        entry["acc"].append(summary["final"]["test_accuracy"])
        entry["k"] += int(round(summary["final"]["test_accuracy"] * tests))
        entry["n"] += tests
    status = {}
    for (experiment, regime), entry in correct.items():
        task = "source" if regime == "pretrain" else "target"
        chance = majority_class_rate(data_dirs[experiment], task)
        p = float(binomtest(entry["k"], entry["n"], chance, alternative="greater").pvalue)
        status[(experiment, regime)] = {
            "accuracy": float(np.mean(entry["acc"])),
            "chance": chance,
            "p_value": p,
            "learned": p < alpha,
            "imported": regime == "pretrain" and entry["epochs"] == 0,
        }
    return status


def _unlearned(status: dict, experiment: str, regimes) -> str:
    """The reason a comparison is withheld ('' when every regime it needs learned)."""
    reasons = []
    for regime in regimes:
        s = status.get((experiment, regime))
        if s is None:
            reasons.append(f"no {regime} runs in this run")
        elif not s["learned"]:
            reasons.append(
                f"{regime} did not learn (test accuracy {s['accuracy']:.3f}, chance "
                f"{s['chance']:.3f}, p = {s['p_value']:.2g})"
            )
    return "; ".join(reasons)


# --------------------------------------------------------------------------- the Jiang lens


def _paired_row(groups, direction, resamples, confidence, **fields) -> dict:
    """A row from per-seed arrays of per-sample differences (observed − null)."""
    mean, low, high, _, n = metrics.hierarchical_bootstrap_ci(groups, resamples, confidence)
    return dict(
        fields,
        excess=mean,
        low=low,
        high=high,
        p_value=nulls.sign_flip_p_value(groups),
        direction=direction,
        n=n,
    )


def _by_seed(frame, column: str) -> list[np.ndarray]:
    return [g[column].to_numpy() for g in frame.partition_by("seed", maintain_order=True)]


def knowledge_claims(overlap, overlap_samples, convergence_samples, status, resamples, confidence):
    """Rows of the Jiang, Cheng, Li claims (docs/references.md §1) per experiment and kind."""
    import polars as pl

    rows: list[dict] = []
    study = "Jiang et al."
    for experiment in overlap["experiment"].unique(maintain_order=True).to_list():
        needs_ft = _unlearned(status, experiment, ("probe", "finetune"))
        needs_sc = _unlearned(status, experiment, ("probe", "finetune", "scratch"))
        for kind in ("and", "or"):

            def table(name, group="all", _key=(experiment, kind)):
                return _pick(overlap, *_key, name, group).row(0, named=True)

            def samples(name, group="all", _key=(experiment, kind)):
                return _pick(overlap_samples, *_key, name, group).sort(["seed", "sample"])

            base = {"study": study, "experiment": experiment, "kind": kind}
            kept = table("preserved")
            rows.append(
                _random_row(
                    kept,
                    base,
                    "fine-tuning preserves pre-trained knowledge beyond chance",
                    "preserved share (Ω_pre in Ω_ft)",
                    +1,
                    needs_ft,
                )
            )
            # P against a model that inherited nothing from it: the same overlap with scratch
            pre_ft, pre_sc = samples("preserved"), samples("pre_in_scratch")
            rows.append(
                _paired_row(
                    [a - b for a, b in zip(_by_seed(pre_ft, "share"), _by_seed(pre_sc, "share"))],
                    +1,
                    resamples,
                    confidence,
                    **base,
                    claim="fine-tuning preserves more than a scratch model shares with P",
                    metric="preserved share (Ω_pre in Ω_ft)",
                    observed=kept["share"],
                    null_name="Ω_pre in Ω_sc (nothing inherited)",
                    null=table("pre_in_scratch")["share"],
                    reason=needs_sc,
                )
            )
            rows.append(
                _paired_row(
                    [s - 0.5 for s in _by_seed(pre_ft, "share")],
                    -1,
                    resamples,
                    confidence,
                    **base,
                    claim="only a small share of pre-trained knowledge is preserved",
                    metric="preserved share (Ω_pre in Ω_ft)",
                    observed=kept["share"],
                    null_name="half",
                    null=0.5,
                    reason=needs_ft,
                )
            )
            rows.append(
                _random_row(
                    table("also_in_scratch"),
                    base,
                    "preserved knowledge is hard for scratch to learn",
                    "share of preserved terms scratch also has (1 − exclusive)",
                    -1,
                    needs_sc,
                )
            )
            also, new = samples("also_in_scratch"), samples("new_in_scratch")
            joined = also.join(new, on=["seed", "sample"], suffix="_new")
            rows.append(
                _paired_row(
                    _by_seed(joined.with_columns(d=pl.col("share") - pl.col("share_new")), "d"),
                    -1,
                    resamples,
                    confidence,
                    **base,
                    claim="scratch learns preserved terms less often than fine-tuning's new ones",
                    metric="share of preserved terms scratch also has (1 − exclusive)",
                    observed=table("also_in_scratch")["share"],
                    null_name="share of new terms scratch also has",
                    null=table("new_in_scratch")["share"],
                    reason=needs_sc,
                )
            )
            low, high = samples("preserved", "low"), samples("preserved", "high")
            if low.height and high.height:
                pair = low.join(high, on=["seed", "sample"], suffix="_high")
                # excess discard = null share − observed share; high minus low orders
                pair = pair.with_columns(
                    d=(pl.col("null_high") - pl.col("share_high"))
                    - (pl.col("null") - pl.col("share"))
                )
                rows.append(
                    _paired_row(
                        _by_seed(pair, "d"),
                        +1,
                        resamples,
                        confidence,
                        **base,
                        claim="high-order knowledge is discarded more",
                        metric="discarded share beyond chance, orders ≥ 3 minus orders 1–2",
                        observed=float(np.nanmean(pair["d"].to_numpy())),
                        null_name="equal excess at low and high orders",
                        null=0.0,
                        reason=needs_ft,
                    )
                )
    rows += _convergence_claims(convergence_samples, status, resamples, confidence)
    return rows


def _pick(frame, experiment: str, kind: str, comparison: str, orders: str):
    """The rows of one comparison in an overlap table."""
    import polars as pl

    return frame.filter(
        (pl.col("experiment") == experiment)
        & (pl.col("kind") == kind)
        & (pl.col("comparison") == comparison)
        & (pl.col("orders") == orders)
    )


def _random_row(row: dict, base: dict, claim: str, metric: str, direction: int, reason: str):
    return dict(
        base,
        claim=claim,
        metric=metric,
        observed=row["share"],
        null_name="random sets of the same sizes per order",
        null=row["null"],
        excess=row["excess"],
        low=row["excess_low"],
        high=row["excess_high"],
        p_value=row["p_value"],
        direction=direction,
        n=row["n_samples"],
        reason=reason,
    )


def _convergence_claims(convergence_samples, status, resamples, confidence) -> list[dict]:
    """Fine-tuning converges faster (similarity to its final interactions after one epoch) and
    learns more directly (directness), against scratch, paired by seed and sample."""
    import polars as pl

    rows = []
    tests = (
        ("fine-tuning converges faster", "similarity to the final interactions after epoch 1",
         "similarity", pl.col("epoch") == 1),
        ("fine-tuning learns more directly", "directness (final set / all ever salient)",
         "directness", pl.col("epoch") == 0),
    )  # fmt: skip
    for experiment in convergence_samples["experiment"].unique(maintain_order=True).to_list():
        sub = convergence_samples.filter(pl.col("experiment") == experiment)
        for claim, metric, column, when in tests:
            picked = sub.filter(when)
            ft = picked.filter(pl.col("regime") == "finetune").select("seed", "sample", column)
            sc = picked.filter(pl.col("regime") == "scratch").select("seed", "sample", column)
            pair = ft.join(sc, on=["seed", "sample"], suffix="_sc").sort(["seed", "sample"])
            pair = pair.with_columns(d=pl.col(column) - pl.col(f"{column}_sc"))
            rows.append(
                _paired_row(
                    _by_seed(pair, "d"),
                    +1,
                    resamples,
                    confidence,
                    study="Jiang et al.",
                    experiment=experiment,
                    kind="and+or",
                    claim=claim,
                    metric=metric,
                    observed=float(ft[column].mean()) if ft.height else float("nan"),
                    null_name="scratch, same seeds and samples",
                    null=float(sc[column].mean()) if sc.height else float("nan"),
                    reason=_unlearned(status, experiment, ("finetune", "scratch")),
                )
            )
    return rows


def knockout_claims(knockout_samples, status, resamples, confidence) -> list[dict]:
    """The causal test at inference (docs/references.md §4, ``knockout``): per experiment, the
    mean drop in v over matched numbers of knocked-out players, preserved terms minus random
    terms of the same orders, paired by seed and sample (samples without preserved terms have
    no comparison and are left out)."""
    import polars as pl

    rows = []
    per_sample = knockout_samples.unique(["experiment", "seed", "sample"]).drop_nulls(
        "preserved_minus_random"
    )
    for experiment in sorted(knockout_samples["experiment"].unique().to_list()):
        sub = per_sample.filter(pl.col("experiment") == experiment).sort(["seed", "sample"])
        rows.append(
            _paired_row(
                _by_seed(sub, "preserved_minus_random"),
                +1,
                resamples,
                confidence,
                study="knockout (causal test)",
                experiment=experiment,
                kind="and+or",
                claim="preserved knowledge matters more than random knowledge of the same orders",
                metric="mean drop in v at matched knocked-out players, preserved terms",
                observed=float(sub["preserved_drop_matched"].mean()) if sub.height else np.nan,
                null_name="random salient terms of the same orders (and strengths where possible)",
                null=float(sub["random_drop_matched"].mean()) if sub.height else np.nan,
                reason=_unlearned(status, experiment, ("probe", "finetune")),
            )
        )
    return rows


def within_experiment_link(table, x: str, y: str, max_exact: int = 20000, seed: int = 0):
    """Mean over experiments of Spearman's ρ(x, y) across seeds, and its p-value from
    permuting y within each experiment (exact when there are at most ``max_exact``
    permutations in all, else 20,000 random ones): a link between experiments cannot show up.
    Experiments with fewer than 3 seeds or no variation are left out."""
    from scipy.stats import spearmanr

    groups = []
    for part in table.partition_by("experiment", maintain_order=True):
        xs, ys = part[x].to_numpy().astype(float), part[y].to_numpy().astype(float)
        keep = np.isfinite(xs) & np.isfinite(ys)
        if keep.sum() >= 3 and np.ptp(xs[keep]) > 0 and np.ptp(ys[keep]) > 0:
            groups.append((xs[keep], ys[keep]))
    if not groups:
        return float("nan"), float("nan"), 0

    def statistic(ys_list):
        return float(np.mean([spearmanr(g[0], y).statistic for g, y in zip(groups, ys_list)]))

    observed = statistic([g[1] for g in groups])
    total = int(np.prod([factorial(g[1].size) for g in groups]))
    if total <= max_exact:
        draws = [statistic(list(p)) for p in product(*(permutations(g[1]) for g in groups))]
    else:
        rng = np.random.default_rng(seed)
        draws = [statistic([rng.permutation(g[1]) for g in groups]) for _ in range(20000)]
    return observed, nulls.two_sided(np.asarray(draws), observed), sum(g[0].size for g in groups)


def link_claims(overlap_samples, status, accuracy_by_seed) -> list[dict]:
    """Preservation goes with accuracy: within-experiment Spearman of the per-seed preserved
    share against the fine-tuned model's test accuracy (experiments as strata)."""
    import polars as pl

    rows = []
    for kind in ("and", "or"):
        per_seed = (
            overlap_samples.filter(
                (pl.col("comparison") == "preserved")
                & (pl.col("orders") == "all")
                & (pl.col("kind") == kind)
            )
            .group_by(["experiment", "seed"])
            .agg(pl.col("share").drop_nans().mean())
            .with_columns(pl.col("seed").cast(pl.Int64))
            .join(accuracy_by_seed, on=["experiment", "seed"])
            .sort(["experiment", "seed"])
        )
        learned = [
            e
            for e in per_seed["experiment"].unique(maintain_order=True).to_list()
            if not _unlearned(status, e, ("probe", "finetune"))
        ]
        per_seed = per_seed.filter(pl.col("experiment").is_in(learned))
        rho, p, n = within_experiment_link(per_seed, "share", "test_accuracy")
        rows.append(
            dict(
                study="Jiang et al.",
                claim="preservation goes with accuracy (within experiment)",
                experiment="all, within experiment",
                kind=kind,
                metric="mean within-experiment Spearman ρ(preserved share, fine-tuned accuracy)",
                observed=rho,
                null_name="accuracy permuted among seeds within each experiment",
                null=0.0,
                excess=rho,
                p_value=p,
                direction=+1,
                n=n,
                reason="" if n else "fewer than 3 seeds with variation in every experiment",
            )
        )
    return rows


def planted_claims(planted, status, draws: int = 20000, seed: int = 0) -> list[dict]:
    """Knowledge of parts both tasks share survives fine-tuning more often than knowledge of
    source-only parts (shapes' planted rules). Null: within each seed, the preserved terms fall
    on shared and source-only parts at random given the margins (hypergeometric), so the
    statistic Σ_seeds preserved-on-shared is a Mantel–Haenszel-style count; two-sided p."""
    import polars as pl

    rows = []
    rng = np.random.default_rng(seed)
    for experiment in planted["experiment"].unique(maintain_order=True).to_list():
        sub = planted.filter(pl.col("experiment") == experiment)
        shared = sub.filter(pl.col("parts") == "shared").sort("seed")
        other = sub.filter(pl.col("parts") == "source_only").sort("seed")
        n_sh, k_sh = shared["terms"].to_numpy(), shared["preserved"].to_numpy()
        n_so, k_so = other["terms"].to_numpy(), other["preserved"].to_numpy()
        kept, lost = k_sh + k_so, (n_sh - k_sh) + (n_so - k_so)
        usable = (n_sh > 0) & (n_so > 0)
        rate_sh = k_sh[usable].sum() / max(n_sh[usable].sum(), 1)
        rate_so = k_so[usable].sum() / max(n_so[usable].sum(), 1)
        if usable.any():
            simulated = rng.hypergeometric(
                kept[usable], lost[usable], n_sh[usable], size=(draws, int(usable.sum()))
            ).sum(-1)
            p = nulls.two_sided(simulated, float(k_sh[usable].sum()))
        else:
            p = float("nan")
        rows.append(
            dict(
                study="Jiang et al.",
                claim="knowledge of shared parts is preserved more than of source-only parts",
                experiment=experiment,
                kind="and",
                metric="preservation rate on shared parts (planted rules)",
                observed=float(rate_sh),
                null_name="rate on source-only parts (labels exchangeable within seed)",
                null=float(rate_so),
                excess=float(rate_sh - rate_so),
                p_value=p,
                direction=+1,
                n=int(n_sh[usable].sum() + n_so[usable].sum()),
                reason=_unlearned(status, experiment, ("probe", "finetune"))
                or ("" if usable.any() else "no seed has terms on both kinds of part"),
            )
        )
    return rows


def accuracy_by_seed(run_summaries, regime: str = "finetune"):
    """(experiment, seed, test_accuracy) of one regime's final epochs."""
    import polars as pl

    from transferscope.io import read_json

    rows = []
    for path in run_summaries:
        summary = read_json(Path(path))
        if summary["regime"] == regime:
            rows.append(
                {
                    "experiment": summary["experiment"],
                    "seed": int(summary["seed"]),
                    "test_accuracy": float(summary["final"]["test_accuracy"]),
                }
            )
    return pl.DataFrame(rows, schema={"experiment": pl.String, "seed": pl.Int64,
                                      "test_accuracy": pl.Float64})  # fmt: skip


def claims_table(
    knowledge_dir,
    run_summaries,
    data_dirs,
    out,
    resamples=1000,
    confidence=0.95,
    analyses_dir=None,
    theory_dir=None,
    evidence_rows=(),
):
    """results/claims.{parquet,csv} from the knowledge tables and the runs (module docstring),
    from the analyses and theory tables when their directories are given, and from the pre-verdict
    rows that evidence stages (controls, causal tests, graded transfer) wrote (``evidence_rows``);
    all rows are Holm-adjusted together. A claim whose inputs this run lacks is written with the
    reason it cannot be tested."""
    import polars as pl

    from transferscope.knowledge import lens_claims
    from transferscope.knowledge.aggregate import write_table

    knowledge_dir = Path(knowledge_dir)
    alpha = 1 - confidence
    status = learning_status(run_summaries, data_dirs, alpha)
    read = lambda name: pl.read_parquet(knowledge_dir / f"{name}.parquet")  # noqa: E731
    overlap, samples = read("overlap"), read("overlap_samples")
    rows = knowledge_claims(
        overlap, samples, read("convergence_samples"), status, resamples, confidence
    )
    rows += link_claims(samples, status, accuracy_by_seed(run_summaries))
    planted = knowledge_dir / "planted.parquet"
    if planted.exists():
        rows += planted_claims(pl.read_parquet(planted), status)
    knockout = knowledge_dir / "knockout_samples.parquet"
    if knockout.exists():
        rows += knockout_claims(pl.read_parquet(knockout), status, resamples, confidence)
    if analyses_dir and Path(analyses_dir).is_dir():
        rows += lens_claims.representation_claims(
            analyses_dir, status, _unlearned, alpha, experiments=set(data_dirs)
        )
        rows += lens_claims.early_checkpoint_claims(
            analyses_dir, data_dirs, status, _unlearned, alpha
        )
    if theory_dir and Path(theory_dir).is_dir():
        rows += lens_claims.theory_claims(theory_dir, alpha)
    for path in evidence_rows:
        rows += read_claim_rows(path)
    table = finalise(rows, alpha)
    write_table(table, out)
    learned = pl.DataFrame(
        [{"experiment": e, "regime": r, **s} for (e, r), s in sorted(status.items())]
    )
    write_table(learned, Path(out).with_name("learning.parquet"))


PRE_VERDICT = tuple(c for c in COLUMNS if c not in ("p_adjusted", "verdict"))


def write_claim_rows(rows: list[dict], out) -> None:
    """An evidence stage's claims before their verdict: the claims COLUMNS without
    ``p_adjusted`` and ``verdict`` (``claims_table`` adjusts them with every other row and gives
    the verdicts). Missing numbers are NaN, missing text empty; a row with a ``reason`` is
    reported as not testable."""
    import polars as pl

    from transferscope.knowledge.aggregate import write_table

    filled = []
    for row in rows:
        unknown = set(row) - set(PRE_VERDICT)
        if unknown:
            raise ValueError(f"claim row has unknown columns {sorted(unknown)}: {row}")
        filled.append(
            {
                k: row.get(k, "" if k in _TEXT else None if k in _INTS else float("nan"))
                for k in PRE_VERDICT
            }
        )
    schema = {k: (pl.String if k in _TEXT else pl.Int64 if k in _INTS else pl.Float64)
              for k in PRE_VERDICT}  # fmt: skip
    write_table(pl.DataFrame(filled, schema=schema), out)


def read_claim_rows(path) -> list[dict]:
    """Rows written by ``write_claim_rows``, ready for ``finalise``."""
    import polars as pl

    frame = pl.read_parquet(path)
    missing = set(PRE_VERDICT) - set(frame.columns)
    if missing:
        raise ValueError(
            f"{path}: claim rows lack columns {sorted(missing)}; rebuild it with the stage "
            "that wrote it"
        )
    rows = []
    for row in frame.select(PRE_VERDICT).to_dicts():
        if not row["reason"]:
            row.pop("reason")  # finalise treats a present reason as 'not testable'
        rows.append(row)
    return rows


def verdict_changes(claims_by_variant: dict[str, str | Path], out) -> None:
    """results/sensitivity/verdicts.{parquet,csv}: per claim (study, claim, experiment, kind),
    each variant's verdict and observed value beside the base run's, and ``changed`` when any
    variant's verdict differs from the base's. The first entry is the base; claims that a
    variant does not test (the representation and theory lenses do not depend on the
    interaction settings) are compared only where both have them."""
    import polars as pl

    from transferscope.knowledge.aggregate import write_table

    keys = ["study", "claim", "experiment", "kind"]
    names = list(claims_by_variant)
    table = None
    for name in names:
        part = pl.read_parquet(claims_by_variant[name]).select(
            *keys, pl.col("verdict").alias(f"verdict[{name}]"),
            pl.col("observed").alias(f"observed[{name}]"),
        )  # fmt: skip
        table = part if table is None else table.join(part, on=keys, how="inner")
    base = pl.col(f"verdict[{names[0]}]")
    changed = pl.any_horizontal([pl.col(f"verdict[{n}]") != base for n in names[1:]])
    write_table(table.with_columns(changed=changed).sort(keys), out)
