"""`transferscope plan`: job counts agree with Snakemake, costs follow the config, requests scale."""

from __future__ import annotations

import argparse
import copy

import pytest
import torch

from transferscope import plan as ts_plan
from transferscope.config import REGIMES, load_config
from transferscope.models import build_model, save_checkpoint

from .slurm_cluster import REPO, dry_run

CORE_RULES = {"prepare_data", *REGIMES}


@pytest.fixture(scope="module")
def smoke():
    return load_config(REPO / "config" / "smoke.yaml")


def counts(frame) -> dict[str, int]:
    return dict(zip(frame["rule"].to_list(), frame["jobs"].to_list()))


@pytest.mark.parametrize(
    "configfile", ["config/smoke.yaml", "config.yaml", "config.yaml config/evidence.yaml"]
)
def test_job_counts_equal_snakemake_dry_run(configfile):
    """Every rule of Snakemake's DAG is priced, with its job count: a rule the plan does not
    know fails here (it would silently get a default request). The evidence overlay merges
    into config.yaml as Snakemake merges it."""
    config = load_config(*(REPO / f for f in configfile.split()))
    planned = counts(ts_plan.plan(config, exact=False))
    actual = dry_run(configfile).stats
    assert set(planned) >= CORE_RULES
    assert not set(actual) - set(planned), "rules transferscope.plan does not price"
    assert not set(planned) - set(actual), "rules the plan prices that the workflow lacks"
    assert planned == actual


def test_job_counts_follow_seeds_experiments_and_datasets(smoke):
    base = counts(ts_plan.plan(smoke, exact=False))
    bigger = copy.deepcopy(smoke)
    bigger["seeds"] = [*smoke["seeds"], 7]
    bigger["experiments"]["digits_resnet_b"] = dict(smoke["experiments"]["digits_resnet"])
    grown = counts(ts_plan.plan(bigger, exact=False))
    experiments, seeds = len(bigger["experiments"]), len(bigger["seeds"])
    for rule in (*REGIMES, "interactions"):
        # one pre-trained run per experiment (pretrained_seed); every other regime per seed
        assert grown[rule] == experiments * (1 if rule == "pretrain" else seeds)
    assert grown["prepare_data"] == base["prepare_data"]  # the new experiment reuses digits
    assert grown["all"] == base["all"] == 1


def test_parameter_count_matches_the_built_model_and_checkpoint_size(smoke, tmp_path):
    spec = smoke["models"]["resnet"]
    counted = ts_plan.parameter_count(spec, num_classes=5, in_chans=1, exact=True)
    model = build_model(spec, 5, 1, pretrained=False)
    assert counted == sum(t.numel() for t in model.state_dict().values())
    path = tmp_path / "epoch_000.safetensors"
    save_checkpoint(path, model, {"epoch": 0})
    # storage model: one checkpoint ~ parameters x 4 bytes (fp32); header and int buffers aside
    assert counted * 4 <= path.stat().st_size <= counted * 4 * 1.05 + 64_000


def test_storage_grows_with_epochs_by_one_checkpoint_each(smoke):
    def storage(config, rule):
        frame = ts_plan.plan(config, exact=True)
        return frame.filter(frame["rule"] == rule)["storage_bytes"].item()

    longer = copy.deepcopy(smoke)
    longer["training"]["scratch"]["epochs"] += 1
    spec, dataset = smoke["models"]["resnet"], smoke["experiments"]["digits_resnet"]["dataset"]
    classes = ts_plan.dataset_size(dataset, smoke["datasets"][dataset]).classes["target"]
    params = ts_plan.parameter_count(spec, classes, 1, exact=True)
    # scratch epochs grow for digits_resnet only (sentiment_minilm sets its own), 2 seeds
    added = storage(longer, "scratch") - storage(smoke, "scratch")
    assert added == len(smoke["seeds"]) * params * 4


