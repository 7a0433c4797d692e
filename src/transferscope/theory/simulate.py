"""Deep linear networks trained by full-batch gradient descent: scratch, linear transfer, fine-tuning.

The student is f(x) = xᵀW₁⋯W_{L−1}w (Tahir, Ganguli, Rotskoff, arXiv 2410.08194): W₁ is d × h,
the middle layers h × h, the readout w has h entries; β = W₁⋯W_{L−1}w is the end-to-end map.
Initialisation follows the paper's code: matrices N(0, α²/fan_in), readout N(0, α²), α = 1e-5.

Losses (x is isotropic, so everything is a quadratic form in β):
    population (pre-training on the source):  ‖β − β_s‖²,
    empirical (target, n samples):            (1/n)‖Xβ − y‖² = βᵀΣβ − 2bᵀβ + ȳ²,
with Σ = XᵀX/n, b = Xᵀy/n, ȳ² = yᵀy/n. The gradient in β is g = 2(Σβ − b), and the gradient of
layer l is aₗ ⊗ ρₗ₊₁ with aₗ = (W₁⋯W_{l−1})ᵀg and ρₗ₊₁ = W_{l+1}⋯w, so one step costs a few
batched matrix-vector products; no autograd. Every tensor carries a leading batch axis that stacks
instances and grid points, so a whole γ column (all θ, σ, instances) trains as one tensor program.
Runs train in the eigenbasis of their Σ (gradient descent commutes with input rotations), which
makes Σβ an elementwise product; the d × h first-layer updates are then the whole cost, so the
hidden width h is a speed knob: from small initialisation the hidden layer stays rank one along the
task and h only sets the number of ~α noise directions (the paper uses h = d).

Convergence: a run has converged when its training loss is within `tol` of the least value the
trained parameters can reach (0 or the least-squares residual; for a readout, the minimum over
the significant directions of its frozen features). Runs that miss it are flagged, never averaged.
Learning rates from the paper: scratch 0.1 for 10k steps, transfer 0.01 for 5k, with the loss
above (mean squared error without the ½); training stops early once every run in a batch has
converged. Near γ = 1 the smallest eigenvalue of Σ vanishes, so those runs need far more steps
(gap ∝ exp(−4·lr·s_min·t) with s_min = (1 − √γ)²/γ below γ = 1, (1 − 1/√γ)² above): with the
paper's transfer budget, fine-tuning does not converge for roughly 0.7 ≲ γ ≲ 1.8 and is flagged.
Depth L ≥ 3 from α = 1e-5 sits on a saddle for ~1/(lr·α^{L−2}) steps; use a larger init_scale.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from transferscope.theory.linear import check_depth, check_gamma, check_sigma, check_theta

__all__ = [
    "GDResult",
    "GDSettings",
    "end_to_end",
    "feature_map",
    "init_deep_linear",
    "pretrain_population",
    "simulate_grid",
    "torch_threads",
    "train_deep_linear",
    "train_readout",
]

_EIG_RTOL = 1e-9  # eigenvalues of Σ below this (relative) are the null space of X
_READOUT_RTOL = 1e-6  # frozen-feature directions below this (relative) are init noise (~α²)


@dataclass(frozen=True)
class GDSettings:
    """Full-batch gradient descent: step size, step budget, loss-gap tolerance, check period."""

    lr: float
    steps: int
    tol: float = 1e-6
    check_every: int = 50

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got lr={self.lr}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0; got steps={self.steps}")
        if not self.tol > 0:
            raise ValueError(f"tol must be > 0; got tol={self.tol}")
        if self.check_every < 1:
            raise ValueError(f"check_every must be >= 1; got check_every={self.check_every}")


@dataclass
class GDResult:
    """Trained parameters and, per run, the final loss gap and the convergence flag."""

    params: list[torch.Tensor]
    gap: torch.Tensor
    converged: torch.Tensor
    steps: int


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run a block with `threads` intra-op threads (None: leave torch's setting), then restore.

    The training loops are chains of small memory-bound batched products; on a shared 2-core
    machine OpenMP barriers dominate them, and one thread was measured 10-60× faster than two.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- network
def init_deep_linear(
    batch: int,
    d: int,
    width: int,
    depth: int,
    init_scale: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> list[torch.Tensor]:
    """Small random weights: [W₁ (batch, d, h), …, (batch, h, h), w (batch, h)]; depth 1 is [w]."""
    depth = check_depth(depth)
    dims = [d] + [width] * (depth - 1)
    mats = [
        torch.randn(batch, a, b, generator=generator, dtype=dtype) * (init_scale / a**0.5)
        for a, b in zip(dims[:-1], dims[1:])
    ]
    return mats + [torch.randn(batch, dims[-1], generator=generator, dtype=dtype) * init_scale]


def _right_products(params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """ρₗ = Wₗ⋯w for l = 1..L (ρ_L = w); ρ₁ = β."""
    rights = [params[-1]]
    for mat in reversed(params[:-1]):
        rights.append(torch.bmm(mat, rights[-1].unsqueeze(-1)).squeeze(-1))
    return rights[::-1]


def end_to_end(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """β = W₁⋯W_{L−1}w, shape (batch, d)."""
    return _right_products(params)[0]


def feature_map(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Frozen hidden map W₁⋯W_{L−1}, shape (batch, d, h); the identity for depth 1."""
    if len(params) == 1:
        batch, d = params[0].shape
        eye = torch.eye(d, dtype=params[0].dtype, device=params[0].device)
        return eye.expand(batch, d, d)
    out = params[0]
    for mat in params[1:-1]:
        out = torch.bmm(out, mat)
    return out


def _apply_sigma(sigma_mat: torch.Tensor | None, vec: torch.Tensor) -> torch.Tensor:
    """Σ·v for v of shape (I·M, d), Σ shared by the M runs of each of I data instances.

    sigma_mat is Σ (I, d, d), its eigenvalues (I, d) when the runs live in Σ's eigenbasis (then
    Σ·v is an elementwise product), or None for the identity.
    """
    if sigma_mat is None:
        return vec
    inst = sigma_mat.shape[0]
    blocks = vec.view(inst, -1, vec.shape[-1])
    if sigma_mat.ndim == 2:
        return (blocks * sigma_mat[:, None, :]).view_as(vec)
    return torch.bmm(blocks, sigma_mat).view_as(vec)  # Σ symmetric: v·Σ = (Σ·v)ᵀ


# --------------------------------------------------------------------------- training
def train_deep_linear(
    params: Sequence[torch.Tensor],
    b: torch.Tensor,
    yy: torch.Tensor,
    min_loss: torch.Tensor,
    settings: GDSettings,
    sigma_mat: torch.Tensor | None = None,
) -> GDResult:
    """Gradient descent on all layers for the loss βᵀΣβ − 2bᵀβ + ȳ² (Σ = I when sigma_mat is None).

    b, yy, min_loss have one row per run; sigma_mat (see `_apply_sigma`) is shared by consecutive
    blocks of runs (run r uses Σ[r // (runs / I)]). Stops early once every run is within tol of
    min_loss. Gradient descent commutes with rotations of the input space, so training in Σ's
    eigenbasis (first layer Uᵀ·W₁, b̃ = Uᵀb, diagonal Σ) gives the same run, rotated, at O(d) per
    Σ product instead of O(d²).
    """
    params = [p.clone() for p in params]
    lr = settings.lr
    for step in range(settings.steps + 1):
        rights = _right_products(params)
        beta = rights[0]
        s_beta = _apply_sigma(sigma_mat, beta)
        if step % settings.check_every == 0 or step == settings.steps:
            gap = (beta * s_beta).sum(-1) - 2 * (b * beta).sum(-1) + yy - min_loss
            converged = torch.isfinite(gap) & (gap <= settings.tol)
            if step == settings.steps or bool(converged.all()):
                break
        grad = 2 * (s_beta - b)
        lefts = [grad]  # aₗ = (W₁⋯W_{l−1})ᵀ g, computed before any layer moves
        for mat in params[:-1]:
            lefts.append(torch.bmm(lefts[-1].unsqueeze(1), mat).squeeze(1))
        for mat, left, right in zip(params[:-1], lefts[:-1], rights[1:]):
            mat.baddbmm_(left.unsqueeze(-1), right.unsqueeze(1), alpha=-lr)
        params[-1].add_(lefts[-1], alpha=-lr)
    return GDResult(params, gap, converged, step)


def train_readout(
    c0: torch.Tensor,
    gram: torch.Tensor,
    q: torch.Tensor,
    yy: torch.Tensor,
    min_loss: torch.Tensor,
    settings: GDSettings,
    ridge: float = 0.0,
) -> GDResult:
    """Gradient descent on the readout c alone: loss cᵀGc − 2qᵀc + ȳ² + λ‖c‖².

    With frozen features F = XW₁⋯W_{L−1}, G = FᵀF/n and q = Fᵀy/n, so the minimiser is the ridge
    readout (FᵀF + nλI)⁻¹Fᵀy (docs/references.md §3). gram (I, h, h) is shared by blocks of runs as Σ is.
    """
    c = c0.clone()
    for step in range(settings.steps + 1):
        g_c = _apply_sigma(gram, c) + ridge * c
        if step % settings.check_every == 0 or step == settings.steps:
            gap = (c * g_c).sum(-1) - 2 * (q * c).sum(-1) + yy - min_loss
            converged = torch.isfinite(gap) & (gap <= settings.tol)
            if step == settings.steps or bool(converged.all()):
                break
        c.add_(g_c - q, alpha=-2 * settings.lr)
    return GDResult([c], gap, converged, step)


def _quadratic_min(
    mat: torch.Tensor, lin: torch.Tensor, yy: torch.Tensor, ridge: float, rtol: float
) -> torch.Tensor:
    """min_v vᵀAv − 2lᵀv + ȳ² + λ‖v‖² = ȳ² − Σₖ (uₖᵀl)²/(sₖ + λ) over eigenpairs (sₖ, uₖ) of A;
    at λ = 0 directions with sₖ ≤ rtol·max s are dropped (unreachable by gradient descent)."""
    evals, evecs = torch.linalg.eigh(mat)
    inst = mat.shape[0]
    proj = torch.bmm(lin.view(inst, -1, lin.shape[-1]), evecs) ** 2  # (I, M, k)
    keep = evals > rtol * evals[:, -1:].clamp_min(0) if ridge == 0 else evals > -ridge
    denom = torch.where(keep, evals + ridge, torch.ones_like(evals))
    explained = torch.where(keep[:, None, :], proj / denom[:, None, :], torch.zeros_like(proj))
    return yy - explained.sum(-1).reshape(-1)


def pretrain_population(
    beta_s: torch.Tensor, init: Sequence[torch.Tensor], settings: GDSettings
) -> GDResult:
    """Pre-train on the source population loss ‖β − β_s‖² (x isotropic: E(xᵀ(β − β_s))²)."""
    zeros = torch.zeros(beta_s.shape[0], dtype=beta_s.dtype, device=beta_s.device)
    return train_deep_linear(init, beta_s, zeros + 1.0, zeros, settings)


# --------------------------------------------------------------------------- experiment
def _unit(vec: torch.Tensor) -> torch.Tensor:
    return vec / vec.norm(dim=-1, keepdim=True)


def _seeded(seed: int, *key: int) -> torch.Generator:
    """Generator for one part of the experiment, independent of how the grid is chunked."""
    state = np.random.SeedSequence([seed, *key]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _repeat(params: Sequence[torch.Tensor], times: int) -> list[torch.Tensor]:
    """Copy each instance's parameters to `times` consecutive runs."""
    return [p.repeat_interleave(times, dim=0) for p in params]


def simulate_grid(
    thetas: Sequence[float],
    gammas: Sequence[float],
    sigmas: Sequence[float],
    *,
    d: int = 200,
    depth: int = 2,
    width: int | None = None,
    instances: int = 8,
    init_scale: float = 1e-5,
    scratch: GDSettings = GDSettings(lr=0.1, steps=10_000),
    transfer: GDSettings = GDSettings(lr=0.01, steps=5_000),
    pretrain: GDSettings = GDSettings(lr=0.1, steps=5_000, tol=1e-12),
    readout_ridge: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    threads: int | None = 1,
    progress: bool = True,
) -> pl.DataFrame:
    """Train every method on every (γ, σ, θ, instance); one row per run.

    Instance i has its own β_s, ν ⊥ β_s and initialisation, pre-trained once on the source
    population loss and shared by all grid points; at each γ it gets one design X (n = round(γd))
    and one standard noise draw ξ, shared by every σ (ε = σξ) and θ (paired comparisons).
    Methods (column `method`):
      scratch        GD from small init on y = Xu + ε, u a unit target independent of β_s (the
                     scratch risk does not depend on θ: x and the init are rotation invariant);
      ridge_scratch  ridge regression (XᵀX + nλ*I)⁻¹Xᵀy on the same data, λ* = σ²/γ (closed form);
      linear         readout-only GD from the pre-trained readout, no ridge, target β_t(θ);
      linear_ridge   the same with ridge `readout_ridge` on the readout;
      finetune       GD on all layers from the pre-trained network.
    Rows: gamma, n, sigma, theta (null for scratch baselines), instance, method, risk ‖β̂ − β_t‖²,
    converged, steps, gap. Runs of an instance whose pre-training did not converge are unconverged.
    `threads` sets torch's intra-op threads for the call (see `torch_threads`).
    """
    thetas = check_theta(np.asarray(thetas, dtype=float)).ravel()
    gammas = check_gamma(np.asarray(gammas, dtype=float)).ravel()
    sigmas = check_sigma(np.asarray(sigmas, dtype=float)).ravel()
    rows = []
    with torch_threads(threads):
        grid = _Grid(
            thetas,
            sigmas,
            d=d,
            depth=depth,
            width=width,
            instances=instances,
            init_scale=init_scale,
            scratch=scratch,
            transfer=transfer,
            pretrain=pretrain,
            readout_ridge=readout_ridge,
            seed=seed,
            dtype=dtype,
            device=device,
        )
        # one batch per γ column (all θ, σ and instances); the bar counts (θ, γ, σ) grid points
        per_column = len(thetas) * len(sigmas)
        with tqdm(
            total=len(gammas) * per_column,
            desc="theory grid points",
            unit="pt",
            disable=not progress,
        ) as bar:
            for index, gamma in enumerate(gammas):
                rows += grid.column(index, float(gamma))
                bar.update(per_column)
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row")


class _Grid:
    """Per-instance tasks and pre-trained networks, shared by every γ column of the grid."""

    def __init__(
        self,
        thetas,
        sigmas,
        *,
        d,
        depth,
        width,
        instances,
        init_scale,
        scratch,
        transfer,
        pretrain,
        readout_ridge,
        seed,
        dtype,
        device,
    ):
        width = int(width or d)
        if d < 2 or instances < 1 or width < 1:
            raise ValueError(
                f"need d >= 2, instances >= 1, width >= 1; got {d=}, {instances=}, {width=}"
            )
        if readout_ridge < 0:
            raise ValueError(f"readout_ridge must be >= 0; got readout_ridge={readout_ridge}")
        self.thetas, self.sigmas, self.d, self.inst = thetas, sigmas, d, instances
        self.depth, self.width, self.init_scale = check_depth(depth), width, init_scale
        self.scratch, self.transfer, self.readout_ridge = scratch, transfer, readout_ridge
        self.seed, self.dtype, self.device = seed, dtype, device
        self.to = {"dtype": dtype, "device": device}

        gen = _seeded(seed, 0)
        beta_s = _unit(torch.randn(instances, d, generator=gen, dtype=dtype))
        nu = torch.randn(instances, d, generator=gen, dtype=dtype)
        nu = _unit(nu - (nu * beta_s).sum(-1, keepdim=True) * beta_s)
        target_u = _unit(torch.randn(instances, d, generator=gen, dtype=dtype))
        init = init_deep_linear(instances, d, width, self.depth, init_scale, gen, dtype)
        init = [p.to(**self.to) for p in init]
        self.pre = pretrain_population(beta_s.to(**self.to), init, pretrain)
        self.pre_ok = self.pre.converged.cpu()
        self.features = feature_map(self.pre.params)  # (I, d, h)
        # scratch targets ordered (instance, σ); transfer targets β_t ordered (instance, σ, θ)
        self.target_u = target_u.to(**self.to).repeat_interleave(len(sigmas), dim=0)
        th = torch.as_tensor(thetas, **self.to)
        beta_t = torch.cos(th)[None, :, None] * beta_s.to(**self.to)[:, None] + (
            torch.sin(th)[None, :, None] * nu.to(**self.to)[:, None]
        )
        self.beta_t = beta_t[:, None].expand(instances, len(sigmas), len(thetas), d).reshape(-1, d)

    def _data(self, x, xi, targets: torch.Tensor, per: int):
        """b = Xᵀy/n (I·per, d) and ȳ² for targets (I·per, d); σ varies slowest after instance."""
        sig = torch.as_tensor(self.sigmas, **self.to).repeat_interleave(per // len(self.sigmas))
        y = torch.bmm(targets.view(self.inst, per, self.d), x.transpose(1, 2)) + sig[:, None] * xi
        return (torch.bmm(y, x) / x.shape[1]).reshape(-1, self.d), (y**2).mean(-1).reshape(-1)

    @staticmethod
    def _train(basis, params, b, yy, settings):
        """Gradient descent in Σ's eigenbasis; returns the result and β in input coordinates."""
        b_rot = basis.to_eigen(b)
        least = basis.least_loss(b_rot, yy)
        res = train_deep_linear(basis.rotate(params), b_rot, yy, least, settings, basis.evals)
        return res, basis.from_eigen(end_to_end(res.params))

    def _rows(self, gamma, n, res, beta_hat, method, ok):
        """Rows of transfer runs (ordered instance, σ, θ; target β_t)."""
        return _rows(
            gamma, n, res, beta_hat, self.beta_t, self.sigmas, self.thetas, self.inst, method, ok
        )

    def column(self, index: int, gamma: float) -> list[tuple]:
        """Every run at one γ: one design X and noise draw ξ per instance (ε = σξ)."""
        d, inst, n_s = self.d, self.inst, len(self.sigmas)
        n = max(1, int(round(gamma * d)))
        gen = _seeded(self.seed, 1, index)
        x = torch.randn(inst, n, d, generator=gen, dtype=self.dtype).to(self.device)
        xi = torch.randn(inst, 1, n, generator=gen, dtype=self.dtype).to(self.device)
        sigma_mat = x.transpose(1, 2) @ x / n
        basis = _Eigenbasis(sigma_mat)
        rows = []

        # scratch (GD) and the tuned-ridge baseline on the same data, runs ordered (instance, σ)
        u = self.target_u
        b, yy = self._data(x, xi, u, n_s)
        start = init_deep_linear(
            inst * n_s, d, self.width, self.depth, self.init_scale, gen, self.dtype
        )
        start = [p.to(self.device) for p in start]
        res, beta_hat = self._train(basis, start, b, yy, self.scratch)
        rows += _rows(gamma, n, res, beta_hat, u, self.sigmas, None, inst, "scratch")
        lam = torch.as_tensor(self.sigmas**2 / gamma, **self.to).repeat(inst)  # λ* = σ²/γ
        ridge_hat = basis.from_eigen(basis.ridge(basis.to_eigen(b), lam))
        rows += _rows(gamma, n, None, ridge_hat, u, self.sigmas, None, inst, "ridge_scratch")

        # transfer runs from the pre-trained networks, ordered (instance, σ, θ)
        per = n_s * len(self.thetas)
        b, yy = self._data(x, xi, self.beta_t, per)
        ok = self.pre_ok.repeat_interleave(per)
        res, beta_hat = self._train(basis, _repeat(self.pre.params, per), b, yy, self.transfer)
        rows += self._rows(gamma, n, res, beta_hat, "finetune", ok)

        feats = self.features
        gram = feats.transpose(1, 2) @ sigma_mat @ feats
        q = torch.bmm(b.view(inst, per, d), feats).reshape(-1, feats.shape[-1])
        c0 = self.pre.params[-1].repeat_interleave(per, dim=0)
        feats = feats.repeat_interleave(per, dim=0)
        for method, ridge in (("linear", 0.0), ("linear_ridge", self.readout_ridge)):
            least = _quadratic_min(gram, q, yy, ridge, _READOUT_RTOL)
            res = train_readout(c0, gram, q, yy, least, self.transfer, ridge)
            beta_hat = torch.bmm(feats, res.params[0].unsqueeze(-1)).squeeze(-1)
            rows += self._rows(gamma, n, res, beta_hat, method, ok)
        return rows


class _Eigenbasis:
    """Σ = U·diag(s)·Uᵀ per data instance, and the maps in and out of its eigenbasis."""

    def __init__(self, sigma_mat: torch.Tensor):
        self.evals, self.evecs = torch.linalg.eigh(sigma_mat)
        self.inst, self.d = sigma_mat.shape[0], sigma_mat.shape[-1]
        # eigenvalues below rtol·max are X's null space (exact zeros up to rounding)
        self.keep = self.evals > _EIG_RTOL * self.evals[:, -1:]

    def to_eigen(self, vec: torch.Tensor) -> torch.Tensor:
        """Uᵀv for v (I, M, d) or (I·M, d); returns (I·M, d)."""
        return torch.bmm(vec.reshape(self.inst, -1, self.d), self.evecs).reshape(-1, self.d)

    def from_eigen(self, vec: torch.Tensor) -> torch.Tensor:
        """U·ṽ for ṽ (I·M, d)."""
        blocks = vec.reshape(self.inst, -1, self.d)
        return torch.bmm(blocks, self.evecs.transpose(1, 2)).reshape(-1, self.d)

    def rotate(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """First layer W₁ → UᵀW₁ (the readout vector itself when the depth is 1)."""
        first = params[0]
        if first.ndim == 2:
            return [self.to_eigen(first)]
        blocks = first.reshape(self.inst, -1, self.d, first.shape[-1])
        rotated = torch.matmul(self.evecs.transpose(1, 2)[:, None], blocks)
        return [rotated.reshape(first.shape), *[p.clone() for p in params[1:]]]

    def _per_run(self, tensor: torch.Tensor, runs: int) -> torch.Tensor:
        return tensor.repeat_interleave(runs // self.inst, dim=0)

    def least_loss(self, b_rot: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        """min_β βᵀΣβ − 2bᵀβ + ȳ² = ȳ² − Σ_{s>0} b̃²/s (0 when n < d, the residual otherwise)."""
        evals, keep = self._per_run(self.evals, len(yy)), self._per_run(self.keep, len(yy))
        return yy - torch.where(keep, b_rot**2 / evals.where(keep, 1.0), 0.0).sum(-1)

    def ridge(self, b_rot: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        """(Σ + λI)⁻¹b in the eigenbasis; λ = 0 gives the minimum-norm fit Σ⁺b."""
        evals, keep = self._per_run(self.evals, len(lam)), self._per_run(self.keep, len(lam))
        keep = keep | (lam[:, None] > 0)
        return torch.where(keep, b_rot / (evals + lam[:, None]).where(keep, 1.0), 0.0)


_SCHEMA = {
    "gamma": pl.Float64,
    "n": pl.Int64,
    "sigma": pl.Float64,
    "theta": pl.Float64,
    "instance": pl.Int64,
    "method": pl.String,
    "risk": pl.Float64,
    "converged": pl.Boolean,
    "steps": pl.Int64,
    "gap": pl.Float64,
}


def _rows(gamma, n, res, beta_hat, target, sigmas, thetas, inst, method, ok=None) -> list[tuple]:
    """One tuple per run; runs ordered (instance, σ[, θ])."""
    risk = ((beta_hat - target) ** 2).sum(-1).cpu().numpy()
    runs = risk.shape[0]
    if res is None:  # closed-form estimator: nothing to converge
        conv, steps, gap = np.ones(runs, bool), np.zeros(runs, int), np.zeros(runs)
    else:
        conv = res.converged.cpu().numpy() & (True if ok is None else ok.numpy())
        steps, gap = np.full(runs, res.steps), res.gap.cpu().numpy()
    n_t = 1 if thetas is None else len(thetas)
    idx = np.arange(runs)
    inst_id, sig_id, th_id = idx // (len(sigmas) * n_t), (idx // n_t) % len(sigmas), idx % n_t
    theta_val = [None] * runs if thetas is None else np.asarray(thetas)[th_id].tolist()
    return list(
        zip(
            [float(gamma)] * runs,
            [n] * runs,
            np.asarray(sigmas)[sig_id].tolist(),
            theta_val,
            inst_id.tolist(),
            [method] * runs,
            risk.tolist(),
            conv.tolist(),
            steps.tolist(),
            gap.tolist(),
        )
    )
