"""Linear centered kernel alignment (CKA) between layer representations.

Linear CKA (Kornblith, Norouzi, Lee, Hinton 2019, "Similarity of neural network
representations revisited"; reference notebook google-research `representation_similarity`):
for features X (n × p), Y (n × q) of the same n inputs, K = XXᵀ, L = YYᵀ,

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)).

Biased: HSIC_b(K, L) = tr(HKHL) / (n−1)², H = I − 11ᵀ/n. With column-centred X, Y this is
‖YᵀX‖²_F / (n−1)², so CKA_b = ‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F). It is biased upwards at small n:
two independent representations score well above 0 (≈ p/n-order, e.g. ~0.2 at n = 32).

Debiased (Nguyen, Raghu, Kornblith 2021, "Do wide and deep networks learn the same things?",
eq. 3): HSIC is replaced by the unbiased estimator of Song et al. 2012, with K̃, L̃ = K, L
with their diagonals set to 0,

    HSIC_u(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2) · 1ᵀK̃L̃1] / (n(n−3)),

defined for n ≥ 4. Equivalently (Székely & Rizzo 2014) HSIC_u(K, L) = ⟨U(K), U(L)⟩/(n(n−3))
with the U-centred matrix U(K)_ij = K̃_ij − r_i/(n−2) − r_j/(n−2) + s/((n−1)(n−2)) for i ≠ j
and 0 on the diagonal (r = K̃1, s = 1ᵀK̃1). Hence HSIC_u(K, K) = ‖U(K)‖²/(n(n−3)) ≥ 0 in exact
arithmetic: the negative values under the square root reported for ports that evaluate the
three-term formula in float32 are round-off. Here HSIC is ⟨U(K), U(L)⟩ accumulated in
float64, self terms are clamped at 0 anyway, and a representation with zero self-HSIC (e.g.
constant features) gets CKA 0 with anything; results are clipped to [−1, 1] (Cauchy–Schwarz
bound). Never NaN.

Both estimators are invariant to centring the features (U-centring annihilates the a_i + a_j + c
terms a feature shift adds to K), so features are centred before the Gram product: uncentred
float32 Grams of ReLU features (mean²/variance up to ~300 in a ResNet's last stage) combined by
the three-term formula are what put torch_cka 0.19 off on benchmarks/cka.py. `linear_cka`
works in float64 throughout; the matrix forms (`cka_matrix`, `MinibatchCKA`) form the one
O(n²·p) Gram product in the features' own precision (≥ float32) from centred features and do
everything after it in float64 (see `centred_gram`).

The minibatch form (`MinibatchCKA`, after `do_wide_and_deep_networks_learn_the_same_things/
efficient_CKA.py`) averages HSIC_u over minibatches of the same samples for both models:
CKA_mb = Σ_b HSIC_u(K_b, L_b) / sqrt(Σ_b HSIC_u(K_b, K_b) · Σ_b HSIC_u(L_b, L_b)); on one
batch it equals the full debiased CKA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from transferscope.analyses.distances import check_same_architecture

ArrayLike = torch.Tensor | np.ndarray
Features = Mapping[str, ArrayLike]

MIN_UNBIASED_SAMPLES = 4


def _centred(x: ArrayLike, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(n, …) array → (n, features) tensor with column means removed.

    In ``dtype``, else in the input's own floating precision (at least float32).
    """
    t = torch.as_tensor(x).detach()
    if t.ndim < 2:
        raise ValueError(f"features must be (samples × features), got shape {tuple(t.shape)}")
    if dtype is None:
        dtype = t.dtype if t.dtype in (torch.float32, torch.float64) else torch.float32
    t = t.reshape(t.shape[0], -1).to(dtype)
    return t - t.mean(dim=0, keepdim=True)


def _check_samples(n: int, debiased: bool) -> None:
    if debiased and n < MIN_UNBIASED_SAMPLES:
        raise ValueError(
            f"the debiased (unbiased-HSIC) estimator needs at least {MIN_UNBIASED_SAMPLES} "
            f"samples per batch (it divides by n(n−3)); got n = {n}"
        )
    if n < 2:
        raise ValueError(f"CKA needs at least 2 samples, got n = {n}")


