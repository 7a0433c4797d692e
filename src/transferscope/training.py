"""Training regimes: pretrain, probe, finetune, scratch — one loop, a checkpoint every epoch.

A run folder holds ``epoch_000.safetensors`` (the weights before any update) … ``epoch_E``,
``settings.json`` (the resolved settings, timm-style, beside the checkpoints), ``metrics.csv``
(train/test loss and accuracy per epoch) and ``resume.pt`` (optimizer state of the last epoch
and the SHA-256 of every checkpoint so far). Each epoch writes its checkpoint, then
``metrics.csv``, then ``resume.pt``, so a kill between any two leaves a consistent older epoch.
An interrupted run resumes from its newest epoch whose checkpoint is intact and whose optimizer
state is known; every epoch reseeds its own generators from (seed, epoch), so a resumed run
writes the same bytes as an uninterrupted one. One process writes a run directory at a time
(``transferscope.io.writer_lock``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from transferscope import runtime
from transferscope.data.augment import augmentation
from transferscope.io import (
    atomic_path,
    fault_point,
    read_json,
    remove_temporaries,
    sha256_bytes,
    sha256_file,
    write_bytes,
    write_json,
    writer_lock,
)
from transferscope.models import (
    build_model,
    image_preprocessing,
    load_checkpoint,
    load_tokenizer,
    save_checkpoint,
)

CHECKPOINT = re.compile(r"epoch_(\d{3})\.safetensors$")
log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TaskData:
    """One task's train and test sets as model inputs (dicts of tensors) and labels."""

    train_inputs: dict[str, torch.Tensor]
    train_y: torch.Tensor
    test_inputs: dict[str, torch.Tensor]
    test_y: torch.Tensor
    classes: list[str]
    in_chans: int


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / f"epoch_{epoch:03d}.safetensors"


def task_of(regime: str) -> str:
    return "source" if regime == "pretrain" else "target"


def encode_split(split, manifest: dict, model_spec: dict) -> dict[str, torch.Tensor]:
    """Model inputs for a dataset split: normalised images or tokenised sentences."""
    from transferscope.data import normalize_images

    if manifest["modality"] == "image":
        return {"x": normalize_images(split.x, manifest, image_preprocessing(model_spec))}
    tokenizer = load_tokenizer(model_spec)
    enc = tokenizer(
        list(split.x),
        padding="max_length",
        truncation=True,
        max_length=model_spec.get("max_length", 32),
        return_tensors="pt",
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def load_task(
    data_dir: str | Path, task: str, model_spec: dict, block_shuffle: int | None = None
) -> TaskData:
    """Train and test inputs of a task; ``block_shuffle`` = b permutes b×b image blocks by one
    fixed permutation for train and test (feature-reuse analysis, Neyshabur et al. 2020)."""
    from transferscope.data import load_split, read_manifest

    manifest = read_manifest(data_dir)
    train, test = load_split(data_dir, task, "train"), load_split(data_dir, task, "test")
    in_chans = manifest["image"]["channels"] if manifest["modality"] == "image" else 0
    train_x, test_x = (
        encode_split(train, manifest, model_spec),
        encode_split(test, manifest, model_spec),
    )
    if block_shuffle:
        from transferscope.analyses.blockshuffle import BlockShuffle

        shuffle = BlockShuffle(manifest["image"]["height"], block_shuffle, seed=0)
        train_x, test_x = {"x": shuffle(train_x["x"])}, {"x": shuffle(test_x["x"])}
    return TaskData(train_x, train.y, test_x, test.y, list(train.classes), in_chans)


def _batches(inputs: dict[str, torch.Tensor], y: torch.Tensor, batch_size: int, generator=None):
    names = list(inputs)
    dataset = TensorDataset(*(inputs[n] for n in names), y)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=generator is not None, generator=generator
    )
    for *tensors, labels in loader:
        yield dict(zip(names, tensors)), labels


