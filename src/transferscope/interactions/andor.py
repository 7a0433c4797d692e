"""AND-OR decomposition of a game, solved to its linear-program optimum.

Li & Zhang (2023) and Ren et al. (2023) explain v(x_T) (v(N) − v(∅) sets the scale) by AND and OR
interactions of two component games (docs/references.md §1):

    v_and = ½(v + q) + p,   v_or = ½(v + q) − p,   so  v_and + v_or = v + q,
    I_and = harsanyi(v_and),   I_or = or_interactions(v_or),
    minimise  L(p, q) = Σ_S |I_and(S)| + Σ_S |I_or(S)|   s.t.  |q(T)| ≤ q_thres·|v(N) − v(∅)|,

with p free and q a bounded noise term. The lab code runs SGD for a fixed budget and stops above
the optimum; L is piecewise linear, so the problem is a linear program and this module solves it.

Afterwards OR terms with |S| ≤ 1 are folded into the AND terms of the same set (docs/references.md §1:
v(T) = [i ∈ T] is both the AND and the OR term of {i}, and ∅ is a constant in both), which never
increases L. The optimum is therefore the same with those OR terms fixed at 0, and both solvers
below use that smaller LP. With o = I_or (o(S) = 0 for |S| ≤ 1), v_or = R o and the AND part
a = I_and = H(v + q) − H R o, where H = harsanyi, R = or_inverse, Z = H⁻¹, b = q_thres·|v(N) − v(∅)|:

    minimise ‖H(v + q) − M o‖₁ + ‖o‖₁   over o and |q| ≤ b,   M = H R,                    (P)
    maximise ⟨Hv, y⟩ − b‖Hᵀ y‖₁   s.t.   |y| ≤ 1,  |(Mᵀ y)(S)| ≤ 1 for |S| ≥ 2.             (D)

M is nearly a single butterfly: (M o)(U) = −(−1)^{|U|} Σ_{S⊇U} o(S) for U ≠ ∅ and 0 at ∅
(H F Z is the Kronecker power of [[1, 1], [0, −1]], F the complement flip).

:func:`decompose` solves (P) for a whole batch with a restarted Halpern PDHG (Lu & Yang 2024,
"Restarted Halpern PDHG for linear programming"; Applegate et al. 2021, PDLP, for the adaptive
restarts and the primal weight; Pock & Chambolle 2011 for the diagonal preconditioner) whose
linear operator is made of butterfly transforms. On the CPU each game runs in a compiled (numba)
loop (one core: about 2.4 µs per iteration at n = 9, 4.5 µs at n = 10, 18 µs at n = 12, some 20×
less than the batched torch loop per game); the batched torch loop serves the other devices.
Every iterate (o, q) with q in the box is a feasible point, and every y scaled into the feasible
set of (D) certifies a lower bound, so each game stops at a proven relative gap
(L − bound)/L ≤ tol. The box on q is what makes games slow: sparse planted games at n = 12
reach a gap of ~0.5% in 60 000 iterations with q_thres = 0 but only ~10% with 0.04. (The same
PDHG on the equivalent form
min ‖a‖₁ + ‖o‖₁ s.t. |Z a + R o − v| ≤ b, with a feasibility repair, needed ≥ 3× more iterations
on network games at n = 8–10, though somewhat fewer on sparse planted games.)
:func:`decompose_lp` solves the LP exactly with HiGHS, one game at a time, as the reference.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from transferscope.interactions import transforms as T

try:
    import numba

    _HAVE_NUMBA = True
except ImportError:  # pragma: no cover - the torch loop covers every device
    _HAVE_NUMBA = False

    class numba:  # noqa: N801 - stands in for the decorator so the module still imports
        @staticmethod
        def njit(*args, **kwargs):
            return lambda f: f


__all__ = ["AndOrResult", "decompose", "decompose_lp", "fold_or", "noise_bound", "objective"]

# restart rules of r2HPDHG / PDLP: sufficient decay, necessary decay without progress, and an
# artificial restart when the current cycle is long compared with the whole run
_SUFFICIENT, _NECESSARY, _ARTIFICIAL = 0.2, 0.8, 0.36
_SMOOTH = 1.0  # PDLP primal-weight smoothing θ (1: jump to the measured ratio)
_STEP = 0.998  # fraction of the largest step the preconditioned operator norm allows
# the compiled kernel may reorder sums (vectorised reductions) but keeps IEEE semantics otherwise
_FAST = {"reassoc", "contract", "nsz"}


# ---------------------------------------------------------------- the objective
def noise_bound(v, q_thres: float) -> torch.Tensor:
    """Per game b = q_thres·|v(N) − v(∅)|, the bound on |q(T)| (shape: the leading dims)."""
    v = torch.as_tensor(v, dtype=torch.float64)
    T.n_players(v)
    return q_thres * (v[..., -1] - v[..., 0]).abs()


def objective(v, p, q) -> torch.Tensor:
    """L(p, q) = Σ|harsanyi(½(v+q) + p)| + Σ|or_interactions(½(v+q) − p)| (no folding, as in
    the lab code; folding can only lower it). Does not check |q| ≤ b."""
    half = 0.5 * (torch.as_tensor(v, dtype=torch.float64) + torch.as_tensor(q, dtype=torch.float64))
    p = torch.as_tensor(p, dtype=torch.float64)
    return T.harsanyi(half + p).abs().sum(-1) + T.or_interactions(half - p).abs().sum(-1)


def fold_or(i_and: torch.Tensor, i_or: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the OR terms of |S| ≤ 1 into the AND terms of the same S. They rebuild the same
    game (the OR term of {i} is v(T) = [i ∈ T], that of ∅ a constant, as for AND), and
    |a| + |o| ≥ |a + o| makes the loss no larger. Returns new tensors."""
    low = T.subset_sizes(T.n_players(i_or), device=i_or.device) <= 1
    i_and, i_or = i_and.clone(), i_or.clone()
    i_and[..., low] += i_or[..., low]
    i_or[..., low] = 0.0
    return i_and, i_or


