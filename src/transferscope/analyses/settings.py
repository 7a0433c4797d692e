"""What the analyses run, resolved from the config: the `analyses:` mapping's defaults and
checks, grids, which experiments and seeds, the extra training runs (block-shuffled inputs,
fine-tuning from intermediate pre-training epochs), their paths and the workflow's targets.

Imports only the standard library and ``transferscope.config``/``workflow`` at import time:
the Snakefile imports it to resolve settings and targets.
"""

from __future__ import annotations

import copy
import json
import math
import re
from typing import Any

from transferscope.config import (
    ConfigError,
    epochs,
    pretrained_seed,
    pretrained_seeds,
    run_settings,
    schema_default,
)
from transferscope.workflow import run_dir as _run_dir
from transferscope.workflow import run_summary

# ----------------------------------------------------------------------------------------------
# configuration: defaults of the free-form `analyses:` mapping, resolved settings per stage

ANALYSES_DEFAULTS: dict[str, Any] = {
    "eval_samples": 256,  # fixed subset of the target test set (seeded draw, sorted)
    "lambdas": 25,  # interpolation grid: a count (linspace 0..1) or an explicit list with 0, 1
    "bn_samples": 1024,  # target training samples that recompute BatchNorm statistics (null: all)
    "cka": {"modules": None, "reduce": "auto", "max_features": 16384, "debiased": False},
    "criticality": {
        "modules": None,  # null: the backbone's stages (e.g. backbone.layer1..layer4)
        "alphas": 5,  # count (linspace 0..1) or list
        "sigmas": 4,  # count (geometric between sigma_range) or list
        "sigma_range": [0.001, 0.1],
        "draws": 2,
        "eps_rel": 0.01,
        "samples": 128,  # the first samples of the evaluation subset
    },
    "gallery": 16,  # samples shown in the P-T-wrong / RI-T-right gallery
    "ridge": 1.0,  # feature-overlap readout (bridge), relative to the mean feature variance
    "seeds": None,  # seeds of the extra runs and of criticality; null: the first config seed
    "block_sizes": [4, 8],  # feature reuse: block-shuffled fine-tune and scratch runs
    "pretrain_epochs": None,  # null: {1, E//2} below the final pre-training epoch E
    "reuse_accuracy": None,  # null: 0.9 × the unshuffled RI-T mean final test accuracy
    "experiments": None,  # image experiments to analyse; null: every image experiment
}
NESTED = ("cka", "criticality")
REDUCTIONS = ("auto", "flatten", "pool")

# outputs of the per-experiment stage (the rule lists the same names)
MODEL_TABLES = (
    "mistakes",
    "mistakes_samples",
    "cka",
    "distances",
    "barriers",
    "barrier_curves",
    "criticality",
    "criticality_grid",
    "spectra",
    "spectra_summary",
    "bridge",
)
MODEL_FIGURES = (
    "mistakes_gallery",
    "similarity",
    "barrier_curves",
    "criticality_heatmaps",
    "criticality_bars",
    "spectra",
)


def _config_error(key: str, message: str) -> ConfigError:
    return ConfigError(f"config: analyses.{key}: {message}")


