"""Controls for "pre-training": P with its knowledge removed, through the same pipeline as P.

Two controls stand in for the pre-trained model P (docs/references.md §4, Controls):

* ``permuted-weights``: P's final checkpoint with the entries of every learned floating tensor
  permuted within the tensor (per-tensor mean and norm kept exactly, learned structure
  destroyed); ``transferscope.controls.weights``.
* ``permuted-labels``: P trained again from the same initialisation, on the same source images,
  batches and steps, with the source training labels permuted once (no source-task knowledge
  to learn; Zhang et al. 2017, Maennel et al. 2020); ``transferscope.training`` honours the
  ``permuted_labels`` setting.

Each control gets a probe and a (tuned) fine-tune per seed, exactly as P does, an interaction
extraction of their final epochs on the same samples, and rows in the claims table
(``transferscope.controls.evidence``). This module holds what the workflow needs at parse time
(settings, paths, targets, config checks) and imports only the standard library and
``transferscope.config``/``workflow``.
"""

from __future__ import annotations

from typing import Any

from transferscope.config import (
    ConfigError,
    block_settings,
    epochs,
    interaction_settings,
    pretrained_seed,
    run_settings,
)
from transferscope.workflow import evidence_dir, run_summary

CONTROLS = ("permuted-weights", "permuted-labels")
KEYS = {"permuted-weights": "permuted_weights", "permuted-labels": "permuted_labels"}
COMPONENT = "controls"


def params(config: dict[str, Any]) -> dict[str, Any]:
    """The ``controls`` block with the schema's defaults filled in."""
    return block_settings(config, COMPONENT)


def enabled(config: dict[str, Any]) -> list[str]:
    """The controls the config turns on, in :data:`CONTROLS` order."""
    chosen = params(config)
    return [c for c in CONTROLS if chosen[KEYS[c]]]


def _is_image(config: dict[str, Any], experiment: str) -> bool:
    spec = config["experiments"][experiment]
    return config["models"][spec["model"]]["source"] == "timm"


def experiments(config: dict[str, Any]) -> list[str]:
    """Experiments that get the controls: ``controls.experiments``, or when that is empty every
    image experiment whose pre-training trains here (imported weights have no source labels to
    permute, and the default run keeps the text experiment's cost out)."""
    listed = params(config)["experiments"]
    if listed:
        return list(listed)
    return [
        e
        for e in config["experiments"]
        if _is_image(config, e) and epochs(config, e, "pretrain") > 0
    ]


def seeds(config: dict[str, Any]) -> list[int]:
    """Probe and fine-tune seeds of the control runs (``controls.seeds``, or every seed)."""
    chosen = params(config)["seeds"]
    return [int(s) for s in (config["seeds"] if chosen is None else chosen)]


def check(config: dict[str, Any], source: str = "config") -> None:
    """A control that is on but cannot run stops here, before any job, naming the key."""
    on = enabled(config)
    if not on:
        return
    chosen = params(config)
    for experiment in chosen["experiments"]:
        if experiment not in config["experiments"]:
            raise ConfigError(
                f"{source}: controls.experiments: '{experiment}' is not a configured experiment; "
                f"allowed: {sorted(config['experiments'])}"
            )
    if "permuted-labels" in on:
        for experiment in chosen["experiments"]:
            if epochs(config, experiment, "pretrain") == 0:
                raise ConfigError(
                    f"{source}: controls.permuted_labels: experiment {experiment} imports its "
                    "pre-trained weights (training.pretrain.epochs = 0), so there is no source "
                    "training with labels to permute; set controls.permuted_labels: false or "
                    f"leave {experiment} out of controls.experiments"
                )
    if not experiments(config):
        keys = " and ".join(f"controls.{KEYS[c]}" for c in on)
        raise ConfigError(
            f"{source}: {keys}: no experiment to run the controls on (controls.experiments is "
            "empty and no image experiment pre-trains here); name experiments in "
            "controls.experiments or turn the controls off"
        )
    if chosen["seeds"] is not None:
        missing = sorted(set(chosen["seeds"]) - set(config["seeds"]))
        if missing:
            raise ConfigError(
                f"{source}: controls.seeds: {missing} are not among the configured seeds "
                f"{config['seeds']}"
            )


# ------------------------------------------------------------------------------------ paths


def pretrain_variant(control: str) -> str:
    return f"pretrain-{control}"


def regime_variant(regime: str, control: str) -> str:
    """The run directory name of a control's probe or fine-tune (``probe-permuted-weights``)."""
    return f"{regime}-{control}"


def control_pretrained_summary(config: dict[str, Any], experiment: str, control: str, seed):
    """The control P that the probe and fine-tune of ``seed`` start from (of pretrained_seed)."""
    return run_summary(experiment, pretrain_variant(control), pretrained_seed(config, seed))


def interactions_summary(experiment: str, control: str, seed: int | str) -> str:
    return f"interactions/{experiment}/control-{control}/seed{seed}/summary.json"


def tables_dir() -> str:
    return evidence_dir(COMPONENT)


def claim_rows_path() -> str:
    return f"{tables_dir()}/claim_rows.parquet"


TABLES = ("claim_rows", "overlap", "overlap_samples", "accuracy")


def control_runs(config: dict[str, Any]) -> list[str]:
    """Every control run: each control P (of the pretrained_seed runs) and its probes and
    fine-tunes."""
    out = []
    for experiment in experiments(config):
        for control in enabled(config):
            parents = sorted({pretrained_seed(config, s) for s in seeds(config)})
            out += [run_summary(experiment, pretrain_variant(control), p) for p in parents]
            out += [
                run_summary(experiment, regime_variant(regime, control), seed)
                for regime in ("probe", "finetune")
                for seed in seeds(config)
            ]
    return out


