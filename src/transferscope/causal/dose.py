"""The dose-response of the causal test in training: accuracy and preserved share per arm and λ.

For every causal run (``settings``) and the regular fine-tune of the same seed (λ = 0), on the
final checkpoint:

* accuracy: per target test item correct or not (argmax of the logits, eval mode);
* preserved share, a direct measure on the extraction's fixed test samples
  (``extract.prepare_game``): Ω_pre(x) = P's salient low-order AND sets, the ``sets_per_image``
  strongest, as the penalty picks them (P through the probe of the same seed; 1 ≤ |S| ≤
  max_order, |I(S)| > τ·max over those sets, every player outside S absent;
  ``interactions.penalty``), Ω_ft(x) the same of the fine-tuned model, and

      preserved(x) = |{S ∈ Ω_pre(x) ∩ Ω_ft(x): sign I_ft(S) = sign I_P(S)}| / |Ω_pre(x)|

  (NaN where Ω_pre(x) is empty), beside term_error(x) = ‖I_ft − I_P‖ / ‖I_P‖ and
  term_ratio(x) = ‖I_ft‖ / ‖I_P‖ over Ω_pre(x). It is not the cached AND-OR decomposition of
  the knowledge tables (those take all 2^n masks and the AND-OR split); it is the same quantity
  the penalty acts on.

Per (experiment, arm, λ): means with hierarchical bootstrap intervals over seeds and items
(``metrics.hierarchical_bootstrap_ci``). Claim rows (docs/references.md §4, causal test), per
experiment at the largest λ: the accuracy cost of suppressing Ω_pre minus the cost of
suppressing random sets of the same orders, i.e. per test item correct(random) −
correct(suppress), paired by seed and item; sign-flip p-value, direction +1.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)
CLAIM = (
    "suppressing inherited interactions costs more accuracy than suppressing random salient sets"
)


def _variant_of(summary: Path) -> str:
    return summary.parent.parent.name


@torch.inference_mode()
def _correct(model, x: torch.Tensor, y: torch.Tensor, device, batch: int = 256) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(y), batch):
        logits = model(x[i : i + batch].to(device)).float().cpu()
        out.append((logits.argmax(1) == y[i : i + batch]).numpy())
    return np.concatenate(out).astype(float)


def _shares(p_terms: torch.Tensor, p_salient, f_terms: torch.Tensor, f_salient) -> dict:
    """Per-sample preserved share, term error and term ratio over Ω_pre (module docstring)."""
    same = torch.sign(p_terms) == torch.sign(f_terms)
    kept = (p_salient & f_salient & same).sum(1).double()
    size = p_salient.sum(1).double()
    on = p_salient.double()
    p_norm = ((p_terms * on) ** 2).sum(1).sqrt()
    err = (((f_terms - p_terms) * on) ** 2).sum(1).sqrt()
    f_norm = ((f_terms * on) ** 2).sum(1).sqrt()
    nan = torch.full_like(size, float("nan"))
    return {
        "preserved": torch.where(size > 0, kept / size.clamp(min=1), nan).numpy(),
        "term_error": torch.where(p_norm > 0, err / p_norm.clamp(min=1e-300), nan).numpy(),
        "term_ratio": torch.where(p_norm > 0, f_norm / p_norm.clamp(min=1e-300), nan).numpy(),
    }


def measure_runs(settings: dict, runs: list[str]) -> list[dict]:
    """One record per run: experiment, variant, arm, strength, seed, per-item correctness and
    per-sample shares (module docstring)."""
    from transferscope import runtime
    from transferscope.causal.settings import parse_variant
    from transferscope.interactions.extract import interaction_params, prepare_game
    from transferscope.interactions.penalty import (
        ImagePlayers,
        low_order_subsets,
        reference_terms,
        salient_low_order,
    )
    from transferscope.io import read_json
    from transferscope.models import load_model
    from transferscope.training import load_task
    from transferscope.workflow import final_checkpoint

    device = runtime.resolve_device(settings.get("device", "auto"))
    by_exp: dict[str, dict] = {}
    for path in map(Path, runs):
        summary = read_json(path)
        exp = summary["experiment"]
        if exp not in settings["experiments"]:
            raise ValueError(f"{path}: experiment {exp} is not in the stage's settings")
        by_exp.setdefault(exp, {})[(_variant_of(path), int(summary["seed"]))] = path
    records = []
    for exp, found in sorted(by_exp.items()):
        spec = settings["experiments"][exp]
        params = interaction_params(spec)
        game = prepare_game(spec, params, spec["data"])
        images = ImagePlayers.from_grid(
            game.inputs["x"], game.labels, game.players, game.baseline
        ).to(device)
        subsets = low_order_subsets(images.n, int(settings["max_order"]))
        task = load_task(spec["data"], "target", spec["model"])
        tau, top_k = float(params["tau"]), settings.get("sets_per_image")

        def terms_of(
            summary_path: Path, images=images, subsets=subsets, task=task, tau=tau, top_k=top_k
        ):
            model, _ = load_model(final_checkpoint(summary_path), device)
            terms = reference_terms(model, images, subsets)
            correct = _correct(model, task.test_inputs["x"], task.test_y, device)
            return terms, salient_low_order(terms, tau, top_k), correct

        for seed in sorted({s for _, s in found}):
            if ("probe", seed) not in found:
                raise ValueError(f"{exp}/seed{seed}: the probe run (P) is not among --runs")
            p_terms, p_salient, p_correct = terms_of(found[("probe", seed)])
            for (name, s), path in sorted(found.items()):
                if s != seed or name == "probe":
                    continue
                parsed = ("finetune", "0") if name == "finetune" else parse_variant(name)
                if parsed is None:
                    raise ValueError(f"{path}: {name} is not a causal or finetune run")
                f_terms, f_salient, correct = terms_of(path)
                records.append(
                    {
                        "experiment": exp,
                        "variant": name,
                        "arm": parsed[0],
                        "strength": float(parsed[1]),
                        "seed": seed,
                        "correct": correct,
                        **_shares(p_terms, p_salient, f_terms, f_salient),
                        "omega_pre": float(p_salient.sum(1).double().mean()),
                    }
                )
                log.info(
                    "%s %s seed%d: accuracy %.3f, preserved %.3f",
                    exp,
                    name,
                    seed,
                    correct.mean(),
                    np.nanmean(records[-1]["preserved"]),
                )
    return records


def _ci(groups, settings) -> tuple[float, float, float, int]:
    from transferscope.knowledge.metrics import hierarchical_bootstrap_ci

    mean, low, high, n_seeds, _ = hierarchical_bootstrap_ci(
        groups, settings["bootstrap"], settings["confidence"]
    )
    return mean, low, high, n_seeds


def dose_table(records: list[dict], settings: dict):
    """Per (experiment, arm, λ): accuracy, preserved share, term error and ratio, with intervals
    over seeds and items; λ = 0 is the regular fine-tune (arm ``finetune``)."""
    import polars as pl

    rows = []
    keys = sorted({(r["experiment"], r["arm"], r["strength"]) for r in records})
    for exp, arm, strength in keys:
        group = [
            r for r in records if (r["experiment"], r["arm"], r["strength"]) == (exp, arm, strength)
        ]
        group.sort(key=lambda r: r["seed"])
        row = {"experiment": exp, "arm": arm, "strength": strength, "seeds": len(group)}
        for column in ("correct", "preserved", "term_error", "term_ratio"):
            name = "accuracy" if column == "correct" else column
            mean, low, high, _ = _ci([r[column] for r in group], settings)
            row.update({name: mean, f"{name}_low": low, f"{name}_high": high})
        row["omega_pre_mean_size"] = float(np.mean([r["omega_pre"] for r in group]))
        rows.append(row)
    return pl.DataFrame(rows)


def runs_table(records: list[dict]):
    import polars as pl

    return pl.DataFrame(
        [
            {
                "experiment": r["experiment"],
                "variant": r["variant"],
                "arm": r["arm"],
                "strength": r["strength"],
                "seed": r["seed"],
                "accuracy": float(r["correct"].mean()),
                "preserved": float(np.nanmean(r["preserved"]))
                if np.isfinite(r["preserved"]).any()
                else math.nan,
                "test_items": len(r["correct"]),
            }
            for r in records
        ]
    )


def claim_rows(records: list[dict], settings: dict) -> list[dict]:
    """Per experiment at the largest λ: correct(random) − correct(suppress) per test item,
    paired by seed (module docstring); a row with a reason when an arm is missing."""
    from transferscope.knowledge.nulls import sign_flip_p_value

    rows = []
    strongest = max(settings["strengths"])
    for exp in sorted({r["experiment"] for r in records}):
        pick = {
            (r["arm"], r["seed"]): r
            for r in records
            if r["experiment"] == exp and r["strength"] == strongest
        }
        seeds = sorted(
            {s for (a, s) in pick if a == "suppress"} & {s for (a, s) in pick if a == "random"}
        )
        base = {
            "study": "causal test in training",
            "claim": CLAIM,
            "experiment": exp,
            "kind": "and",
            "metric": f"target test accuracy lost under the suppress penalty at λ = {strongest:g}",
            "null_name": "the same penalty on random sets of the same orders",
            "direction": 1,
        }
        if len(seeds) < 2:
            rows.append(
                dict(base, reason="fewer than 2 seeds with both the suppress and random arm")
            )
            continue
        plain = {r["seed"]: r["correct"] for r in records
                 if r["experiment"] == exp and r["arm"] == "finetune"}  # fmt: skip
        groups = [pick[("random", s)]["correct"] - pick[("suppress", s)]["correct"] for s in seeds]
        mean, low, high, n = _ci(groups, settings)
        cost = {
            arm: float(np.mean([plain[s].mean() - pick[(arm, s)]["correct"].mean()
                                if s in plain else math.nan for s in seeds]))
            for arm in ("suppress", "random")
        }  # fmt: skip
        rows.append(
            dict(
                base,
                observed=cost["suppress"],
                null=cost["random"],
                excess=mean,
                low=low,
                high=high,
                p_value=sign_flip_p_value(groups),
                n=n,
            )
        )
    return rows


def figure(table, out, dpi: int = 120) -> None:
    """Accuracy (top) and preserved share (bottom) against λ per experiment; λ = 0 (the regular
    fine-tune) is the dashed line with its band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from transferscope.io import atomic_path

    exps = sorted(table["experiment"].unique().to_list()) or ["none"]
    fig, axes = plt.subplots(2, len(exps), figsize=(4.2 * len(exps), 6.4), squeeze=False)
    colours = {"protect": "tab:green", "suppress": "tab:red", "random": "tab:grey"}
    for col, exp in enumerate(exps):
        sub = table.filter(table["experiment"] == exp)
        for row, metric, label in ((0, "accuracy", "target test accuracy"),
                                   (1, "preserved", "preserved share of Ω_pre")):  # fmt: skip
            ax = axes[row][col]
            plain = sub.filter(sub["arm"] == "finetune")
            if plain.height:
                ax.axhline(plain[metric][0], color="k", ls="--", lw=1, label="finetune (λ = 0)")
                ax.axhspan(plain[f"{metric}_low"][0], plain[f"{metric}_high"][0],
                           color="k", alpha=0.08)  # fmt: skip
            for arm, colour in colours.items():
                a = sub.filter(sub["arm"] == arm).sort("strength")
                if not a.height:
                    continue
                y = a[metric].to_numpy()
                err = np.abs(np.vstack([y - a[f"{metric}_low"].to_numpy(),
                                        a[f"{metric}_high"].to_numpy() - y]))  # fmt: skip
                ax.errorbar(a["strength"].to_numpy(), y, yerr=err, marker="o", capsize=3,
                            color=colour, label=arm)  # fmt: skip
            ax.set_xscale("log")
            ax.set_xlabel("penalty strength λ")
            ax.set_ylabel(label)
            if row == 0:
                ax.set_title(exp)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def dose_response(settings: dict, runs: list[str], out_dir, figure_path) -> None:
    """The stage: results/evidence/causal_training/{dose_response,causal_runs}.{parquet,csv},
    claim_rows.parquet and the dose-response figure."""
    from transferscope.knowledge.aggregate import write_table
    from transferscope.knowledge.claims import write_claim_rows

    out_dir = Path(out_dir)
    records = measure_runs(settings, runs)
    table = dose_table(records, settings)
    write_table(table, out_dir / "dose_response.parquet")
    write_table(runs_table(records), out_dir / "causal_runs.parquet")
    write_claim_rows(claim_rows(records, settings), out_dir / "claim_rows.parquet")
    figure(table, figure_path, int(settings.get("dpi", 120)))
