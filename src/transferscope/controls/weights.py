"""The permuted-weights control: P with its learned structure destroyed, its statistics kept.

Every learned floating tensor of P's final checkpoint (weights, biases, BatchNorm affine
parameters, embeddings; the classification head too, which probe and fine-tune replace anyway)
has its entries permuted within the tensor by a permutation drawn from
``derived_seed(permutation_seed, tensor name)``. A permutation keeps the multiset of a tensor's
values, so its mean, norm, variance and value histogram are exactly P's, while which entry sits
where (the learned structure) is random (docs/references.md §4, Controls).

BatchNorm running statistics (``running_mean``, ``running_var``) are not permuted: they describe
the activations of P's own network, which no longer exist. They are re-estimated in the
permuted network on the source training images (a cumulative average over one pass, labels
unused), so the permuted model in eval mode normalises its activations as P does
(``num_batches_tracked`` then counts that pass). Models without BatchNorm need no pass.

The result is a run directory in the training stage's format (``epoch_000.safetensors``,
``settings.json``, ``metrics.csv`` with the source-task loss and accuracy of the permuted model,
``summary.json`` last), so ``transferscope train --init`` takes it as it takes P's run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

BUFFER_STATISTICS = ("running_mean", "running_var")


def is_permuted(name: str, tensor: torch.Tensor) -> bool:
    """Whether the entry ``name`` of a state dict is permuted (module docstring)."""
    return tensor.is_floating_point() and name.rsplit(".", 1)[-1] not in BUFFER_STATISTICS


def permute_tensors(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """A copy of ``state`` with the entries of every permuted tensor shuffled within it."""
    from transferscope.runtime import derived_seed

    out = {}
    for name, tensor in state.items():
        if not is_permuted(name, tensor) or tensor.numel() < 2:
            out[name] = tensor.clone()
            continue
        generator = torch.Generator().manual_seed(derived_seed(seed, "permute", name))
        order = torch.randperm(tensor.numel(), generator=generator)
        out[name] = tensor.reshape(-1)[order].reshape(tensor.shape).clone()
    return out


@torch.no_grad()
def reestimate_batchnorm(model: torch.nn.Module, inputs: dict, device, batch_size: int = 256):
    """Running statistics of every BatchNorm layer from one pass over ``inputs`` (cumulative
    average, train-mode batch statistics); a model without BatchNorm is left as it is."""
    from transferscope.training import _batches

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the pass
    model.train()
    n = next(iter(inputs.values())).shape[0]
    for batch, _ in _batches(inputs, torch.zeros(n, dtype=torch.long), batch_size):
        model(**{k: v.to(device) for k, v in batch.items()})
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
    return len(norms)


def permute_weights_run(
    settings: dict[str, Any], data_dir, init_summary, run_dir, threads: int | None = None
) -> Path:
    """Write the permuted-weights control of the pre-training run ``init_summary`` into
    ``run_dir`` (module docstring); returns ``run_dir``."""
    from transferscope import runtime
    from transferscope.data.format import manifest_hash
    from transferscope.io import read_json, sha256_file, write_json, writer_lock
    from transferscope.models import build_model, load_checkpoint
    from transferscope.training import (
        _epoch_row,
        _save,
        _write_metrics,
        _write_summary,
        load_task,
        runtime_hash,
    )
    from transferscope.workflow import final_checkpoint

    run_dir, init_summary = Path(run_dir), Path(init_summary)
    parent = read_json(init_summary)
    if (parent.get("experiment"), parent.get("regime")) != (settings["experiment"], "pretrain"):
        raise ValueError(
            f"{init_summary} is the {parent.get('regime')} run of {parent.get('experiment')}, "
            f"not a pre-training run of {settings['experiment']}; pass its pretrain summary.json"
        )
    source = final_checkpoint(init_summary)
    recorded = parent.get("checkpoints", {}).get(source.name)
    sha = sha256_file(source)
    if recorded not in (None, sha):
        from transferscope.workflow import rerun_command

        raise ValueError(
            f"checkpoint {source} is not the file its run wrote (truncated or replaced); "
            f"retrain it: {rerun_command(source)}"
        )
    with writer_lock(run_dir, f"Wait for it, or end it, then rerun; {run_dir} is rewritten."):
        runtime.setup(settings["seed"], threads)
        device = runtime.resolve_device(settings["device"])
        (run_dir / "summary.json").unlink(missing_ok=True)  # the marker returns when complete
        state, meta = load_checkpoint(source)
        data = load_task(data_dir, "source", settings["model"])
        model = build_model(
            meta["model"], meta["num_classes"], meta.get("in_chans", 3), pretrained=False
        )
        model.load_state_dict(permute_tensors(state, int(settings["permutation_seed"])))
        model.to(device)
        layers = reestimate_batchnorm(model, data.train_inputs, device)
        record = {
            "settings": settings,
            "dataset_manifest_sha256": manifest_hash(data_dir),
            "init_checkpoint_sha256": sha,
            "init_checkpoint": str(source),
            "classes": data.classes,
            "batchnorm_layers_reestimated": layers,
        }
        for stale in [*run_dir.glob("epoch_*.safetensors"), run_dir / "resume.pt"]:
            stale.unlink(missing_ok=True)
        write_json(run_dir / "settings.json", dict(record, hash=runtime_hash(record)))
        row = _epoch_row(model, data, device, 0, float("nan"))  # source task: at chance?
        meta = dict(
            meta,
            epoch=0,
            control="permuted-weights",
            permutation_seed=int(settings["permutation_seed"]),
            init_checkpoint_sha256=sha,
        )
        meta.pop("preprocessing", None)  # save_checkpoint records the model's own again
        hashes = {"epoch_000.safetensors": _save(run_dir, 0, model, meta)}
        _write_metrics(run_dir, [row])
        _write_summary(run_dir, settings, [row], hashes)
    return run_dir
