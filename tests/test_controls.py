"""Controls for "pre-training" (transferscope.controls): permuted weights keep each tensor's
statistics and lose its structure, permuted labels keep the data and the class counts, a control
that cannot run stops at config time naming its key, the workflow schedules the control jobs,
and the claim rows reach each verdict on planted tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from transferscope import controls
from transferscope.config import ConfigError, run_settings, validate_config

from .conftest import ROOT


def _config(smoke_config, **block) -> dict:
    raw = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    raw["controls"] = block
    return raw


# --------------------------------------------------------------------------- permuted weights


@pytest.fixture(scope="module")
def pretrained_and_control(smoke_config, prepared, tmp_path_factory):
    """The smoke config's pre-trained P (2 epochs on digits) and its permuted-weights control."""
    from transferscope.controls.weights import permute_weights_run
    from transferscope.training import train_run

    root = tmp_path_factory.mktemp("controls")
    settings = run_settings(smoke_config, "digits_resnet", "pretrain", 0)
    train_run(settings, prepared["digits"], root / "pretrain", threads=1, progress=False)
    config = validate_config(_config(smoke_config, permuted_weights=True))
    control = controls.permute_weights_settings(config, "digits_resnet", 0)
    permute_weights_run(control, prepared["digits"], root / "pretrain" / "summary.json",
                        root / "pretrain-permuted-weights", threads=1)  # fmt: skip
    return root / "pretrain", root / "pretrain-permuted-weights"


def _features(model, x):
    with torch.inference_mode():
        return model.eval().features(x=x).double()


@pytest.mark.slow  # trains P (2 epochs) and a probe: ~20 s alone on 2 cores
def test_permuted_weights_keep_each_tensors_statistics_and_lose_its_structure(
    smoke_config, prepared, pretrained_and_control, tmp_path
):
    from transferscope.analyses.cka import linear_cka
    from transferscope.controls.weights import is_permuted
    from transferscope.data import load_split, normalize_images, read_manifest
    from transferscope.models import build_model, load_checkpoint, load_model
    from transferscope.training import train_run
    from transferscope.workflow import final_checkpoint

    p_run, c_run = pretrained_and_control
    p_state, _ = load_checkpoint(final_checkpoint(p_run))
    c_state, meta = load_checkpoint(final_checkpoint(c_run))
    assert meta["control"] == "permuted-weights" and set(c_state) == set(p_state)
    moved = 0
    for name, p in p_state.items():
        c = c_state[name]
        if not is_permuted(name, p):  # BatchNorm statistics: re-estimated, not permuted
            assert name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
            continue
        # the same multiset of values: mean and norm are P's (up to summation order)
        assert torch.equal(p.flatten().sort().values, c.flatten().sort().values), name
        assert torch.allclose(c.double().mean(), p.double().mean(), rtol=1e-9, atol=1e-12)
        assert torch.allclose(c.double().norm(), p.double().norm(), rtol=1e-9)
        moved += int(p.unique().numel() > 1 and not torch.equal(p, c))
    assert moved > 10  # every tensor with distinct values was actually shuffled

    # structure: CKA of the backbone's features with P's, on target test images, against the
    # null of models P shares nothing with (independent initialisations, BatchNorm estimated
    # the same way); P with itself scores 1
    manifest = read_manifest(prepared["digits"])
    test = load_split(prepared["digits"], "target", "test")
    x = normalize_images(test.x[:128], manifest, None)
    train = normalize_images(load_split(prepared["digits"], "source", "train").x, manifest, None)
    p_model, _ = load_model(final_checkpoint(p_run))
    c_model, _ = load_model(final_checkpoint(c_run))
    fp = _features(p_model, x)
    assert linear_cka(fp, fp) == pytest.approx(1.0)
    from transferscope.controls.weights import reestimate_batchnorm

    null = []
    for seed in range(3):
        torch.manual_seed(100 + seed)
        fresh = build_model(meta["model"], meta["num_classes"], meta["in_chans"], pretrained=False)
        reestimate_batchnorm(fresh, {"x": train}, "cpu")
        null.append(linear_cka(fp, _features(fresh, x)))
    permuted = linear_cka(fp, _features(c_model, x))
    assert permuted < max(null) + 0.05, (permuted, null)
    assert permuted < 0.9

    # the control is a run like P's: a probe starts from it with --init
    settings = run_settings(smoke_config, "digits_resnet", "probe", 0)
    probe = train_run(settings, prepared["digits"], tmp_path / "probe",
                      final_checkpoint(c_run), threads=1, progress=False)  # fmt: skip
    recorded = json.loads((probe / "settings.json").read_text())["init_checkpoint_sha256"]
    summary = json.loads((c_run / "summary.json").read_text())
    assert recorded == summary["checkpoints"]["epoch_000.safetensors"]
    provenance = json.loads((c_run / "settings.json").read_text())
    assert (
        provenance["init_checkpoint_sha256"]
        == json.loads((p_run / "summary.json").read_text())["checkpoints"][
            json.loads((p_run / "summary.json").read_text())["final_checkpoint"]
        ]
    )


