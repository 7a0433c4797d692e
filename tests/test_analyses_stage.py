"""Analysis stages (transferscope.analyses.stage) on tiny smoke-config runs made here."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import polars as pl
import pytest
import torch

from transferscope.analyses import pairwise, stage
from transferscope.analyses import settings as analyses
from transferscope.config import ConfigError, run_settings
from transferscope.models import build_model, load_checkpoint, load_model
from transferscope.training import evaluate, load_task, train_run

EXP = "digits_resnet"
# a reduced analysis: every table and figure, a few seconds
QUICK = {
    "eval_samples": 48,
    "lambdas": 3,
    "gallery": 4,
    "cka": {"reduce": "pool"},
    "criticality": {
        "modules": ["backbone.layer4"],
        "alphas": 2,
        "sigmas": 1,
        "draws": 1,
        "samples": 16,
    },
    "block_sizes": [8],
}


@pytest.fixture(scope="module")
def config(smoke_config):
    config = copy.deepcopy(smoke_config)
    for regime in ("probe", "finetune", "scratch"):
        config["training"][regime]["epochs"] = 1  # pretrain keeps 2: epoch 1 is intermediate
    config["analyses"] = copy.deepcopy(QUICK)
    return config


@pytest.fixture(scope="module")
def runs(config, prepared, tmp_path_factory):
    """runs/<exp>/<variant>/seed<N>/ as the workflow lays them out: {(variant, seed): dir}."""
    root = tmp_path_factory.mktemp("analysis_runs")
    data = prepared["digits"]
    out = {}

    def train(variant, seed, settings, init=None):
        run = root / "runs" / EXP / variant / f"seed{seed}"
        train_run(settings, data, run, init, threads=1, progress=False)
        out[(variant, seed)] = run

    # one pre-trained run (pretrained_seed: 0) that every probe and fine-tune seed starts from
    train("pretrain", 0, run_settings(config, EXP, "pretrain", 0))
    final = out[("pretrain", 0)] / "epoch_002.safetensors"
    for seed in (0, 1):
        for regime in ("probe", "finetune"):
            train(regime, seed, run_settings(config, EXP, regime, seed), final)
        train("scratch", seed, run_settings(config, EXP, "scratch", seed))
    train("finetune-shuffle8", 0, analyses.shuffle_settings(config, EXP, "finetune", 0, 8), final)
    train("scratch-shuffle8", 0, analyses.shuffle_settings(config, EXP, "scratch", 0, 8))
    init = out[("pretrain", 0)] / "epoch_001.safetensors"
    train("finetune-from1", 0, analyses.from_settings(config, EXP, 0, 1), init)
    return out


def _summaries(runs, variants=None, seeds=(0, 1)):
    return [
        str(d / "summary.json")
        for (variant, seed), d in runs.items()
        if (variants is None or variant in variants) and seed in seeds
    ]


@pytest.fixture(scope="module")
def analysed(config, runs, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("analyses") / EXP / "summary.json"
    settings = analyses.analysis_settings(config, EXP)
    regimes = ("pretrain", "probe", "finetune", "scratch")
    summary = stage.run_analyses(
        settings, prepared["digits"], _summaries(runs, regimes), out, threads=1
    )
    return out.parent, summary


def test_settings_targets_and_config_errors(config, smoke_config):
    smoke_config = dict(smoke_config, analyses={})  # the stage's own defaults
    params = analyses.analyses_params(smoke_config)
    assert params["eval_samples"] == 256 and params["block_sizes"] == [4, 8]
    assert analyses.analysis_seeds(smoke_config) == [smoke_config["seeds"][0]]
    assert analyses.pretrain_epochs(smoke_config, EXP) == [1]  # pre-training has 2 epochs
    targets = analyses.analyses_targets(smoke_config)
    assert f"results/analyses/{EXP}/summary.json" in targets
    assert f"results/analyses/{EXP}/intermediate.parquet" in targets
    assert not any("sentiment" in t for t in targets)
    assert "sentiment_minilm" in analyses.skipped_experiments(smoke_config)
    assert analyses.shuffle_settings(config, EXP, "scratch", 0, 8)["block_shuffle"] == 8
    assert analyses.reuse_run_summaries(config, EXP) == [
        f"runs/{EXP}/{v}/seed0/summary.json"
        for v in ("finetune", "scratch", "finetune-shuffle8", "scratch-shuffle8")
    ]

    bad = dict(smoke_config, analyses={"eval_sample": 10})
    with pytest.raises(ConfigError, match="analyses.eval_sample: unknown key"):
        analyses.analyses_params(bad)
    bad = dict(smoke_config, analyses={"pretrain_epochs": [5]})
    with pytest.raises(ConfigError, match=r"analyses.pretrain_epochs.*epochs 0..2"):
        analyses.pretrain_epochs(bad, EXP)
    with pytest.raises(ConfigError, match="text experiment"):
        analyses.shuffle_settings(smoke_config, "sentiment_minilm", "finetune", 0, 4)
    with pytest.raises(ConfigError, match="analyses.lambdas"):
        analyses.analyses_params(dict(smoke_config, analyses={"lambdas": [0.5]}))


def test_every_analysis_run_starts_from_the_one_pretrained_run(config):
    """P-T/P-T comparisons need fine-tunes of one pre-trained model (docs/references.md §2)."""
    assert config["pretrained_seed"] == 0 and config["seeds"] == [0, 1]
    summaries = analyses.experiment_run_summaries(config, EXP)
    pretrain = [s for s in summaries if "/pretrain/" in s]
    assert pretrain == [f"runs/{EXP}/pretrain/seed0/summary.json"]
    assert f"runs/{EXP}/finetune/seed1/summary.json" in summaries
    assert f"runs/{EXP}/pretrain/seed0/summary.json" in analyses.checkpoint_run_summaries(
        dict(config, analyses=dict(config["analyses"], seeds=[1])), EXP
    )
    wildcards = SimpleNamespace(experiment=EXP, seed="1", epoch="1")
    assert (
        analyses.from_init(config, wildcards) == f"runs/{EXP}/pretrain/seed0/epoch_001.safetensors"
    )
    assert analyses.from_settings(config, EXP, 1, 1)["pretrained_seed"] == 0
    assert analyses.analysis_settings(config, EXP)["pretrained_seed"] == 0
    own = dict(config, pretrained_seed=None)  # the old layout: each seed its own parent
    assert analyses.from_init(own, wildcards) == f"runs/{EXP}/pretrain/seed1/epoch_001.safetensors"
    assert [s for s in analyses.experiment_run_summaries(own, EXP) if "/pretrain/" in s] == [
        f"runs/{EXP}/pretrain/seed{s}/summary.json" for s in (0, 1)
    ]


def test_pt_pairs_are_fine_tunes_of_the_same_pretrained_model(analysed, runs):
    out_dir, summary = analysed
    shared = pairwise.model_pairs([0, 1, 2], {0: "P", 1: "P", 2: "P"})
    assert [(a[1], b[1]) for t, a, b in shared if t == "P-T/P-T"] == [(0, 1), (0, 2), (1, 2)]
    own = pairwise.model_pairs([0, 1, 2], {0: "P0", 1: "P1", 2: "P2"})
    assert not [p for p in own if p[0] == "P-T/P-T"]
    assert len([p for p in own if p[0] == "RI-T/RI-T"]) == 3  # scratch runs share nothing

    # both fine-tunes (and probes) started from the one pre-trained checkpoint
    pretrained = runs[("pretrain", 0)] / "epoch_002.safetensors"
    assert summary["models"]["pretrained_seed"] == {0: 0, 1: 0}
    assert summary["models"]["P-T/P-T pairs"].endswith("seed0-seed1")
    assert {summary["models"]["checkpoints"][("P weights", s)] for s in (0, 1)} == {str(pretrained)}
    barriers = pl.read_parquet(out_dir / "barriers.parquet").filter(
        pl.col("pair_type") == "P-T/P-T"
    )
    assert barriers.select("seed_a", "seed_b").rows() == [(0, 1)]
    spectra = pl.read_parquet(out_dir / "spectra_summary.parquet")
    assert spectra.filter(pl.col("model") == "P")["seed"].unique().to_list() == [0]


def test_a_fine_tune_of_another_pretrained_model_is_an_error(config, runs, prepared, tmp_path):
    """A P-T run that did not start from the configured pre-trained run is not compared."""
    settings = dict(analyses.analysis_settings(config, EXP), pretrained_seed=None)
    summaries = _summaries(runs, ("pretrain", "probe", "finetune", "scratch"))
    with pytest.raises(FileNotFoundError, match=rf"runs/{EXP}/pretrain/seed1/summary.json"):
        stage.run_analyses(settings, prepared["digits"], summaries, tmp_path / "summary.json")
    from transferscope.analyses.runs import collect_runs

    found = collect_runs(summaries, EXP)
    with pytest.raises(ValueError, match="scratch/seed1.*did not start from"):
        stage._parent_checkpoint(found[("pretrain", 0)], found[("scratch", 1)])


def test_schema_defaults_match_the_stage_defaults():
    """Once the schema lists analyses keys, their defaults must be the stage's."""
    import yaml

    from transferscope.config import SCHEMA_PATH

    def check(schema, defaults, where):
        for key, prop in schema.get("properties", {}).items():
            assert key in defaults, f"{where}.{key}"
            if isinstance(defaults[key], dict):
                check(prop, defaults[key], f"{where}.{key}")
            elif "default" in prop:
                assert prop["default"] == defaults[key], f"{where}.{key}"

    schema = yaml.safe_load(SCHEMA_PATH.read_text())["properties"]["analyses"]
    check(schema, analyses.ANALYSES_DEFAULTS, "analyses")


