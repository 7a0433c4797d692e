"""Weight-space analyses: interpolation barriers, module criticality, distances, spectra."""

from __future__ import annotations

import functools

import numpy as np
import polars as pl
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from transferscope.analyses.criticality import module_criticality, module_names
from transferscope.analyses.distances import module_distances
from transferscope.analyses.figures import (
    plot_barrier_curves,
    plot_criticality_bars,
    plot_criticality_heatmaps,
    plot_spectra,
)
from transferscope.analyses.interpolation import (
    barrier_curve,
    barrier_height,
    interpolate_state,
    recompute_bn,
)
from transferscope.analyses.spectra import weight_spectra

X = torch.randn(48, 1, 4, 4, generator=torch.Generator().manual_seed(0))
Y = torch.randint(0, 3, (48,), generator=torch.Generator().manual_seed(1))
LOADER = [(X[i : i + 16], Y[i : i + 16]) for i in range(0, 48, 16)]


def _cnn(seed: int = 0, width: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(width * 16, 3),
    )


def _trained(seed: int) -> nn.Sequential:
    model = _cnn(seed)
    model.load_state_dict(_trained_state(seed))
    return model


@functools.cache
def _trained_state(seed: int) -> dict[str, torch.Tensor]:
    """A few SGD steps so running statistics and weights move away from initialisation."""
    model = _cnn(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for x, y in LOADER * 3:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return {k: v.clone() for k, v in model.state_dict().items()}


def _evaluate(model: nn.Module) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        logits = model(X)
    return {
        "loss": float(F.cross_entropy(logits, Y)),
        "accuracy": float((logits.argmax(1) == Y).float().mean()),
    }


# interpolation


def test_interpolation_endpoints_are_exact_and_midpoint_is_the_mean():
    sd1, sd2 = _trained(0).state_dict(), _trained(1).state_dict()
    for key, value in interpolate_state(sd1, sd2, 0.0).items():
        assert torch.equal(value, sd1[key])
    for key, value in interpolate_state(sd1, sd2, 1.0).items():
        expected = sd2[key] if sd1[key].is_floating_point() else sd1[key]
        assert torch.equal(value, expected)
    mid = interpolate_state(sd1, sd2, 0.5)
    torch.testing.assert_close(mid["0.weight"], (sd1["0.weight"] + sd2["0.weight"]) / 2)
    assert mid["1.num_batches_tracked"].dtype == torch.long
    assert torch.equal(mid["1.num_batches_tracked"], sd1["1.num_batches_tracked"])


def test_interpolation_rejects_different_architectures_naming_both():
    sd1, sd2 = _cnn(0).state_dict(), _cnn(0, width=5).state_dict()
    with pytest.raises(ValueError, match="P-T.*RI-T.*different architectures.*shape"):
        interpolate_state(sd1, sd2, 0.5, labels=("P-T", "RI-T"))
    sd3 = dict(sd1)
    sd3["extra"] = torch.zeros(1)
    with pytest.raises(ValueError, match="only in state 2 \\(extra\\)"):
        interpolate_state(sd1, sd3, 0.5)


def test_barrier_curve_reproduces_the_endpoint_losses():
    m1, m2 = _trained(0), _trained(1)
    rows = barrier_curve(_cnn, m1.state_dict(), m2.state_dict(), _evaluate, [0.0, 0.5, 1.0])
    assert [r["lambda"] for r in rows] == [0.0, 0.5, 1.0]
    assert rows[0]["loss"] == _evaluate(m1)["loss"]
    assert rows[-1]["loss"] == _evaluate(m2)["loss"]
    assert rows[-1]["accuracy"] == _evaluate(m2)["accuracy"]
    assert not any(r["bn_recomputed"] for r in rows)


def test_barrier_of_identical_models_is_zero():
    sd = _trained(0).state_dict()
    lambdas = np.linspace(0, 1, 5)
    for loader in (None, LOADER):
        rows = barrier_curve(_cnn, sd, sd, _evaluate, lambdas, bn_loader=loader)
        assert barrier_height([r["loss"] for r in rows], lambdas) == 0.0
        assert all(r["bn_recomputed"] == (loader is not None) for r in rows)


def test_bn_recomputation_needs_batchnorm_to_be_reported():
    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    sd = mlp().state_dict()
    rows = barrier_curve(mlp, sd, sd, _evaluate, [0.0, 1.0], bn_loader=LOADER)
    assert not any(r["bn_recomputed"] for r in rows)


def test_recompute_bn_gives_the_data_mean_and_restores_the_model():
    model = _trained(0)
    model.train()
    model[1].momentum = 0.3
    assert recompute_bn(model, LOADER) == 1
    with torch.no_grad():
        conv_out = model[0](X)
    torch.testing.assert_close(model[1].running_mean, conv_out.mean(dim=(0, 2, 3)))
    assert model[1].num_batches_tracked == len(LOADER)
    assert model[1].momentum == 0.3 and all(m.training for m in model.modules())
    with pytest.raises(ValueError, match="no batches"):
        recompute_bn(model, [])


def test_barrier_height_ignores_linear_trends_and_needs_endpoints():
    lambdas = np.linspace(0, 1, 11)
    bump = np.sin(np.pi * lambdas) ** 2
    height = barrier_height(bump, lambdas)
    assert height == pytest.approx(bump.max())
    for a, b in [(2.0, 0.0), (0.5, -3.0), (-1.0, 4.0)]:
        assert barrier_height(bump + a + b * lambdas, lambdas) == pytest.approx(height)
    assert barrier_height(-bump, lambdas) == 0.0  # a convex path has no barrier
    with pytest.raises(ValueError, match="endpoints 0 and 1"):
        barrier_height(bump[1:], lambdas[1:])
    with pytest.raises(ValueError, match="equal-length"):
        barrier_height(bump, lambdas[1:])


# criticality


def _criticality(model, init, final, prefix, **kwargs):
    grid = {"alphas": [0.0, 0.5, 1.0], "sigmas": [1e-16, 0.1, 1.0], "draws": 2}
    grid.update(kwargs)
    return module_criticality(model, init, final, prefix, lambda m: _evaluate(m)["loss"], **grid)


def test_unchanged_module_has_zero_criticality_and_changed_one_positive():
    init = _cnn(0).state_dict()
    trained = _trained(0)
    final = {k: v.clone() for k, v in trained.state_dict().items()}
    final["4.weight"], final["4.bias"] = init["4.weight"].clone(), init["4.bias"].clone()
    model = _cnn(5)
    unchanged = _criticality(model, init, final, "4")
    assert unchanged.criticality == 0.0 and unchanged.distance_sq == 0.0
    changed = _criticality(model, init, final, "0")
    assert changed.distance_sq > 0 and changed.criticality > 0


def test_criticality_grid_semantics_and_model_restored():
    init, trained = _cnn(0).state_dict(), _trained(0)
    final = trained.state_dict()
    model = _cnn(7)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = _criticality(model, init, final, "0", generator=torch.Generator().manual_seed(1))
    # σ ≈ 0: α = 1 is the final model, α = 0 the model with conv "0" rewound to init
    assert result.losses[-1, 0] == pytest.approx(result.final_loss, rel=1e-6)
    rewound = _cnn(9)
    rewound.load_state_dict({**final, "0.weight": init["0.weight"], "0.bias": init["0.bias"]})
    assert result.losses[0, 0] == pytest.approx(_evaluate(rewound)["loss"], rel=1e-6)
    # μ is the smallest α²‖Δ‖²/σ² among points meeting the loss threshold
    feasible = [
        a**2 * result.distance_sq / s**2
        for i, a in enumerate(result.alphas)
        for j, s in enumerate(result.sigmas)
        if result.losses[i, j] <= result.threshold
    ]
    assert result.criticality == min(feasible)
    assert result.threshold == pytest.approx(1.01 * result.final_loss)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
    assert all(m.training for m in model.modules())
    again = _criticality(model, init, final, "0", generator=torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(again.losses, result.losses)
    frame = result.grid_frame()
    assert frame.height == 9 and frame["feasible"].to_list() == result.feasible.ravel().tolist()


def test_criticality_infeasible_is_inf_and_bad_inputs_are_errors():
    init, final = _cnn(0).state_dict(), _trained(0).state_dict()
    result = _criticality(_cnn(0), init, final, "0", eps_rel=-0.5)
    assert result.criticality == np.inf and result.alpha is None
    with pytest.raises(ValueError, match="no parameters under module 'nope'"):
        _criticality(_cnn(0), init, final, "nope")
    with pytest.raises(ValueError, match="sigmas must be > 0"):
        _criticality(_cnn(0), init, final, "0", sigmas=[0.0, 1.0])
    with pytest.raises(ValueError, match="initial state and final state"):
        _criticality(_cnn(0), _cnn(0, width=5).state_dict(), final, "0")


def _quadratic_criticality(alphas, sigmas):
    """One weight moved from 0 to 1; loss (w − 1)² + 1, so the constraint (threshold 1.01) is
    E[(α + σu − 1)²] ≤ 0.01 ≈ (1 − α)² + σ² ≤ 0.01: known feasible points."""
    model = nn.Linear(1, 1, bias=False)
    init, final = {"weight": torch.zeros(1, 1)}, {"weight": torch.ones(1, 1)}
    return module_criticality(
        model,
        init,
        final,
        "weight",
        lambda m: float((m.weight.detach() - 1.0).pow(2).sum() + 1.0),
        alphas=alphas,
        sigmas=sigmas,
        draws=10,
        generator=torch.Generator().manual_seed(0),
    )


def test_criticality_on_the_grid_edge_is_a_bound_not_a_value():
    # bracketed: α = 0.95 passes at σ = 0.03, not at σ = 1; α = 1 is not needed
    inside = _quadratic_criticality([0.0, 0.5, 0.95, 1.0], [0.001, 0.03, 1.0])
    assert (inside.alpha, inside.sigma) == (0.95, 0.03) and not inside.on_grid_edge
    row = inside.summary()
    assert row["criticality"] == pytest.approx(0.95**2 / 0.03**2)
    assert row["criticality_upper_bound"] is None and row["grid_edge"] is None
    assert row["grid"] == "4 α in [0, 1] × 3 σ in [0.001, 1], 10 draws"

    # the same module on a σ range that stops at 0.03: met at the grid's largest σ
    capped = _quadratic_criticality([0.0, 0.5, 0.95, 1.0], [0.001, 0.01, 0.03])
    assert capped.sigma == 0.03 and capped.on_grid_edge and "largest σ" in capped.edge
    row = capped.summary()
    assert row["criticality"] is None and row["on_grid_edge"]
    assert row["criticality_upper_bound"] == pytest.approx(0.95**2 / 0.03**2)

    # without α = 0.95 on the grid, only the final weights pass: met at the largest α
    unrewound = _quadratic_criticality([0.0, 0.5, 1.0], [0.001, 0.03, 1.0])
    assert (unrewound.alpha, unrewound.sigma) == (1.0, 0.03)
    assert unrewound.on_grid_edge and "largest α" in unrewound.edge
    assert unrewound.summary()["criticality"] is None

    # only the smallest σ passes at the argmin α
    floor = _quadratic_criticality([0.0, 0.5, 0.95, 1.0], [0.03, 0.5, 1.0])
    assert floor.sigma == 0.03 and "smallest σ" in floor.edge

    # μ = 0 (α = 0 passes) and μ = inf (nothing passes) are not edge values
    init, final = _cnn(0).state_dict(), _trained(0).state_dict()
    assert not _criticality(_cnn(0), init, final, "0", eps_rel=-0.5).on_grid_edge
    lenient = _criticality(_cnn(0), init, final, "0", eps_rel=100.0)
    assert lenient.criticality == 0.0 and not lenient.on_grid_edge


def test_module_names_by_depth():
    model = nn.Sequential(
        nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    )
    assert module_names(model, 1) == ["0", "1"]
    assert module_names(model, 2) == ["0", "1.0", "1.2"]
    with pytest.raises(ValueError, match="depth"):
        module_names(model, 0)


# distances


def test_module_distances_match_brute_force_norms():
    a, b = _trained(0), _trained(1)
    frame = module_distances(a, b)  # modules: parameters only
    assert frame["module"].to_list() == ["0", "1", "4"]
    for module in ["0", "1", "4"]:
        diff = torch.cat(
            [
                (pa - pb).detach().flatten()
                for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters())
                if n.startswith(module + ".")
            ]
        )
        row = frame.filter(pl.col("module") == module)
        assert row["distance"].item() == pytest.approx(float(diff.norm()), rel=1e-6)
        assert row["numel"].item() == diff.numel()
    assert module_distances(a, a)["distance"].to_list() == [0.0, 0.0, 0.0]
    with_buffers = module_distances(a.state_dict(), b.state_dict())
    bn = with_buffers.filter(pl.col("module") == "1")["distance"].item()
    assert bn > frame.filter(pl.col("module") == "1")["distance"].item()  # running stats count
    assert module_distances(a, b, depth=1).height == 3


def test_module_distances_reject_different_architectures_naming_both():
    with pytest.raises(ValueError, match="P and P-T have different architectures"):
        module_distances(_cnn(0), _cnn(0, width=5), labels=("P", "P-T"))


# spectra


def test_spectra_reshape_conv_and_skip_vectors():
    model = _trained(0)
    frame = weight_spectra(model)
    assert set(frame["parameter"]) == {"0.weight", "4.weight"}  # biases and BN scales skipped
    conv = frame.filter(pl.col("parameter") == "0.weight")
    assert conv.height == min(4, 1 * 3 * 3) and conv["module"].unique().to_list() == ["0"]
    for name, weight in [("0.weight", model[0].weight), ("4.weight", model[4].weight)]:
        sv = frame.filter(pl.col("parameter") == name)["singular_value"].to_numpy()
        assert np.all(np.diff(sv) <= 0)
        # Σσ² = ‖W‖²_F, an identity independent of the SVD routine
        assert np.sum(sv**2) == pytest.approx(float(weight.detach().double().square().sum()))
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    rotated = weight_spectra({"w": q @ model[4].weight.detach().double()})
    np.testing.assert_allclose(
        rotated["singular_value"], frame.filter(pl.col("parameter") == "4.weight")["singular_value"]
    )


# figures


def test_landscape_figures_write_pngs(tmp_path):
    init, final = _cnn(0).state_dict(), _trained(0).state_dict()
    results = [_criticality(_cnn(0), init, final, m, draws=1) for m in ["0", "4"]]
    sd = _trained(1).state_dict()
    curve = barrier_curve(_cnn, final, sd, _evaluate, [0.0, 0.5, 1.0])
    spectra = weight_spectra(_trained(0)).with_columns(model=pl.lit("P-T"))
    paths = {name: tmp_path / f"{name}.png" for name in ["barrier", "heat", "bars", "spectra"]}
    plot_barrier_curves({"P-T/P-T": [curve, curve], "RI-T/RI-T": [curve]}, paths["barrier"])
    plot_criticality_heatmaps(results, paths["heat"])
    plot_criticality_bars(
        {"P-T": {r.module: r.criticality for r in results}, "RI-T": {"0": np.inf, "4": 0.0}},
        paths["bars"],
        bounds={"P-T": {"0"}},  # drawn pale and marked ≤
    )
    plot_spectra(spectra, paths["spectra"])
    for path in paths.values():
        assert path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())
