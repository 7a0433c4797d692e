"""Configuration: load, validate against the schema, and resolve one run's settings.

The schema (schemas/config.schema.yaml) is the single description of every key; Snakemake
validates with it before any job, and every CLI stage validates again, so a stage called from
DVC or by hand fails just as early.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

REGIMES = ("pretrain", "probe", "finetune", "scratch")
# interaction settings that act after the forward passes (decomposition bound, salience threshold)
POST_GAME_SETTINGS = ("tau", "q_thres")
TARGET_REGIMES = ("probe", "finetune", "scratch")  # trained on the target task
SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


def schema_default(*keys: str) -> Any:
    """The schema's default of one key, e.g. ``schema_default("interactions", "tau")``; for
    ``("training", regime)`` the fallback of every key that no config block sets."""
    node = _schema_node(keys)
    if "default" not in node:
        raise KeyError(f"{SCHEMA_PATH.name} has no default for '{'.'.join(keys)}'")
    return copy.deepcopy(node["default"])


def schema_defaults(*keys: str) -> dict[str, Any]:
    """{key: default} of every key under ``keys`` that has a default, in schema order."""
    properties = _schema_node(keys).get("properties", {})
    nodes = {key: _resolve(node) for key, node in properties.items()}
    return {key: copy.deepcopy(node["default"]) for key, node in nodes.items() if "default" in node}


def block_settings(config: dict[str, Any], key: str) -> dict[str, Any]:
    """A top-level config block (``controls``, ``causal_training``, ``graded``, …) with the
    schema's defaults filled in, for configs that were not validated (given by hand)."""
    return {**schema_defaults(key), **(config.get(key) or {})}


@functools.cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    """A schema node with its local ``$ref`` merged in (the node's own keys win)."""
    while "$ref" in node:
        target = _schema()
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _schema_node(keys: tuple[str, ...]) -> dict[str, Any]:
    node = _schema()
    for depth, key in enumerate(keys):
        properties = _resolve(node).get("properties", {})
        if key not in properties:
            raise KeyError(f"{SCHEMA_PATH.name} has no key '{'.'.join(keys[: depth + 1])}'")
        node = properties[key]
    return _resolve(node)


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and what to do."""


def load_config(path: str | Path, *overlays: str | Path) -> dict[str, Any]:
    """Read a YAML config file, merge any ``overlays`` into it key by key as Snakemake merges
    several ``--configfile`` files (later ones win; e.g. config/evidence.yaml on config.yaml),
    and validate the result (defaults filled in)."""
    from snakemake.utils import update_config

    config: dict[str, Any] = {}
    for one in (path, *overlays):
        one = Path(one)
        try:
            update_config(config, yaml.safe_load(one.read_text()) or {})
        except FileNotFoundError:
            raise ConfigError(f"{one}: config file not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{one}: not valid YAML: {err}") from None
    return validate_config(config, source=" + ".join(str(p) for p in (path, *overlays)))


def files_setting(config_files, key: str) -> list[str]:
    """The config files (in the order given) that set the top-level ``key``; all of them when
    none does (the key then takes its defaults, which any of them could start setting)."""
    chosen = []
    for path in map(str, config_files):
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError):
            raw = {}
        if isinstance(raw, dict) and key in raw:
            chosen.append(path)
    return chosen or [str(f) for f in config_files]


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate against the schema, fill defaults, and check cross-references; returns a copy."""
    from snakemake.utils import validate  # the same validator Snakemake applies in the Snakefile

    config = copy.deepcopy(config)
    try:
        validate(config, str(SCHEMA_PATH), set_default=True)
    except Exception as err:  # snakemake wraps jsonschema's error; keep its message
        raise ConfigError(f"{source}: {_schema_message(err)}") from None
    check_references(config, source)
    return config


def _schema_message(err: Exception) -> str:
    cause = err.__cause__ or err.__context__ or err
    path = ".".join(str(p) for p in getattr(cause, "absolute_path", []))
    message = getattr(cause, "message", str(err))
    where = f"key '{path}': " if path else ""
    return f"{where}{message} (schemas/config.schema.yaml describes every key; fix the value)"