def centred_gram(x: ArrayLike, debiased: bool = False) -> torch.Tensor:
    """n × n float64 Gram matrix of the linear kernel, HKH (biased) or U(K) (debiased).

    The O(n²·p) product runs in the features' precision (float32 features: 2× faster than
    float64 on CPU); it is formed from centred features, so its rounding is relative to the
    centred magnitudes, and the n × n centring that follows is float64 (it also removes the
    rounding of the float32 column means exactly). Pass float64 features for float64 throughout.
    """
    xc = _centred(x)
    _check_samples(xc.shape[0], debiased)
    gram = (xc @ xc.T).to(torch.float64)
    return _u_centre(gram) if debiased else _double_centre(gram)


def _double_centre(gram: torch.Tensor) -> torch.Tensor:
    """HKH with H = I − 11ᵀ/n."""
    means = gram.mean(dim=0)
    return gram - means[:, None] - means[None, :] + means.mean()


def _u_centre(gram: torch.Tensor) -> torch.Tensor:
    """U(K) of Székely & Rizzo 2014 (see module docstring); ⟨U(K), U(L)⟩ = n(n−3)·HSIC_u."""
    n = gram.shape[0]
    gram = gram.clone()
    gram.fill_diagonal_(0.0)
    means = gram.sum(dim=0) / (n - 2)
    means -= means.sum() / (2 * (n - 1))
    gram -= means[:, None]
    gram -= means[None, :]
    gram.fill_diagonal_(0.0)
    return gram


def _hsic_scale(n: int, debiased: bool) -> float:
    return 1.0 / (n * (n - 3)) if debiased else 1.0 / (n - 1) ** 2


def _ratio(cross: torch.Tensor, self_a: torch.Tensor, self_b: torch.Tensor) -> torch.Tensor:
    """cross / sqrt(self_a · self_b), self terms clamped at 0, 0 where a self term is 0."""
    denom = (self_a.clamp_min(0.0) * self_b.clamp_min(0.0)).sqrt()
    # where() evaluates both branches, so divide by a safe denominator to keep NaN out
    safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    return torch.where(denom > 0, cross / safe, torch.zeros_like(cross)).clamp(-1.0, 1.0)


def _feature_terms(xc: torch.Tensor, yc: torch.Tensor, debiased: bool) -> torch.Tensor:
    """Unscaled HSIC of centred features in O(n·p·q), without n × n matrices.

    Biased: ‖XᵀY‖²_F. Unbiased (Σ_i x_i = 0, so K̃1 = −diag K and 1ᵀK̃1 = −tr K):
    ‖XᵀY‖²_F − n/(n−2) Σ_i K_ii L_ii + tr K · tr L / ((n−1)(n−2)).
    """
    cross = (xc.T @ yc).square().sum()
    if not debiased:
        return cross
    n = xc.shape[0]
    dx, dy = xc.square().sum(dim=1), yc.square().sum(dim=1)
    return cross - n / (n - 2) * (dx * dy).sum() + dx.sum() * dy.sum() / ((n - 1) * (n - 2))


