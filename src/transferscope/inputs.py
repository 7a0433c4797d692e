"""Whether each experiment's dataset gives inputs its model can take, decided when the config is
checked instead of when a training job fails hours later.

A timm model takes images, a Hugging Face model sentences. A model with a fixed input size (a ViT
built with ``img_size``, or a pre-trained one whose timm ``pretrained_cfg`` says
``fixed_input_size``) needs ``datasets.<name>.image_size`` to equal it, and a model with timm's
pre-trained weights needs as many channels as their normalisation has, and a real image dataset
resized for it (``datasets.<name>.interpolation``) the interpolation of its ``pretrained_cfg``.
Only pre-trained timm models import
timm (and torch) here, so checking the offline default config stays light.
"""

from __future__ import annotations

from typing import Any

MODALITY = {"timm": "image", "huggingface": "text"}
PRETRAINED_INPUT = ("input_size", "fixed_input_size", "interpolation")  # of timm's pretrained_cfg


def input_problems(config: dict[str, Any]) -> list[str]:
    """One message per experiment whose dataset does not fit its model, naming the keys and the
    allowed values; empty when all fit."""
    from transferscope.data.registry import dataset_params, image_input

    problems = []
    for exp, spec in config["experiments"].items():
        dataset, label = spec["dataset"], spec["model"]
        model = config["models"][label]
        image = image_input(dataset, config["datasets"].get(dataset))
        wanted = MODALITY.get(model["source"])
        given = "text" if image is None else "image"
        if wanted is not None and wanted != given:
            fitting = sorted(
                name
                for name, params in config["datasets"].items()
                if (image_input(name, params) is None) == (wanted == "text")
            )
            problems.append(
                f"experiments.{exp}: model '{label}' ({model['source']}) takes {wanted} inputs but "
                f"dataset '{dataset}' holds {given} data; allowed datasets: {fitting}"
            )
            continue
        if image is not None:
            resize = dataset_params(dataset, config["datasets"].get(dataset)).get("interpolation")
            generator = (config["datasets"].get(dataset) or {}).get("generator", dataset)
            problems += _image_problems(exp, dataset, label, model, *image, resize, generator)
    return problems


def _image_problems(
    exp, dataset, label, model, channels, size, resize=None, generator=None
) -> list[str]:
    """Input size, channel and resize-interpolation problems of a timm model on images of
    ``channels`` × ``size``² resized with ``resize`` (None: a generated dataset)."""
    kwargs = model.get("kwargs", {})
    fixed = None if kwargs.get("dynamic_img_size") else kwargs.get("img_size")
    expected_channels = expected_resize = None
    if model.get("pretrained") is True:  # timm's own weights (a weights file is the user's)
        pretrained = pretrained_input(model["name"])
        if fixed is None and pretrained["fixed_input_size"]:
            fixed = pretrained["input_size"][-1]
        expected_channels = pretrained["input_size"][0]
        expected_resize = pretrained["interpolation"]
    problems = []
    if resize is not None and expected_resize is not None and resize != expected_resize:
        problems.append(
            f"experiments.{exp}: the pre-trained weights of model '{label}' ({model['name']}) "
            f"saw images resized with {expected_resize} interpolation, dataset '{dataset}' "
            f"resizes with {resize}; allowed: datasets.{dataset}.interpolation: "
            f"{expected_resize} (models that need another one get a dataset entry of their own, "
            f"e.g. datasets.{dataset}_{expected_resize}: {{generator: {generator}, "
            f"interpolation: {expected_resize}, ...}})"
        )
    if fixed is not None and fixed != size:
        problems.append(
            f"experiments.{exp}: model '{label}' ({model['name']}) takes only {fixed}x{fixed} "
            f"images, dataset '{dataset}' gives {size}x{size}; allowed: "
            f"datasets.{dataset}.image_size: {fixed}"
        )
    if expected_channels is not None and expected_channels != channels:
        problems.append(
            f"experiments.{exp}: the pre-trained weights of model '{label}' ({model['name']}) "
            f"expect {expected_channels}-channel images, dataset '{dataset}' has {channels}; "
            f"allowed: a {expected_channels}-channel dataset or models.{label}.pretrained: false"
        )
    return problems


def pretrained_input(name: str) -> dict[str, Any]:
    """``input_size``, ``fixed_input_size`` and ``interpolation`` of timm's ``pretrained_cfg``
    of ``name``. Reading
    it imports timm and torch (seconds) and Snakemake checks the config at every start, so the
    values are cached per timm version in the user's cache directory."""
    import json
    import os
    from importlib.metadata import version
    from pathlib import Path

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = cache / "transferscope" / f"timm-{version('timm')}-inputs.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):  # first use of this timm version, or an unreadable cache
        known = {}
    if set(PRETRAINED_INPUT) - set(known.get(name, {})):  # new, or cached by an older version
        from transferscope.models import image_preprocessing

        cfg = image_preprocessing({"source": "timm", "name": name, "pretrained": True})
        known[name] = {k: cfg[k] for k in PRETRAINED_INPUT}
        try:
            from transferscope.io import write_json

            write_json(path, known)
        except OSError:  # a read-only home: read timm again next time
            pass
    return known[name]


def check_inputs(config: dict[str, Any], source: str = "config") -> None:
    """Raise a ConfigError naming every experiment whose dataset does not fit its model."""
    from transferscope.config import ConfigError

    problems = input_problems(config)
    if problems:
        raise ConfigError(f"{source}: " + f"\n{source}: ".join(problems))