def test_block_size_equal_to_image_size_reproduces_unshuffled_data(prepared, smoke_config):
    spec = run_settings(smoke_config, EXP, "finetune", 0)["model"]
    plain = load_task(prepared["digits"], "target", spec)
    size = plain.train_inputs["x"].shape[-1]
    same = load_task(prepared["digits"], "target", spec, block_shuffle=size)
    shuffled = load_task(prepared["digits"], "target", spec, block_shuffle=8)
    for split in ("train_inputs", "test_inputs"):
        x, y, z = (getattr(t, split)["x"] for t in (plain, same, shuffled))
        assert torch.equal(x, y)
        assert not torch.equal(x, z)
        # shuffling moves pixels, it does not change them
        assert torch.equal(x.flatten(1).sort(1).values, z.flatten(1).sort(1).values)


def test_run_analyses_writes_every_output(analysed):
    out_dir, summary = analysed
    assert not summary["skipped"] and summary["seeds"] == [0, 1]
    for name in analyses.MODEL_TABLES:
        for ext in ("parquet", "csv"):
            assert (out_dir / f"{name}.{ext}").stat().st_size > 0, name
    for name in analyses.MODEL_FIGURES:
        assert (out_dir / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    written = json.loads((out_dir / "summary.json").read_text())
    assert written["barrier"]["bn_recomputed"] is True
    assert written["cka"]["modules"][-1] == "backbone" and written["cka"]["reduce"] == "pool"
    assert pl.read_parquet(out_dir / "barriers.parquet")["bn_recomputed"].all()
    # the grid actually run is stated; an argmin on its edge is a bound, not a value
    crit = pl.read_parquet(out_dir / "criticality.parquet")
    assert (crit["grid"] == "2 α in [0, 1] × 1 σ in [0.1, 0.1], 1 draws").all()
    assert written["criticality"]["grid"] == crit["grid"][0]
    edge = crit.filter(pl.col("on_grid_edge"))
    assert edge.height == written["criticality"]["on_grid_edge"]
    assert edge["criticality"].is_null().all()
    assert edge["criticality_upper_bound"].is_not_null().all()
    assert crit.filter(~pl.col("on_grid_edge"))["criticality_upper_bound"].is_null().all()


def test_mistake_counts_add_up_to_the_evaluated_samples(analysed):
    out_dir, summary = analysed
    n = summary["eval"]["samples"]
    assert n == QUICK["eval_samples"]
    table = pl.read_parquet(out_dir / "mistakes.parquet")
    assert set(table["pair_type"]) == {"P-T/P-T", "RI-T/RI-T", "P-T/RI-T"}
    parts = (
        table["both_wrong"] + table["only_a_wrong"] + table["only_b_wrong"] + table["both_right"]
    )
    assert (parts == n).all() and (table["n"] == n).all()
    assert (table["uncommon"] == table["only_a_wrong"] + table["only_b_wrong"]).all()
    samples = pl.read_parquet(out_dir / "mistakes_samples.parquet")
    assert samples.height == 4 * n  # P-T and RI-T, two seeds each


def test_cka_table_values_and_self_similarity(analysed, runs, prepared, smoke_config):
    out_dir, summary = analysed
    cka = pl.read_parquet(out_dir / "cka.parquet")
    assert cka["cka"].is_between(0.0, 1.0).all()
    assert set(cka["pair_type"]) == set(pairwise.PAIR_TYPES)

    model, _ = load_model(runs[("finetune", 0)] / "epoch_001.safetensors")
    spec = run_settings(smoke_config, EXP, "finetune", 0)["model"]
    x = load_task(prepared["digits"], "target", spec).test_inputs["x"][:32]
    models = {("P-T", 0): model}
    self_cka, dist = pairwise.similarity_tables(
        models, [("self", ("P-T", 0), ("P-T", 0))], x, summary["cka"]["modules"], "flatten", False
    )
    diagonal = self_cka.filter(pl.col("diagonal"))["cka"]
    assert diagonal.len() == len(summary["cka"]["modules"])
    assert ((diagonal - 1.0).abs() < 1e-6).all()
    assert (dist["distance"] == 0).all()


def test_barrier_of_a_model_with_itself_is_zero_along_the_path(runs, prepared, smoke_config):
    settings = run_settings(smoke_config, EXP, "finetune", 0)
    task = load_task(prepared["digits"], "target", settings["model"])
    state, meta = load_checkpoint(runs[("finetune", 0)] / "epoch_001.safetensors")
    instance = build_model(settings["model"], meta["num_classes"], meta["in_chans"], False)
    x, y = task.test_inputs["x"][:32], task.test_y[:32]
    curves, heights = pairwise.barrier_tables(
        {("P-T", 0): state},
        lambda: instance,
        [("self", ("P-T", 0), ("P-T", 0))],
        lambda m: evaluate(m, {"x": x}, y, "cpu"),
        [0.0, 0.25, 0.5, 1.0],
        [task.train_inputs["x"]],
    )
    assert curves["bn_recomputed"].all()
    assert (curves["loss"] - curves["loss"][0]).abs().max() < 1e-6
    assert abs(heights["barrier_loss"][0]) < 1e-6 and abs(heights["barrier_accuracy"][0]) < 1e-9


def test_different_architectures_are_an_error_naming_both():
    spec = {"source": "timm", "name": "resnet10t", "kwargs": {"channels": [8, 16, 16, 32]}}
    a, b = ("P-T", 0), ("RI-T", 0)
    models = {a: build_model(spec, 5, 1, False), b: build_model(spec, 3, 1, False)}
    paths = {a: "runs/x/finetune/seed0/epoch_001.safetensors", b: "runs/x/scratch/seed0/e.st"}
    with pytest.raises(ValueError, match=r"P-T seed0 and RI-T seed0 have different arch") as err:
        pairwise.similarity_tables(
            models,
            [("P-T/RI-T", a, b)],
            torch.randn(8, 1, 32, 32),
            ["backbone"],
            "pool",
            False,
            paths=paths,
        )
    assert paths[a] in str(err.value) and paths[b] in str(err.value)


def test_missing_run_is_an_error_naming_it(config, runs, prepared, tmp_path):
    settings = analyses.analysis_settings(config, EXP)
    with pytest.raises(FileNotFoundError, match=rf"runs/{EXP}/scratch/seed0/summary.json"):
        stage.run_analyses(
            settings,
            prepared["digits"],
            _summaries(runs, ("pretrain", "probe", "finetune")),
            tmp_path / "summary.json",
        )


def test_feature_reuse_and_intermediate_checkpoints(config, runs, prepared, tmp_path):
    reuse = stage.feature_reuse(
        analyses.analysis_settings(config, EXP, "reuse"),
        prepared["digits"],
        _summaries(runs, seeds=(0,)),
        tmp_path / "feature_reuse.parquet",
    )
    assert (tmp_path / "feature_reuse.png").stat().st_size > 0
    assert (tmp_path / "feature_reuse.csv").stat().st_size > 0
    assert reuse["block_size"].to_list() == [8, 32]
    assert reuse["shuffled"].to_list() == [True, False]
    row = reuse.row(1, named=True)
    assert row["relative_gap"] == pytest.approx(
        (row["accuracy_pt"] - row["accuracy_rit"]) / row["accuracy_pt"]
    )

    settings = analyses.analysis_settings(config, EXP, "checkpoints")
    assert settings["pretrain_epochs"] == [1] and settings["pretrain_final_epoch"] == 2
    inter = stage.intermediate_checkpoints(
        settings, _summaries(runs, seeds=(0,)), tmp_path / "intermediate.parquet"
    )
    assert (tmp_path / "intermediate.png").stat().st_size > 0
    assert inter.filter(~pl.col("reference"))["pretrain_epoch"].to_list() == [1, 2]
    assert inter.filter(pl.col("reference")).height == 1
    assert inter["source_test_accuracy"].drop_nulls().len() == 2


def test_compare_puts_the_views_side_by_side(analysed, tmp_path):
    out_dir, _ = analysed
    # knowledge tables as knowledge_transfer writes them (made-up numbers)
    pl.DataFrame(
        {
            "experiment": [EXP, EXP],
            "kind": ["and", "or"],
            "order": [0, 0],
            "metric": ["preserved_ratio"] * 2,
            "mean": [0.4, 0.9],
            "low": [0.3, 0.8],
            "high": [0.5, 1.0],
            "n_seeds": [2, 2],
            "n_samples": [6, 6],
        }
    ).write_parquet(tmp_path / "transfer.parquet")
    pl.DataFrame(
        {
            "experiment": [EXP] * 4,
            "seed": pl.Series([0, 0, 1, 1], dtype=pl.Int32),
            "kind": ["and"] * 4,
            "order": pl.Series([0] * 4, dtype=pl.Int32),
            "sample": [1, 2, 1, 2],
            "preserved_ratio": [0.2, float("nan"), 0.6, 0.4],
        }
    ).write_parquet(tmp_path / "transfer_samples.parquet")
    result = stage.compare(
        [out_dir / "summary.json"],
        tmp_path / "transfer.parquet",
        tmp_path / "transfer_samples.parquet",
        tmp_path / "summary.json",
        skipped={"sentiment_minilm": "text"},
    )
    for name in ("side_by_side", "views", "bridge"):
        assert (tmp_path / f"{name}.parquet").exists() and (tmp_path / f"{name}.csv").exists()
    for name in ("side_by_side", "bridge"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    side = pl.read_parquet(tmp_path / "side_by_side.parquet")
    pt_p = side.filter(pl.col("pair_type") == "P-T/P").sort("seed_a")
    assert pt_p["preserved_share_seed"].to_list() == pytest.approx([0.2, 0.5])  # NaN left out
    assert side.filter(pl.col("pair_type") != "P-T/P")["preserved_share_seed"].null_count() == (
        side.height - 2
    )
    assert (side["preserved_share"] == 0.4).all()
    assert side.filter(pl.col("pair_type") == "P-T/P-T")["barrier_loss"].is_not_null().all()
    bridge = pl.read_parquet(tmp_path / "bridge.parquet")
    assert bridge.sort("seed")["preserved_share_seed"].to_list() == pytest.approx([0.2, 0.5])
    assert result["skipped"] == {"sentiment_minilm": "text"}
    assert result["sentences"][0].startswith(f"{EXP}: P-T keeps 40% of P's salient AND")
