"""The real-scale path: pre-trained models see their own pre-processing, fp32 games stay fp32,
one split becomes float32 without a second copy, checksums pinned as MD5 or SHA-256."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from transferscope.config import load_config
from transferscope.data import Split, dataset_mean_image, normalize_images
from transferscope.data.format import write_image_dataset
from transferscope.interactions.extract import interaction_params, prepare_game
from transferscope.models import build_model, image_preprocessing, load_checkpoint, save_checkpoint
from transferscope.training import encode_split

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = sorted((ROOT / "config").glob("paper*.yaml"))


def timm_models(path: Path) -> list[tuple[str, dict]]:
    config = yaml.safe_load(path.read_text())
    return [(label, spec) for label, spec in config["models"].items() if spec["source"] == "timm"]


PAPER_MODELS = [
    pytest.param(spec, id=f"{path.stem}:{label}")
    for path in PAPER_CONFIGS
    for label, spec in timm_models(path)
]


def tiny_dataset(out: Path, size: int = 8, seed: int = 0) -> Path:
    """A 3-channel image dataset of random pixels (2 classes, 4 images per split)."""
    rng = np.random.default_rng(seed)

    def split():
        return rng.integers(0, 256, (4, 3, size, size), dtype=np.uint8), np.array([0, 1, 0, 1])

    tasks = {task: {"train": split(), "test": split()} for task in ("source", "target")}
    classes = {task: ["a", "b"] for task in tasks}
    return write_image_dataset(out, "tiny", {}, tasks, classes)


def test_paper_configs_have_timm_models():
    assert len(PAPER_CONFIGS) >= 2 and all(timm_models(p) for p in PAPER_CONFIGS)


@pytest.mark.parametrize("spec", PAPER_MODELS)
def test_pretrained_models_see_their_own_normalisation_in_training_and_extraction(spec, tmp_path):
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec["name"])
    resolved = image_preprocessing(spec)
    assert resolved["mean"] == pytest.approx(list(cfg.mean))
    assert resolved["std"] == pytest.approx(list(cfg.std))
    assert resolved["input_size"] == list(cfg.input_size)

    data_dir = tiny_dataset(tmp_path / "data")
    from transferscope.data import load_split, read_manifest

    manifest = read_manifest(data_dir)
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)
    test = load_split(data_dir, "target", "test")
    expected = (test.x.float() / 255 - mean) / std
    trained_on = encode_split(test, manifest, spec)["x"]
    assert torch.allclose(trained_on, expected, atol=1e-6)
    # the dataset's own statistics would give other inputs: the test can tell them apart
    assert not torch.allclose(normalize_images(test.x, manifest), expected, atol=1e-3)

    settings = {"model": spec, "interactions": {"samples": 2, "grid": 2}}
    game = prepare_game(settings, interaction_params(settings), data_dir)
    assert torch.allclose(game.inputs["x"], expected[game.sample_index], atol=1e-6)
    # the "mean" baseline is the dataset's mean pixel in the model's units
    dataset_mean = torch.tensor(manifest["image"]["mean"]).view(3, 1, 1)
    assert torch.allclose(game.baseline, (dataset_mean - mean[0]) / std[0], atol=1e-6)
    assert spec["name"] in game.meta["baseline"]


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_image_sizes_equal_the_pretrained_input_size(path):
    config = load_config(path)
    for name, experiment in config["experiments"].items():
        resolved = image_preprocessing(config["models"][experiment["model"]])
        if resolved is not None:
            size = config["datasets"][experiment["dataset"]]["image_size"]
            assert resolved["input_size"][1:] == [size, size], name


def test_models_without_pretrained_weights_keep_the_dataset_statistics(tmp_path):
    config = load_config(ROOT / "config.yaml")
    assert all(image_preprocessing(spec) is None for spec in config["models"].values())
    data_dir = tiny_dataset(tmp_path / "data")
    from transferscope.data import read_manifest

    manifest = read_manifest(data_dir)
    x = torch.from_numpy(np.full((1, 3, 2, 2), 7, dtype=np.uint8))
    image = manifest["image"]
    mean = torch.tensor(image["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(image["std"]).view(1, 3, 1, 1)
    assert torch.equal(normalize_images(x, manifest), (x.float() / 255 - mean) / std)
    assert torch.equal(dataset_mean_image(manifest), torch.zeros(3, 1, 1))
    split = Split("target", "test", x, torch.tensor([0]), ["a", "b"])
    spec = config["models"]["resnet"]
    assert torch.equal(encode_split(split, manifest, spec)["x"], normalize_images(x, manifest))


def test_checkpoints_store_the_preprocessing_and_only_when_pretrained(tmp_path):
    small = {"source": "timm", "name": "resnet10t", "kwargs": {"channels": [8, 8, 8, 8]}}
    for pretrained in (True, False):
        spec = dict(small, pretrained=pretrained)
        model = build_model(spec, 2, pretrained=False)  # a scratch twin of a pre-trained model
        save_checkpoint(tmp_path / "c.safetensors", model, {"model": spec})
        meta = load_checkpoint(tmp_path / "c.safetensors")[1]
        if pretrained:
            assert meta["preprocessing"] == image_preprocessing(spec)
            assert meta["preprocessing"]["input_size"] == [3, 176, 176]
        else:
            assert "preprocessing" not in meta


def test_a_preprocessing_of_other_channels_is_refused(tmp_path):
    from transferscope.data import read_manifest

    manifest = read_manifest(tiny_dataset(tmp_path / "data"))
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="1 channels, dataset 'tiny' has 3"):
        normalize_images(x, manifest, {"mean": [0.5], "std": [0.5], "source": "x"})


PEAK_SCRIPT = """
import sys, numpy as np, torch
from transferscope.data import normalize_images