@dataclass
class AndOrResult:
    """An AND-OR decomposition of games v (…, 2^n); every field keeps v's leading dims.

    I_and, I_or: interactions (…, 2^n), OR terms of |S| ≤ 1 folded into AND (so I_or is 0 there);
    p, q: the decomposition's variables, I_and = harsanyi(½(v+q)+p), I_or = or_interactions(½(v+q)−p),
      |q| ≤ noise_bound(v, q_thres), and harsanyi_inverse(I_and) + or_inverse(I_or) = v + q;
    loss: Σ|I_and| + Σ|I_or| of this point; bound: a certified lower bound on the LP optimum;
    gap: (loss − bound)/loss (0 when loss = 0); converged: gap ≤ tol;
    iterations: PDHG iterations each game ran.
    """

    I_and: torch.Tensor
    I_or: torch.Tensor
    p: torch.Tensor
    q: torch.Tensor
    loss: torch.Tensor
    bound: torch.Tensor
    gap: torch.Tensor
    converged: torch.Tensor
    iterations: torch.Tensor

    @property
    def v_and(self) -> torch.Tensor:
        """The AND component game ½(v+q) + p (with the folded OR terms)."""
        return T.harsanyi_inverse(self.I_and)

    @property
    def v_or(self) -> torch.Tensor:
        """The OR component game ½(v+q) − p (without the folded terms)."""
        return T.or_inverse(self.I_or)


# ---------------------------------------------------------------- the PDHG operator
class _Operator(NamedTuple):
    low: torch.Tensor  # folded OR subsets, |S| ≤ 1
    parity: torch.Tensor  # (−1)^{|U|}
    tau_o: torch.Tensor  # primal steps (before the primal weight); 0 on folded o
    tau_q: torch.Tensor
    sigma: torch.Tensor  # dual steps
    inv_o: torch.Tensor  # 1/τ (0 on folded o) and 1/σ, the metric of the residual norms
    inv_q: torch.Tensor
    inv_sigma: torch.Tensor


@functools.lru_cache(maxsize=32)
def _operator(n: int, device: torch.device) -> _Operator:
    """Constants of (P) for n players: the folded-OR mask, the parity sign χ(U) = (−1)^{|U|}
    and the Pock–Chambolle diagonal steps (α = 1), 1/column and 1/row absolute sums of
    A = [M, −H]: columns o(S): 2^{|S|} − 1, q(S): 2^{n−|S|}; rows U ≠ ∅: 2^{|U|} from H plus
    the supersets of U with |S| ≥ 2 from M; row ∅: 1. They bound the preconditioned operator
    norm by 1 and even out the 2^n spread of row and column sizes."""
    sizes = T.subset_sizes(n, device=device).double()
    low = sizes <= 1
    parity = 1.0 - 2.0 * (sizes % 2)
    cols_o = torch.where(low, torch.inf, 2.0**sizes - 1.0)  # τ = 0 keeps folded o at 0
    cols_q = 2.0 ** (n - sizes)
    rows = 2.0**sizes + torch.where(sizes > 0, 2.0 ** (n - sizes) - (sizes == 1).double(), 0.0)
    return _Operator(
        low,
        parity,
        1.0 / cols_o,
        1.0 / cols_q,
        1.0 / rows,
        cols_o.masked_fill(low, 0.0),
        cols_q,
        rows,
    )


def _forward(o, q, parity) -> torch.Tensor:
    """A(o, q) = M o − H q, i.e. −(the AND interactions) up to the constant Hv."""
    mo = T.superset_sum(o).mul_(-parity)
    mo[..., 0] = 0.0
    return mo.sub_(T.harsanyi(q))


def _adjoint(y, parity, low) -> tuple[torch.Tensor, torch.Tensor]:
    """Aᵀ y = (Mᵀ y, −Hᵀ y), Mᵀ y = y(∅) − Z(χ y), with the folded OR columns zeroed."""
    my = T.harsanyi_inverse(parity * y).neg_().add_(y[..., :1])
    my[..., low] = 0.0
    return my, T.superset_moebius(y).neg_()