def analyses_params(config: dict[str, Any]) -> dict[str, Any]:
    """The `analyses:` mapping with defaults filled in and checked (unknown keys are errors)."""
    user = config.get("analyses") or {}
    if not isinstance(user, dict):
        raise _config_error("", f"must be a mapping, got {type(user).__name__}")
    unknown = sorted(set(user) - set(ANALYSES_DEFAULTS))
    if unknown:
        raise _config_error(unknown[0], f"unknown key; allowed: {sorted(ANALYSES_DEFAULTS)}")
    params = copy.deepcopy(ANALYSES_DEFAULTS)
    for key, value in user.items():
        if key in NESTED:
            if not isinstance(value, dict):
                raise _config_error(key, f"must be a mapping, got {value!r}")
            bad = sorted(set(value) - set(ANALYSES_DEFAULTS[key]))
            if bad:
                raise _config_error(
                    f"{key}.{bad[0]}", f"unknown key; allowed: {sorted(ANALYSES_DEFAULTS[key])}"
                )
            params[key].update(copy.deepcopy(value))
        else:
            params[key] = copy.deepcopy(value)
    _check_params(params, config)
    return params


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_params(p: dict[str, Any], config: dict[str, Any]) -> None:
    if not _is_int(p["eval_samples"]) or p["eval_samples"] < 4:
        raise _config_error("eval_samples", f"must be an integer >= 4, got {p['eval_samples']!r}")
    lambda_grid(p["lambdas"])
    if p["bn_samples"] is not None and (not _is_int(p["bn_samples"]) or p["bn_samples"] < 1):
        raise _config_error(
            "bn_samples", f"must be null or an integer >= 1, got {p['bn_samples']!r}"
        )
    if p["cka"]["reduce"] not in REDUCTIONS:
        raise _config_error("cka.reduce", f"must be one of {list(REDUCTIONS)}")
    if not _is_int(p["cka"]["max_features"]) or p["cka"]["max_features"] < 1:
        raise _config_error("cka.max_features", "must be an integer >= 1")
    for key in ("modules",):
        for part in NESTED:
            mods = p[part][key]
            if mods is not None and (
                not isinstance(mods, list) or not mods or not all(isinstance(m, str) for m in mods)
            ):
                raise _config_error(f"{part}.{key}", "must be null or a non-empty list of names")
    crit = p["criticality"]
    alpha_grid(crit)
    sigma_grid(crit)
    if not _is_int(crit["draws"]) or crit["draws"] < 1:
        raise _config_error("criticality.draws", f"must be an integer >= 1, got {crit['draws']!r}")
    if not _is_int(crit["samples"]) or crit["samples"] < 1:
        raise _config_error("criticality.samples", "must be an integer >= 1")
    if not _is_int(p["gallery"]) or p["gallery"] < 1:
        raise _config_error("gallery", "must be an integer >= 1")
    if not isinstance(p["ridge"], (int, float)) or p["ridge"] < 0:
        raise _config_error("ridge", "must be a number >= 0")
    blocks = p["block_sizes"]
    if not isinstance(blocks, list) or not all(_is_int(b) and b >= 1 for b in blocks):
        raise _config_error("block_sizes", f"must be a list of integers >= 1, got {blocks!r}")
    ks = p["pretrain_epochs"]
    if ks is not None and (not isinstance(ks, list) or not all(_is_int(k) and k >= 0 for k in ks)):
        raise _config_error("pretrain_epochs", f"must be null or a list of epochs, got {ks!r}")
    if p["reuse_accuracy"] is not None and not (0 < float(p["reuse_accuracy"]) <= 1):
        raise _config_error("reuse_accuracy", "must be null or an accuracy in (0, 1]")
    chosen = p["experiments"]
    if chosen is not None:
        bad = [e for e in chosen if e not in config["experiments"]]
        if not isinstance(chosen, list) or bad:
            raise _config_error(
                "experiments",
                f"must be null or a list of configured experiments; {bad or chosen!r} are not "
                f"(allowed: {sorted(config['experiments'])})",
            )
    seeds = p["seeds"]
    if seeds is not None:
        if not isinstance(seeds, list) or not seeds:
            raise _config_error("seeds", f"must be null or a non-empty list, got {seeds!r}")
        missing = sorted(set(seeds) - set(config["seeds"]))
        if missing:
            raise _config_error(
                "seeds", f"{missing} are not among the configured seeds {config['seeds']}"
            )


def lambda_grid(spec) -> list[float]:
    """Interpolation grid: a count n >= 2 (linspace 0..1) or an explicit list with 0 and 1."""
    if _is_int(spec):
        if spec < 2:
            raise _config_error("lambdas", f"needs at least the 2 endpoints, got {spec}")
        return [i / (spec - 1) for i in range(spec)]
    if isinstance(spec, list) and spec and 0 in spec and 1 in spec:
        return sorted(float(v) for v in spec)
    raise _config_error(
        "lambdas", f"must be a count >= 2 or a list containing 0 and 1, got {spec!r}"
    )


def alpha_grid(crit: dict) -> list[float]:
    spec = crit["alphas"]
    if _is_int(spec) and spec >= 2:
        return [i / (spec - 1) for i in range(spec)]
    if isinstance(spec, list) and spec and all(0 <= float(a) <= 1 for a in spec):
        return [float(a) for a in spec]
    raise _config_error(
        "criticality.alphas", f"must be a count >= 2 or a list in [0, 1], got {spec!r}"
    )


def sigma_grid(crit: dict) -> list[float]:
    spec, bounds = crit["sigmas"], crit["sigma_range"]
    if isinstance(spec, list):
        if spec and all(float(s) > 0 for s in spec):
            return [float(s) for s in spec]
        raise _config_error("criticality.sigmas", f"noise scales must be > 0, got {spec!r}")
    if not (isinstance(bounds, list) and len(bounds) == 2 and 0 < bounds[0] <= bounds[1]):
        raise _config_error(
            "criticality.sigma_range", f"must be [low, high] with 0 < low <= high, got {bounds!r}"
        )
    if not _is_int(spec) or spec < 1:
        raise _config_error("criticality.sigmas", f"must be a count >= 1 or a list, got {spec!r}")
    if spec == 1:
        return [float(bounds[1])]
    low, high = math.log(bounds[0]), math.log(bounds[1])
    return [math.exp(low + (high - low) * i / (spec - 1)) for i in range(spec)]