def check_references(config: dict[str, Any], source: str = "config") -> None:
    """Every experiment names a configured dataset and model, every model name resolves, and
    the masking baseline fits every experiment: all checked before any job runs."""
    from transferscope.data.registry import dataset_names
    from transferscope.inputs import check_inputs

    known = set(dataset_names())
    for name, params in config["datasets"].items():
        generator = (params or {}).get("generator", name)
        if generator not in known:
            key = f"datasets.{name}" + (".generator" if generator != name else "")
            raise ConfigError(
                f"{source}: {key}: unknown dataset '{generator}'; allowed: {sorted(known)} "
                f"(a dataset of another name sets datasets.<name>.generator to one of them)"
            )
    for exp, spec in config["experiments"].items():
        for kind in ("dataset", "model"):
            table = config["datasets" if kind == "dataset" else "models"]
            if spec[kind] not in table:
                raise ConfigError(
                    f"{source}: experiments.{exp}.{kind}: '{spec[kind]}' is not configured; "
                    f"allowed: {sorted(table)} (add it under '{kind}s:')"
                )
    check_models(config, source)
    check_baseline(config, source)
    check_inputs(config, source)
    from transferscope.causal.settings import check as check_causal_training

    check_causal_training(config, source)
    from transferscope.controls import check as check_controls

    check_controls(config, source)
    from transferscope.knowledge.graded import check as check_graded

    check_graded(config, source)


# players of a model's inputs: timm models see image patches, Hugging Face encoders words
MODALITY = {"timm": "image", "huggingface": "text"}


def check_models(config: dict[str, Any], source: str = "config") -> None:
    """Every model name resolves offline: timm names against timm's registry (and pretrained
    tags), ``package:`` names against the installed package. Hub ids need the network and are
    checked when a job loads them."""
    import difflib

    for label, spec in config["models"].items():
        name = spec["name"]
        if spec["source"] == "timm":
            models, pretrained = timm_names()
            arch, _, tag = name.partition(".")
            if arch not in models:
                close = difflib.get_close_matches(name, sorted(models), n=5)
                raise ConfigError(
                    f"{source}: models.{label}.name: timm does not know model '{name}'; close "
                    f"matches: {close}"
                )
            if tag and name not in pretrained:
                tags = sorted(p for p in pretrained if p.partition(".")[0] == arch)
                raise ConfigError(
                    f"{source}: models.{label}.name: timm model '{arch}' has no pretrained tag "
                    f"'{tag}'; available: {tags}"
                )
        elif name.startswith("package:"):  # as models.resolve_hf_path, without importing torch
            import importlib.util

            module, _, sub = name[len("package:") :].partition("/")
            found = importlib.util.find_spec(module)
            if found is None or found.origin is None:
                raise ConfigError(
                    f"{source}: models.{label}.name: Python package '{module}' is not installed"
                )
            if not (Path(found.origin).parent / sub).is_dir():
                raise ConfigError(
                    f"{source}: models.{label}.name: package '{module}' has no directory '{sub}'"
                )


def timm_names() -> tuple[set[str], set[str]]:
    """(architectures, pretrained ``arch.tag`` names) that the installed timm knows. Listing them
    imports timm (seconds) and Snakemake validates the config at every start, so the lists are
    cached per timm version in the user's cache directory ($XDG_CACHE_HOME or ~/.cache)."""
    import json
    import os
    from importlib.metadata import version

    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = cache / "transferscope" / f"timm-{version('timm')}-names.json"
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError):  # first use of this timm version, or an unreadable cache
        import timm

        names = {"models": timm.list_models(), "pretrained": timm.list_pretrained()}
        try:
            from transferscope.io import write_json

            write_json(path, names)
        except OSError:  # a read-only home: list them again next time
            pass
    return set(names["models"]), set(names["pretrained"])