@torch.inference_mode()
def evaluate(model: nn.Module, inputs, y, device, batch_size: int = 256) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on a set, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for batch, labels in _batches(inputs, y, batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(**batch).float()
        labels = labels.to(device)
        loss_sum += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        correct += (logits.argmax(1) == labels).sum().item()
    model.train(was_training)
    return {"loss": loss_sum / len(y), "accuracy": correct / len(y)}


def initial_model(settings: dict, data: TaskData, init_checkpoint: str | Path | None) -> nn.Module:
    """Epoch-0 model of a regime (seeded): fresh for pretrain/scratch, P's backbone otherwise."""
    regime, spec = settings["regime"], settings["model"]
    runtime.seed_everything(runtime.derived_seed(settings["seed"], regime, "init"))
    pretrained = None if regime == "pretrain" else False
    model = build_model(spec, len(data.classes), data.in_chans, pretrained=pretrained)
    if regime in ("probe", "finetune"):
        if init_checkpoint is None:
            raise ValueError(f"regime '{regime}' needs --init (the pre-trained checkpoint)")
        state, _ = load_checkpoint(init_checkpoint)
        backbone = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        model.backbone.load_state_dict(backbone)
    if regime == "probe":
        for param in model.backbone.parameters():
            param.requires_grad_(False)
    return model


class HeadOnly(nn.Module):
    """The probe's trainable part, applied to precomputed features of the frozen backbone."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


@torch.inference_mode()
def frozen_features(model: nn.Module, data: TaskData, device, batch_size: int = 256) -> TaskData:
    """The task with inputs replaced by the eval-mode backbone's features (batch-norm statistics
    and dropout frozen, as a linear probe on a frozen model requires)."""
    model.eval()

    def features(inputs, y):
        out = [
            model.features(**{k: v.to(device) for k, v in b.items()}).float().cpu()
            for b, _ in _batches(inputs, y, batch_size)
        ]
        return {"features": torch.cat(out)}

    return TaskData(
        features(data.train_inputs, data.train_y),
        data.train_y,
        features(data.test_inputs, data.test_y),
        data.test_y,
        data.classes,
        data.in_chans,
    )


def _optimizer(model: nn.Module, training: dict) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if training["optimizer"] == "sgd":
        return torch.optim.SGD(
            params,
            lr=training["lr"],
            momentum=training["momentum"],
            weight_decay=training["weight_decay"],
        )
    return torch.optim.AdamW(params, lr=training["lr"], weight_decay=training["weight_decay"])


def epoch_lr(training: dict, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (1-based): linear warm-up, then cosine to zero."""
    total, warm = training["epochs"], training.get("warmup_epochs", 0)
    if epoch <= warm:
        return training["lr"] * epoch / (warm + 1)
    progress = (epoch - 1 - warm) / max(1, total - warm)
    return training["lr"] * 0.5 * (1.0 + math.cos(math.pi * progress))


