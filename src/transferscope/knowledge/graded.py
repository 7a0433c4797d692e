"""Graded transfer: does preserved knowledge rise with the share f of planted parts that the
source and target tasks share, and does the transfer gain follow it?

The series is a set of ``shapes`` experiments whose datasets set ``shared_fraction`` f
(``transferscope.data.shapes``: both tasks plant k parts and share exactly round(f·k) of them).
Per experiment (one f), from its runs and the overlap tables (docs/references.md §1, §4):

    fine-tune, scratch   final target test accuracy, mean over seeds with a percentile
                         bootstrap interval (both regimes tuned when ``tuning`` is on)
    gain                 fine-tune − scratch, per seed (seed s of one against seed s of the
                         other), mean and interval as above
    preserved share      |Ω_pre ∩ Ω_ft| / |Ω_pre| (overlap comparison ``preserved``), beside its
                         random-overlap null (same set sizes per order placed at random)
    exclusive share      1 − |P ∩ Ω_sc| / |P| with P = Ω_pre ∩ Ω_ft (1 − ``also_in_scratch``),
                         beside 1 − its random null

and the deep-linear theory's analogue of the same f (docs/references.md §3, Tahir et al.): each
planted part is one orthonormal feature direction and a task vector is the normalised sum of
its parts' directions, so the source and target vectors meet at the angle θ with

    cos θ = s / √(k_source · k_target)        (s shared parts; = f when k_source = k_target)

The analogue of feature overlap is the share of the target that the pre-trained (rank-one)
feature explains, 1 − R_linear(θ) = cos²θ, with R_linear the asymptotic risk of retraining the
readout only (``theory.linear.linear_transfer_risk`` at ridge 0; ‖P⊥f_t‖² = sin²θ); beside it
the theory's fine-tuning transferability 𝒯_ft = (1 − γ)(2 cos θ − 1)
(``theory.linear.finetune_transferability``), negative below cos θ = 1/2, at the sample ratio
γ and label noise σ of config ``graded``.

Trend claims (``trend_test``): Spearman's ρ between f and the per-seed value (preserved share
per kind, gain) over all (f, seed) runs, with a permutation p-value (the values permuted among
the runs; exact when the runs have at most ``max_exact`` orderings, else ``draws`` random
ones; two-sided, ``nulls.two_sided``) and a bootstrap interval of ρ over the runs. The seeds of
one f share their pre-trained model, so the table also gives ``p_levels``: the exact p-value
of the same ρ when whole f levels are permuted (all L! orderings, the observed one included, so
with the +1 rule never below 4/(L! + 1) two-sided), which does not treat seeds of one level as
independent.
"""

from __future__ import annotations

import json
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np

COMPONENT = "graded"
FIGURE = "results/figures/graded_transfer.png"
KINDS = ("and", "or")
STUDY = "graded transfer"


# --------------------------------------------------------------------------------- settings


def params(config: dict[str, Any]) -> dict[str, Any]:
    """The ``graded`` block with the schema's defaults filled in."""
    from transferscope.config import block_settings

    return block_settings(config, COMPONENT)


def enabled(config: dict[str, Any]) -> bool:
    return bool(params(config)["enabled"])


def shared_fraction(config: dict[str, Any], experiment: str) -> float | None:
    """f of an experiment's dataset (``datasets.<name>.shared_fraction``), None when unset."""
    dataset = config["datasets"].get(config["experiments"][experiment]["dataset"]) or {}
    value = dataset.get("shared_fraction")
    return None if value is None else float(value)


def series(config: dict[str, Any]) -> dict[str, float]:
    """{experiment: f} of the series, sorted by f: ``graded.experiments``, or (null) every
    experiment whose dataset sets ``shared_fraction``."""
    chosen = params(config)["experiments"]
    names = (
        [e for e in config["experiments"] if shared_fraction(config, e) is not None]
        if chosen is None
        else list(chosen)
    )
    found = {e: shared_fraction(config, e) for e in names}
    return dict(sorted(found.items(), key=lambda item: (item[1], item[0])))


def check(config: dict[str, Any], source: str = "config") -> None:
    """An enabled series that cannot run stops here, naming the key, before any job."""
    from transferscope.config import ConfigError

    if not enabled(config):
        return
    key = f"{source}: {COMPONENT}.experiments"
    for experiment in params(config)["experiments"] or []:
        if experiment not in config["experiments"]:
            raise ConfigError(
                f"{key}: '{experiment}' is not configured; allowed: {sorted(config['experiments'])}"
            )
        if shared_fraction(config, experiment) is None:
            dataset = config["experiments"][experiment]["dataset"]
            raise ConfigError(
                f"{key}: experiment '{experiment}' uses dataset '{dataset}', which sets no "
                f"shared_fraction; give it one (datasets.{dataset}.shared_fraction) or leave "
                "the experiment out"
            )
    levels = set(series(config).values())
    if len(levels) < 3:
        raise ConfigError(
            f"{key}: the series needs experiments at 3 or more shared fractions to show a trend; "
            f"found {sorted(levels)} (set datasets.<name>.shared_fraction on shapes variants)"
        )


