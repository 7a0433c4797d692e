"""The graded-transfer series: shapes variants sharing a fraction f of their planted parts, the
trend test and its claims, and the stage's wiring (transferscope.knowledge.graded)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from transferscope.config import ConfigError, load_config
from transferscope.data import read_manifest, shapes
from transferscope.data.registry import dataset_params, prepare_dataset
from transferscope.knowledge import claims, graded

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"train_per_class": 8, "target_train_per_class": 4, "test_per_class": 4}
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)
# SHA-256 over the default shapes arrays (x, y, placements of every task and split), as the
# generator made them before shared_fraction existed
DEFAULT_ARRAYS_SHA256 = "bb034a1673a33b2b2f2c6f4a6b7d2ba5d461114d354495147d4d1202b5edb492"


def parts(rules, task):
    return {(p["part"], p["cell"]) for r in rules[task] for p in r["present"] + r["absent"]}


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_variant_shares_exactly_round_f_k_parts(fraction):
    params = dataset_params("v", {"generator": "shapes", "shared_fraction": fraction, **SMALL})
    rules = shapes.rules_manifest(params["grid"], fraction)
    k = rules["k"]
    source, target = parts(rules, "source"), parts(rules, "target")
    assert len(source) == len(target) == k == 4
    s = round(fraction * k)
    assert len(source & target) == s
    listed = {key: {(p["part"], p["cell"]) for p in rules[key]}
              for key in ("shared", "source_only", "target_only")}  # fmt: skip
    assert listed == {"shared": source & target, "source_only": source - target,
                      "target_only": target - source}  # fmt: skip
    # an unshared part never sits on a cell the other task reads: players do not coincide
    source_cells = {c for _, c in source}
    assert not {c for _, c in listed["target_only"]} & source_cells
    assert rules["shared_fraction"] == fraction
    # every generated image satisfies exactly its own class's rule (independent evaluator)
    generated = shapes.generate(params)
    for task, splits in generated.items():
        for _, y, placements in splits.values():
            for row, label in zip(placements, y):
                cells = {c: shapes.GLYPHS[g] for c, g in enumerate(row) if g >= 0}
                holds = []
                for rule in rules[task]:
                    present = [cells.get(p["cell"]) == p["part"] for p in rule["present"]]
                    absent = [cells.get(p["cell"]) == p["part"] for p in rule["absent"]]
                    ok = any(present) if rule["type"] == "or" else all(present) and not any(absent)
                    holds.append(ok)
                assert holds == [i == label for i in range(len(rules[task]))]


def test_shared_fraction_unset_keeps_the_dataset_byte_identical(tmp_path):
    generated = shapes.generate(dict(shapes.DEFAULT_PARAMS))
    digest = hashlib.sha256()
    for task in ("source", "target"):
        for split in ("train", "test"):
            for array in generated[task][split]:
                digest.update(np.ascontiguousarray(array).tobytes())
    assert digest.hexdigest() == DEFAULT_ARRAYS_SHA256
    # null means unset: nothing new in the manifest's params either
    prepare_dataset("shapes", {**SMALL, "shared_fraction": None}, tmp_path / "a")
    prepare_dataset("shapes", SMALL, tmp_path / "b")
    a, b = ((tmp_path / d / "manifest.json").read_bytes() for d in "ab")
    assert a == b and "shared_fraction" not in json.loads(a)["params"]


def test_variant_names_and_bad_values(tmp_path):
    out = prepare_dataset(
        "shapes_f050", {"generator": "shapes", "shared_fraction": 0.5, **SMALL}, tmp_path / "v"
    )
    manifest = read_manifest(out)
    assert manifest["params"]["shared_fraction"] == 0.5 and "generator" not in manifest["params"]
    assert len(manifest["rules"]["shared"]) == 2
    with pytest.raises(ValueError, match=r"datasets.shapes.shared_fraction=1.5"):
        prepare_dataset("shapes", {"shared_fraction": 1.5}, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="unknown dataset 'shapes_f050'.*generator"):
        prepare_dataset("shapes_f050", {"shared_fraction": 0.5}, tmp_path / "bad")


def _overlay_config(tmp_path, fractions=(0.0, 0.5, 1.0), **graded_block):
    """config/smoke.yaml plus a small graded series (as Snakemake merges --configfile files)."""
    overlay = {
        "datasets": {f"shapes_f{int(f * 100):03d}": {"generator": "shapes", "seed": 0,
                                                     "shared_fraction": f, **SMALL}
                     for f in fractions},
        "experiments": {f"graded_f{int(f * 100):03d}": {"dataset": f"shapes_f{int(f * 100):03d}",
                                                        "model": "resnet"} for f in fractions},
        "graded": {"enabled": True, **graded_block},
        "analyses": {"experiments": ["digits_resnet"]},
    }  # fmt: skip
    path = tmp_path / "graded.yaml"
    path.write_text(yaml.safe_dump(overlay))
    merged = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    for key, value in overlay.items():
        merged[key] = {**merged.get(key, {}), **value}
    merged_path = tmp_path / "merged.yaml"
    merged_path.write_text(yaml.safe_dump(merged))
    return path, merged_path


def test_config_checks_the_series(tmp_path):
    _, merged = _overlay_config(tmp_path)
    config = load_config(merged)
    assert graded.series(config) == {"graded_f000": 0.0, "graded_f050": 0.5, "graded_f100": 1.0}
    _, two = _overlay_config(tmp_path, fractions=(0.0, 1.0))
    with pytest.raises(ConfigError, match=r"graded.experiments: .*3 or more"):
        load_config(two)
    _, named = _overlay_config(tmp_path, experiments=["graded_f000", "digits_resnet"])
    with pytest.raises(
        ConfigError, match=r"'digits_resnet' uses dataset 'digits'.*shared_fraction"
    ):
        load_config(named)
    raw = yaml.safe_load(merged.read_text())
    raw["datasets"]["shapes_f050"]["generator"] = "shapez"
    merged.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"generator"):
        load_config(merged)


# ------------------------------------------------------------------------------ trend test


def _settings(series, draws=20000):
    return {"series": series, "draws": draws, "bootstrap": 200, "confidence": 0.95}


def _per_seed(values_by_f, seeds=3):
    rows = []
    for f, values in values_by_f.items():
        for s in range(seeds):
            for kind in graded.KINDS:
                rows.append({"experiment": f"e{f}", "shared_fraction": f, "kind": kind, "seed": s,
                             "preserved_share": values[s], "exclusive_share": 0.5,
                             "gain": values[s] / 2})  # fmt: skip
    return pl.DataFrame(rows)


def test_trend_claims_supported_when_planted_and_null_when_shuffled():
    rng = np.random.default_rng(0)
    planted = {f: 0.2 + 0.6 * f + rng.normal(0, 0.02, 3) for f in FRACTIONS}
    series = {f"e{f}": f for f in FRACTIONS}
    rows = graded.graded_claims(_per_seed(planted), _settings(series))
    assert [r["direction"] for r in rows] == [1, 1, 1] and not any(r["reason"] for r in rows)
    table = claims.finalise([{k: v for k, v in r.items() if k != "reason"} for r in rows], 0.05)
    assert table["verdict"].to_list() == [claims.SUPPORTED] * 3
    assert (table["observed"] > 0.9).all()
    values = np.concatenate(list(planted.values()))
    shuffled = dict(zip(FRACTIONS, rng.permutation(values).reshape(5, 3)))
    # a shuffle with no trend left: |rho| small
    while abs(graded.trend_test(np.repeat(FRACTIONS, 3), np.concatenate(list(shuffled.values())))
              ["rho"]) > 0.2:  # fmt: skip
        shuffled = dict(zip(FRACTIONS, rng.permutation(values).reshape(5, 3)))
    rows = graded.graded_claims(_per_seed(shuffled), _settings(series))
    table = claims.finalise([{k: v for k, v in r.items() if k != "reason"} for r in rows], 0.05)
    assert table["verdict"].to_list() == [claims.NULL] * 3


def test_trend_test_exact_and_level_p_values_by_brute_force():
    from itertools import permutations

    from scipy.stats import spearmanr

    x = np.array([0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    y = np.array([0.1, 0.3, 0.2, 0.5, 0.4, 0.9])
    test = graded.trend_test(x, y)
    rho = spearmanr(x, y).statistic
    assert test["rho"] == pytest.approx(rho)
    null = np.array([spearmanr(x, y[list(p)]).statistic for p in permutations(range(6))])
    greater = (1 + np.sum(null >= rho - 1e-12)) / (1 + null.size)
    less = (1 + np.sum(null <= rho + 1e-12)) / (1 + null.size)
    assert test["p_value"] == pytest.approx(min(1, 2 * min(greater, less)))
    # whole levels permuted: 3! orderings, so a perfect level trend cannot go below 2·2/7
    levels = graded.trend_test(np.repeat([0.0, 0.5, 1.0], 5), np.repeat([1.0, 2.0, 3.0], 5)
                               + np.arange(15) * 1e-3)  # fmt: skip
    assert levels["p_levels"] == pytest.approx(4 / 7)
    assert levels["p_value"] < 0.001  # the runs permuted one by one
    assert np.isnan(graded.trend_test([0, 0, 0], [1, 2, 3])["rho"])


def test_theory_analogue_comes_from_the_linear_theory():
    from transferscope.theory import linear

    full = graded.theory_analogue(4, 4, 4, gamma=0.5, sigma=0.0)
    none = graded.theory_analogue(0, 4, 4, gamma=0.5, sigma=0.0)
    half = graded.theory_analogue(2, 4, 4, gamma=0.5, sigma=0.0)
    assert full["theory_feature_overlap"] == pytest.approx(1.0)
    assert none["theory_feature_overlap"] == pytest.approx(0.0, abs=1e-12)
    assert half["theory_feature_overlap"] == pytest.approx(0.25)  # cos θ = f, overlap cos²θ
    # fine-tuning transfers negatively below cos θ = 1/2 (θ > π/3) and not at all at π/3
    assert none["theory_finetune_transferability"] < 0 < full["theory_finetune_transferability"]
    assert half["theory_finetune_transferability"] == pytest.approx(
        float(linear.finetune_transferability(np.pi / 3, 0.5, 0.0)), abs=1e-12
    )
    # the default layout: 5 shared of 7 source and 8 target parts
    default = graded.part_counts(shapes.rules_manifest(3))
    assert default == {"shared": 5, "source": 7, "target": 8}


# ------------------------------------------------------------------------------ the stage


def _fake_inputs(tmp_path, fractions=FRACTIONS, seeds=(0, 1, 2)):
    """Prepared small datasets, run summaries and overlap tables with a planted trend."""
    data, runs, overlap, samples = {}, [], [], []
    for f in fractions:
        exp = f"graded_f{int(f * 100):03d}"
        data[exp] = str(prepare_dataset(
            f"shapes_f{int(f * 100):03d}", {"generator": "shapes", "shared_fraction": f, **SMALL},
            tmp_path / "data" / exp,
        ))  # fmt: skip
        for s in seeds:
            for regime, acc in (("finetune", 0.6 + 0.3 * f), ("scratch", 0.6)):
                path = tmp_path / "runs" / exp / regime / f"seed{s}" / "summary.json"
                path.parent.mkdir(parents=True)
                path.write_text(json.dumps({"experiment": exp, "regime": regime, "seed": s,
                                            "final": {"test_accuracy": acc + 0.01 * s}}))  # fmt: skip
                runs.append(str(path))
        for kind in graded.KINDS:
            for comparison, share in (("preserved", 0.2 + 0.5 * f), ("also_in_scratch", 0.7)):
                overlap.append({"experiment": exp, "kind": kind, "comparison": comparison,
                                "orders": "all", "share": share, "null": 0.1, "excess": share - 0.1,
                                "excess_low": share - 0.15, "excess_high": share - 0.05,
                                "p_value": 0.001, "n_seeds": 3, "n_samples": 12})  # fmt: skip
                for s in seeds:
                    for sample in range(4):
                        samples.append({"experiment": exp, "kind": kind, "comparison": comparison,
                                        "orders": "all", "seed": str(s), "sample": sample,
                                        "share": share + 0.01 * s, "null": 0.1})  # fmt: skip
    knowledge = tmp_path / "knowledge"
    knowledge.mkdir()
    pl.DataFrame(overlap).write_parquet(knowledge / "overlap.parquet")
    pl.DataFrame(samples).write_parquet(knowledge / "overlap_samples.parquet")
    return data, runs, knowledge


def test_stage_writes_the_table_figure_and_claim_rows(tmp_path):
    data, runs, knowledge = _fake_inputs(tmp_path)
    settings = {**_settings({e: f for e, f in zip(data, FRACTIONS)}, draws=2000),
                "seeds": [0, 1, 2], "gamma": 0.5, "sigma": 0.0}  # fmt: skip
    out, figure = tmp_path / "evidence", tmp_path / "graded.png"
    graded.graded_stage(settings, runs, data, knowledge, out, figure)
    table = pl.read_parquet(out / "graded.parquet").filter(pl.col("kind") == "and")
    assert table["shared_fraction"].to_list() == list(FRACTIONS)
    assert table["shared_parts"].to_list() == [0, 1, 2, 3, 4]
    assert table["gain"].to_numpy() == pytest.approx(0.3 * np.array(FRACTIONS))
    assert table["exclusive_share"].to_numpy() == pytest.approx(0.3)  # 1 − also_in_scratch
    assert table["exclusive_null"].to_numpy() == pytest.approx(0.9)
    assert table["theory_feature_overlap"].to_numpy() == pytest.approx(np.square(FRACTIONS))
    assert (out / "graded.csv").is_file() and figure.stat().st_size > 10_000
    rows = claims.read_claim_rows(out / "claim_rows.parquet")
    verdicts = claims.finalise(rows, 0.05)
    assert verdicts["verdict"].to_list() == [claims.SUPPORTED] * 3
    assert set(verdicts["study"]) == {graded.STUDY}
    # a dataset made with another fraction than the config says is refused, naming the fix
    wrong = {**settings, "series": {**settings["series"], "graded_f050": 0.6}}
    with pytest.raises(ValueError, match=r"shared_fraction 0.5, the config says 0.6.*forcerun"):
        graded.graded_stage(wrong, runs, data, knowledge, out, figure)


@pytest.mark.slow
def test_dry_run_schedules_the_graded_stage(tmp_path):
    from transferscope import workflow

    overlay, merged = _overlay_config(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-F", "-p", "--workflow-profile", "none",
         "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path / "work"),
         "--configfile", str(ROOT / "config" / "smoke.yaml"), str(overlay)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    from .slurm_cluster import parse_dry_run

    dry = parse_dry_run(result.stdout + result.stderr)
    assert dry.stats["graded_transfer"] == 1
    assert dry.stats["analyses"] == 1  # the analyses stay on digits_resnet
    job = next(j for j in dry.jobs if j.rule == "graded_transfer")
    assert job.shell.startswith("transferscope knowledge graded ")
    assert "graded_f050=data/shapes_f050" in job.shell
    claims_job = next(j for j in dry.jobs if j.rule == "knowledge_claims")
    assert "results/evidence/graded/claim_rows.parquet" in claims_job.shell
    assert "results/evidence/graded/claim_rows.parquet" in workflow.evidence_claim_rows(
        load_config(merged)
    )
    data_jobs = {j.fields["output"] for j in dry.jobs if j.rule == "prepare_data"}
    assert {"data/shapes_f000", "data/shapes_f050", "data/shapes_f100"} <= data_jobs