def _primal_norm(o, q, op: _Operator) -> torch.Tensor:
    """‖(o, q)‖ in the preconditioned coordinates o/√τ_o, q/√τ_q (folded o skipped)."""
    return ((o.square() * op.inv_o).sum(-1, keepdim=True) + (q.square() * op.inv_q).sum(-1, keepdim=True)).sqrt()  # fmt: skip


def _dual_norm(y, op: _Operator) -> torch.Tensor:
    """‖y‖ in the preconditioned coordinates y/√σ."""
    return (y.square() * op.inv_sigma).sum(-1, keepdim=True).sqrt()


def _shrink(z: torch.Tensor, t) -> torch.Tensor:
    """Soft threshold sign(z)·max(|z| − t, 0): the prox of t‖·‖₁."""
    return z.sign() * (z.abs() - t).clamp_min(0.0)


def _finish(o, q, v):
    """The decomposition at a feasible (o, q): v_or = R o, v_and = v + q − R o, interactions
    recomputed from (p, q) as the result promises, OR terms of |S| ≤ 1 folded."""
    half = 0.5 * (v + q)
    p = half - T.or_inverse(o)
    i_and, i_or = fold_or(T.harsanyi(half + p), T.or_interactions(half - p))
    return p, i_and, i_or, i_and.abs().sum(-1) + i_or.abs().sum(-1)


def _loss(o, q, c, parity) -> torch.Tensor:
    """‖c − A(o, q)‖₁ + ‖o‖₁ = Σ|I_and| + Σ|I_or| at a feasible (o, q), without rebuilding the
    interactions (what the compiled :func:`_certify` computes)."""
    return (c - _forward(o, q, parity)).abs().sum(-1) + o.abs().sum(-1)


def _dual_bound(y, my, hy, c, b) -> torch.Tensor:
    """max(0, D(y/s)) with s = max(1, ‖Mᵀ y‖_∞): y/s is feasible for (D) (|y| ≤ 1 holds after
    the dual prox), so weak duality makes it a lower bound. Here y is the PDHG dual of
    ‖A x − c‖₁, c = Hv, which is −y of (D)."""
    s = my.abs().amax(-1).clamp_min(1.0)
    return ((-(c * y).sum(-1) - b[:, 0] * hy.abs().sum(-1)) / s).clamp_min(0.0)


# ---------------------------------------------------------------- PDHG
def decompose(
    v,
    q_thres: float = 0.04,
    *,
    tol: float = 1e-3,
    max_iter: int = 100_000,
    check_every: int = 64,
) -> AndOrResult:
    """AND-OR decomposition of games v (…, 2^n), each to a certified relative gap ≤ tol.

    Restarted Halpern PDHG on (P) (module docstring), in float64. Each game is scaled by a
    power of two near max|v| (exact, so scaling v scales the result) and runs on its own: its
    own primal weight, restarts and stopping time, so a game's iterates do not depend on the
    others in the batch. Every ``check_every`` iterations (and at ``max_iter``) a feasible
    primal point is scored, and the best scored point so far is measured against the best dual
    bound so far (the iterates oscillate, so the last one can be far worse); games that reach
    ``max_iter`` return that best (feasible) point with ``converged`` False. Defaults: tol 1e-3,
    max_iter 100 000, check_every 64, restarts at residual decay 0.2 / 0.8 without progress /
    a cycle of 0.36 of the run, steps 0.998 of the preconditioned bound, primal weight set to
    the measured dual/primal distance ratio at each restart. On the CPU (with numba) the games
    run in a compiled loop, shared by ``torch.get_num_threads()`` threads, scoring the PDHG
    step T(z) of the current iterate; on other devices in one batched torch loop, scoring the
    iterate itself. The first call in a process loads the compiled kernel (≈ 0.4 s; the first
    ever call compiles it, ≈ 10 s, and caches it next to this file).
    """
    return _decompose(v, q_thres, tol, max_iter, check_every, compiled=_HAVE_NUMBA)


