"""Workflow stages of the representation and landscape analyses (docs/references.md §2) and
the theory bridge (docs/references.md §3).

Names: P = pre-trained model, P-T = fine-tuned from P, RI = random initialisation (a scratch
run's epoch_000), RI-T = trained from RI (scratch). Every per-experiment stage works on the
runs ``runs/<exp>/<variant>/seed<N>/`` that the training rules write; this module only wires
the analysis library (cka, interpolation, criticality, distances, spectra, mistakes,
blockshuffle, figures) to them and writes tables (Parquet + CSV), PNGs and a summary.json,
every file atomically. Its helpers live beside it: ``settings`` (what to run, resolved from the
config, and the workflow's targets), ``runs`` (the finished runs given), ``pairwise`` (model
pairs and the individual analyses), ``summaries`` (spectra table, theory bridge, headline),
``model_figures``, ``reuse`` (feature reuse and intermediate checkpoints), ``comparison``
(across experiments) and ``outputs`` (JSON-safe values, tables, pyplot).

Stages (one workflow rule each, `transferscope analyses <action>`):

``run_analyses``            (models) per image experiment: mistakes, CKA and weight distances,
                            interpolation barriers, module criticality, spectra, the theory
                            bridge (feature overlap of P's frozen features vs transferability).
``feature_reuse``           (reuse) accuracy and speed of P-T and RI-T on block-shuffled inputs.
``intermediate_checkpoints`` (checkpoints) fine-tuning from intermediate pre-training epochs.
``compare``                 (compare) CKA and barrier beside the interaction-based preserved
                            share, and the bridge table joined with it, over all experiments.

Which model is "P" where: P's weights (spectra) are the pre-training run's final checkpoint;
P's *features* on the target task come from the probe run's final checkpoint, whose backbone
is P's frozen backbone (BatchNorm statistics included) and whose head has the target's classes,
so it has P-T's architecture and can be compared with it tensor by tensor (its head is left
out of weight distances). θ⁰ of module criticality is the initial checkpoint of the run being
analysed: P's backbone (plus the fresh head) for P-T, RI for RI-T. The pre-trained run of a
seed is the one its probe and fine-tune start from (config ``pretrained_seed``); P-T/P-T pairs
are fine-tunes of the same pre-trained checkpoint, as the trainers recorded it.

"""

from __future__ import annotations

import time
from pathlib import Path

from transferscope.analyses.comparison import (
    _col,
    _spearman,
    bridge_figure,
    preserved_shares,
    side_by_side_figure,
    view_sentence,
    views_table,
)
from transferscope.analyses.model_figures import (
    criticality_figures,
    gallery_figure,
    similarity_figure,
)
from transferscope.analyses.outputs import _json_safe, _write_table
from transferscope.analyses.pairwise import (
    BARRIER_PAIR_TYPES,
    _check_modules,
    barrier_tables,
    default_modules,
    eval_subset,
    mistakes_tables,
    model_pairs,
    predictions,
    similarity_tables,
)
from transferscope.analyses.reuse import epochs_to_accuracy, intermediate_figure, reuse_figure
from transferscope.analyses.runs import _need, collect_runs
from transferscope.analyses.settings import (
    MODEL_FIGURES,
    alpha_grid,
    from_variant,
    lambda_grid,
    shuffle_variant,
    sigma_grid,
)
from transferscope.analyses.summaries import bridge_table, headline, spectra_summary
from transferscope.config import ConfigError, pretrained_seed

BN_NOTE = (
    "BatchNorm running statistics recomputed on target training data for every interpolated "
    "model (endpoints included; exact cumulative average, other layers in eval mode)"
)


# ----------------------------------------------------------------------------------------------
# the per-experiment stage


