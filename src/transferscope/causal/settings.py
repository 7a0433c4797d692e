"""What the causal test in training runs, resolved from config ``causal_training``: experiments,
arms, strengths, seeds, each run's settings and directory, the stage's settings and targets.

Imports only the standard library and ``transferscope.config``/``workflow`` at import time: the
Snakefile imports it. A run ``runs/<exp>/finetune-<arm><strength>/seed<N>/`` is the regular
fine-tune of that seed (same init, batches and tuned settings) plus the penalty of its arm at
λ = strength; strength 0 is the regular ``finetune`` run itself.
"""

from __future__ import annotations

import json
import re
from typing import Any

from transferscope.config import ConfigError, block_settings, epochs, run_settings
from transferscope.workflow import evidence_dir, run_summary

COMPONENT = "causal_training"
ARMS = ("protect", "suppress", "random")
# the extraction's settings that the penalty uses (players, baseline, salience)
PENALTY_INTERACTION_KEYS = ("grid", "tau", "baseline", "max_players")
TABLES = ("dose_response", "causal_runs")
FIGURE = "results/figures/dose_response.png"


def params(config: dict[str, Any]) -> dict[str, Any]:
    """The ``causal_training`` block with the schema's defaults filled in."""
    return block_settings(config, COMPONENT)


def enabled(config: dict[str, Any]) -> bool:
    return bool(params(config)["enabled"])


def is_image_experiment(config: dict[str, Any], experiment: str) -> bool:
    spec = config["experiments"][experiment]
    return config["models"][spec["model"]]["source"] == "timm"


def experiments(config: dict[str, Any]) -> list[str]:
    chosen = params(config)["experiments"]
    if chosen is None:
        return [e for e in config["experiments"] if is_image_experiment(config, e)]
    return list(chosen)


def seeds(config: dict[str, Any]) -> list[int]:
    chosen = params(config)["seeds"]
    return [int(s) for s in (config["seeds"] if chosen is None else chosen)]


def strength_label(strength: float) -> str:
    """λ as it appears in a run directory's name: 0.1, 1, 10, 1e-05."""
    return f"{float(strength):g}"


def variant(arm: str, strength: float | str) -> str:
    label = strength if isinstance(strength, str) else strength_label(strength)
    return f"finetune-{arm}{label}"


VARIANT = re.compile(r"^finetune-(protect|suppress|random)([0-9.e+-]+)$")


def parse_variant(name: str) -> tuple[str, str] | None:
    """(arm, strength label) of a causal run directory's name, or None."""
    match = VARIANT.match(name)
    return (match.group(1), match.group(2)) if match else None


def check(config: dict[str, Any], source: str = "config") -> None:
    """An enabled block whose runs cannot run stops here, naming the key, before any job."""
    if not enabled(config):
        return
    p, key = params(config), f"{source}: {COMPONENT}"
    names = experiments(config)
    if not names:
        raise ConfigError(
            f"{key}.experiments: no image experiment to run the causal test on; add one under "
            "experiments: or set causal_training.enabled: false"
        )
    for exp in names:
        if exp not in config["experiments"]:
            raise ConfigError(
                f"{key}.experiments: '{exp}' is not a configured experiment; allowed: "
                f"{sorted(config['experiments'])}"
            )
        spec = config["experiments"][exp]
        model = config["models"][spec["model"]]
        if model["source"] != "timm":
            raise ConfigError(
                f"{key}.experiments: '{exp}' is a text experiment; the causal penalty is defined "
                "on image players (grid patches): remove it from causal_training.experiments"
            )
        if spec["dataset"] == "cub":
            raise ConfigError(
                f"{key}.experiments: '{exp}' uses per-image part players (cub); the causal "
                "penalty takes the patch grid only: remove it from causal_training.experiments"
            )
        if epochs(config, exp, "pretrain") == 0 and not model.get("pretrained"):
            raise ConfigError(
                f"{key}.experiments: '{exp}' has no pre-trained model to protect or suppress "
                f"(training.pretrain.epochs = 0 and models.{spec['model']}.pretrained is false): "
                "remove it from causal_training.experiments or pre-train it"
            )
    missing = sorted(set(seeds(config)) - {int(s) for s in config["seeds"]})
    if missing:
        raise ConfigError(
            f"{key}.seeds: {missing} are not among the configured seeds {config['seeds']}"
        )
    labels = [strength_label(s) for s in p["strengths"]]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{key}.strengths: {p['strengths']} name the same run twice")


