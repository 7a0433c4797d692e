"""Where every artefact lives: the path conventions shared by Snakemake, DVC and the CLI.

A run directory (checkpoints, metrics, resume state) is one artefact whose ``summary.json`` is
written last; workflow tools track that marker, so a killed job leaves its completed epochs in
place for the rerun to resume from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transferscope.config import REGIMES, pretrained_seed, pretrained_seeds


def data_dir(dataset: str) -> str:
    return f"data/{dataset}"


def run_dir(experiment: str, regime: str, seed: int | str) -> str:
    return f"runs/{experiment}/{regime}/seed{seed}"


def run_summary(experiment: str, regime: str, seed: int | str) -> str:
    return f"{run_dir(experiment, regime, seed)}/summary.json"


def pretrained_run_summary(experiment: str, seed: int | str, config: dict[str, Any]) -> str:
    """The pre-training run that the probe and fine-tune runs of ``seed`` start from."""
    return run_summary(experiment, "pretrain", pretrained_seed(config, seed))


def tuning_choice(experiment: str, regime: str) -> str:
    """The lr × weight-decay search of a regime: its choice and table (``transferscope.tuning``)."""
    return f"runs/{experiment}/tuning/{regime}.json"


def tuning_table(experiment: str, regime: str) -> str:
    """The same search's table as CSV, for the report."""
    return f"results/tuning/{experiment}/{regime}.csv"


def interactions_dir(experiment: str, seed: int | str) -> str:
    return f"interactions/{experiment}/seed{seed}"


def interactions_summary(experiment: str, seed: int | str) -> str:
    return f"{interactions_dir(experiment, seed)}/summary.json"


def rerun_command(path: str | Path) -> str:
    """The one command that rebuilds the artefact a file belongs to. A run or cache directory is
    one job whose marker is its ``summary.json``; deleting a file inside it does not make Snakemake
    rerun the job, forcing the marker does (and the job verifies what it keeps)."""
    path = Path(path)
    for parent in (path.parent, *path.parent.parents):
        is_job_dir = (parent / "summary.json").is_file() or (parent / "settings.json").is_file()
        if is_job_dir or (parent.name.startswith("seed") and parent.name[4:].isdigit()):
            return f"snakemake --cores all --forcerun {parent / 'summary.json'}"
    return f"snakemake --cores all --forcerun {path}"


def final_checkpoint(summary_or_run: str | Path) -> Path:
    """The last epoch's checkpoint of a finished run (given its directory or summary.json)."""
    from transferscope.io import read_json

    path = Path(summary_or_run)
    summary = path if path.name == "summary.json" else path / "summary.json"
    return summary.parent / read_json(summary)["final_checkpoint"]


def run_summaries(config: dict[str, Any], regimes=REGIMES) -> list[str]:
    """Every training run of the grid; pre-training only for the seeds that others start from."""
    return [
        run_summary(exp, regime, seed)
        for exp in config["experiments"]
        for regime in regimes
        for seed in (pretrained_seeds(config) if regime == "pretrain" else config["seeds"])
    ]


def interaction_summaries(config: dict[str, Any]) -> list[str]:
    return [
        interactions_summary(exp, seed) for exp in config["experiments"] for seed in config["seeds"]
    ]


def sensitivity_interactions_summary(variant: str, experiment: str, seed: int | str) -> str:
    """One sensitivity variant's extraction of (experiment, seed), from the same checkpoints."""
    return f"sensitivity/{variant}/{experiment}/seed{seed}/summary.json"


def sensitivity_dir(variant: str) -> str:
    """A variant's knowledge tables (knowledge/) and claims table."""
    return f"results/sensitivity/{variant}"


SENSITIVITY_VERDICTS = "results/sensitivity/verdicts.parquet"


def sensitivity_targets(config: dict[str, Any]) -> list[str]:
    """The verdict comparison when config ``sensitivity.variants`` names any variant."""
    return [SENSITIVITY_VERDICTS] if config.get("sensitivity", {}).get("variants") else []


def evidence_dir(component: str) -> str:
    """An evidence stage's tables (controls, causal tests, graded transfer; docs/evidence.md)."""
    return f"results/evidence/{component}"


def evidence_claim_rows(config: dict[str, Any]) -> list[str]:
    """The pre-verdict claim rows of every evidence stage the config enables; the claims table
    merges them (``knowledge.claims.read_claim_rows``). One line per component."""
    rows: list[str] = []
    if (config.get("causal_training") or {}).get("enabled"):  # transferscope.causal.settings
        rows.append(f"{evidence_dir('causal_training')}/claim_rows.parquet")
    controls = config.get("controls") or {}  # transferscope.controls
    if controls.get("permuted_weights") or controls.get("permuted_labels"):
        rows.append(f"{evidence_dir('controls')}/claim_rows.parquet")
    if (config.get("graded") or {}).get("enabled"):  # transferscope.knowledge.graded
        rows.append(f"{evidence_dir('graded')}/claim_rows.parquet")
    return rows
