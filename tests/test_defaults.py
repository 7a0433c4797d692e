"""Every default the library holds equals the schema's (schemas/config.schema.yaml), key by key."""

from __future__ import annotations

import inspect

import pytest

from transferscope import cli, config, runtime
from transferscope.config import schema_default, schema_defaults


def _default_of(function, name: str):
    return inspect.signature(function).parameters[name].default


def _minimal(**extra) -> dict:
    return {
        "seeds": [0],
        "datasets": {"digits": {}},
        "models": {"m": {"source": "timm", "name": "resnet18"}},
        "experiments": {"e": {"dataset": "digits", "model": "m"}},
        **extra,
    }


def test_helpers_walk_the_schema():
    assert schema_default("interactions", "tau") == 0.05
    assert schema_default("training") == {}
    with pytest.raises(KeyError, match="no key 'interactions.nope'"):
        schema_default("interactions", "nope")
    with pytest.raises(KeyError, match="no default for 'seeds'"):
        schema_default("seeds")
    first = schema_default("training", "probe")
    first["epochs"] = -1  # a copy: callers may change what they get
    assert schema_default("training", "probe")["epochs"] != -1


@pytest.mark.parametrize("regime", config.REGIMES)
def test_training_fallback_is_the_schemas_for_every_key(regime):
    fallback = schema_default("training", regime)
    keys = config._schema_node(("training", regime))["properties"]
    # every key has a fallback, in the schema's order; augment is optional (absent = none) so
    # that runs which never name it keep the settings, and so the checkpoints, they had
    assert list(fallback) == [k for k in keys if k != "augment"]
    resolved = config.validate_config(_minimal())
    assert config.training_settings(resolved, "e", regime) == fallback


def test_validation_does_not_fill_the_fallback_into_config_blocks():
    block = {"finetune": {"epochs": 1}}
    raw = _minimal(training={"finetune": {"lr": 0.5}})
    raw["experiments"]["e"]["training"] = block
    resolved = config.validate_config(raw)
    assert resolved["training"] == {"finetune": {"lr": 0.5}}
    assert resolved["experiments"]["e"]["training"] == block  # overrides only what it names
    settings = config.training_settings(resolved, "e", "finetune")
    assert (settings["epochs"], settings["lr"]) == (1, 0.5)
    assert settings["batch_size"] == schema_default("training", "finetune")["batch_size"]


def test_interaction_defaults():
    from transferscope.interactions import andor, extract, masking, salient

    assert extract.DEFAULTS == schema_defaults("interactions")
    assert set(extract.DEFAULTS) == set(config._schema_node(("interactions",))["properties"])
    assert masking.DEFAULT_MAX_PLAYERS == schema_default("interactions", "max_players")
    assert _default_of(salient.salient_mask, "tau") == schema_default("interactions", "tau")
    for solver in (andor.decompose, andor.decompose_lp):
        assert _default_of(solver, "q_thres") == schema_default("interactions", "q_thres")


def test_device_defaults():
    assert _default_of(runtime.resolve_device, "name") == schema_default("device")
    unvalidated = {k: v for k, v in config.validate_config(_minimal()).items() if k != "device"}
    assert config.run_settings(unvalidated, "e", "scratch", 0)["device"] == schema_default("device")
    assert config.interaction_settings(unvalidated, "e", 0)["device"] == schema_default("device")


def test_pretrained_seed_default():
    unvalidated = config.validate_config(_minimal())
    del unvalidated["pretrained_seed"]
    assert config.pretrained_seed(unvalidated, 3) == schema_default("pretrained_seed")


def test_cli_defaults():
    parser = cli.build_parser()
    knowledge = parser.parse_args(["knowledge", "transfer", "--out-dir", "k"])
    assert {
        "sign_agreement": knowledge.sign_agreement,
        "bootstrap": knowledge.bootstrap,
        "confidence": knowledge.confidence,
    } == schema_defaults("knowledge")
    dpi = schema_default("figures", "dpi")
    for argv in (
        ["figures", "curves", "--runs", "r", "--out", "o"],
        ["figures", "transfer", "--out", "o"],
        ["analyses", "compare", "--out", "o"],
    ):
        assert parser.parse_args(argv).dpi == dpi, argv


def test_analyses_defaults():
    from transferscope.analyses.settings import ANALYSES_DEFAULTS, NESTED

    schema = schema_defaults("analyses")
    for key in NESTED:  # nested mappings default to {} and get their keys' defaults filled in
        assert schema[key] == {}
        schema[key] = schema_defaults("analyses", key)
    assert schema == ANALYSES_DEFAULTS
    assert list(schema) == list(ANALYSES_DEFAULTS)
