"""Bad configuration stops before any job, naming the key and the allowed values."""

from __future__ import annotations

import copy

import pytest
import yaml

from transferscope.config import ConfigError, load_config, validate_config

from .conftest import ROOT


@pytest.fixture()
def raw():
    return yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())


def test_shipped_configs_validate():
    for path in [ROOT / "config.yaml", *sorted((ROOT / "config").glob("*.yaml"))]:
        if path.name.startswith("theory"):
            continue
        if path.name == "sensitivity.yaml":  # an overlay on config.yaml (see its header)
            raw = yaml.safe_load((ROOT / "config.yaml").read_text())
            config = validate_config({**raw, **yaml.safe_load(path.read_text())})
            assert config["sensitivity"]["variants"]
            continue
        if path.name == "evidence.yaml":  # an overlay, merged key by key as Snakemake does
            from snakemake.utils import update_config

            raw = yaml.safe_load((ROOT / "config.yaml").read_text())
            update_config(raw, yaml.safe_load(path.read_text()))
            config = validate_config(raw, source=str(path))
            assert set(yaml.safe_load((ROOT / "config.yaml").read_text())["experiments"]) < set(
                config["experiments"]
            )
            continue
        config = load_config(path)
        assert config["experiments"]


def test_defaults_are_filled(raw):
    config = validate_config(raw)
    assert config["interactions"]["tau"] == 0.05 and config["device"] == "cpu"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(epochs=3), "Additional properties are not allowed \\('epochs'"),
        (lambda c: c["training"]["finetune"].update(lr="fast"), "training.finetune.lr"),
        (lambda c: c["datasets"].update(imagenet={}), "imagenet"),
        (
            lambda c: c["experiments"]["digits_resnet"].update(model="vgg"),
            "'vgg' is not configured",
        ),
        (lambda c: c["interactions"].update(precision="fp8"), "fp8"),
        (lambda c: c["interactions"].update(baseline="grey"), "interactions.baseline.*grey"),
    ],
)
def test_bad_config_names_the_key(raw, edit, message):
    config = copy.deepcopy(raw)
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config, source="smoke.yaml")


def test_unknown_dataset_lists_allowed(raw):
    config = copy.deepcopy(raw)
    config["experiments"]["digits_resnet"]["dataset"] = "mnist"
    with pytest.raises(ConfigError, match="allowed: \\['digits', 'sentiment'\\]"):
        validate_config(config)


def test_unknown_timm_model_lists_close_matches():
    from transferscope.models import build_model

    with pytest.raises(ValueError, match="close matches: .*resnet18"):
        build_model({"source": "timm", "name": "resnet18x"}, 2, 1)


def test_probe_and_finetune_seeds_start_from_one_pretrained_run(raw):
    from transferscope.config import pretrained_seed, pretrained_seeds, run_settings

    config = validate_config(raw)
    assert config["pretrained_seed"] == 0 and config["seeds"] == [0, 1]
    for regime in ("probe", "finetune"):
        parents = {
            run_settings(config, "digits_resnet", regime, s)["pretrained_seed"] for s in (0, 1)
        }
        assert parents == {0}
    assert "pretrained_seed" not in run_settings(config, "digits_resnet", "scratch", 1)
    assert pretrained_seeds(config) == [0]
    assert pretrained_seeds(dict(config, pretrained_seed=1)) == [1]
    own = validate_config(dict(raw, pretrained_seed=None))  # each seed its own pre-training
    assert [pretrained_seed(own, s) for s in (0, 1)] == [0, 1] and pretrained_seeds(own) == [0, 1]
    with pytest.raises(ConfigError, match="pretrained_seed"):
        validate_config(dict(raw, pretrained_seed=-1))


def test_theory_block_names_exactly_the_theory_codes_keys():
    """The schema's strict theory block and the theory code's defaults list the same keys, and
    the defaults and the paper's full grid pass the schema."""
    import jsonschema

    from transferscope.config import SCHEMA_PATH
    from transferscope.theory.relu import RELU_DEFAULTS
    from transferscope.theory.report import DEFAULT_PARAMS

    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["theory"]
    assert set(schema["properties"]) == set(DEFAULT_PARAMS)
    assert set(schema["properties"]["relu"]["properties"]) == set(RELU_DEFAULTS)
    jsonschema.validate(DEFAULT_PARAMS, schema)
    jsonschema.validate(
        yaml.safe_load((ROOT / "config" / "theory-full.yaml").read_text())["theory"], schema
    )


def test_files_setting_a_key_are_those_that_name_it(tmp_path):
    from transferscope.config import files_setting

    base, overlay = tmp_path / "base.yaml", tmp_path / "overlay.yaml"
    base.write_text("seeds: [0]\ntheory: {d: 24}\n")
    overlay.write_text("sensitivity: {variants: {}}\n")
    assert files_setting([base, overlay], "theory") == [str(base)]
    # no file sets it (defaults): every file could start setting it
    assert files_setting([overlay], "theory") == [str(overlay)]