def test_more_data_costs_more_time_and_the_same_storage(smoke):
    frame = ts_plan.plan(smoke, exact=False)
    more = copy.deepcopy(smoke)
    more["datasets"]["digits"]["target_train_per_class"] = 50
    bigger = ts_plan.plan(more, exact=False)
    row, big = (f.filter(f["rule"] == "finetune").row(0, named=True) for f in (frame, bigger))
    assert big["cpu_hours"] > row["cpu_hours"] and big["gpu_hours"] > row["gpu_hours"]
    assert big["storage_bytes"] == row["storage_bytes"]


def test_job_request_doubles_with_attempt_and_has_floors(smoke):
    wildcards = {"experiment": "digits_resnet", "seed": 0}
    first = ts_plan.job_request(smoke, "pretrain", wildcards, attempt=1)
    second = ts_plan.job_request(smoke, "pretrain", wildcards, attempt=2)
    assert second == {"runtime": 2 * first["runtime"], "mem_mb": 2 * first["mem_mb"]}
    assert first["runtime"] >= ts_plan.MIN_RUNTIME_MIN and first["runtime"] % 5 == 0
    assert first["mem_mb"] >= ts_plan.BASE_MEM_MB
    assert ts_plan.job_request(smoke, "no_such_rule", {}) == ts_plan.DEFAULT_REQUEST


def test_job_request_follows_the_config_size(smoke):
    wildcards = {"experiment": "digits_resnet", "seed": "1"}
    small = ts_plan.job_request(smoke, "scratch", wildcards)
    big = copy.deepcopy(smoke)
    big["training"]["scratch"]["epochs"] = 2000
    big["datasets"]["digits"]["target_train_per_class"] = 150
    large = ts_plan.job_request(big, "scratch", wildcards)
    assert large["runtime"] > small["runtime"]


def test_gpu_config_runs_on_gpu_and_bad_device_settings_warn(smoke):
    gpu = dict(copy.deepcopy(smoke), device="auto", gpus_per_job=2)
    frame = ts_plan.plan(gpu, exact=False)
    where = dict(zip(frame["rule"], frame["runs_on"]))
    assert where["pretrain"] == where["interactions"] == "gpu"
    assert where["prepare_data"] == "cpu"
    one = ts_plan.plan(dict(gpu, gpus_per_job=1), exact=False)
    assert frame["gpu_hours"].sum() == pytest.approx(2 * one["gpu_hours"].sum())
    assert any(
        "gpus_per_job: 0" in w
        for w in ts_plan.warnings_for(dict(gpu, device="cuda", gpus_per_job=0))
    )
    assert any("never use" in w for w in ts_plan.warnings_for(dict(gpu, device="cpu")))
    assert ts_plan.warnings_for(gpu) == []


def test_dataset_without_size_formula_is_flagged(smoke, monkeypatch):
    monkeypatch.delitem(ts_plan.DATASET_SIZES, "digits")
    assert ts_plan.dataset_size("digits", {}).guessed
    assert any("digits" in w and "DATASET_SIZES" in w for w in ts_plan.warnings_for(smoke))


def test_a_dataset_named_apart_from_its_generator_uses_the_generators_formula(smoke):
    config = copy.deepcopy(smoke)
    config["datasets"]["digits_copy"] = {"generator": "digits", "seed": 1}
    assert not ts_plan.dataset_size("digits_copy", config["datasets"]["digits_copy"]).guessed
    assert not ts_plan.warnings_for(config)


def test_format_plan_lists_every_rule_and_the_totals(smoke):
    frame = ts_plan.plan(smoke, exact=False)
    text = ts_plan.format_plan(frame, smoke)
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["rule", "jobs"]
    for rule, jobs in counts(frame).items():
        assert any(line.split()[:2] == [rule, str(jobs)] for line in lines), rule
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1] == str(frame["jobs"].sum())


def test_cli_run_prints_the_plan_and_writes_csv(capsys, tmp_path):
    parser = argparse.ArgumentParser()
    ts_plan.add_arguments(parser)
    csv = tmp_path / "plan.csv"
    args = parser.parse_args(
        ["--configfile", str(REPO / "config" / "smoke.yaml"), "--nominal", "--csv", str(csv)]
    )
    ts_plan.run(args)
    out = capsys.readouterr().out
    assert "pretrain" in out and "total" in out
    assert csv.read_text().splitlines()[0].startswith("rule,jobs,runs_on")


