"""The interactions stage (``interactions.extract``) on tiny digits runs trained here: what a cache
holds, reuse of unchanged caches, recomputation of changed ones, and bad input."""

from __future__ import annotations

import copy
import json
import shutil

import polars as pl
import pytest
import torch
from safetensors.torch import load_file, save_file

from transferscope.config import interaction_settings, run_settings
from transferscope.interactions import extract as ex
from transferscope.interactions import transforms as T
from transferscope.io import read_json, sha256_file, write_json
from transferscope.training import train_run

EXP = "digits_resnet"
SAMPLES, GRID = 3, 2  # n = 4 players: 16 masks per sample
CACHES = 5  # probe's final epoch, fine-tune and scratch epochs 0 and 1


@pytest.fixture(scope="module")
def config(smoke_config):
    config = copy.deepcopy(smoke_config)
    for regime in ("pretrain", "probe", "finetune", "scratch"):
        config["training"][regime]["epochs"] = 1
    config["interactions"] = dict(config["interactions"], samples=SAMPLES, grid=GRID)
    return config


@pytest.fixture(scope="module")
def runs(config, prepared, tmp_path_factory):
    """{regime: run directory} for probe, finetune and scratch of seed 0."""
    root = tmp_path_factory.mktemp("extract_runs")

    def train(regime, init=None):
        run = root / regime
        settings = run_settings(config, EXP, regime, 0)
        train_run(settings, prepared["digits"], run, init, threads=1, progress=False)
        return run

    final = train("pretrain") / "epoch_001.safetensors"
    return {"probe": train("probe", final), "finetune": train("finetune", final), "scratch": train("scratch")}  # fmt: skip


def extract(config, prepared, runs, out, **interactions):
    settings = interaction_settings(config, EXP, 0)
    settings["interactions"] = dict(settings["interactions"], **interactions)
    return read_json(ex.extract(settings, prepared["digits"], runs, out, progress=False))


def cache_files(out):
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.parquet")}


def replace_checkpoint(run, epoch, state, meta):
    """Overwrite a run's checkpoint and record its new hash in the run's summary.json."""
    path = run / f"epoch_{epoch:03d}.safetensors"
    save_file(state, str(path), metadata={"transferscope": json.dumps(meta)})
    summary = read_json(run / "summary.json")
    summary["checkpoints"][path.name] = sha256_file(path)
    write_json(run / "summary.json", summary)
    return path


def copied_runs(runs, dest):
    return {regime: shutil.copytree(run, dest / regime) for regime, run in runs.items()}


def read_checkpoint(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["transferscope"])
    return load_file(str(path)), meta


def test_caches_hold_an_exact_decomposition_and_the_salient_rule(config, prepared, runs, tmp_path):
    summary = extract(config, prepared, runs, tmp_path)
    assert summary["computed"] == CACHES and summary["reused"] == 0
    assert summary["caches"] == {
        "probe": ["probe/epoch_001.parquet"],
        "finetune": ["finetune/epoch_000.parquet", "finetune/epoch_001.parquet"],
        "scratch": ["scratch/epoch_000.parquet", "scratch/epoch_001.parquet"],
    }
    tau, size = config["interactions"]["tau"], 2 ** (GRID * GRID)
    for name in (c for caches in summary["caches"].values() for c in caches):
        table = pl.read_parquet(tmp_path / name).sort("sample", "subset")
        meta = ex.read_cache_metadata(tmp_path / name)
        assert meta["n_players"] == GRID * GRID and len(meta["sample_index"]) == SAMPLES
        assert table.height == SAMPLES * size
        assert table["subset"].to_list() == list(range(size)) * SAMPLES
        col = {c: torch.tensor(table[c].to_numpy()).reshape(SAMPLES, size) for c in table.columns}
        # the AND and OR parts rebuild the centred game up to the bounded noise q
        rebuilt = T.harsanyi_inverse(col["I_and"]) + T.or_inverse(col["I_or"])
        torch.testing.assert_close(
            rebuilt, col["v"] - col["v"][:, :1] + col["q"], rtol=0, atol=1e-9
        )
        bound = config["interactions"]["q_thres"] * (col["v"][:, -1] - col["v"][:, 0]).abs()
        assert (col["q"].abs() <= bound[:, None] + 1e-12).all()
        # salient: |I(S)| > τ·max over S ≠ ∅ of AND and OR together; ∅ never
        top = torch.cat([col["I_and"][:, 1:], col["I_or"][:, 1:]], 1).abs().amax(1, keepdim=True)
        for kind in ("and", "or"):
            expected = col[f"I_{kind}"].abs() > tau * top
            expected[:, 0] = False
            assert torch.equal(col[f"salient_{kind}"].bool(), expected)
        assert meta["decomposition"]["converged"] == SAMPLES
        # faithfulness in the metadata: the salient terms alone, and every term (exact)
        kept = T.harsanyi_inverse(col["I_and"] * col["salient_and"]) + T.or_inverse(col["I_or"] * col["salient_or"])  # fmt: skip
        target = col["v"] - col["v"][:, :1] + col["q"]
        error = (target - kept).norm(dim=1) / (col["v"] - col["v"][:, :1]).norm(dim=1)
        found = meta["decomposition"]
        torch.testing.assert_close(
            torch.tensor(found["salient_reconstruction_error"], dtype=torch.float64), error
        )
        assert max(found["full_reconstruction_error"]) < 1e-9


