"""Linear CKA: transferscope vs torch_cka 0.21 on the same features.

All layer pairs of two timm resnet10t models (1 input channel, 10 classes, different seeds)
on random 32 × 32 inputs. Two comparisons:

- features: features extracted once; torch_cka's per-pair loop (its `CKA._HSIC`, Gram and
  diagonal handling exactly as in `CKA.compare`) against `MinibatchCKA` on the same batches
  and against the full-sample debiased `cka_matrix`;
- end to end: `torch_cka.CKA.compare` (hooks, forward passes, HSICs) against
  `model_cka_matrix(..., minibatch=True)`.

Both estimate debiased CKA by averaging unbiased HSIC over minibatches, so the values must
agree up to torch_cka's float32 arithmetic. Prints a table and writes
results/benchmarks/cka.json.

    .venv/bin/python benchmarks/cka.py [--samples 512] [--batch 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch_cka import CKA as TorchCKA

from transferscope.analyses.cka import (
    MinibatchCKA,
    cka_matrix,
    layer_features,
    model_cka_matrix,
)
from transferscope.io import write_json

LAYERS = [
    "conv1",
    "act1",
    "maxpool",
    "layer1.0.act1",
    "layer1",
    "layer2.0.act1",
    "layer2",
    "layer3.0.act1",
    "layer3",
    "layer4.0.act1",
    "layer4",
    "global_pool",
    "fc",
]


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("resnet10t", num_classes=10, in_chans=1).eval()


def _best_of(repeats: int, fn):
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def torch_cka_on_features(feats_a, feats_b, batch: int) -> np.ndarray:
    """torch_cka's CKA.compare loop body on precomputed features (its own _HSIC)."""
    helper = TorchCKA.__new__(TorchCKA)  # _HSIC only reads .device
    helper.device = "cpu"
    names_a, names_b = list(feats_a), list(feats_b)
    n = feats_a[names_a[0]].shape[0]
    num_batches = n // batch
    hsic = torch.zeros(len(names_a), len(names_b), 3)
    for start in range(0, num_batches * batch, batch):
        for i, name_a in enumerate(names_a):
            x = feats_a[name_a][start : start + batch].flatten(1)
            k = x @ x.t()
            k.fill_diagonal_(0.0)
            hsic[i, :, 0] += helper._HSIC(k, k) / num_batches
            for j, name_b in enumerate(names_b):
                y = feats_b[name_b][start : start + batch].flatten(1)
                l_ = y @ y.t()
                l_.fill_diagonal_(0)
                hsic[i, j, 1] += helper._HSIC(k, l_) / num_batches
                hsic[i, j, 2] += helper._HSIC(l_, l_) / num_batches
    return (hsic[:, :, 1] / (hsic[:, :, 0].sqrt() * hsic[:, :, 2].sqrt())).numpy()


def ours_minibatch(feats_a, feats_b, batch: int) -> np.ndarray:
    metric = MinibatchCKA()
    n = next(iter(feats_a.values())).shape[0]
    for start in range(0, n - n % batch, batch):
        metric.update(
            {k: v[start : start + batch] for k, v in feats_a.items()},
            {k: v[start : start + batch] for k, v in feats_b.items()},
        )
    return metric.result()


def torch_cka_end_to_end(inputs: torch.Tensor, batch: int) -> np.ndarray:
    loader = DataLoader(TensorDataset(inputs), batch_size=batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = TorchCKA(_model(0), _model(1), "a", "b", LAYERS, LAYERS)
        reference.compare(loader)
    return reference.hsic_matrix.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks/cka.json")
    args = parser.parse_args()

    inputs = torch.randn(args.samples, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    model_a, model_b = _model(0), _model(1)
    feats_a = layer_features(model_a, inputs, LAYERS, batch_size=args.batch)
    feats_b = layer_features(model_b, inputs, LAYERS, batch_size=args.batch)
    widths = {name: int(f.shape[1]) for name, f in feats_a.items()}

    t_ref, ref = _best_of(args.repeats, lambda: torch_cka_on_features(feats_a, feats_b, args.batch))
    t_mb, mb = _best_of(args.repeats, lambda: ours_minibatch(feats_a, feats_b, args.batch))
    t_full, full = _best_of(args.repeats, lambda: cka_matrix(feats_a, feats_b, debiased=True))
    t_ref_e2e, ref_e2e = _best_of(args.repeats, lambda: torch_cka_end_to_end(inputs, args.batch))
    t_e2e, e2e = _best_of(
        args.repeats,
        lambda: model_cka_matrix(
            _model(0),
            _model(1),
            inputs,
            LAYERS,
            debiased=True,
            batch_size=args.batch,
            minibatch=True,
        ),
    )

    rows = [
        {
            "comparison": "features: torch_cka loop vs MinibatchCKA",
            "torch_cka_s": t_ref,
            "transferscope_s": t_mb,
            "speedup": t_ref / t_mb,
            "max_abs_diff": float(np.abs(ref - mb).max()),
        },
        {
            "comparison": "end to end: CKA.compare vs model_cka_matrix",
            "torch_cka_s": t_ref_e2e,
            "transferscope_s": t_e2e,
            "speedup": t_ref_e2e / t_e2e,
            "max_abs_diff": float(np.abs(ref_e2e - e2e).max()),
        },
        {
            "comparison": "features: torch_cka loop vs full-sample debiased cka_matrix",
            "torch_cka_s": t_ref,
            "transferscope_s": t_full,
            "speedup": t_ref / t_full,
            "max_abs_diff": float(np.abs(ref - full).max()),
        },
    ]
    header = (
        f"{'comparison':62s} {'torch_cka s':>11s} {'ours s':>8s} {'speedup':>8s} {'max|Δ|':>9s}"
    )
    print(
        f"resnet10t, {len(LAYERS)}×{len(LAYERS)} layer pairs, n={args.samples}, "
        f"batch={args.batch}, torch threads={torch.get_num_threads()}, best of {args.repeats}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['comparison']:62s} {r['torch_cka_s']:11.3f} {r['transferscope_s']:8.3f} "
            f"{r['speedup']:7.1f}× {r['max_abs_diff']:9.2e}"
        )
    write_json(
        Path(args.out),
        {
            "model": "timm resnet10t (in_chans=1, num_classes=10), seeds 0 and 1",
            "inputs": f"{args.samples} × 1 × 32 × 32 standard normal",
            "layers": widths,
            "samples": args.samples,
            "batch": args.batch,
            "repeats": args.repeats,
            "timing": "best of repeats, seconds, CPU",
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
