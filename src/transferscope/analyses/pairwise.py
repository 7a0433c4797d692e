"""Model pairs and the individual pairwise analyses of one experiment (each usable on its
own): evaluation subset and modules, predictions, mistakes, CKA and weight distances,
interpolation barriers."""

from __future__ import annotations

import re
from itertools import combinations

from transferscope.config import ConfigError

# ----------------------------------------------------------------------------------------------
# evaluation subset and analysed modules


def eval_subset(n_test: int, size: int, seed: int = 0) -> list[int]:
    """A fixed subset of the target test set: ``size`` indices drawn with ``seed``, sorted."""
    import torch

    if n_test <= size:
        return list(range(n_test))
    perm = torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))[:size]
    return sorted(perm.tolist())


def default_modules(model) -> list[str]:
    """Named stages of the backbone plus the backbone's output (pooled features).

    timm ResNets: backbone.layer1..layer4; otherwise four evenly spaced parameter-owning
    children of backbone.stages / blocks / layers / features (ConvNeXt, ViT, VGG, …)."""
    names = dict(model.named_modules())
    stages = [f"backbone.layer{i}" for i in range(1, 5) if f"backbone.layer{i}" in names]
    if not stages:
        for container in ("stages", "blocks", "layers", "features"):
            children = sorted(
                (
                    n
                    for n, module in names.items()
                    if re.fullmatch(rf"backbone\.{container}\.\d+", n)
                    and any(True for _ in module.parameters())
                ),
                key=lambda n: int(n.rsplit(".", 1)[1]),
            )
            if children:
                picks = sorted({round(i * (len(children) - 1) / 3) for i in range(4)})
                stages = [children[i] for i in picks]
                break
    return [*stages, "backbone"]


def _check_modules(model, modules: list[str], key: str) -> None:
    names = dict(model.named_modules())
    missing = [m for m in modules if m not in names]
    if missing:
        raise ConfigError(
            f"config: analyses.{key}: the model has no modules {missing}; some it has: "
            f"{[n for n in names if n.count('.') <= 1 and n][:20]}"
        )


# ----------------------------------------------------------------------------------------------
# pairs and the individual analyses (each usable on its own)

PAIR_TYPES = ("P-T/P", "RI-T/P", "P-T/P-T", "RI-T/RI-T", "P-T/RI-T")
BARRIER_PAIR_TYPES = ("P-T/P-T", "RI-T/RI-T", "P-T/RI-T")


def model_pairs(
    seeds: list[int], parents: dict[int, object]
) -> list[tuple[str, tuple[str, int], tuple[str, int]]]:
    """(pair type, model a, model b), models as (role, seed). P-T/RI-T pairs share a seed;
    RI-T/RI-T pairs are all unordered seed pairs; P-T/P-T pairs only those whose fine-tunes
    start from the same pre-trained model (``parents``: seed -> its pre-trained model), since
    fine-tunes of different pre-trained models need not share a basin (docs/references.md §2).
    """
    pairs = [("P-T/P", ("P-T", s), ("P", s)) for s in seeds]
    pairs += [("RI-T/P", ("RI-T", s), ("P", s)) for s in seeds]
    pairs += [
        ("P-T/P-T", ("P-T", s), ("P-T", t))
        for s, t in combinations(seeds, 2)
        if parents[s] == parents[t]
    ]
    pairs += [("RI-T/RI-T", ("RI-T", s), ("RI-T", t)) for s, t in combinations(seeds, 2)]
    pairs += [("P-T/RI-T", ("P-T", s), ("RI-T", s)) for s in seeds]
    return pairs


def _name(key: tuple[str, int]) -> str:
    return f"{key[0]} seed{key[1]}"


def predictions(model, x, device, batch_size: int = 256):
    """Arg-max class of every input, eval mode, no gradients."""
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for chunk in x.split(batch_size):
            out.append(model(chunk.to(device)).argmax(1).cpu())
    return torch.cat(out)


def mistakes_tables(preds: dict, y, indices: list[int], pairs):
    """(pair counts, per-sample table) for models given as (role, seed) -> predicted classes."""
    import polars as pl

    from transferscope.analyses.mistakes import mistakes_table

    correct = {_name(k): (p == y).numpy() for k, p in preds.items()}
    table = mistakes_table(correct, [(_name(a), _name(b)) for _, a, b in pairs])
    table = table.with_columns(pair_type=pl.Series([t for t, _, _ in pairs], dtype=pl.String))
    rows = [
        {
            "sample": int(indices[i]),
            "position": i,
            "label": int(y[i]),
            "role": role,
            "seed": seed,
            "prediction": int(p[i]),
            "correct": bool(p[i] == y[i]),
        }
        for (role, seed), p in preds.items()
        for i in range(len(y))
    ]
    return table.select("pair_type", pl.exclude("pair_type")), pl.DataFrame(rows)