def stage_settings(config: dict[str, Any]) -> dict[str, Any]:
    """What the stage depends on (the rule's params, passed as ``--settings`` JSON)."""
    p = params(config)
    return {
        "series": series(config),
        "seeds": [int(s) for s in config["seeds"]],
        "gamma": float(p["theory_gamma"]),
        "sigma": float(p["theory_sigma"]),
        "draws": int(p["draws"]),
        "bootstrap": int(config["knowledge"]["bootstrap"]),
        "confidence": float(config["knowledge"]["confidence"]),
    }


def output(name: str) -> str:
    """One of the stage's tables under results/evidence/graded/."""
    from transferscope.workflow import evidence_dir

    return f"{evidence_dir(COMPONENT)}/{name}"


def targets(config: dict[str, Any]) -> list[str]:
    """The stage's outputs for ``all_targets`` (none when the series is off)."""
    if not enabled(config):
        return []
    return [output("graded.parquet"), output("claim_rows.parquet"), FIGURE]


# ------------------------------------------------------------------------------- the theory


def part_counts(rules: dict[str, Any]) -> dict[str, int]:
    """(shared, source, target) planted-part counts of a manifest's ``rules``."""
    shared, source_only, target_only = (
        len(rules.get(k, [])) for k in ("shared", "source_only", "target_only")
    )
    return {"shared": shared, "source": shared + source_only, "target": shared + target_only}


def theory_analogue(shared: int, source: int, target: int, gamma: float, sigma: float) -> dict:
    """The deep-linear analogue of one f (module docstring): cos θ from the part counts, the
    feature overlap 1 − R_linear(θ) and the transferabilities of fine-tuning and of the readout
    (against the minimum-norm scratch model), from ``transferscope.theory.linear``."""
    from transferscope.theory import linear

    cos = shared / np.sqrt(source * target) if source and target else float("nan")
    theta = float(np.arccos(np.clip(cos, 0.0, 1.0)))
    risk = float(linear.linear_transfer_risk(theta, gamma, sigma))
    return {
        "theory_cos_theta": float(cos),
        "theory_feature_overlap": 1.0 - risk,
        "theory_unexplained": risk,
        "theory_finetune_transferability": float(
            linear.finetune_transferability(theta, gamma, sigma)
        ),
        "theory_linear_transferability": float(linear.linear_transferability(theta, gamma, sigma)),
        "theory_gamma": float(gamma),
        "theory_sigma": float(sigma),
    }


# ------------------------------------------------------------------------------ trend test


