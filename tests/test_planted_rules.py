"""Planted rules of the `shapes` dataset are found in a trained model's salient interactions."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from transferscope.interactions.transforms import subset_index
from transferscope.knowledge.planted import part_preservation, planted_and_recovery

AND_RULE = {
    "type": "and",
    "present": [{"part": "cross", "cell": 0}, {"part": "circle", "cell": 4}],
    "absent": [],
    "players": [0, 4],
}
OR_RULE = {"type": "or", "present": [{"part": "square", "cell": 2}], "absent": [], "players": [2]}


def test_recovery_counts_planted_terms_and_strength_outside_the_rule():
    n = 9
    i_and = np.zeros((3, 2**n))
    planted, outside = subset_index([0, 4]), subset_index([0, 8])
    i_and[0, planted] = 2.0  # sample 0: the planted term, nothing else
    i_and[1, planted], i_and[1, outside] = 1.0, 3.0  # sample 1: planted + a stronger stray term
    i_and[1, subset_index([2, 4])] = 1.5  # on cells of another rule: inside
    i_and[2, outside] = 1.0  # sample 2: an OR-class sample, not counted
    salient = i_and != 0
    result = planted_and_recovery(i_and, salient, [0, 0, 1], [AND_RULE, OR_RULE])
    assert result["samples"] == 2
    assert result["recall"] == 1.0
    assert result["precision"] == pytest.approx((2.0 + 1.0 + 1.5) / (2.0 + 1.0 + 1.5 + 3.0))
    salient[1, planted] = False  # a planted term that is not salient is not recalled
    assert planted_and_recovery(i_and, salient, [0, 0, 1], [AND_RULE, OR_RULE])["recall"] == 0.5


def test_part_preservation_by_hand():
    """Players 0, 1, 2; cell 0 holds a shared part, cell 2 a source-only part."""
    rules = {"shared": [{"part": "cross", "cell": 0}], "source_only": [{"part": "sq", "cell": 2}]}
    i_pre = np.zeros((1, 8))
    i_pre[0, [0b001, 0b011, 0b100, 0b110]] = [1.0, -2.0, 1.5, 0.7]
    i_ft = np.zeros((1, 8))
    i_ft[0, [0b001, 0b011, 0b100]] = [0.5, -1.0, -1.5]  # {2} flips its sign; {1, 2} is gone
    m_pre, m_ft = i_pre != 0, i_ft != 0
    rates = part_preservation(i_pre, i_ft, m_pre, m_ft, rules)
    assert rates["shared"] == {"terms": 2, "preserved": 2, "rate": 1.0}
    assert rates["source_only"] == {"terms": 2, "preserved": 0, "rate": 0.0}
    loose = part_preservation(i_pre, i_ft, m_pre, m_ft, rules, sign_agreement=False)
    assert loose["source_only"]["rate"] == 0.5
    # a cell with parts of both kinds counts for neither
    both = dict(rules, source_only=[*rules["source_only"], {"part": "x", "cell": 0}])
    assert part_preservation(i_pre, i_ft, m_pre, m_ft, both)["shared"]["terms"] == 0


@pytest.mark.slow
def test_a_model_trained_on_shapes_encodes_its_planted_and_rules(tmp_path, smoke_config):
    """A small ResNet trained on the shapes source task to high accuracy encodes each AND class's
    planted part pair as a salient AND interaction on the 3×3 patch grid (the dataset's cells).

    Floors: the model must reach 90 % test accuracy (else there is no rule to find); recall
    ≥ 0.7 allows for samples where the decoys let the model answer from one part (the
    conjunction then shows up as a lower-order term); precision ≥ 0.5 says that most salient
    higher-order strength stays on the cells the task's rules read, while noise and distractor
    glyphs elsewhere may still draw some.
    """
    from transferscope.config import run_settings, validate_config
    from transferscope.data import load_split, normalize_images, prepare_dataset, read_manifest
    from transferscope.interactions.extract import salient_interactions
    from transferscope.interactions.masking import image_game
    from transferscope.interactions.players import grid_player_masks
    from transferscope.models import load_model
    from transferscope.training import train_run

    config = copy.deepcopy(smoke_config)
    config["datasets"] = {"shapes": {"seed": 0, "train_per_class": 150, "test_per_class": 20}}
    config["experiments"] = {"shapes_resnet": {"dataset": "shapes", "model": "resnet"}}
    config["training"]["pretrain"] = {"epochs": 8, "lr": 3.0e-3, "batch_size": 32}
    config = validate_config(config)
    data = prepare_dataset("shapes", config["datasets"]["shapes"], tmp_path / "shapes")
    settings = run_settings(config, "shapes_resnet", "pretrain", 0)
    run = train_run(settings, data, tmp_path / "run", progress=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final"]["test_accuracy"] >= 0.9, summary["final"]

    manifest = read_manifest(data)
    rules = manifest["rules"]["source"]
    test = load_split(data, "source", "test")
    and_classes = [k for k, r in enumerate(rules) if r["type"] == "and"]
    pick = torch.cat([torch.nonzero(test.y == k).flatten()[:4] for k in and_classes])
    model, _ = load_model(run / f"epoch_{settings['training']['epochs']:03d}.safetensors")
    x = normalize_images(test.x[pick], manifest)
    players = grid_player_masks(x.shape[-2], x.shape[-1], manifest["rules"]["grid"])
    v = image_game(model, x, test.y[pick], players, batch_size=1024, device="cpu")
    result, salient = salient_interactions(v, q_thres=0.04, tau=0.05)
    found = planted_and_recovery(result.I_and, salient["and"], test.y[pick].tolist(), rules)
    print(f"planted AND rules: {found}")
    assert found["samples"] == len(pick)
    assert found["recall"] >= 0.7, found
    assert found["precision"] >= 0.5, found