def test_faithfulness_rows_are_the_final_models_of_each_regime(config, prepared, runs, tmp_path):
    from transferscope.knowledge.aggregate import faithfulness_samples

    summary = extract(config, prepared, runs, tmp_path)
    rows = faithfulness_samples([tmp_path / "summary.json"]).sort("regime", "sample")
    assert rows.height == 3 * SAMPLES
    for regime, caches in summary["caches"].items():
        found = ex.read_cache_metadata(tmp_path / caches[-1])["decomposition"]
        mine = rows.filter(pl.col("regime") == regime)
        table = pl.read_parquet(tmp_path / caches[-1]).sort("sample", "subset")
        col = {c: torch.tensor(table[c].to_numpy()).reshape(SAMPLES, -1) for c in table.columns}
        centred = col["v"] - col["v"][:, :1]
        kept = T.harsanyi_inverse(col["I_and"] * col["salient_and"]) + T.or_inverse(col["I_or"] * col["salient_or"])  # fmt: skip
        # against the model's own v, not v + q (which the decomposition rebuilds exactly)
        scale = centred.norm(dim=1)
        assert mine["salient_error"].to_list() == pytest.approx(
            ((centred - kept).norm(dim=1) / scale).tolist()
        )
        noise = (col["q"].norm(dim=1) / scale).tolist()
        assert mine["noise_share"].to_list() == pytest.approx(noise)
        assert mine["full_error"].to_list() == pytest.approx(noise)  # all terms leave only q
        assert max(found["full_reconstruction_error"]) < 1e-9 < max(noise)
        shares = [c / (2 * (2 ** (GRID * GRID) - 1)) for c in found["salient_count"]]
        assert mine["salient_share"].to_list() == pytest.approx(shares)


def test_unchanged_caches_are_reused_and_an_interrupted_job_resumes(
    config, prepared, runs, tmp_path
):
    extract(config, prepared, runs, tmp_path)
    before = cache_files(tmp_path)
    again = extract(config, prepared, runs, tmp_path)
    assert (again["computed"], again["reused"]) == (0, CACHES)
    assert cache_files(tmp_path) == before  # not rewritten
    (tmp_path / "finetune/epoch_001.parquet").unlink()  # as if killed before this cache
    resumed = extract(config, prepared, runs, tmp_path)
    assert (resumed["computed"], resumed["reused"]) == (1, CACHES - 1)
    changed = extract(config, prepared, runs, tmp_path, tau=0.2)  # a setting: all recomputed
    assert (changed["computed"], changed["reused"]) == (CACHES, 0)


def test_a_changed_checkpoint_recomputes_only_its_cache(config, prepared, runs, tmp_path):
    copies = copied_runs(runs, tmp_path / "runs")
    out = tmp_path / "interactions"
    extract(config, prepared, copies, out)
    before = cache_files(out)
    state, meta = read_checkpoint(copies["scratch"] / "epoch_000.safetensors")
    replace_checkpoint(copies["finetune"], 1, state, meta)  # same architecture, other weights
    summary = extract(config, prepared, copies, out)
    assert (summary["computed"], summary["reused"]) == (1, CACHES - 1)
    after = cache_files(out)
    assert [name for name in before if before[name] != after[name]] == [
        "finetune/epoch_001.parquet"
    ]
    old = pl.read_parquet(out / "scratch/epoch_000.parquet")
    new = pl.read_parquet(out / "finetune/epoch_001.parquet")
    assert old["v"].to_list() == new["v"].to_list()  # the scratch weights' game, recomputed