def test_meta_device_count_leaves_no_default_device_behind(smoke):
    ts_plan.parameter_count(smoke["models"]["resnet"], 3, 1, exact=True)
    assert torch.empty(1).device.type == "cpu"


def test_plan_shows_the_requests_the_scheduler_gets(smoke):
    frame = ts_plan.plan(smoke, exact=True)
    for job in ts_plan.jobs(smoke, exact=False):
        if job.rule == "all":
            continue
        row = frame.filter(frame["rule"] == job.rule).row(0, named=True)
        req = ts_plan.job_request(smoke, job.rule, job.wildcards)
        assert req["runtime"] <= row["runtime_min"] and req["mem_mb"] <= row["mem_mb"], job


@pytest.mark.parametrize("name", ["paper.yaml", "paper-small.yaml"])
def test_paper_plans_work_offline_with_nominal_sizes_said(name, tmp_path, monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))  # none cached
    parser = argparse.ArgumentParser()
    ts_plan.add_arguments(parser)
    config = load_config(REPO / "config" / name)
    start = time.monotonic()
    frame = ts_plan.plan(config, exact=True)
    text = ts_plan.format_plan(frame, config)
    assert time.monotonic() - start < 120  # no Hub retries
    hub_models = {m["name"] for m in config["models"].values() if m["source"] == "huggingface"}
    for model in hub_models:
        assert f"({model}) is not in the local Hugging Face cache" in text
    assert "guessed" not in text and "DATASET_SIZES" not in text


def test_real_dataset_sizes_follow_their_published_splits_and_caps():
    cifar = ts_plan.dataset_size("cifar10", {"image_size": 224})
    assert (cifar.train["target"], cifar.test["target"], cifar.image_size) == (50_000, 10_000, 224)
    assert cifar.train["source"] == 20 and not cifar.guessed  # 2 placeholder images per class
    small = ts_plan.dataset_size("cifar10", {"train_per_class": 1000, "test_per_class": 200})
    assert (small.train["target"], small.test["target"]) == (10_000, 2_000)
    cub = ts_plan.dataset_size("cub", {"image_size": 224})
    assert cub.classes["target"] == 200 and cub.train["target"] == 5_994
    assert cub.stored_bytes == (5_994 + 5_794 + 800) * 3 * 224 * 224
    sst2 = ts_plan.dataset_size("sst2", {})
    assert sst2.modality == "text" and sst2.train["target"] == 67_349
    assert ts_plan.dataset_size("cars", {}).test["target"] == 8_041


def test_tagged_names_take_their_architectures_nominal_size():
    spec = {"source": "timm", "name": "vgg16.tv_in1k"}
    assert ts_plan.parameter_count(spec, 10, 3, exact=False) == ts_plan.NOMINAL_PARAMS["vgg16"][0]
    exact = ts_plan.parameter_count(spec, 10, 3, exact=True)
    assert abs(exact - ts_plan.NOMINAL_PARAMS["vgg16"][0]) < 0.01 * exact


def test_a_hub_model_in_the_local_cache_is_counted_exactly_without_the_network(
    tmp_path, monkeypatch
):
    import json

    from huggingface_hub import constants

    snapshot = tmp_path / "hub/models--example--tiny-bert/snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "hub/models--example--tiny-bert/refs").mkdir()
    (tmp_path / "hub/models--example--tiny-bert/refs/main").write_text("0" * 40)
    config = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 100}  # fmt: skip
    (snapshot / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    spec = {"source": "huggingface", "name": "example/tiny-bert", "pretrained": True}
    assert not ts_plan.uncounted(spec)
    stored, lookups = ts_plan.parameter_counts(spec, 2, 0, exact=True)
    built = build_model({**spec, "name": str(snapshot)}, 2, pretrained=False)
    assert stored == sum(t.numel() for t in built.state_dict().values())
    assert lookups > 0 and stored < 1e6  # not the nominal default
