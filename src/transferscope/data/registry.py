"""Which datasets exist and how each is prepared: name -> the module that makes it.

Every dataset module has a literal ``DEFAULT_PARAMS`` (read without importing it by
``transferscope.plan``) and ``prepare(params, out)``, which receives the full merged params and
writes ``out`` through ``transferscope.data.format``. Downloaded datasets also list their files in
``FILES`` ({param prefix: file name}). To add a dataset, add a module and one line here.

A configured dataset is named by its generator (``datasets: {shapes: {...}}``), or by a name of
its own whose params say which generator makes it (``GENERATOR_KEY``: ``datasets: {shapes_f050:
{generator: shapes, shared_fraction: 0.5}}``), so one generator can give several variants side
by side; the generator key itself is not a generator parameter.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from transferscope.data.params import merge

DATASETS = {
    "digits": "transferscope.data.digits",
    "shapes": "transferscope.data.shapes",
    "sentiment": "transferscope.data.sentiment",
    "cifar10": "transferscope.data.cifar10",
    "cub": "transferscope.data.cub",
    "cars": "transferscope.data.cars",
    "sst2": "transferscope.data.sst2",
}
"""dataset name -> module path (a string, so that listing names imports nothing heavy)."""
GENERATOR_KEY = "generator"


def resolve(name: str, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(generator, its params) of the configured dataset ``name``: ``params[GENERATOR_KEY]``
    when given, else ``name`` itself; the params returned lack the generator key."""
    params = dict(params or {})
    return str(params.pop(GENERATOR_KEY, name)), params


def dataset_names() -> list[str]:
    """The names ``prepare_dataset`` accepts, sorted."""
    return sorted(DATASETS)


def dataset_module(name: str) -> ModuleType:
    """The module of dataset ``name``; an unknown name is a ValueError listing the known ones."""
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset '{name}'; allowed: {', '.join(dataset_names())} (a dataset of another "
            f"name says which of them makes it: datasets.<name>.{GENERATOR_KEY})"
        )
    return importlib.import_module(DATASETS[name])


def dataset_params(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The full params of dataset ``name``: its generator's DEFAULT_PARAMS updated with
    ``params`` (``resolve``)."""
    generator, params = resolve(name, params)
    module = dataset_module(generator)
    return merge(name, module.DEFAULT_PARAMS, params, getattr(module, "OPTIONAL_PARAMS", None))


def prepare_dataset(name: str, params: dict[str, Any] | None, out: str | Path) -> Path:
    """Generate or download dataset ``name`` with ``params`` (over its defaults) into ``out``
    (``manifest.json`` + one data file, written atomically); returns ``out``. Bad params stop
    with an error before anything is downloaded or written. ``params`` may name the generator
    (``resolve``)."""
    generator, _ = resolve(name, params)
    dataset_module(generator).prepare(dataset_params(name, params), Path(out))
    return Path(out)


def image_input(name: str, params: dict[str, Any] | None) -> tuple[int, int] | None:
    """(channels, image size) of the images dataset ``name`` gives with ``params``; None for
    text. Image datasets have an ``image_size`` param; channels come from a ``channels`` param,
    else the module's ``CHANNELS`` (3, RGB, when it has none)."""
    full = dataset_params(name, params)
    if "image_size" not in full:
        return None
    channels = full.get(
        "channels", getattr(dataset_module(resolve(name, params)[0]), "CHANNELS", 3)
    )
    return int(channels), int(full["image_size"])