def _decompose(
    v, q_thres=0.04, tol=1e-3, max_iter=100_000, check_every=64, *, compiled: bool = _HAVE_NUMBA
) -> AndOrResult:
    """:func:`decompose` with the loop chosen: compiled (CPU tensors only) or torch (tests run
    the torch loop, the one CUDA uses, on the CPU with ``compiled=False``)."""
    v = torch.as_tensor(v)
    n = T.n_players(v)
    lead, size = v.shape[:-1], v.shape[-1]
    v = v.to(torch.float64).reshape(-1, size)
    op = _operator(n, v.device)
    # exact power-of-two scale: the iterates then see games of similar size
    _, exponent = torch.frexp(v.abs().amax(-1, keepdim=True))
    scale = torch.ldexp(torch.ones_like(v[:, :1]), exponent)
    vs = v / scale
    c = T.harsanyi(vs)
    b = q_thres * (vs[:, -1] - vs[:, 0]).abs()
    # primal weight (primal steps τ/ω, dual steps σ·ω), started at PDLP's ‖cost‖/‖rhs‖ in the
    # preconditioned coordinates, with Hv as the right-hand side
    omega = (op.tau_o.sum() + op.tau_q.sum()).sqrt() / (op.sigma * c.square()).sum(-1).sqrt().clamp_min(1e-300)  # fmt: skip
    loop = _pdhg_compiled if compiled and v.device.type == "cpu" else _pdhg_torch
    o, q, bound, iterations, converged = loop(vs, c, b, omega, op, tol, max_iter, check_every)
    p, i_and, i_or, loss = _finish(o, q, vs)
    loss, bound = loss * scale[:, 0], bound * scale[:, 0]
    gap = torch.where(loss > 0, (loss - bound) / loss, 0.0)
    return AndOrResult(
        I_and=(i_and * scale).reshape(*lead, size),
        I_or=(i_or * scale).reshape(*lead, size),
        p=(p * scale).reshape(*lead, size),
        q=(q * scale).reshape(*lead, size),
        loss=loss.reshape(lead),
        bound=bound.reshape(lead),
        gap=gap.reshape(lead),
        converged=converged.reshape(lead),
        iterations=iterations.reshape(lead),
    )


def _pdhg_torch(v, c, b, omega, op: _Operator, tol, max_iter, check_every):
    """The batched torch loop of :func:`decompose` (any device) on scaled games v (G, 2^n) with
    c = Hv, bounds b (G,) and initial primal weights ω (G,); returns the best scored (o, q),
    the best dual bound, iterations and convergence per game.

    Every game keeps its own primal weight, restarts and stopping time, and converged games
    leave the batch, so a game's iterates do not depend on the others. Every ``check_every``
    iterations (and at ``max_iter``) the current iterate is scored.
    """
    games, device = v.shape[0], v.device
    low, parity, tau_o, tau_q, sigma = op[:5]
    b = b[:, None]
    out = dict(
        o=torch.zeros_like(v),
        q=torch.zeros_like(v),
        bound=v.new_zeros(games),
        converged=torch.zeros(games, dtype=torch.bool, device=device),
        iterations=torch.zeros(games, dtype=torch.long, device=device),
    )
    zeros = torch.zeros_like(v)
    s = dict(
        index=torch.arange(games, device=device),
        c=c,
        b=b,
        o=zeros,
        q=zeros,
        y=zeros,
        Ax=zeros,  # A(o, q), updated by linearity instead of recomputed
        o0=zeros,  # Halpern anchor = start of the current restart cycle
        q0=zeros,
        y0=zeros,
        Ax0=zeros,
        omega=omega[:, None],
        k=torch.zeros_like(b),  # iterations since the last restart
        r0=torch.full_like(b, torch.inf),  # fixed-point residual at the cycle's start
        r_prev=torch.full_like(b, torch.inf),
        best=v.new_zeros(games),  # best certified dual bound so far
        best_loss=torch.full((games,), torch.inf, dtype=torch.float64, device=device),
        best_o=zeros,  # the best scored feasible point, returned (iterates oscillate)
        best_q=zeros,
    )

    def check(it: int, final: bool) -> None:
        """Certify the active games; write out and drop those that converged (all if final)."""
        nonlocal s
        # the reflected Halpern iterate can leave the boxes |q| ≤ b and |y| ≤ 1: project back
        q = torch.clamp(s["q"], -s["b"], s["b"])
        y = torch.clamp(s["y"], -1.0, 1.0)
        my, hy = _adjoint(y, parity, low)
        s["best"] = torch.maximum(s["best"], _dual_bound(y, my, hy, s["c"], s["b"]))
        loss = _loss(s["o"], q, s["c"], parity)
        better = loss < s["best_loss"]
        s["best_loss"] = torch.where(better, loss, s["best_loss"])
        s["best_o"] = torch.where(better[:, None], s["o"], s["best_o"])
        s["best_q"] = torch.where(better[:, None], q, s["best_q"])
        loss = s["best_loss"]
        done = torch.where(loss > 0, (loss - s["best"]) / loss, 0.0) <= tol
        leave = torch.ones_like(done) if final else done
        idx = s["index"][leave]
        out["o"][idx] = s["best_o"][leave]
        out["q"][idx] = s["best_q"][leave]
        out["bound"][idx] = s["best"][leave]
        out["converged"][idx] = done[leave]
        out["iterations"][idx] = it
        s = {name: value[~leave] for name, value in s.items()}

    check(0, max_iter == 0)  # the start may already be optimal (zero games, n = 0)
    for it in range(1, max_iter + 1):
        if s["index"].numel() == 0:
            break
        o, q, y, omega = s["o"], s["q"], s["y"], s["omega"]
        # one PDHG step z ↦ T(z): primal prox of ‖o‖₁ + box(q), dual prox of (‖· − c‖₁)*
        mo, hq = _adjoint(y, parity, low)
        step_o, step_q = _STEP * tau_o / omega, _STEP * tau_q / omega
        o1 = _shrink(o - step_o * mo, step_o)
        q1 = torch.clamp(q - step_q * hq, -s["b"], s["b"])
        ax1 = _forward(o1, q1, parity)
        step_y = _STEP * sigma * omega
        y1 = torch.clamp(y + step_y * (2.0 * ax1 - s["Ax"] - s["c"]), -1.0, 1.0)

        # fixed-point residual ‖z − T(z)‖ in the (diagonal part of the) PDHG metric
        r = (omega * _primal_norm(o1 - o, q1 - q, op).square() + _dual_norm(y1 - y, op).square() / omega).sqrt()  # fmt: skip
        r0 = torch.where(torch.isinf(s["r0"]), r, s["r0"])

        # reflected Halpern step toward the anchor: z ← (k+1)/(k+2)·(2T(z) − z) + 1/(k+2)·z0
        k = s["k"]
        w = (k + 1.0) / (k + 2.0)
        new = dict(o=o1, q=q1, y=y1, Ax=ax1)
        halpern = {x: w * (2.0 * new[x] - s[x]) + (1.0 - w) * s[x + "0"] for x in new}

        restart = (
            (r <= _SUFFICIENT * r0)
            | ((r <= _NECESSARY * r0) & (r > s["r_prev"]))
            | (k >= _ARTIFICIAL * it)
        )
        # a restart starts a new cycle at T(z) and moves the primal weight toward the ratio
        # of the dual to the primal distance travelled in the cycle (PDLP, smoothing _SMOOTH)
        dx = _primal_norm(o1 - s["o0"], q1 - s["q0"], op)
        dy = _dual_norm(y1 - s["y0"], op)
        moved = restart & (dx > 1e-10) & (dy > 1e-10)
        ratio = (dy / dx.clamp_min(1e-300)).clamp_min(1e-300)
        s["omega"] = torch.where(moved, omega ** (1.0 - _SMOOTH) * ratio**_SMOOTH, omega)
        for x in new:
            s[x] = torch.where(restart, new[x], halpern[x])
            s[x + "0"] = torch.where(restart, new[x], s[x + "0"])
        s["k"] = torch.where(restart, 0.0, k + 1.0)
        s["r0"] = torch.where(restart, torch.inf, r0)
        s["r_prev"] = torch.where(restart, torch.inf, r)

        if it % check_every == 0 or it == max_iter:
            check(it, it == max_iter)
    return out["o"], out["q"], out["bound"], out["iterations"], out["converged"]


