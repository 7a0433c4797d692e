"""AND-OR decomposition: LP optimality, certificates, constraints, exact reconstruction, batching."""

import functools

import numpy as np
import pytest
import torch

from transferscope.interactions import andor
from transferscope.interactions import transforms as T
from transferscope.interactions.salient import salient_mask

Q = 0.04


def planted(n, and_terms, or_terms, noise=0.0, seed=0):
    """v from known AND and OR terms {subset: value} via the inverse transforms, plus noise."""
    i_and, i_or = torch.zeros(2**n, dtype=torch.float64), torch.zeros(2**n, dtype=torch.float64)
    for s, val in and_terms.items():
        i_and[T.subset_index(s)] = val
    for s, val in or_terms.items():
        i_or[T.subset_index(s)] = val
    g = torch.Generator().manual_seed(seed)
    eps = noise * torch.randn(2**n, generator=g, dtype=torch.float64)
    return T.harsanyi_inverse(i_and) + T.or_inverse(i_or) + eps, i_and, i_or


def random_planted(n, seed, k_and=5, k_or=4, noise=0.01):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(2**n - 1, generator=g)[: k_and + k_or] + 1
    vals = 3 * torch.randn(k_and + k_or, generator=g, dtype=torch.float64)
    i_and = torch.zeros(2**n, dtype=torch.float64).index_put((idx[:k_and],), vals[:k_and])
    i_or = torch.zeros(2**n, dtype=torch.float64).index_put((idx[k_and:],), vals[k_and:])
    eps = noise * torch.randn(2**n, generator=g, dtype=torch.float64)
    return T.harsanyi_inverse(i_and) + T.or_inverse(i_or) + eps


def network_game(n, seed, width=16):
    """Log-odds of a random 2-layer ReLU classifier with absent players set to the baseline 0."""
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(n, generator=g, dtype=torch.float64)
    w1 = torch.randn(n, width, generator=g, dtype=torch.float64) / n**0.5
    b1 = 0.5 * torch.randn(width, generator=g, dtype=torch.float64)
    w2 = 3 * torch.randn(width, 3, generator=g, dtype=torch.float64) / width**0.5
    logits = torch.relu((T.subset_matrix(n).double() * x) @ w1 + b1) @ w2
    return logits[:, 0] - torch.logsumexp(logits[:, 1:], -1)


@pytest.fixture(scope="module")
def mixed_games():
    """Several n ≤ 8 games with their exact LP optimum."""
    cases = [
        random_planted(5, 0),
        network_game(5, 1),
        random_planted(6, 2),
        network_game(6, 3),
        random_planted(7, 4),
        network_game(7, 5),
        random_planted(8, 6),
    ]
    return [(v, andor.decompose_lp(v, Q)[0]) for v in cases]


