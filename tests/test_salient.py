"""Salient masks and reconstruction errors against brute-force definitions."""

import torch

from transferscope.interactions import andor
from transferscope.interactions import transforms as T
from transferscope.interactions.salient import reconstruction_error, salient_mask


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def brute_game(n, i_and, i_or):
    """v(T) = Σ_{S⊆T} I_and(S) + I_or(∅) + Σ_{S∩T≠∅} I_or(S), one subset at a time."""
    out = torch.zeros(2**n, dtype=torch.float64)
    for t in range(2**n):
        out[t] = i_or[0] + sum(
            i_and[s] * (s & t == s) + i_or[s] * (s & t != 0) for s in range(2**n)
        )
    return out


def test_relative_mask_matches_per_game_loop():
    interactions = rand(4, 3, 32, seed=1) ** 3  # heavy tails: few large terms
    mask = salient_mask(interactions, tau=0.05)
    assert mask.dtype == torch.bool and mask.shape == interactions.shape
    for idx in range(4):
        for jdx in range(3):
            game = interactions[idx, jdx]
            threshold = 0.05 * max(abs(x) for x in game.tolist())
            expected = [abs(x) > threshold for x in game.tolist()]
            assert mask[idx, jdx].tolist() == expected
    # relative masks ignore the scale of the game
    assert torch.equal(salient_mask(-7.0 * interactions), mask)


def test_absolute_mask_and_shared_reference():
    i_and, i_or = rand(2, 16, seed=2), 10 * rand(2, 16, seed=3)
    assert torch.equal(salient_mask(i_and, 0.5, relative=False), i_and.abs() > 0.5)
    joint = torch.cat([i_and, i_or], -1)
    shared = salient_mask(i_and, 0.05, reference=joint)
    assert torch.equal(shared, i_and.abs() > 0.05 * joint.abs().amax(-1, keepdim=True))
    assert shared.sum() <= salient_mask(i_and, 0.05).sum()  # a larger max can only remove terms


def test_zero_game_has_no_salient_terms_and_no_nan():
    zero = torch.zeros(3, 8)
    assert not salient_mask(zero).any()
    salient, full = reconstruction_error(zero, zero, zero, zero.bool(), zero.bool())
    assert torch.equal(salient, torch.zeros(3, dtype=torch.float64)) and not full.isnan().any()


def test_reconstruction_error_against_brute_force():
    n = 5
    i_and, i_or = rand(32, seed=4), rand(32, seed=5)
    v = brute_game(n, i_and, i_or)
    torch.testing.assert_close(T.harsanyi_inverse(i_and) + T.or_inverse(i_or), v)
    mask_and, mask_or = i_and.abs() > 0.8, i_or.abs() > 0.8
    kept = brute_game(n, i_and * mask_and, i_or * mask_or)
    expected = (v - kept).norm() / (v - v[0]).norm()
    salient, full = reconstruction_error(v, i_and, i_or, mask_and, mask_or)
    torch.testing.assert_close(salient, expected, rtol=1e-12, atol=0)
    assert full < 1e-12
    everything = reconstruction_error(v, i_and, i_or, mask_and | True, mask_or | True)[0]
    assert everything < 1e-12
    nothing = reconstruction_error(v, i_and, i_or, mask_and & False, mask_or & False)[0]
    torch.testing.assert_close(nothing, v.norm() / (v - v[0]).norm())
    # a constant shift held by a salient I(∅) changes no error
    with_empty = mask_and.clone()
    with_empty[0] = True
    shifted_and = i_and.clone()
    shifted_and[0] += 100.0
    base = reconstruction_error(v, i_and, i_or, with_empty, mask_or)
    moved = reconstruction_error(v + 100.0, shifted_and, i_or, with_empty, mask_or)
    torch.testing.assert_close(moved[0], base[0])


def test_salient_terms_of_a_decomposition_explain_a_sparse_game():
    g = torch.Generator().manual_seed(6)
    n = 6
    i_and = torch.zeros(2, 2**n, dtype=torch.float64)
    i_or = torch.zeros_like(i_and)
    i_and[:, [3, 12, 50]] = torch.tensor([2.0, -1.5, 1.0], dtype=torch.float64)
    i_or[:, [10, 48]] = torch.tensor([1.8, -1.2], dtype=torch.float64)
    v = T.harsanyi_inverse(i_and) + T.or_inverse(i_or)
    v = v + 1e-3 * torch.randn(v.shape, generator=g, dtype=torch.float64)
    res = andor.decompose(v, 0.04)
    joint = torch.cat([res.I_and, res.I_or], -1)
    mask_and = salient_mask(res.I_and, reference=joint)
    mask_or = salient_mask(res.I_or, reference=joint)
    salient, full = reconstruction_error(v, res.I_and, res.I_or, mask_and, mask_or, q=res.q)
    assert (full < 1e-12).all()  # all interactions rebuild v + q exactly
    assert (salient < 0.05).all()  # five salient terms explain the game
    assert ((mask_and.sum(-1) + mask_or.sum(-1)) <= 8).all()
