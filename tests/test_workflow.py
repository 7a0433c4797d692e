"""The Snakemake workflow end to end on the smoke config, in a copy of the repository."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html import escape as html_escape
from pathlib import Path

import polars as pl
import pytest
import yaml

from .conftest import ROOT, tracked_copy

BIN = Path(sys.executable).parent


def snakemake(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run this environment's snakemake with the environment *not* on PATH, as after a plain
    `.venv/bin/snakemake` without activation: the rules must still find `transferscope`."""
    path = [p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != BIN.resolve()]
    env = dict(os.environ, PATH=os.pathsep.join(path), HF_HUB_OFFLINE="1")
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(
        [str(BIN / "snakemake"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=check,
    )


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_dry_run_lists_every_stage(smoke_config):
    dry = snakemake(ROOT, "-n", "-F", "-p", "--configfile", "config/smoke.yaml").stdout
    counts = job_counts(dry)
    experiments, seeds = len(smoke_config["experiments"]), len(smoke_config["seeds"])
    assert counts["pretrain"] == experiments  # one pre-trained run per experiment (seed 0)
    for regime in ("probe", "finetune", "scratch"):
        assert counts[regime] == experiments * seeds
    # every probe and fine-tune seed, block-shuffled ones included, starts from that one run
    inits = re.findall(r"--init (\S+) --out runs/(\w+)/(probe|finetune\S*)/seed(\d+)/", dry)
    assert {(exp, regime, seed) for _, exp, regime, seed in inits} >= {
        (exp, regime, str(s))
        for exp in smoke_config["experiments"]
        for regime in ("probe", "finetune")
        for s in smoke_config["seeds"]
    }
    for init, exp, _, _ in inits:
        assert init.startswith(f"runs/{exp}/pretrain/seed0/"), init
    assert counts["interactions"] == experiments * seeds
    assert counts["prepare_data"] == len(smoke_config["datasets"])
    for rule in ("training_curves", "knowledge_transfer", "knowledge_report", "figure_convergence"):
        assert counts[rule] == 1


def test_run_summaries_pretrain_only_the_shared_parent(smoke_config):
    from transferscope.workflow import pretrained_run_summary, run_summaries

    runs = run_summaries(smoke_config)
    assert [r for r in runs if "/pretrain/" in r] == [
        f"runs/{exp}/pretrain/seed0/summary.json" for exp in smoke_config["experiments"]
    ]
    assert pretrained_run_summary("digits_resnet", 1, smoke_config).endswith(
        "pretrain/seed0/summary.json"
    )
    own = dict(smoke_config, pretrained_seed=None)
    assert len([r for r in run_summaries(own) if "/pretrain/" in r]) == 2 * len(own["experiments"])


def test_snakemake_lint_is_clean():
    from .snakemake_lint import lint_problems

    assert lint_problems("config/smoke.yaml") == []


def test_bad_config_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "config" / "smoke.yaml").read_text().replace("seeds:", "sedes:"))
    result = snakemake(ROOT, "-n", "--configfile", str(bad), check=False)
    assert result.returncode != 0
    assert "sedes" in result.stdout + result.stderr
    # one line names the key; the schema and the config are not dumped after it
    printed = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert len(printed) < 40, "\n".join(printed)


def test_a_schema_error_names_the_key_and_the_fix(tmp_path):
    bad = tmp_path / "bad.yaml"
    smoke = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    smoke.setdefault("interactions", {})["tau"] = 2
    bad.write_text(yaml.safe_dump(smoke))
    result = snakemake(ROOT, "-n", "--configfile", str(bad), check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "key 'interactions.tau': 2 is greater than or equal to the maximum of 1" in out
    assert len([line for line in out.splitlines() if line.strip()]) < 40, out


@pytest.mark.slow
def test_smoke_workflow_runs_and_then_has_nothing_to_do(tmp_path):
    repo = tracked_copy(tmp_path)
    snakemake(repo, "--cores", "2", "--configfile", "config/smoke.yaml")
    for path in (
        "results/figures/training_curves.png",
        "results/summary.md",
        "results/metrics.json",
    ):
        assert (repo / path).stat().st_size > 0, path
    metrics = json.loads((repo / "results/metrics.json").read_text())
    assert "digits_resnet" in metrics and "links" in metrics
    # the summary opens with the generated claims; every verdict is one of the rule's words
    summary = (repo / "results/summary.md").read_text()
    assert summary.index("## Claims tested on this run") < summary.index("## Test accuracy")
    claims_table = pl.read_parquet(repo / "results/claims.parquet")
    assert set(claims_table["verdict"]) <= {
        "supported",
        "not distinguishable from the null",
        "contradicted",
        "not testable",
    }
    assert (claims_table.filter(pl.col("verdict") == "not testable")["reason"] != "").all()
    # directness keeps runs of every length (the text runs train fewer epochs)
    directness = pl.read_parquet(repo / "results/knowledge/directness.parquet")
    assert set(directness["experiment"]) == set(metrics) & {"digits_resnet", "sentiment_minilm"}
    again = snakemake(repo, "-n", "--cores", "2", "--configfile", "config/smoke.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
    # the report's landing page (the workflow description) opens with every tested claim
    snakemake(repo, "--report", "report.html", "--configfile", "config/smoke.yaml")
    html = (repo / "report.html").read_text()
    landing = html[html.index("Claims tested on this run") :]
    tested = claims_table.filter(pl.col("verdict") != "not testable")
    assert tested.height > 0
    for claim in set(tested["claim"]):  # as the report embeds it: HTML in a JSON string
        assert json.dumps(html_escape(claim, quote=False))[1:-1] in landing, claim
    assert "Docutils System Messages" not in html