def test_a_checkpoint_with_other_classes_stops_without_writing_its_cache(config, prepared, runs, tmp_path):  # fmt: skip
    copies = copied_runs(runs, tmp_path / "runs")
    state, meta = read_checkpoint(copies["scratch"] / "epoch_001.safetensors")
    assert meta["classes"], "training records the classes a checkpoint predicts"
    bad = replace_checkpoint(copies["scratch"], 1, state, dict(meta, classes=meta["classes"][::-1]))
    out = tmp_path / "interactions"
    with pytest.raises(ValueError, match=f"{bad}.*predicts classes"):
        extract(config, prepared, copies, out)
    assert not (out / "scratch/epoch_001.parquet").exists()
    assert not (out / "summary.json").exists()
    assert not [
        p for p in out.rglob("*") if p.is_file() and p.suffix != ".parquet"
    ]  # no temporaries


def test_too_many_players_stops_before_any_file(config, prepared, runs, tmp_path):
    with pytest.raises(ValueError, match="25 players.*max_players = 16"):
        extract(config, prepared, runs, tmp_path / "interactions", grid=5)
    assert not list((tmp_path / "interactions").rglob("*.parquet"))


@pytest.mark.parametrize("baseline", ["mean", "black"])
def test_image_baseline_is_what_absent_patches_become(config, prepared, runs, tmp_path, baseline):
    """v(∅) is the log-odds of the image with every patch absent: the dataset mean (0 after
    normalisation) or black pixels (stored value 0, normalised)."""
    from transferscope.data import load_split, normalize_images, read_manifest
    from transferscope.interactions.masking import log_odds
    from transferscope.models import load_model

    summary = extract(config, prepared, runs, tmp_path, baseline=baseline)
    table = pl.read_parquet(tmp_path / "scratch/epoch_001.parquet").filter(pl.col("subset") == 0)
    manifest, test = (
        read_manifest(prepared["digits"]),
        load_split(prepared["digits"], "target", "test"),
    )
    empty = torch.zeros_like(test.x[:1])  # stored pixel value 0 everywhere
    image = torch.zeros_like(normalize_images(empty, manifest)) if baseline == "mean" else normalize_images(empty, manifest)  # fmt: skip
    model, _ = load_model(runs["scratch"] / "epoch_001.safetensors")
    labels = test.y[summary["sample_index"]]
    with torch.inference_mode():
        expected = log_odds(model(image.expand(len(labels), -1, -1, -1)), labels).double()
    torch.testing.assert_close(torch.tensor(table.sort("sample")["v"].to_numpy()), expected, rtol=0, atol=1e-5)  # fmt: skip
    assert ("black" in summary["game"]["baseline"]) == (baseline == "black")


def test_text_baselines_pick_the_token_or_zero_and_wrong_ones_are_refused(smoke_config, prepared):
    from transferscope.models import load_tokenizer

    settings = interaction_settings(smoke_config, "sentiment_minilm", 0)
    tokenizer = load_tokenizer(settings["model"])
    for name, token in (("auto", tokenizer.mask_token_id), ("mask", tokenizer.mask_token_id),
                        ("pad", tokenizer.pad_token_id), ("zero", None)):  # fmt: skip
        params = ex.interaction_params(dict(settings, interactions={"baseline": name}))
        game = ex.prepare_game(settings, params, prepared["sentiment"])
        assert game.baseline == token
    params = ex.interaction_params(dict(settings, interactions={"baseline": "black"}))
    with pytest.raises(ValueError, match="baseline = 'black' does not apply to text"):
        ex.prepare_game(settings, params, prepared["sentiment"])


def test_values_from_another_extraction_equal_a_fresh_one_and_refuse_another_game(
    config, prepared, runs, tmp_path
):
    """A τ / q_thres variant decomposes the cached v of the default extraction: its caches equal
    those of an extraction that evaluated every mask again; a different game is refused."""
    base = tmp_path / "base"
    extract(config, prepared, runs, base)
    variant = dict(tau=0.1, q_thres=0.02)
    settings = interaction_settings(config, EXP, 0)
    settings["interactions"] = dict(settings["interactions"], **variant)
    reused = tmp_path / "reused"
    ex.extract(settings, prepared["digits"], runs, reused, progress=False, values_from=base)
    fresh = tmp_path / "fresh"
    extract(config, prepared, runs, fresh, **variant)
    names = sorted(cache_files(fresh))
    assert names == sorted(cache_files(reused)) and len(names) == CACHES
    for name in names:
        a, b = pl.read_parquet(fresh / name), pl.read_parquet(reused / name)
        assert a.equals(b), name
        assert ex.read_cache_metadata(reused / name)["settings"]["tau"] == 0.1
    other = dict(settings, interactions=dict(settings["interactions"], baseline="black"))
    with pytest.raises(ValueError, match="cannot reuse the values of .*settings"):
        ex.extract(other, prepared["digits"], runs, tmp_path / "other", progress=False,
                   values_from=base)  # fmt: skip
    assert not (tmp_path / "other" / "summary.json").exists()
