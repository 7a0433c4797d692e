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
    within = np.array([(s & ~reads) == 0 for s in range(n_subsets)])
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