def linear_cka(X: ArrayLike, Y: ArrayLike, debiased: bool = False, method: str = "auto") -> float:
    """Linear CKA of two representations of the same n samples (rows), in float64.

    ``method`` "gram" works with n × n Gram matrices (cost n²(p+q)), "features" with p × q
    cross-covariances (cost n(p+q)²); "auto" takes the cheaper. Both give the same value.
    Trailing dimensions beyond the second are flattened into features.
    """
    xc, yc = _centred(X, torch.float64), _centred(Y, torch.float64)
    n = xc.shape[0]
    if yc.shape[0] != n:
        raise ValueError(f"X has {n} samples but Y has {yc.shape[0]}; CKA needs the same inputs")
    _check_samples(n, debiased)
    p, q = xc.shape[1], yc.shape[1]
    if method == "auto":
        method = "features" if p + q <= n else "gram"
    if method == "features":
        cross = _feature_terms(xc, yc, debiased)
        self_x, self_y = _feature_terms(xc, xc, debiased), _feature_terms(yc, yc, debiased)
    elif method == "gram":
        k, l_ = xc @ xc.T, yc @ yc.T
        if debiased:
            k, l_ = _u_centre(k), _u_centre(l_)
        cross, self_x, self_y = (k * l_).sum(), k.square().sum(), l_.square().sum()
    else:
        raise ValueError(f"method must be 'auto', 'gram' or 'features', got {method!r}")
    return float(_ratio(cross, self_x, self_y))


def _stacked_grams(feats: Sequence[ArrayLike], debiased: bool) -> torch.Tensor:
    """(layers, n²) matrix of flattened centred Gram matrices, one row per layer."""
    return torch.stack([centred_gram(f, debiased).reshape(-1) for f in feats])


class MinibatchCKA:
    """Debiased linear CKA of every layer pair, accumulated over minibatches.

    Call ``update(feats_a, feats_b)`` with the features of the same minibatch for both models
    (sequences or name → tensor mappings, layers in a fixed order; ``feats_b=None`` compares
    model a with itself), then ``result()`` for the (layers_a × layers_b) matrix
    Σ_b HSIC_u(K_b, L_b) / sqrt(Σ_b HSIC_u(K_b, K_b) · Σ_b HSIC_u(L_b, L_b))
    (Nguyen, Raghu, Kornblith 2021, `efficient_CKA.py`). Each batch's HSIC_u is normalised by
    its own n(n−3), so batches count equally. Accumulators stay on the features' device and
    in float64; only ``result()`` synchronises. Memory per update: (layers_a + layers_b)·n²
    float64 values, so keep batches at a few hundred to a few thousand samples.
    """

    def __init__(self) -> None:
        self._cross: torch.Tensor | None = None
        self._self_a: torch.Tensor | None = None
        self._self_b: torch.Tensor | None = None
        self._names: tuple[list[str] | None, list[str] | None] = (None, None)
        self.batches = 0

    def update(
        self,
        feats_a: Sequence[ArrayLike] | Features,
        feats_b: Sequence[ArrayLike] | Features | None = None,
    ) -> None:
        list_a, names_a = _layer_list(feats_a)
        list_b, names_b = (list_a, names_a) if feats_b is None else _layer_list(feats_b)
        n = _common_samples(list_a + list_b)
        _check_samples(n, debiased=True)
        if self.batches and (names_a, names_b) != self._names:
            raise ValueError(
                f"layers changed between updates: {self._names} then {(names_a, names_b)}"
            )
        grams_a = _stacked_grams(list_a, debiased=True)
        grams_b = grams_a if feats_b is None else _stacked_grams(list_b, debiased=True)
        scale = _hsic_scale(n, debiased=True)
        cross = grams_a @ grams_b.T * scale
        self_a = grams_a.square().sum(dim=1) * scale
        self_b = grams_b.square().sum(dim=1) * scale
        if self._cross is None:
            self._cross, self._self_a, self._self_b = cross, self_a, self_b
        else:
            if cross.shape != self._cross.shape:
                raise ValueError(
                    f"layer counts changed between updates: {tuple(self._cross.shape)} "
                    f"then {tuple(cross.shape)}"
                )
            self._cross += cross
            self._self_a += self_a
            self._self_b += self_b
        self._names = (names_a, names_b)
        self.batches += 1

    def result(self) -> np.ndarray:
        if self._cross is None:
            raise ValueError("MinibatchCKA.result() called before any update()")
        ratio = _ratio(self._cross, self._self_a[:, None], self._self_b[None, :])
        return ratio.cpu().numpy()


