"""Honest baselines: the validation split, the search's choice, its equal treatment of the two
regimes and the path of the chosen values into the final runs."""

from __future__ import annotations

import copy
import json
import math

import polars as pl
import pytest
import torch
import yaml

from transferscope import cli, tuning
from transferscope.config import ConfigError, load_config, run_settings
from transferscope.data import prepare_dataset
from transferscope.io import read_json
from transferscope.training import TaskData

from .conftest import ROOT, tracked_copy
from .test_workflow import job_counts, snakemake


def _with_tuning(config: dict, **tuning_block) -> dict:
    config = copy.deepcopy(config)
    config["tuning"] = {**config.get("tuning", {}), **tuning_block}
    return config


def test_validation_split_is_disjoint_stratified_and_deterministic():
    y = torch.tensor([0] * 10 + [1] * 5 + [2] * 7 + [3] * 1)
    kept, val = tuning.validation_indices(y, 0.2, seed=3)
    assert set(kept.tolist()).isdisjoint(val.tolist())
    assert sorted(kept.tolist() + val.tolist()) == list(range(len(y)))
    # round(0.2 n) of each class, at least one; a lone sample stays in training
    held = torch.bincount(y[val], minlength=4).tolist()
    assert held == [2, 1, 1, 0]
    again = tuning.validation_indices(y, 0.2, seed=3)
    assert torch.equal(again[0], kept) and torch.equal(again[1], val)
    others = [tuning.validation_indices(y, 0.2, seed=s)[1] for s in range(4, 10)]
    assert any(not torch.equal(o, val) for o in others)  # the seed draws the rows


def test_holdout_task_trains_on_kept_rows_and_reports_the_held_out_ones():
    y = torch.arange(40) % 4
    data = TaskData(
        {"x": torch.arange(40.0).reshape(40, 1)},
        y,
        {"x": torch.zeros(3, 1)},
        y[:3],
        list("abcd"),
        1,
    )
    split = tuning.holdout_task(data, 0.3, seed=0)
    train_rows = set(split.train_inputs["x"].flatten().tolist())
    val_rows = set(split.test_inputs["x"].flatten().tolist())
    assert train_rows.isdisjoint(val_rows) and len(train_rows | val_rows) == 40
    assert len(val_rows) == 12  # the real test set is not part of a search run
    assert torch.bincount(split.test_y).tolist() == [3, 3, 3, 3]
    assert torch.equal(split.train_y, y[split.train_inputs["x"].flatten().long()])


def test_both_regimes_get_the_identical_search(smoke_config):
    config = copy.deepcopy(smoke_config)
    config["training"]["finetune"]["epochs"] = 3  # finetune and scratch configured differently
    config = _with_tuning(config, lr_factors=[0.5, 2.0], weight_decay=[0.0, 0.1])
    for exp in config["experiments"]:
        fine = tuning.search_settings(config, exp, "finetune")
        scratch = tuning.search_settings(config, exp, "scratch")
        for key in ("lr_factors", "weight_decay"):
            assert fine[key] == scratch[key]
        assert fine["run"]["validation"] == scratch["run"]["validation"]
        assert fine["run"]["seed"] == scratch["run"]["seed"]
        epochs = {fine["run"]["training"]["epochs"], scratch["run"]["training"]["epochs"]}
        assert epochs == {tuning.search_epochs(config, exp)}
    assert tuning.search_epochs(config, "digits_resnet") == 3  # the larger of the two
    assert tuning.search_epochs(_with_tuning(config, epochs=5), "digits_resnet") == 5


@pytest.mark.parametrize(
    ("block", "key"),
    [
        ({"lr_factors": [1.0, -3.0]}, r"tuning\.lr_factors\[1\]"),
        ({"lr_factors": [0.0]}, r"tuning\.lr_factors\[0\]"),
        ({"weight_decay": [0.0, "big"]}, r"tuning\.weight_decay\[1\]"),
        ({"weight_decay": []}, r"tuning\.weight_decay"),
        ({"validation_fraction": 1.5}, r"tuning\.validation_fraction"),
    ],
)
def test_a_bad_grid_value_stops_naming_the_key(smoke_config, block, key):
    with pytest.raises(ConfigError, match=key):
        tuning.search_settings(_with_tuning(smoke_config, **block), "digits_resnet", "scratch")


def test_the_schema_refuses_a_bad_grid_naming_the_key(tmp_path):
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["tuning"] = {"enabled": True, "lr_factors": [1.0, -1.0]}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(Exception, match="lr_factors"):
        load_config(path)


def test_best_point_prefers_accuracy_then_the_smaller_lr_and_skips_diverged():
    def row(lr, wd, acc, diverged=False):
        return {"lr": lr, "weight_decay": wd, "validation_accuracy": acc, "diverged": diverged}

    rows = [row(1e-3, 0.0, 0.6), row(3e-3, 0.0, 0.8), row(1e-2, 0.0, 0.8), row(1.0, 0, 0.9, True)]
    assert tuning.best_point(rows)["lr"] == 3e-3  # 0.8 tie: the smaller lr
    rows.append(row(3e-3, 0.05, 0.8))
    assert tuning.best_point(rows)["weight_decay"] == 0.0
    with pytest.raises(RuntimeError, match="every grid point diverged"):
        tuning.best_point([row(1.0, 0.0, math.nan, True)])


