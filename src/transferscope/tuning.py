"""Honest baselines: one lr × weight-decay search per (experiment, regime) on a validation split.

Fine-tuning and training from scratch get the identical search (the same lr factors, weight
decays, epochs, split and seed; docs/references.md §4, Kornblith et al. 2019): each grid point is
an ordinary training run (``transferscope.training.train_run``) whose settings carry
``validation``, so it trains on the kept part of the target training set and reports accuracy
on the held-out part in place of the test set; the test set is never looked at. The choice (best
final-epoch validation accuracy, ties to the smaller lr, then the smaller weight decay) and the
whole table go to one JSON file; every seed's final run then takes its lr and weight decay from
it (``transferscope train --tuned``).
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from pathlib import Path
from typing import Any

from transferscope.config import ConfigError, run_settings, schema_defaults, training_settings

TUNED_REGIMES = ("finetune", "scratch")


def tuning_options(config: dict[str, Any]) -> dict[str, Any]:
    """The ``tuning`` block with the schema's defaults filled in; a bad grid value stops here
    with a message naming the key (the CLI reads configs the schema has not seen)."""
    options = {**schema_defaults("tuning"), **config.get("tuning", {})}
    for key, minimum, strict in (("lr_factors", 0, True), ("weight_decay", 0, False)):
        values = options[key]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"tuning.{key} must be a non-empty list, got {values!r}")
        for i, value in enumerate(values):
            bad = not isinstance(value, int | float) or isinstance(value, bool)
            bad = bad or not math.isfinite(value) or value < minimum or (strict and value == 0)
            if bad:
                need = "> 0" if strict else ">= 0"
                raise ConfigError(f"tuning.{key}[{i}] = {value!r}: must be a finite number {need}")
        if len(set(values)) != len(values):
            raise ConfigError(f"tuning.{key} repeats a value: {values}")
    if not 0 < options["validation_fraction"] < 1:
        raise ConfigError(
            f"tuning.validation_fraction = {options['validation_fraction']!r}: must be in (0, 1)"
        )
    return options


def tuning_enabled(config: dict[str, Any]) -> bool:
    return bool(tuning_options(config)["enabled"])


def search_epochs(config: dict[str, Any], experiment: str) -> int:
    """Epochs of every search run of ``experiment``: equal compute for both regimes."""
    epochs = tuning_options(config)["epochs"]
    if epochs is None:
        epochs = max(training_settings(config, experiment, r)["epochs"] for r in TUNED_REGIMES)
    return int(epochs)


def search_settings(config: dict[str, Any], experiment: str, regime: str) -> dict[str, Any]:
    """Everything one search depends on: what the ``tune`` rule passes to `transferscope tune`."""
    if regime not in TUNED_REGIMES:
        raise ConfigError(f"tuning: regime '{regime}' is not searched; allowed: {TUNED_REGIMES}")
    options = tuning_options(config)
    run = run_settings(config, experiment, regime, options["seed"])
    run["training"]["epochs"] = search_epochs(config, experiment)
    run["validation"] = {"fraction": options["validation_fraction"], "seed": options["seed"]}
    return {
        "run": run,
        "lr_factors": list(options["lr_factors"]),
        "weight_decay": list(options["weight_decay"]),
    }


def validation_indices(y, fraction: float, seed: int):
    """(kept, held-out) row indices of a training set, stratified: of every class with at least
    two rows, round(fraction · n) rows (at least one, never all) go to validation, drawn by a
    generator seeded with ``seed`` alone, so the split is the same for every regime and run.
    Returns two index tensors (kept, held out)."""
    import numpy as np
    import torch

    labels = np.asarray(y)
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            continue  # one sample cannot be both trained on and validated
        count = min(len(rows) - 1, max(1, round(fraction * len(rows))))
        held.append(rng.permutation(rows)[:count])
    val = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), val)
    return torch.as_tensor(kept, dtype=torch.long), torch.as_tensor(val, dtype=torch.long)


def holdout_task(data, fraction: float, seed: int):
    """The task with its training set split: train on the kept rows, report the held-out rows
    as its test set (a search run never sees the real test set)."""
    from transferscope.training import TaskData

    kept, val = validation_indices(data.train_y, fraction, seed)
    if len(val) == 0:
        raise ConfigError(
            "tuning.validation_fraction: no class has two training samples to split; "
            "tuning needs a larger target training set"
        )

    def rows(inputs: dict, index) -> dict:
        return {name: tensor[index] for name, tensor in inputs.items()}

    return TaskData(
        rows(data.train_inputs, kept),
        data.train_y[kept],
        rows(data.train_inputs, val),
        data.train_y[val],
        data.classes,
        data.in_chans,
    )


def search(
    settings: dict[str, Any],
    data_dir: str | Path,
    out: str | Path,
    table: str | Path,
    init_checkpoint: str | Path | None = None,
    threads: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train every grid point, write the choice and the table to ``out`` (JSON) and ``table``
    (CSV); returns the choice. Each grid point's run lives in a work folder beside ``out`` until
    its scores are in the table (its checkpoints are not needed after that)."""
    import polars as pl

    from transferscope.io import atomic_path, write_json
    from transferscope.training import TrainingDiverged, train_run

    out = Path(out)
    work = out.parent / f".{out.stem}-search"
    base = settings["run"]
    rows = []
    for factor in settings["lr_factors"]:
        for decay in settings["weight_decay"]:
            run = copy.deepcopy(base)
            run["training"].update(lr=base["training"]["lr"] * factor, weight_decay=decay)
            row = {
                "experiment": base["experiment"],
                "regime": base["regime"],
                "lr_factor": factor,
                "lr": run["training"]["lr"],
                "weight_decay": decay,
                "epochs": run["training"]["epochs"],
            }
            tic = time.perf_counter()
            try:
                run_dir = train_run(
                    run,
                    data_dir,
                    work / f"lr{factor}_wd{decay}",
                    init_checkpoint,
                    threads,
                    progress,
                )
                final = _final_row(run_dir)
                shutil.rmtree(run_dir)  # its scores are in the table: one point on disk at a time
                row.update(
                    validation_accuracy=final["test_accuracy"],
                    validation_loss=final["test_loss"],
                    train_accuracy=final["train_accuracy"],
                    diverged=False,
                )
            except TrainingDiverged:  # a diverging setting is a result of the search, not a failure
                row.update(
                    validation_accuracy=math.nan,
                    validation_loss=math.nan,
                    train_accuracy=math.nan,
                    diverged=True,
                )
            row["seconds"] = time.perf_counter() - tic
            rows.append(row)
    best = best_point(rows, f"{base['experiment']}/{base['regime']}")
    for row in rows:
        row["chosen"] = row is best
    choice = {
        "experiment": base["experiment"],
        "regime": base["regime"],
        "lr": best["lr"],
        "weight_decay": best["weight_decay"],
        "lr_factor": best["lr_factor"],
        "validation_accuracy": best["validation_accuracy"],
        # a choice on the grid's edge says the grid may be too narrow
        "at_grid_edge": best["lr_factor"]
        in (min(settings["lr_factors"]), max(settings["lr_factors"])),
        "epochs": base["training"]["epochs"],
        "validation": base["validation"],
        "seed": base["seed"],
        "table": rows,
    }
    with atomic_path(table) as tmp:
        pl.DataFrame(rows).write_csv(tmp)
    write_json(out, choice)
    shutil.rmtree(work, ignore_errors=True)
    return choice


