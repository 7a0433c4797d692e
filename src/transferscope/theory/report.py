"""`run_theory`: closed forms, deep-linear simulations and the ReLU sweep, written to one folder.

Everything follows "Features are fate" (Tahir, Ganguli, Rotskoff, arXiv 2410.08194; docs/references.md §3).
Outputs (all written atomically; tables as Parquet with a CSV beside each):
    phase_linear, phase_finetune          linear transfer / fine-tuning vs minimum-norm scratch,
    phase_linear_tuned, phase_finetune_tuned   the same against tuned-ridge scratch (reviewers),
    phase_linear_ridge                    ridge readout (λ = readout_ridge) vs scratch,
        columns theta, gamma, sigma, theory, simulation, sim_std, n_instances, n_unconverged,
        difference (= theory − simulation);
    simulation_runs                       one row per trained run (risk, converged, steps, gap);
    relu                                  the ReLU student–teacher sweep;
    phase_diagrams.png, phase_diagrams_tuned.png, double_descent.png, relu_transfer.png;
    theory.json                           headline numbers.

The theory column uses the finite-n closed forms at the simulated n = round(γd) (the tuned-ridge
baseline its asymptotic form); every parameter is validated before any computation starts.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from matplotlib.figure import Figure

from transferscope.io import atomic_path, write_json
from transferscope.theory import linear
from transferscope.theory.phase import DIAGRAMS, phase_table, plot_phase_diagrams
from transferscope.theory.relu import RELU_DEFAULTS, check_settings, plot_relu, relu_sweep
from transferscope.theory.simulate import GDSettings, simulate_grid

__all__ = ["DEFAULT_PARAMS", "merge_params", "run_theory"]

# The coarse default: about 1-2 minutes on 2 shared cores. The paper's full setting (d = 500,
# 20 instances, 20 × 20 grid) is config/theory-full.yaml.
DEFAULT_PARAMS: dict = {
    "d": 200,
    "depth": 2,
    # hidden width h (None: h = d, the paper's). From small initialisation the hidden layer stays
    # rank one along the task, so h only sets the size of the ~α noise directions; h = 32 keeps
    # the default run near a minute (the first layer's d × h updates dominate the cost).
    "width": 32,
    "instances": 8,
    "thetas": 5,  # a count (evenly spaced over [theta_min, theta_max]) or a list of angles
    "theta_min": 0.0,
    "theta_max": float(np.pi / 2),
    "gammas": 6,  # a count (evenly spaced over [gamma_min, gamma_max]) or a list
    "gamma_min": 0.1,
    "gamma_max": 2.0,
    "sigmas": [0.0, 0.2],
    "scratch_lr": 0.1,
    "scratch_steps": 10_000,
    "transfer_lr": 0.01,
    "transfer_steps": 5_000,
    "pretrain_lr": 0.1,
    "pretrain_steps": 5_000,
    "tol": 1e-6,  # convergence: training loss within tol of its least reachable value
    "check_every": 50,
    "init_scale": 1e-5,
    "readout_ridge": 0.1,
    "seed": 0,
    "device": "cpu",  # "cpu", "cuda" or "auto"
    "dtype": "float64",  # float32 rounding (~1e-7) is too close to tol for the convergence test
    "threads": 1,  # torch intra-op threads during the run (None: leave as is)
    "progress": True,
    "relu": dict(RELU_DEFAULTS),
}
_TABLES = ("linear", "finetune", "linear_tuned", "finetune_tuned", "linear_ridge")


def merge_params(params: dict | None) -> dict:
    """DEFAULT_PARAMS with `params` laid over them (the relu mapping merged key by key).

    Raises ValueError naming unknown keys and values that are out of range.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ValueError(f"unknown theory params {unknown}; known: {sorted(DEFAULT_PARAMS)}")
    merged = copy.deepcopy(DEFAULT_PARAMS)
    relu = params.pop("relu", None) or {}
    bad_relu = sorted(set(relu) - set(RELU_DEFAULTS))
    if bad_relu:
        raise ValueError(f"unknown theory params relu.{bad_relu}; known: {sorted(RELU_DEFAULTS)}")
    merged.update(params)
    merged["relu"].update(relu)
    check_settings(merged["relu"])
    minimum = {"d": 2, "instances": 1, "scratch_steps": 0, "transfer_steps": 0, "pretrain_steps": 0}
    for key, low in minimum.items():
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{key} must be an integer >= {low}; got {key}={value!r}")
    if merged["width"] is not None and not (
        isinstance(merged["width"], int) and merged["width"] >= 1
    ):
        raise ValueError(f"width must be None or an integer >= 1; got width={merged['width']!r}")
    linear.check_depth(merged["depth"])
    for key in ("scratch_lr", "transfer_lr", "pretrain_lr", "tol", "init_scale"):
        if not merged[key] > 0:
            raise ValueError(f"{key} must be > 0; got {key}={merged[key]!r}")
    linear.check_ridge(merged["readout_ridge"], "readout_ridge")
    linear.check_sigma(merged["sigmas"])
    if merged["dtype"] not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'; got dtype={merged['dtype']!r}")
    return merged