def _parent_checkpoint(pretrain, *runs) -> str:
    """Hash of ``pretrain``'s final checkpoint, which every one of ``runs`` must have started
    from (a run trained from another pre-trained model is an error naming both)."""
    from transferscope.io import sha256_file

    sha = sha256_file(pretrain.final)
    for run in runs:
        if run.init_sha256() != sha:
            raise ValueError(
                f"{run.summary_path}: this run did not start from {pretrain.final}, the "
                f"pre-trained run that seed {run.seed} starts from (config pretrained_seed); "
                f"rerun it (`snakemake -R {run.variant}`)"
            )
    return sha


def _skip(out: Path, settings: dict, reason: str) -> dict:
    from transferscope.io import write_json

    summary = {"experiment": settings["experiment"], "skipped": True, "reason": reason}
    write_json(out, summary)
    return summary


def run_analyses(
    settings: dict, data_dir: str | Path, runs, out: str | Path, threads: int | None = None
) -> dict:
    """All per-experiment analyses into the directory of ``out`` (its summary.json, written
    last). Text experiments are skipped with a summary saying so."""
    import polars as pl
    import torch

    from transferscope import runtime
    from transferscope.data import read_manifest
    from transferscope.io import write_json
    from transferscope.models import build_model, load_checkpoint
    from transferscope.training import evaluate, load_task

    started = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out)
    out = out if out.suffix == ".json" else out / "summary.json"
    out_dir = out.parent
    exp, params = settings["experiment"], settings["analyses"]
    manifest = read_manifest(data_dir)
    if manifest["modality"] != "image":
        return _skip(out, settings, f"{manifest['modality']} experiment: analyses are image-only")
    runtime.setup(0, threads)
    device = runtime.resolve_device(settings["device"])
    dpi = settings.get("dpi", 120)
    run_map = collect_runs(runs, exp)
    seeds = sorted(int(s) for s in settings["seeds"])
    crit_seeds = [s for s in settings["analysis_seeds"] if s in seeds] or seeds[:1]

    task = load_task(data_dir, "target", settings["model"])
    indices = eval_subset(len(task.test_y), params["eval_samples"])
    x_eval, y_eval = task.test_inputs["x"][indices], task.test_y[indices]
    bn_count = len(task.train_y) if params["bn_samples"] is None else params["bn_samples"]
    x_bn = task.train_inputs["x"][:bn_count]
    bn_batches = list(x_bn.split(256))

    # models: (role, seed) -> eval-mode model; states for interpolation and criticality
    t0 = time.perf_counter()
    models, states, weights_of, parents = {}, {}, {}, {}
    for s in seeds:
        pre = _need(run_map, exp, "pretrain", pretrained_seed(settings, s))
        probe = _need(run_map, exp, "probe", s)
        ft, sc = _need(run_map, exp, "finetune", s), _need(run_map, exp, "scratch", s)
        parents[s] = _parent_checkpoint(pre, probe, ft)
        for key, path in {
            ("P", s): probe.final,
            ("P-T", s): ft.final,
            ("RI-T", s): sc.final,
            ("P-T init", s): ft.epoch(0),
            ("RI", s): sc.epoch(0),
            ("P weights", s): pre.final,
        }.items():
            states[key], meta = load_checkpoint(path)
            weights_of[key] = str(path)
            if key[0] in ("P", "P-T", "RI-T"):  # the others are only weights
                models[key] = build_model(
                    meta["model"], meta["num_classes"], meta.get("in_chans", 3), False
                )
                models[key].load_state_dict(states[key])
                models[key].to(device).eval()
    first = models[("P-T", seeds[0])]
    spec, num_classes = settings["model"], first.head.out_features
    in_chans = int(task.in_chans)
    timings["load"] = time.perf_counter() - t0

    def fresh_model():
        return build_model(spec, num_classes, in_chans, pretrained=False).to(device)

    def eval_fn(model, n=None):
        xs, ys = (x_eval, y_eval) if n is None else (x_eval[:n], y_eval[:n])
        return evaluate(model, {"x": xs}, ys, device)

    pairs = model_pairs(seeds, parents)
    outputs: dict[str, str] = {}

    def table(name, frame):
        _write_table(frame, out_dir / f"{name}.parquet")
        outputs[name] = f"{name}.parquet"

    # 1. mistakes
    t0 = time.perf_counter()
    preds = {
        (r, s): predictions(models[(r, s)], x_eval, device) for s in seeds for r in ("P-T", "RI-T")
    }
    mistake_pairs = [p for p in pairs if p[0] in BARRIER_PAIR_TYPES]
    mistakes, samples = mistakes_tables(preds, y_eval, indices, mistake_pairs)
    table("mistakes", mistakes)
    table("mistakes_samples", samples)
    gallery_figure(
        x_eval,
        y_eval,
        indices,
        preds[("P-T", seeds[0])],
        preds[("RI-T", seeds[0])],
        task.classes,
        params["gallery"],
        out_dir / "mistakes_gallery.png",
        dpi,
        f"{exp}: samples P-T seed{seeds[0]} gets wrong and RI-T seed{seeds[0]} right",
    )
    timings["mistakes"] = time.perf_counter() - t0

    # 2. CKA and weight distances
    t0 = time.perf_counter()
    modules = params["cka"]["modules"] or default_modules(first)
    _check_modules(first, modules, "cka.modules")
    cka, dist = similarity_tables(
        models,
        pairs,
        x_eval,
        modules,
        params["cka"]["reduce"],
        params["cka"]["debiased"],
        params["cka"]["max_features"],
        paths=weights_of,
    )
    table("cka", cka)
    table("distances", dist)
    similarity_figure(cka, dist, modules, out_dir / "similarity.png", dpi, exp)
    timings["similarity"] = time.perf_counter() - t0

    # 3. interpolation barriers (one model instance reloaded at every point)
    t0 = time.perf_counter()
    lambdas = lambda_grid(params["lambdas"])
    instance = fresh_model()
    barrier_pairs = [p for p in pairs if p[0] in BARRIER_PAIR_TYPES]
    curves, heights = barrier_tables(
        states, lambda: instance, barrier_pairs, eval_fn, lambdas, bn_batches
    )
    table("barrier_curves", curves)
    table("barriers", heights)
    from transferscope.analyses.figures import plot_barrier_curves

    grouped = {
        t: [
            curves.filter((pl.col("model_a") == a) & (pl.col("model_b") == b))
            .sort("lambda")
            .to_dicts()
            for a, b in heights.filter(pl.col("pair_type") == t)
            .select("model_a", "model_b")
            .iter_rows()
        ]
        for t in BARRIER_PAIR_TYPES
        if heights.filter(pl.col("pair_type") == t).height
    }
    plot_barrier_curves(
        grouped,
        out_dir / "barrier_curves.png",
        title=f"{exp}: linear interpolation, eval subset (n={len(indices)}); BN recomputed",
    )
    timings["barriers"] = time.perf_counter() - t0

    # 4. module criticality
    t0 = time.perf_counter()
    crit = params["criticality"]
    crit_modules = crit["modules"] or [m for m in modules if m != "backbone"] or ["backbone"]
    _check_modules(first, crit_modules, "criticality.modules")
    crit_rows, grid_frames, results = [], [], []
    from transferscope.analyses.criticality import module_criticality

    for s in crit_seeds:
        for role, init_key in (("P-T", ("P-T init", s)), ("RI-T", ("RI", s))):
            for module in crit_modules:
                generator = torch.Generator().manual_seed(runtime.derived_seed(s, role, module))
                result = module_criticality(
                    fresh_model(),
                    states[init_key],
                    states[(role, s)],
                    module,
                    lambda m: eval_fn(m, crit["samples"])["loss"],
                    alphas=alpha_grid(crit),
                    sigmas=sigma_grid(crit),
                    draws=crit["draws"],
                    generator=generator,
                    eps_rel=crit["eps_rel"],
                )
                crit_rows.append(
                    dict(
                        result.summary(),
                        role=role,
                        seed=s,
                        theta0="P (finetune epoch_000)"
                        if role == "P-T"
                        else "RI (scratch epoch_000)",
                    )
                )
                grid_frames.append(
                    result.grid_frame().with_columns(role=pl.lit(role), seed=pl.lit(s))
                )
                results.append((role, s, result))
    crit_table = pl.DataFrame(
        crit_rows,
        schema_overrides={
            "criticality": pl.Float64,
            "criticality_upper_bound": pl.Float64,
            "grid_edge": pl.String,
            "alpha": pl.Float64,
            "sigma": pl.Float64,
        },
    )
    table("criticality", crit_table)
    table("criticality_grid", pl.concat(grid_frames))
    criticality_figures(results, crit_seeds[0], out_dir, exp)
    timings["criticality"] = time.perf_counter() - t0

    # 5. spectra
    t0 = time.perf_counter()
    from transferscope.analyses.spectra import weight_spectra

    # P once per pre-trained run, under its own (pre-training) seed
    p_seeds = {pretrained_seed(settings, s): s for s in reversed(seeds)}
    spectra = pl.concat(
        [
            weight_spectra(states[("P weights", s)]).with_columns(model=pl.lit("P"), seed=pl.lit(p))
            for p, s in sorted(p_seeds.items())
        ]
        + [
            weight_spectra(states[key]).with_columns(model=pl.lit(role), seed=pl.lit(s))
            for s in seeds
            for role, key in (("P-T", ("P-T", s)), ("RI", ("RI", s)), ("RI-T", ("RI-T", s)))
        ]
    )
    table("spectra", spectra)
    table("spectra_summary", spectra_summary(spectra))
    from transferscope.analyses.figures import plot_spectra

    shown = pl.col("seed") == pl.when(pl.col("model") == "P").then(
        pretrained_seed(settings, seeds[0])
    ).otherwise(seeds[0])
    plot_spectra(
        spectra.filter(shown).drop("seed"),
        out_dir / "spectra.png",
        title=f"{exp}: singular values of every weight matrix, seed{seeds[0]}",
    )
    timings["spectra"] = time.perf_counter() - t0

    # 6. theory bridge: feature overlap of P's frozen features vs measured transferability
    t0 = time.perf_counter()
    bridge = bridge_table(exp, seeds, run_map, models, task, device, params["ridge"])
    table("bridge", bridge)
    timings["bridge"] = time.perf_counter() - t0

    figures = {name: f"{name}.png" for name in MODEL_FIGURES}
    summary = {
        "experiment": exp,
        "skipped": False,
        "modality": "image",
        "seeds": seeds,
        "criticality_seeds": crit_seeds,
        "device": str(device),
        "eval": {
            "split": "target test",
            "samples": len(indices),
            "of": int(len(task.test_y)),
            "indices": indices,
            "mode": "eval() for every model",
        },
        "models": {
            "P": "probe final checkpoint for features and distances (P's frozen backbone); "
            "pretrain final checkpoint for spectra",
            "P-T": "finetune final checkpoint",
            "pretrained_seed": {s: pretrained_seed(settings, s) for s in seeds},
            "P-T/P-T pairs": "fine-tunes that started from the same pre-trained checkpoint: "
            + (
                ", ".join(f"seed{a[1]}-seed{b[1]}" for t, a, b in pairs if t == "P-T/P-T")
                or "none (no two seeds share a pre-trained run; set pretrained_seed)"
            ),
            "RI": "scratch epoch_000",
            "RI-T": "scratch final checkpoint",
            "checkpoints": weights_of,
        },
        "cka": {
            "modules": modules,
            "reduce": params["cka"]["reduce"],
            "max_features": params["cka"]["max_features"],
            "features_per_module": dict(
                cka.filter(pl.col("diagonal"))
                .group_by("module_a", maintain_order=True)
                .agg(pl.col("features_a").first())
                .iter_rows()
            ),
            "estimator": "debiased" if params["cka"]["debiased"] else "biased",
        },
        "barrier": {
            "lambdas": lambdas,
            "bn_recomputed": True,
            "bn_note": BN_NOTE,
            "bn_samples": int(len(x_bn)),
        },
        "criticality": {
            "modules": crit_modules,
            "alphas": alpha_grid(crit),
            "sigmas": sigma_grid(crit),
            "draws": crit["draws"],
            "eps_rel": crit["eps_rel"],
            "samples": min(crit["samples"], len(indices)),
            "loss": "cross-entropy on the first samples of the evaluation subset",
            "grid": results[0][2].grid,
            "reference_grid": "11 α × 11 σ in [1e-16, 1], 10 draws (Chatterji et al. 2020)",
            "on_grid_edge": int(crit_table["on_grid_edge"].sum()),
            "of": crit_table.height,
            "edge_rule": "argmin at the largest α or at the smallest or largest σ: the "
            "criticality column is null and criticality_upper_bound holds the grid minimum",
        },
        "headline": headline(mistakes, cka, heights, crit_table, bridge, modules),
        "tables": outputs,
        "figures": figures,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    summary["timings_s"]["total"] = round(time.perf_counter() - started, 2)
    write_json(out, _json_safe(summary))
    return summary


# ----------------------------------------------------------------------------------------------
# feature reuse (block shuffling) and intermediate pre-training checkpoints


def feature_reuse(
    settings: dict, data_dir: str | Path, runs, out: str | Path, dpi: int | None = None
):
    """Final accuracy of P-T and RI-T, relative gap (A_PT − A_RIT)/A_PT and epochs to a fixed
    accuracy, against the block size of the shuffle (the unshuffled runs are block = image
    size, which shuffles nothing)."""
    import polars as pl

    from transferscope.data import read_manifest

    exp = settings["experiment"]
    manifest = read_manifest(data_dir)
    if manifest["modality"] != "image":
        raise ValueError(f"{data_dir}: {manifest['modality']} data; feature reuse is image-only")
    size = int(manifest["image"]["height"])
    bad = [b for b in settings["block_sizes"] if size % b]
    if bad:
        raise ConfigError(
            f"config: analyses.block_sizes: {bad} do not divide the {size}-pixel images of "
            f"{data_dir}; use divisors of {size}"
        )
    run_map = collect_runs(runs, exp)
    seeds = settings["analysis_seeds"]
    unshuffled = {
        s: (_need(run_map, exp, "finetune", s), _need(run_map, exp, "scratch", s)) for s in seeds
    }
    threshold = settings.get("reuse_accuracy")
    threshold_rule = "analyses.reuse_accuracy"
    if threshold is None:
        mean_rit = sum(sc.metrics()["test_accuracy"][-1] for _, sc in unshuffled.values()) / len(
            seeds
        )
        threshold = 0.9 * float(mean_rit)
        threshold_rule = "0.9 × unshuffled RI-T mean final test accuracy"
    rows = []
    for block in [*sorted(b for b in settings["block_sizes"] if b != size), size]:
        for s in seeds:
            if block == size:
                ft, sc = unshuffled[s]
            else:
                ft = _need(run_map, exp, shuffle_variant("finetune", block), s)
                sc = _need(run_map, exp, shuffle_variant("scratch", block), s)
            m_ft, m_sc = ft.metrics(), sc.metrics()
            a_pt, a_rit = float(m_ft["test_accuracy"][-1]), float(m_sc["test_accuracy"][-1])
            rows.append(
                {
                    "experiment": exp,
                    "block_size": block,
                    "shuffled": block != size,
                    "blocks": (size // block) ** 2,
                    "seed": s,
                    "accuracy_pt": a_pt,
                    "accuracy_rit": a_rit,
                    "gap": a_pt - a_rit,
                    "relative_gap": (a_pt - a_rit) / a_pt if a_pt > 0 else float("nan"),
                    "threshold": threshold,
                    "threshold_rule": threshold_rule,
                    "epochs_to_threshold_pt": epochs_to_accuracy(m_ft, threshold),
                    "epochs_to_threshold_rit": epochs_to_accuracy(m_sc, threshold),
                    "epochs": int(m_ft["epoch"].max()),
                    "run_pt": str(ft.summary_path),
                    "run_rit": str(sc.summary_path),
                }
            )
    frame = pl.DataFrame(
        rows,
        schema_overrides={"epochs_to_threshold_pt": pl.Int64, "epochs_to_threshold_rit": pl.Int64},
    )
    out = Path(out)
    _write_table(frame, out)
    reuse_figure(frame, size, out.with_suffix(".png"), dpi or settings.get("dpi", 120), exp)
    return frame


def intermediate_checkpoints(settings: dict, runs, out: str | Path, dpi: int | None = None):
    """Target test accuracy after fine-tuning from pre-training epoch k, beside P's source
    accuracy at that epoch; k = E is the regular finetune run, RI-T the reference."""
    import polars as pl

    exp = settings["experiment"]
    run_map = collect_runs(runs, exp)
    seeds, ks, final = (
        settings["analysis_seeds"],
        settings["pretrain_epochs"],
        settings["pretrain_final_epoch"],
    )
    rows = []
    for s in seeds:
        pre = _need(run_map, exp, "pretrain", pretrained_seed(settings, s)).metrics()
        source = dict(zip(pre["epoch"].to_list(), pre["test_accuracy"].to_list()))
        for k in [*ks, final]:
            run = _need(run_map, exp, from_variant(k) if k != final else "finetune", s)
            m = run.metrics().row(-1, named=True)
            rows.append(
                {
                    "experiment": exp,
                    "seed": s,
                    "pretrain_epoch": k,
                    "pretrained_seed": pretrained_seed(settings, s),
                    "reference": False,
                    "source_test_accuracy": source.get(k),
                    "target_test_accuracy": float(m["test_accuracy"]),
                    "target_test_loss": float(m["test_loss"]),
                    "run": str(run.summary_path),
                }
            )
        sc = _need(run_map, exp, "scratch", s)
        m = sc.metrics().row(-1, named=True)
        rows.append(
            {
                "experiment": exp,
                "seed": s,
                "pretrain_epoch": None,
                "pretrained_seed": None,
                "reference": True,
                "source_test_accuracy": None,
                "target_test_accuracy": float(m["test_accuracy"]),
                "target_test_loss": float(m["test_loss"]),
                "run": str(sc.summary_path),
            }
        )
    frame = pl.DataFrame(
        rows,
        schema_overrides={
            "pretrain_epoch": pl.Int64,
            "pretrained_seed": pl.Int64,
            "source_test_accuracy": pl.Float64,
        },
    )
    out = Path(out)
    _write_table(frame, out)
    intermediate_figure(frame, out.with_suffix(".png"), dpi or settings.get("dpi", 120), exp)
    return frame


# ----------------------------------------------------------------------------------------------
# across experiments: CKA / barrier beside the preserved share, and the theory bridge


def compare(
    summaries,
    transfer: str | Path,
    transfer_samples: str | Path,
    out: str | Path,
    skipped: dict | None = None,
    dpi: int = 120,
) -> dict:
    """side_by_side (per run pair: CKA, weight distance, barrier, preserved share), views (per
    experiment) and bridge (+ preserved share) tables, their figures and summary.json."""
    import polars as pl

    from transferscope.io import read_json, write_json

    out = Path(out)
    out_dir = out.parent
    level, per_seed = preserved_shares(transfer, transfer_samples)
    keys = ["experiment", "pair_type", "model_a", "seed_a", "model_b", "seed_b"]
    pair_frames, bridges, skipped = [], [], dict(skipped or {})
    for item in summaries:
        path = Path(item)
        summary = read_json(path)
        exp = summary["experiment"]
        if summary.get("skipped"):
            skipped[exp] = summary.get("reason", "skipped")
            continue
        d = path.parent
        out_mod = summary["cka"]["modules"][-1]
        cka = pl.read_parquet(d / "cka.parquet").filter(pl.col("diagonal"))
        cka = cka.group_by(keys[1:], maintain_order=True).agg(
            cka_output=pl.col("cka").filter(pl.col("module_a") == out_mod).first(),
            cka_mean=pl.col("cka").mean(),
        )
        dist = (
            pl.read_parquet(d / "distances.parquet")
            .group_by(keys[1:], maintain_order=True)
            .agg(
                weight_distance=(pl.col("distance").pow(2).sum()).sqrt(),
                weight_distance_relative=(
                    pl.col("distance").pow(2).sum() / pl.col("norm_first").pow(2).sum()
                ).sqrt(),
            )
        )
        frame = cka.join(dist, on=keys[1:], how="left")
        barriers = pl.read_parquet(d / "barriers.parquet")
        if "barrier_loss" in barriers.columns:
            frame = frame.join(
                barriers.select(*keys[1:], "barrier_loss", "barrier_accuracy"),
                on=keys[1:],
                how="left",
            )
        else:
            frame = frame.with_columns(
                barrier_loss=pl.lit(None, pl.Float64), barrier_accuracy=pl.lit(None, pl.Float64)
            )
        pair_frames.append(frame.with_columns(experiment=pl.lit(exp), cka_module=pl.lit(out_mod)))
        bridges.append(pl.read_parquet(d / "bridge.parquet"))
    if not pair_frames:
        raise ValueError(
            f"no analysed image experiment among {list(map(str, summaries))}; nothing to compare"
        )
    pairs = pl.concat(pair_frames, how="diagonal_relaxed").join(level, on="experiment", how="left")
    if per_seed is not None:
        pairs = pairs.join(
            per_seed.rename({"seed": "seed_a"}), on=["experiment", "seed_a"], how="left"
        ).with_columns(
            # the per-seed interaction view is the P → P-T comparison of that seed
            preserved_share_seed=pl.when(pl.col("pair_type") == "P-T/P").then(
                pl.col("preserved_share_seed")
            )
        )
    pairs = pairs.select(*keys, pl.exclude(keys))
    _write_table(pairs, out_dir / "side_by_side.parquet")

    views = views_table(pairs)
    _write_table(views, out_dir / "views.parquet")
    side_by_side_figure(pairs, out_dir / "side_by_side.png", dpi)

    bridge = pl.concat(bridges, how="diagonal_relaxed")
    if per_seed is not None:
        bridge = bridge.join(per_seed, on=["experiment", "seed"], how="left")
    _write_table(bridge, out_dir / "bridge.parquet")
    bridge_figure(bridge, out_dir / "bridge.png", dpi)

    per_seed_pt = pairs.filter(pl.col("pair_type") == "P-T/P")
    result = {
        "skipped": skipped,
        "experiments": views["experiment"].to_list(),
        "preserved_share": "results/knowledge: metric preserved_ratio, kind and, order 0 "
        "(experiment level: mean and bootstrap interval; per seed: mean over samples)",
        "views": views.to_dicts(),
        "sentences": [view_sentence(row) for row in views.iter_rows(named=True)],
        "agreement_across_seeds": {
            "preserved_vs_cka_pt_p": _spearman(
                _col(per_seed_pt, "preserved_share_seed"), _col(per_seed_pt, "cka_output")
            ),
            "preserved_vs_weight_distance_pt_p": _spearman(
                _col(per_seed_pt, "preserved_share_seed"),
                _col(per_seed_pt, "weight_distance_relative"),
            ),
        },
        "bridge": {
            "unexplained_vs_transferability": _spearman(
                _col(bridge, "unexplained"), _col(bridge, "transferability")
            ),
            "unexplained_vs_preserved": _spearman(
                _col(bridge, "unexplained"), _col(bridge, "preserved_share_seed")
            ),
        },
        "tables": ["side_by_side.parquet", "views.parquet", "bridge.parquet"],
        "figures": ["side_by_side.png", "bridge.png"],
    }
    write_json(out, _json_safe(result))
    return result
