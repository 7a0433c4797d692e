"""Fast subset transforms against their dense definitions, their inverses, adjoints and shapiq."""

import numpy as np
import pytest
import torch

from transferscope.interactions import transforms as T


def popcount(x: np.ndarray) -> np.ndarray:
    return np.array([bin(int(i)).count("1") for i in np.ravel(x)]).reshape(np.shape(x))


def dense_harsanyi(n: int) -> torch.Tensor:
    """M[S, T] = (−1)^{|S|−|T|} [T ⊆ S], straight from the definition."""
    s, t = np.meshgrid(np.arange(2**n), np.arange(2**n), indexing="ij")
    subset = (s & t) == t
    sign = (-1.0) ** (popcount(s) - popcount(t))
    return torch.from_numpy(np.where(subset, sign, 0.0))


def dense_or(n: int) -> torch.Tensor:
    """O[S, N\\T] = −(−1)^{|S|−|T|} for T ⊆ S, S ≠ ∅;  O[∅, ∅] = 1."""
    full = 2**n - 1
    out = np.zeros((2**n, 2**n))
    for s in range(1, 2**n):
        for t in range(2**n):
            if s & t == t:
                out[s, full ^ t] -= (-1.0) ** (bin(s).count("1") - bin(t).count("1"))
    out[0, 0] = 1.0
    return torch.from_numpy(out)


def games(n: int, *lead: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, 2**n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("n", range(9))
def test_transforms_equal_dense_definitions(n):
    v = games(n, 2, 3, seed=n)
    h, o = dense_harsanyi(n), dense_or(n)
    torch.testing.assert_close(T.harsanyi(v), v @ h.T, rtol=0, atol=1e-10)
    torch.testing.assert_close(T.or_interactions(v), v @ o.T, rtol=0, atol=1e-10)
    torch.testing.assert_close(T.harsanyi_inverse(v), v @ torch.linalg.inv(h).T, atol=1e-8, rtol=0)
    torch.testing.assert_close(T.or_inverse(v), v @ torch.linalg.inv(o).T, atol=1e-8, rtol=0)
    torch.testing.assert_close(T.superset_moebius(v), v @ h, rtol=0, atol=1e-10)
    torch.testing.assert_close(T.superset_sum(v), v @ torch.linalg.inv(h), atol=1e-8, rtol=0)


@pytest.mark.parametrize("n", [1, 5, 12])
def test_round_trips(n):
    v = games(n, 4, seed=1) * 10
    torch.testing.assert_close(T.harsanyi_inverse(T.harsanyi(v)), v, rtol=0, atol=1e-10)
    torch.testing.assert_close(T.harsanyi(T.harsanyi_inverse(v)), v, rtol=0, atol=1e-10)
    torch.testing.assert_close(T.or_inverse(T.or_interactions(v)), v, rtol=0, atol=1e-10)
    torch.testing.assert_close(T.or_interactions(T.or_inverse(v)), v, rtol=0, atol=1e-10)


def test_planted_single_terms():
    """v(T) = [S ⊆ T] has the one AND term S; v(T) = [S ∩ T ≠ ∅] has the one OR term S."""
    n, s = 5, T.subset_index([1, 3, 4])
    idx = torch.arange(2**n)
    and_game = ((idx & s) == s).double()
    or_game = ((idx & s) != 0).double()
    expected = torch.zeros(2**n, dtype=torch.float64)
    expected[s] = 1.0
    torch.testing.assert_close(T.harsanyi(and_game), expected, rtol=0, atol=0)
    torch.testing.assert_close(T.or_interactions(or_game), expected, rtol=0, atol=0)


def test_batch_dims_dtype_and_no_mutation():
    v = games(6, 2, 3, 4, seed=2).float()
    before = v.clone()
    for f in (T.harsanyi, T.harsanyi_inverse, T.or_interactions, T.or_inverse, T.superset_sum):
        out = f(v)
        assert out.shape == v.shape and out.dtype == torch.float64 and out.device == v.device
        looped = torch.stack([f(g) for g in v.reshape(-1, 64)]).reshape(v.shape)
        torch.testing.assert_close(out, looped, rtol=0, atol=0)
    assert torch.equal(v, before)
    # a non-contiguous view is read correctly
    w = games(6, 64, seed=3).T.contiguous().T  # (64, 64) transposed storage
    torch.testing.assert_close(T.harsanyi(w), T.harsanyi(w.contiguous()), rtol=0, atol=0)


@pytest.mark.parametrize("n", [0, 3, 9])
def test_adjoints(n):
    x, y = games(n, 5, seed=4), games(n, 5, seed=5)
    pairs = [
        (T.harsanyi, T.superset_moebius),
        (T.harsanyi_inverse, T.superset_sum),
        (T.or_interactions, T.or_interactions_adjoint),
        (T.or_inverse, T.or_inverse_adjoint),
    ]
    for forward, adjoint in pairs:
        lhs = (forward(x) * y).sum(-1)
        rhs = (x * adjoint(y)).sum(-1)
        torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("n", [3, 7, 10])
def test_harsanyi_equals_shapiq_moebius(n):
    from shapiq import ExactComputer

    values = games(n, seed=n).numpy()

    def game(coalitions: np.ndarray) -> np.ndarray:
        idx = (coalitions.astype(np.int64) << np.arange(n)).sum(axis=1)
        return values[idx]

    moebius = ExactComputer(game, n_players=n)("Moebius")
    ours = T.harsanyi(torch.from_numpy(values))
    assert len(moebius.dict_values) == 2**n
    for coalition, value in moebius.dict_values.items():
        assert ours[T.subset_index(coalition)].item() == pytest.approx(value, abs=1e-9)


def test_subset_helpers():
    n = 7
    sizes, members = T.subset_sizes(n), T.subset_matrix(n)
    assert sizes.dtype == torch.long and members.dtype == torch.bool
    assert members.shape == (2**n, n)
    assert sizes.tolist() == [bin(i).count("1") for i in range(2**n)]
    for idx in (0, 1, 37, 2**n - 1):
        players = [i for i in range(n) if idx >> i & 1]
        assert members[idx].nonzero().flatten().tolist() == players
        assert T.subset_index(players) == idx
    assert T.subset_index([]) == 0 and T.subset_index((2, 2, 0)) == 5
    with pytest.raises(ValueError):
        T.subset_index([-1])


@pytest.mark.parametrize("shape", [(6,), (3, 12), (0,), ()])
def test_bad_shapes_raise_naming_the_shape(shape):
    v = torch.zeros(shape)
    with pytest.raises(ValueError, match=str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")):
        T.harsanyi(v)
    with pytest.raises(ValueError):
        T.n_players(v)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    v = games(10, 8, seed=6)
    out = T.or_interactions(v.cuda())
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), T.or_interactions(v), rtol=0, atol=1e-10)
