"""Headline numbers (results/metrics.json) and the plain-sentence summary (results/summary.md),
generated from the knowledge tables — never typed by hand."""

from __future__ import annotations

from pathlib import Path

from transferscope.io import write_json, write_text


def _fmt(row: dict) -> str:
    return f"{row['mean']:.2f} [{row['low']:.2f}, {row['high']:.2f}]"


def headline(transfer, directness, convergence, links, accuracy) -> dict:
    """Nested dict: experiment -> metric -> {mean, low, high, n_seeds, n_samples}."""
    import polars as pl

    out: dict = {}
    overall = transfer.filter(pl.col("order") == 0)
    for row in overall.iter_rows(named=True):
        if row["metric"] in (
            "preserved_ratio",
            "new_ratio",
            "exclusive_share",
            "scratch_only_ratio",
        ):
            key = f"{row['metric']}_{row['kind']}"
            out.setdefault(row["experiment"], {})[key] = _entry(row)
    for row in directness.iter_rows(named=True):
        out.setdefault(row["experiment"], {})[f"directness_{row['regime']}"] = _entry(row)
    first = convergence.filter(pl.col("epoch") == 1)
    for row in first.iter_rows(named=True):
        if row["metric"] == "similarity":
            out[row["experiment"]][f"similarity_epoch1_{row['regime']}"] = _entry(row)
    for row in accuracy.iter_rows(named=True):
        out.setdefault(row["experiment"], {})[f"test_accuracy_{row['regime']}"] = {
            "mean": row["mean"],
            "std": row["std"],
            "n_seeds": row["n_seeds"],
        }
    out["links"] = {
        f"{r['link']} ({r['experiment']}, {r['regime']})": {
            k: r[k] for k in ("rho", "low", "high", "p_value", "n_pairs")
        }
        for r in links.iter_rows(named=True)
    }
    return out


def add_planted(numbers: dict, planted) -> None:
    """Per experiment with planted rules: the preservation rate of the pre-trained model's
    salient AND terms on shared and on source-only parts, pooled over seeds, with the per-seed
    rates and whether the direction (shared > source-only) holds in every seed."""
    import polars as pl

    for exp in planted["experiment"].unique(maintain_order=True).to_list():
        rows = planted.filter(pl.col("experiment") == exp)
        entry: dict = {}
        for kind in ("shared", "source_only"):
            part = rows.filter(pl.col("parts") == kind).sort("seed")
            terms, kept = int(part["terms"].sum()), int(part["preserved"].sum())
            entry[kind] = {
                "rate": kept / terms if terms else None,
                "terms": terms,
                "per_seed": part["rate"].fill_nan(None).to_list(),
            }
        pairs = zip(entry["shared"]["per_seed"], entry["source_only"]["per_seed"])
        entry["shared_higher_in_every_seed"] = all(
            a is not None and b is not None and a > b for a, b in pairs
        )
        numbers.setdefault(exp, {})["planted_part_preservation"] = entry


def add_faithfulness(numbers: dict, faithfulness) -> None:
    """Per experiment and final model: salient-only and full reconstruction errors, salient
    share and certified gap (mean and interval over seeds and samples)."""
    for row in faithfulness.iter_rows(named=True):
        entry = numbers.setdefault(row["experiment"], {}).setdefault("faithfulness", {})
        entry.setdefault(row["regime"], {})[row["metric"]] = _entry(row)


def _entry(row: dict) -> dict:
    return {k: row[k] for k in ("mean", "low", "high", "n_seeds", "n_samples")}


def final_accuracy(run_summaries):
    """Mean and std over seeds of each regime's final test accuracy."""
    import polars as pl

    from transferscope.figures import run_metrics

    runs = run_metrics([Path(s).parent for s in run_summaries])
    # sorted by seed: group_by's order is arbitrary, and the std's last digit depends on it
    last = (
        runs.group_by(["experiment", "regime", "seed"])
        .agg(pl.col("test_accuracy").sort_by("epoch").last())
        .sort(["experiment", "regime", "seed"])
    )
    return (
        last.group_by(["experiment", "regime"], maintain_order=True)
        .agg(
            mean=pl.col("test_accuracy").mean(),
            std=pl.col("test_accuracy").std().fill_null(0.0),
            n_seeds=pl.len(),
        )
        .sort(["experiment", "regime"])
    )


