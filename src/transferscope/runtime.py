"""Devices, threads and determinism: one place that decides where and how tensors run."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; an explicit device that is absent is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device '{name}' requested but no CUDA device is visible; set device: auto or cpu"
        )
    return device


def setup(seed: int, threads: int | None = None) -> None:
    """Seed every generator and make CPU kernels deterministic for a fixed thread count."""
    if threads:
        torch.set_num_threads(int(threads))
    seed_everything(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries draw from the global RNG
    torch.manual_seed(seed)


def derived_seed(*parts: int | str) -> int:
    """A stable seed from several parts (e.g. run seed and epoch), independent of PYTHONHASHSEED."""
    import zlib

    return zlib.crc32("/".join(str(p) for p in parts).encode()) & 0x7FFFFFFF
