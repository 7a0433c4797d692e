"""Knockout curves: the causal test at inference (docs/references.md §4), read from the caches.

A cache holds each model's game v(x_T) for every subset T of the n players (docs/references.md
§1), so knocking out (setting to the baseline) a player set K needs no forward pass:

    v after knocking out K = v(N ∖ K),      drop(K) = v(N) − v(N ∖ K),
    confident-correct after the knockout: v(N ∖ K) > 0  (v is the log-odds, so p(y) > 1/2).

The drop is the model's own, not a reconstruction's. In the decomposition's terms (v + q =
v_and + v_or, v_and(T) = Σ_{S⊆T} I_and(S), v_or(T) = Σ_{S∩T≠∅} I_or(S), q the bounded noise),
knocking out K removes every AND term that meets K and every OR term inside K, so knocking out
all the players of a term removes that term, with whatever else those players carry.

Per sample, the terms (kind, S) salient in the final fine-tuned model form three arms, against
the pre-trained model (its probe's final cache), shared as in ``metrics.shared``:

* ``preserved``: salient in both with the same sign (when sign agreement is on);
* ``new``: salient in the fine-tuned model only;
* ``random``: for the m-th preserved term S (by |I_ft| descending), a subset T drawn at random
  with |T| = |S| exactly, from the first non-empty pool, without repeating a subset within a
  draw: (1) subsets salient in the fine-tuned model (either kind), not among the preserved
  subsets, with strength s(T) = max over its salient kinds of |I_ft(T)| within a factor
  ``STRENGTH_FACTOR`` of |I_ft(S)|: order and strength matched (``match`` 2); (2) the same
  without the strength condition: order and salience matched (1); (3) any subset of that order
  not among the preserved subsets (0), then any subset of that order. The random term takes
  the place of its preserved partner, so both curves knock out terms of the same orders in
  the same sequence; ``RANDOM_DRAWS`` independent draws per sample are averaged.

Curve of an arm: its terms sorted by |I_ft| descending (random: in its partners' order),
K_m = ∪_{j≤min(m, terms)} S_j for m = 0, 1, … M: past its last term K_m stays the union of all
of them (a sample without terms in an arm knocks out nothing), so every sample counts at every
m, and M per (experiment, arm) is the last m at which any sample's K_m still grows. K_m only
grows with m. Arms differ in term sizes, so each point also records |K_m|, and the
per-sample comparison is made at matched numbers of knocked-out players: with d(p) the drop
interpolated linearly in p = |K| through (0, 0) and the curve's points, the mean drop over
p ∈ [0, P] is ∫₀^P d(p) dp / P, P = min(|K_M| of preserved, |K_M| of the draw);
``preserved_minus_random`` = that mean for the preserved arm minus that for the random draw,
averaged over draws (NaN where the sample has no preserved term).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from transferscope.knowledge import metrics
from transferscope.knowledge.caches import KINDS, check_comparable, seed_caches

ARMS = ("preserved", "new", "random")
STRENGTH_FACTOR = 2.0  # a random term's |I_ft| within [s/2, 2s] of its partner's counts as matched
RANDOM_DRAWS = 10
CURVE_METRICS = ("players", "drop", "confident", "strength_matched")  # rows of a curve
PAIRED = "preserved − random"


def popcounts(n_subsets: int) -> np.ndarray:
    """|S| of every subset index 0 … 2^n − 1 (S at index Σ_{i∈S} 2^i)."""
    index = np.arange(n_subsets)
    bits = (index[:, None] >> np.arange(max(n_subsets.bit_length() - 1, 1))) & 1
    return bits.sum(1)


def arm_terms(i_pre, i_ft, m_pre, m_ft, sign_agreement: bool = True) -> dict:
    """One sample's preserved and new terms as (subset, |I_ft|) lists, |I_ft| descending.

    ``i_*`` and ``m_*`` map each kind to that sample's (2^n,) interactions and salient flags."""
    arms = {"preserved": [], "new": []}
    for kind in KINDS:
        kept = metrics.shared(m_pre[kind], m_ft[kind], i_pre[kind], i_ft[kind], sign_agreement)
        for arm, mask in (("preserved", kept), ("new", m_ft[kind] & ~kept)):
            arms[arm] += [(int(s), float(abs(i_ft[kind][s]))) for s in np.flatnonzero(mask)]
    # stable: equal strengths keep subset order, so curves are reproducible
    return {arm: sorted(terms, key=lambda t: -t[1]) for arm, terms in arms.items()}


def salient_strengths(i_ft, m_ft) -> dict[int, float]:
    """Subset → max over the kinds in which it is salient of |I_ft(S)| (one sample)."""
    out: dict[int, float] = {}
    for kind in KINDS:
        for s in np.flatnonzero(m_ft[kind]):
            out[int(s)] = max(out.get(int(s), 0.0), float(abs(i_ft[kind][s])))
    return out


