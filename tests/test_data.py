"""Prepared datasets: format contract, determinism, planted rules, and errors on bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from transferscope.data import (
    digits,
    load_split,
    normalize_images,
    prepare_dataset,
    read_manifest,
    sentiment,
    shapes,
)
from transferscope.data.format import manifest_hash, write_image_dataset
from transferscope.data.registry import dataset_names
from transferscope.interactions.players import grid_bounds
from transferscope.io import sha256_file

TASKS, SPLITS = ("source", "target"), ("train", "test")
SMALL_SHAPES = {"train_per_class": 12, "target_train_per_class": 6, "test_per_class": 6}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Each dataset prepared once with its default params."""
    root = tmp_path_factory.mktemp("data")
    for name in ("digits", "shapes", "sentiment"):
        prepare_dataset(name, {}, root / name)
    return root


def load_all(data_dir):
    return {(t, s): load_split(data_dir, t, s) for t in TASKS for s in SPLITS}


# ------------------------------------------------------------------------------------- contract


def test_registry_lists_the_offline_datasets():
    assert {"digits", "shapes", "sentiment"} <= set(dataset_names())


@pytest.mark.parametrize("name", ["digits", "shapes", "sentiment"])
def test_manifest_matches_the_data(prepared, name):
    data_dir = prepared / name
    manifest = read_manifest(data_dir)
    modality = "text" if name == "sentiment" else "image"
    data_file = {"image": "arrays.safetensors", "text": "sentences.parquet"}[modality]
    assert manifest["name"] == name and manifest["modality"] == modality
    assert manifest["format_version"] == 1
    assert manifest["content_sha256"] == sha256_file(data_dir / data_file)
    assert data_file in manifest["files"] and manifest["rules"]
    module = {"digits": digits, "shapes": shapes, "sentiment": sentiment}[name]
    assert manifest["params"] == module.DEFAULT_PARAMS  # the full merged params are recorded
    for (task, split), data in load_all(data_dir).items():
        classes = manifest["tasks"][task]["classes"]
        assert len(data.x) == len(data.y) == manifest["tasks"][task][split] > 0
        assert data.classes == classes and (data.task, data.split) == (task, split)
        assert data.y.dtype == torch.int64
        assert 0 <= int(data.y.min()) and int(data.y.max()) < len(classes)
        assert len(torch.unique(data.y)) == len(classes)  # every class occurs in every split
        if modality == "image":
            image = manifest["image"]
            assert data.x.dtype == torch.uint8
            assert tuple(data.x.shape[1:]) == (image["channels"], image["height"], image["width"])
        else:
            assert all(isinstance(text, str) and text for text in data.x)


@pytest.mark.parametrize("name", ["digits", "shapes"])
def test_image_stats_and_normalization(prepared, name):
    manifest = read_manifest(prepared / name)
    train = torch.cat([load_split(prepared / name, t, "train").x for t in TASKS])
    pixels = train.double() / 255
    assert manifest["image"]["mean"] == pytest.approx(pixels.mean(dim=(0, 2, 3)).tolist())
    assert manifest["image"]["std"] == pytest.approx(
        pixels.std(dim=(0, 2, 3), correction=0).tolist()
    )
    normalized = normalize_images(train, manifest)
    assert normalized.dtype == torch.float32 and normalized.shape == train.shape
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-4)  # baseline = dataset mean
    assert normalized.std().item() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="uint8"):
        normalize_images(train.float(), manifest)


@pytest.mark.parametrize(
    ("name", "params"),
    [("digits", {}), ("shapes", SMALL_SHAPES), ("sentiment", {"source_train": 60, "test": 40})],
)
def test_deterministic_given_seed(tmp_path, name, params):
    shas = {}
    for label, seed in (("a", 3), ("b", 3), ("c", 4)):
        prepare_dataset(name, {**params, "seed": seed}, tmp_path / label)
        shas[label] = read_manifest(tmp_path / label)["content_sha256"]
    assert shas["a"] == shas["b"] != shas["c"]
    assert manifest_hash(tmp_path / "a") == manifest_hash(tmp_path / "b")
    assert manifest_hash(tmp_path / "a") != manifest_hash(tmp_path / "c")


# ------------------------------------------------------------------------------------------ digits


def test_digits_tasks_are_disjoint_and_labelled_correctly(prepared):
    manifest = read_manifest(prepared / "digits")
    source, target = (set(manifest["tasks"][t]["classes"]) for t in TASKS)
    assert source and target and not source & target
    images, labels = digits.load_images(manifest["params"]["image_size"])
    digit_of = {}
    for image, digit in zip(images, labels):
        digit_of.setdefault(image.tobytes(), set()).add(str(digit))
    seen = 0
    for (task, split), data in load_all(prepared / "digits").items():
        for image, label in zip(data.x.numpy(), data.y.tolist()):
            assert data.classes[label] in digit_of[image.tobytes()]  # the label names its digit
        seen += len(data.y)
        if (task, split) == ("target", "train"):
            per_class = torch.bincount(data.y).tolist()
            assert per_class == [manifest["params"]["target_train_per_class"]] * len(target)
    # Every image of the ten digits is used exactly once across the four splits.
    assert seen == len(labels)


def test_digits_rejects_overlapping_classes(tmp_path):
    with pytest.raises(ValueError, match="disjoint"):
        prepare_dataset("digits", {"target_classes": [4, 5, 6]}, tmp_path / "d")
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------------------ shapes


def rule_holds(rule, cells):
    """Independent evaluator of a manifest rule on {cell: glyph}."""
    present = [cells.get(p["cell"]) == p["part"] for p in rule["present"]]
    absent = [cells.get(p["cell"]) == p["part"] for p in rule["absent"]]
    if rule["type"] == "or":
        return any(present)
    assert rule["type"] in ("and", "and_not")
    return all(present) and not any(absent)


def decode(row):
    return {c: shapes.GLYPHS[g] for c, g in enumerate(row) if g >= 0}


def check_shapes(rules, params, generated):
    """Every image satisfies exactly its class's rule; part cells are bright, empty cells dark."""
    grid, size = params["grid"], params["image_size"]
    bounds = grid_bounds(size, grid)
    dark = params["noise"] * 255 + 1
    bright = shapes.INTENSITY_RANGE[0] * 255 - 1
    for task, splits in generated.items():
        for x, y, placements in splits.values():
            for row, label in zip(placements, y):
                cells = decode(row)
                assert [rule_holds(r, cells) for r in rules[task]] == [
                    i == label for i in range(len(rules[task]))
                ]
            for cell in range(grid * grid):
                (r0, r1), (c0, c1) = bounds[cell // grid], bounds[cell % grid]
                peak = x[:, :, r0:r1, c0:c1].max(axis=(1, 2, 3))
                has_part = placements[:, cell] >= 0
                assert (peak[has_part] >= bright).all()
                assert (peak[~has_part] <= dark).all()


def test_shapes_images_follow_their_rules(prepared):
    manifest = read_manifest(prepared / "shapes")
    params, rules = manifest["params"], manifest["rules"]
    generated = shapes.generate(params)
    for task in TASKS:  # the prepared data is exactly what the generator (with placements) made
        assert [r["class"] for r in rules[task]] == manifest["tasks"][task]["classes"]
        for split in SPLITS:
            data = load_split(prepared / "shapes", task, split)
            assert np.array_equal(data.x.numpy(), generated[task][split][0])
            assert np.array_equal(data.y.numpy(), generated[task][split][1])
    check_shapes(rules, params, generated)


def test_shapes_rules_need_their_logic(prepared):
    """Decoys make the logic necessary: an AND's single parts and a NOT-ed part occur elsewhere."""
    manifest = read_manifest(prepared / "shapes")
    rules = manifest["rules"]
    generated = shapes.generate(manifest["params"])
    for task in TASKS:
        _, y, placements = generated[task]["train"]
        images = [decode(row) for row in placements]
        for label, rule in enumerate(rules[task]):
            players = {p["cell"] for p in rule["present"] + rule["absent"]}
            assert rule["players"] == sorted(players)
            own = [cells for cells, lab in zip(images, y) if lab == label]
            others = [cells for cells, lab in zip(images, y) if lab != label]
            hits = [[cells.get(p["cell"]) == p["part"] for p in rule["present"]] for cells in own]
            if rule["type"] == "or":  # each alternative alone suffices, and both occur together
                for i in range(len(rule["present"])):
                    assert [i] in [[j for j, hit in enumerate(h) if hit] for h in hits]
                assert any(all(h) for h in hits)
                continue
            for part in rule["present"]:  # each single part of an AND also occurs elsewhere
                assert any(cells.get(part["cell"]) == part["part"] for cells in others)
            if rule["type"] == "and_not":  # its present parts also appear WITH the absent ones
                assert any(
                    all(cells.get(p["cell"]) == p["part"] for p in rule["present"] + rule["absent"])
                    for cells in others
                )
    parts = {
        t: {(p["part"], p["cell"]) for r in rules[t] for p in r["present"] + r["absent"]}
        for t in TASKS
    }
    listed = {
        k: {(p["part"], p["cell"]) for p in rules[k]}
        for k in ("shared", "source_only", "target_only")
    }
    assert listed["shared"] == parts["source"] & parts["target"] != set()
    assert listed["target_only"] == parts["target"] - parts["source"] != set()
    assert listed["source_only"] == parts["source"] - parts["target"]
    signatures = {
        t: {json.dumps([r["type"], r["present"], r["absent"]], sort_keys=True) for r in rules[t]}
        for t in TASKS
    }
    assert signatures["source"] & signatures["target"]  # a whole source rule recurs in the target


def test_shapes_other_grid_and_colour():
    params = {**shapes.DEFAULT_PARAMS, **SMALL_SHAPES, "grid": 4, "channels": 3, "image_size": 28}
    generated = shapes.generate(params)
    x = generated["source"]["train"][0]
    assert x.shape == (4 * 12, 3, 28, 28) and x.dtype == np.uint8
    rules = shapes.rules_manifest(4)
    assert all(0 <= c < 16 for t in TASKS for r in rules[t] for c in r["players"])
    check_shapes(rules, params, generated)


# --------------------------------------------------------------------------------------- sentiment


def parse_label(text, vocab):
    """Independent reading of the planted rule; asserts the sentence is well formed."""
    positive, negative = set(vocab["positive_words"]), set(vocab["negative_words"])
    negations, intensifiers = set(vocab["negations"]), set(vocab["intensifiers"])
    resolved, negate = [], False
    for word in text.split(" "):
        if word in negations:
            assert not negate, text
            negate = True
        elif word in positive or word in negative:
            resolved.append(int(word in positive) ^ int(negate))
            negate = False
        elif word not in intensifiers:
            assert not negate, f"dangling negation in {text!r}"
    assert resolved and len(set(resolved)) == 1, text
    return resolved[0]


def test_sentiment_negation_flips_and_intensifier_does_not():
    params = sentiment.DEFAULT_PARAMS
    for word in sentiment.POSITIVE + sentiment.NEGATIVE:
        plain = sentiment.phrase_label(word)
        for negation in sentiment.NEGATIONS:
            assert sentiment.phrase_label(word, negation) == 1 - plain
        assert sentiment.phrase(word, "not", "very") == ["not", "very", word]
    rng = np.random.default_rng(0)
    for negation_prob in (0.0, 1.0):
        for label in (0, 1):
            words = sentiment.sample_phrase(rng, label, {**params, "negation_prob": negation_prob})
            # Always negated -> the word's own polarity is the opposite of the label.
            assert sentiment.polarity(words[-1]) == label ^ int(negation_prob == 1.0)
            assert (words[0] in sentiment.NEGATIONS) == (negation_prob == 1.0)


def test_sentiment_labels_follow_the_rule(prepared):
    manifest = read_manifest(prepared / "sentiment")
    vocab = manifest["rules"]
    nouns = {
        t: set(vocab["domains"][t]["nouns"]) | set(vocab["domains"][t]["venues"]) for t in TASKS
    }
    for task in TASKS:
        texts = []
        for split in SPLITS:
            data = load_split(prepared / "sentiment", task, split)
            assert data.classes == ["negative", "positive"]
            for text, label in zip(data.x, data.y.tolist()):
                assert parse_label(text, vocab) == label
                words = set(text.split(" "))
                assert len(text.split(" ")) <= vocab["max_words"]
                assert words & nouns[task] and not words & nouns[TASKS[1 - TASKS.index(task)]]
            counts = torch.bincount(data.y).tolist()
            assert abs(counts[0] - counts[1]) <= 1
            negated = [any(n in t.split(" ") for n in vocab["negations"]) for t in data.x]
            assert any(negated) and not all(negated)  # both plain and negated sentences occur
            texts += data.x
        assert len(set(texts)) == len(texts)  # unique within a task: no train/test leakage


# --------------------------------------------------------------------------------------- bad input


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'.*digits"):
        prepare_dataset("imagenet", {}, tmp_path / "x")


@pytest.mark.parametrize("name", ["digits", "shapes", "sentiment"])
def test_unknown_param_key(tmp_path, name):
    with pytest.raises(ValueError, match=r"unknown param.*'tarin_size'.*allowed.*'seed'"):
        prepare_dataset(name, {"tarin_size": 3}, tmp_path / "x")


@pytest.mark.parametrize("name", ["digits", "sentiment"])
def test_corrupted_data_file_is_refused(prepared, tmp_path, name):
    copy = tmp_path / name
    shutil.copytree(prepared / name, copy)
    data_file = copy / read_manifest(copy)["files"][0]
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{data_file.name}.*sha256.*transferscope data prepare"):
        load_split(copy, "source", "train")


def test_missing_or_invalid_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match="transferscope data prepare"):
        load_split(tmp_path / "nothing", "source", "train")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text(json.dumps({"name": "bad"}))
    with pytest.raises(ValueError, match=r"manifest\.json.*transferscope data prepare"):
        read_manifest(tmp_path / "bad")