def is_image_experiment(config: dict[str, Any], experiment: str) -> bool:
    """timm models are the image classifiers; Hugging Face encoders are the text ones."""
    spec = config["experiments"][experiment]
    return config["models"][spec["model"]]["source"] == "timm"


def image_experiments(config: dict[str, Any]) -> list[str]:
    """The image experiments the analyses cover (``analyses.experiments``; null: all)."""
    chosen = (config.get("analyses") or {}).get("experiments")
    return [
        e
        for e in config["experiments"]
        if is_image_experiment(config, e) and (chosen is None or e in chosen)
    ]


def skipped_experiments(config: dict[str, Any]) -> dict[str, str]:
    """Experiments the analyses leave out, with the reason."""
    chosen = set(image_experiments(config))
    return {
        e: "text experiment: the analyses (block shuffling, image galleries, CNN stages) are "
        "defined for the image experiments only"
        if not is_image_experiment(config, e)
        else "not in analyses.experiments"
        for e in config["experiments"]
        if e not in chosen
    }


def experiment_pattern(config: dict[str, Any]) -> str:
    """A wildcard constraint matching exactly the image experiments (nothing if there are none)."""
    names = image_experiments(config)
    return "|".join(re.escape(n) for n in names) if names else r"(?!x)x"


def analysis_seeds(config: dict[str, Any]) -> list[int]:
    """Seeds of the extra training runs and of module criticality (default: the first seed)."""
    seeds = analyses_params(config)["seeds"]
    return [int(s) for s in (seeds if seeds is not None else config["seeds"][:1])]


