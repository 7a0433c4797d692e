"""The causal test in training: the differentiable interaction penalty, its planted ground truth
on `shapes`, and the config checks of `causal_training`."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from transferscope.interactions import transforms
from transferscope.interactions.masking import image_game
from transferscope.interactions.penalty import (
    ImagePlayers,
    build_penalty,
    harsanyi_terms,
    low_order_subsets,
    reference_terms,
    submasks,
)
from transferscope.interactions.players import grid_player_masks


class TinyCNN(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 9 * 9, classes),
        )

    def forward(self, x):
        return self.net(x)


def _cnn(seed: int) -> TinyCNN:
    torch.manual_seed(seed)
    model = TinyCNN()
    model.train()(torch.randn(32, 1, 9, 9))  # non-trivial batch-norm statistics
    return model


def test_submasks_enumerate_every_subset_once():
    assert sorted(submasks(0b1011)) == [0, 1, 2, 3, 8, 9, 10, 11]
    assert submasks(0) == [0]


def test_differentiable_terms_equal_the_extractions_harsanyi_values():
    """I(S) from 2^|S| masked inputs equals the Harsanyi transform of the extraction's full
    game (all 2^9 masks, ``masking.image_game``) at S, for every S of order ≤ 3; the model's
    mode is restored and gradients reach its weights."""
    model = _cnn(0)
    x, y = torch.randn(3, 1, 9, 9), torch.tensor([0, 2, 1])
    players = grid_player_masks(9, 9, 3)
    full = transforms.harsanyi(image_game(model, x, y, players, baseline=0.25, batch_size=300))
    images = ImagePlayers.from_grid(x, y, players, 0.25)
    subsets = low_order_subsets(9, 3)
    assert len(subsets) == 9 + 36 + 84
    terms = reference_terms(model, images, subsets)
    assert torch.allclose(terms, full[:, subsets], atol=1e-6, rtol=0)
    model.train()
    picked = harsanyi_terms(model, images, torch.tensor([0, 2, 2]), torch.tensor([1, 6, 7]))
    assert model.training
    assert torch.allclose(picked.detach(), full[[0, 2, 2], [1, 6, 7]], atol=1e-6)
    picked.pow(2).sum().backward()
    assert model.net[0].weight.grad.abs().sum() > 0


def _noisy_finetune(model, reference, images, strength: float, steps: int = 60) -> float:
    """Fit random labels (which moves the interactions) under the protect penalty; returns
    the relative error ‖I_θ − I_P‖ / ‖I_P‖ over the penalised pool afterwards."""
    penalty = build_penalty("protect", strength, 256, images, reference, 2, 0.05, seed=0)
    assert len(penalty.rows) > 0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (len(images.x),), generator=torch.Generator().manual_seed(1))
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(images.x), labels)
        loss = loss + penalty(model, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        now = harsanyi_terms(model, images, penalty.rows, penalty.subsets)
    return float((now - penalty.targets).norm() / penalty.targets.norm())


def test_protect_at_large_strength_keeps_the_penalised_terms_at_ps():
    """Starting from P and fitting random labels, λ = 0 moves P's salient terms far; a large λ
    keeps them within a small fraction of their size (and far closer than λ = 0)."""
    reference = _cnn(0)
    x, y = torch.randn(8, 1, 9, 9), torch.randint(0, 3, (8,))
    images = ImagePlayers.from_grid(x, y, grid_player_masks(9, 9, 3), 0.0)
    free = _noisy_finetune(copy.deepcopy(reference), reference, images, 0.0)
    held = _noisy_finetune(copy.deepcopy(reference), reference, images, 1000.0)
    print(f"relative error of the protected terms: λ=0 {free:.3f}, λ=1000 {held:.3f}")
    assert free > 0.5
    assert held < 0.2 and held < free / 10


def test_random_arm_matches_the_orders_of_its_sets():
    reference = _cnn(0)
    x, y = torch.randn(6, 1, 9, 9), torch.randint(0, 3, (6,))
    images = ImagePlayers.from_grid(x, y, grid_player_masks(9, 9, 3), 0.0)
    sup = build_penalty("suppress", 1.0, 8, images, reference, 3, 0.05, seed=0)
    rnd = build_penalty("random", 1.0, 8, images, reference, 3, 0.05, seed=0)
    order = lambda s: bin(int(s)).count("1")  # noqa: E731
    for row in range(6):
        a = sorted(order(s) for s in sup.subsets[sup.rows == row])
        b = sorted(order(s) for s in rnd.subsets[rnd.rows == row])
        assert a == b
    assert (sup.targets == 0).all() and (rnd.targets == 0).all()
    assert sup.scale > 0 and sup.describe()["pairs"] == len(sup.rows)
    # Ω_pre kept to the k strongest salient sets: they are the rows' largest |I_P(S)|
    top = build_penalty("protect", 1.0, 8, images, reference, 3, 0.05, seed=0, top_k=3)
    terms = reference_terms(reference, images, low_order_subsets(9, 3))
    for row in range(6):
        kept = top.targets[top.rows == row].abs()
        assert len(kept) == 3
        assert torch.allclose(kept.sort().values, terms[row].abs().sort().values[-3:])


# ---------------------------------------------------------------------- planted ground truth


@pytest.mark.slow
def test_suppressing_the_planted_rule_costs_its_classes_more_than_random_sets(
    tmp_path, smoke_config
):
    """On `shapes`, the planted AND rules (manifest) are the sets to suppress: training a model
    on the target task while driving I(S*) of both AND rules' part pairs to zero on every
    penalised image lowers accuracy on those two classes more than driving as many random
    order-2 sets to zero. The test can fail: if the model could express the rules without
    their pair interactions (context cells, other orders), both arms would cost alike."""
    from transferscope.config import run_settings, validate_config
    from transferscope.data import normalize_images, prepare_dataset, read_manifest
    from transferscope.interactions.penalty import planted_and_sets
    from transferscope.models import load_model
    from transferscope.training import load_task, train_run

    config = copy.deepcopy(smoke_config)
    config["datasets"] = {
        "shapes": {"seed": 0, "train_per_class": 10, "target_train_per_class": 80,
                   "test_per_class": 40}
    }  # fmt: skip
    config["experiments"] = {"shapes_resnet": {"dataset": "shapes", "model": "resnet"}}
    config["training"]["scratch"] = {"epochs": 6, "lr": 3.0e-3, "batch_size": 32}
    config["interactions"]["grid"] = 3
    config = validate_config(config)
    data = prepare_dataset("shapes", config["datasets"]["shapes"], tmp_path / "shapes")
    rules = read_manifest(data)["rules"]["target"]
    and_classes = [k for k, r in enumerate(rules) if r["type"] == "and"]
    settings = run_settings(config, "shapes_resnet", "scratch", 0)
    task = load_task(data, "target", settings["model"])
    pool = torch.randperm(len(task.train_y), generator=torch.Generator().manual_seed(0))[:64]
    # absent cells black (the extraction's alternative baseline): a masked cell then looks like
    # an empty cell, so I(S*) is measured on images the task has (parts A and B alone)
    black = normalize_images(torch.zeros(1, 1, 1, 1, dtype=torch.uint8), read_manifest(data))[0]
    images = ImagePlayers.from_grid(
        task.train_inputs["x"][pool], task.train_y[pool], grid_player_masks(32, 32, 3), black
    )
    sets = planted_and_sets(rules, len(pool))
    assert all(len(s) == 2 and all(bin(v).count("1") == 2 for v in s) for s in sets)
    accuracy = {}
    for arm in ("suppress", "random"):
        penalty = build_penalty(arm, 30.0, 32, images, None, 2, 0.05, seed=0, sets=sets)
        run = train_run(settings, data, tmp_path / arm, threads=1, progress=False, penalty=penalty)
        summary = json.loads((run / "summary.json").read_text())
        model, _ = load_model(run / summary["final_checkpoint"])
        with torch.inference_mode():
            pred = model(task.test_inputs["x"]).argmax(1)
        rule_items = torch.isin(task.test_y, torch.tensor(and_classes))
        accuracy[arm] = float((pred == task.test_y)[rule_items].float().mean())
    print(f"accuracy on the planted AND classes: {accuracy}")
    # measured (seeds 0 / 1): suppress 0.41 / 0.59, random 0.63 / 0.93 on the AND classes
    assert accuracy["random"] >= 0.5, "the random arm must learn the rules, else nothing to lose"
    assert accuracy["suppress"] < accuracy["random"] - 0.1, accuracy


# ---------------------------------------------------------------------------- config checks


def _config(smoke_config, **block):
    config = copy.deepcopy(smoke_config)
    config["causal_training"] = {"enabled": True, **block}
    return config


@pytest.mark.parametrize(
    ("block", "edit", "needle"),
    [
        ({"experiments": ["sentiment_minilm"]}, None, "causal_training.experiments: 'sentiment_minilm' is a text"),
        ({"experiments": ["nope"]}, None, "causal_training.experiments: 'nope' is not a configured"),
        ({"seeds": [7]}, None, "causal_training.seeds: [7]"),
        ({"experiments": ["digits_resnet"]}, "no-pretraining", "no pre-trained model to protect"),
        ({"strengths": [1.0, 2.0]}, None, "causal_training.strengths"),
        ({"arms": ["protect", "boost"]}, None, "causal_training.arms"),
    ],
)  # fmt: skip
def test_a_configured_arm_that_cannot_run_stops_naming_the_key(
    smoke_config, block, edit, needle, tmp_path
):
    """validate_config (what the Snakefile and every CLI stage run first) stops; no job starts."""
    from transferscope.config import ConfigError, validate_config

    config = _config(smoke_config, **block)
    if edit == "no-pretraining":
        config["experiments"]["digits_resnet"]["training"] = {"pretrain": {"epochs": 0}}
    with pytest.raises(ConfigError) as err:
        validate_config(config)
    assert needle in str(err.value)
    assert not list(tmp_path.iterdir())


def test_enabled_block_resolves_runs_targets_and_claim_rows(smoke_config):
    from transferscope.causal import settings as causal
    from transferscope.config import validate_config
    from transferscope.workflow import evidence_claim_rows

    config = validate_config(_config(smoke_config, strengths=[0.1, 1.0, 10.0]))
    assert causal.experiments(config) == ["digits_resnet"]  # image experiments only
    runs = causal.run_summaries(config, "digits_resnet")
    assert "runs/digits_resnet/finetune-suppress0.1/seed1/summary.json" in runs
    assert len(runs) == 2 * (2 + 3 * 3)
    assert causal.parse_variant("finetune-random10") == ("random", "10")
    settings = causal.causal_run_settings(config, "digits_resnet", "protect", "10", 0)
    assert settings["causal"]["strength"] == 10.0 and settings["regime"] == "finetune"
    assert evidence_claim_rows(config) == [f"{causal.out_dir()}/claim_rows.parquet"]
    assert evidence_claim_rows(validate_config(smoke_config)) == []
