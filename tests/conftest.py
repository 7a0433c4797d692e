"""Shared fixtures: offline environment, the smoke config, and small prepared datasets."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def smoke_config() -> dict:
    from transferscope.config import load_config

    return load_config(ROOT / "config" / "smoke.yaml")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, smoke_config):
    """Prepare every dataset of the smoke config once per session: {name: directory}."""
    from transferscope.data import prepare_dataset

    root = tmp_path_factory.mktemp("data")
    out = {}
    for name, params in smoke_config["datasets"].items():
        prepare_dataset(name, params, root / name)
        out[name] = root / name
    return out


def tracked_copy(dest: Path) -> Path:
    """Copy the repository's tracked and new files (not ignored outputs) into ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in files:
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest
