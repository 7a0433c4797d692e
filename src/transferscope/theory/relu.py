"""Two-layer ReLU student–teacher transfer: does the overlap of features predict transfer?

Following "Features are fate" (Tahir, Ganguli, Rotskoff, arXiv 2410.08194, docs/references.md §3):
    target teacher  f_t(x) = Σ_{j≤m} a_j·(relu(w_jᵀx) − 1/√(2π)),  ‖w_j‖ = 1, a_j = ±1,
                    rescaled so that E f_t² = 1 (the constant makes each unit mean-zero);
    source teacher  f_s: the same sum without a fraction μ of the units (nested in μ);
    student         f(x) = (1/k)·Σ_{i≤k} c_i·relu(u_iᵀx)  (mean-field scaling), x ~ N(0, I_d).
Students are trained with Adam (full batch) on n_source noisy source samples, then on n noisy
target samples either by retraining the readout (ridge, closed form, frozen features) or by
fine-tuning every weight; a scratch student trains on the same target samples. Risks are
E(f̂ − f_t)² on fresh test points; transferability 𝒯 = E[R_scratch − R_transfer].

The paper's prediction: R_transfer ≈ C(n) + ‖P⊥f_t‖², with P⊥f_t the part of f_t outside the span
of the pre-trained features. It is estimated here by a least-squares (tiny ridge) readout of the
noise-free f_t on a large sample (`overlap.fit_ridge_readout`), scored on held-out points.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import polars as pl
import torch
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from transferscope.io import atomic_path
from transferscope.theory.overlap import fit_ridge_readout
from transferscope.theory.simulate import torch_threads

__all__ = ["RELU_DEFAULTS", "check_settings", "plot_relu", "relu_sweep"]

RELU_DEFAULTS = {
    "d": 16,
    "teacher_width": 16,  # m
    "width": 48,  # student units k
    "instances": 4,
    "mus": [0.0, 0.25, 0.5, 0.75],
    "ns": [25, 100, 400],
    "noise": 0.1,  # label-noise standard deviation (source and target)
    "n_source": 1200,
    "n_test": 2000,
    "n_overlap": 4000,  # least-squares sample for ‖P⊥f_t‖² (as many again held out)
    "source_steps": 500,
    "transfer_steps": 400,
    "lr": 0.02,  # Adam, pre-training and scratch
    "finetune_lr": 0.005,
    "readout_ridge": 1e-3,  # relative to the mean feature variance (see overlap.py)
}
_CENTRE = 1 / np.sqrt(2 * np.pi)  # E relu(z), z ~ N(0, 1)


def _teacher(x: torch.Tensor, w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Σ_j a_j (relu(w_jᵀx) − 1/√(2π)) for x (B, n, d), w (B, m, d), a (B, m)."""
    return ((x @ w.transpose(1, 2)).relu() - _CENTRE) @ a.unsqueeze(-1)


def _student(x: torch.Tensor, u: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    return (x @ u.transpose(1, 2)).relu() @ c.unsqueeze(-1) / u.shape[1]


def _fit(u, c, x, y, steps: int, lr: float, train_u: bool = True):
    """Full-batch Adam on the mean squared error, every student of the batch independently."""
    u, c = u.clone().requires_grad_(train_u), c.clone().requires_grad_(True)
    opt = torch.optim.Adam([u, c] if train_u else [c], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        # sum over students of per-student means: Adam's elementwise steps keep them independent
        loss = ((_student(x, u, c) - y) ** 2).mean((1, 2)).sum()
        loss.backward()
        opt.step()
    return u.detach(), c.detach()


def _risk(u, c, x_test, f_test) -> torch.Tensor:
    with torch.no_grad():
        return ((_student(x_test, u, c) - f_test) ** 2).mean((1, 2))


def check_settings(settings: dict) -> dict:
    """RELU_DEFAULTS with `settings` laid over them; ValueError names unknown or bad entries."""
    unknown = sorted(set(settings) - set(RELU_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown relu settings {unknown}; known: {sorted(RELU_DEFAULTS)}")
    cfg = {**RELU_DEFAULTS, **settings}
    mus = np.asarray(cfg["mus"], dtype=float)
    if mus.size == 0 or ((mus < 0) | (mus >= 1)).any():
        raise ValueError(f"mus must lie in [0, 1); got mus={mus.tolist()}")
    cfg["ns"] = [int(n) for n in cfg["ns"]]
    if not cfg["ns"] or min(cfg["ns"]) < 2:
        raise ValueError(f"ns must be >= 2; got ns={cfg['ns']}")
    for key in ("d", "teacher_width", "width", "instances", "n_source", "n_test", "n_overlap"):
        if int(cfg[key]) < 1:
            raise ValueError(f"{key} must be >= 1; got {key}={cfg[key]}")
    return cfg


def relu_sweep(
    mus: Sequence[float] | None = None,
    ns: Sequence[int] | None = None,
    *,
    seed: int = 0,
    threads: int | None = 1,
    progress: bool = True,
    **settings,
) -> pl.DataFrame:
    """Transferability against μ (fraction of target units missing from the source) and n.

    settings override RELU_DEFAULTS (unknown names raise ValueError). One row per
    (μ, n, method ∈ {readout, finetune}) with the means and standard deviations over instances:
    risk_transfer, risk_scratch, transferability, overlap (‖P⊥f_t‖² of the pre-trained features),
    risk_source (the pre-trained student's error on its own source teacher),
    estimation = risk_transfer − overlap (the C(n) term) and, for the readout, predicted =
    overlap + C(n) (see `_summaries`).
    """
    overrides = dict(settings)
    if mus is not None:
        overrides["mus"] = mus
    if ns is not None:
        overrides["ns"] = ns
    cfg = check_settings(overrides)
    with torch_threads(threads):
        return _sweep(cfg, seed, progress)


def _sweep(cfg: dict, seed: int, progress: bool) -> pl.DataFrame:
    mus, ns = np.asarray(cfg["mus"], dtype=float), cfg["ns"]
    gen = torch.Generator().manual_seed(seed)
    d, m, k, inst = cfg["d"], cfg["teacher_width"], cfg["width"], cfg["instances"]
    n_mu, dt = len(mus), torch.float32

    def normal(*shape):
        return torch.randn(*shape, generator=gen, dtype=dt)

    w_t = normal(inst, m, d)
    w_t = w_t / w_t.norm(dim=-1, keepdim=True)
    a_t = torch.where(torch.rand(inst, m, generator=gen) < 0.5, -1.0, 1.0)
    scale = _teacher(normal(inst, 20_000, d), w_t, a_t).std(1, keepdim=True).squeeze(-1)
    a_t = a_t / scale  # E f_t² = 1 per instance
    # source teachers, batch (μ, instance): drop the first round(μm) units of a random order
    order = torch.argsort(torch.rand(inst, m, generator=gen), dim=1)
    drop = torch.stack([(order < round(mu * m)).to(dt) for mu in mus])  # rank < count → dropped
    a_s = (a_t[None] * (1 - drop)).reshape(n_mu * inst, m)
    w_s = w_t.repeat(n_mu, 1, 1)

    def student_init(batch):
        return normal(batch, k, d) / np.sqrt(d), normal(batch, k)

    # pre-train on the source, evaluate on fresh source points
    x_src = normal(inst, cfg["n_source"], d).repeat(n_mu, 1, 1)
    y_src = _teacher(x_src, w_s, a_s) + cfg["noise"] * normal(n_mu * inst, cfg["n_source"], 1)
    u_pre, c_pre = _fit(*student_init(n_mu * inst), x_src, y_src, cfg["source_steps"], cfg["lr"])
    x_chk = normal(inst, cfg["n_test"], d).repeat(n_mu, 1, 1)
    risk_source = _risk(u_pre, c_pre, x_chk, _teacher(x_chk, w_s, a_s))

    # feature overlap: noise-free f_t read out from the frozen pre-trained features
    x_big = normal(inst, 2 * cfg["n_overlap"], d).repeat(n_mu, 1, 1)
    feats = (x_big @ u_pre.transpose(1, 2)).relu()
    f_big = _teacher(x_big, w_t.repeat(n_mu, 1, 1), a_t.repeat(n_mu, 1))
    half = cfg["n_overlap"]
    fit = fit_ridge_readout(feats[:, :half], f_big[:, :half], 1e-8)
    overlap = ((fit.predict(feats[:, half:]) - f_big[:, half:]) ** 2).mean((1, 2)).float()

    x_test = normal(inst, cfg["n_test"], d)
    f_test = _teacher(x_test, w_t, a_t)
    rows = []
    for n in tqdm(ns, desc="theory: relu sweep (n)", disable=not progress):
        x = normal(inst, n, d)
        y = _teacher(x, w_t, a_t) + cfg["noise"] * normal(inst, n, 1)
        scratch = _risk(
            *_fit(*student_init(inst), x, y, cfg["transfer_steps"], cfg["lr"]), x_test, f_test
        ).repeat(n_mu)
        xr, yr, x_test_r, f_test_r = (t.repeat(n_mu, 1, 1) for t in (x, y, x_test, f_test))
        readout = fit_ridge_readout((xr @ u_pre.transpose(1, 2)).relu(), yr, cfg["readout_ridge"])
        with torch.no_grad():
            pred = readout.predict((x_test_r @ u_pre.transpose(1, 2)).relu())
        risk = {"readout": ((pred - f_test_r) ** 2).mean((1, 2)).float()}
        tuned = _fit(u_pre, c_pre, xr, yr, cfg["transfer_steps"], cfg["finetune_lr"])
        risk["finetune"] = _risk(*tuned, x_test_r, f_test_r)
        for method, r in risk.items():
            rows += _summaries(
                mus, n, method, r, scratch, overlap, risk_source, inst, cfg["noise"], k
            )
    return pl.DataFrame(rows)


def _summaries(mus, n, method, risk, scratch, overlap, risk_source, inst, noise, width) -> list:
    """Mean and std over instances per μ; tensors are ordered (μ, instance).

    predicted (readout rows): ‖P⊥f_t‖² + C(n) with C(n) ≈ (σ² + ‖P⊥f_t‖²)·k/(n − k − 1), the
    least-squares variance of k features when the unexplained part acts as extra noise
    (exact for Gaussian features; NaN for n ≤ k + 1).
    """

    def split(t):
        return t.double().reshape(len(mus), inst).numpy()

    risk, scratch, overlap, risk_source = map(split, (risk, scratch, overlap, risk_source))
    predicted = overlap + (noise**2 + overlap) * (
        width / (n - width - 1) if n > width + 1 else np.nan
    )
    out = []
    for i, mu in enumerate(mus):
        t = scratch[i] - risk[i]
        out.append(
            {
                "mu": float(mu),
                "n": n,
                "method": method,
                "risk_transfer": risk[i].mean(),
                "risk_transfer_std": risk[i].std(ddof=1) if inst > 1 else float("nan"),
                "risk_scratch": scratch[i].mean(),
                "transferability": t.mean(),
                "transferability_std": t.std(ddof=1) if inst > 1 else float("nan"),
                "overlap": overlap[i].mean(),
                "overlap_std": overlap[i].std(ddof=1) if inst > 1 else float("nan"),
                "estimation": (risk[i] - overlap[i]).mean(),
                "predicted": predicted[i].mean() if method == "readout" else float("nan"),
                "risk_source": risk_source[i].mean(),
                "instances": inst,
            }
        )
    return out


def plot_relu(table: pl.DataFrame, path: str | os.PathLike) -> None:
    """Three panels: readout risk vs μ with the overlap prediction; 𝒯 vs μ; risk vs prediction."""
    fig = Figure(figsize=(15, 4.3), layout="constrained")
    ax_risk, ax_t, ax_pred = fig.subplots(1, 3)
    colours = dict(zip(sorted(set(table["n"])), ["C0", "C1", "C2", "C3", "C4", "C5", "C6"] * 9))
    readout = table.filter(pl.col("method") == "readout").sort("n", "mu")
    for n, colour in colours.items():
        sub = readout.filter(pl.col("n") == n)
        ax_risk.errorbar(
            sub["mu"],
            sub["risk_transfer"],
            sub["risk_transfer_std"],
            color=colour,
            marker="o",
            capsize=3,
            label=f"readout, n = {n}",
        )
        ax_risk.plot(sub["mu"], sub["predicted"], color=colour, linestyle=":")
        for method, style in (("readout", "-"), ("finetune", "--")):
            rows = table.filter((pl.col("n") == n) & (pl.col("method") == method)).sort("mu")
            ax_t.errorbar(
                rows["mu"],
                rows["transferability"],
                rows["transferability_std"],
                color=colour,
                linestyle=style,
                marker="o",
                capsize=3,
                label=f"{method}, n = {n}",
            )
        ok = sub.filter(pl.col("predicted").is_not_nan())
        ax_pred.scatter(ok["predicted"], ok["risk_transfer"], color=colour, label=f"n = {n}")
    first = readout.filter(pl.col("n") == readout["n"].min())
    ax_risk.errorbar(
        first["mu"],
        first["overlap"],
        first["overlap_std"],
        color="k",
        linestyle="--",
        marker="s",
        capsize=3,
        label="‖P⊥f_t‖² (feature overlap)",
    )
    ax_risk.set(
        xlabel="μ (fraction of target units missing from the source)",
        ylabel="test risk E(f̂ − f_t)²",
        title="readout transfer: risk vs ‖P⊥f_t‖² + C(n)",
    )
    ax_t.axhline(0, color="k", linewidth=0.8)
    ax_t.set(
        xlabel="μ",
        ylabel=r"$\mathcal{T}$ = E[R_scratch − R_transfer]",
        title="transferability (solid: readout, dashed: fine-tune)",
    )
    top = max(
        float(np.nanmax(readout["predicted"].fill_null(np.nan).to_numpy(), initial=0.0)),
        float(readout["risk_transfer"].max()),
    )
    ax_pred.plot([0, top], [0, top], "k--", linewidth=0.8, label="risk = prediction")
    ax_pred.set(
        xlabel="predicted ‖P⊥f_t‖² + C(n)",
        ylabel="measured readout risk",
        title="feature-overlap prediction (n > width + 1)",
    )
    for ax in (ax_risk, ax_t, ax_pred):
        ax.legend(fontsize=7)
    fig.suptitle(
        "Two-layer ReLU student–teacher transfer (source = target minus a fraction μ of units)"
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