def strength_of(config: dict[str, Any], label: str) -> float:
    for strength in params(config)["strengths"]:
        if strength_label(strength) == label:
            return float(strength)
    raise ConfigError(
        f"{COMPONENT}.strengths: no strength {label}; configured: {params(config)['strengths']}"
    )


def causal_run_settings(
    config: dict[str, Any], experiment: str, arm: str, strength: str, seed: int | str
) -> dict[str, Any]:
    """The regular fine-tune's settings of ``seed`` plus the ``causal`` block and the
    extraction settings the penalty reads (players, baseline, τ)."""
    if arm not in params(config)["arms"]:
        raise ConfigError(f"{COMPONENT}.arms: arm '{arm}' is not configured")
    p = params(config)
    settings = run_settings(config, experiment, "finetune", int(seed))
    settings["causal"] = {
        "arm": arm,
        "strength": strength_of(config, strength),
        "masks_per_step": p["masks_per_step"],
        "samples": p["samples"],
        "max_order": p["max_order"],
        "sets_per_image": p["sets_per_image"],
    }
    settings["interactions"] = {
        k: config["interactions"][k]
        for k in PENALTY_INTERACTION_KEYS
        if k in config["interactions"]
    }
    return settings


def settings_json(config, wildcards) -> str:
    return json.dumps(
        causal_run_settings(
            config, wildcards.experiment, wildcards.arm, wildcards.strength, wildcards.seed
        ),
        sort_keys=True,
    )


def reference_summary(experiment: str, seed: int | str) -> str:
    """P seen through the probe of the same seed (as the extraction measures P)."""
    return run_summary(experiment, "probe", seed)


def run_summaries(config: dict[str, Any], experiment: str) -> list[str]:
    """Every run the dose-response of one experiment reads: probe (P), finetune (strength 0) and
    each arm × strength, for the causal seeds."""
    p = params(config)
    out = []
    for seed in seeds(config):
        out += [run_summary(experiment, "probe", seed), run_summary(experiment, "finetune", seed)]
        out += [
            run_summary(experiment, variant(arm, s), seed)
            for arm in p["arms"]
            for s in p["strengths"]
        ]
    return out


def all_run_summaries(config: dict[str, Any]) -> list[str]:
    return [path for exp in experiments(config) for path in run_summaries(config, exp)]


def out_dir() -> str:
    return evidence_dir(COMPONENT)


def outputs() -> list[str]:
    """The stage's tables other than dose_response.parquet (the rule names that one)."""
    tables = [f"{out_dir()}/{t}.{ext}" for t in TABLES for ext in ("parquet", "csv")]
    tables.remove(f"{out_dir()}/dose_response.parquet")
    return tables + [f"{out_dir()}/claim_rows.{ext}" for ext in ("parquet", "csv")]


def targets(config: dict[str, Any]) -> list[str]:
    return [f"{out_dir()}/dose_response.parquet", FIGURE] if enabled(config) else []


def claim_rows(config: dict[str, Any]) -> list[str]:
    return [f"{out_dir()}/claim_rows.parquet"] if enabled(config) else []


def stage_settings(config: dict[str, Any]) -> dict[str, Any]:
    """What the dose-response stage depends on."""
    from transferscope.config import schema_default
    from transferscope.workflow import data_dir

    p = params(config)
    exps = {}
    for exp in experiments(config):
        spec = config["experiments"][exp]
        exps[exp] = {
            "experiment": exp,
            "dataset": spec["dataset"],
            "data": data_dir(spec["dataset"]),
            "model": dict(config["models"][spec["model"]], label=spec["model"]),
            "interactions": config["interactions"],
        }
    return {
        "experiments": exps,
        "arms": list(p["arms"]),
        "strengths": [float(s) for s in p["strengths"]],
        "seeds": seeds(config),
        "max_order": p["max_order"],
        "sets_per_image": p["sets_per_image"],
        "bootstrap": config["knowledge"]["bootstrap"],
        "confidence": config["knowledge"]["confidence"],
        "dpi": config.get("figures", {}).get("dpi", 120),
        "device": config.get("device", schema_default("device")),
    }


def stage_settings_json(config: dict[str, Any]) -> str:
    return json.dumps(stage_settings(config), sort_keys=True)