def pretrain_epochs(config: dict[str, Any], experiment: str) -> list[int]:
    """Intermediate pre-training epochs k (0 <= k < E) that get a finetune-from<k> run."""
    final = epochs(config, experiment, "pretrain")
    ks = analyses_params(config)["pretrain_epochs"]
    if ks is None:
        return sorted({k for k in (1, final // 2) if 1 <= k < final})
    if final == 0:
        return []  # imported weights: there are no intermediate checkpoints (stated in outputs)
    bad = [k for k in ks if not 0 <= k < final]
    if bad:
        raise _config_error(
            "pretrain_epochs",
            f"{bad} are not intermediate checkpoints of experiment {experiment!r}, whose "
            f"pre-training has epochs 0..{final} (epoch {final} is the regular finetune run); "
            f"use epochs below {final}",
        )
    return sorted(set(ks))


def analysis_settings(config: dict[str, Any], experiment: str, part: str = "models") -> dict:
    """What one per-experiment analysis job depends on (``part``: models, reuse, checkpoints)."""
    if experiment not in config["experiments"]:
        raise ConfigError(
            f"experiment '{experiment}' unknown; allowed: {sorted(config['experiments'])}"
        )
    params = analyses_params(config)
    spec = config["experiments"][experiment]
    base = {
        "experiment": experiment,
        "dataset": spec["dataset"],
        "model": dict(config["models"][spec["model"]], label=spec["model"]),
        "device": config.get("device", "auto"),
        "dpi": int(config.get("figures", {}).get("dpi", 120)),
        "analysis_seeds": analysis_seeds(config),
        # read back through config.pretrained_seed(settings, seed)
        "pretrained_seed": config.get("pretrained_seed", schema_default("pretrained_seed")),
    }
    if part == "models":
        keep = ("eval_samples", "lambdas", "bn_samples", "cka", "criticality", "gallery", "ridge")
        return dict(base, seeds=list(config["seeds"]), analyses={k: params[k] for k in keep})
    if part == "reuse":
        return dict(
            base,
            block_sizes=sorted(set(params["block_sizes"])),
            reuse_accuracy=params["reuse_accuracy"],
        )
    if part == "checkpoints":
        return dict(
            base,
            pretrain_epochs=pretrain_epochs(config, experiment),
            pretrain_final_epoch=epochs(config, experiment, "pretrain"),
        )
    raise ValueError(f"part must be models, reuse or checkpoints, got {part!r}")


def settings_json(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# extra training runs and paths


def shuffle_variant(regime: str, block: int | str) -> str:
    return f"{regime}-shuffle{int(block)}"


def from_variant(epoch: int | str) -> str:
    return f"finetune-from{int(epoch)}"


def shuffle_settings(
    config: dict[str, Any], experiment: str, regime: str, seed: int | str, block: int | str
) -> dict:
    """Settings of a fine-tune or scratch run on b × b block-shuffled images (same seeds,
    hyper-parameters and batch order as the unshuffled run; the trainer honours block_shuffle)."""
    if regime not in ("finetune", "scratch"):
        raise ValueError(f"block-shuffled runs exist for finetune and scratch, not {regime!r}")
    if not is_image_experiment(config, experiment):
        raise ConfigError(f"experiment {experiment!r} is a text experiment: no block shuffling")
    settings = run_settings(config, experiment, regime, int(seed))
    settings["block_shuffle"] = int(block)
    return settings


def from_settings(
    config: dict[str, Any], experiment: str, seed: int | str, epoch: int | str
) -> dict:
    """Settings of a fine-tune run initialised from epoch ``epoch`` of the pre-training run
    that ``seed`` starts from (``pretrained_seed``)."""
    final = epochs(config, experiment, "pretrain")
    if not 0 <= int(epoch) < final:
        raise ConfigError(
            f"finetune-from{epoch}: pre-training of {experiment!r} has epochs 0..{final}; "
            "intermediate checkpoints are 0..E-1 (set analyses.pretrain_epochs)"
        )
    settings = run_settings(config, experiment, "finetune", int(seed))
    settings["init_pretrain_epoch"] = int(epoch)  # recorded in settings.json; the --init file
    return settings


def pretrain_checkpoint(experiment: str, seed: int | str, epoch: int | str) -> str:
    """Epoch ``epoch`` of the pre-training run of seed ``seed`` (a pre-training seed)."""
    return f"{_run_dir(experiment, 'pretrain', seed)}/epoch_{int(epoch):03d}.safetensors"


def analyses_dir(experiment: str | None = None) -> str:
    return "results/analyses" if experiment is None else f"results/analyses/{experiment}"


def experiment_run_summaries(config: dict[str, Any], experiment: str) -> list[str]:
    """Every regime and seed of one experiment (pre-training: the runs the seeds start from):
    the inputs of the per-experiment analysis."""
    return [
        run_summary(experiment, regime, seed)
        for regime in ("pretrain", "probe", "finetune", "scratch")
        for seed in (pretrained_seeds(config) if regime == "pretrain" else config["seeds"])
    ]


def reuse_run_summaries(config: dict[str, Any], experiment: str) -> list[str]:
    blocks = sorted(set(analyses_params(config)["block_sizes"]))
    return [
        run_summary(experiment, variant, seed)
        for seed in analysis_seeds(config)
        for variant in (
            "finetune",
            "scratch",
            *(shuffle_variant(r, b) for b in blocks for r in ("finetune", "scratch")),
        )
    ]


def checkpoint_run_summaries(config: dict[str, Any], experiment: str) -> list[str]:
    ks = pretrain_epochs(config, experiment)
    seeds = analysis_seeds(config)
    parents = sorted({pretrained_seed(config, s) for s in seeds})
    return [run_summary(experiment, "pretrain", p) for p in parents] + [
        run_summary(experiment, variant, seed)
        for seed in seeds
        for variant in ("finetune", "scratch", *(from_variant(k) for k in ks))
    ]


def analyses_targets(config: dict[str, Any]) -> list[str]:
    """Final outputs of the analyses for `all_targets()` (empty without image experiments)."""
    exps = image_experiments(config)
    if not exps:
        return []
    targets = [f"{analyses_dir()}/{name}" for name in ("summary.json", "side_by_side.parquet")]
    for exp in exps:
        targets += [
            f"{analyses_dir(exp)}/summary.json",
            f"{analyses_dir(exp)}/feature_reuse.parquet",
        ]
        if pretrain_epochs(config, exp):
            targets.append(f"{analyses_dir(exp)}/intermediate.parquet")
    return targets


def rule_settings(config: dict[str, Any], wildcards, part: str = "models") -> str:
    """JSON settings of a per-experiment analysis rule (params of rules/analyses.smk)."""
    return settings_json(analysis_settings(config, wildcards.experiment, part))


def shuffle_settings_json(config: dict[str, Any], wildcards, regime: str) -> str:
    return settings_json(
        shuffle_settings(config, wildcards.experiment, regime, wildcards.seed, wildcards.block)
    )


def from_settings_json(config: dict[str, Any], wildcards) -> str:
    return settings_json(
        from_settings(config, wildcards.experiment, wildcards.seed, wildcards.epoch)
    )


def from_init(config: dict[str, Any], wildcards) -> str:
    """The intermediate checkpoint of the pre-training run that this seed starts from."""
    parent = pretrained_seed(config, wildcards.seed)
    return pretrain_checkpoint(wildcards.experiment, parent, wildcards.epoch)