def checkpoint_complete(path: Path) -> bool:
    """Whether a safetensors file holds every byte its header promises (a cheap truncation test
    that reads only the header)."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size))
    except (OSError, ValueError):
        return False
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    return path.stat().st_size == 8 + size + max(ends, default=0)


def read_resume(run_dir: Path) -> dict | None:
    """``resume.pt`` of a run (epoch, optimizer, checkpoint hashes), or None if unusable."""
    try:
        state = torch.load(run_dir / "resume.pt", weights_only=True)
    except Exception:  # missing, truncated or another format: the run cannot use it
        return None
    return state if isinstance(state, dict) and "epoch" in state else None


def intact_checkpoints(run_dir: Path, recorded: dict[str, str]) -> dict[str, str]:
    """{name: SHA-256} of the gap-free prefix epoch_000, epoch_001, … of checkpoints that are
    whole and match the hash ``resume.pt`` recorded for them (when it recorded one)."""
    intact: dict[str, str] = {}
    epoch = 0
    while (path := checkpoint_path(run_dir, epoch)).is_file() and checkpoint_complete(path):
        sha = sha256_file(path)
        if recorded.get(path.name, sha) != sha:
            break
        intact[path.name] = sha
        epoch += 1
    return intact


def completed_epochs(run_dir: Path, settings_hash: str) -> int:
    """Index of the epoch to resume from, or -1 to start afresh: the newest epoch whose
    checkpoint and every earlier one are intact and whose optimizer state ``resume.pt`` holds
    (epoch 0 needs none), and whose metrics row ``metrics.csv`` holds."""
    return resume_point(run_dir, settings_hash)[0]


def resume_point(run_dir: Path, settings_hash: str) -> tuple[int, dict[str, str]]:
    """(:func:`completed_epochs`, the verified checkpoint hashes up to that epoch)."""
    settings_file = run_dir / "settings.json"
    try:
        if read_json(settings_file).get("hash") != settings_hash:
            return -1, {}
    except (FileNotFoundError, ValueError):
        return -1, {}
    resume = read_resume(run_dir)
    intact = intact_checkpoints(run_dir, (resume or {}).get("checkpoints", {}))
    last = len(intact) - 1
    if last > 0:
        saved = int(resume["epoch"]) if resume else -1
        # a kill between the checkpoint and resume.pt leaves resume.pt one epoch behind: resume
        # there (the later epochs are recomputed to the same bytes); a later or missing optimizer
        # state does not fit any intact epoch, so only epoch_000 is usable
        last = saved if 0 < saved <= last else 0
    rows = _metrics_epochs(run_dir)
    if rows < last:  # the rows of the later epochs are lost: retrain them
        last = 0 if rows >= 0 else -1
    names = [checkpoint_path(run_dir, e).name for e in range(last + 1)]
    return last, {name: intact[name] for name in names}


def _metrics_epochs(run_dir: Path) -> int:
    """The last epoch of the gap-free rows of ``metrics.csv`` from 0, or -1."""
    import polars as pl

    try:
        epochs = pl.read_csv(run_dir / "metrics.csv")["epoch"].to_list()
    except Exception:  # missing or unreadable: no row can be trusted
        return -1
    last = -1
    for epoch in epochs:
        if epoch != last + 1:
            break
        last = epoch
    return last


def train_run(
    settings: dict[str, Any],
    data_dir: str | Path,
    run_dir: str | Path,
    init_checkpoint: str | Path | None = None,
    threads: int | None = None,
    progress: bool = True,
    reference_checkpoint: str | Path | None = None,
    penalty=None,
) -> Path:
    """Train one (experiment, regime, seed) run into ``run_dir``; returns ``run_dir``.

    Settings with a ``causal`` block add the penalty of ``interactions.penalty`` to every step's
    loss; ``reference_checkpoint`` is then P's final probe checkpoint (Ω_pre and its terms).
    ``penalty`` (an ``interactions.penalty.Penalty`` built by hand, e.g. on planted sets) is
    used instead; its ``describe()`` is recorded with the settings."""
    run_dir = Path(run_dir)
    fix = f"Wait for it, or end it (kill PID), then rerun; a rerun resumes from {run_dir}."
    with writer_lock(run_dir, fix):
        remove_temporaries(run_dir)  # left by a killed writer; nobody else writes here now
        return _train_locked(
            settings,
            data_dir,
            run_dir,
            init_checkpoint,
            threads,
            progress,
            reference_checkpoint,
            penalty,
        )


def _train_locked(
    settings,
    data_dir,
    run_dir: Path,
    init_checkpoint,
    threads,
    progress,
    reference=None,
    penalty=None,
) -> Path:
    import polars as pl
    from tqdm.auto import tqdm

    from transferscope.data.format import manifest_hash

    runtime.setup(settings["seed"], threads)
    device = runtime.resolve_device(settings["device"])
    regime, training = settings["regime"], settings["training"]
    data = load_task(data_dir, task_of(regime), settings["model"], settings.get("block_shuffle"))
    if settings.get("permuted_labels") is not None:  # the control of P (transferscope.controls)
        from transferscope.controls.labels import permute_task_labels

        data = permute_task_labels(data, settings)
    if settings.get("validation"):  # a search run: held-out training rows stand in for the test set
        from transferscope.tuning import holdout_task

        data = holdout_task(data, **settings["validation"])

    record = {
        "settings": settings,
        "dataset_manifest_sha256": manifest_hash(data_dir),
        "init_checkpoint_sha256": sha256_file(init_checkpoint) if init_checkpoint else None,
        "classes": data.classes,
    }
    if reference:  # recorded only when given, so the hashes of the other runs stay as they were
        record["reference_checkpoint_sha256"] = sha256_file(reference)
    if penalty is not None:
        record["penalty"] = penalty.describe()
    settings_hash = runtime_hash(record)
    # the model is built before anything in the run directory changes: a setting that cannot
    # build (an unknown model name) fails here and leaves the finished work as it was
    model = initial_model(settings, data, init_checkpoint).to(device)
    if penalty is None and settings.get("causal"):  # the causal test (interactions.penalty)
        from transferscope.interactions.penalty import penalty_for_run

        penalty = penalty_for_run(settings, data, data_dir, reference, device)
        log.info("causal penalty: %s", penalty.describe())
    start, hashes = resume_point(run_dir, settings_hash)
    (run_dir / "summary.json").unlink(missing_ok=True)  # the marker returns only when complete
    if start < 0:
        for stale in [*run_dir.glob("epoch_*.safetensors"), run_dir / "resume.pt"]:
            stale.unlink(missing_ok=True)
        write_json(run_dir / "settings.json", dict(record, hash=settings_hash))

    optimizer = _optimizer(model, training)
    trained, trained_data = model, data
    if regime == "probe":  # frozen backbone: compute its features once, train the head on them
        trained, trained_data = HeadOnly(model.head), frozen_features(model, data, device)
    rows: list[dict] = []
    meta = {
        "model": settings["model"],
        "num_classes": len(data.classes),
        "classes": data.classes,
        "in_chans": data.in_chans,
        "experiment": settings["experiment"],
        "regime": regime,
        "seed": settings["seed"],
        "dataset": settings["dataset"],
        "dataset_manifest_sha256": record["dataset_manifest_sha256"],
    }
    if start >= 0:
        state, _ = load_checkpoint(checkpoint_path(run_dir, start))
        model.load_state_dict(state)
        if start > 0:
            optimizer.load_state_dict(read_resume(run_dir)["optimizer"])
        rows = pl.read_csv(run_dir / "metrics.csv").filter(pl.col("epoch") <= start).to_dicts()
    else:
        rows.append(_epoch_row(trained, trained_data, device, 0, float("nan")))
        hashes = {checkpoint_path(run_dir, 0).name: _save(run_dir, 0, model, meta)}
        _write_metrics(run_dir, rows)

    bar = tqdm(
        range(max(start, 0) + 1, training["epochs"] + 1),
        desc=f"{settings['experiment']}/{regime}/seed{settings['seed']}",
        unit="epoch",
        disable=not progress,
    )
    for epoch in bar:
        tic = time.perf_counter()
        train_loss = _train_epoch(
            trained, optimizer, trained_data, training, settings, epoch, device, penalty
        )
        seconds = time.perf_counter() - tic
        row = _epoch_row(trained, trained_data, device, epoch, train_loss)
        if not math.isfinite(row["train_loss"]):  # the last step of the epoch diverged
            _diverged(settings, training, epoch, row["train_loss"])
        rows.append(row)
        hashes[checkpoint_path(run_dir, epoch).name] = _save(run_dir, epoch, model, meta)
        fault_point(f"checkpoint-written:{epoch}")
        _write_metrics(run_dir, rows)
        fault_point(f"metrics-written:{epoch}")
        _write_resume(run_dir, epoch, optimizer, hashes)
        bar.set_postfix(loss=f"{row['train_loss']:.3f}", test_acc=f"{row['test_accuracy']:.3f}")
        log.info(
            "%s/%s/seed%s epoch %d/%d: train loss %.4f, test acc %.4f, %.1f samples/s (%.2f s)",
            settings["experiment"],
            regime,
            settings["seed"],
            epoch,
            training["epochs"],
            row["train_loss"],
            row["test_accuracy"],
            len(trained_data.train_y) / max(seconds, 1e-9),
            seconds,
        )
    _write_summary(run_dir, settings, rows, hashes)
    return run_dir


def _save(run_dir: Path, epoch: int, model: nn.Module, meta: dict) -> str:
    """Write the checkpoint of ``epoch``; returns its SHA-256."""
    path = checkpoint_path(run_dir, epoch)
    save_checkpoint(path, model, dict(meta, epoch=epoch))
    return sha256_file(path)


def _write_resume(run_dir: Path, epoch: int, optimizer, hashes: dict[str, str]) -> None:
    """``resume.pt``, byte-reproducible: serialised in memory, because ``torch.save`` to a file
    records that file's (temporary, random) name inside the archive."""
    buffer = io.BytesIO()
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "checkpoints": dict(hashes)}
    torch.save(state, buffer)
    write_bytes(run_dir / "resume.pt", buffer.getvalue())


