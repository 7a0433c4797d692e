"""Linear CKA: invariances, brute-force formulas, torch_cka agreement, feature extraction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch_cka import CKA as TorchCKA

from transferscope.analyses.cka import (
    MinibatchCKA,
    _ratio,
    cka_matrix,
    layer_features,
    linear_cka,
    model_cka_matrix,
)
from transferscope.analyses.figures import plot_cka_heatmap

METHODS = ["gram", "features"]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _orthogonal(p: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return q


def _related(n=60, p=8, q=5, seed=0):
    rng = _rng(seed)
    x = rng.standard_normal((n, p))
    y = np.tanh(x @ rng.standard_normal((p, q))) + 0.5 * rng.standard_normal((n, q))
    return x, y


def _hsic_brute(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    """Textbook HSIC with explicit H and ones vectors (Kornblith 2019; Song 2012)."""
    n = x.shape[0]
    k, l_ = x @ x.T, y @ y.T
    if not debiased:
        h = np.eye(n) - np.ones((n, n)) / n
        return np.trace(k @ h @ l_ @ h) / (n - 1) ** 2
    k, l_ = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    one = np.ones(n)
    value = np.trace(k @ l_) + (one @ k @ one) * (one @ l_ @ one) / ((n - 1) * (n - 2))
    value -= 2.0 / (n - 2) * (one @ k @ l_ @ one)
    return value / (n * (n - 3))


def _brute_force(x: np.ndarray, y: np.ndarray, debiased: bool) -> float:
    return _hsic_brute(x, y, debiased) / np.sqrt(
        _hsic_brute(x, x, debiased) * _hsic_brute(y, y, debiased)
    )


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_self_similarity_is_one(debiased, method):
    x, _ = _related()
    assert linear_cka(x, x, debiased, method) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_matches_brute_force_formulas(debiased, method):
    x, y = _related(n=40)
    assert linear_cka(x, y, debiased, method) == pytest.approx(
        _brute_force(x, y, debiased), rel=1e-9
    )


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_invariant_to_orthogonal_maps_scaling_and_shifts(debiased, method):
    x, y = _related()
    rng = _rng(1)
    reference = linear_cka(x, y, debiased, method)
    assert abs(reference) > 0.1  # the invariances are not trivially about zeros
    transformed = [
        (x @ _orthogonal(x.shape[1], rng), y),
        (x, y @ _orthogonal(y.shape[1], rng)),
        (7.5 * x, y),
        (x, 0.01 * y),
        (x + rng.standard_normal(x.shape[1]), y - 3.0),
    ]
    for xt, yt in transformed:
        assert linear_cka(xt, yt, debiased, method) == pytest.approx(reference, rel=1e-9)


def test_not_invariant_to_non_isotropic_scaling():
    x, y = _related()
    stretched = x * np.array([10.0] + [1.0] * (x.shape[1] - 1))
    assert abs(linear_cka(stretched, y) - linear_cka(x, y)) > 1e-3


def test_debiased_is_near_zero_for_independent_inputs_and_biased_is_not():
    rng = _rng(2)
    x, y = rng.standard_normal((500, 50)), rng.standard_normal((500, 50))
    biased, debiased = linear_cka(x, y), linear_cka(x, y, debiased=True)
    assert biased > 0.05, biased
    assert abs(debiased) < 0.02, debiased
    assert abs(debiased) < biased / 4


def test_accepts_torch_and_numpy_equally():
    x, y = _related()
    as_torch = linear_cka(torch.from_numpy(x).float(), torch.from_numpy(y).float(), True)
    assert as_torch == pytest.approx(linear_cka(x, y, True), rel=1e-5)


@pytest.mark.parametrize("debiased", [False, True])
def test_constant_features_give_zero_not_nan(debiased):
    x, _ = _related()
    constant = np.ones((x.shape[0], 3))
    for method in METHODS:
        assert linear_cka(constant, x, debiased, method) == 0.0
    feats = {"const": torch.ones(x.shape[0], 3), "x": torch.from_numpy(x)}
    matrix = cka_matrix(feats, feats, debiased)
    assert np.isfinite(matrix).all() and matrix[0, 0] == 0.0


def test_negative_self_hsic_from_round_off_is_clamped():
    value = _ratio(torch.tensor(1e-18), torch.tensor(-1e-20), torch.tensor(2.0))
    assert float(value) == 0.0


def test_too_few_samples_for_debiased_is_an_error():
    x, y = _related(n=3)
    with pytest.raises(ValueError, match="at least 4 samples"):
        linear_cka(x, y, debiased=True)
    with pytest.raises(ValueError, match="at least 4 samples"):
        MinibatchCKA().update([torch.randn(3, 2)])
    assert np.isfinite(linear_cka(x, y))  # the biased estimator is defined


def test_sample_count_mismatch_and_bad_method_are_errors():
    x, y = _related()
    with pytest.raises(ValueError, match="same inputs"):
        linear_cka(x, y[:-1])
    with pytest.raises(ValueError, match="method"):
        linear_cka(x, y, method="fast")


def _features(n=64, seed=0):
    x, y = _related(n=n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    return {
        "a": torch.from_numpy(x),
        "b": torch.from_numpy(y),
        "c": torch.randn(n, 2, 3, generator=g, dtype=torch.float64),
    }


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_matrix_equals_pairwise_linear_cka(debiased):
    fa, fb = _features(seed=0), _features(seed=1)
    matrix = cka_matrix(fa, fb, debiased)
    expected = [[linear_cka(fa[i], fb[j], debiased) for j in fb] for i in fa]
    np.testing.assert_allclose(matrix, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_float32_features_with_large_means_stay_accurate(debiased):
    fa, fb = _features(seed=0), _features(seed=1)
    # ReLU-like features far from zero: uncentred float32 Grams would lose most digits
    shifted = {k: (v + 1e3 * torch.rand(v.shape[1:])).float() for k, v in fa.items()}
    matrix = cka_matrix(shifted, fb, debiased)
    expected = [[linear_cka(fa[i], fb[j], debiased) for j in fb] for i in fa]
    np.testing.assert_allclose(matrix, expected, atol=1e-5)


def test_minibatch_equals_full_debiased_on_one_batch():
    fa, fb = _features(seed=0), _features(seed=1)
    metric = MinibatchCKA()
    metric.update(fa, fb)
    expected = [[linear_cka(fa[i], fb[j], debiased=True) for j in fb] for i in fa]
    np.testing.assert_allclose(metric.result(), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(
        cka_matrix(fa, fb, True, batch_size=64), expected, rtol=1e-9, atol=1e-12
    )


def test_minibatch_is_mean_hsic_over_batches():
    fa, fb = _features(n=40, seed=0), _features(n=40, seed=1)
    x, y = fa["a"].numpy(), fb["b"].numpy()
    halves = [slice(0, 20), slice(20, 40)]
    metric = MinibatchCKA()
    for s in halves:
        metric.update([fa["a"][s]], [fb["b"][s]])
    cross, self_x, self_y = (
        sum(_hsic_brute(u[s], v[s], True) for s in halves) for u, v in ((x, y), (x, x), (y, y))
    )
    assert metric.result()[0, 0] == pytest.approx(cross / np.sqrt(self_x * self_y), rel=1e-9)


def test_minibatch_tail_shorter_than_four_is_merged():
    fa = _features(n=66, seed=0)
    matrix = cka_matrix(fa, fa, True, batch_size=32)  # batches 32 and 34, not 32, 32, 2
    assert np.isfinite(matrix).all()
    np.testing.assert_allclose(np.diag(matrix), 1.0)


def test_cka_matrix_rejects_different_architectures_naming_both():
    fa = _features()
    fb = dict(fa)
    fb["b"] = torch.randn(64, 9)
    with pytest.raises(ValueError, match="P-T.*RI-T.*feature shapes"):
        cka_matrix(fa, fb, labels=("P-T", "RI-T"))
    with pytest.raises(ValueError, match="P-T.*RI-T.*different layers"):
        cka_matrix(fa, {"x": fa["a"]}, labels=("P-T", "RI-T"))
    assert cka_matrix(fa, fb, same_architecture=False).shape == (3, 3)
    with pytest.raises(ValueError, match="only for debiased"):
        cka_matrix(fa, fa, False, batch_size=16)


def _mlp(seed: int, width: int = 16) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 8), nn.Tanh())


def _cnn(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)
    )


def test_torch_cka_agrees_on_the_same_models_and_batches():
    inputs = torch.randn(128, 6, generator=torch.Generator().manual_seed(3))
    loader = DataLoader(TensorDataset(inputs), batch_size=32)
    layers = ["0", "1", "2", "3"]
    model_a, model_b = _mlp(0), _mlp(1)
    reference = TorchCKA(model_a, model_b, "a", "b", layers, layers)
    with pytest.warns(UserWarning):  # torch_cka warns that one loader serves both models
        reference.compare(loader)
    ours = model_cka_matrix(
        _mlp(0), _mlp(1), inputs, layers, debiased=True, batch_size=32, minibatch=True
    )
    np.testing.assert_allclose(ours, reference.hsic_matrix.numpy(), atol=2e-4)


def test_torch_cka_hsic_agrees_on_one_batch():
    x, y = _related(n=50)
    helper = TorchCKA.__new__(TorchCKA)  # only _HSIC is used; it needs .device
    helper.device = "cpu"

    def gram(z):
        k = torch.from_numpy(z).float()
        k = k @ k.T
        return k.fill_diagonal_(0.0)

    k, l_ = gram(x), gram(y)
    expected = helper._HSIC(k, l_) / np.sqrt(helper._HSIC(k, k) * helper._HSIC(l_, l_))
    assert linear_cka(x, y, debiased=True) == pytest.approx(expected, abs=1e-4)


def test_layer_features_shapes_values_and_mode_restored():
    model = _cnn(0)
    model.train()
    x = torch.randn(10, 1, 4, 4)
    flat = layer_features(model, x, ["0", "4"], reduce="flatten", batch_size=3)
    pooled = layer_features(model, x, ["0"], reduce="pool", batch_size=4)
    assert flat["0"].shape == (10, 4 * 4 * 4) and flat["4"].shape == (10, 3)
    assert pooled["0"].shape == (10, 4)
    torch.testing.assert_close(pooled["0"], flat["0"].reshape(10, 4, 16).mean(2))
    torch.testing.assert_close(flat["0"], model[0](x).detach().reshape(10, -1))
    with torch.no_grad():
        model.eval()
        torch.testing.assert_close(flat["4"], model(x))  # eval(): BatchNorm uses running stats
    model.train()
    again = layer_features(model, list(x.split(5)), ["4"])
    torch.testing.assert_close(again["4"], flat["4"])
    assert model.training and all(m.training for m in model.modules())


def test_layer_features_survive_in_place_activations():
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True))
    x = torch.randn(20, 6)
    feats = layer_features(model, x, ["0"])
    torch.testing.assert_close(feats["0"], model[0](x).detach())
    assert (feats["0"] < 0).any()  # not overwritten by the ReLU that runs after the hook


def test_layer_features_errors():
    model = _mlp(0)
    with pytest.raises(ValueError, match="no submodules.*'nope'"):
        layer_features(model, torch.randn(4, 6), ["0", "nope"])
    with pytest.raises(ValueError, match="empty"):
        layer_features(model, torch.randn(4, 6), [])
    shared = nn.Linear(6, 6)
    twice = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(ValueError, match="ran 2 times"):
        layer_features(twice, torch.randn(4, 6), ["0"])


def test_model_cka_rejects_different_architectures_naming_both():
    with pytest.raises(ValueError, match="P-T and RI-T have different architectures"):
        model_cka_matrix(
            _mlp(0), _mlp(1, width=12), torch.randn(8, 6), ["0"], labels=("P-T", "RI-T")
        )


def test_model_cka_of_a_model_with_itself_has_unit_diagonal():
    matrix = model_cka_matrix(_cnn(0), _cnn(0), torch.randn(32, 1, 4, 4), ["0", "2", "4"])
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)


def test_cka_heatmap_writes_png_atomically(tmp_path):
    path = tmp_path / "fig" / "cka.png"
    plot_cka_heatmap(np.eye(3), path, row_labels=list("abc"), col_labels=list("abc"))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["cka.png"]
    with pytest.raises(ValueError, match="does not match"):
        plot_cka_heatmap(np.eye(3), path, row_labels=["a"], col_labels=list("abc"))
