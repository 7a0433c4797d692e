"""The real-scale path rehearsed offline (config/rehearsal.yaml): ResNet-50, ViT-S/16 and a BERT
loaded with ``pretrained: true`` through timm's and transformers' own Hub code from a local Hub
cache, CIFAR-10, CUB-200-2011 and SST-2 downloaded through their real code from fixture archives
in the published layouts served on 127.0.0.1 (docs/datasets.md), the whole workflow to the
report.

A corrupted archive failing its checksum, naming the file and the expected hash, before anything
is unpacked is tested in tests/test_real_datasets.py
(test_a_corrupt_archive_fails_its_md5_naming_file_and_hash_before_unpacking, and
test_checksum_mismatch_names_file_and_hashes_and_leaves_nothing for a SHA-256 pin).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT, tracked_copy
from tests.fixtures_real import (
    LoopbackServer,
    bert_shaped_hub_model,
    cifar10_archive,
    cub_archive,
    sst2_zip,
    timm_hub_weights,
)

CONFIG = ROOT / "config" / "rehearsal.yaml"
ARCHIVES = {"cifar10": "cifar-10-python.tar.gz", "cub": "CUB_200_2011.tgz", "sst2": "SST-2.zip"}
REAL_URLS = {  # the real sources the rehearsal config documents (docs/datasets.md)
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cub": "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
    "sst2": "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
}


def serve_fixtures(root: Path) -> list[str]:
    """The three fixture archives in ``root``; returns the words of the SST-2 sentences."""
    cifar10_archive(root / ARCHIVES["cifar10"], per_class=2, n_classes=4)
    cub_archive(root / ARCHIVES["cub"], n_classes=3, train_per_class=2, test_per_class=2)
    sentences = sst2_zip(root / ARCHIVES["sst2"], train_per_class=6, dev_per_class=3)
    return sorted({w.lower() for rows in sentences.values() for s, _ in rows for w in s.split()})


def fill_hub_cache(cache: Path, config: dict, words: list[str]) -> dict[str, dict]:
    """Random weights under every model's own Hub name, in the Hub cache layout: {label: state}."""
    states = {}
    for label, spec in config["models"].items():
        assert spec["pretrained"] is True  # the path rehearsed: the library's own downloads
        if spec["source"] == "timm":
            states[label] = timm_hub_weights(cache, spec["name"])
        else:
            states[label] = bert_shaped_hub_model(cache, spec["name"], words)
    return states


def served_config(config: dict, server: LoopbackServer, root: Path) -> dict:
    """The rehearsal config with each dataset's url and sha256 pointed at the served fixture."""
    from transferscope.io import sha256_file

    out = json.loads(json.dumps(config))
    for name, archive in ARCHIVES.items():
        assert out["datasets"][name]["url"] == REAL_URLS[name]  # the file documents the real path
        out["datasets"][name]["url"] = server.url(archive)
        out["datasets"][name]["sha256"] = sha256_file(root / archive)
    return out


def relative_rebuild_error(game: dict[str, np.ndarray]) -> float:
    """Largest relative error, over samples, of the AND-OR parts rebuilding v(T) - v(∅) + q(T)
    on every subset T (the check of tests/test_extract.py)."""
    import torch

    from transferscope.interactions import transforms as T

    i_and, i_or = (torch.from_numpy(game[k]).double() for k in ("I_and", "I_or"))
    v, q = (torch.from_numpy(game[k]).double() for k in ("v", "q"))
    target = v - v[:, :1] + q
    rebuilt = T.harsanyi_inverse(i_and) + T.or_inverse(i_or)
    scale = target.abs().amax(dim=1).clamp_min(1e-12)
    return float(((rebuilt - target).abs().amax(dim=1) / scale).max())


def test_the_rehearsal_config_names_the_real_sources_and_the_paper_models():
    from transferscope.config import load_config
    from transferscope.data.registry import dataset_module

    config = load_config(CONFIG)
    for name, params in config["datasets"].items():
        defaults = dataset_module(name).DEFAULT_PARAMS  # the real sources (docs/datasets.md)
        assert params["url"] == defaults["url"] == REAL_URLS[name]
        assert params["sha256"] == defaults["sha256"]
        assert params.get("image_size", 224) == 224
    paper = load_config(ROOT / "config" / "paper.yaml")["models"]
    for label, spec in config["models"].items():
        assert spec == paper[label], label
    assert {e["dataset"] for e in config["experiments"].values()} == set(ARCHIVES)
    assert config["training"]["pretrain"]["epochs"] == 0  # imported weights, as in paper.yaml


