"""Devices, threads and determinism: one place that decides where and how tensors run."""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> CUDA when present, else CPU; an explicit device that is absent is an error.
    With several visible GPUs, 'auto' takes the first one no other job holds (:func:`gpu_slot`),
    so that jobs started side by side (``--resources gpu=N``) use different devices."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        if count == 1:
            return torch.device("cuda")
        ids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(count)]
        return torch.device("cuda", gpu_slot(ids))
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


_HELD_SLOTS: dict[str, tuple[int, object]] = {}  # lock directory -> (slot, open lock file)


def gpu_lock_dir() -> Path:
    """Where jobs on this machine record which GPU each holds (``$TRANSFERSCOPE_GPU_LOCKS``, else
    a per-user folder in the temporary directory)."""
    default = Path(tempfile.gettempdir()) / f"transferscope-gpus-{os.getuid()}"
    return Path(os.environ.get("TRANSFERSCOPE_GPU_LOCKS", default))


def gpu_slot(ids: list[str], lock_dir: str | Path | None = None, poll: float = 5.0) -> int:
    """Index of the first device in ``ids`` (stable device ids, e.g. UUIDs) that no other live
    process holds, held by this process until it exits (an ``fcntl`` lock the kernel drops when
    the holder dies, so a killed job frees its GPU). Waits while every device is taken."""
    import fcntl

    lock_dir = Path(lock_dir) if lock_dir is not None else gpu_lock_dir()
    if str(lock_dir) in _HELD_SLOTS:
        return _HELD_SLOTS[str(lock_dir)][0]
    lock_dir.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for index, device_id in enumerate(ids):
            handle = open(lock_dir / f"{device_id}.lock", "a+")  # noqa: SIM115 - held until exit
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            _HELD_SLOTS[str(lock_dir)] = (index, handle)
            return index
        if not waited:
            print(f"device auto: all {len(ids)} GPUs are held by other jobs; waiting for one "
                  f"(run with --resources gpu={len(ids)} to start no more jobs than GPUs)",
                  file=sys.stderr)  # fmt: skip
            waited = True
        time.sleep(poll)
