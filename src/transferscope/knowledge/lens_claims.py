"""Claims of the representation lens (Neyshabur et al.) and the theory lens (Tahir et al.),
tested on this run's tables; rows in the format of ``claims`` (docs/references.md §2–§4).

Units of the tests are what is independent: pairs of runs or runs for the representation lens
(so a run with three seeds cannot reach significance on them: the exact permutation tests have
too few arrangements, and the verdict says so), theory cells for the theory lens.
"""

from __future__ import annotations

from itertools import combinations
from math import comb, factorial
from pathlib import Path

import numpy as np

from transferscope.knowledge import nulls

NEYSHABUR = "Neyshabur et al."
CONTROL = "control: early P at chance"
TAHIR = "Tahir et al."
# |theory − simulation| (risk or transferability units) below which the two are called equal
THEORY_TOLERANCE = 0.05


def too_few(arrangements: int, alpha: float) -> str:
    """Why an exact test over this many arrangements cannot reach α ('' when it can): its
    smallest two-sided p-value is 2·2 / (arrangements + 1) (the observation and its mirror)."""
    smallest = min(1.0, 4 / (arrangements + 1))
    if smallest < alpha:
        return ""
    return (
        f"too few runs: {arrangements} arrangements, the smallest attainable p-value "
        f"{smallest:.2f} is not below α = {alpha:.2g}; add seeds"
    )