def _layer_list(
    feats: Sequence[ArrayLike] | Features,
) -> tuple[list[ArrayLike], list[str] | None]:
    if isinstance(feats, Mapping):
        return list(feats.values()), list(feats.keys())
    return list(feats), None


def _common_samples(feats: Sequence[ArrayLike]) -> int:
    counts = {int(f.shape[0]) for f in feats}
    if len(counts) != 1:
        raise ValueError(f"all layers must hold the same samples; got sample counts {counts}")
    return counts.pop()


def cka_matrix(
    feats_a: Features,
    feats_b: Features,
    debiased: bool = False,
    *,
    batch_size: int | None = None,
    labels: tuple[str, str] = ("model A", "model B"),
    same_architecture: bool = True,
) -> np.ndarray:
    """Linear CKA of every layer of ``feats_a`` (rows) with every layer of ``feats_b`` (columns).

    ``feats_*`` map layer name → (n × features) for the same n inputs (see `layer_features`).
    With ``batch_size=None`` the full-sample estimator is used: one centred n × n Gram per
    layer (memory (layers_a + layers_b)·n² float64), biased or debiased. With ``batch_size``
    the samples are cut into consecutive minibatches and `MinibatchCKA` (debiased only) is
    used; a last chunk of fewer than 4 samples is merged into the one before.

    ``same_architecture`` (default) requires both to have the same layer names and feature
    sizes, as when comparing P, P-T and RI-T; a mismatch is a ValueError naming both labels.
    """
    names_a, names_b = list(feats_a), list(feats_b)
    if not names_a or not names_b:
        raise ValueError(f"no layers given: {labels[0]} has {names_a}, {labels[1]} has {names_b}")
    if same_architecture:
        _check_same_layers(feats_a, feats_b, labels)
    n = _common_samples(list(feats_a.values()) + list(feats_b.values()))
    if batch_size is None:
        _check_samples(n, debiased)
        grams_a = _stacked_grams(list(feats_a.values()), debiased)
        grams_b = _stacked_grams(list(feats_b.values()), debiased)
        cross = grams_a @ grams_b.T
        ratio = _ratio(cross, grams_a.square().sum(1)[:, None], grams_b.square().sum(1)[None, :])
        return ratio.cpu().numpy()
    if not debiased:
        raise ValueError("minibatch CKA (batch_size given) exists only for debiased=True")
    metric = MinibatchCKA()
    for start, stop in _chunks(n, batch_size):
        metric.update(
            {k: v[start:stop] for k, v in feats_a.items()},
            {k: v[start:stop] for k, v in feats_b.items()},
        )
    return metric.result()


def _chunks(n: int, batch_size: int) -> list[tuple[int, int]]:
    if batch_size < MIN_UNBIASED_SAMPLES:
        raise ValueError(
            f"batch_size = {batch_size}: the debiased estimator needs at least "
            f"{MIN_UNBIASED_SAMPLES} samples per batch"
        )
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < MIN_UNBIASED_SAMPLES:
        # a tail of < 4 samples has no unbiased HSIC; fold it into the previous batch
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def _check_same_layers(feats_a: Features, feats_b: Features, labels: tuple[str, str]) -> None:
    a, b = list(feats_a), list(feats_b)
    if a != b:
        raise ValueError(
            f"{labels[0]} and {labels[1]} have different layers (different architectures?): "
            f"{a} vs {b}"
        )
    sizes = {
        k: (tuple(feats_a[k].shape[1:]), tuple(feats_b[k].shape[1:]))
        for k in a
        if tuple(feats_a[k].shape[1:]) != tuple(feats_b[k].shape[1:])
    }
    if sizes:
        raise ValueError(
            f"{labels[0]} and {labels[1]} have different feature shapes (different "
            f"architectures?): {sizes}"
        )


Reduce = str | Callable[[torch.Tensor], torch.Tensor]


