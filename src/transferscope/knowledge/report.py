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
        f"{r['link']} ({r['regime']})": {k: r[k] for k in ("rho", "low", "high", "n_pairs")}
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


def write_reports(knowledge_dir, run_summaries, metrics_out, summary_out) -> None:
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
    write_json(metrics_out, numbers)
    write_text(summary_out, summary_text(numbers, accuracy))


def _by_experiment(numbers: dict, key: str) -> dict:
    """{experiment: numbers[experiment][key]} for the experiments that have ``key``."""
    return {e: v[key] for e, v in numbers.items() if isinstance(v, dict) and key in v}


def _regime_label(regime: str) -> str:
    # pre-training is scored on its own (source) task; every other regime on the target task
    return "pretrain (source task)" if regime == "pretrain" else regime


def summary_text(numbers: dict, accuracy) -> str:
    lines = [
        "# transferscope: summary of this run",
        "",
        "Generated by `transferscope knowledge report` from results/knowledge/*.parquet; "
        "intervals are 95% bootstrap intervals over seeds and samples.",
        "",
        "## Test accuracy (final epoch, mean ± std over seeds; target task except pretrain)",
        "",
        "| experiment | regime | test accuracy | seeds |",
        "|---|---|---|---|",
    ]
    for row in accuracy.iter_rows(named=True):
        lines.append(
            f"| {row['experiment']} | {_regime_label(row['regime'])} | "
            f"{row['mean']:.3f} ± {row['std']:.3f} | "
            f"{row['n_seeds']} |"
        )
    lines += ["", "## What fine-tuning does with the pre-trained model's knowledge", ""]
    for exp, values in numbers.items():
        if exp == "links" or "preserved_ratio_and" not in values:
            continue
        pr, ex = values["preserved_ratio_and"], values.get("exclusive_share_and")
        lines.append(
            f"- **{exp}**: fine-tuning preserved {_fmt(pr)} of the pre-trained model's salient "
            f"AND interactions (n = {pr['n_samples']} samples over {pr['n_seeds']} seeds)"
            + (
                f"; of the preserved ones, a share of {_fmt(ex)} is not encoded by the scratch "
                f"model"
                if ex
                else ""
            )
            + "."
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
            f"every seed: {'yes' if entry['shared_higher_in_every_seed'] else 'no'}."
        )
    faithful = _by_experiment(numbers, "faithfulness")
    if faithful:
        lines += [
            "",
            "## How much of each game the salient interactions explain",
            "",
            "Relative error ‖v + q − v_salient‖ / ‖v − v(∅)‖ over all 2^n masks when only the "
            "salient AND and OR interactions are kept, per final model (mean [interval]); "
            "'all': the same error with every interaction kept, 0 up to rounding.",
            "",
        ]
    names = {"probe": "pre-trained", "finetune": "fine-tuned", "scratch": "scratch"}
    for exp, regimes in faithful.items():
        parts = [
            f"{names[r]} {_fmt(m['salient_error'])} with {m['salient_share']['mean']:.1%} of the "
            f"terms (all: {m['full_error']['mean']:.0e})"
            for r, m in regimes.items()
        ]
        lines.append(f"- **{exp}**: " + "; ".join(parts) + ".")
    lines += ["", "## Links to performance (Spearman ρ, bootstrap interval)", ""]
    for name, link in numbers["links"].items():
        lines.append(
            f"- {name}: ρ = {link['rho']:.2f} [{link['low']:.2f}, {link['high']:.2f}], "
            f"{link['n_pairs']} pairs."
        )
    return "\n".join(lines) + "\n"
