"""Training regimes on the smoke config: checkpoints, determinism, resume, bad input."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from transferscope import training
from transferscope.config import run_settings
from transferscope.models import load_checkpoint, load_model
from transferscope.training import TrainingDiverged, checkpoint_path, train_run


def _train(smoke_config, prepared, tmp_path, regime, seed=0, init=None, experiment="digits_resnet"):
    settings = run_settings(smoke_config, experiment, regime, seed)
    dataset = smoke_config["experiments"][experiment]["dataset"]
    out = tmp_path / f"{experiment}-{regime}-{seed}"
    train_run(settings, prepared[dataset], out, init, threads=1, progress=False)
    return out


@pytest.fixture(scope="module")
def pretrained(smoke_config, prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return _train(smoke_config, prepared, root, "pretrain")


def test_every_regime_writes_every_epoch(smoke_config, prepared, pretrained, tmp_path):
    init = checkpoint_path(pretrained, 2)
    for regime in ("probe", "finetune", "scratch"):
        run = _train(smoke_config, prepared, tmp_path, regime, init=init)
        epochs = smoke_config["training"][regime]["epochs"]
        for epoch in range(epochs + 1):
            _, meta = load_checkpoint(checkpoint_path(run, epoch))
            assert meta["epoch"] == epoch and meta["regime"] == regime
        metrics = pl.read_csv(run / "metrics.csv")
        assert metrics["epoch"].to_list() == list(range(epochs + 1))
        summary = json.loads((run / "summary.json").read_text())
        assert summary["final_checkpoint"] == f"epoch_{epochs:03d}.safetensors"
        assert json.loads((run / "settings.json").read_text())["settings"]["regime"] == regime


def test_probe_keeps_backbone_and_finetune_starts_from_it(
    smoke_config, prepared, pretrained, tmp_path
):
    init = checkpoint_path(pretrained, 2)
    source, _ = load_checkpoint(init)
    probe = _train(smoke_config, prepared, tmp_path, "probe", init=init)
    finetune = _train(smoke_config, prepared, tmp_path, "finetune", init=init)
    final_probe, _ = load_checkpoint(checkpoint_path(probe, 2))
    start_ft, _ = load_checkpoint(checkpoint_path(finetune, 0))
    final_ft, _ = load_checkpoint(checkpoint_path(finetune, 2))
    backbone = [k for k in source if k.startswith("backbone.") and source[k].is_floating_point()]
    assert all(torch.equal(source[k], final_probe[k]) for k in backbone)  # frozen, BN stats too
    assert all(torch.equal(source[k], start_ft[k]) for k in backbone)
    assert any(not torch.equal(source[k], final_ft[k]) for k in backbone)  # fine-tuning moves it


def test_same_seed_same_bytes_and_resume_after_kill(smoke_config, prepared, tmp_path, monkeypatch):
    first = _train(smoke_config, prepared, tmp_path / "a", "scratch")
    second = _train(smoke_config, prepared, tmp_path / "b", "scratch")
    for epoch in range(3):
        assert (
            checkpoint_path(first, epoch).read_bytes()
            == checkpoint_path(second, epoch).read_bytes()
        )

    # a job killed during epoch 2 of a fresh run
    real_epoch = training._train_epoch

    def killed_in_epoch_2(*args):
        if args[5] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(training, "_train_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        _train(smoke_config, prepared, tmp_path / "c", "scratch")
    monkeypatch.setattr(training, "_train_epoch", real_epoch)
    killed = tmp_path / "c" / "digits_resnet-scratch-0"
    assert not checkpoint_path(killed, 2).exists() and not (killed / "summary.json").exists()
    epoch1 = checkpoint_path(killed, 1).stat().st_mtime_ns
    second = _train(smoke_config, prepared, tmp_path / "c", "scratch")
    assert checkpoint_path(second, 1).stat().st_mtime_ns == epoch1  # resumed, not retrained
    assert checkpoint_path(second, 2).read_bytes() == checkpoint_path(first, 2).read_bytes()
    assert pl.read_csv(second / "metrics.csv").equals(pl.read_csv(first / "metrics.csv"))


def test_changed_settings_restart_the_run(smoke_config, prepared, tmp_path):
    run = _train(smoke_config, prepared, tmp_path, "scratch")
    before = checkpoint_path(run, 1).read_bytes()
    settings = run_settings(smoke_config, "digits_resnet", "scratch", 0)
    settings["training"]["lr"] *= 3
    train_run(settings, prepared["digits"], run, threads=1, progress=False)
    assert checkpoint_path(run, 1).read_bytes() != before


def test_nan_loss_stops_naming_the_epoch(smoke_config, prepared, tmp_path):
    settings = run_settings(smoke_config, "digits_resnet", "scratch", 0)
    settings["training"].update(lr=1e30, optimizer="sgd", momentum=0.0)
    with pytest.raises(TrainingDiverged, match="in epoch 1"):
        train_run(settings, prepared["digits"], tmp_path / "nan", threads=1, progress=False)
    assert checkpoint_path(tmp_path / "nan", 0).exists()
    assert not checkpoint_path(tmp_path / "nan", 1).exists()
    assert not (tmp_path / "nan" / "summary.json").exists()


def test_corrupt_checkpoint_names_the_file(smoke_config, prepared, tmp_path):
    run = _train(smoke_config, prepared, tmp_path, "scratch")
    path = checkpoint_path(run, 1)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="epoch_001.safetensors is corrupt or truncated") as err:
        load_model(path)
    # the advice names the job's marker: deleting the file alone would not make Snakemake rerun it
    assert f"--forcerun {run / 'summary.json'}`" in str(err.value)


@pytest.mark.slow
def test_text_regimes_import_minilm_and_train(smoke_config, prepared, tmp_path):
    pre = _train(smoke_config, prepared, tmp_path, "pretrain", experiment="sentiment_minilm")
    assert json.loads((pre / "summary.json").read_text())["epochs"] == 0
    init = checkpoint_path(pre, 0)
    for regime in ("probe", "finetune", "scratch"):
        run = _train(
            smoke_config, prepared, tmp_path, regime, init=init, experiment="sentiment_minilm"
        )
        model, meta = load_model(checkpoint_path(run, meta_epochs := 1))
        assert meta["classes"] == ["negative", "positive"] and meta_epochs == 1
        assert model.modality == "text"