def write_reports(
    knowledge_dir,
    run_summaries,
    metrics_out,
    summary_out,
    confidence=0.95,
    claims=None,
    landing_out=None,
) -> None:
    import polars as pl

    knowledge_dir = Path(knowledge_dir)
    read = lambda name: pl.read_parquet(knowledge_dir / f"{name}.parquet")  # noqa: E731
    accuracy = final_accuracy(run_summaries)
    numbers = headline(
        read("transfer"), read("directness"), read("convergence"), read("links"), accuracy
    )
    planted = knowledge_dir / "planted.parquet"
    if planted.exists():
        add_planted(numbers, pl.read_parquet(planted))
    add_faithfulness(numbers, read("faithfulness"))
    add_nulls(numbers, read("overlap"))
    claims_table = learning = None
    if claims:
        claims_table = pl.read_parquet(claims)
        learning = pl.read_parquet(Path(claims).with_name("learning.parquet"))
        numbers["claims"] = claims_table.to_dicts()
        numbers["learning"] = learning.to_dicts()
    numbers["confidence"] = confidence
    write_json(metrics_out, numbers)
    if landing_out and claims_table is not None:
        write_landing_table(claims_table, landing_out)
    write_text(summary_out, summary_text(numbers, accuracy, claims_table, learning, confidence))


# the overlap comparisons shown beside the headline shares: metric -> (comparison, 1 − share?)
SHOWN_NULLS = {
    "preserved_ratio": ("preserved", False),
    "new_ratio": ("preserved_of_ft", True),
    "exclusive_share": ("also_in_scratch", True),
    "scratch_only_ratio": ("scratch_in_ft", True),
}


def add_nulls(numbers: dict, overlap) -> None:
    """Beside each headline share, its random-overlap null (same sizes per order), the excess
    over it with its interval, and its p-value; '1 − share' metrics get 1 − the share's null."""
    import polars as pl

    pooled = overlap.filter(pl.col("orders") == "all")
    for row in pooled.iter_rows(named=True):
        for metric, (comparison, complement) in SHOWN_NULLS.items():
            if row["comparison"] != comparison:
                continue
            entry = numbers.get(row["experiment"], {}).get(f"{metric}_{row['kind']}")
            if entry is None:
                continue
            sign = -1 if complement else 1
            bounds = sorted((sign * row["excess_low"], sign * row["excess_high"]))
            entry["null_random"] = 1 - row["null"] if complement else row["null"]
            entry["excess_over_random"] = {
                "mean": sign * row["excess"],
                "low": bounds[0],
                "high": bounds[1],
                "p_value": row["p_value"],
            }
    runs = overlap.filter(
        (pl.col("orders") == "all") & pl.col("comparison").is_in(["pre_in_scratch",
                                                                  "finetune_runs",
                                                                  "scratch_runs"])
    )  # fmt: skip
    for row in runs.iter_rows(named=True):
        target = numbers.setdefault(row["experiment"], {}).setdefault("independent_runs", {})
        target[f"{row['comparison']}_{row['kind']}"] = {
            "share": row["share"],
            "null_random": row["null"],
        }


def _by_experiment(numbers: dict, key: str) -> dict:
    """{experiment: numbers[experiment][key]} for the experiments that have ``key``."""
    return {e: v[key] for e, v in numbers.items() if isinstance(v, dict) and key in v}


def _regime_label(regime: str) -> str:
    # pre-training is scored on its own (source) task; every other regime on the target task
    return "pretrain (source task)" if regime == "pretrain" else regime


VERDICT_MARK = {
    "supported": "supported",
    "contradicted": "**contradicted**",
    "not distinguishable from the null": "not distinguishable from the null",
    "not testable": "not testable",
}


def _num(x, digits=2) -> str:
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"


CLAIMS_COLUMNS = (
    "study", "claim", "experiment", "kind", "observed", "null", "excess [interval]", "p (Holm)",
    "verdict",
)  # fmt: skip


def tested_claims_rows(claims) -> list[tuple[str, ...]]:
    """The tested claims as formatted cells (CLAIMS_COLUMNS), for the summary and the report."""
    import polars as pl

    rows = []
    for r in claims.filter(pl.col("verdict") != "not testable").iter_rows(named=True):
        interval = f" [{_num(r['low'])}, {_num(r['high'])}]" if r["low"] == r["low"] else ""
        rows.append((
            r["study"], r["claim"], r["experiment"], r["kind"], _num(r["observed"]),
            f"{_num(r['null'])} ({r['null_name']})", f"{_num(r['excess'])}{interval}",
            _num(r["p_adjusted"], 3), r["verdict"],
        ))  # fmt: skip
    return rows


