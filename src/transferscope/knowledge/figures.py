"""Knowledge figures: transfer by order, convergence beside accuracy, salient interactions drawn
on the inputs. Matplotlib, PNG, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from transferscope.figures import REGIME_COLORS, run_metrics, save_figure


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def transfer_by_order(transfer_samples_path, out, dpi=120) -> None:
    """Mean number of preserved / discarded / new salient AND and OR interactions per order."""
    import polars as pl

    plt = _plt()
    table = (
        pl.read_parquet(transfer_samples_path)
        .filter(pl.col("order") > 0)
        .group_by(["experiment", "kind", "order"])
        .agg(pl.col("n_preserved", "n_discarded", "n_new").mean())
        .sort("order")
    )
    experiments = sorted(table["experiment"].unique())
    fig, axes = plt.subplots(len(experiments), 2, figsize=(10, 3 * len(experiments)), squeeze=False)
    colors = {"n_preserved": "#2ca02c", "n_discarded": "#7f7f7f", "n_new": "#1f77b4"}
    for r, exp in enumerate(experiments):
        for c, kind in enumerate(("and", "or")):
            ax, sub = (
                axes[r, c],
                table.filter((pl.col("experiment") == exp) & (pl.col("kind") == kind)),
            )
            bottom = np.zeros(sub.height)
            for column, color in colors.items():
                values = sub[column].to_numpy()
                ax.bar(sub["order"], values, bottom=bottom, color=color, label=column[2:])
                bottom += values
            ax.set_title(f"{exp}: {kind.upper()} interactions")
            ax.set_xlabel("order |S|")
            ax.set_ylabel("salient interactions per sample")
            ax.legend(fontsize=8)
    fig.suptitle("Pre-trained knowledge after fine-tuning, by interaction order")
    fig.tight_layout()
    save_figure(fig, out, dpi)


def convergence(convergence_path, run_summaries, out, dpi=120) -> None:
    """Similarity of each epoch's interactions to the final ones (mean, 95% band), fine-tune vs
    scratch, beside the test-accuracy curves of the same runs."""
    import polars as pl

    plt = _plt()
    table = pl.read_parquet(convergence_path).filter(pl.col("metric") == "similarity")
    runs = run_metrics([Path(s).parent for s in run_summaries])
    experiments = sorted(table["experiment"].unique())
    fig, axes = plt.subplots(len(experiments), 2, figsize=(10, 3 * len(experiments)), squeeze=False)
    for r, exp in enumerate(experiments):
        for regime in ("finetune", "scratch"):
            color = REGIME_COLORS[regime]
            sub = table.filter((pl.col("experiment") == exp) & (pl.col("regime") == regime)).sort(
                "epoch"
            )
            ax = axes[r, 0]
            ax.plot(sub["epoch"], sub["mean"], color=color, marker="o", ms=3, label=regime)
            ax.fill_between(sub["epoch"], sub["low"], sub["high"], color=color, alpha=0.2)
            acc = (
                runs.filter((pl.col("experiment") == exp) & (pl.col("regime") == regime))
                .group_by("epoch")
                .agg(pl.col("test_accuracy").mean())
                .sort("epoch")
            )
            axes[r, 1].plot(
                acc["epoch"], acc["test_accuracy"], color=color, marker="o", ms=3, label=regime
            )
        axes[r, 0].set(
            title=f"{exp}: similarity to final interactions",
            xlabel="epoch",
            ylabel="weighted Jaccard",
            ylim=(0, 1.05),
        )
        axes[r, 1].set(
            title=f"{exp}: test accuracy", xlabel="epoch", ylabel="accuracy", ylim=(0, 1.05)
        )
        for ax in axes[r]:
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    fig.suptitle("How fast and how directly each regime reaches its final knowledge")
    fig.tight_layout()
    save_figure(fig, out, dpi)


def image_players(game: dict, k: int, shape, sample_parts=None):
    """bool (n, H, W): the players of sample k as the extraction defined them, from the game
    its cache recorded: grid cells, or the discs around the CUB parts it chose (``sample_parts``:
    that image's part locations, (15, 3))."""
    from transferscope.interactions.players import grid_player_masks

    if game.get("players") == "cub_parts":
        from transferscope.data.parts import part_player_masks

        chosen = [int(p) for p in game["parts"][k]]
        radius = float(game["radius_px"])
        return part_player_masks(sample_parts[None], shape[0], radius, len(chosen), chosen)[0]
    return grid_player_masks(shape[0], shape[1], int(game["grid"]))


def salient_examples(
    interaction_summaries, data_dirs: dict, out, top=3, samples=3, dpi=120
) -> None:
    """For a few samples per experiment (first seed), the strongest salient AND interactions of
    the pre-trained (probe), fine-tuned and scratch model: patches outlined / words listed."""
    from transferscope.data import load_split, read_manifest
    from transferscope.knowledge.caches import seed_caches

    plt = _plt()
    firsts = {}
    for summary in interaction_summaries:
        seed = seed_caches(summary)
        firsts.setdefault(seed.experiment, seed)
    # at most the samples each experiment's caches hold
    rows = [
        (exp, k)
        for exp in sorted(firsts)
        for k in range(min(samples, len(firsts[exp].final("probe").meta["sample_index"])))
    ]
    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 2.8 * len(rows)), squeeze=False)
    for r, (exp, k) in enumerate(rows):
        seed = firsts[exp]
        caches = {reg: seed.final(reg) for reg in ("probe", "finetune", "scratch")}
        meta = caches["probe"].meta
        manifest = read_manifest(data_dirs[exp])
        test = load_split(data_dirs[exp], "target", "test")
        index = meta["sample_index"][k]
        if manifest["modality"] == "image":  # the sample's players, the same in every panel
            image = test.x[index].float().mean(0).numpy()
            sample_parts = None
            if meta["game"].get("players") == "cub_parts":
                from transferscope.data import cub

                sample_parts = cub.load_parts(data_dirs[exp], "test")[0][index]
            players = image_players(meta["game"], k, image.shape, sample_parts)
        for c, (regime, cache) in enumerate(caches.items()):
            ax = axes[r, c]
            values = cache.I["and"][k] * cache.salient["and"][k]
            best = [s for s in np.argsort(-np.abs(values))[:top] if values[s] != 0]
            label = "pre-trained (probe)" if regime == "probe" else regime
            ax.set_title(f"{exp} #{index}: {label}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
            if manifest["modality"] == "image":
                ax.imshow(image, cmap="gray")
                for rank, s in enumerate(best):
                    color = plt.cm.tab10(rank)
                    union = players[[p for p in range(len(players)) if s >> p & 1]].any(0)
                    ax.contour(union.numpy().astype(float), levels=[0.5], colors=[color],
                               linewidths=1.5)  # fmt: skip
                    ax.text(
                        0,
                        image.shape[0] + 2 + 3 * rank,
                        f"I={values[s]:+.2f}",
                        color=color,
                        fontsize=7,
                        va="top",
                    )
            else:
                words = meta["game"]["words"][k]
                text = "\n".join(
                    f"I={values[s]:+.2f}: "
                    + " ∧ ".join(w for p, w in enumerate(words) if s >> p & 1)
                    for s in best
                )
                ax.text(
                    0.02,
                    0.5,
                    f"{test.x[index]}\n\n{text or '(no salient interaction)'}",
                    fontsize=7,
                    va="center",
                    wrap=True,
                )
    fig.suptitle("Strongest salient AND interactions (outlines: the players of each interaction)")
    fig.tight_layout()
    save_figure(fig, out, dpi)


def knockout(knockout_path, out, dpi=120) -> None:
    """Knockout curves: mean drop v(N) − v(N ∖ K_m) against the mean number of knocked-out
    players |K_m|, m = 0, 1, …, per arm (preserved, new, random of the same orders), one panel
    per experiment; bands are the bootstrap intervals of the drop (``knowledge.knockout``)."""
    import polars as pl

    from transferscope.knowledge.knockout import ARMS

    plt = _plt()
    table = pl.read_parquet(knockout_path).filter(pl.col("arm").is_in(ARMS))
    experiments = sorted(table["experiment"].unique())
    fig, axes = plt.subplots(
        1, len(experiments), figsize=(4.5 * len(experiments), 3.6), squeeze=False
    )
    colors = {"preserved": "#2ca02c", "new": "#1f77b4", "random": "#7f7f7f"}
    for ax, exp in zip(axes[0], experiments):
        for arm in ARMS:
            sub = table.filter((pl.col("experiment") == exp) & (pl.col("arm") == arm))
            drop = sub.filter(pl.col("metric") == "drop").sort("m")
            players = sub.filter(pl.col("metric") == "players").sort("m")["mean"]
            ax.plot(players, drop["mean"], color=colors[arm], marker="o", ms=3, label=arm)
            ax.fill_between(players, drop["low"], drop["high"], color=colors[arm], alpha=0.2)
        ax.axhline(0, color="black", lw=0.5)
        ax.set(title=exp, xlabel="knocked-out players |K|", ylabel="drop in v (log-odds)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Knocking out the players of the strongest salient terms first")
    fig.tight_layout()
    save_figure(fig, out, dpi)
