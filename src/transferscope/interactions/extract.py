"""The interactions stage: AND-OR interactions of every checkpoint of one (experiment, seed).

For the same fixed target-test samples, each checkpoint's game v(x_T) (``masking``) is decomposed
into AND and OR interactions (``andor.decompose`` with ``q_thres``) and marked salient
(``salient.salient_mask`` with ``tau``). Checkpoints: the probe's final epoch (the pre-trained
model measured through its linear probe on the frozen backbone, as in Jiang et al.,
arXiv 2410.08455), and every epoch of the fine-tune and scratch runs (epoch 0 included).

Output, in the job's directory ``interactions/<exp>/seed<N>/``:

* ``<regime>/epoch_XXX.parquet``, one per checkpoint: columns sample (test-set index), subset
  (S at Σ_{i∈S} 2^i), v, I_and, I_or, p, q, salient_and, salient_or; one row per (sample, subset).
  Its Parquet key-value metadata ``transferscope`` (JSON, :func:`read_cache_metadata`) records
  the engine version, checkpoint and dataset hashes, settings, game (players, baseline, labels),
  sample_index, the decomposition's convergence, and the precision check.
* ``summary.json``, written last: ``caches`` maps regime -> cache files relative to the
  directory, in epoch order (what ``transferscope.knowledge.caches.seed_caches`` reads).

Conventions. The decomposition runs on v(x_T) − v(x_∅), so I_and(∅) + I_or(∅) = 0 (the lab code's
convention; the knowledge code ignores ∅ anyway). Salient: |I(S)| > τ · max_{S'≠∅} |I(S')|, the
maximum taken over the AND and OR interactions of the sample together, and S = ∅ never salient.
Samples: a class-balanced draw from the eligible test items (all images; CUB images with enough
usable parts; sentences with at least ``text_players`` whole words after tokenisation), with the
fixed seed :data:`SAMPLE_SEED`, so every regime and every seed uses the same samples.

A cache whose metadata matches (engine version, checkpoint hash, dataset hash, settings, game,
samples) is reused, so an interrupted or repeated job only computes what is missing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from transferscope.config import POST_GAME_SETTINGS, schema_defaults
from transferscope.workflow import rerun_command

ENGINE_VERSION = "3"  # bump when masking, players, andor or salient change their results
META_KEY = "transferscope"
REGIMES = ("probe", "finetune", "scratch")  # the probe stands for the pre-trained model
log = logging.getLogger(__name__)
SAMPLE_SEED = 0  # samples (and the words that are players) do not depend on the run's seed
REUSE_KEYS = (
    "engine_version",
    "dataset_manifest_sha256",
    "checkpoint_sha256",
    "settings",
    "game",
    "sample_index",
)
DEFAULTS = schema_defaults("interactions")  # for settings given by hand, not validated
# what absent players become: auto = mean (images) or mask (text)
BASELINES = {"image": ("mean", "black"), "text": ("mask", "pad", "zero")}
PRECISION_CHECK_SAMPLES = 2  # samples evaluated again in fp32 when precision is bf16 or fp16


# ------------------------------------------------------------------------------ cache files


def read_cache_metadata(path: str | Path) -> dict[str, Any]:
    """The ``transferscope`` metadata of an interaction cache (a dict)."""
    import polars as pl

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"interaction cache {path} is missing; recompute its caches: `{rerun_command(path)}`"
        )
    try:
        raw = pl.read_parquet_metadata(path)
    except Exception as err:
        raise ValueError(
            f"interaction cache {path} is corrupt or not Parquet ({err}); recompute its caches: "
            f"`{rerun_command(path)}`"
        ) from None
    if META_KEY not in raw:
        raise ValueError(
            f"{path} has no '{META_KEY}' metadata: not an interaction cache of this engine; "
            f"recompute its caches: `{rerun_command(path)}`"
        )
    try:
        return json.loads(raw[META_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: its '{META_KEY}' metadata is not JSON ({err})") from None


def write_cache(path: str | Path, frame, meta: dict[str, Any]) -> None:
    """Write ``frame`` (polars) with ``meta`` as Parquet key-value metadata, atomically."""
    from transferscope.io import atomic_path

    with atomic_path(path) as tmp:
        frame.write_parquet(tmp, metadata={META_KEY: json.dumps(meta, sort_keys=True)})


def _jsonable(obj):
    """``obj`` as it reads back from JSON (tuples -> lists, …), for comparisons."""
    return json.loads(json.dumps(obj, sort_keys=True))


def cache_matches(path: Path, expected: dict[str, Any], rows: int) -> bool:
    """Whether ``path`` is a complete cache computed from the same inputs."""
    import polars as pl

    try:
        meta = read_cache_metadata(path)
        complete = pl.scan_parquet(path).select(pl.len()).collect().item() == rows
    except (OSError, ValueError, pl.exceptions.PolarsError):
        return False
    return complete and all(meta.get(k) == expected[k] for k in REUSE_KEYS)


# ------------------------------------------------------------------------------ samples, game


def interaction_params(settings: dict[str, Any]) -> dict[str, Any]:
    """The ``interactions`` block with defaults filled in (unknown keys are an error)."""
    given = dict(settings.get("interactions", {}))
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"interactions: unknown keys {unknown}; allowed: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **given}


def choose_samples(labels: torch.Tensor, eligible: torch.Tensor, count: int, seed: int) -> list:
    """``count`` eligible indices, balanced over classes, drawn with ``seed``; sorted.

    The eligible items are visited in one seeded random order and the classes take turns (round
    robin in class order), so each class gets ⌊count / C⌋ or one more unless it runs short.
    """
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    per_class: dict[int, list[int]] = {}
    for i in order.tolist():
        if eligible[i]:
            per_class.setdefault(int(labels[i]), []).append(i)
    queues = [per_class[c] for c in sorted(per_class)]
    chosen: list[int] = []
    while len(chosen) < count and any(queues):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(queue.pop(0))
    return sorted(chosen)


@dataclass
class Game:
    """The fixed samples of a job and their players (shared by every checkpoint)."""

    modality: str
    sample_index: list[int]
    labels: torch.Tensor  # (N,) true classes
    inputs: dict[str, torch.Tensor]  # x (N, C, H, W) normalised, or input_ids / attention_mask
    players: torch.Tensor  # (n, H, W), (N, n, H, W) or (N, n, L) bool
    meta: dict[str, Any]  # metadata "game": JSON
    baseline: float | torch.Tensor | int | None = 0.0  # image: value(s); text: token id, None = 0


def prepare_game(settings: dict[str, Any], params: dict[str, Any], data_dir) -> Game:
    """Read the target test split, choose the samples and build their players."""
    from transferscope.data import load_split, read_manifest

    manifest = read_manifest(data_dir)
    test = load_split(data_dir, "target", "test")
    baseline = baseline_name(params["baseline"], manifest["modality"])
    if manifest["modality"] == "image":
        return _image_game(params, manifest, test, data_dir, baseline, settings["model"])
    return _text_game(settings["model"], params, test, baseline)


def baseline_name(name: str, modality: str) -> str:
    """The baseline ``interactions.baseline`` means for ``modality`` (auto: mean or mask;
    alternative: black or pad, the sensitivity check's other choice)."""
    if name in ("auto", "alternative"):
        return BASELINES[modality][0 if name == "auto" else 1]
    if name not in BASELINES[modality]:
        raise ValueError(
            f"interactions.baseline = '{name}' does not apply to {modality} players; use one of "
            f"{['auto', *BASELINES[modality]]}"
        )
    return name


def _pick(test, eligible: torch.Tensor, params: dict, what: str) -> list[int]:
    """Samples among the ``eligible`` target test items (``what`` names them in messages)."""
    if not eligible.any():
        raise ValueError(f"the target test set has no {what}, so there is no interaction sample")
    index = choose_samples(test.y, eligible, params["samples"], SAMPLE_SEED)
    if len(index) < params["samples"]:
        log.warning(
            f"the target test set has only {len(index)} {what}, fewer than "
            f"interactions.samples = {params['samples']}; using those"
        )
    return index


def _image_game(params: dict, manifest: dict, test, data_dir, baseline: str, spec: dict) -> Game:
    from transferscope.data import dataset_mean_image, normalize_images
    from transferscope.interactions.masking import check_players
    from transferscope.interactions.players import grid_player_masks
    from transferscope.models import image_preprocessing

    channels, height, width = test.x.shape[-3:]
    preprocessing = image_preprocessing(spec)  # a pre-trained model's own normalisation, or None
    if baseline == "mean" and preprocessing is None:
        value, described = 0.0, "0 after normalisation (the dataset mean)"
    elif baseline == "mean":
        value = dataset_mean_image(manifest, preprocessing)
        described = f"the dataset mean, normalised with the {preprocessing['source']}"
    else:  # black: stored pixel value 0, normalised like the images
        black = torch.zeros(1, channels, 1, 1, dtype=torch.uint8)
        value = normalize_images(black, manifest, preprocessing)[0]
        described = "pixel value 0 (black), normalised"
    common = {
        "modality": "image",
        "baseline": described,
        "value": "log-odds z_y - logsumexp_{c != y} z_c",
        "sample_seed": SAMPLE_SEED,
    }
    if "parts" in manifest:  # CUB: annotated parts are the players (manifest "parts" block)
        from transferscope.data import cub

        parts, info = cub.load_parts(data_dir, "test")
        n, radius, priority = int(info["part_players"]), float(info["radius_px"]), info["priority"]
        check_players(n, params["max_players"])
        eligible = cub.usable_part_images(parts, n, radius, priority)
        cub.require_part_images(int(eligible.sum()), params["samples"], info)
        index = _pick(test, eligible, params, f"images with {n} usable parts")
        players = cub.part_player_masks(parts[index], height, radius, n, priority)
        chosen = cub.choose_parts(parts[index], n, radius=radius, priority=priority)
        game = dict(common, players="cub_parts", n_players=n, radius_px=radius,
                    parts=chosen.tolist(), part_names=list(info.get("names", [])))  # fmt: skip
    else:
        grid = int(params["grid"])
        check_players(grid * grid, params["max_players"])
        index = _pick(test, torch.ones(len(test.y), dtype=torch.bool), params, "images")
        players = grid_player_masks(height, width, grid)
        game = dict(common, players="grid", grid=grid, n_players=grid * grid)
    labels = test.y[index]
    game["labels"] = labels.tolist()
    x = normalize_images(test.x[index], manifest, preprocessing)
    return Game("image", index, labels, {"x": x}, players, game, value)


def _text_game(spec: dict, params: dict, test, baseline: str) -> Game:
    from transferscope.interactions.masking import check_players
    from transferscope.interactions.players import choose_words, sentence_players
    from transferscope.models import load_tokenizer
    from transferscope.runtime import derived_seed

    n = int(params["text_players"])
    check_players(n, params["max_players"])
    tokenizer = load_tokenizer(spec)
    max_length = int(spec.get("max_length", 32))  # as transferscope.training.encode_split
    ids, attention, sentences = sentence_players(tokenizer, list(test.x), max_length)
    eligible = torch.tensor([len(s.positions) >= n for s in sentences], dtype=torch.bool)
    index = _pick(test, eligible, params, f"sentences with {n} whole words in {max_length} tokens")
    masks, positions, words = [], [], []
    for i in index:
        generator = torch.Generator().manual_seed(derived_seed(SAMPLE_SEED, "words", i))
        pos, chosen, tokens = choose_words(sentences[i], n, generator)
        positions.append(pos)
        words.append(chosen)
        masks.append(tokens)
    token_id, token = None, None  # zero: the all-zero embedding
    if baseline == "mask":
        token_id, token = tokenizer.mask_token_id, tokenizer.mask_token
    if baseline == "pad" or (baseline == "mask" and token_id is None):  # no mask token: padding
        token_id, token = tokenizer.pad_token_id, tokenizer.pad_token
        if token_id is None:
            raise ValueError(
                f"tokenizer of '{spec['name']}' has no {'padding' if baseline == 'pad' else 'mask or padding'} "
                f"token for interactions.baseline = {baseline}; use interactions.baseline: zero"
            )
    described = "the zero vector" if token_id is None else f"embedding of {token}"
    labels = test.y[index]
    game = {
        "modality": "text",
        "players": "words",
        "n_players": n,
        "words": words,
        "word_positions": positions,
        "baseline": f"{described} (word level, attention mask kept)",
        "value": "log-odds z_y - logsumexp_{c != y} z_c",
        "max_length": max_length,
        "sample_seed": SAMPLE_SEED,
        "labels": labels.tolist(),
    }
    inputs = {"input_ids": ids[index], "attention_mask": attention[index]}
    return Game("text", index, labels, inputs, torch.stack(masks), game, token_id)


# ------------------------------------------------------------------------------ one checkpoint


def game_values(model, game: Game, params: dict, device, precision=None, samples=None):
    """v(x_T) of ``model`` on the game's samples (all, or the first ``samples``): (N, 2^n)."""
    from transferscope.interactions.masking import image_game, text_game

    precision = precision or params["precision"]
    keep = slice(None) if samples is None else slice(0, samples)
    common = dict(batch_size=params["batch_size"], max_players=params["max_players"],
                  device=device, precision=precision)  # fmt: skip
    if game.modality == "image":
        players = game.players if game.players.ndim == 3 else game.players[keep]
        x, y = game.inputs["x"][keep], game.labels[keep]
        return image_game(model, x, y, players, game.baseline, **common)
    with torch.inference_mode():
        baseline = model.embed(torch.tensor([game.baseline or 0], device=device))[0]
        baseline = baseline if game.baseline is not None else torch.zeros_like(baseline)
    return text_game(
        model,
        game.inputs["input_ids"][keep],
        game.inputs["attention_mask"][keep],
        game.labels[keep],
        game.players[keep],
        baseline,
        **common,
    )


def precision_check(model, game: Game, params: dict, device, values: torch.Tensor) -> dict:
    """Error of a bf16/fp16 game against fp32 on the first samples (v and Harsanyi I)."""
    from transferscope.interactions import transforms

    if params["precision"] == "fp32":
        return {"precision": "fp32"}
    k = min(PRECISION_CHECK_SAMPLES, len(game.sample_index))
    exact = game_values(model, game, params, device, precision="fp32", samples=k)
    diff = values[:k] - exact
    check = {
        "precision": params["precision"],
        "checked_samples": k,
        "v_max_abs_error": float(diff.abs().max()),
        "v_max_abs": float(exact.abs().max()),
        "harsanyi_max_abs_error": float(transforms.harsanyi(diff).abs().max()),
        "harsanyi_max_abs": float(transforms.harsanyi(exact).abs().max()),
    }
    log.info(
        f"precision {params['precision']}: max |v - v_fp32| = "
        f"{check['v_max_abs_error']:.3g} (max |v| {check['v_max_abs']:.3g}) on {k} samples"
    )
    return check


def salient_interactions(values: torch.Tensor, q_thres: float, tau: float, device="cpu"):
    """AND-OR decomposition of games ``values`` (N, 2^n) centred at v(x_∅), and their salient
    masks {"and", "or"} (N, 2^n): |I(S)| > τ · max_{S' ≠ ∅} |I(S')| over AND and OR together,
    the empty set never salient. Returns (andor result, masks)."""
    from transferscope.interactions import andor
    from transferscope.interactions.salient import salient_mask

    centred = values - values[:, :1]  # v(x_T) − v(x_∅)
    run_on = device if torch.device(device).type == "cuda" else "cpu"
    res = andor.decompose(centred.to(run_on), q_thres)
    i_and, i_or = res.I_and.double().cpu(), res.I_or.double().cpu()
    reference = torch.cat([i_and[:, 1:], i_or[:, 1:]], -1)  # max over S ≠ ∅, AND and OR
    salient = {}
    for kind, inter in (("and", i_and), ("or", i_or)):
        mask = salient_mask(inter, tau, reference=reference).cpu()
        mask[:, 0] = False
        salient[kind] = mask
    return res, salient


def interaction_table(values: torch.Tensor, sample_index: list[int], params: dict, device):
    """AND-OR decomposition and salient masks of a game -> (polars table, decomposition meta)."""
    import polars as pl

    from transferscope.interactions.salient import reconstruction_error

    res, salient = salient_interactions(values, params["q_thres"], params["tau"], device)
    i_and, i_or = res.I_and.double().cpu(), res.I_or.double().cpu()
    n_samples, size = values.shape
    table = pl.DataFrame(
        {
            "sample": torch.tensor(sample_index).repeat_interleave(size).numpy(),
            "subset": torch.arange(size).repeat(n_samples).numpy(),
            "v": values.reshape(-1).numpy(),
            "I_and": i_and.reshape(-1).numpy(),
            "I_or": i_or.reshape(-1).numpy(),
            "p": res.p.double().cpu().reshape(-1).numpy(),
            "q": res.q.double().cpu().reshape(-1).numpy(),
            "salient_and": salient["and"].reshape(-1).numpy(),
            "salient_or": salient["or"].reshape(-1).numpy(),
        }
    )
    converged = res.converged.cpu().reshape(-1)
    error, full = reconstruction_error(
        values - values[:, :1], i_and, i_or, salient["and"], salient["or"], q=res.q.double().cpu()
    )
    meta = {
        "input": "v(x_T) - v(x_empty)",
        "q_thres": params["q_thres"],
        "samples": n_samples,
        "converged": int(converged.sum()),
        "loss": res.loss.double().cpu().reshape(-1).tolist(),
        "bound": res.bound.double().cpu().reshape(-1).tolist(),
        # ‖v + q − v_salient‖ / ‖v − v(∅)‖ per sample (salient.reconstruction_error)
        "salient_reconstruction_error": error.reshape(-1).tolist(),
        "full_reconstruction_error": full.reshape(-1).tolist(),  # every term: ≈ 0
        "salient_count": (salient["and"].sum(-1) + salient["or"].sum(-1)).tolist(),
    }
    meta["gap"] = res.gap.double().cpu().reshape(-1).tolist()
    meta["iterations"] = res.iterations.cpu().reshape(-1).tolist()
    return table, meta


# ------------------------------------------------------------------------------ the stage


@dataclass
class Checkpoint:
    regime: str
    epoch: int
    path: Path
    sha256: str

    @property
    def cache(self) -> str:
        """The cache's path relative to the job's directory."""
        return f"{self.regime}/epoch_{self.epoch:03d}.parquet"


def checkpoints_of(
    runs: dict[str, Path], experiment: str, seed: int, regimes=REGIMES, final_only=False
) -> list[Checkpoint]:
    """Probe: its final epoch; fine-tune and scratch: every epoch from 0 (from each run's
    summary.json), or their final epochs only with ``final_only`` (``regimes``: the runs taken,
    e.g. a control's probe and fine-tune, ``transferscope.controls``). Each checkpoint is
    identified by the SHA-256 of its bytes on disk, which must equal the one its run recorded: a
    truncated or replaced file is an error, never a reason to reuse the caches of the file it
    replaced."""
    from transferscope.io import read_json, sha256_file
    from transferscope.training import checkpoint_path

    unknown = sorted(set(runs) - set(regimes))
    missing = [r for r in regimes if r not in runs]
    if unknown or missing:
        problems = [f"missing {missing}"] * bool(missing) + [f"not used: {unknown}"] * bool(unknown)
        raise ValueError(
            f"interactions take the runs of exactly {list(regimes)} (the pre-trained model is "
            f"measured through its probe); {', '.join(problems)}"
        )
    out = []
    for regime in regimes:
        summary_path = Path(runs[regime]) / "summary.json"
        summary = read_json(summary_path)
        if (summary.get("experiment"), summary.get("seed")) != (experiment, seed):
            raise ValueError(
                f"{summary_path} is the run of {summary.get('experiment')}/seed"
                f"{summary.get('seed')}, not of {experiment}/seed{seed}; pass this job's runs"
            )
        last = int(summary["epochs"])
        for epoch in [last] if regime == "probe" or final_only else range(last + 1):
            path = checkpoint_path(runs[regime], epoch)
            fix = f"retrain it (it resumes from its intact epochs): {rerun_command(path)}"
            if not path.is_file():
                raise FileNotFoundError(
                    f"checkpoint {path} (listed in {summary_path}) is missing; {fix}"
                )
            sha = sha256_file(path)
            recorded = summary.get("checkpoints", {}).get(path.name)
            if recorded not in (None, sha):
                raise ValueError(
                    f"checkpoint {path} is not the file its run wrote (SHA-256 {sha[:12]}…, "
                    f"{summary_path} records {recorded[:12]}…: truncated or replaced); {fix}"
                )
            out.append(Checkpoint(regime, epoch, path, sha))
    return out


def _normalisation(preprocessing: dict | None) -> str:
    return (
        "with the dataset's statistics"
        if preprocessing is None
        else f"with the {preprocessing['source']}"
    )


def _check_checkpoint(ckpt: Checkpoint, meta: dict, manifest_sha: str, classes: list) -> None:
    from transferscope.models import image_preprocessing

    if meta.get("dataset_manifest_sha256") not in (None, manifest_sha):
        raise ValueError(
            f"checkpoint {ckpt.path} was trained on another version of the dataset (manifest "
            f"{str(meta['dataset_manifest_sha256'])[:12]}…, now {manifest_sha[:12]}…); rerun its "
            f"training stage"
        )
    if meta.get("preprocessing") != image_preprocessing(meta.get("model", {})):
        raise ValueError(
            f"checkpoint {ckpt.path} was trained on inputs normalised "
            f"{_normalisation(meta.get('preprocessing'))}, its model now takes them "
            f"{_normalisation(image_preprocessing(meta.get('model', {})))}; rerun its training stage"
        )
    if meta.get("classes") not in (None, list(classes)):
        raise ValueError(
            f"checkpoint {ckpt.path} predicts classes {meta['classes']}, the target test set has "
            f"{list(classes)}; rerun its training stage"
        )


def extract(
    settings: dict[str, Any],
    data_dir: str | Path,
    runs: dict[str, str | Path],
    out_dir: str | Path,
    progress: bool = True,
    values_from: str | Path | None = None,
) -> Path:
    """Interaction caches of every checkpoint of one (experiment, seed) and their summary.json.

    ``settings``: ``transferscope.config.interaction_settings`` (experiment, seed, dataset, model,
    interactions, device); ``runs``: regime -> run directory for probe, finetune and scratch.
    ``values_from``: another extraction's directory of the same checkpoints and game whose
    settings differ at most in ``POST_GAME_SETTINGS``; its cached v(x_T) are decomposed again
    under these settings instead of being evaluated (a sensitivity variant of τ or q_thres).
    Returns the summary's path.
    """
    from tqdm.auto import tqdm

    from transferscope import runtime
    from transferscope.data import load_split
    from transferscope.data.format import manifest_hash
    from transferscope.io import write_json
    from transferscope.models import load_model

    out_dir, data_dir = Path(out_dir), Path(data_dir)
    experiment, seed = settings["experiment"], int(settings["seed"])
    summary_path = out_dir / "summary.json"
    summary_path.unlink(missing_ok=True)  # the completion marker returns only when complete
    params = interaction_params(settings)
    device = runtime.resolve_device(settings.get("device", "auto"))
    regimes = tuple(settings.get("regimes", REGIMES))  # a control's: probe and finetune
    final_only = settings.get("epochs") == "final"
    checkpoints = checkpoints_of(
        {k: Path(v) for k, v in runs.items()}, experiment, seed, regimes, final_only
    )
    manifest_sha = manifest_hash(data_dir)
    classes = load_split(data_dir, "target", "test").classes
    game = prepare_game(settings, params, data_dir)
    result_settings = {k: v for k, v in params.items() if k != "batch_size"}
    shared = _jsonable(
        {
            "engine_version": ENGINE_VERSION,
            "experiment": experiment,
            "seed": seed,
            "dataset": settings.get("dataset"),
            "dataset_manifest_sha256": manifest_sha,
            "model": settings.get("model"),
            "settings": result_settings,
            "game": game.meta,
            "sample_index": game.sample_index,
            "n_players": game.meta["n_players"],
        }
    )
    rows = len(game.sample_index) * 2 ** game.meta["n_players"]
    reused = 0
    bar = tqdm(checkpoints, desc=f"{experiment}/seed{seed} interactions", unit="ckpt",
               disable=not progress)  # fmt: skip
    for ckpt in bar:
        bar.set_postfix(regime=ckpt.regime, epoch=ckpt.epoch, reused=reused)
        path = out_dir / ckpt.cache
        expected = dict(shared, checkpoint_sha256=ckpt.sha256)
        if cache_matches(path, expected, rows):
            reused += 1
            continue
        model = None
        try:
            tic = time.perf_counter()
            if values_from is not None:
                values, check = cached_values(Path(values_from) / ckpt.cache, expected)
            else:
                model, ckpt_meta = load_model(ckpt.path, device)
                _check_checkpoint(ckpt, ckpt_meta, manifest_sha, classes)
                values = game_values(model, game, params, device)
            masked = time.perf_counter() - tic
            if model is not None:
                check = precision_check(model, game, params, device, values)
            table, decomposition = interaction_table(values, game.sample_index, params, device)
        except ValueError as err:
            raise ValueError(f"{ckpt.path}: {err}") from None
        evaluated = (
            f"{rows} values read from {values_from}"
            if values_from is not None
            else f"{rows} masked inputs, {rows / max(masked, 1e-9):.1f} masks/s"
        )
        log.info(
            "%s/seed%d %s epoch %d: %s (%.2f s); AND-OR %.2f s",
            experiment,
            seed,
            ckpt.regime,
            ckpt.epoch,
            evaluated,
            masked,
            time.perf_counter() - tic - masked,
        )
        if decomposition["converged"] < decomposition["samples"]:
            log.warning(
                f"{ckpt.path}: the AND-OR decomposition did not converge for "
                f"{decomposition['samples'] - decomposition['converged']} of "
                f"{decomposition['samples']} samples (recorded in the cache metadata)"
            )
        meta = dict(
            expected,
            regime=ckpt.regime,
            epoch=ckpt.epoch,
            checkpoint=str(ckpt.path),
            precision=check,
            decomposition=decomposition,
            device=str(device),
            torch_version=torch.__version__,
        )
        write_cache(path, table, meta)
        del model
    caches = {r: [c.cache for c in checkpoints if c.regime == r] for r in regimes}
    _remove_stale(out_dir, caches)
    write_json(
        summary_path,
        dict(
            shared,
            caches=caches,
            checkpoints={c.cache: c.sha256 for c in checkpoints},
            computed=len(checkpoints) - reused,
            final_only=final_only,
            reused=reused,
        ),
    )
    return summary_path


def cached_values(path: Path, expected: dict[str, Any]) -> tuple[torch.Tensor, dict]:
    """v(x_T) of every sample and subset from another extraction's cache of the same checkpoint
    and game (samples × 2^n, subset T at index Σ 2^i over i ∈ T), and its precision record.
    Stops when the cache was computed from anything else than what ``expected`` describes,
    apart from the ``POST_GAME_SETTINGS``."""
    import polars as pl

    meta = read_cache_metadata(path)
    differs = [key for key in REUSE_KEYS if key != "settings" and meta.get(key) != expected[key]]
    ours, theirs = dict(expected["settings"]), dict(meta.get("settings", {}))
    for key in POST_GAME_SETTINGS:
        ours.pop(key, None)
        theirs.pop(key, None)
    if ours != theirs:
        differs.append("settings (beyond " + ", ".join(POST_GAME_SETTINGS) + ")")
    if differs:
        raise ValueError(
            f"cannot reuse the values of {path}: its {', '.join(differs)} differ from this "
            f"extraction's; rebuild it (`{rerun_command(path)}`) or extract without values_from"
        )
    table = pl.read_parquet(path, columns=["sample", "subset", "v"])
    samples = len(expected["sample_index"])
    size = 2 ** expected["n_players"]
    layout = (
        table["sample"].to_list() == [s for s in expected["sample_index"] for _ in range(size)]
        and table["subset"].to_list() == list(range(size)) * samples
    )
    if not layout:
        raise ValueError(
            f"{path}: rows are not (sample, subset) in the game's order; rebuild it "
            f"(`{rerun_command(path)}`)"
        )
    values = torch.from_numpy(table["v"].to_numpy().copy()).reshape(samples, size)
    return values, meta.get("precision", {})


def _remove_stale(out_dir: Path, caches: dict[str, list[str]]) -> None:
    """Delete caches of epochs no longer produced (e.g. after a config change of epochs)."""
    current = {name for names in caches.values() for name in names}
    for regime in REGIMES:
        for path in (out_dir / regime).glob("epoch_*.parquet"):
            if f"{regime}/{path.name}" not in current:
                path.unlink()