# ---------------------------------------------------------------- compiled CPU kernel
@numba.njit(cache=True, inline="always")
def _subset_pass(x, sign):
    """x[T ∪ {i}] += sign·x[T] for every player i (zeta / Möbius over subsets). Players 0 and 1,
    then 2 and 3, are done two at a time in registers, the others as contiguous half-block
    updates."""
    size = x.shape[0]
    h = 1
    if size >= 4:
        for s in range(0, size, 4):
            a0 = x[s]
            a1 = x[s + 1] + sign * a0
            a2 = x[s + 2]
            a3 = x[s + 3] + sign * a2
            x[s + 1] = a1
            x[s + 2] = a2 + sign * a0
            x[s + 3] = a3 + sign * a1
        h = 4
    if size >= 16:  # players 2 and 3 the same way, four lanes at a time
        for s in range(0, size, 16):
            for j in range(s, s + 4):
                a0 = x[j]
                a1 = x[j + 4] + sign * a0
                a2 = x[j + 8]
                a3 = x[j + 12] + sign * a2
                x[j + 4] = a1
                x[j + 8] = a2 + sign * a0
                x[j + 12] = a3 + sign * a1
        h = 16
    while h < size:
        for start in range(0, size, 2 * h):
            lo = x[start : start + h]
            hi = x[start + h : start + 2 * h]
            for j in range(h):
                hi[j] += sign * lo[j]
        h <<= 1