def high_water_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

n = int(sys.argv[1])
manifest = {"name": "g", "image": {"channels": 3, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.25]}}
x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (n, 3, 224, 224), dtype=np.uint8))
before = high_water_kb()
out = normalize_images(x, manifest)
print((high_water_kb() - before) * 1024, x.numel(), out.dtype)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_a_224px_split_becomes_float32_without_a_second_copy():
    n = 300  # 45 MB of uint8 images; the float32 copy itself is 4x that
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(n)], capture_output=True, text=True, check=True
    )
    grown, uint8_bytes, dtype = result.stdout.split()
    assert dtype == "torch.float32"
    # the float32 result (4x) plus less than 1.5x the uint8 array of temporaries; two float
    # copies would add 4x more
    assert int(grown) < 4 * int(uint8_bytes) + 1.5 * int(uint8_bytes)


# Snakemake's dry run starts every ready job without selecting among them; this records, for
# each set of jobs that become ready together, the ones its scheduler would start at once.
SCHEDULER_PROBE = """
import copy, json, sys
import snakemake.api  # noqa: F401 - imports snakemake.dag in the order it needs
from snakemake import dag

started = []
register_running = dag.DAG.register_running


def recorded(self, jobs):
    scheduler, ready = self.workflow.scheduler, list(jobs)
    if ready and scheduler is not None:
        chosen = scheduler.job_selector_greedy(
            ready, scheduler.remaining_jobs, copy.copy(scheduler.global_resources),
            {job: 0 for job in ready},
        )
        started.append([(job.rule.name, job.scheduler_resources.get("gpu", 0)) for job in chosen])
    return register_running(self, jobs)


dag.DAG.register_running = recorded
from snakemake.cli import main

try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("STARTED", json.dumps(started))
"""


def readme_command(config: str) -> list[str]:
    """The README's snakemake command for ``config``, as arguments."""
    import re
    import shlex

    readme = (ROOT / "README.md").read_text()
    (line,) = re.findall(rf"^snakemake --configfile {re.escape(config)} [^#\n]*", readme, re.M)
    return shlex.split(line)[1:]


