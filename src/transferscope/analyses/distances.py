"""Per-module ℓ2 distances between the weights of two models of one architecture.

distance(module) = sqrt(Σ_k ‖θ¹_k − θ²_k‖²_F) over the module's floating-point tensors k
(Neyshabur, Sedghi, Zhang 2020, "What is being transferred in transfer learning?", Sec. 4:
fine-tuned models stay close to the pre-trained weights in parameter space).

This module also holds the two helpers every weight-space analysis shares: the
same-architecture check and the tensor-name → module-name mapping.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import polars as pl
import torch
from torch import nn

Weights = nn.Module | Mapping[str, torch.Tensor]


def as_state(weights: Weights) -> dict[str, torch.Tensor]:
    """Named tensors of ``weights``: a module's parameters (no buffers), or a state dict as is."""
    if isinstance(weights, nn.Module):
        return {name: p.detach() for name, p in weights.named_parameters()}
    return dict(weights)


def check_same_architecture(
    first: Weights, second: Weights, labels: tuple[str, str] = ("first", "second")
) -> None:
    """Raise ValueError, naming both, unless the two have the same tensor names and shapes."""
    a, b = as_state(first), as_state(second)
    name_a, name_b = labels
    problems = []
    only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    if only_a:
        problems.append(f"{len(only_a)} tensors only in {name_a} ({_preview(only_a)})")
    if only_b:
        problems.append(f"{len(only_b)} tensors only in {name_b} ({_preview(only_b)})")
    shapes = [
        f"{k}: {tuple(a[k].shape)} vs {tuple(b[k].shape)}"
        for k in a.keys() & b.keys()
        if a[k].shape != b[k].shape
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches ({_preview(sorted(shapes))})")
    if problems:
        raise ValueError(
            f"{name_a} and {name_b} have different architectures: " + "; ".join(problems)
        )


def module_of(name: str, depth: int | None = None) -> str:
    """Module that owns tensor ``name`` ("layer1.0.conv1.weight" → "layer1.0.conv1").

    With ``depth``, the module path is cut to its first ``depth`` components ("layer1.0" at
    depth 2). A tensor owned by the root module (e.g. ViT's "pos_embed") is its own module.
    """
    parts = name.split(".")
    path = parts[:-1]
    if not path:
        return name
    return ".".join(path if depth is None else path[:depth])


def module_distances(
    first: Weights,
    second: Weights,
    *,
    depth: int | None = None,
    keys: Iterable[str] | None = None,
    labels: tuple[str, str] = ("first", "second"),
) -> pl.DataFrame:
    """ℓ2 distance per module between two models' weights.

    ``first``/``second`` are modules (their parameters, no buffers) or state dicts (every
    floating-point entry, BatchNorm running statistics included; pass ``keys`` — e.g. the
    names of ``model.named_parameters()`` — to restrict). Integer buffers are skipped.

    Returns columns module, distance = ‖θ¹ − θ²‖₂, norm_first = ‖θ¹‖₂,
    relative = distance / norm_first (0 where norm_first is 0), numel; modules in the order
    of their first tensor.
    """
    check_same_architecture(first, second, labels)
    a, b = as_state(first), as_state(second)
    selected = list(a) if keys is None else list(keys)
    unknown = [k for k in selected if k not in a]
    if unknown:
        raise ValueError(f"keys not in {labels[0]} and {labels[1]}: {_preview(unknown)}")
    sums: dict[str, list[float]] = {}
    for key in selected:
        if not a[key].is_floating_point():
            continue
        ta, tb = a[key].detach().double(), b[key].detach().double().to(a[key].device)
        row = sums.setdefault(module_of(key, depth), [0.0, 0.0, 0])
        row[0] += float(((ta - tb) ** 2).sum())
        row[1] += float((ta**2).sum())
        row[2] += ta.numel()
    modules = list(sums)
    dist = [sums[m][0] ** 0.5 for m in modules]
    norm = [sums[m][1] ** 0.5 for m in modules]
    return pl.DataFrame(
        {
            "module": modules,
            "distance": dist,
            "norm_first": norm,
            "relative": [d / n if n > 0 else 0.0 for d, n in zip(dist, norm)],
            "numel": [int(sums[m][2]) for m in modules],
        },
        schema={
            "module": pl.String,
            "distance": pl.Float64,
            "norm_first": pl.Float64,
            "relative": pl.Float64,
            "numel": pl.Int64,
        },
    )


def _preview(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", … {len(items) - limit} more" if len(items) > limit else "")