def feature_reducer(reduce: str, max_features: int = 16384):
    """The reduction of a module's output to (samples × features) that CKA compares.

    "flatten" and "pool" are the CKA library's (pool = spatial mean of channel-first maps).
    "auto" flattens outputs of at most ``max_features`` values per sample; larger (N, C, H, W)
    maps are average-pooled to an s × s grid with C·s² <= max_features, larger (N, tokens, D)
    outputs are averaged over tokens."""
    if reduce != "auto":
        return reduce

    def auto(t):
        import torch.nn.functional as F

        if t[0].numel() <= max_features or t.ndim == 2:
            return t.reshape(t.shape[0], -1)
        if t.ndim == 4:
            side = max(1, int((max_features / t.shape[1]) ** 0.5))
            return F.adaptive_avg_pool2d(t, min(side, t.shape[-1])).reshape(t.shape[0], -1)
        if t.ndim == 3:
            return t.mean(dim=1)
        return t.reshape(t.shape[0], -1)

    return auto


def similarity_tables(
    models: dict,
    pairs,
    x,
    modules: list[str],
    reduce: str,
    debiased: bool,
    max_features: int = 16384,
    paths: dict | None = None,
):
    """(CKA long table over module × module, per-module ℓ2 weight distances) for ``pairs``.

    Features are computed once per model. A different architecture is a ValueError naming
    both models; distances of pairs with P leave the head out (the probe's head is not P's)."""
    import polars as pl

    from transferscope.analyses.cka import cka_matrix, layer_features
    from transferscope.analyses.distances import check_same_architecture, module_distances

    feats: dict = {}
    cka_rows, dist_frames = [], []
    for pair_type, a, b in pairs:
        labels = (_name(a), _name(b))
        try:
            check_same_architecture(models[a], models[b], labels)
        except ValueError as err:
            if not paths:
                raise
            raise ValueError(
                f"{err}; files: {paths[a]} and {paths[b]}. The runs of one experiment must "
                "share an architecture: delete the run trained with other settings and rerun it"
            ) from None
        for key in (a, b):
            if key not in feats:
                feats[key] = layer_features(
                    models[key], x, modules, reduce=feature_reducer(reduce, max_features)
                )
        matrix = cka_matrix(feats[a], feats[b], debiased, labels=labels)
        for i, ma in enumerate(modules):
            for j, mb in enumerate(modules):
                cka_rows.append(
                    {
                        "pair_type": pair_type,
                        "model_a": labels[0],
                        "seed_a": a[1],
                        "model_b": labels[1],
                        "seed_b": b[1],
                        "module_a": ma,
                        "module_b": mb,
                        "diagonal": i == j,
                        "features_a": int(feats[a][ma].shape[1]),
                        "cka": float(matrix[i, j]),
                    }
                )
        dist = module_distances(models[a], models[b], depth=2, labels=labels)
        if "P" in (a[0], b[0]):
            dist = dist.filter(pl.col("module") != "head")
        dist_frames.append(
            dist.with_columns(
                pair_type=pl.lit(pair_type),
                model_a=pl.lit(labels[0]),
                seed_a=pl.lit(a[1]),
                model_b=pl.lit(labels[1]),
                seed_b=pl.lit(b[1]),
            )
        )
    cka = pl.DataFrame(cka_rows).with_columns(
        reduce=pl.lit(reduce), estimator=pl.lit("debiased" if debiased else "biased")
    )
    dist = pl.concat(dist_frames).select(
        "pair_type",
        "model_a",
        "seed_a",
        "model_b",
        "seed_b",
        pl.exclude("pair_type", "model_a", "seed_a", "model_b", "seed_b"),
    )
    return cka, dist


def barrier_tables(states: dict, model_fn, pairs, evaluate_fn, lambdas, bn_batches=None):
    """(curves, heights) of the linear path between each pair's full state dicts.

    ``evaluate_fn(model) -> {"loss", "accuracy"}``; ``bn_batches`` (input tensors) recompute
    BatchNorm statistics at every point. Heights: loss barrier (`barrier_height`) and the
    accuracy drop below the chord, max_λ[(1−λ)A(0) + λA(1) − A(λ)]."""
    import polars as pl

    from transferscope.analyses.interpolation import barrier_curve, barrier_height

    curves, heights = [], []
    for pair_type, a, b in pairs:
        labels = (_name(a), _name(b))
        rows = barrier_curve(
            model_fn, states[a], states[b], evaluate_fn, lambdas, bn_batches, labels
        )
        lams = [r["lambda"] for r in rows]
        for r in rows:
            curves.append(
                dict(
                    r,
                    pair_type=pair_type,
                    model_a=labels[0],
                    seed_a=a[1],
                    model_b=labels[1],
                    seed_b=b[1],
                )
            )
        heights.append(
            {
                "pair_type": pair_type,
                "model_a": labels[0],
                "seed_a": a[1],
                "model_b": labels[1],
                "seed_b": b[1],
                "barrier_loss": barrier_height([r["loss"] for r in rows], lams),
                "barrier_accuracy": barrier_height([-r["accuracy"] for r in rows], lams),
                "loss_a": rows[lams.index(0.0)]["loss"],
                "loss_b": rows[lams.index(1.0)]["loss"],
                "max_loss": max(r["loss"] for r in rows),
                "bn_recomputed": all(r["bn_recomputed"] for r in rows),
                "points": len(rows),
            }
        )
    return pl.DataFrame(curves), pl.DataFrame(heights)