def settings_changed(params: dict | None, summary_path: str | Path) -> list[str]:
    """The theory settings whose value differs between ``params`` (as configured) and the ones
    recorded in an existing ``theory.json`` ([] when it is absent, unreadable or the same).
    Committed results carry no Snakemake record, so on a fresh clone Snakemake cannot see a
    changed ``theory:`` block by itself; the workflow forces the theory job when this is not []."""
    import json

    try:
        recorded = json.loads(Path(summary_path).read_text())["params"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    wanted = json.loads(json.dumps(merge_params(params)))  # tuples as lists, as recorded
    return sorted(k for k in set(wanted) | set(recorded) if wanted.get(k) != recorded.get(k))


def _grid(spec, low: float, high: float, name: str) -> np.ndarray:
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1:
            raise ValueError(f"{name} must be a count >= 1 or a list of values; got {name}={spec}")
        return np.linspace(low, high, spec) if spec > 1 else np.array([low])
    return np.asarray(spec, dtype=float).ravel()


def _device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_theory(params: dict | None, out_dir: Path) -> None:
    """Compute the closed forms, the coarse simulations and the ReLU sweep; write out_dir."""
    p = merge_params(params)
    out_dir = Path(out_dir)
    start = time.perf_counter()
    thetas = linear.check_theta(_grid(p["thetas"], p["theta_min"], p["theta_max"], "thetas"))
    gammas = linear.check_gamma(_grid(p["gammas"], p["gamma_min"], p["gamma_max"], "gammas"))
    sigmas = linear.check_sigma(np.asarray(p["sigmas"], dtype=float).ravel())

    settings = {
        "scratch": GDSettings(p["scratch_lr"], p["scratch_steps"], p["tol"], p["check_every"]),
        "transfer": GDSettings(p["transfer_lr"], p["transfer_steps"], p["tol"], p["check_every"]),
        # pre-training is cheap and everything downstream rests on it: a much tighter tolerance
        "pretrain": GDSettings(p["pretrain_lr"], p["pretrain_steps"], 1e-12, p["check_every"]),
    }
    runs = simulate_grid(
        thetas,
        gammas,
        sigmas,
        d=p["d"],
        depth=p["depth"],
        width=p["width"],
        instances=p["instances"],
        init_scale=p["init_scale"],
        readout_ridge=p["readout_ridge"],
        seed=p["seed"],
        dtype=getattr(torch, p["dtype"]),
        device=_device(p["device"]),
        threads=p["threads"],
        progress=p["progress"],
        **settings,
    )
    sim_seconds = time.perf_counter() - start
    tables = {
        name: phase_table(runs, DIAGRAMS[name], p["d"], p["readout_ridge"]) for name in _TABLES
    }
    relu = relu_sweep(seed=p["seed"], threads=p["threads"], progress=p["progress"], **p["relu"])

    for name, table in tables.items():
        _write_table(table, out_dir / f"phase_{name}")
    _write_table(runs, out_dir / "simulation_runs")
    _write_table(relu, out_dir / "relu")
    plot_phase_diagrams(
        {k: tables[k] for k in ("linear", "finetune")},
        out_dir / "phase_diagrams.png",
        title=f"Transferability T(θ, γ): deep linear network (L = {p['depth']}, d = {p['d']}, "
        f"{p['instances']} instances) vs closed forms; black: asymptotic T = 0",
    )
    plot_phase_diagrams(
        {k: tables[k] for k in ("linear_tuned", "finetune_tuned")},
        out_dir / "phase_diagrams_tuned.png",
        title="Reviewers' baseline: scratch = ridge regression with λ* = σ²/γ. "
        "Solid: T = 0 against it; dashed: against minimum-norm scratch",
    )
    plot_double_descent(runs, sigmas, p["d"], out_dir / "double_descent.png")
    plot_relu(relu, out_dir / "relu_transfer.png")
    summary = _summary(p, runs, tables, relu, thetas, sigmas, sim_seconds, start)
    write_json(out_dir / "theory.json", summary)


def _write_table(frame: pl.DataFrame, stem: Path) -> None:
    with atomic_path(stem.with_suffix(".parquet")) as tmp:
        frame.write_parquet(tmp)
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        frame.write_csv(tmp)


# --------------------------------------------------------------------------- double descent
def plot_double_descent(runs: pl.DataFrame, sigmas, d: int, path) -> None:
    """Scratch risk vs γ per σ: minimum-norm (theory: asymptotic and finite d; GD simulation)
    and ridge with λ* = σ²/γ (theory; closed-form ridge on the simulated data)."""
    fig = Figure(figsize=(6 * len(sigmas), 4.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(sigmas)))
    gam = runs["gamma"].unique().sort().to_numpy()
    g = np.linspace(min(gam.min(), 0.05), max(gam.max(), 2.0), 800)
    for ax, sigma in zip(axes, sigmas):
        with np.errstate(all="ignore"):
            ax.plot(g, linear.scratch_risk(g, sigma), "C0-", label="min-norm, theory (d → ∞)")
            ax.plot(g, linear.scratch_risk(g, sigma, d), "C0:", label=f"min-norm, theory (d = {d})")
            ax.plot(g, linear.tuned_scratch_risk(g, sigma), "C1-", label="tuned ridge, theory")
        for method, colour, label in (
            ("scratch", "C0", "GD deep linear (converged runs)"),
            ("ridge_scratch", "C1", "ridge λ* on the same data"),
        ):
            stats = (
                runs.filter((pl.col("method") == method) & (pl.col("sigma") == sigma))
                .group_by("gamma")
                .agg(
                    pl.col("risk").filter(pl.col("converged")).mean().alias("mean"),
                    pl.col("risk").filter(pl.col("converged")).std().alias("std"),
                    (~pl.col("converged")).sum().alias("bad"),
                )
                .sort("gamma")
            )
            ax.errorbar(
                stats["gamma"],
                stats["mean"],
                stats["std"].fill_null(0),
                fmt="o",
                color=colour,
                capsize=3,
                label=f"{label}, ±1 sd",
            )
            for row in stats.filter(pl.col("bad") > 0).iter_rows(named=True):
                ax.annotate(
                    f"{row['bad']} unconv.",
                    (row["gamma"], row["mean"] or 0),
                    fontsize=7,
                    color=colour,
                    textcoords="offset points",
                    xytext=(4, 4),
                )
        ax.axvline(1.0, color="0.6", linewidth=0.8)
        ax.set_ylim(0, 2.0)
        ax.set(
            xlabel="γ = n/d",
            ylabel="risk ‖β̂ − β_t‖²",
            title=f"Scratch double descent, σ = {sigma:g}",
        )
        ax.legend(fontsize=7)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


# --------------------------------------------------------------------------- summary
def _num(value):
    """JSON-safe float: NaN and ±∞ become None."""
    value = float(value) if value is not None else None
    return value if value is not None and np.isfinite(value) else None


def _max_abs(values: pl.Series):
    """Largest finite |value| (cells where the finite-d theory is infinite, n = d ± 1, or that
    have no converged run, are left out and counted separately)."""
    finite = values.drop_nulls().filter(values.drop_nulls().is_finite()).abs()
    return (_num(finite.max()), _num(finite.mean())) if len(finite) else (None, None)


def _diagram_summary(table: pl.DataFrame) -> dict:
    by_sigma = {
        f"{sigma:g}": _max_abs(table.filter(pl.col("sigma") == sigma)["difference"])[0]
        for sigma in table["sigma"].unique().sort()
    }
    largest, mean = _max_abs(table["difference"])
    return {
        "max_abs_difference": largest,
        "mean_abs_difference": mean,
        "max_abs_difference_by_sigma": by_sigma,
        "cells": table.height,
        "cells_without_converged_runs": int(table["simulation"].is_null().sum()),
        "cells_with_infinite_theory": int((~table["theory"].is_finite()).sum()),
        "unconverged_runs": int(table["n_unconverged"].sum()),
        "runs": int(table["n_instances"].sum()),
    }


def _summary(p, runs, tables, relu, thetas, sigmas, sim_seconds, start) -> dict:
    scratch = (
        runs.filter(pl.col("method") == "scratch")
        .group_by("gamma", "n", "sigma")
        .agg(pl.col("risk").filter(pl.col("converged")).mean().alias("sim"))
        .drop_nulls()
    )
    with np.errstate(all="ignore"):
        scratch_theory = linear.scratch_risk(
            scratch["n"].to_numpy() / p["d"], scratch["sigma"].to_numpy(), p["d"]
        )
    scratch_err = pl.Series(scratch_theory - scratch["sim"].to_numpy())
    boundaries = {}
    for sigma in sigmas:
        band = linear.negative_transfer_boundary(thetas, sigma)
        boundaries[f"{sigma:g}"] = [
            {
                "theta": float(t),
                "min_norm_negative_below_1": [_num(band.under_start[i]), _num(band.under_end[i])],
                "min_norm_negative_above": _num(band.over_start[i]),
                "tuned_ridge_negative_above": _num(
                    linear.tuned_negative_transfer_boundary(t, sigma)
                ),
            }
            for i, t in enumerate(thetas)
        ]
    readout = relu.filter((pl.col("method") == "readout") & pl.col("predicted").is_not_nan())
    relu_err = (readout["risk_transfer"] - readout["predicted"]).abs()
    return {
        "paper": "Tahir, Ganguli, Rotskoff, Features are fate, arXiv 2410.08194",
        "params": p,
        "runtime_seconds": {
            "simulation": round(sim_seconds, 2),
            "total": round(time.perf_counter() - start, 2),
        },
        "diagrams": {name: _diagram_summary(t) for name, t in tables.items()},
        "scratch_risk_max_abs_difference": _max_abs(scratch_err)[0],
        "runs": {
            "total": runs.height,
            "unconverged": int((~runs["converged"]).sum()),
            "unconverged_by_method": {
                m: int((~runs.filter(pl.col("method") == m)["converged"]).sum())
                for m in runs["method"].unique().sort()
            },
        },
        "negative_transfer_boundaries": boundaries,
        "finetune_negative_transfer_angle": linear.finetune_negative_transfer_angle(),
        "relu": {
            "readout_max_abs_risk_minus_prediction": _num(relu_err.max())
            if len(relu_err)
            else None,
            "overlap_by_mu": {
                f"{mu:g}": _num(v)
                for mu, v in relu.group_by("mu")
                .agg(pl.col("overlap").mean())
                .sort("mu")
                .iter_rows()
            },
        },
    }
