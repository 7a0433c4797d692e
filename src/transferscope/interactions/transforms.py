"""Fast subset transforms of games v: 2^N → ℝ, in float64, batched over leading dimensions.

One convention everywhere: a game over n players is a tensor whose last dimension has 2^n
entries, and subset S ⊆ N = {0, …, n−1} is stored at index Σ_{i∈S} 2^i (player i is bit i).
(The SJTU XAI lab's code uses the most significant bit for player 0; shapiq orders by size.)

Interactions (Harsanyi 1963; Ren et al. 2023, Li & Zhang 2023; docs/references.md §1):

    AND (Harsanyi dividend, Möbius transform)   I(S) = Σ_{T⊆S} (−1)^{|S|−|T|} v(T)
        inverse (zeta, "universal matching")   v(T) = Σ_{S⊆T} I(S)
    OR                                          I_or(S) = −Σ_{T⊆S} (−1)^{|S|−|T|} v(N∖T), S ≠ ∅
                                                I_or(∅) = v(∅)
        inverse                                 v(T) = I_or(∅) + Σ_{S≠∅, S∩T≠∅} I_or(S)

Each transform is a Kronecker power of a 2×2 matrix, applied by a butterfly: one in-place
pass per player over the whole array, O(n·2^n) instead of the dense O(4^n) matrix product.
The adjoints (transposes) are the superset versions of the same butterflies; the AND-OR solver
uses them as the transposed linear operator.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

__all__ = [
    "harsanyi",
    "harsanyi_inverse",
    "n_players",
    "or_interactions",
    "or_interactions_adjoint",
    "or_inverse",
    "or_inverse_adjoint",
    "subset_index",
    "subset_matrix",
    "subset_players",
    "subset_sizes",
    "superset_moebius",
    "superset_sum",
]


# ---------------------------------------------------------------- subset helpers
def n_players(values) -> int:
    """n for a game tensor (or array) whose last dimension has 2^n entries."""
    shape = tuple(getattr(values, "shape", np.shape(values)))
    size = shape[-1] if shape else 0
    if size < 1 or size & (size - 1):
        raise ValueError(
            f"a game needs a last dimension of 2^n entries (one per subset), got shape {shape}"
        )
    return size.bit_length() - 1


def subset_index(players: Iterable[int]) -> int:
    """Index Σ_{i∈S} 2^i of the subset S given by its players (repeats count once)."""
    index = 0
    for player in players:
        player = int(player)
        if player < 0:
            raise ValueError(f"players are numbered from 0, got {player}")
        index |= 1 << player
    return index


def subset_players(index: int) -> tuple[int, ...]:
    """The players of the subset stored at ``index``: the positions of its set bits."""
    return tuple(i for i in range(int(index).bit_length()) if index >> i & 1)


def subset_sizes(n: int, device=None) -> torch.Tensor:
    """|S| (popcount) of every subset index 0 … 2^n − 1, as a long tensor."""
    sizes = torch.zeros(1, dtype=torch.long, device=device)
    for _ in range(n):
        # indices with bit i set are the upper half of each 2^(i+1) block
        sizes = torch.cat([sizes, sizes + 1])
    return sizes


def subset_matrix(n: int, device=None) -> torch.Tensor:
    """Membership (2^n, n) bool: row S has True at the players of S."""
    index = torch.arange(2**n, device=device)[:, None]
    return (index >> torch.arange(n, device=device) & 1).bool()


# ---------------------------------------------------------------- butterflies
def _copy64(values) -> tuple[torch.Tensor, int]:
    """A fresh contiguous float64 copy (the caller's tensor is never written) and n."""
    values = torch.as_tensor(values)
    n = n_players(values)
    out = torch.empty(values.shape, dtype=torch.float64, device=values.device)
    out.copy_(values)  # also reads non-contiguous views correctly
    return out, n


def _butterfly(x: torch.Tensor, n: int, upper: bool, sign: float) -> torch.Tensor:
    """In place on a contiguous x (…, 2^n): for every player i and every pair of subsets
    (T, T ∪ {i}) with i ∉ T, ``x[T∪{i}] += sign·x[T]`` (subset direction, upper=True) or
    ``x[T] += sign·x[T∪{i}]`` (superset direction). Kronecker powers of
    [[1, 0], [sign, 1]] and [[1, sign], [0, 1]]."""
    rows = x.numel() >> n
    for i in range(n):
        # flat index = block·2^(i+1) + bit_i·2^i + low bits
        pairs = x.view(rows << (n - 1 - i), 2, 1 << i)
        lo, hi = pairs[:, 0], pairs[:, 1]
        if upper:
            hi.add_(lo, alpha=sign)
        else:
            lo.add_(hi, alpha=sign)
    return x


def harsanyi(values) -> torch.Tensor:
    """AND (Harsanyi) interactions I(S) = Σ_{T⊆S} (−1)^{|S|−|T|} v(T): the subset Möbius
    transform (Harsanyi 1963; Ren et al. 2023 eq. 1). Float64 on the input's device."""
    x, n = _copy64(values)
    return _butterfly(x, n, upper=True, sign=-1.0)


def harsanyi_inverse(interactions) -> torch.Tensor:
    """Universal matching v(T) = Σ_{S⊆T} I(S): the subset zeta transform, inverse of
    :func:`harsanyi`."""
    x, n = _copy64(interactions)
    return _butterfly(x, n, upper=True, sign=1.0)


def superset_moebius(values) -> torch.Tensor:
    """f(T) = Σ_{S⊇T} (−1)^{|S|−|T|} g(S): the adjoint (transpose) of :func:`harsanyi`."""
    x, n = _copy64(values)
    return _butterfly(x, n, upper=False, sign=-1.0)


def superset_sum(values) -> torch.Tensor:
    """f(T) = Σ_{S⊇T} g(S): the adjoint of :func:`harsanyi_inverse` (and the inverse of
    :func:`superset_moebius`)."""
    x, n = _copy64(values)
    return _butterfly(x, n, upper=False, sign=1.0)


def _flip(x: torch.Tensor) -> torch.Tensor:
    """g(T) ↦ g(N∖T): the complement of index T is 2^n − 1 − T, i.e. the reversed order."""
    return x.flip(-1)


def or_interactions(values) -> torch.Tensor:
    """OR interactions I_or(S) = −Σ_{T⊆S} (−1)^{|S|−|T|} v(N∖T) for S ≠ ∅, I_or(∅) = v(∅)
    (Li & Zhang 2023; Chen et al. 2024): minus the AND interactions of the complement game
    T ↦ v(N∖T), with ∅ holding the constant v(∅)."""
    x, n = _copy64(values)
    out = _butterfly(_flip(x), n, upper=True, sign=-1.0).neg_()
    out[..., 0] = x[..., 0]
    return out


def or_inverse(interactions) -> torch.Tensor:
    """v(T) = I_or(∅) + Σ_{S≠∅, S∩T≠∅} I_or(S), the inverse of :func:`or_interactions`.

    Uses Σ_{S≠∅, S∩T≠∅} I(S) = Σ_{S≠∅} I(S) − Σ_{∅≠S⊆N∖T} I(S), a zeta transform of the
    non-empty terms read at the complement."""
    x, n = _copy64(interactions)
    empty = x[..., :1].clone()
    x[..., 0] = 0.0
    zeta = _butterfly(x, n, upper=True, sign=1.0)
    return empty + zeta[..., -1:] - _flip(zeta)


def or_interactions_adjoint(values) -> torch.Tensor:
    """Adjoint of :func:`or_interactions`: with P zeroing entry ∅ and F the complement flip,
    I_or = −P·H·F·v + e_∅·v(∅), so the transpose is y ↦ −F·Hᵀ·P·y + e_∅·y(∅)."""
    x, n = _copy64(values)
    empty = x[..., 0].clone()
    x[..., 0] = 0.0
    out = _flip(_butterfly(x, n, upper=False, sign=-1.0)).neg()
    out[..., 0] += empty
    return out


def or_inverse_adjoint(values) -> torch.Tensor:
    """Adjoint of :func:`or_inverse`: f(∅) = Σ_T y(T) and, for S ≠ ∅,
    f(S) = Σ_T y(T) − Σ_{T⊇S} y(N∖T) = Σ_{T: T∩S≠∅} y(T)."""
    x, n = _copy64(values)
    total = x.sum(-1, keepdim=True)
    out = total - _butterfly(_flip(x).contiguous(), n, upper=False, sign=1.0)
    out[..., 0] = total[..., 0]
    return out