def check_consistent(v, res, q_thres=Q):
    """Invariants every AndOrResult must satisfy, whatever its optimality."""
    half = 0.5 * (v + res.q)
    torch.testing.assert_close(res.I_and, T.harsanyi(half + res.p), rtol=0, atol=1e-9)
    torch.testing.assert_close(res.I_or, T.or_interactions(half - res.p), rtol=0, atol=1e-9)
    rebuilt = T.harsanyi_inverse(res.I_and) + T.or_inverse(res.I_or)
    torch.testing.assert_close(rebuilt, v + res.q, rtol=0, atol=1e-10)
    bound = andor.noise_bound(v, q_thres)[..., None]
    assert (res.q.abs() <= bound * (1 + 1e-12) + 1e-15).all()
    loss = res.I_and.abs().sum(-1) + res.I_or.abs().sum(-1)
    torch.testing.assert_close(res.loss, loss, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(andor.objective(v, res.p, res.q), loss, rtol=1e-10, atol=1e-12)
    folded = T.subset_sizes(T.n_players(v)) <= 1
    assert (res.I_or[..., folded] == 0).all()
    assert (res.bound <= res.loss + 1e-12).all()


def test_gap_to_lp_within_one_percent(mixed_games):
    for v, optimum in mixed_games:
        res = andor.decompose(v, Q)
        check_consistent(v, res)
        assert res.converged.item()
        assert res.bound.item() <= optimum + 1e-9  # the dual bound is a valid certificate
        assert res.loss.item() >= optimum - 1e-9  # and the returned point is feasible
        assert (res.loss.item() - optimum) / optimum <= 1e-2


@pytest.mark.parametrize(
    "q_thres, noise, tau, atol", [(0.0, 0.0, 0.05, 0.01), (Q, 1e-3, 0.1, 0.25)]
)
def test_planted_terms_are_recovered(q_thres, noise, tau, atol):
    """Sparse planted AND and OR terms (one OR term shares a player with an AND term) are the
    salient terms. With a noise budget the optimum shrinks them and may add small terms, so
    there the planted terms must be the largest ones and the rest below 10% of the maximum."""
    and_terms = {(0, 1): 2.0, (2, 3, 4): -1.5}
    or_terms = {(5, 6): 1.8, (6, 7): 1.2, (0, 7): -1.0}
    v, i_and, i_or = planted(8, and_terms, or_terms, noise=noise, seed=1)
    res = andor.decompose(v, q_thres)
    joint = torch.cat([res.I_and, res.I_or])
    assert torch.equal(salient_mask(res.I_and, tau, reference=joint), i_and != 0)
    assert torch.equal(salient_mask(res.I_or, tau, reference=joint), i_or != 0)
    torch.testing.assert_close(res.I_and, i_and, rtol=0, atol=atol)
    torch.testing.assert_close(res.I_or, i_or, rtol=0, atol=atol)


def test_batch_equals_one_by_one_and_scale_equivariance():
    vs = torch.stack([random_planted(6, 10), network_game(6, 11), random_planted(6, 12)])
    vs = torch.stack([vs, -2 * vs])  # (2, 3, 64): leading dims are kept
    res = andor.decompose(vs, Q)
    assert res.I_and.shape == vs.shape and res.loss.shape == vs.shape[:-1]
    check_consistent(vs, res)
    # per-game arithmetic is the same, but reduction order may differ with the batch size and
    # adaptive-step decisions amplify rounding: both runs must certify the same optimum to tol
    for idx in np.ndindex(*vs.shape[:-1]):
        one = andor.decompose(vs[idx], Q)
        assert one.converged and res.converged[idx]
        assert one.bound <= res.loss[idx] + 1e-12 and res.bound[idx] <= one.loss + 1e-12
        torch.testing.assert_close(res.loss[idx], one.loss, rtol=1e-3, atol=0)
    # the LP is positively homogeneous: scaling v scales the loss
    torch.testing.assert_close(res.loss[1], 2 * andor.decompose(-vs[0], Q).loss, rtol=1e-3, atol=0)


def test_q_bound_respected_and_used_when_it_helps():
    v = random_planted(6, 20, noise=0.05)
    tight = andor.decompose(v, 0.0)
    loose = andor.decompose(v, 0.1)
    assert tight.q.abs().max() == 0
    check_consistent(v, loose, q_thres=0.1)
    assert loose.loss < tight.loss  # more noise budget, sparser explanation


def test_lp_agrees_with_a_dense_formulation():
    """decompose_lp (sparse butterfly LP) against a direct dense LP in (p, q, |I| slacks)."""
    from scipy.optimize import linprog

    v = network_game(3, 30).numpy()
    size, b = v.size, Q * abs(v[-1] - v[0])
    h, o = (
        f(torch.eye(size, dtype=torch.float64)).T.numpy() for f in (T.harsanyi, T.or_interactions)
    )
    z = np.zeros((size, size))
    eye = np.eye(size)
    # |H(½(v+q)+p)| ≤ t_a, |O(½(v+q)−p)| ≤ t_o
    a_ub = np.block(
        [
            [h, 0.5 * h, -eye, z],
            [-h, -0.5 * h, -eye, z],
            [-o, 0.5 * o, z, -eye],
            [o, -0.5 * o, z, -eye],
        ]
    )
    hv, ov = h @ v, o @ v
    b_ub = np.concatenate([-0.5 * hv, 0.5 * hv, -0.5 * ov, 0.5 * ov])
    cost = np.concatenate([np.zeros(2 * size), np.ones(2 * size)])
    bounds = [(None, None)] * size + [(-b, b)] * size + [(0, None)] * (2 * size)
    dense = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs").fun
    optimum, p, q = andor.decompose_lp(v, Q)
    assert optimum == pytest.approx(dense, rel=1e-8)
    vt = torch.from_numpy(v)
    assert andor.objective(vt, p, q).item() == pytest.approx(optimum, rel=1e-8)
    assert q.abs().max().item() <= b * (1 + 1e-9)


def test_fold_or_keeps_the_reconstruction():
    g = torch.Generator().manual_seed(40)
    i_and, i_or = torch.randn(2, 3, 32, generator=g, dtype=torch.float64)
    folded_and, folded_or = andor.fold_or(i_and, i_or)
    low = T.subset_sizes(5) <= 1
    assert (folded_or[:, low] == 0).all() and torch.equal(folded_or[:, ~low], i_or[:, ~low])
    torch.testing.assert_close(folded_and[:, low], i_and[:, low] + i_or[:, low])
    before = T.harsanyi_inverse(i_and) + T.or_inverse(i_or)
    after = T.harsanyi_inverse(folded_and) + T.or_inverse(folded_or)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_tiny_and_degenerate_games(n):
    zero = andor.decompose(torch.zeros(3, 2**n), Q)
    assert (zero.loss == 0).all() and zero.converged.all() and not zero.gap.isnan().any()
    v = network_game(n, 50) if n else torch.tensor([0.7], dtype=torch.float64)
    res = andor.decompose(v, Q)
    check_consistent(v, res)
    optimum = andor.decompose_lp(v, Q)[0]
    assert res.loss.item() == pytest.approx(optimum, rel=1e-3, abs=1e-12)


def test_max_iter_reports_not_converged():
    v = network_game(7, 60)
    res = andor.decompose(v, Q, tol=1e-9, max_iter=100)
    assert not res.converged.item() and res.iterations.item() == 100
    check_consistent(v, res)  # still a feasible, consistent decomposition


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_runs_on_device():
    vs = torch.stack([random_planted(7, 70), network_game(7, 71)])
    res = andor.decompose(vs.cuda(), Q)
    assert res.I_and.device.type == "cuda"
    torch.testing.assert_close(res.loss.cpu(), andor.decompose(vs, Q).loss, rtol=2e-3, atol=0)


@pytest.mark.parametrize("path", ["compiled", "torch"])
def test_more_iterations_never_return_a_worse_point(path):
    """The iterates oscillate (a late one can be several times worse than an early one), so each
    game returns its best scored point: the loss cannot grow with max_iter."""
    solve = functools.partial(andor._decompose, compiled=path == "compiled")
    games, step = (4, 256) if path == "compiled" else (2, 512)  # the torch loop is slower here
    vs = torch.stack([random_planted(8, 80 + i, noise=0.05) for i in range(games)])
    losses = torch.stack([solve(vs, Q, tol=1e-12, max_iter=m).loss for m in range(256, 6145, step)])
    assert (losses[1:] <= losses[:-1] * (1 + 1e-12)).all()


def test_torch_loop_agrees_with_the_compiled_loop(mixed_games):
    """The batched torch loop (the path for CUDA and other devices) runs here on the CPU: every
    game certified to the same tolerance, at the exact optimum within it."""
    for v, optimum in mixed_games[:4]:
        res = andor._decompose(v, Q, compiled=False)
        check_consistent(v, res)
        assert res.converged.item() and res.gap.item() <= 1e-3
        assert res.loss.item() == pytest.approx(optimum, rel=1e-3)
