"""Knockout curves on constructed games whose interactions are known exactly."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from transferscope.interactions.extract import write_cache
from transferscope.knowledge import knockout as ko

N = 6  # players; subset S at index Σ_{i∈S} 2^i


def mask(*players: int) -> int:
    return sum(1 << p for p in players)


def game(terms: dict[int, float]) -> np.ndarray:
    """v(T) = Σ_{S⊆T} I(S) over all 2^N subsets (zeta transform of the AND terms)."""
    v = np.zeros(2**N)
    for subset, value in terms.items():
        v[subset] += value
    for i in range(N):
        with_i = (np.arange(2**N) >> i) & 1 == 1
        v[with_i] += v[np.arange(2**N)[with_i] ^ (1 << i)]
    return v


def write_seed(root, experiment: str, seed: int, pre: list[dict], ft: list[dict]):
    """One (experiment, seed) extraction: probe and fine-tune caches of AND-only games, one
    dict of terms per sample; salient: |I| > 0.05·max|I|. Returns its summary.json."""
    directory = root / experiment / f"seed{seed}"
    meta = {"sample_index": list(range(len(ft))), "n_players": N}
    for regime, samples, name in (("probe", pre, "epoch_002"), ("finetune", ft, "epoch_001")):
        frames = []
        for k, terms in enumerate(samples):
            i_and = np.zeros(2**N)
            for subset, value in terms.items():
                i_and[subset] = value
            top = np.abs(i_and).max()
            frames.append(
                pl.DataFrame(
                    {
                        "sample": np.full(2**N, k),
                        "subset": np.arange(2**N),
                        "v": game(terms),
                        "q": np.zeros(2**N),
                        "I_and": i_and,
                        "I_or": np.zeros(2**N),
                        "salient_and": (np.abs(i_and) > 0.05 * top) if top > 0 else i_and != 0,
                        "salient_or": np.zeros(2**N, bool),
                    }
                )
            )
        (directory / regime).mkdir(parents=True)
        write_cache(directory / regime / f"{name}.parquet", pl.concat(frames), meta)
    caches = {"probe": ["probe/epoch_002.parquet"],
              "finetune": ["finetune/epoch_000.parquet", "finetune/epoch_001.parquet"]}  # fmt: skip
    summary = directory / "summary.json"
    summary.write_text(json.dumps({"experiment": experiment, "seed": seed, "caches": caches}))
    return summary


PLANTED = {mask(0, 1): 2.0, mask(2): 1.0}  # disjoint from every other term


def background(rng) -> dict[int, float]:
    """Terms on players 3, 4, 5 only: a salient pair, a salient triple and a weak single."""
    return {
        mask(3, 4): rng.uniform(-3.0, -1.5),
        mask(3, 4, 5): rng.uniform(0.5, 1.0),
        mask(5): 0.01,
    }


def test_knocking_out_planted_terms_drops_v_by_exactly_their_sum(tmp_path):
    rng = np.random.default_rng(0)
    ft = [{**PLANTED, **background(rng)} for _ in range(4)]
    pre = [dict(PLANTED) for _ in ft]  # the planted terms are the preserved ones
    summary = write_seed(tmp_path, "exp", 0, pre, ft)
    v = game(ft[0])
    players, drop, confident = ko.knockout_curve(v, list(PLANTED))
    assert drop[0] == pytest.approx(2.0, abs=1e-12)
    assert drop[-1] == pytest.approx(sum(PLANTED.values()), abs=1e-12)
    assert list(players) == [2, 3]
    assert list(confident) == list(v[(2**N - 1) ^ np.array([mask(0, 1), mask(0, 1, 2)])] > 0)
    table = ko.knockout_samples([summary])
    kept = table.filter((pl.col("arm") == "preserved") & (pl.col("m") == pl.col("n_terms")))
    assert kept.height == 4
    np.testing.assert_allclose(kept["drop"], sum(PLANTED.values()), atol=1e-12)
    # new terms: the background's salient pair and triple; their players 3, 4, 5 also carry
    # the weak (not salient) {5}, which goes with them
    new = table.filter((pl.col("arm") == "new") & (pl.col("sample") == 0)).sort("m")
    assert new["n_terms"][0] == 2
    background_terms = [ft[0][s] for s in (mask(3, 4), mask(3, 4, 5), mask(5))]
    assert new["drop"][-1] == pytest.approx(sum(background_terms), abs=1e-12)


def test_random_arm_matches_orders_and_strengths_as_documented():
    orders = ko.popcounts(2**N)
    rng = np.random.default_rng(1)
    targets = [(mask(0, 1), 2.0), (mask(2), 1.0), (mask(0, 2, 4), 0.5), (mask(1, 3), 0.1)]
    candidates = {mask(3, 4): 3.0, mask(2, 5): 2.5, mask(4, 5): 0.9, mask(5): 1.5,
                  mask(3): 0.05, mask(1, 2, 3): 9.0}  # fmt: skip
    matches, firsts = set(), set()
    for _ in range(200):
        draw = ko.random_terms(targets, candidates, N, rng)
        picks = [s for s, _ in draw]
        assert len(set(picks)) == len(picks)  # no subset twice within a draw
        for (target, strength), (pick, match) in zip(targets, draw):
            assert orders[pick] == orders[target]
            assert pick not in {t for t, _ in targets}
            if match == 2:
                assert strength / ko.STRENGTH_FACTOR <= candidates[pick]
                assert candidates[pick] <= strength * ko.STRENGTH_FACTOR
            if match >= 1:
                assert pick in candidates
            matches.add((target, match))
        firsts.add(picks[0])
    # a strength match is taken whenever one exists, salience next: {1,2,3} (9.0) is too
    # strong for 0.5, and no order-2 candidate lies within a factor 2 of 0.1
    assert matches == {(mask(0, 1), 2), (mask(2), 2), (mask(0, 2, 4), 1), (mask(1, 3), 1)}
    assert firsts == {mask(3, 4), mask(2, 5)}  # drawn at random among the matching ones


def test_random_arm_without_candidates_still_matches_orders():
    rng = np.random.default_rng(2)
    targets = [(2**N - 1, 1.0), (2**N - 1, 0.5), (mask(0), 0.3)]
    draw = ko.random_terms(targets, {}, N, rng)
    assert [ko.popcounts(2**N)[s] for s, _ in draw] == [N, N, 1]
    assert [m for _, m in draw] == [0, 0, 0]


def test_curves_grow_with_m_and_a_monotone_game_only_drops(tmp_path):
    rng = np.random.default_rng(3)
    # every term positive: v grows with T, so knocking out more can only lower it
    ft = [
        {s: rng.uniform(0.2, 1.0) for s in rng.choice(np.arange(1, 2**N), 12, replace=False)}
        for _ in range(5)
    ]
    pre = [{s: x for s, x in list(terms.items())[:5]} for terms in ft]
    table = ko.knockout_samples([write_seed(tmp_path, "exp", 0, pre, ft)], draws=4)
    for _, curve in table.group_by(["sample", "arm"]):
        curve = curve.sort("m")
        assert curve["m"].to_list() == list(range(curve.height))
        assert np.all(np.diff(curve["players"].to_numpy()) >= 0)
        assert np.all(np.diff(curve["drop"].to_numpy()) >= -1e-12)
        assert curve["players"][-1] <= N


def test_preserved_beats_random_when_only_preserved_terms_carry_the_prediction(tmp_path):
    # preserved terms push v up; the only same-order alternatives push it down
    ft = [{**PLANTED, mask(3, 4): -2.5, mask(5): -1.2} for _ in range(3)]
    pre = [dict(PLANTED) for _ in ft]
    table = ko.knockout_samples([write_seed(tmp_path, "exp", 0, pre, ft)], draws=3)
    per_sample = table.unique(["seed", "sample"])
    assert (per_sample["preserved_minus_random"] > 0).all()
    np.testing.assert_allclose(
        per_sample["preserved_minus_random"],
        per_sample["preserved_drop_matched"] - per_sample["random_drop_matched"],
    )
    strength = table.filter((pl.col("arm") == "random") & (pl.col("m") > 0))["strength_matched"]
    assert (strength == 1.0).all()  # 2.5 and 1.2 lie within a factor 2 of 2.0 and 1.0


def test_mean_drop_up_to_integrates_the_interpolated_curve():
    # (0,0) → (1,1) → (3,1): area up to 2 is 0.5 + 1
    assert ko.mean_drop_up_to(np.array([1, 3]), np.array([1.0, 1.0]), 2.0) == pytest.approx(0.75)
    assert np.isnan(ko.mean_drop_up_to(np.array([1]), np.array([1.0]), 0.0))


def test_table_has_every_arm_for_every_experiment(tmp_path):
    rng = np.random.default_rng(4)
    ft = [{**PLANTED, **background(rng)} for _ in range(3)]
    summaries = [write_seed(tmp_path, "shares", s, [dict(PLANTED) for _ in ft], ft) for s in (0, 1)]
    # a probe with nothing salient: no preserved (and so no random) terms anywhere
    summaries.append(write_seed(tmp_path, "shares_nothing", 0, [{} for _ in ft], ft))
    ko.knockout_tables(summaries, tmp_path / "out", resamples=20)
    table = pl.read_parquet(tmp_path / "out" / "knockout.parquet")
    assert (tmp_path / "out" / "knockout_samples.csv").is_file()
    for experiment in ("shares", "shares_nothing"):
        arms = set(table.filter(pl.col("experiment") == experiment)["arm"])
        assert arms == {*ko.ARMS, ko.PAIRED}
    both = table.filter((pl.col("experiment") == "shares") & (pl.col("metric") == "drop"))
    assert set(both["n_seeds"]) == {2}
    empty = table.filter(
        (pl.col("experiment") == "shares_nothing") & (pl.col("arm") == "preserved")
    )
    assert set(empty["m"]) == {0}


def test_knockout_claim_is_paired_by_seed_and_sample(tmp_path):
    from transferscope.knowledge.claims import knockout_claims

    ft = [{**PLANTED, mask(3, 4): -2.5, mask(5): -1.2} for _ in range(6)]
    pre = [dict(PLANTED) for _ in ft]
    summaries = [write_seed(tmp_path, "exp", s, pre, ft) for s in (0, 1)]
    samples = ko.knockout_samples(summaries, draws=2)
    learned = {"learned": True}
    status = {("exp", "probe"): learned, ("exp", "finetune"): learned}
    (row,) = knockout_claims(samples, status, resamples=50, confidence=0.95)
    assert row["excess"] > 0 and row["low"] > 0 and row["n"] == 12
    assert row["observed"] - row["null"] == pytest.approx(row["excess"])
    assert row["p_value"] < 0.05 and row["reason"] == ""
    unlearned = {**status, ("exp", "finetune"): {"learned": False, "accuracy": 0.5,
                                                  "chance": 0.5, "p_value": 0.6}}  # fmt: skip
    (row,) = knockout_claims(samples, unlearned, resamples=50, confidence=0.95)
    assert "finetune did not learn" in row["reason"]


# ------------------------------------------------- the players drawn in the salient-examples figure


def test_figures_outline_the_players_the_extraction_used():
    """The figure redraws each player from the game its cache recorded: grid cells, or for CUB
    the discs around the chosen parts (not grid squares, which would be wrong for parts)."""
    from transferscope.data.parts import choose_parts, part_player_masks
    from transferscope.interactions.players import grid_player_masks
    from transferscope.knowledge.figures import image_players

    assert torch.equal(
        image_players({"players": "grid", "grid": 3}, 0, (32, 32)), grid_player_masks(32, 32, 3)
    )
    generator = torch.Generator().manual_seed(0)
    parts = torch.cat([torch.rand(2, 15, 2, generator=generator) * 64, torch.ones(2, 15, 1)], dim=2)
    priority, n, radius = [3, 0, 7, 11, 5, 1], 4, 6.0
    chosen = choose_parts(parts, n, radius, priority)
    game = {"players": "cub_parts", "parts": chosen.tolist(), "radius_px": radius}
    expected = part_player_masks(parts, 64, radius, n, priority)
    for k in range(2):
        drawn = image_players(game, k, (64, 64), parts[k])
        assert drawn.shape == (n, 64, 64)
        assert torch.equal(drawn, expected[k])
