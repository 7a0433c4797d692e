"""Per-experiment summary pieces: weight-spectra table, the theory bridge (feature overlap of
P's frozen features vs transferability), and the headline numbers of summary.json."""

from __future__ import annotations

from transferscope.analyses.runs import _need


def spectra_summary(spectra):
    """Per model, seed and weight: largest singular value, Frobenius norm, stable rank."""
    import polars as pl

    return (
        spectra.group_by("model", "seed", "module", "parameter", maintain_order=True)
        .agg(
            top=pl.col("singular_value").max(),
            frobenius=pl.col("singular_value").pow(2).sum().sqrt(),
            rank=pl.len(),
        )
        .with_columns(
            stable_rank=pl.when(pl.col("top") > 0)
            .then(pl.col("frobenius").pow(2) / pl.col("top").pow(2))
            .otherwise(0.0)
        )
    )


def bridge_table(exp, seeds, run_map, models, task, device, ridge):
    """Per seed: `feature_overlap` of P's frozen (probe backbone) features on the target
    train/test sets, and transferability = scratch test error − fine-tune test error."""
    import polars as pl
    import torch

    from transferscope.theory.overlap import feature_overlap

    rows = []
    for s in seeds:
        model = models[("P", s)].eval()
        with torch.inference_mode():
            f_tr = torch.cat(
                [
                    model.features(x.to(device)).float().cpu()
                    for x in task.train_inputs["x"].split(256)
                ]
            )
            f_te = torch.cat(
                [
                    model.features(x.to(device)).float().cpu()
                    for x in task.test_inputs["x"].split(256)
                ]
            )
        overlap = feature_overlap(f_tr, task.train_y, f_te, task.test_y, ridge=ridge)
        final = {
            regime: _need(run_map, exp, regime, s).metrics().row(-1, named=True)
            for regime in ("probe", "finetune", "scratch")
        }
        err = {r: 1.0 - float(final[r]["test_accuracy"]) for r in final}
        rows.append(
            {
                "experiment": exp,
                "seed": s,
                "unexplained": overlap["unexplained"],
                "r2": overlap["r2"],
                "readout_accuracy": overlap["accuracy"],
                "n_train": overlap["n_train"],
                "n_test": overlap["n_test"],
                "n_features": overlap["n_features"],
                "ridge": overlap["ridge"],
                "probe_test_error": err["probe"],
                "finetune_test_error": err["finetune"],
                "scratch_test_error": err["scratch"],
                "transferability": err["scratch"] - err["finetune"],
                "features": "probe final checkpoint (P's frozen backbone), eval mode",
            }
        )
    return pl.DataFrame(rows)


def headline(mistakes, cka, heights, crit, bridge, modules) -> dict:
    import polars as pl

    def means(frame, value, key="pair_type"):
        if frame.height == 0 or value not in frame.columns:
            return {}
        agg = frame.group_by(key, maintain_order=True).agg(pl.col(value).mean())
        return {row[0]: float(row[1]) for row in agg.iter_rows()}

    out_mod = modules[-1]
    cka_out = cka.filter(pl.col("diagonal") & (pl.col("module_a") == out_mod))
    return {
        "cka_output_module": out_mod,
        "cka_output": means(cka_out, "cka"),
        "cka_mean_over_modules": means(cka.filter(pl.col("diagonal")), "cka"),
        "barrier_loss": means(heights, "barrier_loss"),
        "common_mistakes": means(mistakes, "both_wrong"),
        "uncommon_mistakes": means(mistakes, "uncommon"),
        # edge-of-grid values are bounds, not measurements: left out of the median, counted
        "criticality_median": {
            f"{role}/{mod}": None if v is None else float(v)
            for role, mod, v in crit.group_by("role", "module", maintain_order=True)
            .agg(pl.col("criticality").median())
            .iter_rows()
        },
        "criticality_on_grid_edge": {
            f"{role}/{mod}": f"{int(edge)} of {int(n)}"
            for role, mod, edge, n in crit.group_by("role", "module", maintain_order=True)
            .agg(pl.col("on_grid_edge").sum(), pl.len())
            .iter_rows()
        },
        "transferability_mean": float(bridge["transferability"].mean()),
        "unexplained_mean": float(bridge["unexplained"].mean()),
    }