def random_terms(targets, candidates: dict[int, float], n_players: int, rng) -> list:
    """One draw of the random arm: per target (subset, strength), a (subset, match) of the same
    order (module docstring: match 2 = order and strength, 1 = order and salience, 0 = order)."""
    orders = popcounts(2**n_players)
    excluded = {s for s, _ in targets}
    drawn: set[int] = set()
    out = []
    for subset, strength in targets:
        order, taken = orders[subset], excluded | drawn
        pool = [t for t in candidates if orders[t] == order and t not in taken]
        close = [
            t
            for t in pool
            if strength / STRENGTH_FACTOR <= candidates[t] <= strength * STRENGTH_FACTOR
        ]
        same_order = np.flatnonzero(orders == order)
        fallback = [int(t) for t in same_order if t not in taken]
        tiers = ((2, close), (1, pool), (0, fallback), (0, same_order.tolist()))
        match, choices = next((m, c) for m, c in tiers if c)
        pick = int(choices[rng.integers(len(choices))])
        drawn.add(pick)
        out.append((pick, match))
    return out


def knockout_curve(v, subsets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|K_m|, v(N) − v(N ∖ K_m), v(N ∖ K_m) > 0) for m = 1 … len(subsets), K_m = ∪_{j≤m} S_j;
    ``v`` is one sample's (2^n,) game."""
    full = v.shape[-1] - 1
    knocked = np.bitwise_or.accumulate(np.asarray(subsets, dtype=np.int64))
    remaining = v[full ^ knocked]
    return popcounts(v.shape[-1])[knocked], v[full] - remaining, remaining > 0


def mean_drop_up_to(players, drops, upto: float) -> float:
    """∫₀^upto d(p) dp / upto, d linear through (0, 0) and the points (players, drops)."""
    if upto <= 0:
        return float("nan")
    p, first = np.unique(np.concatenate([[0], players]), return_index=True)
    d = np.concatenate([[0.0], drops])[first]  # one K per |K| along a curve: equal drops
    grid = np.union1d(p[p < upto], [upto])
    return float(np.trapezoid(np.interp(grid, p, d), grid) / upto)


def _sample_curves(v, terms, candidates, n_players, rng, draws: int) -> tuple[dict, dict]:
    """One sample's curves, arm → (4, 1 + terms) array of players, drop, confident and
    strength_matched at m = 0, 1, …, and its matched-player comparison."""
    start = [0.0, 0.0, float(v[-1] > 0), np.nan]
    curves = {arm: np.array(start)[:, None] for arm in ARMS}
    for arm in ("preserved", "new"):
        if terms[arm]:
            players, drop, confident = knockout_curve(v, [s for s, _ in terms[arm]])
            rows = [players, drop, confident, np.full(len(drop), np.nan)]
            curves[arm] = np.hstack([curves[arm], np.array(rows, dtype=float)])
    compare = dict(
        matched_players=np.nan, preserved_drop_matched=np.nan, random_drop_matched=np.nan
    )
    if not terms["preserved"]:
        return curves, compare
    sums, matched = np.zeros((4, len(terms["preserved"]))), []
    preserved = curves["preserved"][:2, 1:]
    for _ in range(draws):
        draw = random_terms(terms["preserved"], candidates, n_players, rng)
        players, drop, confident = knockout_curve(v, [s for s, _ in draw])
        sums += [players, drop, confident, np.cumsum([m == 2 for _, m in draw])]
        upto = min(preserved[0, -1], players[-1])
        matched.append(
            (upto, mean_drop_up_to(*preserved, upto), mean_drop_up_to(players, drop, upto))
        )
    mean = sums / draws
    mean[3] /= np.arange(1, mean.shape[1] + 1)  # share of the first m terms
    curves["random"] = np.hstack([curves["random"], mean])
    upto, kept, rand = np.asarray(matched).mean(0)
    compare = dict(matched_players=upto, preserved_drop_matched=kept, random_drop_matched=rand)
    return curves, compare


def _last_growth(curve) -> int:
    """The last m at which |K_m| grows (0 if it never does): later points repeat it."""
    grows = np.flatnonzero(np.diff(curve[0]) > 0)
    return int(grows[-1] + 1) if grows.size else 0