def exact_two_sample_p(a, b) -> float:
    """Two-sided p-value of mean(a) − mean(b) from every relabelling of the pooled values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.concatenate([a, b])
    observed = a.mean() - b.mean()
    draws = [
        pooled[list(idx)].mean() - np.delete(pooled, list(idx)).mean()
        for idx in combinations(range(pooled.size), a.size)
    ]
    return nulls.two_sided(np.asarray(draws), observed)


def exact_sign_flip_p(differences) -> float:
    """Two-sided p-value that paired differences are centred on 0, from all 2^n sign flips."""
    d = np.asarray(differences, float)
    signs = np.array(np.meshgrid(*[[-1.0, 1.0]] * d.size)).reshape(d.size, -1).T
    return nulls.two_sided((signs * d).mean(1), float(d.mean()))


def _row(study, claim, experiment, metric, observed, null_name, null, excess, p, direction, n,
         reason=""):  # fmt: skip
    return dict(
        study=study,
        claim=claim,
        experiment=experiment,
        kind="",
        metric=metric,
        observed=float(observed),
        null_name=null_name,
        null=float(null),
        excess=float(excess),
        low=float("nan"),
        high=float("nan"),
        p_value=float(p),
        direction=direction,
        n=int(n),
        reason=reason,
    )


def representation_claims(
    analyses_dir, status: dict, unlearned, alpha: float, experiments=None
) -> list[dict]:
    """Per image experiment with analyses tables: fine-tunes of one P share a basin more than
    scratch runs do (lower loss barrier), P-T is closer to P than RI-T (CKA of the same module;
    relative weight distance), P-T pairs make more of the same mistakes, and feature reuse falls
    with block size (the fine-tune − scratch gap shrinks as blocks get smaller)."""
    import polars as pl

    rows: list[dict] = []
    root = Path(analyses_dir)
    for exp_dir in sorted(p for p in root.iterdir() if (p / "barriers.parquet").exists()):
        experiment = exp_dir.name
        if experiments is not None and experiment not in experiments:
            continue  # another config's tables left in results/analyses
        reason = unlearned(status, experiment, ("finetune", "scratch"))
        barriers = pl.read_parquet(exp_dir / "barriers.parquet")
        pt = barriers.filter(pl.col("pair_type") == "P-T/P-T")["barrier_loss"].to_numpy()
        rit = barriers.filter(pl.col("pair_type") == "RI-T/RI-T")["barrier_loss"].to_numpy()
        if pt.size and rit.size:
            rows.append(
                _row(NEYSHABUR, "fine-tunes of one P share a basin more than scratch runs",
                     experiment, "loss barrier between P-T pairs", pt.mean(),
                     "loss barrier between RI-T pairs", rit.mean(), pt.mean() - rit.mean(),
                     exact_two_sample_p(pt, rit), -1, pt.size + rit.size,
                     reason or too_few(comb(pt.size + rit.size, pt.size), alpha))
            )  # fmt: skip
        cka = pl.read_parquet(exp_dir / "cka.parquet").filter(pl.col("diagonal"))
        per_seed = cka.group_by(["pair_type", "seed_a"]).agg(pl.col("cka").mean()).sort("seed_a")
        pt_p = per_seed.filter(pl.col("pair_type") == "P-T/P")
        rit_p = per_seed.filter(pl.col("pair_type") == "RI-T/P")
        paired = pt_p.join(rit_p, on="seed_a", suffix="_rit")
        if paired.height:
            d = (paired["cka"] - paired["cka_rit"]).to_numpy()
            rows.append(
                _row(NEYSHABUR, "P-T is closer to P than RI-T in representation (CKA)",
                     experiment, "mean CKA(P-T, P) over modules", paired["cka"].mean(),
                     "mean CKA(RI-T, P), same seeds", paired["cka_rit"].mean(), d.mean(),
                     exact_sign_flip_p(d), +1, d.size, reason or too_few(2**d.size, alpha))
            )  # fmt: skip
        distances = pl.read_parquet(exp_dir / "distances.parquet")
        per_seed = distances.group_by(["pair_type", "seed_a"]).agg(pl.col("relative").mean())
        paired = (
            per_seed.filter(pl.col("pair_type") == "P-T/P")
            .join(per_seed.filter(pl.col("pair_type") == "RI-T/P"), on="seed_a", suffix="_rit")
            .sort("seed_a")
        )
        if paired.height:
            d = (paired["relative"] - paired["relative_rit"]).to_numpy()
            rows.append(
                _row(NEYSHABUR, "P-T is closer to P than RI-T in weights", experiment,
                     "relative distance ‖θ_PT − θ_P‖ / ‖θ_P‖", paired["relative"].mean(),
                     "relative distance of RI-T to P", paired["relative_rit"].mean(), d.mean(),
                     exact_sign_flip_p(d), -1, d.size, reason or too_few(2**d.size, alpha))
            )  # fmt: skip
        mistakes = pl.read_parquet(exp_dir / "mistakes.parquet").with_columns(
            common=pl.col("both_wrong") / (pl.col("both_wrong") + pl.col("uncommon"))
        )
        pt = mistakes.filter(pl.col("pair_type") == "P-T/P-T")["common"].to_numpy()
        rit = mistakes.filter(pl.col("pair_type") == "RI-T/RI-T")["common"].to_numpy()
        if pt.size and rit.size:
            rows.append(
                _row(NEYSHABUR, "fine-tunes of one P make the same mistakes more than scratch runs",
                     experiment, "share of mistakes both P-T models make", np.nanmean(pt),
                     "same share for RI-T pairs", np.nanmean(rit), np.nanmean(pt) - np.nanmean(rit),
                     exact_two_sample_p(pt, rit), +1, pt.size + rit.size,
                     reason or too_few(comb(pt.size + rit.size, pt.size), alpha))
            )  # fmt: skip
        reuse = exp_dir / "feature_reuse.parquet"
        if reuse.exists():
            rows += _feature_reuse(pl.read_parquet(reuse), experiment, reason, alpha)
    return rows


def accuracy_difference_p(k_a: int, k_b: int, n: int) -> float:
    """Two-sided p-value that two models score the same on one test set of n items, from their
    correct counts: Fisher's exact test on the 2 × 2 table (correct, wrong) × (model). Test items
    are the unit (the runs are fixed), so this asks whether the test set could show the gap by
    chance, not whether another seed would (the seeds are pooled)."""
    from scipy.stats import fisher_exact

    return float(fisher_exact([[k_a, n - k_a], [k_b, n - k_b]]).pvalue)


def accuracy_difference_interval(
    k_a: int, n_a: int, k_b: int, n_b: int, confidence: float
) -> tuple[float, float]:
    """Interval of the accuracy difference k_a/n_a − k_b/n_b: Newcombe's hybrid score interval
    (Newcombe 1998, method 10; docs/references.md §4), built from each accuracy's Wilson score
    interval (l, u): [d − √((p_a − l_a)² + (u_b − p_b)²), d + √((u_a − p_a)² + (p_b − l_b)²)].
    It keeps its coverage near the nominal level at the small counts of these test sets, where
    the Wald interval does not."""
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))

    def wilson(k: int, n: int) -> tuple[float, float, float]:
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return p, centre - half, centre + half

    (p_a, l_a, u_a), (p_b, l_b, u_b) = wilson(k_a, n_a), wilson(k_b, n_b)
    d = p_a - p_b
    return (
        float(d - np.sqrt((p_a - l_a) ** 2 + (u_b - p_b) ** 2)),
        float(d + np.sqrt((u_a - p_a) ** 2 + (p_b - l_b) ** 2)),
    )


def early_checkpoint_claims(analyses_dir, data_dirs: dict, status: dict, unlearned,
                            alpha: float) -> list[dict]:  # fmt: skip
    """The control of "pre-training": fine-tuning from P's earliest saved pre-training epoch,
    whose source-task accuracy is at chance (majority class, one-sided binomial p ≥ α), keeps
    P's architecture, scale and normalisation statistics but not its source-task knowledge
    (docs/references.md §2, intermediate checkpoints). Two rows per image experiment, correct
    counts pooled over the analysis seeds on the target test set: the final P's fine-tune beats
    the early one's (the gain needs source knowledge), and the early one's beats scratch (part of
    the gain is not source knowledge). Withheld, with the reason, when the early checkpoint had
    already learned the source task or a regime did not learn. Each row carries the Newcombe
    interval of its accuracy difference (``accuracy_difference_interval``)."""
    import polars as pl
    from scipy.stats import binomtest

    from transferscope.data import read_manifest
    from transferscope.knowledge.claims import majority_class_rate

    rows: list[dict] = []
    root = Path(analyses_dir)
    for table_path in sorted(root.glob("*/intermediate.parquet")):
        experiment = table_path.parent.name
        if experiment not in data_dirs:
            continue
        table = pl.read_parquet(table_path)
        from_p = table.filter(~pl.col("reference"))
        scratch = table.filter(pl.col("reference"))
        if from_p.is_empty() or scratch.is_empty():
            continue
        early_epoch, final_epoch = from_p["pretrain_epoch"].min(), from_p["pretrain_epoch"].max()
        early = from_p.filter(pl.col("pretrain_epoch") == early_epoch)
        final = from_p.filter(pl.col("pretrain_epoch") == final_epoch)
        manifest = read_manifest(data_dirs[experiment])["tasks"]
        if not early.height == final.height == scratch.height:
            continue  # seeds missing from one arm: the intermediate analysis says which
        n_target = int(manifest["target"]["test"]) * early.height  # test items × seeds
        k_early, k_final, k_scratch = (
            int(round(float(t["target_test_accuracy"].sum()) * manifest["target"]["test"]))
            for t in (early, final, scratch)
        )
        source_chance = majority_class_rate(data_dirs[experiment], "source")
        n_source = int(manifest["source"]["test"]) * early.height
        k_source = int(
            round(float(early["source_test_accuracy"].sum()) * manifest["source"]["test"])
        )
        p_source = binomtest(k_source, n_source, source_chance, alternative="greater").pvalue
        reason = unlearned(status, experiment, ("finetune", "scratch"))
        if not reason and p_source < alpha:
            reason = (
                f"P's earliest saved epoch ({early_epoch}) already learned the source task "
                f"(accuracy {k_source / n_source:.2f}, chance {source_chance:.2f}): not a "
                "chance-level control; save an earlier pre-training epoch"
            )
        if not reason and final_epoch == early_epoch:
            reason = "one pre-training epoch only: no early checkpoint to compare"
        a_early, a_final, a_scratch = (k / n_target for k in (k_early, k_final, k_scratch))
        for claim, (metric, k_a, a_a), (null_name, k_b, a_b) in (
            ("fine-tuning's gain needs P's source knowledge (final P beats early P)",
             (f"target accuracy, fine-tuned from P epoch {final_epoch}", k_final, a_final),
             (f"fine-tuned from P epoch {early_epoch} (source accuracy "
              f"{k_source / n_source:.2f}, chance {source_chance:.2f})", k_early, a_early)),
            ("part of the gain is not source knowledge (early P beats scratch)",
             (f"target accuracy, fine-tuned from P epoch {early_epoch}", k_early, a_early),
             ("scratch, same seeds", k_scratch, a_scratch)),
        ):  # fmt: skip
            row = _row(CONTROL, claim, experiment, metric, a_a, null_name, a_b, a_a - a_b,
                       accuracy_difference_p(k_a, k_b, n_target), +1, n_target, reason)  # fmt: skip
            row["low"], row["high"] = accuracy_difference_interval(
                k_a, n_target, k_b, n_target, 1 - alpha
            )
            rows.append(row)
    return rows


def _feature_reuse(table, experiment: str, reason: str, alpha: float) -> list[dict]:
    """Spearman ρ of the relative gap (A_PT − A_RIT)/A_PT with the block size, per seed, mean
    over seeds; exact permutation p of block sizes within seeds."""
    import polars as pl

    from transferscope.knowledge.claims import within_experiment_link

    by_seed = table.select(
        experiment=pl.col("seed").cast(pl.String), block=pl.col("block_size"),
        gap=pl.col("relative_gap"),
    )  # fmt: skip
    rho, p, n = within_experiment_link(by_seed, "block", "gap")
    sizes = by_seed.group_by("experiment").len()["len"].to_list()
    reason = reason or ("" if n else "fewer than 3 block sizes")
    reason = reason or too_few(int(np.prod([factorial(k) for k in sizes])), alpha)
    return [
        _row(NEYSHABUR, "feature reuse falls with block size (the gap shrinks with smaller blocks)",
             experiment, "mean over seeds of Spearman ρ(block size, relative gap)", rho,
             "block sizes permuted within seed", 0.0, rho, p, +1, n, reason)
    ]  # fmt: skip


def theory_claims(theory_dir, alpha: float) -> list[dict]:
    """Theory equals simulation (per diagram, an equivalence test per cell at the Bonferroni
    level: the claim holds when every cell's interval of theory − simulation lies within
    ±THEORY_TOLERANCE), the negative-transfer boundary (simulated transferability has the sign
    the closed form predicts, against predictions permuted among cells), and tuned scratch
    weight decay removes the anomalous positive-transfer band (paired by cell, γ ≥ 1)."""
    import polars as pl
    from scipy.stats import norm

    rows = []
    root = Path(theory_dir)
    for name in ("linear", "linear_ridge", "linear_tuned", "finetune", "finetune_tuned"):
        path = root / f"phase_{name}.parquet"
        if not path.exists():
            continue
        cells = pl.read_parquet(path).filter(
            pl.col("simulation").is_finite() & (pl.col("n_instances") - pl.col("n_unconverged") > 1)
        )
        if not cells.height:
            continue
        diff = (cells["theory"] - cells["simulation"]).to_numpy()
        se = (cells["sim_std"] / (cells["n_instances"] - cells["n_unconverged"]).sqrt()).to_numpy()
        z = norm.ppf(1 - alpha / (2 * diff.size))
        lo, hi = diff - z * se, diff + z * se
        worst = np.max(np.maximum(np.abs(lo), np.abs(hi)))
        best = np.max(np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi))))
        row = _row(TAHIR, f"theory equals simulation ({name})", "theory",
                   "max over cells of |theory − simulation|", np.max(np.abs(diff)),
                   "0 (within ±tolerance)", 0.0, np.max(np.abs(diff)), float("nan"), 0,
                   diff.size)  # fmt: skip
        row.update(low=float(best), high=float(worst), tolerance=THEORY_TOLERANCE)
        rows.append(row)
    linear = root / "phase_linear.parquet"
    if linear.exists():
        cells = pl.read_parquet(linear).filter(
            pl.col("simulation").is_finite() & (pl.col("theory").abs() > 1e-9)
        )
        predicted = np.sign(cells["theory"].to_numpy())
        simulated = np.sign(cells["simulation"].to_numpy())
        agree = float(np.mean(predicted == simulated))
        rng = np.random.default_rng(0)
        draws = [np.mean(rng.permutation(predicted) == simulated) for _ in range(20000)]
        rows.append(
            _row(TAHIR, "the closed form predicts where transfer turns negative", "theory",
                 "share of cells whose simulated transferability has the predicted sign", agree,
                 "predicted signs permuted among cells", float(np.mean(draws)),
                 agree - float(np.mean(draws)), nulls.two_sided(np.asarray(draws), agree), +1,
                 predicted.size)
        )  # fmt: skip
    tuned = root / "phase_linear_tuned.parquet"
    if linear.exists() and tuned.exists():
        keys = ["theta", "gamma", "sigma"]
        paired = (
            pl.read_parquet(linear)
            .join(pl.read_parquet(tuned), on=keys, suffix="_tuned")
            .filter((pl.col("gamma") >= 1) & (pl.col("sigma") > 0))
            .filter(pl.col("simulation").is_finite() & pl.col("simulation_tuned").is_finite())
        )
        if paired.height:
            d = (paired["simulation"] - paired["simulation_tuned"]).to_numpy()
            p = exact_sign_flip_p(d) if d.size <= 16 else nulls.sign_flip_p_value([d])
            rows.append(
                _row(TAHIR, "tuned scratch weight decay removes the anomalous positive-transfer band",
                     "theory", "transferability against min-norm scratch, γ ≥ 1, σ > 0",
                     paired["simulation"].mean(), "the same against tuned-ridge scratch",
                     paired["simulation_tuned"].mean(), d.mean(), p, +1, d.size)
            )  # fmt: skip
    return rows
