"""Reading interaction caches back as (samples × subsets) arrays, refusing mixed inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from transferscope.interactions.extract import read_cache_metadata
from transferscope.io import read_json

KINDS = ("and", "or")
# cache metadata that must agree between caches compared with each other
COMPARABLE = ("dataset_manifest_sha256", "settings", "game", "sample_index", "engine_version")


@dataclass
class Interactions:
    path: Path
    meta: dict
    I: dict[str, np.ndarray]  # kind -> (samples, 2^n), the empty set zeroed
    salient: dict[str, np.ndarray]  # kind -> bool (samples, 2^n)
    # "v" (the model's game), "q" (the decomposition's noise), "I_and"/"I_or" with I(∅) kept
    game: dict[str, np.ndarray]


def load(path: str | Path) -> Interactions:
    import polars as pl

    path = Path(path)
    meta = read_cache_metadata(path)  # names the command that recomputes a missing or corrupt one
    table = pl.read_parquet(path).sort(["sample", "subset"])
    n_samples = table["sample"].n_unique()
    values, salient = {}, {}
    for kind in KINDS:
        values[kind] = table[f"I_{kind}"].to_numpy().reshape(n_samples, -1).copy()
        values[kind][:, 0] = 0.0  # I(∅) is the bias under the baseline, not knowledge
        salient[kind] = table[f"salient_{kind}"].to_numpy().reshape(n_samples, -1).copy()
        salient[kind][:, 0] = False
    game = {
        k: table[k].to_numpy().reshape(n_samples, -1).copy() for k in ("v", "q", "I_and", "I_or")
    }
    return Interactions(path, meta, values, salient, game)


def check_comparable(a: Interactions, b: Interactions) -> None:
    """Caches of different datasets, samples, players or τ cannot be compared."""
    for key in COMPARABLE:
        if a.meta.get(key) != b.meta.get(key):
            raise ValueError(
                f"interaction caches {a.path} and {b.path} differ in '{key}' "
                f"({str(a.meta.get(key))[:80]} vs {str(b.meta.get(key))[:80]}); they come from "
                f"different datasets, samples, players or settings and cannot be compared"
            )


@dataclass
class SeedCaches:
    """All caches of one (experiment, seed) extraction job, by regime and epoch."""

    experiment: str
    seed: int
    directory: Path
    caches: dict[str, list[str]]  # regime -> relative paths in epoch order

    def final(self, regime: str) -> Interactions:
        return load(self.directory / self.caches[regime][-1])

    def epochs(self, regime: str) -> list[Interactions]:
        return [load(self.directory / name) for name in self.caches[regime]]


def seed_caches(summary: str | Path) -> SeedCaches:
    summary = Path(summary)
    info = read_json(summary)
    for regime, names in info["caches"].items():
        expected = [f"{regime}/epoch_{int(Path(n).stem[6:]):03d}.parquet" for n in names]
        if (
            regime != "probe"
            and not info.get("final_only")
            and expected != [f"{regime}/epoch_{e:03d}.parquet" for e in range(len(names))]
        ):
            raise ValueError(f"{summary}: epochs of '{regime}' are not consecutive from 0: {names}")
    return SeedCaches(info["experiment"], info["seed"], summary.parent, info["caches"])