# --------------------------------------------------------------------------- permuted labels


def test_permuted_labels_keep_the_data_and_the_class_counts(smoke_config, prepared):
    from transferscope.controls.labels import permute_task_labels
    from transferscope.training import load_task

    config = validate_config(_config(smoke_config, permuted_labels=True))
    settings = controls.permuted_labels_settings(config, "digits_resnet", 0)
    data = load_task(prepared["digits"], "source", settings["model"])
    permuted = permute_task_labels(data, settings)
    assert torch.equal(permuted.train_inputs["x"], data.train_inputs["x"])  # same images, order
    assert torch.equal(permuted.test_y, data.test_y)  # test labels kept: accuracy = knowledge
    assert torch.equal(permuted.train_y.sort().values, data.train_y.sort().values)
    assert torch.equal(torch.bincount(permuted.train_y), torch.bincount(data.train_y))
    assert (permuted.train_y != data.train_y).float().mean() > 0.5  # labels no longer tied
    again = permute_task_labels(data, settings)
    assert torch.equal(again.train_y, permuted.train_y)  # a fixed seed
    # everything else about the run is P's: the settings differ only in what names the control
    plain = run_settings(config, "digits_resnet", "pretrain", 0)
    assert {k: v for k, v in settings.items() if k not in ("control", "permuted_labels")} == plain
    imported = dict(settings, training=dict(settings["training"], epochs=0))
    with pytest.raises(ValueError, match="controls.permuted_labels"):
        permute_task_labels(data, imported)


# --------------------------------------------------------------------------- configuration


def test_a_control_that_cannot_run_stops_at_config_time_naming_its_key(smoke_config, tmp_path):
    with pytest.raises(
        ConfigError, match=r"controls\.permuted_labels: experiment sentiment_minilm"
    ):
        validate_config(
            _config(smoke_config, permuted_labels=True, experiments=["sentiment_minilm"])
        )
    # permuting imported weights is possible
    validate_config(_config(smoke_config, permuted_weights=True, experiments=["sentiment_minilm"]))
    with pytest.raises(ConfigError, match=r"controls\.experiments: 'nope'"):
        validate_config(_config(smoke_config, permuted_weights=True, experiments=["nope"]))
    with pytest.raises(ConfigError, match=r"controls\.seeds: \[7\]"):
        validate_config(_config(smoke_config, permuted_weights=True, seeds=[7]))
    only_text = _config(smoke_config, permuted_labels=True)
    del only_text["experiments"]["digits_resnet"]
    with pytest.raises(ConfigError, match=r"controls\.permuted_labels: no experiment"):
        validate_config(only_text)
    # the default: off, nothing scheduled; on: the image experiments that pre-train
    default = validate_config(_config(smoke_config))
    assert controls.enabled(default) == [] and controls.control_runs(default) == []
    on = validate_config(_config(smoke_config, permuted_weights=True, permuted_labels=True))
    assert controls.experiments(on) == ["digits_resnet"]

    # under Snakemake (not a dry run): the run stops before any file is written
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"controls": {"permuted_labels": True,
                                                "experiments": ["sentiment_minilm"]}}))  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile", str(ROOT / "Snakefile"),
         "--directory", str(work), "--configfile", str(ROOT / "config" / "smoke.yaml"), str(bad)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "controls.permuted_labels" in result.stdout + result.stderr
    assert sorted(p.name for p in work.iterdir() if p.name != ".snakemake") == []