def gpu_jobs_started_at_once(args: list[str]) -> list[int]:
    """GPUs held by the jobs Snakemake would start together, per scheduling round (dry run)."""
    import json

    result = subprocess.run(
        [sys.executable, "-c", SCHEDULER_PROBE, "-n", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    marker = [line for line in result.stdout.splitlines() if line.startswith("STARTED ")]
    assert marker and result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rounds = json.loads(marker[0][len("STARTED ") :])
    return [sum(gpu for _, gpu in jobs) for jobs in rounds]


@pytest.mark.slow
def test_the_readme_paper_small_command_never_runs_two_gpu_jobs_at_once():
    args = readme_command("config/paper-small.yaml")
    assert "--resources" in args and "gpu=1" in args
    assert max(gpu_jobs_started_at_once(args)) == 1
    # without the flag the workflow's own default holds it to one as well
    without = [a for a in args if a not in ("--resources", "gpu=1")]
    assert max(gpu_jobs_started_at_once(without)) == 1
    # with two GPUs two jobs start together (so the check above can fail)
    assert max(gpu_jobs_started_at_once([*without, "--resources", "gpu=2"])) == 2


SLOT_SCRIPT = """
import sys, time
from transferscope.runtime import gpu_slot
print(gpu_slot(["gpu-a", "gpu-b"], sys.argv[1], poll=0.1), flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_jobs_side_by_side_get_different_gpus_and_a_finished_job_frees_its_own(tmp_path):
    def start(hold: float):
        return subprocess.Popen(
            [sys.executable, "-c", SLOT_SCRIPT, str(tmp_path), str(hold)],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    first = start(60)
    first_slot = first.stdout.readline().strip()
    second = start(0)
    second_slot = second.stdout.readline().strip()
    second.wait(timeout=60)
    third = start(0)  # the finished job's device is free again; the first job's is still held
    third_slot = third.stdout.readline().strip()
    third.wait(timeout=60)
    first.kill()
    first.wait()
    assert {first_slot, second_slot} == {"0", "1"}
    assert third_slot == second_slot


def paper_variant(**datasets) -> dict:
    """config/paper.yaml with some dataset params replaced."""
    config = yaml.safe_load((ROOT / "config/paper.yaml").read_text())
    config["datasets"].update(datasets)
    return config


def test_a_fixed_size_model_on_other_sized_images_stops_at_config_check():
    from transferscope.config import ConfigError, validate_config

    # cub's default 64 px, for the ViTs' bicubic copy of it
    config = paper_variant(
        cub_bicubic={"generator": "cub", "part_players": 8, "interpolation": "bicubic"}
    )
    with pytest.raises(ConfigError) as err:
        validate_config(config, source="paper")
    message = str(err.value)
    assert "experiments.cub_vit_small" in message and "experiments.cub_vit_base" in message
    assert "datasets.cub_bicubic.image_size: 224" in message and "gives 64x64" in message
    assert "cub_resnet50" not in message  # a convolutional network takes any size


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_real_images_are_resized_with_the_interpolation_of_the_models_weights(path):
    """Each pre-trained timm model's dataset resizes with its pretrained_cfg's interpolation
    (ViTs bicubic, VGG / ResNet bilinear), and a mismatch stops at config check naming the key."""
    from timm.models import get_pretrained_cfg

    from transferscope.config import ConfigError, validate_config
    from transferscope.data.registry import dataset_params

    config = load_config(path)
    checked = 0
    for experiment in config["experiments"].values():
        model = config["models"][experiment["model"]]
        params = dataset_params(experiment["dataset"], config["datasets"][experiment["dataset"]])
        if model["source"] == "timm" and model.get("pretrained") is True:
            assert params["interpolation"] == get_pretrained_cfg(model["name"]).interpolation
            checked += 1
    assert checked
    if path.stem == "paper":
        swapped = paper_variant()
        swapped["experiments"]["cub_vit_small"]["dataset"] = "cub"
        with pytest.raises(ConfigError, match=r"datasets\.cub\.interpolation: bicubic"):
            validate_config(swapped, source="paper")


def test_the_resize_interpolation_is_the_one_configured():
    from PIL import Image

    from transferscope.data.cifar10 import _resize

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    bicubic = _resize(x, 64, "bicubic")
    expected = Image.fromarray(x[1].transpose(1, 2, 0)).resize((64, 64), Image.Resampling.BICUBIC)
    assert np.array_equal(bicubic[1], np.asarray(expected).transpose(2, 0, 1))
    assert not np.array_equal(bicubic, _resize(x, 64, "bilinear"))


def test_channels_and_modality_mismatches_stop_at_config_check():
    from transferscope.config import ConfigError, validate_config

    config = paper_variant(digits={})
    config["experiments"] = {"digits_resnet50": {"dataset": "digits", "model": "resnet50"}}
    with pytest.raises(ConfigError, match=r"expect 3-channel images, dataset 'digits' has 1"):
        validate_config(config)
    config["experiments"] = {"sst2_vgg16": {"dataset": "sst2", "model": "vgg16"}}
    with pytest.raises(ConfigError, match=r"takes image inputs but dataset 'sst2' holds text data"):
        validate_config(config)


def test_shipped_configs_pass_the_input_check():
    from snakemake.utils import update_config

    from transferscope.inputs import input_problems

    for path in [ROOT / "config.yaml", *sorted((ROOT / "config").glob("*.yaml"))]:
        config = yaml.safe_load(path.read_text())
        if "experiments" in config and "models" not in config:  # an overlay on config.yaml
            overlay, config = config, yaml.safe_load((ROOT / "config.yaml").read_text())
            update_config(config, overlay)
        if "experiments" in config:
            assert input_problems(config) == [], path.name


def test_resized_crops_keep_the_full_box_and_enlarge_a_part():
    from transferscope.data.augment import crop_boxes, resized_crops

    ramp = (
        torch.arange(8.0).view(1, 1, 1, 8).expand(2, 3, 8, 8).contiguous()
    )  # x grows to the right
    full = torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 2)
    same = resized_crops(ramp, full, torch.tensor([False, True]))
    assert torch.allclose(same[0], ramp[0]) and torch.allclose(same[1], ramp[1].flip(-1))
    left = resized_crops(ramp, torch.tensor([[0.0, 0.0, 4.0, 8.0]] * 2), torch.tensor([False] * 2))
    assert left.max() < 4 and (left[..., 1:] >= left[..., :-1]).all()  # the left half, stretched
    boxes = crop_boxes(500, 32, 24, torch.Generator().manual_seed(0))
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 24).all() and (boxes[:, 3] <= 32).all()
    share = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (32 * 24)
    assert share.min() < 0.2 and share.max() > 0.8 and (share <= 1 + 1e-6).all()


def test_augmentation_is_off_by_default_and_seeded_when_on(smoke_config, prepared, tmp_path):
    from transferscope.config import run_settings
    from transferscope.training import checkpoint_path, train_run

    def final_weights(augment, out):
        settings = run_settings(smoke_config, "digits_resnet", "scratch", 0)
        settings["training"] = dict(settings["training"], epochs=1)
        if augment is not None:
            settings["training"]["augment"] = augment
        train_run(settings, prepared["digits"], out, None, threads=1, progress=False)
        return load_checkpoint(checkpoint_path(out, 1))[0]

    plain, none = final_weights(None, tmp_path / "a"), final_weights("none", tmp_path / "b")
    first, again = (
        final_weights("crop_flip", tmp_path / "c"),
        final_weights("crop_flip", tmp_path / "d"),
    )
    assert all(torch.equal(plain[k], none[k]) for k in plain)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], plain[k]) for k in first)


def test_paper_configs_augment_finetuning_and_scratch_but_the_default_does_not():
    from transferscope.config import training_settings

    for path in PAPER_CONFIGS:
        config = load_config(path)
        for exp in config["experiments"]:
            for regime in ("finetune", "scratch"):
                assert training_settings(config, exp, regime).get("augment") == "crop_flip"
    default = load_config(ROOT / "config.yaml")
    for exp in default["experiments"]:
        for regime in ("pretrain", "probe", "finetune", "scratch"):
            assert training_settings(default, exp, regime).get("augment", "none") == "none"


def test_safetensors_streamed_byte_for_byte_as_safetensors_writes_them(tmp_path):
    from safetensors.torch import save

    from transferscope.data.format import write_safetensors

    rng = np.random.default_rng(0)
    arrays = {
        "target_train_x": rng.integers(0, 256, (3, 1, 4, 4), dtype=np.uint8),
        "target_train_y": np.arange(3, dtype=np.int64),
        "b": rng.random((2, 5)).astype(np.float32),
        "a": rng.random(3),
        "mask": rng.random(4) > 0.5,
        "ids": np.arange(6, dtype=np.int32).reshape(2, 3),
        "empty": np.zeros((0, 3), dtype=np.uint8),
    }
    write_safetensors(tmp_path / "x.safetensors", arrays)
    expected = save({k: torch.from_numpy(v) for k, v in arrays.items()})
    assert (tmp_path / "x.safetensors").read_bytes() == expected


def test_prepared_datasets_keep_their_content_hash(prepared):
    from safetensors import safe_open
    from safetensors.torch import save

    from transferscope.data import read_manifest
    from transferscope.io import sha256_bytes

    for name, data_dir in prepared.items():
        manifest = read_manifest(data_dir)
        if manifest["modality"] != "image":
            continue
        with safe_open(data_dir / "arrays.safetensors", framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        assert sha256_bytes(save(tensors)) == manifest["content_sha256"], name


def test_preparing_a_224px_split_peaks_below_one_and_a_half_times_its_images(tmp_path):
    import tracemalloc

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 100)
    tracemalloc.start()
    try:
        x = rng.integers(0, 256, (200, 3, 224, 224), dtype=np.uint8)  # 30 MB: the split
        small = {"train": (x[:2].copy(), y[:2]), "test": (x[:2].copy(), y[:2])}
        tasks = {"source": small, "target": {"train": (x, y), "test": (x[:2].copy(), y[:2])}}
        names = {t: ["a", "b"] for t in tasks}
        write_image_dataset(tmp_path / "warm", "small", {}, {t: small for t in tasks}, names)
        before = tracemalloc.get_traced_memory()[0]  # first-use imports done
        tracemalloc.reset_peak()
        write_image_dataset(tmp_path / "d", "big", {}, tasks, names)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert before >= x.nbytes  # the split itself is traced
    assert peak < 1.5 * x.nbytes  # no second copy of it (the file was built in memory before)


# The real loading code (timm's and transformers' own Hub clients) against a local Hub cache
# filled with random weights in the exact layout: what `pretrained: true` does offline.
HUB_SCRIPT = """
import sys, torch
from safetensors.torch import load_file
from transferscope.models import build_model, load_tokenizer
from transferscope.training import encode_split
from transferscope.data import Split

snapshot = sys.argv[1]
for name in sys.argv[2:]:
    spec = {"source": "timm", "name": name, "pretrained": True}
    model = build_model(spec, num_classes=3)
    cached = load_file(f"{snapshot}/models--timm--{name}/snapshots/HUB_COMMIT/model.safetensors")
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], cached[k]) for k in own), name
    assert model.preprocessing["mean"] == list(model.backbone.pretrained_cfg["mean"]), name
    print("timm", name, len(own))