@pytest.mark.slow
def test_the_rehearsal_runs_the_real_path_offline_to_the_report(tmp_path):
    import polars as pl
    import torch
    from timm.models import get_pretrained_cfg

    from transferscope.knowledge.caches import load, seed_caches
    from transferscope.models import load_checkpoint

    config = yaml.safe_load(CONFIG.read_text())
    served, hub = tmp_path / "served", tmp_path / "hf" / "hub"
    served.mkdir()
    cached = fill_hub_cache(hub, config, serve_fixtures(served))
    repo = tracked_copy(tmp_path / "repo")
    env = dict(
        os.environ,
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_CACHE=str(hub),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TRANSFERSCOPE_CACHE=str(tmp_path / "downloads"),
        NO_PROXY="127.0.0.1,localhost",  # never route the loopback through a proxy
        no_proxy="127.0.0.1,localhost",
        MPLBACKEND="Agg",
    )
    started = time.time()
    with LoopbackServer(served) as server:
        configfile = repo / "rehearsal-served.yaml"
        configfile.write_text(yaml.safe_dump(served_config(config, server, served)))

        def snakemake(*args: str) -> None:
            result = subprocess.run(
                [sys.executable, "-m", "snakemake", *args, "--configfile", str(configfile)],
                cwd=repo, env=env, capture_output=True, text=True, timeout=1800,
            )  # fmt: skip
            logs = sorted((repo / "logs").rglob("*.log")) if (repo / "logs").is_dir() else []
            failed = [p for p in logs if "Traceback" in p.read_text(errors="replace")]
            tail = "".join(f"\n--- {p}\n{p.read_text(errors='replace')[-3000:]}" for p in failed)
            assert result.returncode == 0, result.stderr[-5000:] + tail

        snakemake("--cores", "2")
        snakemake("--report", "report.html")
        # every archive came from the loopback server, once
        assert sorted(server.requests) == sorted(ARCHIVES.values())

    experiments = config["experiments"]
    for exp, spec in experiments.items():
        # interaction caches: n = 4 players, and the AND-OR parts rebuild every subset's v
        caches = seed_caches(repo / f"interactions/{exp}/seed0/summary.json")
        assert set(caches.caches) >= {"probe", "finetune", "scratch"}, exp
        for regime, names in caches.caches.items():
            for name in names:
                cache = load(caches.directory / name)
                assert cache.meta["n_players"] == 4, (exp, name)
                assert cache.game["v"].shape == (config["interactions"]["samples"], 16)
                assert relative_rebuild_error(cache.game) < 1e-6, (exp, regime, name)
        players = load(caches.directory / caches.caches["finetune"][-1]).meta["game"]["players"]
        assert players == {"cifar10": "grid", "cub": "cub_parts", "sst2": "words"}[spec["dataset"]]

        # the imported weights are the Hub cache's: `pretrained: true` loaded them
        state = load_checkpoint(repo / f"runs/{exp}/pretrain/seed0/epoch_000.safetensors")[0]
        hub_state = cached[spec["model"]]
        shared = [k for k in hub_state if f"backbone.{k}" in state]
        assert len(shared) > 10 and len(shared) >= len(hub_state) - 2, (exp, len(shared))
        assert all(torch.equal(state[f"backbone.{k}"], hub_state[k]) for k in shared), exp

        # checkpoints record the model's own preprocessing (timm's pretrained_cfg), scratch too
        model = config["models"][spec["model"]]
        for regime in ("pretrain", "finetune", "scratch"):
            meta = load_checkpoint(repo / f"runs/{exp}/{regime}/seed0/epoch_000.safetensors")[1]
            if model["source"] != "timm":
                assert "preprocessing" not in meta, (exp, regime)
                continue
            cfg = get_pretrained_cfg(model["name"])
            assert meta["preprocessing"]["mean"] == pytest.approx(list(cfg.mean)), (exp, regime)
            assert meta["preprocessing"]["std"] == pytest.approx(list(cfg.std)), (exp, regime)
            assert meta["preprocessing"]["input_size"] == [3, 224, 224]
            if model["name"].startswith("vit_"):
                assert meta["preprocessing"]["mean"] == pytest.approx([0.5] * 3)
                assert meta["preprocessing"]["std"] == pytest.approx([0.5] * 3)

    for path in ("results/summary.md", "results/claims.parquet", "report.html"):
        assert (repo / path).stat().st_size > 0 and (repo / path).stat().st_mtime > started, path
    html = (repo / "report.html").read_text()
    assert all(exp in html for exp in experiments) and "Docutils System Messages" not in html
    claims = pl.read_parquet(repo / "results/claims.parquet")
    assert set(experiments) <= set(claims["experiment"])
    # the copy holds the default run's committed results/analyses/<exp>/: not this run's claims
    others = set(claims["experiment"]) - {*experiments, "all, within experiment", "theory"}
    assert not others, others
    metrics = json.loads((repo / "results/metrics.json").read_text())
    assert set(experiments) <= set(metrics) and "digits_resnet" not in metrics  # not stale
