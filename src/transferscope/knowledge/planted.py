"""Planted rules recovered: do a model's salient interactions contain the parts its class needs?

The ``shapes`` dataset plants one logical rule per class on a grid whose cells are the image
players (``transferscope.data.shapes``; the manifest's ``rules``). For a sample of an AND class
with present parts in cells P, the planted AND interaction is S* = P (index Σ_{i∈P} 2^i); a
model that reads the rule should encode it as a salient AND interaction.

    recall    = share of AND-class samples whose salient AND set contains S*
    precision = Σ_{S salient, |S| ≥ 2, S ⊆ R} |I(S)| / Σ_{S salient, |S| ≥ 2} |I(S)|

with R the cells that any rule of the task reads (present and absent parts): the strength share
of the salient higher-order AND terms that stay on rule cells. R is the task's, not the class's:
a label says that its own rule holds *and* the others do not, so a faithful model also reads the
cells of the other rules (a decoy part there changes the class).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from transferscope.interactions.transforms import subset_index, subset_sizes


def planted_and_recovery(
    i_and: np.ndarray, salient_and: np.ndarray, labels, rules: list[dict[str, Any]]
) -> dict[str, float | int]:
    """Recall and precision (module docstring) of the planted AND rules over samples.

    ``i_and``, ``salient_and``: (samples, 2^n) AND interactions and their salient flags;
    ``labels``: class index per sample; ``rules``: the task's rules from the manifest, in class
    order. Samples of other rule types are not counted; ``samples`` says how many were.
    """
    i_and, salient_and = np.asarray(i_and, dtype=float), np.asarray(salient_and, dtype=bool)
    n_subsets = i_and.shape[1]
    order = subset_sizes(n_subsets.bit_length() - 1).numpy()
    reads = subset_index(c for rule in rules for c in rule["players"])
    within = (np.arange(n_subsets) & ~reads) == 0
    found, inside, total, counted = 0, 0.0, 0.0, 0
    for row, label in enumerate(labels):
        rule = rules[int(label)]
        if rule["type"] != "and" or len(rule["present"]) < 2:
            continue
        counted += 1
        planted = subset_index(p["cell"] for p in rule["present"])
        found += bool(salient_and[row, planted])
        strong = salient_and[row] & (order >= 2)
        strength = np.abs(i_and[row]) * strong
        inside += float(strength[within].sum())
        total += float(strength.sum())
    return {
        "samples": counted,
        "recall": found / counted if counted else float("nan"),
        "precision": inside / total if total > 0 else float("nan"),
    }


def part_cells(rules: dict[str, Any]) -> dict[str, set[int]]:
    """Cells of the parts both tasks share and of those only the source task uses; a cell that
    holds parts of both kinds belongs to neither (its terms could not be told apart)."""
    shared = {p["cell"] for p in rules.get("shared", [])}
    source_only = {p["cell"] for p in rules.get("source_only", [])}
    return {"shared": shared - source_only, "source_only": source_only - shared}


def part_preservation(
    i_pre: np.ndarray,
    i_ft: np.ndarray,
    m_pre: np.ndarray,
    m_ft: np.ndarray,
    rules: dict[str, Any],
    sign_agreement: bool = True,
) -> dict[str, dict[str, float | int]]:
    """How often the pre-trained model's salient AND terms on a part's cell survive fine-tuning.

    For each part kind k ∈ {shared, source_only} (``part_cells``): the terms S ∈ Ω_pre (S ≠ ∅)
    that contain a cell of kind k, and the share of them that are also in Ω_ft (same sign when
    ``sign_agreement``): rate_k = |{S ∈ Ω_pre ∩ Ω_ft : S ∋ c_k}| / |{S ∈ Ω_pre : S ∋ c_k}|.
    Knowledge of shared parts should be preserved more often than knowledge of parts the
    target task never shows.
    """
    from transferscope.knowledge.metrics import shared

    preserved = shared(m_pre, m_ft, i_pre, i_ft, sign_agreement)
    n_subsets = i_pre.shape[-1]
    out = {}
    for kind, cells in part_cells(rules).items():
        touches = (np.arange(n_subsets) & subset_index(cells)) != 0
        terms = int((m_pre & touches).sum())
        kept = int((preserved & touches).sum())
        out[kind] = {"terms": terms, "preserved": kept, "rate": kept / terms if terms else np.nan}
    return out


def part_preservation_table(summaries, data_dirs: dict[str, str], sign_agreement: bool = True):
    """One row per (experiment, seed, part kind) for the experiments whose dataset plants rules
    (``rules`` with ``shared`` parts in its manifest): terms, preserved, rate. Empty otherwise."""
    import polars as pl

    from transferscope.data import read_manifest
    from transferscope.knowledge.caches import check_comparable, seed_caches

    rows = []
    for summary in summaries:
        seed = seed_caches(summary)
        data = data_dirs.get(seed.experiment)
        rules = read_manifest(data).get("rules") if data else None
        if not isinstance(rules, dict) or "shared" not in rules:
            continue
        pre, ft = seed.final("probe"), seed.final("finetune")
        check_comparable(pre, ft)
        rates = part_preservation(
            pre.I["and"], ft.I["and"], pre.salient["and"], ft.salient["and"], rules, sign_agreement
        )
        for kind, row in rates.items():
            rows.append({"experiment": seed.experiment, "seed": seed.seed, "parts": kind, **row})
    schema = {
        "experiment": pl.String,
        "seed": pl.Int64,
        "parts": pl.String,
        "terms": pl.Int64,
        "preserved": pl.Int64,
        "rate": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)
