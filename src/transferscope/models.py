"""Models named in config, built through timm and transformers, stored as safetensors.

Every model is a backbone that returns features plus a linear ``head``; the probe trains only
the head, fine-tuning replaces it, and the interaction engine feeds masked inputs through the
whole thing. Checkpoints are safetensors (no code runs on load) carrying their model spec as
metadata, so a checkpoint alone rebuilds its model.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from transferscope.io import atomic_path


class ImageClassifier(nn.Module):
    modality = "image"

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(num_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class TextClassifier(nn.Module):
    """A transformers encoder, pooled, plus a linear head; accepts ``inputs_embeds`` so the
    interaction engine can mask words at the embedding level."""

    modality = "text"

    def __init__(self, encoder: nn.Module, num_classes: int, pooling: str = "mean"):
        super().__init__()
        self.backbone = encoder
        self.pooling = pooling
        self.head = nn.Linear(encoder.config.hidden_size, num_classes)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings (before positions are added), the level at which players are masked."""
        return self.backbone.get_input_embeddings()(input_ids)

    def features(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> torch.Tensor:
        out = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds
        ).last_hidden_state
        if self.pooling == "cls":
            return out[:, 0]
        mask = attention_mask.unsqueeze(-1).to(out.dtype)
        return (out * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None) -> torch.Tensor:
        return self.head(self.features(input_ids, attention_mask, inputs_embeds))


def resolve_hf_path(name: str) -> str:
    """'package:<module>/<dir>' -> the directory inside an installed package; else unchanged."""
    if not name.startswith("package:"):
        return name
    module, _, sub = name[len("package:") :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"model name '{name}': Python package '{module}' is not installed")
    path = Path(spec.origin).parent / sub
    if not path.is_dir():
        raise ValueError(f"model name '{name}': {path} does not exist inside package '{module}'")
    return str(path)


def build_model(
    spec: dict[str, Any], num_classes: int, in_chans: int = 3, pretrained: bool | None = None
) -> nn.Module:
    """Build the classifier a config's ``models.<label>`` entry describes.

    ``pretrained`` overrides the spec (scratch runs and checkpoint loading pass False). The
    model carries ``preprocessing``, :func:`image_preprocessing` of the spec, which
    :func:`save_checkpoint` stores with its weights.
    """
    use_pretrained = spec.get("pretrained", False) if pretrained is None else pretrained
    if spec["source"] == "timm":
        model = _build_timm(spec, num_classes, in_chans, use_pretrained)
    elif spec["source"] == "huggingface":
        model = _build_hf(spec, num_classes, use_pretrained)
    else:
        raise ValueError(f"model source '{spec['source']}' unknown; allowed: timm, huggingface")
    # from the spec, not the override: a scratch run sees the inputs its fine-tuned twin sees
    model.preprocessing = image_preprocessing(spec)
    return model


def image_preprocessing(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The input normalisation a timm model's pre-trained weights expect, from timm's
    ``pretrained_cfg`` of its name (offline, no download): ``mean``, ``std`` (per channel, of
    pixels in [0, 1]), ``input_size`` (C, H, W), ``interpolation``, ``fixed_input_size`` and
    ``source``. None for models without pre-trained weights (or not from timm): those see
    their dataset's own statistics (``transferscope.data.normalize_images``), and so do models
    whose ``pretrained`` is a weights file: timm's configuration is not known to describe it."""
    if spec.get("source") != "timm" or spec.get("pretrained") is not True:
        return None
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec["name"])
    if cfg is None:
        raise ValueError(
            f"timm has no pretrained configuration for '{spec['name']}', so the input "
            f"normalisation its weights expect is unknown; use a tagged name such as "
            f"'resnet50.tv_in1k'"
        )
    size = list(cfg.input_size)
    img_size = spec.get("kwargs", {}).get("img_size")  # a ViT built for another input size
    if img_size is not None:
        size[1:] = [img_size, img_size] if isinstance(img_size, int) else list(img_size)
    return {
        "mean": [float(v) for v in cfg.mean],
        "std": [float(v) for v in cfg.std],
        "input_size": [int(v) for v in size],
        "interpolation": cfg.interpolation,
        "fixed_input_size": bool(cfg.fixed_input_size),
        "source": f"timm pretrained_cfg of {spec['name']}",
    }