@numba.njit(cache=True, inline="always")
def _superset_pass(x, sign):
    """x[T] += sign·x[T ∪ {i}] for every player i (the adjoint butterflies)."""
    size = x.shape[0]
    h = 1
    if size >= 4:
        for s in range(0, size, 4):
            a1 = x[s + 1]
            a3 = x[s + 3]
            a0 = x[s] + sign * a1
            a2 = x[s + 2] + sign * a3
            x[s] = a0 + sign * a2
            x[s + 1] = a1 + sign * a3
            x[s + 2] = a2
        h = 4
    if size >= 16:
        for s in range(0, size, 16):
            for j in range(s, s + 4):
                a1 = x[j + 4]
                a3 = x[j + 12]
                a0 = x[j] + sign * a1
                a2 = x[j + 8] + sign * a3
                x[j] = a0 + sign * a2
                x[j + 4] = a1 + sign * a3
                x[j + 8] = a2
        h = 16
    while h < size:
        for start in range(0, size, 2 * h):
            lo = x[start : start + h]
            hi = x[start + h : start + 2 * h]
            for j in range(h):
                lo[j] += sign * hi[j]
        h <<= 1


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _certify(c, b, o, q, y, parity, tau_o, t1, t2):
    """(loss, bound) for one game: the loss ‖c − A(o, q)‖₁ + ‖o‖₁ of a feasible point
    (|q| ≤ b) and the dual bound max(0, D(y/s)) of a y with |y| ≤ 1, s = max(1, ‖Mᵀ y‖_∞)
    over the unfolded o (see :func:`_dual_bound`)."""
    size = c.shape[0]
    for j in range(size):
        t1[j] = parity[j] * y[j]
        t2[j] = y[j]
    _subset_pass(t1, 1.0)
    _superset_pass(t2, -1.0)
    s = 1.0
    dval = 0.0
    for j in range(size):
        dval -= c[j] * y[j] + b * abs(t2[j])
        if tau_o[j] > 0.0:
            s = max(s, abs(y[0] - t1[j]))
    bound = max(0.0, dval / s)
    for j in range(size):
        t1[j] = o[j]
        t2[j] = q[j]
    _superset_pass(t1, 1.0)
    _subset_pass(t2, -1.0)
    loss = abs(c[0] + t2[0]) + abs(o[0])
    for j in range(1, size):
        loss += abs(c[j] + parity[j] * t1[j] + t2[j]) + abs(o[j])
    return loss, bound


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _solve_one(c, b, parity, tau_o, tau_q, sigma, inv_o, inv_q, inv_sigma, omega, tol, max_iter,
               check_every, o_out, q_out):  # fmt: skip
    """One game of :func:`decompose`: restarted Halpern PDHG from zero, scored every
    ``check_every`` iterations at T(z). Writes the best scored (o, q) and returns
    (best bound, iterations, converged)."""
    size = c.shape[0]
    o = np.zeros(size)
    q = np.zeros(size)
    y = np.zeros(size)
    ax = np.zeros(size)  # A(o, q), carried by linearity instead of recomputed
    o0 = np.zeros(size)  # Halpern anchor = start of the current restart cycle
    q0 = np.zeros(size)
    y0 = np.zeros(size)
    ax0 = np.zeros(size)
    o1 = np.zeros(size)  # T(z)
    q1 = np.zeros(size)
    y1 = np.zeros(size)
    ax1 = np.zeros(size)
    t1 = np.empty(size)
    t2 = np.empty(size)
    best_loss, best = _certify(c, b, o, q, y, parity, tau_o, t1, t2)
    o_out[:] = 0.0  # the start (0, 0) is feasible: the best point until a better one is scored
    q_out[:] = 0.0
    done = best_loss <= 0.0 or (best_loss - best) <= tol * best_loss
    it = 0
    k = 0.0  # iterations since the last restart
    r0 = -1.0  # fixed-point residual at the cycle's start (< 0: not yet measured)
    r_prev = np.inf
    for j in range(size):
        t1[j] = parity[j] * y[j]
        t2[j] = y[j]
    while not done and it < max_iter:
        it += 1
        # one PDHG step z ↦ T(z): Aᵀ y = (Mᵀ y, −Hᵀ y) (t1 = χ·y, t2 = y on entry), then the
        # primal prox of ‖o‖₁ + box(q)
        _subset_pass(t1, 1.0)
        _superset_pass(t2, -1.0)
        yempty = y[0]
        base = _STEP / omega
        dxn = 0.0
        dx0 = 0.0
        for j in range(size):
            step = base * tau_o[j]  # 0 on the folded o, which therefore stay 0
            z = o[j] - step * (yempty - t1[j])
            oj = z - min(step, max(-step, z))
            qj = min(b, max(-b, q[j] + base * tau_q[j] * t2[j]))
            o1[j] = oj
            q1[j] = qj
            t1[j] = oj  # the forward transforms start from (o1, q1)
            t2[j] = qj
            d = oj - o[j]
            e = qj - q[j]
            dxn += d * d * inv_o[j] + e * e * inv_q[j]
            d = oj - o0[j]
            e = qj - q0[j]
            dx0 += d * d * inv_o[j] + e * e * inv_q[j]
        # A(o1, q1) = M o1 − H q1, then the dual prox of (‖· − c‖₁)* (a clip to [−1, 1])
        _superset_pass(t1, 1.0)
        _subset_pass(t2, -1.0)
        t1[0] = 0.0
        sy = _STEP * omega
        dyn = 0.0
        dy0 = 0.0
        for j in range(size):
            a = -parity[j] * t1[j] - t2[j]
            ax1[j] = a
            yj = min(1.0, max(-1.0, y[j] + sy * sigma[j] * (2.0 * a - ax[j] - c[j])))
            y1[j] = yj
            d = yj - y[j]
            dyn += d * d * inv_sigma[j]
            d = yj - y0[j]
            dy0 += d * d * inv_sigma[j]
        # fixed-point residual ‖z − T(z)‖ in the (diagonal part of the) PDHG metric
        r = math.sqrt(omega * dxn + dyn / omega)
        if r0 < 0.0:
            r0 = r
        restart = r <= _SUFFICIENT * r0 or (r <= _NECESSARY * r0 and r > r_prev) or k >= _ARTIFICIAL * it  # fmt: skip
        if restart:
            # a new cycle starts at T(z); the primal weight moves toward the ratio of the dual
            # to the primal distance travelled in the cycle (PDLP, with smoothing _SMOOTH)
            dx = math.sqrt(dx0)
            dy = math.sqrt(dy0)
            if dx > 1e-10 and dy > 1e-10:
                omega = math.exp(_SMOOTH * math.log(dy / dx) + (1.0 - _SMOOTH) * math.log(omega))
            for j in range(size):
                o[j] = o1[j]
                o0[j] = o1[j]
                q[j] = q1[j]
                q0[j] = q1[j]
                y[j] = y1[j]
                y0[j] = y1[j]
                ax[j] = ax1[j]
                ax0[j] = ax1[j]
                t1[j] = parity[j] * y1[j]
                t2[j] = y1[j]
            k = 0.0
            r0 = -1.0
            r_prev = np.inf
        else:
            # reflected Halpern step toward the anchor: z ← (k+1)/(k+2)·(2T(z) − z) + z0/(k+2)
            w = (k + 1.0) / (k + 2.0)
            w0 = 1.0 - w
            for j in range(size):
                o[j] = w * (2.0 * o1[j] - o[j]) + w0 * o0[j]
                q[j] = w * (2.0 * q1[j] - q[j]) + w0 * q0[j]
                yj = w * (2.0 * y1[j] - y[j]) + w0 * y0[j]
                y[j] = yj
                ax[j] = w * (2.0 * ax1[j] - ax[j]) + w0 * ax0[j]
                t1[j] = parity[j] * yj
                t2[j] = yj
            k += 1.0
            r_prev = r
        if it % check_every == 0 or it == max_iter:
            # score T(z) (feasible: q1 in the box, y1 in [−1, 1]; o1 is the sparse prox output)
            loss, bound = _certify(c, b, o1, q1, y1, parity, tau_o, t1, t2)
            best = max(best, bound)
            if loss < best_loss:
                best_loss = loss
                o_out[:] = o1
                q_out[:] = q1
            done = best_loss <= 0.0 or (best_loss - best) <= tol * best_loss
            for j in range(size):
                t1[j] = parity[j] * y[j]
                t2[j] = y[j]
    return best, it, done


