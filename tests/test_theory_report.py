"""`run_theory`: every output file from a tiny parameter set, and parameter validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from tests.theory_support import one_thread  # noqa: F401  (autouse fixture)
from transferscope.theory import linear
from transferscope.theory.phase import PHASE_COLUMNS
from transferscope.theory.report import DEFAULT_PARAMS, merge_params, run_theory

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "d": 12,
    "width": 4,
    "instances": 2,
    "thetas": 2,
    "gammas": [0.5, 1.5],
    "scratch_steps": 400,
    "transfer_steps": 300,
    "pretrain_steps": 1000,
    "progress": False,
    "relu": {
        "d": 4,
        "teacher_width": 4,
        "width": 6,
        "instances": 2,
        "mus": [0.0, 0.5],
        "ns": [10, 40],
        "n_source": 100,
        "n_test": 100,
        "n_overlap": 200,
        "source_steps": 20,
        "transfer_steps": 10,
    },
}


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("theory")
    run_theory(TINY, out)
    return out


def test_run_theory_writes_every_output(out_dir):
    tables = [
        "phase_linear",
        "phase_finetune",
        "phase_linear_tuned",
        "phase_finetune_tuned",
        "phase_linear_ridge",
        "simulation_runs",
        "relu",
    ]
    for stem in tables:
        parquet, csv = (
            pl.read_parquet(out_dir / f"{stem}.parquet"),
            pl.read_csv(out_dir / f"{stem}.csv"),
        )
        assert (
            parquet.height > 0 and parquet.columns == csv.columns and parquet.height == csv.height
        )
    for name in ("phase_diagrams", "phase_diagrams_tuned", "double_descent", "relu_transfer"):
        assert (out_dir / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out_dir.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_phase_tables_are_consistent(out_dir):
    for stem in ("phase_linear", "phase_finetune"):
        table = pl.read_parquet(out_dir / f"{stem}.parquet")
        assert table.columns == PHASE_COLUMNS
        assert table.height == 2 * 2 * 2  # θ × γ × σ
        assert (table["n_instances"] == 2).all()
        assert (table["n_unconverged"] <= table["n_instances"]).all()
        has_sim = table.filter(pl.col("simulation").is_not_null())
        assert np.allclose(has_sim["difference"], has_sim["theory"] - has_sim["simulation"])
    linear_table = pl.read_parquet(out_dir / "phase_linear.parquet")
    n = np.rint(linear_table["gamma"].to_numpy() * 12)
    expected = linear.linear_transferability(
        linear_table["theta"].to_numpy(), n / 12, linear_table["sigma"].to_numpy(), d=12
    )
    assert np.allclose(linear_table["theory"], expected)


def test_theory_json_headlines(out_dir):
    summary = json.loads((out_dir / "theory.json").read_text())
    assert set(summary["diagrams"]) == {
        "linear",
        "finetune",
        "linear_tuned",
        "finetune_tuned",
        "linear_ridge",
    }
    linear_table = pl.read_parquet(out_dir / "phase_linear.parquet")
    diff = linear_table["difference"].drop_nulls().abs()
    expected = float(diff.max()) if len(diff) else None
    assert summary["diagrams"]["linear"]["max_abs_difference"] == pytest.approx(expected)
    assert summary["params"]["d"] == 12 and summary["params"]["relu"]["width"] == 6
    assert summary["params"]["scratch_lr"] == DEFAULT_PARAMS["scratch_lr"]  # merged defaults
    assert summary["runs"]["total"] == pl.read_parquet(out_dir / "simulation_runs.parquet").height


def test_merge_params_rejects_unknown_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown theory params \['dd', 'zz'\]"):
        merge_params({"zz": 1, "dd": 2})
    with pytest.raises(ValueError, match=r"relu\.\['depth'\]"):
        merge_params({"relu": {"depth": 2}})
    with pytest.raises(ValueError, match=r"depth L.*L=0"):
        merge_params({"depth": 0})
    with pytest.raises(ValueError, match=r"instances=0"):
        merge_params({"instances": 0})
    with pytest.raises(ValueError, match=r"sigma=-0\.2"):
        merge_params({"sigmas": [0.0, -0.2]})
    with pytest.raises(ValueError, match=r"transfer_lr=-1"):
        merge_params({"transfer_lr": -1})
    assert merge_params(None) == DEFAULT_PARAMS and merge_params({}) is not DEFAULT_PARAMS


def test_run_theory_rejects_bad_grids(tmp_path):
    with pytest.raises(ValueError, match=r"gamma=0\.0"):
        run_theory({**TINY, "gammas": [0.0, 1.0]}, tmp_path)
    with pytest.raises(ValueError, match=r"theta=3\.0"):
        run_theory({**TINY, "thetas": [3.0]}, tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written before validation


def test_full_config_is_a_valid_theory_mapping():
    config = yaml.safe_load((ROOT / "config" / "theory-full.yaml").read_text())
    params = merge_params(config["theory"])
    assert params["d"] == 500 and params["instances"] == 20
    assert params["thetas"] == 20 and params["gammas"] == 20


def test_cli_runs_a_theory_only_config_file(tmp_path):
    """`transferscope theory --configfile` takes a file holding only a `theory:` block, as
    config/theory-full.yaml is (a whole workflow config is validated as the workflow does)."""
    from transferscope.cli import main

    config = tmp_path / "theory-tiny.yaml"
    config.write_text(yaml.safe_dump({"theory": TINY}))
    main(["theory", "--configfile", str(config), "--out", str(tmp_path / "out")])
    summary = json.loads((tmp_path / "out" / "theory.json").read_text())
    assert summary["params"]["d"] == TINY["d"]