def _ranks(values: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(values, axis=-1)


def _rank_correlation(rx: np.ndarray, ry: np.ndarray) -> np.ndarray:
    """Pearson correlation of rank vectors (Spearman's ρ with mid-ranks), along the last axis."""
    cx = rx - rx.mean(-1, keepdims=True)
    cy = ry - ry.mean(-1, keepdims=True)
    return (cx * cy).sum(-1) / np.sqrt((cx**2).sum(-1) * (cy**2).sum(-1))


def trend_test(
    levels, values, draws: int = 20000, max_exact: int = 20000, seed: int = 0
) -> dict[str, float | int]:
    """Spearman's ρ(levels, values) over the runs and its two-sided permutation p-value (values
    permuted among the runs: all n! orderings when n! ≤ ``max_exact``, else ``draws`` random
    ones), plus ``p_levels``: the exact p-value when whole levels are permuted (runs at one level
    move together). Non-finite pairs are left out; NaN when fewer than 3 runs or no variation."""
    from math import factorial

    from transferscope.knowledge.nulls import two_sided

    x, y = np.asarray(levels, float), np.asarray(values, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(x.size)
    out = {"rho": float("nan"), "p_value": float("nan"), "p_levels": float("nan"), "n": n}
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    rx, ry = _ranks(x), _ranks(y)
    rho = float(_rank_correlation(rx, ry))
    if factorial(n) <= max_exact:
        orders = np.array(list(permutations(range(n))))
    else:
        rng = np.random.default_rng(seed)
        orders = rng.permuted(np.tile(np.arange(n), (draws, 1)), axis=1)
    null = _rank_correlation(rx[None, :], ry[orders])
    unique = np.unique(x)
    # whole levels permuted: level j's runs take the level value of another level
    level_of = np.searchsorted(unique, x)
    relabel = np.array(list(permutations(range(unique.size))))
    if unique.size < 3 or factorial(unique.size) > max_exact:
        p_levels = float("nan")
    else:
        moved = unique[relabel][:, level_of]  # (L!, n) the level each run gets
        p_levels = two_sided(_rank_correlation(_ranks(moved), ry[None, :]), rho)
    return {"rho": rho, "p_value": two_sided(null, rho), "p_levels": p_levels, "n": n}


def trend_row(levels, values, claim: str, metric: str, kind: str, experiments, settings) -> dict:
    """A pre-verdict claim row (``claims.write_claim_rows``): ρ against the null 0, with the
    bootstrap interval of ρ over the runs, direction +1."""
    from transferscope.knowledge.metrics import spearman_ci

    test = trend_test(levels, values, draws=settings["draws"])
    _, low, high, _ = spearman_ci(levels, values, settings["bootstrap"], settings["confidence"])
    n_levels = len({float(f) for f, v in zip(levels, values) if np.isfinite(v)})
    reason = ""
    if not np.isfinite(test["rho"]):
        reason = f"fewer than 3 runs with a value, or no variation ({test['n']} runs)"
    elif n_levels < 3:
        reason = f"values at {n_levels} shared fractions only; a trend needs 3 or more"
    return {
        "study": STUDY,
        "claim": claim,
        "experiment": ", ".join(experiments),
        "kind": kind,
        "metric": metric,
        "observed": test["rho"],
        "null_name": "f permuted among the (f, seed) runs",
        "null": 0.0,
        "excess": test["rho"],
        "low": low,
        "high": high,
        "p_value": test["p_value"],
        "direction": +1,
        "tolerance": float("nan"),
        "n": test["n"],
        "reason": reason,
    }


# ------------------------------------------------------------------------------ the stage


def _final_accuracies(run_summaries, experiments) -> dict:
    """{(experiment, regime): {seed: final test accuracy}} of the fine-tune and scratch runs."""
    from transferscope.io import read_json

    found: dict = {}
    for path in run_summaries:
        summary = read_json(Path(path))
        key = (summary["experiment"], summary["regime"])
        if summary["experiment"] in experiments and summary["regime"] in ("finetune", "scratch"):
            found.setdefault(key, {})[int(summary["seed"])] = float(
                summary["final"]["test_accuracy"]
            )
    return found


def _missing(what: str, where, fix: str) -> ValueError:
    return ValueError(f"{where}: {what}; {fix}")


def graded_table(overlap, overlap_samples, accuracies, manifests, settings):
    """(table, per-seed table): one row per (experiment, kind) of the series (module docstring),
    and the per-(experiment, kind, seed) values the trend claims use."""
    import polars as pl

    from transferscope.knowledge.metrics import bootstrap_ci

    boot = {"resamples": settings["bootstrap"], "confidence": settings["confidence"]}
    rows, per_seed = [], []
    for experiment, f in settings["series"].items():
        counts = part_counts(manifests[experiment]["rules"])
        theory = theory_analogue(
            counts["shared"],
            counts["source"],
            counts["target"],
            settings["gamma"],
            settings["sigma"],
        )
        ft = accuracies.get((experiment, "finetune"), {})
        sc = accuracies.get((experiment, "scratch"), {})
        seeds = sorted(set(ft) & set(sc))
        gains = {s: ft[s] - sc[s] for s in seeds}
        acc = {
            name: bootstrap_ci(list(values.values()), **boot)
            for name, values in (("finetune", ft), ("scratch", sc), ("gain", gains))
        }
        for kind in KINDS:

            def pick(frame, comparison, _kind=kind, _exp=experiment):
                return frame.filter(
                    (pl.col("experiment") == _exp)
                    & (pl.col("kind") == _kind)
                    & (pl.col("comparison") == comparison)
                    & (pl.col("orders") == "all")
                )

            kept, also = pick(overlap, "preserved"), pick(overlap, "also_in_scratch")
            if kept.height != 1 or also.height != 1:
                raise _missing(
                    f"no overlap rows for experiment '{experiment}', kind '{kind}'",
                    "results/knowledge/overlap.parquet",
                    "rerun `snakemake --forcerun knowledge_overlap` with this config",
                )
            kept, also = kept.row(0, named=True), also.row(0, named=True)
            seed_shares = (
                pick(overlap_samples, "preserved")
                .group_by("seed")
                .agg(pl.col("share").drop_nans().mean())
            )
            shares = {int(s): float(v) for s, v in seed_shares.iter_rows()}
            exclusive_seeds = (
                pick(overlap_samples, "also_in_scratch")
                .group_by("seed")
                .agg((1 - pl.col("share")).drop_nans().mean())
            )
            exclusive = {int(s): float(v) for s, v in exclusive_seeds.iter_rows()}
            for s in sorted(set(shares) | set(gains)):
                per_seed.append(
                    {
                        "experiment": experiment,
                        "shared_fraction": f,
                        "kind": kind,
                        "seed": s,
                        "preserved_share": shares.get(s, float("nan")),
                        "exclusive_share": exclusive.get(s, float("nan")),
                        "gain": gains.get(s, float("nan")),
                    }
                )
            rows.append(
                {
                    "experiment": experiment,
                    "shared_fraction": f,
                    "shared_parts": counts["shared"],
                    "source_parts": counts["source"],
                    "target_parts": counts["target"],
                    "kind": kind,
                    "finetune_accuracy": acc["finetune"][0],
                    "finetune_low": acc["finetune"][1],
                    "finetune_high": acc["finetune"][2],
                    "scratch_accuracy": acc["scratch"][0],
                    "scratch_low": acc["scratch"][1],
                    "scratch_high": acc["scratch"][2],
                    "gain": acc["gain"][0],
                    "gain_low": acc["gain"][1],
                    "gain_high": acc["gain"][2],
                    "n_seeds": acc["gain"][3],
                    "preserved_share": kept["share"],
                    "preserved_null": kept["null"],
                    "preserved_excess": kept["excess"],
                    "preserved_excess_low": kept["excess_low"],
                    "preserved_excess_high": kept["excess_high"],
                    "preserved_p_value": kept["p_value"],
                    "exclusive_share": 1 - also["share"],
                    "exclusive_null": 1 - also["null"],
                    "exclusive_excess": -also["excess"],
                    "exclusive_excess_low": -also["excess_high"],
                    "exclusive_excess_high": -also["excess_low"],
                    "exclusive_p_value": also["p_value"],
                    "n_samples": kept["n_samples"],
                    **theory,
                }
            )
    return pl.DataFrame(rows), pl.DataFrame(per_seed)


def graded_claims(per_seed, settings) -> list[dict]:
    """The trend claims: the preserved share rises with f (per kind), the gain rises with f."""
    import polars as pl

    experiments = list(settings["series"])
    rows = []
    for kind in KINDS:
        sub = per_seed.filter(pl.col("kind") == kind).sort(["shared_fraction", "seed"])
        rows.append(
            trend_row(
                sub["shared_fraction"].to_numpy(),
                sub["preserved_share"].to_numpy(),
                "preserved share rises with the shared fraction of planted parts",
                "Spearman ρ(f, preserved share Ω_pre in Ω_ft per seed)",
                kind,
                experiments,
                settings,
            )
        )
    gains = per_seed.filter(pl.col("kind") == KINDS[0]).sort(["shared_fraction", "seed"])
    rows.append(
        trend_row(
            gains["shared_fraction"].to_numpy(),
            gains["gain"].to_numpy(),
            "the transfer gain rises with the shared fraction of planted parts",
            "Spearman ρ(f, fine-tune − tuned scratch test accuracy per seed)",
            "accuracy",
            experiments,
            settings,
        )
    )
    return rows


def graded_stage(settings, run_summaries, data_dirs, knowledge_dir, out_dir, figure, dpi=120):
    """results/evidence/graded/graded.{parquet,csv}, graded_seeds.*, claim_rows.parquet and the
    figure, from the runs, the overlap tables under ``knowledge_dir`` and the manifests."""
    import polars as pl

    from transferscope.data import read_manifest
    from transferscope.knowledge.aggregate import write_table
    from transferscope.knowledge.claims import write_claim_rows

    series_ = settings["series"]
    missing = sorted(set(series_) - set(data_dirs))
    if missing:
        raise ValueError(
            f"--data lacks experiment(s) {missing} of the series; pass experiment=data_dir pairs"
        )
    knowledge_dir = Path(knowledge_dir)
    overlap = pl.read_parquet(knowledge_dir / "overlap.parquet")
    samples = pl.read_parquet(knowledge_dir / "overlap_samples.parquet")
    manifests = {e: read_manifest(data_dirs[e]) for e in series_}
    for experiment, f in series_.items():
        recorded = manifests[experiment]["params"].get("shared_fraction")
        if recorded is None or not np.isclose(float(recorded), f):
            raise ValueError(
                f"{data_dirs[experiment]}: dataset of experiment '{experiment}' was made with "
                f"shared_fraction {recorded!r}, the config says {f}; rebuild it "
                f"(snakemake --forcerun {data_dirs[experiment]})"
            )
    accuracies = _final_accuracies(run_summaries, set(series_))
    table, per_seed = graded_table(overlap, samples, accuracies, manifests, settings)
    levels = {}
    for kind in KINDS:
        sub = per_seed.filter(pl.col("kind") == kind)
        for column in ("preserved_share", "exclusive_share", "gain"):
            test = trend_test(sub["shared_fraction"].to_numpy(), sub[column].to_numpy(),
                              draws=settings["draws"])  # fmt: skip
            levels[(kind, column)] = test
    out_dir = Path(out_dir)
    write_table(table, out_dir / "graded.parquet")
    write_table(per_seed, out_dir / "graded_seeds.parquet")
    trends = pl.DataFrame(
        [{"kind": k, "value": c, **t} for (k, c), t in levels.items()],
        schema={"kind": pl.String, "value": pl.String, "rho": pl.Float64, "p_value": pl.Float64,
                "p_levels": pl.Float64, "n": pl.Int64},
    )  # fmt: skip
    write_table(trends, out_dir / "graded_trends.parquet")
    write_claim_rows(graded_claims(per_seed, settings), out_dir / "claim_rows.parquet")
    plot_graded(table, per_seed, figure, dpi)
    from transferscope.io import write_json

    write_json(out_dir / "settings.json", json.loads(json.dumps(settings)))


# ------------------------------------------------------------------------------- the figure


def plot_graded(table, per_seed, out, dpi=120) -> None:
    """Three panels against f: fine-tune and scratch accuracy with the gain; the preserved and
    exclusive shares (AND and OR) beside their random nulls; the deep-linear analogue (feature
    overlap cos²θ and the fine-tuning transferability) beside the measured gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import polars as pl

    from transferscope.figures import REGIME_COLORS, save_figure

    first = table.filter(pl.col("kind") == KINDS[0]).sort("shared_fraction")
    f = first["shared_fraction"].to_numpy()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for regime in ("finetune", "scratch"):
        mean = first[f"{regime}_accuracy"].to_numpy()
        err = [mean - first[f"{regime}_low"].to_numpy(), first[f"{regime}_high"].to_numpy() - mean]
        ax.errorbar(f, mean, yerr=err, marker="o", capsize=3, label=regime,
                    color=REGIME_COLORS.get(regime))  # fmt: skip
    gain = first["gain"].to_numpy()
    ax.errorbar(f, gain, yerr=[gain - first["gain_low"].to_numpy(),
                               first["gain_high"].to_numpy() - gain],
                marker="s", capsize=3, color="black", label="gain (fine-tune − scratch)")  # fmt: skip
    ax.axhline(0, color="grey", lw=0.6)
    ax.set(xlabel="shared fraction f of planted parts", ylabel="target test accuracy",
           title="accuracy and transfer gain (mean, bootstrap CI over seeds)")  # fmt: skip
    ax.legend(fontsize=8)
    ax = axes[1]
    styles = {"and": "-", "or": "--"}
    for kind in KINDS:
        sub = table.filter(pl.col("kind") == kind).sort("shared_fraction")
        for name, color in (("preserved", "#2ca02c"), ("exclusive", "#9467bd")):
            ax.plot(f, sub[f"{name}_share"].to_numpy(), styles[kind], marker="o", color=color,
                    label=f"{name} ({kind.upper()})")  # fmt: skip
            ax.plot(f, sub[f"{name}_null"].to_numpy(), styles[kind], color=color, alpha=0.35,
                    lw=1, label=f"{name} random null ({kind.upper()})")  # fmt: skip
    dots = per_seed.filter(pl.col("kind") == "and")
    ax.scatter(dots["shared_fraction"], dots["preserved_share"], s=10, color="#2ca02c", alpha=0.5)
    ax.set(xlabel="shared fraction f", ylabel="share", ylim=(0, 1),
           title="preserved and exclusive shares (dots: AND per seed)")  # fmt: skip
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.plot(f, first["theory_feature_overlap"].to_numpy(), marker="o", color="#1f77b4",
            label="feature overlap cos²θ (theory)")  # fmt: skip
    ax.plot(f, first["theory_finetune_transferability"].to_numpy(), marker="^", color="#ff7f0e",
            label=f"T_ft (theory, γ = {first['theory_gamma'][0]:g})")  # fmt: skip
    ax.plot(f, gain, marker="s", color="black", label="measured gain")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set(xlabel="shared fraction f", title="deep-linear analogue beside the measured gain")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, dpi)