def test_dry_run_schedules_the_control_jobs_and_the_plan_prices_them(tmp_path):
    from transferscope import plan as ts_plan
    from transferscope.config import load_config

    overlay = tmp_path / "controls.yaml"
    overlay.write_text(yaml.safe_dump({"controls": {"permuted_weights": True,
                                                    "permuted_labels": True}}))  # fmt: skip
    work = tmp_path / "work"
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-F", "-p", "--workflow-profile", "none",
         "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
         "--configfile", str(ROOT / "config" / "smoke.yaml"), str(overlay)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    from .slurm_cluster import parse_dry_run

    dry = parse_dry_run(result.stdout + result.stderr)
    seeds = 2  # smoke: seeds [0, 1], controls on digits_resnet only
    expected = {
        "control_permute_weights": 1,
        "control_pretrain_permuted_labels": 1,
        "control_probe": 2 * seeds,
        "control_finetune": 2 * seeds,
        "control_interactions": 2 * seeds,
        "controls_evidence": 1,
    }
    assert {rule: dry.stats[rule] for rule in expected} == expected
    claims = next(j for j in dry.jobs if j.rule == "knowledge_claims")
    assert "--evidence-rows results/evidence/controls/claim_rows.parquet" in claims.shell
    commands = [j.shell for j in dry.jobs if j.rule.startswith("control")]
    assert all(c.startswith("transferscope ") for c in commands)  # every stage is the CLI
    finetunes = [j.shell for j in dry.jobs if j.rule == "control_finetune"]
    assert all("--tuned runs/digits_resnet/tuning/finetune.json" in c for c in finetunes)
    assert all("--init runs/digits_resnet/pretrain-permuted-" in c for c in finetunes)
    # the plan prices exactly these jobs
    merged = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    merged.update(yaml.safe_load(overlay.read_text()))
    path = tmp_path / "merged.yaml"
    path.write_text(yaml.safe_dump(merged))
    planned = ts_plan.plan(load_config(path), exact=False)
    counts = dict(zip(planned["rule"].to_list(), planned["jobs"].to_list()))
    assert {rule: counts.get(rule) for rule in expected} == expected
    assert controls.claim_rows_path() in __import__(
        "transferscope.workflow", fromlist=["x"]
    ).evidence_claim_rows(load_config(path))


# --------------------------------------------------------------------------- claims


def _planted(rng):
    """Accuracy and overlap tables of two experiments: on ``clear`` P is far better than the
    control on both counts, on ``same`` P and the control are indistinguishable."""
    acc, main, ctrl = [], [], []
    for experiment, gap in (("clear", 0.4), ("same", 0.0)):
        for seed in range(3):
            for control, regime, value in (
                ("", "finetune", 0.9), ("permuted-weights", "finetune", 0.9 - gap),
                ("", "scratch", 0.5), ("", "probe", 0.8),
                ("permuted-weights", "probe", 0.7), ("", "pretrain", 0.9),
                ("permuted-weights", "pretrain", 0.1),
            ):  # fmt: skip
                acc.append(dict(experiment=experiment, control=control, regime=regime,
                                seed=seed, task="target", test_accuracy=value, epochs=2))  # fmt: skip
            for kind in ("and", "or"):
                for sample in range(12):
                    noise = rng.normal(0, 0.05, 2)
                    common = dict(experiment=experiment, kind=kind, comparison="preserved",
                                  orders="all", seed=str(seed), sample=sample)  # fmt: skip
                    main.append(dict(common, excess=0.3 + noise[0]))
                    ctrl.append(dict(common, control="permuted-weights",
                                     excess=0.3 - gap + noise[1]))  # fmt: skip
    return pl.DataFrame(acc), pl.DataFrame(main), pl.DataFrame(ctrl)


def _status(experiments, unlearned=()):
    status = {}
    for experiment in experiments:
        for regime in ("pretrain", "probe", "finetune", "scratch", "probe-permuted-weights",
                       "finetune-permuted-weights", "pretrain-permuted-weights"):  # fmt: skip
            learned = (
                regime != "pretrain-permuted-weights" and (experiment, regime) not in unlearned
            )
            status[(experiment, regime)] = dict(accuracy=0.5, chance=0.1, p_value=0.01 if learned
                                                else 0.6, learned=learned, imported=False)  # fmt: skip
    return status