spec = {"source": "huggingface", "name": "rehearsal/bert-shaped", "pretrained": True,
        "max_length": 16}
model = build_model(spec, num_classes=2)
cached = load_file(f"{snapshot}/models--rehearsal--bert-shaped/snapshots/HUB_COMMIT/model.safetensors")
own = model.backbone.state_dict()
assert set(cached) <= set(own) and len(cached) > 10
assert all(torch.equal(own[k], cached[k]) for k in cached)
ids = encode_split(Split("target", "test", ["a quietly moving film"], torch.tensor([1]), ["n", "p"]),
                   {"modality": "text"}, spec)["input_ids"]
tokens = load_tokenizer(spec).convert_ids_to_tokens(ids[0][:6].tolist())
print("bert", tokens)
"""


@pytest.mark.slow
def test_pretrained_true_loads_through_the_real_hub_code_from_a_local_cache(tmp_path):
    import os

    from tests.fixtures_real import HUB_COMMIT, bert_shaped_hub_model, timm_hub_weights

    cache = tmp_path / "hub"
    names = ["resnet50.tv_in1k", "vit_small_patch16_224.augreg_in21k_ft_in1k"]
    for name in names:
        timm_hub_weights(cache, name)
    bert_shaped_hub_model(cache, "rehearsal/bert-shaped", ["a", "quietly", "moving", "film"])
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
    script = HUB_SCRIPT.replace("HUB_COMMIT", HUB_COMMIT)
    result = subprocess.run(
        [sys.executable, "-c", script, str(cache), *names],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("timm ") == 2
    assert "bert ['[CLS]', 'a', 'quietly', 'moving', 'film', '[SEP]']" in result.stdout


def test_a_checkpoint_trained_with_other_normalisation_is_not_extracted(tmp_path):
    from transferscope.interactions.extract import Checkpoint, _check_checkpoint

    spec = {"source": "timm", "name": "resnet50.tv_in1k", "pretrained": True}
    ckpt = Checkpoint("finetune", 1, tmp_path / "epoch_001.safetensors", "0" * 64)
    current = {"model": spec, "preprocessing": image_preprocessing(spec)}
    _check_checkpoint(ckpt, current, "m", ["a"])  # as training writes it now: accepted
    with pytest.raises(ValueError, match="normalised with the dataset's statistics.*rerun"):
        _check_checkpoint(ckpt, {"model": spec}, "m", ["a"])  # written before: dataset stats
    _check_checkpoint(ckpt, {"model": dict(spec, pretrained=False)}, "m", ["a"])