@numba.njit(cache=True, nogil=True)
def _solve(c, b, parity, tau_o, tau_q, sigma, inv_o, inv_q, inv_sigma, omega, tol, max_iter,
           check_every, o_out, q_out, bound_out, iters_out, done_out):  # fmt: skip
    """:func:`_solve_one` on each row of a batch (without the GIL, so threads can share the
    rows of a batch)."""
    for g in range(c.shape[0]):
        bound, it, done = _solve_one(c[g], b[g], parity, tau_o, tau_q, sigma, inv_o, inv_q,
                                     inv_sigma, omega[g], tol, max_iter, check_every, o_out[g],
                                     q_out[g])  # fmt: skip
        bound_out[g] = bound
        iters_out[g] = it
        done_out[g] = done


def _pdhg_compiled(v, c, b, omega, op: _Operator, tol, max_iter, check_every):
    """The CPU loop of :func:`decompose`: :func:`_solve_one` per game, the games shared by
    ``torch.get_num_threads()`` threads; same arguments and returns as :func:`_pdhg_torch`."""
    games, size = v.shape
    o = np.zeros((games, size))
    q = np.zeros((games, size))
    bound = np.zeros(games)
    iters = np.zeros(games, dtype=np.int64)
    done = np.zeros(games, dtype=np.bool_)
    c_np, b_np, omega_np = c.numpy(), b.numpy(), omega.numpy()
    const = [x.numpy() for x in (op.parity, op.tau_o, op.tau_q, op.sigma, op.inv_o, op.inv_q, op.inv_sigma)]  # fmt: skip

    def run(start: int, stop: int) -> None:
        rows = slice(start, stop)
        _solve(c_np[rows], b_np[rows], *const, omega_np[rows], float(tol), int(max_iter),
               max(1, int(check_every)), o[rows], q[rows], bound[rows], iters[rows],
               done[rows])  # fmt: skip

    threads = min(torch.get_num_threads(), games)
    if threads <= 1:
        if games:
            run(0, games)
    else:  # the kernel releases the GIL: threads take one game at a time
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda g: run(g, g + 1), range(games)))
    as_t = torch.from_numpy
    return as_t(o), as_t(q), as_t(bound), as_t(iters), as_t(done)