def _write_summary(run_dir: Path, settings: dict, rows: list[dict], hashes: dict) -> None:
    """The run's completion marker, written last: workflow tools track this file."""
    last = rows[-1]["epoch"]
    names = [checkpoint_path(run_dir, e).name for e in range(last + 1)]
    checkpoints = {name: hashes[name] for name in names}
    write_json(
        run_dir / "summary.json",
        {
            "experiment": settings["experiment"],
            "regime": settings["regime"],
            "seed": settings["seed"],
            "epochs": last,
            "final_checkpoint": checkpoint_path(run_dir, last).name,
            "checkpoints": checkpoints,
            "final": rows[-1],
        },
    )


def runtime_hash(record: dict) -> str:
    return sha256_bytes(json.dumps(record, sort_keys=True).encode())


def _train_epoch(model, optimizer, data, training, settings, epoch, device, penalty=None) -> float:
    """One epoch; returns the mean cross-entropy. ``penalty(model, generator)``, when given, is
    added to each step's loss (not to the returned mean)."""
    seed = runtime.derived_seed(settings["seed"], settings["regime"], "epoch", epoch)
    runtime.seed_everything(seed)  # dropout and any other global randomness of this epoch
    generator = torch.Generator().manual_seed(seed)
    augment = None  # the probe trains its head on frozen features: nothing to augment
    if settings["regime"] != "probe" and "x" in data.train_inputs:
        augment = augmentation(training.get("augment", "none"))
    augment_generator = torch.Generator().manual_seed(runtime.derived_seed(seed, "augment"))
    penalty_generator = torch.Generator().manual_seed(runtime.derived_seed(seed, "penalty"))
    for group in optimizer.param_groups:
        group["lr"] = epoch_lr(training, epoch)
    model.train()
    total, count = 0.0, 0
    for batch, labels in _batches(
        data.train_inputs, data.train_y, training["batch_size"], generator
    ):
        batch = {k: v.to(device) for k, v in batch.items()}
        if augment is not None:
            batch["x"] = augment(batch["x"], augment_generator)
        labels = labels.to(device)
        loss = nn.functional.cross_entropy(model(**batch), labels)
        objective = loss if penalty is None else loss + penalty(model, penalty_generator)
        if not torch.isfinite(objective):
            _diverged(settings, training, epoch, objective.item())
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        total += loss.item() * len(labels)
        count += len(labels)
    return total / max(count, 1)


def _diverged(settings: dict, training: dict, epoch: int, loss: float) -> None:
    raise TrainingDiverged(
        f"{settings['experiment']}/{settings['regime']}/seed{settings['seed']}: loss became "
        f"{loss} in epoch {epoch}; no checkpoint written for it. Lower the learning rate "
        f"(training.{settings['regime']}.lr = {training['lr']})."
    )


def _epoch_row(model, data, device, epoch, train_loss) -> dict[str, float]:
    train = evaluate(model, data.train_inputs, data.train_y, device)
    test = evaluate(model, data.test_inputs, data.test_y, device)
    return {
        "epoch": epoch,
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "train_loss_running": train_loss,
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
    }


def _write_metrics(run_dir: Path, rows: list[dict]) -> None:
    import polars as pl

    with atomic_path(run_dir / "metrics.csv") as tmp:
        pl.DataFrame(rows).write_csv(tmp)