def write_landing_table(claims, path) -> None:
    """The tested claims as CSV: the report's landing page shows it (report/workflow.rst)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CLAIMS_COLUMNS)
    writer.writerows(tested_claims_rows(claims))
    write_text(path, buffer.getvalue())


def claims_lines(claims, confidence: float) -> list[str]:
    """The claims table as Markdown: tested rows first, then the withheld ones with reasons."""
    import polars as pl

    lines = ["| " + " | ".join(CLAIMS_COLUMNS) + " |", "|" + "---|" * len(CLAIMS_COLUMNS)]
    for row in tested_claims_rows(claims):
        *cells, verdict = row
        lines.append("| " + " | ".join([*cells, VERDICT_MARK[verdict]]) + " |")
    withheld = claims.filter(pl.col("verdict") == "not testable")
    if withheld.height:
        lines += ["", "Not tested (the comparison would be meaningless in this run):", ""]
        seen = set()
        for r in withheld.iter_rows(named=True):
            key = (r["claim"], r["experiment"], r["reason"])
            if key not in seen:
                seen.add(key)
                shown = (
                    f" (observed {_num(r['observed'])} vs {_num(r['null'])}, {r['null_name']})"
                    if r["observed"] == r["observed"]
                    else ""
                )
                lines.append(f"- {r['claim']} — {r['experiment']}{shown}: {r['reason']}.")
    counts = {v: int((claims["verdict"] == v).sum()) for v in VERDICT_MARK}
    lines += [
        "",
        "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ". "
        f"A claim is supported when its Holm-adjusted p-value is below "
        f"{1 - confidence:.2g} and its {confidence:.0%} interval excludes the null on the "
        "predicted side (`transferscope.knowledge.claims.verdict`).",
    ]
    return lines


def summary_text(numbers: dict, accuracy, claims=None, learning=None, confidence=0.95) -> str:
    lines = [
        "# transferscope: summary of this run",
        "",
        "Generated by `transferscope knowledge report` from results/knowledge/*.parquet and "
        f"results/claims.parquet; intervals are {confidence:.0%} bootstrap intervals over seeds "
        "and samples, and every share is shown beside what chance gives.",
        "",
    ]
    if claims is not None:
        lines += ["## Claims tested on this run", ""] + claims_lines(claims, confidence) + [""]
    lines += [
        "## Test accuracy (final epoch, mean ± std over seeds; target task except pretrain)",
        "",
        "A regime learned when its accuracy, pooled over seeds, is above the majority-class rate "
        "of its test set (one-sided binomial test).",
        "",
        "| experiment | regime | test accuracy | chance | learned | seeds |",
        "|---|---|---|---|---|---|",
    ]
    status = {}
    if learning is not None:
        status = {(r["experiment"], r["regime"]): r for r in learning.iter_rows(named=True)}
    for row in accuracy.iter_rows(named=True):
        s = status.get((row["experiment"], row["regime"]))
        if s and s["imported"]:
            lines.append(
                f"| {row['experiment']} | {_regime_label(row['regime'])} | n/a: imported "
                f"weights, no source-task training | | | {row['n_seeds']} |"
            )
            continue
        learned = "" if s is None else ("yes" if s["learned"] else "**did not learn**")
        chance = "" if s is None else f"{s['chance']:.3f}"
        lines.append(
            f"| {row['experiment']} | {_regime_label(row['regime'])} | "
            f"{row['mean']:.3f} ± {row['std']:.3f} | {chance} | {learned} | {row['n_seeds']} |"
        )
    lines += [
        "",
        "## What fine-tuning does with the pre-trained model's knowledge",
        "",
        "Each share is followed by (random: what salient sets of the same sizes per order "
        "placed at random give) and, where there is one, what a model that inherited nothing "
        "from the pre-trained model shares with it.",
        "",
    ]
    for exp, values in numbers.items():
        if not isinstance(values, dict) or "preserved_ratio_and" not in values:
            continue
        pr, ex = values["preserved_ratio_and"], values.get("exclusive_share_and")
        runs = values.get("independent_runs", {})
        scratch = runs.get("pre_in_scratch_and")
        lines.append(
            f"- **{exp}**: fine-tuning preserved {_fmt(pr)} of the pre-trained model's salient "
            f"AND interactions (random {_num(pr.get('null_random'))}"
            + (f"; the scratch model shares {_num(scratch['share'])}" if scratch else "")
            + f"; n = {pr['n_samples']} samples over {pr['n_seeds']} seeds)"
            + (
                f"; of the preserved ones, {_fmt(ex)} are not encoded by the scratch model "
                f"(random {_num(ex.get('null_random'))})"
                if ex
                else ""
            )
            + "."
        )
        ft_runs, sc_runs = runs.get("finetune_runs_and"), runs.get("scratch_runs_and")
        if ft_runs and sc_runs:
            lines.append(
                f"  Two independent runs share, of their salient AND interactions: fine-tuning "
                f"{_num(ft_runs['share'])} (random {_num(ft_runs['null_random'])}), scratch "
                f"{_num(sc_runs['share'])} (random {_num(sc_runs['null_random'])})."
            )
        if "directness_finetune" in values and "directness_scratch" in values:
            lines.append(
                f"  Directness (final salient set / all ever salient): fine-tune "
                f"{_fmt(values['directness_finetune'])}, scratch {_fmt(values['directness_scratch'])}."
            )
        if "similarity_epoch1_finetune" in values and "similarity_epoch1_scratch" in values:
            lines.append(
                f"  Similarity to the final interactions after one epoch: fine-tune "
                f"{_fmt(values['similarity_epoch1_finetune'])}, scratch "
                f"{_fmt(values['similarity_epoch1_scratch'])}."
            )
    planted = _by_experiment(numbers, "planted_part_preservation")
    if planted:
        lines += ["", "## Planted parts (shapes): is shared knowledge preserved more often?", ""]
    for exp, entry in planted.items():
        shown = {k: "n/a" if v["rate"] is None else f"{v['rate']:.2f}"
                 for k, v in entry.items() if isinstance(v, dict)}  # fmt: skip
        lines.append(
            f"- **{exp}**: the pre-trained model's salient AND interactions on parts both tasks "
            f"share were preserved at a rate of {shown['shared']} "
            f"({entry['shared']['terms']} terms), those on source-only parts at "
            f"{shown['source_only']} ({entry['source_only']['terms']} terms); shared higher in "
            f"every seed: {'yes' if entry['shared_higher_in_every_seed'] else 'no'} (its test "
            "against label-exchangeable parts is in the claims table)."
        )
    faithful = _by_experiment(numbers, "faithfulness")
    if faithful:
        lines += [
            "",
            "## How much of each game the salient interactions explain",
            "",
            "Relative error ‖v − v_salient‖ / ‖v − v(∅)‖ over all 2^n masks against the model's "
            "own game v when only the salient AND and OR interactions are kept, per final model "
            "(mean [interval]); 'all': the same with every interaction kept, which leaves the "
            "decomposition's noise q, whose share ‖q‖ / ‖v − v(∅)‖ is 'noise'.",
            "",
        ]
    names = {"probe": "pre-trained", "finetune": "fine-tuned", "scratch": "scratch"}
    for exp, regimes in faithful.items():
        parts = [
            f"{names[r]} {_fmt(m['salient_error'])} with {m['salient_share']['mean']:.1%} of the "
            f"terms (all: {m['full_error']['mean']:.2f}; noise: {m['noise_share']['mean']:.2f})"
            for r, m in regimes.items()
        ]
        lines.append(f"- **{exp}**: " + "; ".join(parts) + ".")
    lines += [
        "",
        "## Links to performance (Spearman ρ, within experiment)",
        "",
        "Computed within each experiment so that differences between experiments cannot pass "
        "for a link; epoch-wise links are partial correlations given the epoch.",
        "",
    ]
    for name, link in numbers["links"].items():
        extra = (
            f"[{link['low']:.2f}, {link['high']:.2f}]"
            if link["low"] == link["low"]
            else f"permutation p = {_num(link.get('p_value'), 3)}"
        )
        lines.append(f"- {name}: ρ = {_num(link['rho'])} {extra}, {link['n_pairs']} pairs.")
    return "\n".join(lines) + "\n"