def test_unknown_task_or_split(prepared):
    with pytest.raises(ValueError, match=r"unknown task 'pretrain'.*'source', 'target'"):
        load_split(prepared / "digits", "pretrain", "train")
    with pytest.raises(ValueError, match=r"unknown split 'val'.*'train', 'test'"):
        load_split(prepared / "digits", "source", "val")


def test_failed_write_keeps_the_previous_dataset(prepared, tmp_path):
    target = tmp_path / "shapes"
    shutil.copytree(prepared / "shapes", target)
    before = manifest_hash(target)
    tasks = {
        t: {s: (d.x.numpy(), d.y.numpy()) for s in SPLITS for d in [load_split(target, t, s)]}
        for t in TASKS
    }
    classes = {t: read_manifest(target)["tasks"][t]["classes"] for t in TASKS}
    with pytest.raises(TypeError):  # fails inside the atomic write: params are not JSON
        write_image_dataset(target, "shapes", {"seed": object()}, tasks, classes)
    assert manifest_hash(target) == before
    assert len(load_split(target, "target", "test")) == len(tasks["target"]["test"][1])
    tasks["source"]["train"] = (tasks["source"]["train"][0], tasks["source"]["train"][1] + 10)
    with pytest.raises(ValueError, match=r"source/train: labels must lie in \[0, 4\)"):
        write_image_dataset(tmp_path / "new", "shapes", {}, tasks, classes)
    assert not (tmp_path / "new").exists()