@pytest.fixture(scope="module")
def digits(tmp_path_factory, smoke_config):
    """Digits with enough target samples (20 a class) for a validation split that can tell
    settings apart."""
    params = dict(smoke_config["datasets"]["digits"], target_train_per_class=20)
    out = tmp_path_factory.mktemp("data") / "digits"
    prepare_dataset("digits", params, out)
    return out


def test_search_picks_the_best_point_of_a_planted_grid(smoke_config, digits, tmp_path):
    # no learning (lr x 1e-5), the configured lr x 3, and one that diverges (lr x 1e30)
    config = _with_tuning(smoke_config, lr_factors=[1e-5, 3.0, 1e30], weight_decay=[0.0], epochs=6)
    settings = tuning.search_settings(config, "digits_resnet", "scratch")
    out, table = tmp_path / "tuning" / "scratch.json", tmp_path / "scratch.csv"
    choice = tuning.search(settings, digits, out, table, threads=1)
    frame = pl.read_csv(table)
    assert frame.height == 3 and frame["chosen"].sum() == 1
    by_factor = {r["lr_factor"]: r for r in frame.to_dicts()}
    assert by_factor[1e30]["diverged"] and not by_factor[1e30]["chosen"]
    assert choice["lr_factor"] == 3.0 and by_factor[3.0]["chosen"]
    assert by_factor[3.0]["validation_accuracy"] > by_factor[1e-5]["validation_accuracy"]
    assert choice["lr"] == pytest.approx(3.0 * settings["run"]["training"]["lr"])
    assert read_json(out) == json.loads(json.dumps(choice))
    assert not list(out.parent.glob(".*-search"))  # the grid points' checkpoints are gone


def test_the_choice_reaches_the_final_runs_settings(smoke_config, digits, tmp_path):
    choice = {
        "experiment": "digits_resnet",
        "regime": "scratch",
        "lr": 7.5e-4,
        "weight_decay": 0.05,
        "lr_factor": 0.25,
        "validation_accuracy": 0.7,
        "epochs": 2,
        "seed": 0,
    }
    tuned = tmp_path / "scratch.json"
    tuned.write_text(json.dumps(choice))
    settings = run_settings(smoke_config, "digits_resnet", "scratch", 1)
    settings["training"]["epochs"] = 1
    run = tmp_path / "run"
    args = ["train", "--settings", json.dumps(settings), "--data", str(digits)]
    cli.main([*args, "--out", str(run / "summary.json"), "--tuned", str(tuned), "--quiet"])
    recorded = read_json(run / "settings.json")["settings"]
    assert recorded["training"]["lr"] == 7.5e-4 and recorded["training"]["weight_decay"] == 0.05
    assert recorded["tuned"]["validation_accuracy"] == 0.7
    assert "validation" not in recorded  # the final run trains on the whole training set
    other = dict(choice, regime="finetune")
    tuned.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="digits_resnet/finetune"):
        cli.main([*args, "--out", str(tmp_path / "x" / "summary.json"), "--tuned", str(tuned)])


def test_without_tuning_the_workflow_is_unchanged(smoke_config, tmp_path):
    copy_root = tracked_copy(tmp_path / "repo")
    config = yaml.safe_load((copy_root / "config" / "smoke.yaml").read_text())
    on = snakemake(copy_root, "-n", "-F", "-p", "--configfile", "config/smoke.yaml").stdout
    config["tuning"]["enabled"] = False
    (copy_root / "config" / "off.yaml").write_text(yaml.safe_dump(config))
    off = snakemake(copy_root, "-n", "-F", "-p", "--configfile", "config/off.yaml").stdout
    experiments = len(smoke_config["experiments"])
    assert job_counts(on)["tune"] == 2 * experiments
    for exp in smoke_config["experiments"]:
        for regime in ("finetune", "scratch"):
            assert f"--tuned runs/{exp}/tuning/{regime}.json" in on
    assert "tune" not in job_counts(off) and "--tuned" not in off
    # disabled is the same workflow as a config without the key: the same jobs and commands
    del config["tuning"]
    (copy_root / "config" / "absent.yaml").write_text(yaml.safe_dump(config))
    absent = snakemake(copy_root, "-n", "-F", "-p", "--configfile", "config/absent.yaml").stdout
    assert job_counts(off) == job_counts(absent)
    commands = [
        sorted(line for line in dry.splitlines() if "transferscope train" in line)
        for dry in (off, absent)
    ]
    assert commands[0] == commands[1] and commands[0]


def test_every_run_compared_with_a_tuned_run_uses_the_same_choice():
    """The analyses' extra runs (block-shuffled, fine-tuned from an intermediate epoch) are held
    against the main fine-tune and scratch runs, so they read the same tuned settings; an untuned
    learning rate there would confound the early-checkpoint control and feature reuse."""
    from .slurm_cluster import dry_run

    jobs = dry_run("config/smoke.yaml").jobs
    regime_of = {
        "finetune": "finetune", "scratch": "scratch", "finetune_shuffled": "finetune",
        "scratch_shuffled": "scratch", "finetune_from_epoch": "finetune",
    }  # fmt: skip
    seen = set()
    for job in jobs:
        if job.rule in regime_of:
            seen.add(job.rule)
            experiment = job.files("output")[0].split("/")[1]
            choice = f"runs/{experiment}/tuning/{regime_of[job.rule]}.json"
            assert choice in job.files("input"), (job.rule, job.files("input"))
    assert seen == set(regime_of)