def _final_row(run_dir: Path) -> dict[str, float]:
    from transferscope.io import read_json

    return read_json(run_dir / "summary.json")["final"]


def best_point(rows: list[dict[str, Any]], what: str = "search") -> dict[str, Any]:
    """The row with the best validation accuracy; ties go to the smaller lr, then the smaller
    weight decay (the more conservative setting). Diverged rows never win."""
    usable = [r for r in rows if not r["diverged"] and math.isfinite(r["validation_accuracy"])]
    if not usable:
        raise RuntimeError(
            f"{what}: every grid point diverged; lower tuning.lr_factors or training.<regime>.lr"
        )
    return min(usable, key=lambda r: (-r["validation_accuracy"], r["lr"], r["weight_decay"]))


def tuned_settings(settings: dict[str, Any], choice: dict[str, Any]) -> dict[str, Any]:
    """A final run's settings with the search's lr and weight decay; the choice is recorded in
    them, so the run's settings.json says where its values came from and a new choice reruns it."""
    where = (settings["experiment"], settings["regime"])
    if (choice["experiment"], choice["regime"]) != where:
        raise ValueError(
            f"--tuned holds the choice of {choice['experiment']}/{choice['regime']}, "
            f"not of {where[0]}/{where[1]}"
        )
    tuned = copy.deepcopy(settings)
    tuned["training"].update(lr=choice["lr"], weight_decay=choice["weight_decay"])
    tuned["tuned"] = {
        key: choice[key]
        for key in ("lr", "weight_decay", "lr_factor", "validation_accuracy", "epochs", "seed")
    }
    return tuned