def test_claim_rows_reach_supported_and_not_distinguishable_on_planted_tables(tmp_path):
    from transferscope.controls.evidence import control_claims
    from transferscope.knowledge.claims import finalise, read_claim_rows, write_claim_rows

    accuracy, main, ctrl = _planted(np.random.default_rng(0))
    rows = control_claims(accuracy, main, ctrl, _status(["clear", "same"]),
                          {"clear": 200, "same": 200}, alpha=0.05, resamples=200)  # fmt: skip
    write_claim_rows(rows, tmp_path / "claim_rows.parquet")  # the stage's format
    table = finalise(read_claim_rows(tmp_path / "claim_rows.parquet"), 0.05)
    verdict = {(r["experiment"], r["claim"][:30], r["kind"]): r["verdict"]
               for r in table.iter_rows(named=True)}  # fmt: skip
    gain = "fine-tuning's gain needs P's k"
    kept = "fine-tuning preserves more of "
    not_p = "part of the gain is not P's kn"
    assert verdict[("clear", gain, "")] == "supported"
    assert verdict[("same", gain, "")] == "not distinguishable from the null"
    for kind in ("and", "or"):
        assert verdict[("clear", kept, kind)] == "supported"
        assert verdict[("same", kept, kind)] == "not distinguishable from the null"
    assert verdict[("same", not_p, "")] == "supported"  # 0.9 against scratch's 0.5
    assert verdict[("clear", not_p, "")] == "not distinguishable from the null"  # 0.5 vs 0.5

    # a control fine-tune that did not learn, or a control P that learned the source task:
    # every row that needs it is withheld, with the reason
    status = _status(["clear"], unlearned={("clear", "finetune-permuted-weights")})
    rows = control_claims(accuracy.filter(pl.col("experiment") == "clear"), main, ctrl, status,
                          {"clear": 200}, alpha=0.05, resamples=50)  # fmt: skip
    assert all("finetune-permuted-weights did not learn" in r["reason"] for r in rows)
    status = _status(["clear"])
    status[("clear", "pretrain-permuted-weights")]["learned"] = True
    rows = control_claims(accuracy.filter(pl.col("experiment") == "clear"), main, ctrl, status,
                          {"clear": 200}, alpha=0.05, resamples=50)  # fmt: skip
    assert all("not a knowledge-free control" in r["reason"] for r in rows)


def test_the_evidence_stage_reads_final_only_extractions(tmp_path):
    """An extraction of final epochs only is read as such (no consecutive-epoch check)."""
    from transferscope.knowledge.caches import seed_caches

    summary = tmp_path / "summary.json"
    caches = {"probe": ["probe/epoch_002.parquet"], "finetune": ["finetune/epoch_002.parquet"]}
    summary.write_text(json.dumps(dict(experiment="e", seed=0, caches=caches, final_only=True)))
    assert seed_caches(summary).caches == caches
    summary.write_text(json.dumps(dict(experiment="e", seed=0, caches=caches)))
    with pytest.raises(ValueError, match="not consecutive"):
        seed_caches(summary)


def test_control_paths_do_not_collide_with_other_runs(smoke_config):
    config = validate_config(_config(smoke_config, permuted_weights=True, permuted_labels=True))
    runs = controls.control_runs(config)
    assert "runs/digits_resnet/pretrain-permuted-labels/seed0/summary.json" in runs
    assert "runs/digits_resnet/finetune-permuted-weights/seed1/summary.json" in runs
    assert not set(runs) & set(__import__("transferscope.workflow", fromlist=["x"]).run_summaries(
        config
    ))  # fmt: skip
    pairs = controls.control_run_pairs(config).split()
    assert {p.split("=", 1)[1] for p in pairs} == set(runs)
    assert all(
        p.split("=", 1)[0] in p.split("=", 1)[1] for p in pairs
    )  # each run under its own control
    assert Path(controls.interactions_summary("e", "permuted-weights", 0)).parts[:3] == (
        "interactions", "e", "control-permuted-weights",
    )  # fmt: skip
