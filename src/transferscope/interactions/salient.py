"""Salient interactions and how well they alone rebuild the game.

Salience (SJTU XAI lab, interaction-sparsity ``demo/count_salient_concepts.py``;
docs/references.md §1): S is salient when |I(S)| > τ·max_S' |I(S')|, the maximum taken per
game (per sample and model), τ = 0.05 in the lab code. For AND-OR decompositions the maximum is
usually taken over the AND and OR terms together (pass both as ``reference``).
"""

from __future__ import annotations

import torch

from transferscope.interactions import transforms as T

__all__ = ["reconstruction_error", "salient_mask"]


def salient_mask(
    values: torch.Tensor,
    tau: float = 0.05,
    reference: torch.Tensor | None = None,
    *,
    relative: bool = True,
) -> torch.Tensor:
    """Bool mask of the salient entries of interactions ``values`` (…, 2^n).

    relative (default): |I(S)| > tau·max |reference| over the last dimension of ``reference``
    (``values`` itself when None; its leading dims must broadcast against ``values``'), so a game
    with all terms 0 has none. relative=False: |I(S)| > tau, an absolute threshold.
    The mask covers every S, ∅ included; drop ∅ where only S ≠ ∅ count.
    """
    values = torch.as_tensor(values)
    if not relative:
        return values.abs() > tau
    reference = values if reference is None else torch.as_tensor(reference)
    return values.abs() > tau * reference.abs().amax(-1, keepdim=True)


def reconstruction_error(
    v: torch.Tensor,
    i_and: torch.Tensor,
    i_or: torch.Tensor,
    mask_and: torch.Tensor,
    mask_or: torch.Tensor,
    q: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relative errors of rebuilding v (…, 2^n) from interactions, returned as (salient, full):

        salient = ‖v + q − v_S‖₂ / ‖v − v(∅)‖₂,   v_S(T) = Σ_{S⊆T} m_and(S)·I_and(S)
                                                            + Σ_{S∩T≠∅} m_or(S)·I_or(S) (+ I_or(∅)
                                                              when kept),
        full    = the same with every term kept (≈ 0 for an exact decomposition of v + q).

    q defaults to 0. The denominator is the game's variation over the constant v(∅), so a
    constant shift held by a kept I(∅) changes nothing. A constant game (denominator 0) gets
    0 when the terms rebuild it exactly and inf otherwise, never NaN. Float64, shape: leading dims.
    """
    v = torch.as_tensor(v, dtype=torch.float64)
    target = v if q is None else v + torch.as_tensor(q, dtype=torch.float64)
    i_and = torch.as_tensor(i_and, dtype=torch.float64)
    i_or = torch.as_tensor(i_or, dtype=torch.float64)
    kept = T.harsanyi_inverse(i_and * mask_and) + T.or_inverse(i_or * mask_or)
    every = T.harsanyi_inverse(i_and) + T.or_inverse(i_or)
    scale = (v - v[..., :1]).norm(dim=-1)

    def relative(residual: torch.Tensor) -> torch.Tensor:
        err = residual.norm(dim=-1)
        fallback = torch.where(err > 0, torch.inf, 0.0).to(err)
        return torch.where(scale > 0, err / scale.where(scale > 0, 1.0), fallback)

    return relative(target - kept), relative(target - every)