def main_runs(config: dict[str, Any]) -> list[str]:
    """The runs of the real P that the controls are compared with (probe, fine-tune, scratch of
    the control seeds, and the pre-training runs they start from)."""
    out = []
    for experiment in experiments(config):
        parents = sorted({pretrained_seed(config, s) for s in seeds(config)})
        out += [run_summary(experiment, "pretrain", p) for p in parents]
        out += [
            run_summary(experiment, regime, seed)
            for regime in ("probe", "finetune", "scratch")
            for seed in seeds(config)
        ]
    return out


def interaction_summaries(config: dict[str, Any]) -> list[str]:
    return [
        interactions_summary(experiment, control, seed)
        for experiment in experiments(config)
        for control in enabled(config)
        for seed in seeds(config)
    ]


def interaction_pairs(config: dict[str, Any]) -> str:
    """``control=summary`` pairs for ``transferscope controls evidence --interactions``."""
    return " ".join(
        f"{control}={interactions_summary(experiment, control, seed)}"
        for experiment in experiments(config)
        for control in enabled(config)
        for seed in seeds(config)
    )


# --------------------------------------------------------------------------------- settings


def permute_weights_settings(config: dict[str, Any], experiment: str, seed: int | str) -> dict:
    """What the permuted-weights control of the pre-training run ``seed`` depends on."""
    settings = run_settings(config, experiment, "pretrain", int(seed))
    settings["control"] = "permuted-weights"
    settings["permutation_seed"] = params(config)["seed"]
    return settings


def permuted_labels_settings(config: dict[str, Any], experiment: str, seed: int | str) -> dict:
    """Pre-training settings of P, with the source training labels permuted (fixed seed)."""
    settings = run_settings(config, experiment, "pretrain", int(seed))
    settings["control"] = "permuted-labels"
    settings["permuted_labels"] = {"seed": params(config)["seed"]}
    return settings


def control_run_settings(
    config: dict[str, Any], experiment: str, regime: str, control: str, seed: int | str
) -> dict:
    """A control's probe or fine-tune: P's own settings (same seeds, so the same head
    initialisation and batch order), recorded with the control's name."""
    if control not in CONTROLS:
        raise ConfigError(f"control '{control}' unknown; allowed: {list(CONTROLS)}")
    settings = run_settings(config, experiment, regime, int(seed))
    settings["control"] = control
    return settings


def control_interaction_settings(
    config: dict[str, Any], experiment: str, control: str, seed: int | str
) -> dict:
    """The extraction of a control's probe and fine-tune: the main extraction's settings (so
    the caches are comparable with P's), final epochs of the two runs only."""
    settings = interaction_settings(config, experiment, int(seed))
    settings.update(control=control, regimes=["probe", "finetune"], epochs="final")
    return settings


def control_run_pairs(config: dict[str, Any]) -> str:
    """``control=summary`` pairs of every control run, for ``--control-runs``."""
    return " ".join(
        f"{control}={path}"
        for control in enabled(config)
        for path in control_runs(dict(config, controls={**params(config), **_only(control)}))
    )


def _only(control: str) -> dict[str, bool]:
    return {key: name == control for name, key in KEYS.items()}


def plan_jobs(config: dict[str, Any], exact: bool = True) -> list:
    """The control jobs with their cost (``transferscope.plan``'s model): a permuted-weights
    control costs a pass over the source set (BatchNorm statistics, evaluation); a
    permuted-labels control P a pre-training run; probe and fine-tune runs as P's; an
    extraction of two checkpoints per (experiment, control, seed); one evidence job."""
    import math

    from transferscope import plan

    on = enabled(config)
    if not on:
        return []
    out = []
    for experiment in experiments(config):
        parents = sorted({pretrained_seed(config, s) for s in seeds(config)})
        _, size, params_, forward = plan._model(config, experiment, "source", exact)
        for parent in parents:
            if "permuted-weights" in on:
                passes = 2 * size.train["source"] + size.test["source"]
                out.append(
                    plan.Job(
                        "control_permute_weights",
                        {"experiment": experiment, "seed": str(parent)},
                        flops=forward * passes,
                        batches=math.ceil(passes / plan.EVAL_BATCH),
                        write_bytes=params_ * 4,
                        mem_bytes=params_ * 4 * 3,
                    )
                )
            if "permuted-labels" in on:
                out.append(
                    plan._train_job(
                        config, experiment, "pretrain", parent, exact,
                        "control_pretrain_permuted_labels",
                    )
                )  # fmt: skip
        for _control in on:
            for seed in seeds(config):
                for regime in ("probe", "finetune"):
                    out.append(
                        plan._train_job(
                            config, experiment, regime, seed, exact, f"control_{regime}"
                        )
                    )
                main = plan._interactions_job(config, experiment, seed, exact)
                every = 1 + sum(epochs(config, experiment, r) + 1 for r in ("finetune", "scratch"))
                share = 2 / every  # the probe's and the fine-tune's final epochs
                out.append(
                    plan.Job(
                        "control_interactions",
                        main.wildcards,
                        gpu_capable=True,
                        flops=main.flops * share,
                        batches=math.ceil(main.batches * share),
                        write_bytes=int(main.write_bytes * share),
                        mem_bytes=main.mem_bytes,
                    )
                )
    out.append(plan.Job("controls_evidence", {}, start_s=60.0))
    return out