def knockout_samples(summaries, sign_agreement: bool = True, draws: int = RANDOM_DRAWS):
    """Per (experiment, seed, sample, arm, m), m = 0 … M: players, drop, confident and, for
    the random arm, strength_matched (the share of its first m terms matched in strength),
    averaged over draws. K_m is the union of the top min(m, n_terms) terms, so every sample has
    every m (a sample without terms in an arm knocks out nothing), and M per (experiment, arm)
    is the last m at which any sample's K_m still grows. Per sample, repeated on its rows:
    n_terms of the arm, matched_players, preserved_drop_matched, random_drop_matched and
    preserved_minus_random (module docstring)."""
    import polars as pl

    found = []  # (experiment, seed, sample, n_terms by arm, curves, comparison)
    for summary in summaries:
        seed = seed_caches(summary)
        pre, ft = seed.final("probe"), seed.final("finetune")
        check_comparable(pre, ft)
        n_players = ft.I["and"].shape[-1].bit_length() - 1
        for row, sample in enumerate(ft.meta["sample_index"]):
            i_pre, i_ft, m_pre, m_ft = (
                {k: table[k][row] for k in KINDS}
                for table in (pre.I, ft.I, pre.salient, ft.salient)
            )
            terms = arm_terms(i_pre, i_ft, m_pre, m_ft, sign_agreement)
            preserved = {s for s, _ in terms["preserved"]}
            candidates = {
                s: a for s, a in salient_strengths(i_ft, m_ft).items() if s not in preserved
            }
            rng = np.random.default_rng(
                [seed.seed, int(sample), zlib.crc32(seed.experiment.encode())]
            )
            curves, compare = _sample_curves(
                ft.game["v"][row], terms, candidates, n_players, rng, draws
            )
            n_terms = {**{a: len(t) for a, t in terms.items()}, "random": len(preserved)}
            found.append((seed.experiment, seed.seed, int(sample), n_terms, curves, compare))
    longest: dict[tuple, int] = {}
    for experiment, _, _, _, curves, _ in found:
        for arm, curve in curves.items():
            key = (experiment, arm)
            longest[key] = max(longest.get(key, 0), _last_growth(curve))
    frames = []
    for experiment, seed, sample, n_terms, curves, compare in found:
        for arm, curve in curves.items():
            last = longest[(experiment, arm)]
            # past the arm's last term, K_m stays the union of all of them
            index = np.minimum(np.arange(last + 1), curve.shape[1] - 1)
            frames.append(
                pl.DataFrame(
                    dict(zip(CURVE_METRICS, curve[:, index]), m=np.arange(last + 1))
                ).with_columns(
                    experiment=pl.lit(experiment),
                    seed=pl.lit(seed, pl.Int64),
                    sample=pl.lit(sample, pl.Int64),
                    arm=pl.lit(arm),
                    n_terms=pl.lit(n_terms[arm], pl.Int64),
                    **{k: pl.lit(float(x)) for k, x in compare.items()},
                )
            )
    frame = pl.concat(frames).with_columns(pl.col(CURVE_METRICS).fill_nan(None))
    first = ["experiment", "seed", "sample", "arm", "m", "n_terms"]
    return (
        frame.with_columns(
            pl.col("matched_players", "preserved_drop_matched", "random_drop_matched").fill_nan(
                None
            )
        )
        .with_columns(
            preserved_minus_random=pl.col("preserved_drop_matched") - pl.col("random_drop_matched")
        )
        .select(*first, pl.exclude(first))
        .sort(first[:5])
    )


def knockout_tables(
    summaries,
    out_dir,
    sign_agreement: bool = True,
    resamples: int = 1000,
    confidence: float = 0.95,
    draws: int = RANDOM_DRAWS,
) -> None:
    """results/knowledge/knockout_samples.* (``knockout_samples``) and knockout.* : per
    (experiment, arm, m) the mean of each of ``CURVE_METRICS`` over every sample, with a
    hierarchical bootstrap interval over seeds and samples; and per experiment the matched-player comparison (arm ``PAIRED``, m null)."""
    import polars as pl

    from transferscope.knowledge.aggregate import summarise, write_table

    out_dir = Path(out_dir)
    samples = knockout_samples([Path(s) for s in summaries], sign_agreement, draws)
    write_table(samples, out_dir / "knockout_samples.parquet")
    curves = summarise(samples, ["experiment", "arm", "m"], CURVE_METRICS, resamples, confidence)
    per_sample = samples.unique(["experiment", "seed", "sample"], maintain_order=True)
    paired = summarise(
        per_sample.with_columns(arm=pl.lit(PAIRED), m=pl.lit(None, pl.Int64)),
        ["experiment", "arm", "m"],
        ("matched_players", "preserved_drop_matched", "random_drop_matched",
         "preserved_minus_random"),
        resamples,
        confidence,
    )  # fmt: skip
    table = pl.concat([curves, paired], how="vertical_relaxed")
    write_table(
        table.sort(["experiment", "arm", "m", "metric"], nulls_last=True),
        out_dir / "knockout.parquet",
    )