def _reducer(reduce: Reduce) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(reduce):
        return reduce
    if reduce == "flatten":
        return lambda t: t.reshape(t.shape[0], -1)
    if reduce == "pool":
        # channel-first outputs (N, C, *spatial): average the spatial positions
        return lambda t: t.reshape(t.shape[0], t.shape[1], -1).mean(dim=2) if t.ndim > 2 else t
    raise ValueError(f"reduce must be 'flatten', 'pool' or a callable, got {reduce!r}")


def _batches(inputs: torch.Tensor | Iterable, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        yield from inputs.split(batch_size)
        return
    for batch in inputs:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def layer_features(
    model: nn.Module,
    inputs: torch.Tensor | Iterable,
    layers: Sequence[str],
    reduce: Reduce = "flatten",
    batch_size: int = 256,
    out_device: torch.device | str = "cpu",
) -> dict[str, torch.Tensor]:
    """Outputs of the named submodules on ``inputs``: layer name → (N × features) tensor.

    Forward hooks on ``model.named_modules()`` entries; the model runs in eval() under
    torch.inference_mode and every module's train/eval flag is restored afterwards.
    ``inputs`` is a tensor (split into ``batch_size`` chunks) or an iterable of batches
    (tensors or tuples whose first element is the input, e.g. a DataLoader).
    ``reduce``: "flatten" (all of C·H·W), "pool" (mean over spatial positions of
    channel-first outputs, giving C features), or a callable on each (batch, …) output.
    A tuple output contributes its first element.
    """
    if not layers:
        raise ValueError("layers is empty; name at least one submodule")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers has duplicates: {list(layers)}")
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(
            f"{type(model).__name__} has no submodules {missing}; "
            f"available: {list(modules)[:30]}{' …' if len(modules) > 30 else ''}"
        )
    reducer = _reducer(reduce)
    device = next(model.parameters(), torch.empty(0)).device
    collected: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    current: dict[str, list[torch.Tensor]] = {}

    def hook(name: str):
        def record(_module, _inp, out):
            out = out[0] if isinstance(out, (tuple, list)) else out
            # copy: a later in-place op (ReLU(inplace=True)) would rewrite a stored view
            current.setdefault(name, []).append(reducer(out).to(out_device, copy=True))

        return record

    modes = {m: m.training for m in model.modules()}
    handles = [modules[name].register_forward_hook(hook(name)) for name in layers]
    try:
        model.eval()
        with torch.inference_mode():
            for x in _batches(inputs, batch_size):
                current.clear()
                model(x.to(device))
                for name in layers:
                    outs = current.get(name, [])
                    if len(outs) != 1:
                        raise ValueError(
                            f"module {name!r} ran {len(outs)} times in one forward pass; "
                            "its features are ambiguous (it must run exactly once)"
                        )
                    collected[name].append(outs[0])
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.train(training)
    if not collected[layers[0]]:
        raise ValueError("inputs yielded no batches")
    return {name: torch.cat(chunks) for name, chunks in collected.items()}


def model_cka_matrix(
    model_a: nn.Module,
    model_b: nn.Module,
    inputs: torch.Tensor | Iterable,
    layers: Sequence[str],
    *,
    debiased: bool = False,
    reduce: Reduce = "flatten",
    batch_size: int = 256,
    minibatch: bool = False,
    labels: tuple[str, str] = ("model A", "model B"),
) -> np.ndarray:
    """CKA matrix over ``layers`` of two models of the same architecture on the same inputs.

    Different architectures (parameter names or shapes) are a ValueError naming both labels.
    ``minibatch=True`` accumulates the debiased estimator over batches of ``batch_size``.
    """
    check_same_architecture(model_a, model_b, labels)
    if isinstance(inputs, Iterable) and not isinstance(inputs, torch.Tensor):
        inputs = list(_batches(inputs, batch_size))  # both models must see the same batches
    feats_a = layer_features(model_a, inputs, layers, reduce, batch_size)
    feats_b = layer_features(model_b, inputs, layers, reduce, batch_size)
    return cka_matrix(
        feats_a,
        feats_b,
        debiased,
        batch_size=batch_size if minibatch else None,
        labels=labels,
    )
