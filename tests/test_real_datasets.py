"""Downloaded datasets (cifar10, cub, cars, sst2) through their real code paths, offline: fixture
archives in the published layouts served from 127.0.0.1; plus the paper configs that use them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.fixtures_real import (
    LoopbackServer,
    cars_files,
    cifar10_archive,
    cub_archive,
    label_of,
    sst2_zip,
)
from transferscope.data import cars, cifar10, cub, download, load_split, read_manifest, sst2
from transferscope.data.registry import dataset_names, prepare_dataset
from transferscope.io import sha256_file

ROOT = Path(__file__).resolve().parents[1]
MODULES = {"cifar10": cifar10, "cub": cub, "cars": cars, "sst2": sst2}
TASKS, SPLITS = ("source", "target"), ("train", "test")
SMALL = {"cifar10": {"image_size": 16}, "cub": {"image_size": 32}, "cars": {"image_size": 24}}
CUB_PLAYERS = {"part_players": 4, "part_radius": 0.1}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Every fixture archive, built once and served from 127.0.0.1: (server, root, truths)."""
    root = tmp_path_factory.mktemp("served")
    truths = {
        "cifar10": cifar10_archive(root / "cifar-10-python.tar.gz"),
        "cub": cub_archive(root / "CUB_200_2011.tgz"),
        "cars": cars_files(root / "cars"),
        "sst2": sst2_zip(root / "SST-2.zip"),
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NO_PROXY", "127.0.0.1,localhost")  # never route the loopback via a proxy
        patch.setenv("no_proxy", "127.0.0.1,localhost")
        with LoopbackServer(root) as server:
            yield server, root, truths


def params_for(name: str, served, cache: Path, folder: str = "", **extra) -> dict:
    """Params pointing dataset ``name`` at the served archives (in ``folder``), pinned."""
    server, root, _ = served
    base = f"{folder}/" if folder else ""
    if name == "cars":
        files = {p: f"{base}cars/{f}" for p, f in cars.FILES.items()}
    else:
        files = {"": base + MODULES[name].FILES[""]}
    params = {"cache_dir": str(cache), **SMALL.get(name, {})}
    for prefix, rel in files.items():
        params[f"{prefix}url"] = server.url(rel)
        params[f"{prefix}sha256"] = sha256_file(root / rel)
    if name == "cub":
        params.update(CUB_PLAYERS)
    return {**params, **extra}


def cache_files(cache: Path) -> list[Path]:
    """The cached files, without the per-file fetch locks (empty once released)."""
    if not cache.exists():
        return []
    return sorted(p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


@pytest.fixture(scope="module")
def prepared(served, tmp_path_factory):
    """Each real dataset prepared once from the loopback server: {name: data dir}."""
    root = tmp_path_factory.mktemp("prepared")
    out = {}
    for name in MODULES:
        prepare_dataset(name, params_for(name, served, root / "cache"), root / name)
        out[name] = root / name
    return out


# ------------------------------------------------------------------------------------- contract


def test_registry_and_pinned_sources():
    assert set(MODULES) <= set(dataset_names())
    assert cifar10.DEFAULT_PARAMS["sha256"] == (
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
    )
    for module in (cifar10, cub, sst2):
        assert module.DEFAULT_PARAMS["url"].startswith("https://")
        assert download.SHA256_RE.match(module.DEFAULT_PARAMS["sha256"])
    # only the MD5 values of the original Stanford Cars files are published
    assert all(download.MD5_RE.match(cars.DEFAULT_PARAMS[f"{p}sha256"]) for p in cars.FILES)
    assert cars.DEFAULT_PARAMS["devkit_sha256"] == "md5:c3b158d763b6e2245038c8ad08e45376"


@pytest.mark.parametrize("name", list(MODULES))
def test_prepared_dataset_follows_the_format(prepared, served, name):
    _, _, truths = served
    data_dir = prepared[name]
    manifest = read_manifest(data_dir)
    assert manifest["name"] == name
    assert manifest["params"]["sha256" if name != "cars" else "devkit_sha256"]
    assert "TARGET task" in manifest["rules"]["source"]
    splits = {(t, s): load_split(data_dir, t, s) for t in TASKS for s in SPLITS}
    for split in SPLITS:
        target, source = splits[("target", split)], splits[("source", split)]
        assert len(torch.unique(target.y)) == len(target.classes)  # every class in every split
        k = manifest["params"]["source_per_class"]
        # source = the first k items of each class of the target split, in stored order
        first = [i for i, c in enumerate(target.y.tolist()) if target.y[:i].tolist().count(c) < k]
        assert source.y.tolist() == target.y[first].tolist()
        if manifest["modality"] == "image":
            size = manifest["params"]["image_size"]
            assert target.x.dtype == torch.uint8 and tuple(target.x.shape[1:]) == (3, size, size)
            assert torch.equal(source.x, target.x[first])
            # each image's colour encodes its class: images and labels stayed paired
            assert [label_of(x.numpy()) for x in target.x] == target.y.tolist()
        else:
            assert source.x == [target.x[i] for i in first]
    expected = {
        "cifar10": (5 * 8, 8),  # 5 batches and test_batch of 2 x 4 classes
        "cub": (9, 6),
        "cars": (6, 6),
        "sst2": (len(truths["sst2"]["train"]), len(truths["sst2"]["dev"])),
    }[name]
    assert (manifest["tasks"]["target"]["train"], manifest["tasks"]["target"]["test"]) == expected


def test_sst2_sentences_and_labels_match_the_tsv(prepared, served):
    truth = served[2]["sst2"]
    for split, tsv in (("train", "train"), ("test", "dev")):
        data = load_split(prepared["sst2"], "target", split)
        assert sorted(zip(data.x, data.y.tolist())) == sorted(truth[tsv])


def test_preparing_again_uses_the_cache_and_is_deterministic(prepared, served, tmp_path):
    server = served[0]
    cache = prepared["cifar10"].parent / "cache"
    before = len(server.requests)
    prepare_dataset("cifar10", params_for("cifar10", served, cache), tmp_path / "again")
    assert len(server.requests) == before  # the verified cached archive was reused
    assert sha256_file(tmp_path / "again/arrays.safetensors") == sha256_file(
        prepared["cifar10"] / "arrays.safetensors"
    )


def test_per_class_subsets(served, tmp_path):
    params = params_for("cifar10", served, tmp_path / "cache", train_per_class=3, test_per_class=1)
    prepare_dataset("cifar10", params, tmp_path / "c")
    for split, per_class in (("train", 3), ("test", 1)):
        y = load_split(tmp_path / "c", "target", split).y
        assert torch.bincount(y).tolist() == [per_class] * 4
        assert y.tolist() != sorted(y.tolist())  # stored shuffled, not sorted by class


def test_two_datasets_of_one_download_prepared_at_once_fetch_it_once(served, tmp_path):
    """cifar10 and its bicubic copy (datasets.<name>.generator) prepared side by side, as two
    Snakemake jobs are: the archive is downloaded once, the second job waits for it."""
    import threading

    server = served[0]
    cache = tmp_path / "cache"
    before = len(server.requests)
    errors = []

    def prepare(name, params):
        try:
            prepare_dataset(name, params, tmp_path / name)
        except Exception as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    base = params_for("cifar10", served, cache)
    jobs = [
        threading.Thread(target=prepare, args=("cifar10", base)),
        threading.Thread(
            target=prepare,
            args=("cifar10_bicubic", {**base, "generator": "cifar10", "interpolation": "bicubic"}),
        ),
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert not errors, errors
    assert len(server.requests) - before == 1
    assert (tmp_path / "cifar10_bicubic/manifest.json").is_file()


def test_fetch_dataset_downloads_once(served, tmp_path):
    server = served[0]
    params = params_for("sst2", served, tmp_path / "cache")
    (path,) = download.fetch_dataset("sst2", params)
    assert path == tmp_path / "cache/sst2/SST-2.zip" and sha256_file(path) == params["sha256"]
    before = len(server.requests)
    assert download.fetch_dataset("sst2", params) == [path]
    assert len(server.requests) == before
    with pytest.raises(ValueError, match="generated offline"):
        download.fetch_dataset("digits", {})
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'.*cifar10"):
        download.fetch_dataset("cifar100", {})


# ------------------------------------------------------------------------------------ bad input


def test_checksum_mismatch_names_file_and_hashes_and_leaves_nothing(served, tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(cifar10, "read_archive", lambda path: opened.append(path))
    wrong = "0" * 64
    params = params_for("cifar10", served, tmp_path / "cache", sha256=wrong)
    actual = sha256_file(served[1] / "cifar-10-python.tar.gz")
    with pytest.raises(ValueError) as err:
        prepare_dataset("cifar10", params, tmp_path / "data/cifar10")
    message = str(err.value)
    assert "cifar-10-python.tar.gz" in message and wrong in message and actual in message
    assert "datasets.cifar10.sha256" in message
    assert opened == []  # the pickles were never opened
    assert cache_files(tmp_path / "cache") == []  # no partial or temporary file in the cache
    assert not (tmp_path / "data").exists() or list((tmp_path / "data").iterdir()) == []


def md5_pins(served, folder: str = "cars") -> dict[str, str]:
    """``md5:`` pins of the served Stanford Cars files (the only checksums its publishers give)."""
    import hashlib

    root = served[1]
    return {
        f"{prefix}sha256": "md5:" + hashlib.md5((root / folder / name).read_bytes()).hexdigest()
        for prefix, name in cars.FILES.items()
    }


def test_md5_pins_are_accepted_and_checked(served, tmp_path):
    params = {**params_for("cars", served, tmp_path / "cache"), **md5_pins(served)}
    prepare_dataset("cars", params, tmp_path / "data")
    assert read_manifest(tmp_path / "data")["params"]["devkit_sha256"].startswith("md5:")
    with pytest.raises(ValueError, match=r"devkit_sha256='md5:abc'.*md5:<32 hex"):
        prepare_dataset("cars", {**params, "devkit_sha256": "md5:abc"}, tmp_path / "bad")


def test_a_corrupt_archive_fails_its_md5_naming_file_and_hash_before_unpacking(
    served, tmp_path, monkeypatch
):
    server, root, _ = served
    bad = root / "corrupt-md5/cars"  # served beside the intact files
    bad.mkdir(parents=True)
    for name in cars.FILES.values():
        data = (root / "cars" / name).read_bytes()
        if name == "cars_test.tgz":
            data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]  # one flipped byte
        (bad / name).write_bytes(data)
    pins = md5_pins(served)
    params = {**params_for("cars", served, tmp_path / "cache"), **pins}
    params["test_images_url"] = server.url("corrupt-md5/cars/cars_test.tgz")
    unpacked = []
    monkeypatch.setattr(cars, "read_devkit", lambda *a: unpacked.append(a))
    monkeypatch.setattr(cars, "read_images", lambda *a: unpacked.append(a))
    with pytest.raises(ValueError) as err:
        prepare_dataset("cars", params, tmp_path / "data")
    message = str(err.value)
    assert "cars_test.tgz" in message and pins["test_images_sha256"] in message
    assert "MD5" in message and "datasets.cars.test_images_sha256" in message
    assert unpacked == []  # nothing was read from any archive
    assert not (tmp_path / "cache/cars/cars_test.tgz").exists()


def test_files_placed_in_the_cache_by_hand_are_used_without_a_download(served, tmp_path):
    import shutil

    server, root, _ = served
    cache = tmp_path / "cache"
    (cache / "cars").mkdir(parents=True)
    for name in cars.FILES.values():
        shutil.copy(root / "cars" / name, cache / "cars" / name)
    params = {**params_for("cars", served, cache), **md5_pins(served)}
    params |= {f"{prefix}url": "http://127.0.0.1:9/gone" for prefix in cars.FILES}
    before = len(server.requests)
    prepare_dataset("cars", params, tmp_path / "data")
    assert len(server.requests) == before
    assert read_manifest(tmp_path / "data")["tasks"]["target"]["train"] > 0


def test_pickles_are_opened_only_after_verification(served, tmp_path):
    root = served[1]
    marker = tmp_path / "pickle_ran"
    (root / "evil").mkdir(exist_ok=True)
    cifar10_archive(root / "evil/cifar-10-python.tar.gz", payload=marker)
    # 1. served where the genuine archive is expected: the checksum fails, nothing is unpickled
    params = params_for("cifar10", served, tmp_path / "cache", folder="evil")
    with pytest.raises(ValueError, match="SHA-256"):
        prepare_dataset(
            "cifar10",
            {**params, "sha256": sha256_file(root / "cifar-10-python.tar.gz")},
            tmp_path / "a",
        )
    assert not marker.exists()
    # 2. even a pinned archive may hold only arrays: the code-running object is refused
    with pytest.raises(ValueError, match=r"data_batch_1.*refusing to unpickle global posix\.mkdir"):
        prepare_dataset("cifar10", params, tmp_path / "b")
    assert not marker.exists()


def test_a_corrupt_cached_file_is_replaced(served, tmp_path):
    cache = tmp_path / "cache"
    stale = cache / "sst2/SST-2.zip"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a zip")
    prepare_dataset("sst2", params_for("sst2", served, cache), tmp_path / "sst2")
    assert sha256_file(stale) == sha256_file(served[1] / "SST-2.zip")
    # a corrupt cached copy is deleted even when the fresh download fails its checksum too
    stale.write_bytes(b"half a zip")
    with pytest.raises(ValueError, match="SHA-256"):
        prepare_dataset("sst2", params_for("sst2", served, cache, sha256="1" * 64), tmp_path / "x")
    assert cache_files(cache) == []


def test_an_interrupted_download_resumes_where_it_stopped(served, tmp_path):
    server, root, _ = served
    cache = tmp_path / "cache"
    params = params_for("cub", served, cache)
    size = (root / "CUB_200_2011.tgz").stat().st_size
    server.truncate.add("CUB_200_2011.tgz")
    try:
        with pytest.raises(RuntimeError, match=r"CUB_200_2011\.tgz.*bytes are kept.*resume"):
            prepare_dataset("cub", params, tmp_path / "cub")
    finally:
        server.truncate.clear()
    # only the partial file is kept, under a name that is never read as the archive
    assert cache_files(cache) == [cache / "cub/CUB_200_2011.tgz.part"]
    assert (cache / "cub/CUB_200_2011.tgz.part").stat().st_size == size // 2
    assert not (tmp_path / "cub").exists()
    before = len(server.requests)
    prepare_dataset("cub", params, tmp_path / "cub")
    assert server.requests[before:] == ["CUB_200_2011.tgz"]
    assert server.ranges[before:] == [f"bytes={size // 2}-"]  # only the missing half was sent
    assert cache_files(cache) == [cache / "cub/CUB_200_2011.tgz"]
    assert read_manifest(tmp_path / "cub")["tasks"]["target"]["test"] == 6


def test_a_resumed_download_that_does_not_verify_is_deleted(served, tmp_path):
    cache = tmp_path / "cache"
    part = cache / "sst2/SST-2.zip.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"not the first bytes of SST-2.zip")  # resumed after the wrong bytes
    params = params_for("sst2", served, cache)
    with pytest.raises(ValueError, match=r"SST-2\.zip downloaded from .* pins"):
        prepare_dataset("sst2", params, tmp_path / "sst2")
    assert cache_files(cache) == []
    prepare_dataset("sst2", params, tmp_path / "sst2")  # the next run starts from scratch


def test_a_killed_downloads_temporary_file_is_removed_on_the_next_run(served, tmp_path):
    folder = tmp_path / "cache/sst2"
    folder.mkdir(parents=True)
    abandoned, active = folder / "tmpk1lled", folder / "tmpw0rking"
    abandoned.write_bytes(b"first half of a download")
    active.write_bytes(b"a download in progress")
    hour_ago = time.time() - 3600
    os.utime(abandoned, (hour_ago, hour_ago))
    prepare_dataset("sst2", params_for("sst2", served, tmp_path / "cache"), tmp_path / "sst2")
    assert not abandoned.exists() and active.exists()


BROKEN = [
    ("cifar10", "cifar-10-batches-py/test_batch"),
    ("cub", "CUB_200_2011/parts/part_locs.txt"),
    ("cub", "CUB_200_2011/images/002.Bird_1/Bird_1_0007.jpg"),
    ("cars", "devkit/cars_meta.mat"),
    ("sst2", "SST-2/dev.tsv"),
]


@pytest.mark.parametrize(("name", "member"), BROKEN)
def test_an_archive_missing_a_member_is_named(served, tmp_path, name, member):
    root = served[1]
    folder = f"broken_{BROKEN.index((name, member))}"
    (root / folder).mkdir(exist_ok=True)
    if name == "cifar10":
        cifar10_archive(root / folder / "cifar-10-python.tar.gz", omit={member.split("/")[-1]})
    elif name == "cub":
        cub_archive(root / folder / "CUB_200_2011.tgz", omit={member.split("/", 1)[1]})
    elif name == "cars":
        cars_files(root / folder / "cars", omit={member})
    else:
        sst2_zip(root / folder / "SST-2.zip", omit={member})
    params = params_for(name, served, tmp_path / "cache", folder=folder)
    with pytest.raises(ValueError, match=re.escape(member)) as err:
        prepare_dataset(name, params, tmp_path / name)
    assert "expected" in str(err.value) and str(tmp_path / "cache") in str(err.value)
    assert not (tmp_path / name).exists()


def test_unpinned_checksums_are_refused_before_any_download(served, tmp_path):
    server = served[0]
    params = params_for("cars", served, tmp_path / "cache")
    for prefix in cars.FILES:
        params[f"{prefix}sha256"] = None
    before = len(server.requests)
    with pytest.raises(ValueError) as err:
        prepare_dataset("cars", params, tmp_path / "cars")
    assert all(f"datasets.cars.{p}sha256" in str(err.value) for p in cars.FILES)
    assert len(server.requests) == before
    with pytest.raises(ValueError, match=r"datasets\.cars\.devkit_sha256='abc'.*64 hex"):
        prepare_dataset(
            "cars",
            {**params_for("cars", served, tmp_path / "c"), "devkit_sha256": "abc"},
            tmp_path / "c",
        )


def test_bad_params_are_named(served, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="tarin_per_class"):
        prepare_dataset(
            "cifar10", params_for("cifar10", served, cache, tarin_per_class=3), tmp_path / "a"
        )
    with pytest.raises(ValueError, match=r"datasets\.cub\.crop='tight'"):
        prepare_dataset("cub", params_for("cub", served, cache, crop="tight"), tmp_path / "b")
    with pytest.raises(ValueError, match=r"datasets\.cifar10\.image_size=4"):
        prepare_dataset(
            "cifar10", params_for("cifar10", served, cache, image_size=4), tmp_path / "c"
        )


# ------------------------------------------------------------------------------------- CUB parts


def test_too_few_cub_images_with_parts_stop_the_game_naming_the_keys(prepared):
    from transferscope.interactions.extract import interaction_params, prepare_game

    settings = {"model": {"source": "timm", "name": "resnet10t"}, "interactions": {"samples": 4}}
    with pytest.raises(ValueError) as err:  # the fixture has 3 test images with 4 usable parts
        prepare_game(settings, interaction_params(settings), prepared["cub"])
    message = str(err.value)
    assert "only 3 CUB test images have 4 visible parts" in message
    assert "interactions.samples = 4" in message and "part_radius = 0.1" in message
    settings["interactions"]["samples"] = 3
    game = prepare_game(settings, interaction_params(settings), prepared["cub"])
    assert len(game.sample_index) == 3 and game.meta["players"] == "cub_parts"


def expected_grid(p: int, size: int) -> tuple[float, float]:
    """Where the fixture puts part p, in the resized image (crop none)."""
    return (p % 5 + 1) * size / 6, (p // 5 + 1) * size / 4


def test_cub_parts_are_stored_in_resized_pixels(prepared):
    parts, info = cub.load_parts(prepared["cub"], "test")
    size = read_manifest(prepared["cub"])["params"]["image_size"]
    assert parts.shape == (6, 15, 3) and parts.dtype == torch.float32
    visible = (parts[..., 2] > 0).sum(1)
    assert sorted(visible.tolist()) == [2, 2, 2, 15, 15, 15]  # fixture: rich and poor images
    for image in parts:
        for p in torch.nonzero(image[:, 2] > 0).flatten().tolist():
            assert image[p, :2].tolist() == pytest.approx(expected_grid(p, size), abs=0.05)
        assert image[image[:, 2] == 0].abs().sum() == 0  # invisible parts are (0, 0, 0)
    assert info["names"][6] == "left eye" and len(info["names"]) == 15
    assert info["test_images"] == 6
    assert info["test_images_with_players"] == 3  # only the rich images have 4 usable parts
    assert info["test_images_with_at_least_k_visible"][2] == 6
    assert info["test_images_with_at_least_k_visible"][3] == 3
    assert info["radius_px"] == pytest.approx(0.1 * size)
    train_parts, _ = cub.load_parts(prepared["cub"], "train")
    assert len(train_parts) == read_manifest(prepared["cub"])["tasks"]["target"]["train"]


def test_cub_bbox_crop_moves_parts_and_hides_those_outside(served, tmp_path):
    prepare_dataset(
        "cub", params_for("cub", served, tmp_path / "cache", crop="bbox"), tmp_path / "cub"
    )
    parts, _ = cub.load_parts(tmp_path / "cub", "test")
    size = 32
    rich = parts[(parts[..., 2] > 0).sum(1) > 2]
    # box = (0.1 W, 0.2 H, 0.7 W, 0.7 H): grid columns 1-4 of 5 and rows 1-2 of 3 stay inside
    inside = [p for p in range(15) if p % 5 < 4 and p // 5 < 2]
    for image in rich:
        assert torch.nonzero(image[:, 2] > 0).flatten().tolist() == inside
        for p in inside:
            x = ((p % 5 + 1) / 6 - 0.1) / 0.6 * size
            y = ((p // 5 + 1) / 4 - 0.2) / 0.5 * size
            assert image[p, :2].tolist() == pytest.approx((x, y), abs=0.05)


def test_part_player_masks_are_disjoint_discs_in_priority_order():
    parts = torch.zeros(2, 15, 3)
    parts[0, [3, 5, 9, 12]] = torch.tensor(
        [[8.0, 8.0, 1], [24.0, 8.0, 1], [8.0, 24.0, 1], [10.0, 9.0, 1]]
    )  # part 12 is 2.2 px from part 3
    parts[1, [0, 1]] = torch.tensor([[5.0, 5.0, 1], [20.0, 20.0, 1]])
    priority = [12, 3, 5, 9] + [p for p in range(15) if p not in (12, 3, 5, 9)]
    chosen = cub.choose_parts(parts, 3, radius=6.0, priority=priority)
    assert chosen[0].tolist() == [12, 5, 9]  # 3 is skipped: within the radius of 12
    assert chosen[1].tolist() == [0, 1, -1]  # only two visible parts
    assert cub.usable_part_images(parts, 3, 6.0, priority).tolist() == [True, False]
    with pytest.raises(ValueError, match="1 of 2 images.*usable_part_images"):
        cub.part_player_masks(parts, 32, 6.0, 3, priority)
    masks = cub.part_player_masks(parts[:1], 32, 6.0, 3, priority)
    assert masks.shape == (1, 3, 32, 32) and masks.dtype == torch.bool
    assert masks.sum(1).max() <= 1  # disjoint
    assert (masks.sum((2, 3)) > 0).all()  # never empty
    rows, cols = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    for i, p in enumerate([12, 5, 9]):
        centre = parts[0, p]
        disc = (cols - centre[0]) ** 2 + (rows - centre[1]) ** 2 <= 36.0
        assert not (masks[0, i] & ~disc).any()  # inside its disc
        assert masks[0, i, int(centre[1]), int(centre[0])]  # holds its own part


# ----------------------------------------------------------------------------- paper configs

VISION = {"cub", "cars", "cifar10"}
VISION_MODELS = {"vgg16", "resnet50", "vit_small", "vit_base"}
TEXT_MODELS = {"bert-base-uncased", "distilbert-base-uncased"}


def test_paper_configs_hold_the_study_grid():
    from transferscope.config import load_config, training_settings

    paper = load_config(ROOT / "config/paper.yaml")
    # each vision dataset once per resize interpolation (the ViTs' copies are bicubic)
    generator = {d: (p or {}).get("generator", d) for d, p in paper["datasets"].items()}
    assert set(generator.values()) == VISION | {"sst2"} and len(paper["seeds"]) == 3
    assert paper["gpus_per_job"] == 1 and paper["device"] == "auto"
    vision = [d for d in paper["datasets"] if generator[d] in VISION]
    assert len(vision) == 6 and all(paper["datasets"][d]["image_size"] == 224 for d in vision)
    pairs = {(generator[e["dataset"]], e["model"]) for e in paper["experiments"].values()}
    assert pairs == {(d, m) for d in VISION for m in VISION_MODELS} | {
        ("sst2", "bert"),
        ("sst2", "distilbert"),
    }
    models = paper["models"]
    assert {m["name"] for m in models.values() if m["source"] == "huggingface"} == TEXT_MODELS
    assert all(m["pretrained"] is True for m in models.values())
    for exp in paper["experiments"]:
        assert training_settings(paper, exp, "pretrain")["epochs"] == 0  # imported weights
    small = load_config(ROOT / "config/paper-small.yaml")
    assert {
        (e["dataset"], small["models"][e["model"]]["name"]) for e in small["experiments"].values()
    } == {
        ("cifar10", "resnet50.tv_in1k"),
        ("sst2", "distilbert-base-uncased"),
    }
    assert small["gpus_per_job"] == 1 and small["datasets"]["cifar10"]["image_size"] == 224


def job_stats(text: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake dry run: {rule: count}."""
    block = text.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            break
        counts[fields[0]] = int(fields[1])
    return counts


def test_dry_run_lists_the_full_paper_grid(tmp_path):
    from transferscope.config import REGIMES, load_config, pretrained_seeds

    config = load_config(ROOT / "config/paper.yaml")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [Path(sys.executable).parent / "snakemake", "-n", "--snakefile", ROOT / "Snakefile",
         "-d", tmp_path, "--configfile", ROOT / "config/paper.yaml"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_stats(result.stdout + result.stderr)
    runs = len(config["experiments"]) * len(config["seeds"])
    assert runs == 14 * 3
    expected = dict.fromkeys(REGIMES, runs)
    expected["pretrain"] = len(config["experiments"]) * len(pretrained_seeds(config))
    assert {r: counts[r] for r in REGIMES} == expected
    assert counts["prepare_data"] == len(config["datasets"]) == 7  # 3 vision datasets twice
    assert counts["all"] == 1
    assert counts["total"] == sum(n for rule, n in counts.items() if rule != "total")
    assert not any(tmp_path.joinpath(d).exists() for d in ("data", "runs"))  # nothing ran
    assert not any(p.suffix == ".tgz" for p in tmp_path.rglob("*"))  # nothing downloaded