def _build_timm(spec, num_classes, in_chans, pretrained) -> ImageClassifier:
    import timm

    name = spec["name"]
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        raise ValueError(f"timm does not know model '{name}'; close matches: {close}")
    arch, _, tag = name.partition(".")
    if tag and name not in timm.list_pretrained(f"{arch}.*"):
        tags = timm.list_pretrained(f"{arch}.*")
        raise ValueError(f"timm model '{arch}' has no pretrained tag '{tag}'; available: {tags}")
    weights_file = pretrained if isinstance(pretrained, str) else None
    try:
        backbone = timm.create_model(
            name,
            pretrained=pretrained is True,
            num_classes=0,
            in_chans=in_chans,
            **spec.get("kwargs", {}),
        )
    except (OSError, RuntimeError) as err:
        if pretrained is not True:
            raise
        raise RuntimeError(
            f"timm cannot load the pretrained weights of '{name}' ({err}); they are downloaded "
            f"once (internet needed, then cached), or set pretrained: <path to a weights file>"
        ) from None
    if weights_file:
        state = load_state_file(weights_file)
        state = {
            k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "classifier."))
        }
        try:
            missing, _ = backbone.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatch: weights of another architecture
            raise ValueError(
                f"{weights_file}: weights do not fit timm model '{name}' ({err})"
            ) from None
        if missing:
            raise ValueError(
                f"{weights_file}: weights miss {len(missing)} tensors, e.g. {missing[:3]}"
            )
    # models with a pre-logits layer (vgg, mobilenetv3) output head_hidden_size, not num_features
    features = getattr(backbone, "head_hidden_size", None) or backbone.num_features
    return ImageClassifier(backbone, features, num_classes)


def _build_hf(spec, num_classes, pretrained) -> TextClassifier:
    from transformers import AutoConfig, AutoModel

    path = resolve_hf_path(spec["name"])
    local = Path(path).is_dir()
    kwargs = {"local_files_only": local or os.environ.get("HF_HUB_OFFLINE") == "1"}
    try:
        if pretrained:
            encoder = AutoModel.from_pretrained(path, **kwargs)
        else:
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(path, **kwargs))
    except (OSError, ValueError) as err:
        raise _hf_error(spec["name"], err) from None
    return TextClassifier(encoder, num_classes, spec.get("pooling", "mean"))


def load_tokenizer(spec: dict[str, Any]):
    from transformers import AutoTokenizer

    path = resolve_hf_path(spec["name"])
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=Path(path).is_dir())
    except (OSError, ValueError) as err:
        raise _hf_error(spec["name"], err) from None


# Offline the Hub cannot be searched: close matches come from these and the local HF cache.
KNOWN_HF_MODELS = (
    "bert-base-uncased",
    "bert-base-cased",
    "bert-large-uncased",
    "distilbert-base-uncased",
    "distilbert-base-cased",
    "roberta-base",
    "roberta-large",
    "albert-base-v2",
    "google-bert/bert-base-uncased",
    "distilbert/distilbert-base-uncased",
    "sentence-transformers/all-MiniLM-L6-v2",
)


def hf_close_matches(name: str) -> list[str]:
    """Model ids like ``name`` among well-known ids and those in the local Hugging Face cache."""
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    cached = [
        d.name[len("models--") :].replace("--", "/")
        for d in (cache.iterdir() if cache.is_dir() else [])
        if d.name.startswith("models--")
    ]
    return difflib.get_close_matches(name, sorted({*KNOWN_HF_MODELS, *cached}), n=5, cutoff=0.6)


def _hf_error(name: str, err: Exception) -> ValueError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ValueError(
        f"Hugging Face cannot load model '{name}' ({reason}); close matches: "
        f"{hf_close_matches(name)}. Give a Hub id (downloaded once, internet needed), a local "
        f"directory, or package:<module>/<dir>"
    )


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a .safetensors file or a torch file loaded with weights_only (no code runs)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_checkpoint(path)[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: cannot load weights ({err})") from None
    return state.get("state_dict", state.get("model", state))


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Atomically write the model's weights with ``meta`` (JSON) as safetensors metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    preprocessing = getattr(model, "preprocessing", None)
    if preprocessing is not None:  # absent for dataset statistics: such checkpoints stay as before
        meta = dict(meta, preprocessing=preprocessing)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"transferscope": json.dumps(meta, sort_keys=True)})


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state_dict, meta) of a checkpoint; a corrupt or truncated file is an error naming it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} not found; run the training stage that writes it"
        )
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("transferscope", "{}"))
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as err:
        from transferscope.workflow import rerun_command

        raise ValueError(
            f"checkpoint {path} is corrupt or truncated ({err}); retrain its run: "
            f"`{rerun_command(path)}`"
        ) from None
    return state, meta


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a checkpoint's model in eval mode on ``device``; returns (model, meta)."""
    state, meta = load_checkpoint(path)
    model = build_model(
        meta["model"], meta["num_classes"], meta.get("in_chans", 3), pretrained=False
    )
    model.load_state_dict(state)
    return model.to(device).eval(), meta
