"""Finished training runs of one experiment, as the analysis stages receive them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transferscope.workflow import run_summary


@dataclass(frozen=True)
class Run:
    """One finished training run, identified by its directory name (variant) and seed."""

    summary_path: Path
    experiment: str
    variant: str
    seed: int
    summary: dict

    @property
    def dir(self) -> Path:
        return self.summary_path.parent

    @property
    def final(self) -> Path:
        return self.dir / self.summary["final_checkpoint"]

    def epoch(self, k: int) -> Path:
        return self.dir / f"epoch_{int(k):03d}.safetensors"

    def metrics(self):
        import polars as pl

        path = self.dir / "metrics.csv"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not found; rerun the training run {self.summary_path}"
            )
        return pl.read_csv(path).sort("epoch")

    def label(self) -> str:
        return f"{self.variant} seed{self.seed} ({self.final})"

    def init_sha256(self) -> str | None:
        """Hash of the checkpoint this run started from (recorded by the trainer), if any."""
        from transferscope.io import read_json

        path = self.dir / "settings.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: not found; rerun the training run {self.summary_path}"
            )
        return read_json(path).get("init_checkpoint_sha256")


def collect_runs(summaries, experiment: str) -> dict[tuple[str, int], Run]:
    """(variant, seed) -> Run for the given summary.json files, all of ``experiment``."""
    from transferscope.io import read_json

    runs: dict[tuple[str, int], Run] = {}
    for item in summaries:
        path = Path(item)
        path = path if path.name == "summary.json" else path / "summary.json"
        summary = read_json(path)
        exp = summary.get("experiment")
        if exp != experiment:
            raise ValueError(
                f"{path}: run of experiment {exp!r}, but the analysis is of {experiment!r}; "
                "pass only that experiment's runs"
            )
        variant, seed = path.parent.parent.name, int(summary["seed"])
        if (variant, seed) in runs:
            raise ValueError(f"{path}: run {variant} seed{seed} given twice")
        runs[(variant, seed)] = Run(path, exp, variant, seed, summary)
    return runs


def _need(runs: dict, experiment: str, variant: str, seed: int) -> Run:
    if (variant, seed) not in runs:
        path = run_summary(experiment, variant, seed)
        raise FileNotFoundError(
            f"{path}: this run is needed but was not given; pass it with --runs "
            f"(train it with `snakemake {path}`)"
        )
    return runs[(variant, seed)]
