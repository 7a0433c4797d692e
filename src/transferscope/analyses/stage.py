"""Workflow stages of the representation and landscape analyses (issues #8 and #9 item 6).

Names: P = pre-trained model, P-T = fine-tuned from P, RI = random initialisation (a scratch
run's epoch_000), RI-T = trained from RI (scratch). Every per-experiment stage works on the
runs ``runs/<exp>/<variant>/seed<N>/`` that the training rules write; this module only wires
the analysis library (cka, interpolation, criticality, distances, spectra, mistakes,
blockshuffle, figures) to them and writes tables (Parquet + CSV), PNGs and a summary.json,
every file atomically. Its helpers live beside it: ``runs`` (the finished runs given),
``pairwise`` (model pairs and the individual analyses), ``summaries`` (spectra table, theory
bridge, headline), ``model_figures``, ``reuse`` (feature reuse and intermediate checkpoints),
``comparison`` (across experiments) and ``outputs`` (JSON-safe values, tables, pyplot); the
names they define that this module used to hold are still importable from here.

Stages (one workflow rule each, `transferscope analyses <action>`):

``run_analyses``            (models) per image experiment: mistakes, CKA and weight distances,
                            interpolation barriers, module criticality, spectra, the theory
                            bridge (feature overlap of P's frozen features vs transferability).
``feature_reuse``           (reuse) accuracy and speed of P-T and RI-T on block-shuffled inputs.
``intermediate_checkpoints`` (checkpoints) fine-tuning from intermediate pre-training epochs.
``compare``                 (compare) CKA and barrier beside the interaction-based preserved
                            share, and the bridge table joined with it, over all experiments.

Which model is "P" where: P's weights (spectra) are the pre-training run's final checkpoint;
P's *features* on the target task come from the probe run's final checkpoint, whose backbone
is P's frozen backbone (BatchNorm statistics included) and whose head has the target's classes,
so it has P-T's architecture and can be compared with it tensor by tensor (its head is left
out of weight distances). θ⁰ of module criticality is the initial checkpoint of the run being
analysed: P's backbone (plus the fresh head) for P-T, RI for RI-T.

This module imports only the standard library at import time: the Snakefile imports it to
resolve settings and targets.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from transferscope.analyses.comparison import (
    _col,
    _spearman,
    bridge_figure,
    preserved_shares,
    side_by_side_figure,
    view_sentence,
    views_table,
)
from transferscope.analyses.model_figures import (
    criticality_figures,
    gallery_figure,
    similarity_figure,
)
from transferscope.analyses.outputs import _json_safe, _write_table
from transferscope.analyses.outputs import note_figure as note_figure
from transferscope.analyses.pairwise import (
    BARRIER_PAIR_TYPES,
    _check_modules,
    barrier_tables,
    default_modules,
    eval_subset,
    mistakes_tables,
    model_pairs,
    predictions,
    similarity_tables,
)
from transferscope.analyses.pairwise import PAIR_TYPES as PAIR_TYPES
from transferscope.analyses.pairwise import feature_reducer as feature_reducer
from transferscope.analyses.reuse import epochs_to_accuracy, intermediate_figure, reuse_figure
from transferscope.analyses.runs import Run as Run
from transferscope.analyses.runs import _need, collect_runs
from transferscope.analyses.summaries import bridge_table, headline, spectra_summary
from transferscope.config import ConfigError, epochs, run_settings
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
BN_NOTE = (
    "BatchNorm running statistics recomputed on target training data for every interpolated "
    "model (endpoints included; exact cumulative average, other layers in eval mode)"
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
    return [e for e in config["experiments"] if is_image_experiment(config, e)]


def skipped_experiments(config: dict[str, Any]) -> dict[str, str]:
    """Experiments the analyses leave out, with the reason."""
    return {
        e: "text experiment: the analyses (block shuffling, image galleries, CNN stages) are "
        "defined for the image experiments only"
        for e in config["experiments"]
        if not is_image_experiment(config, e)
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
    """Settings of a fine-tune run initialised from pre-training epoch ``epoch``."""
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
    return f"{_run_dir(experiment, 'pretrain', seed)}/epoch_{int(epoch):03d}.safetensors"


def analyses_dir(experiment: str | None = None) -> str:
    return "results/analyses" if experiment is None else f"results/analyses/{experiment}"


def experiment_run_summaries(config: dict[str, Any], experiment: str) -> list[str]:
    """Every regime and seed of one experiment: the inputs of the per-experiment analysis."""
    return [
        run_summary(experiment, regime, seed)
        for regime in ("pretrain", "probe", "finetune", "scratch")
        for seed in config["seeds"]
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
    return [
        run_summary(experiment, variant, seed)
        for seed in analysis_seeds(config)
        for variant in ("pretrain", "finetune", "scratch", *(from_variant(k) for k in ks))
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


def from_init(wildcards) -> str:
    return pretrain_checkpoint(wildcards.experiment, wildcards.seed, wildcards.epoch)


# ----------------------------------------------------------------------------------------------
# the per-experiment stage


def _skip(out: Path, settings: dict, reason: str) -> dict:
    from transferscope.io import write_json

    summary = {"experiment": settings["experiment"], "skipped": True, "reason": reason}
    write_json(out, summary)
    return summary


def run_analyses(
    settings: dict, data_dir: str | Path, runs, out: str | Path, threads: int | None = None
) -> dict:
    """All per-experiment analyses into the directory of ``out`` (its summary.json, written
    last). Text experiments are skipped with a summary saying so."""
    import polars as pl
    import torch

    from transferscope import runtime
    from transferscope.data import read_manifest
    from transferscope.io import write_json
    from transferscope.models import build_model, load_checkpoint
    from transferscope.training import evaluate, load_task

    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out)
    out = out if out.suffix == ".json" else out / "summary.json"
    out_dir = out.parent
    exp, params = settings["experiment"], settings["analyses"]
    manifest = read_manifest(data_dir)
    if manifest["modality"] != "image":
        return _skip(out, settings, f"{manifest['modality']} experiment: analyses are image-only")
    runtime.setup(0, threads)
    device = runtime.resolve_device(settings["device"])
    dpi = settings.get("dpi", 120)
    run_map = collect_runs(runs, exp)
    seeds = sorted(int(s) for s in settings["seeds"])
    crit_seeds = [s for s in settings["analysis_seeds"] if s in seeds] or seeds[:1]

    task = load_task(data_dir, "target", settings["model"])
    indices = eval_subset(len(task.test_y), params["eval_samples"])
    x_eval, y_eval = task.test_inputs["x"][indices], task.test_y[indices]
    bn_count = len(task.train_y) if params["bn_samples"] is None else params["bn_samples"]
    x_bn = task.train_inputs["x"][:bn_count]
    bn_batches = list(x_bn.split(256))

    # models: (role, seed) -> eval-mode model; states for interpolation and criticality
    t0 = time.perf_counter()
    models, states, weights_of = {}, {}, {}
    for s in seeds:
        pre, probe = _need(run_map, exp, "pretrain", s), _need(run_map, exp, "probe", s)
        ft, sc = _need(run_map, exp, "finetune", s), _need(run_map, exp, "scratch", s)
        for key, path in {
            ("P", s): probe.final,
            ("P-T", s): ft.final,
            ("RI-T", s): sc.final,
            ("P-T init", s): ft.epoch(0),
            ("RI", s): sc.epoch(0),
            ("P weights", s): pre.final,
        }.items():
            states[key], meta = load_checkpoint(path)
            weights_of[key] = str(path)
            if key[0] in ("P", "P-T", "RI-T"):  # the others are only weights
                models[key] = build_model(
                    meta["model"], meta["num_classes"], meta.get("in_chans", 3), False
                )
                models[key].load_state_dict(states[key])
                models[key].to(device).eval()
    first = models[("P-T", seeds[0])]
    spec, num_classes = settings["model"], first.head.out_features
    in_chans = int(task.in_chans)
    timings["load"] = time.perf_counter() - t0

    def fresh_model():
        return build_model(spec, num_classes, in_chans, pretrained=False).to(device)

    def eval_fn(model, n=None):
        xs, ys = (x_eval, y_eval) if n is None else (x_eval[:n], y_eval[:n])
        return evaluate(model, {"x": xs}, ys, device)

    pairs = model_pairs(seeds)
    outputs: dict[str, str] = {}

    def table(name, frame):
        _write_table(frame, out_dir / f"{name}.parquet")
        outputs[name] = f"{name}.parquet"

    # 1. mistakes
    t0 = time.perf_counter()
    preds = {
        (r, s): predictions(models[(r, s)], x_eval, device) for s in seeds for r in ("P-T", "RI-T")
    }
    mistake_pairs = [p for p in pairs if p[0] in BARRIER_PAIR_TYPES]
    mistakes, samples = mistakes_tables(preds, y_eval, indices, mistake_pairs)
    table("mistakes", mistakes)
    table("mistakes_samples", samples)
    gallery_figure(
        x_eval,
        y_eval,
        indices,
        preds[("P-T", seeds[0])],
        preds[("RI-T", seeds[0])],
        task.classes,
        params["gallery"],
        out_dir / "mistakes_gallery.png",
        dpi,
        f"{exp}: samples P-T seed{seeds[0]} gets wrong and RI-T seed{seeds[0]} right",
    )
    timings["mistakes"] = time.perf_counter() - t0

    # 2. CKA and weight distances
    t0 = time.perf_counter()
    modules = params["cka"]["modules"] or default_modules(first)
    _check_modules(first, modules, "cka.modules")
    cka, dist = similarity_tables(
        models,
        pairs,
        x_eval,
        modules,
        params["cka"]["reduce"],
        params["cka"]["debiased"],
        params["cka"]["max_features"],
        paths=weights_of,
    )
    table("cka", cka)
    table("distances", dist)
    similarity_figure(cka, dist, modules, out_dir / "similarity.png", dpi, exp)
    timings["similarity"] = time.perf_counter() - t0

    # 3. interpolation barriers (one model instance reloaded at every point)
    t0 = time.perf_counter()
    lambdas = lambda_grid(params["lambdas"])
    instance = fresh_model()
    barrier_pairs = [p for p in pairs if p[0] in BARRIER_PAIR_TYPES]
    curves, heights = barrier_tables(
        states, lambda: instance, barrier_pairs, eval_fn, lambdas, bn_batches
    )
    table("barrier_curves", curves)
    table("barriers", heights)
    from transferscope.analyses.figures import plot_barrier_curves

    grouped = {
        t: [
            curves.filter((pl.col("model_a") == a) & (pl.col("model_b") == b))
            .sort("lambda")
            .to_dicts()
            for a, b in heights.filter(pl.col("pair_type") == t)
            .select("model_a", "model_b")
            .iter_rows()
        ]
        for t in BARRIER_PAIR_TYPES
        if heights.filter(pl.col("pair_type") == t).height
    }
    plot_barrier_curves(
        grouped,
        out_dir / "barrier_curves.png",
        title=f"{exp}: linear interpolation, eval subset (n={len(indices)}); BN recomputed",
    )
    timings["barriers"] = time.perf_counter() - t0

    # 4. module criticality
    t0 = time.perf_counter()
    crit = params["criticality"]
    crit_modules = crit["modules"] or [m for m in modules if m != "backbone"] or ["backbone"]
    _check_modules(first, crit_modules, "criticality.modules")
    crit_rows, grid_frames, results = [], [], []
    from transferscope.analyses.criticality import module_criticality

    for s in crit_seeds:
        for role, init_key in (("P-T", ("P-T init", s)), ("RI-T", ("RI", s))):
            for module in crit_modules:
                generator = torch.Generator().manual_seed(runtime.derived_seed(s, role, module))
                result = module_criticality(
                    fresh_model(),
                    states[init_key],
                    states[(role, s)],
                    module,
                    lambda m: eval_fn(m, crit["samples"])["loss"],
                    alphas=alpha_grid(crit),
                    sigmas=sigma_grid(crit),
                    draws=crit["draws"],
                    generator=generator,
                    eps_rel=crit["eps_rel"],
                )
                crit_rows.append(
                    dict(
                        result.summary(),
                        role=role,
                        seed=s,
                        theta0="P (finetune epoch_000)"
                        if role == "P-T"
                        else "RI (scratch epoch_000)",
                    )
                )
                grid_frames.append(
                    result.grid_frame().with_columns(role=pl.lit(role), seed=pl.lit(s))
                )
                results.append((role, s, result))
    table("criticality", pl.DataFrame(crit_rows))
    table("criticality_grid", pl.concat(grid_frames))
    criticality_figures(results, crit_seeds[0], out_dir, exp)
    timings["criticality"] = time.perf_counter() - t0

    # 5. spectra
    t0 = time.perf_counter()
    from transferscope.analyses.spectra import weight_spectra

    spectra = pl.concat(
        [
            weight_spectra(states[key]).with_columns(model=pl.lit(role), seed=pl.lit(s))
            for s in seeds
            for role, key in (
                ("P", ("P weights", s)),
                ("P-T", ("P-T", s)),
                ("RI", ("RI", s)),
                ("RI-T", ("RI-T", s)),
            )
        ]
    )
    table("spectra", spectra)
    table("spectra_summary", spectra_summary(spectra))
    from transferscope.analyses.figures import plot_spectra

    plot_spectra(
        spectra.filter(pl.col("seed") == seeds[0]).drop("seed"),
        out_dir / "spectra.png",
        title=f"{exp}: singular values of every weight matrix, seed{seeds[0]}",
    )
    timings["spectra"] = time.perf_counter() - t0

    # 6. theory bridge: feature overlap of P's frozen features vs measured transferability
    t0 = time.perf_counter()
    bridge = bridge_table(exp, seeds, run_map, models, task, device, params["ridge"])
    table("bridge", bridge)
    timings["bridge"] = time.perf_counter() - t0

    figures = {name: f"{name}.png" for name in MODEL_FIGURES}
    summary = {
        "experiment": exp,
        "skipped": False,
        "modality": "image",
        "seeds": seeds,
        "criticality_seeds": crit_seeds,
        "device": str(device),
        "eval": {
            "split": "target test",
            "samples": len(indices),
            "of": int(len(task.test_y)),
            "indices": indices,
            "mode": "eval() for every model",
        },
        "models": {
            "P": "probe final checkpoint for features and distances (P's frozen backbone); "
            "pretrain final checkpoint for spectra",
            "P-T": "finetune final checkpoint",
            "RI": "scratch epoch_000",
            "RI-T": "scratch final checkpoint",
            "checkpoints": weights_of,
        },
        "cka": {
            "modules": modules,
            "reduce": params["cka"]["reduce"],
            "max_features": params["cka"]["max_features"],
            "features_per_module": dict(
                cka.filter(pl.col("diagonal"))
                .group_by("module_a", maintain_order=True)
                .agg(pl.col("features_a").first())
                .iter_rows()
            ),
            "estimator": "debiased" if params["cka"]["debiased"] else "biased",
        },
        "barrier": {
            "lambdas": lambdas,
            "bn_recomputed": True,
            "bn_note": BN_NOTE,
            "bn_samples": int(len(x_bn)),
        },
        "criticality": {
            "modules": crit_modules,
            "alphas": alpha_grid(crit),
            "sigmas": sigma_grid(crit),
            "draws": crit["draws"],
            "eps_rel": crit["eps_rel"],
            "samples": min(crit["samples"], len(indices)),
            "loss": "cross-entropy on the first samples of the evaluation subset",
        },
        "headline": headline(mistakes, cka, heights, pl.DataFrame(crit_rows), bridge, modules),
        "tables": outputs,
        "figures": figures,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    summary["timings_s"]["total"] = round(time.perf_counter() - started, 2)
    write_json(out, _json_safe(summary))
    return summary


# ----------------------------------------------------------------------------------------------
# feature reuse (block shuffling) and intermediate pre-training checkpoints


def feature_reuse(
    settings: dict, data_dir: str | Path, runs, out: str | Path, dpi: int | None = None
):
    """Final accuracy of P-T and RI-T, relative gap (A_PT − A_RIT)/A_PT and epochs to a fixed
    accuracy, against the block size of the shuffle (the unshuffled runs are block = image
    size, which shuffles nothing)."""
    import polars as pl

    from transferscope.data import read_manifest

    exp = settings["experiment"]
    manifest = read_manifest(data_dir)
    if manifest["modality"] != "image":
        raise ValueError(f"{data_dir}: {manifest['modality']} data; feature reuse is image-only")
    size = int(manifest["image"]["height"])
    bad = [b for b in settings["block_sizes"] if size % b]
    if bad:
        raise ConfigError(
            f"config: analyses.block_sizes: {bad} do not divide the {size}-pixel images of "
            f"{data_dir}; use divisors of {size}"
        )
    run_map = collect_runs(runs, exp)
    seeds = settings["analysis_seeds"]
    unshuffled = {
        s: (_need(run_map, exp, "finetune", s), _need(run_map, exp, "scratch", s)) for s in seeds
    }
    threshold = settings.get("reuse_accuracy")
    threshold_rule = "analyses.reuse_accuracy"
    if threshold is None:
        mean_rit = sum(sc.metrics()["test_accuracy"][-1] for _, sc in unshuffled.values()) / len(
            seeds
        )
        threshold = 0.9 * float(mean_rit)
        threshold_rule = "0.9 × unshuffled RI-T mean final test accuracy"
    rows = []
    for block in [*sorted(b for b in settings["block_sizes"] if b != size), size]:
        for s in seeds:
            if block == size:
                ft, sc = unshuffled[s]
            else:
                ft = _need(run_map, exp, shuffle_variant("finetune", block), s)
                sc = _need(run_map, exp, shuffle_variant("scratch", block), s)
            m_ft, m_sc = ft.metrics(), sc.metrics()
            a_pt, a_rit = float(m_ft["test_accuracy"][-1]), float(m_sc["test_accuracy"][-1])
            rows.append(
                {
                    "experiment": exp,
                    "block_size": block,
                    "shuffled": block != size,
                    "blocks": (size // block) ** 2,
                    "seed": s,
                    "accuracy_pt": a_pt,
                    "accuracy_rit": a_rit,
                    "gap": a_pt - a_rit,
                    "relative_gap": (a_pt - a_rit) / a_pt if a_pt > 0 else float("nan"),
                    "threshold": threshold,
                    "threshold_rule": threshold_rule,
                    "epochs_to_threshold_pt": epochs_to_accuracy(m_ft, threshold),
                    "epochs_to_threshold_rit": epochs_to_accuracy(m_sc, threshold),
                    "epochs": int(m_ft["epoch"].max()),
                    "run_pt": str(ft.summary_path),
                    "run_rit": str(sc.summary_path),
                }
            )
    frame = pl.DataFrame(
        rows,
        schema_overrides={"epochs_to_threshold_pt": pl.Int64, "epochs_to_threshold_rit": pl.Int64},
    )
    out = Path(out)
    _write_table(frame, out)
    reuse_figure(frame, size, out.with_suffix(".png"), dpi or settings.get("dpi", 120), exp)
    return frame


def intermediate_checkpoints(settings: dict, runs, out: str | Path, dpi: int | None = None):
    """Target test accuracy after fine-tuning from pre-training epoch k, beside P's source
    accuracy at that epoch; k = E is the regular finetune run, RI-T the reference."""
    import polars as pl

    exp = settings["experiment"]
    run_map = collect_runs(runs, exp)
    seeds, ks, final = (
        settings["analysis_seeds"],
        settings["pretrain_epochs"],
        settings["pretrain_final_epoch"],
    )
    rows = []
    for s in seeds:
        pre = _need(run_map, exp, "pretrain", s).metrics()
        source = dict(zip(pre["epoch"].to_list(), pre["test_accuracy"].to_list()))
        for k in [*ks, final]:
            run = _need(run_map, exp, from_variant(k) if k != final else "finetune", s)
            m = run.metrics().row(-1, named=True)
            rows.append(
                {
                    "experiment": exp,
                    "seed": s,
                    "pretrain_epoch": k,
                    "reference": False,
                    "source_test_accuracy": source.get(k),
                    "target_test_accuracy": float(m["test_accuracy"]),
                    "target_test_loss": float(m["test_loss"]),
                    "run": str(run.summary_path),
                }
            )
        sc = _need(run_map, exp, "scratch", s)
        m = sc.metrics().row(-1, named=True)
        rows.append(
            {
                "experiment": exp,
                "seed": s,
                "pretrain_epoch": None,
                "reference": True,
                "source_test_accuracy": None,
                "target_test_accuracy": float(m["test_accuracy"]),
                "target_test_loss": float(m["test_loss"]),
                "run": str(sc.summary_path),
            }
        )
    frame = pl.DataFrame(
        rows, schema_overrides={"pretrain_epoch": pl.Int64, "source_test_accuracy": pl.Float64}
    )
    out = Path(out)
    _write_table(frame, out)
    intermediate_figure(frame, out.with_suffix(".png"), dpi or settings.get("dpi", 120), exp)
    return frame


# ----------------------------------------------------------------------------------------------
# across experiments: CKA / barrier beside the preserved share, and the theory bridge


def compare(
    summaries,
    transfer: str | Path,
    transfer_samples: str | Path,
    out: str | Path,
    skipped: dict | None = None,
    dpi: int = 120,
) -> dict:
    """side_by_side (per run pair: CKA, weight distance, barrier, preserved share), views (per
    experiment) and bridge (+ preserved share) tables, their figures and summary.json."""
    import polars as pl

    from transferscope.io import read_json, write_json

    out = Path(out)
    out_dir = out.parent
    level, per_seed = preserved_shares(transfer, transfer_samples)
    keys = ["experiment", "pair_type", "model_a", "seed_a", "model_b", "seed_b"]
    pair_frames, bridges, skipped = [], [], dict(skipped or {})
    for item in summaries:
        path = Path(item)
        summary = read_json(path)
        exp = summary["experiment"]
        if summary.get("skipped"):
            skipped[exp] = summary.get("reason", "skipped")
            continue
        d = path.parent
        out_mod = summary["cka"]["modules"][-1]
        cka = pl.read_parquet(d / "cka.parquet").filter(pl.col("diagonal"))
        cka = cka.group_by(keys[1:], maintain_order=True).agg(
            cka_output=pl.col("cka").filter(pl.col("module_a") == out_mod).first(),
            cka_mean=pl.col("cka").mean(),
        )
        dist = (
            pl.read_parquet(d / "distances.parquet")
            .group_by(keys[1:], maintain_order=True)
            .agg(
                weight_distance=(pl.col("distance").pow(2).sum()).sqrt(),
                weight_distance_relative=(
                    pl.col("distance").pow(2).sum() / pl.col("norm_first").pow(2).sum()
                ).sqrt(),
            )
        )
        frame = cka.join(dist, on=keys[1:], how="left")
        barriers = pl.read_parquet(d / "barriers.parquet")
        if "barrier_loss" in barriers.columns:
            frame = frame.join(
                barriers.select(*keys[1:], "barrier_loss", "barrier_accuracy"),
                on=keys[1:],
                how="left",
            )
        else:
            frame = frame.with_columns(
                barrier_loss=pl.lit(None, pl.Float64), barrier_accuracy=pl.lit(None, pl.Float64)
            )
        pair_frames.append(frame.with_columns(experiment=pl.lit(exp), cka_module=pl.lit(out_mod)))
        bridges.append(pl.read_parquet(d / "bridge.parquet"))
    if not pair_frames:
        raise ValueError(
            f"no analysed image experiment among {list(map(str, summaries))}; nothing to compare"
        )
    pairs = pl.concat(pair_frames, how="diagonal_relaxed").join(level, on="experiment", how="left")
    if per_seed is not None:
        pairs = pairs.join(
            per_seed.rename({"seed": "seed_a"}), on=["experiment", "seed_a"], how="left"
        ).with_columns(
            # the per-seed interaction view is the P → P-T comparison of that seed
            preserved_share_seed=pl.when(pl.col("pair_type") == "P-T/P").then(
                pl.col("preserved_share_seed")
            )
        )
    pairs = pairs.select(*keys, pl.exclude(keys))
    _write_table(pairs, out_dir / "side_by_side.parquet")

    views = views_table(pairs)
    _write_table(views, out_dir / "views.parquet")
    side_by_side_figure(pairs, out_dir / "side_by_side.png", dpi)

    bridge = pl.concat(bridges, how="diagonal_relaxed")
    if per_seed is not None:
        bridge = bridge.join(per_seed, on=["experiment", "seed"], how="left")
    _write_table(bridge, out_dir / "bridge.parquet")
    bridge_figure(bridge, out_dir / "bridge.png", dpi)

    per_seed_pt = pairs.filter(pl.col("pair_type") == "P-T/P")
    result = {
        "skipped": skipped,
        "experiments": views["experiment"].to_list(),
        "preserved_share": "results/knowledge: metric preserved_ratio, kind and, order 0 "
        "(experiment level: mean and bootstrap interval; per seed: mean over samples)",
        "views": views.to_dicts(),
        "sentences": [view_sentence(row) for row in views.iter_rows(named=True)],
        "agreement_across_seeds": {
            "preserved_vs_cka_pt_p": _spearman(
                _col(per_seed_pt, "preserved_share_seed"), _col(per_seed_pt, "cka_output")
            ),
            "preserved_vs_weight_distance_pt_p": _spearman(
                _col(per_seed_pt, "preserved_share_seed"),
                _col(per_seed_pt, "weight_distance_relative"),
            ),
        },
        "bridge": {
            "unexplained_vs_transferability": _spearman(
                _col(bridge, "unexplained"), _col(bridge, "transferability")
            ),
            "unexplained_vs_preserved": _spearman(
                _col(bridge, "unexplained"), _col(bridge, "preserved_share_seed")
            ),
        },
        "tables": ["side_by_side.parquet", "views.parquet", "bridge.parquet"],
        "figures": ["side_by_side.png", "bridge.png"],
    }
    write_json(out, _json_safe(result))
    return result