# ---------------------------------------------------------------- exact reference
def decompose_lp(v, q_thres: float = 0.04) -> tuple[float, torch.Tensor, torch.Tensor]:
    """The exact optimum of one game (2^n,) with HiGHS: returns (optimum, p, q).

    The LP in the form min ‖a‖₁ + ‖o‖₁ s.t. Z a + R o − q = v, |q| ≤ b (a = I_and, equivalent
    to (P)), sparse: a = a⁺ − a⁻ and o = o⁺ − o⁻ (|S| ≥ 2) with unit costs, q in the box,
    and Z a, Z o built by n butterfly stages of auxiliary variables (each stage row
    z_{k+1}(T) = z_k(T) + [k ∈ T]·z_k(T∖{k})), so the matrix has O(n·2^n) entries instead of
    4^n. ``optimum`` is L at the returned (p, q) (q clipped into the box), i.e. the value of a
    feasible point, equal to the LP optimum up to HiGHS's tolerances.
    """
    import highspy
    from scipy import sparse

    values = torch.as_tensor(v, dtype=torch.float64).cpu()
    n = T.n_players(values)
    if values.dim() != 1:
        raise ValueError(f"decompose_lp solves one game (2^n,), got shape {tuple(values.shape)}")
    size = 2**n
    bound = float(noise_bound(values, q_thres))
    active = np.flatnonzero(T.subset_sizes(n).numpy() >= 2)
    index = np.arange(size)

    # columns: a⁺, a⁻, o⁺, o⁻ (active subsets), q, σ = Σ o, then stages z_0..z_n and y_0..y_n
    col_a, col_o = 0, 2 * size
    col_q = col_o + 2 * active.size
    col_sigma = col_q + size
    col_z = col_sigma + 1
    col_y = col_z + (n + 1) * size
    n_cols = col_y + (n + 1) * size
    rows, cols, vals = [], [], []

    def add(row_ids, col_ids, coef):
        row_ids, col_ids = np.broadcast_arrays(np.atleast_1d(row_ids), np.atleast_1d(col_ids))
        rows.append(row_ids)
        cols.append(col_ids)
        vals.append(np.full(row_ids.shape, coef, dtype=float))

    row = 0
    # stage 0: z_0 = a⁺ − a⁻,  y_0 = o⁺ − o⁻ (0 on folded subsets)
    r = row + index
    add(r, col_z + index, 1.0), add(r, col_a + index, -1.0), add(r, col_a + size + index, 1.0)
    row += size
    r = row + index
    add(r, col_y + index, 1.0)
    add(row + active, col_o + np.arange(active.size), -1.0)
    add(row + active, col_o + active.size + np.arange(active.size), 1.0)
    row += size
    # stages k → k+1 of the zeta transform, for both chains
    for k in range(n):
        has = index[(index >> k & 1) == 1]
        for base in (col_z, col_y):
            cur, nxt = base + k * size, base + (k + 1) * size
            r = row + index
            add(r, nxt + index, 1.0), add(r, cur + index, -1.0)
            add(row + has, cur + has - (1 << k), -1.0)
            row += size
    # σ = Σ_S o(S)
    add(row, col_sigma, 1.0)
    add(np.full(active.size, row), col_o + np.arange(active.size), -1.0)
    add(np.full(active.size, row), col_o + active.size + np.arange(active.size), 1.0)
    row += 1
    n_zero_rows = row
    # Z a + R o − q = v,  R o(T) = σ − (Z o)(N∖T)
    r = row + index
    add(r, col_z + n * size + index, 1.0), add(r, col_sigma, 1.0)
    add(r, col_y + n * size + (size - 1 - index), -1.0), add(r, col_q + index, -1.0)
    row += size
    rhs = np.concatenate([np.zeros(n_zero_rows), values.numpy()])

    matrix = sparse.csc_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(row, n_cols)
    )
    inf = highspy.kHighsInf
    lower = np.full(n_cols, -inf)
    upper = np.full(n_cols, inf)
    lower[:col_q] = 0.0
    lower[col_q:col_sigma], upper[col_q:col_sigma] = -bound, bound
    cost = np.zeros(n_cols)
    cost[:col_q] = 1.0

    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n_cols, row
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, lower, upper
    lp.row_lower_, lp.row_upper_ = rhs, rhs
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_ = matrix.indptr, matrix.indices
    lp.a_matrix_.value_ = matrix.data
    solver = highspy.Highs()
    solver.setOptionValue("output_flag", False)
    for option in ("primal_feasibility_tolerance", "dual_feasibility_tolerance"):
        solver.setOptionValue(option, 1e-10)
    solver.passModel(lp)
    solver.run()
    status = solver.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(
            f"HiGHS did not solve the AND-OR LP: {solver.modelStatusToString(status)}"
        )
    x = np.asarray(solver.getSolution().col_value)

    o = torch.zeros(size, dtype=torch.float64)
    o[active] = torch.from_numpy(x[col_o : col_o + active.size] - x[col_o + active.size : col_q])
    q = torch.from_numpy(x[col_q:col_sigma]).clamp(-bound, bound)
    # as in decompose, v_and = v + q − R o takes up whatever HiGHS's tolerances left
    # unexplained; it equals Z a at an exact solution
    half = 0.5 * (values + q)
    p = half - T.or_inverse(o)
    return float(objective(values, p, q)), p, q