def check_baseline(config: dict[str, Any], source: str = "config") -> None:
    """``interactions.baseline`` (and each sensitivity variant's) applies to the players of
    every experiment's model."""
    variants = config.get("sensitivity", {}).get("variants", {})
    chosen = {"interactions.baseline": config["interactions"]["baseline"]}
    chosen.update(
        {f"sensitivity.variants.{v}.baseline": o["baseline"] for v, o in variants.items()
         if "baseline" in o}
    )  # fmt: skip
    for key, baseline in chosen.items():
        if baseline in ("auto", "alternative"):  # each modality has both
            continue
        from transferscope.interactions.extract import BASELINES  # torch: only when needed

        for exp, spec in config["experiments"].items():
            modality = MODALITY[config["models"][spec["model"]]["source"]]
            if baseline not in BASELINES[modality]:
                raise ConfigError(
                    f"{source}: {key}: '{baseline}' does not apply to the {modality} players "
                    f"of experiment {exp}; use one of "
                    f"{['auto', 'alternative', *BASELINES[modality]]}"
                )


def sensitivity_interaction_settings(
    config: dict[str, Any], variant: str, experiment: str, seed: int
) -> dict[str, Any]:
    """The extraction settings of one sensitivity variant: the run's own, with the variant's
    ``interactions`` overrides (config ``sensitivity.variants``)."""
    variants = config.get("sensitivity", {}).get("variants", {})
    if variant not in variants:
        raise ConfigError(
            f"sensitivity.variants.{variant}: not configured; have {sorted(variants)}"
        )
    settings = interaction_settings(config, experiment, seed)
    settings["interactions"] = {**settings["interactions"], **variants[variant]}
    return settings


def sensitivity_reuses_values(config: dict[str, Any], variant: str) -> bool:
    """Whether a variant changes only settings that act after the forward passes
    (``POST_GAME_SETTINGS``): its extraction then re-decomposes the default extraction's cached
    v instead of evaluating every checkpoint again."""
    overrides = config.get("sensitivity", {}).get("variants", {}).get(variant, {})
    return set(overrides) <= set(POST_GAME_SETTINGS)


def training_settings(config: dict[str, Any], experiment: str, regime: str) -> dict[str, Any]:
    """Training hyper-parameters of one regime: the schema's fallback < training < experiment."""
    if regime not in REGIMES:
        raise ConfigError(f"regime '{regime}' unknown; allowed: {list(REGIMES)}")
    settings = schema_default("training", regime)
    settings.update(config.get("training", {}).get(regime, {}))
    settings.update(config["experiments"][experiment].get("training", {}).get(regime, {}))
    return settings


def run_settings(config: dict[str, Any], experiment: str, regime: str, seed: int) -> dict[str, Any]:
    """Everything one training run depends on: what a rule passes to `transferscope train`."""
    if experiment not in config["experiments"]:
        raise ConfigError(
            f"experiment '{experiment}' unknown; allowed: {sorted(config['experiments'])}"
        )
    spec = config["experiments"][experiment]
    settings = {
        "experiment": experiment,
        "regime": regime,
        "seed": int(seed),
        "dataset": spec["dataset"],
        "model": dict(config["models"][spec["model"]], label=spec["model"]),
        "training": training_settings(config, experiment, regime),
        "device": config.get("device", schema_default("device")),
    }
    if regime in ("probe", "finetune"):  # recorded, so a new parent reruns the run
        settings["pretrained_seed"] = pretrained_seed(config, seed)
    return settings


def pretrained_seed(config: dict[str, Any], seed: int | str) -> int:
    """Seed of the pre-training run that the probe and fine-tune runs of ``seed`` start from."""
    shared = config.get("pretrained_seed", schema_default("pretrained_seed"))
    return int(seed) if shared is None else int(shared)


def pretrained_seeds(config: dict[str, Any]) -> list[int]:
    """The pre-training runs that the configured seeds start from (only these are trained)."""
    return sorted({pretrained_seed(config, s) for s in config["seeds"]})


def epochs(config: dict[str, Any], experiment: str, regime: str) -> int:
    return int(training_settings(config, experiment, regime)["epochs"])


def interaction_settings(config: dict[str, Any], experiment: str, seed: int) -> dict[str, Any]:
    """What one (experiment, seed) extraction job depends on."""
    spec = config["experiments"][experiment]
    return {
        "experiment": experiment,
        "seed": int(seed),
        "dataset": spec["dataset"],
        "model": dict(config["models"][spec["model"]], label=spec["model"]),
        "interactions": config["interactions"],
        "device": config.get("device", schema_default("device")),
    }
