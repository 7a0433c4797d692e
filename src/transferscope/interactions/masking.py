"""Masked evaluation: the game v(x_T) for every subset T of the players of many samples.

v(x_T) is the log-odds of the true class y when only the players in T are present,

    v(x_T) = log p(y | x_T) / (1 − p(y | x_T)) = z_y − logsumexp_{c≠y} z_c,

computed from the logits z (stable form, as the SJTU XAI lab's code; docs/references.md §1). An
absent player is replaced by the baseline: for images the dataset's mean pixel in the model's
input units (0 under the dataset's own statistics; a pre-trained timm model's mean and std move
it, see ``transferscope.data.dataset_mean_image``), for text a baseline word embedding (the ``[MASK]`` token's) at the embedding level,
with the attention mask kept. Positions that belong to no player stay present.

All N · 2^n masked inputs of N samples are enumerated in one flat order (sample-major; subset T
at index Σ_{i∈T} 2^i) and evaluated in batches of ``batch_size`` under ``torch.inference_mode``
with the model in ``eval()`` (batch norm must not see the masked copies as a batch). The forward
pass runs in fp32 unless ``precision`` is bf16 or fp16 (autocast); fp32 means IEEE fp32 on the
GPU too (TF32 convolutions and matmuls, torch's default on Ampere and newer, are turned off for
the evaluation); v is returned in float64.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_MAX_PLAYERS = 16


def log_odds(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_y − logsumexp_{c≠y} z_c in float64, per row of ``logits`` (N, C)."""
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"log-odds need logits of shape (N, C ≥ 2), got {tuple(logits.shape)}")
    z = logits.double()
    labels = labels.to(z.device).long()
    true = z.gather(1, labels[:, None]).squeeze(1)
    others = z.scatter(1, labels[:, None], float("-inf")).logsumexp(1)
    return true - others


def subset_members(subsets: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n) bool: player i is in subset s iff bit i of s is set."""
    return (subsets[:, None] >> torch.arange(n, device=subsets.device)) & 1 == 1


def check_players(n: int, max_players: int) -> None:
    if n > max_players:
        raise ValueError(
            f"{n} players (2^{n} = {2**n} masked inputs per sample) is more than "
            f"interactions.max_players = {max_players}; use fewer players (interactions.grid, "
            f"text_players, or the dataset's part_players) or raise interactions.max_players"
        )


def autocast(device: torch.device, precision: str):
    """The autocast context of ``precision`` (:func:`ieee_fp32` for fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"interactions.precision = '{precision}' unknown; allowed: {sorted(PRECISIONS)}"
        )
    dtype = PRECISIONS[precision]
    if dtype is None:
        return ieee_fp32()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def ieee_fp32():
    """TF32 off for cuDNN convolutions and CUDA matmuls inside the block, the previous settings
    restored after (torch enables TF32 convolutions by default, so an "fp32" game would not be)."""
    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def _device_of(model: nn.Module, device) -> torch.device:
    if device is not None:
        return torch.device(device)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _per_sample(players: torch.Tensor, n_samples: int, what: str) -> torch.Tensor:
    """Player masks (n, …) shared by all samples or (N, n, …) per sample -> (N, n, …) view."""
    if players.dtype != torch.bool:
        raise ValueError(f"player masks must be bool, got {players.dtype}")
    if players.ndim == 3 and what == "images":
        players = players.unsqueeze(0)
    elif players.ndim == 2 and what == "tokens":
        players = players.unsqueeze(0)
    if players.shape[0] == 1:
        players = players.expand(n_samples, *players.shape[1:])
    return players


def evaluate_game(
    model: nn.Module,
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    labels: torch.Tensor,
    n_players: int,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """v for all N · 2^n (sample, subset) pairs: (N, 2^n) float64 on the CPU.

    ``forward(sample, present)`` returns the model's logits for a batch of masked inputs, given
    each row's sample index (B,) and its present players (B, n) bool. ``model`` is put in eval()
    for the evaluation and back into its previous mode afterwards. ``batch_size`` is an upper
    bound: a batch that runs out of device memory is retried at half the size (a warning says
    which size fits), so one setting serves small and large GPUs.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"interactions.batch_size must be >= 1, got {batch_size}")
    n_samples, size = len(labels), 2**n_players
    total = n_samples * size
    labels = labels.to(device)
    out = torch.empty(total, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            autocast(device, precision),
            tqdm(
                total=total, desc="masked inputs", unit="input", leave=False, disable=not progress
            ) as bar,
        ):
            start = 0
            while start < total:
                flat = torch.arange(start, min(start + batch_size, total), device=device)
                sample, subset = flat // size, flat % size
                try:
                    logits = forward(sample, subset_members(subset, n_players))
                except torch.OutOfMemoryError:
                    batch_size = _smaller_batch(batch_size, device)
                    continue
                out[start : start + len(flat)] = log_odds(logits.float(), labels[sample]).cpu()
                start += len(flat)
                bar.update(len(flat))
    finally:
        model.train(was_training)
    values = out.view(n_samples, size)
    bad = ~torch.isfinite(values)
    if bad.any():
        i, s = (int(k) for k in bad.nonzero()[0])
        raise ValueError(
            f"v(x_T) is not finite for {int(bad.sum())} of {total} masked inputs (first: sample "
            f"{i}, subset {s}); the model's logits contain NaN or inf. Check the checkpoint "
            f"(retrain it) or, with interactions.precision = {precision}, use fp32"
        )
    return values


def _smaller_batch(batch_size: int, device: torch.device) -> int:
    """Half the batch after an out-of-memory error (an error once a single input does not fit)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if batch_size == 1:
        raise RuntimeError(
            f"one masked input does not fit into the memory of {device}; use a smaller model or "
            f"input size, or run on a device with more memory"
        )
    warnings.warn(
        f"masked inputs: out of memory on {device} at batch size {batch_size}; retrying at "
        f"{batch_size // 2} (set interactions.batch_size to at most that to skip this)",
        stacklevel=3,
    )
    return batch_size // 2


def image_game(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    players: torch.Tensor,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 2048,
    max_players: int = DEFAULT_MAX_PLAYERS,
    device=None,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """v(x_T) of images ``x`` (N, C, H, W) with true classes ``y`` (N,): (N, 2^n) float64.

    ``players`` is (n, H, W) bool, shared by all images (a patch grid), or (N, n, H, W) (per-image
    regions such as CUB parts). A pixel is kept iff a present player covers it or no player does;
    every other pixel takes ``baseline`` (a scalar, or a tensor broadcastable to (C, H, W)).
    """
    if x.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
    n_samples, _, height, width = x.shape
    per_sample = _per_sample(players, n_samples, "images")
    expected = (n_samples, height, width)
    if per_sample.ndim != 4 or (per_sample.shape[0], *per_sample.shape[2:]) != expected:
        raise ValueError(
            f"player masks of shape {tuple(players.shape)} do not match images of shape "
            f"{tuple(x.shape)}; expected (n, {height}, {width}) or ({n_samples}, n, {height}, "
            f"{width})"
        )
    n = per_sample.shape[1]
    check_players(n, max_players)
    device = _device_of(model, device)
    x = x.to(device, torch.float32)
    base = torch.as_tensor(baseline, dtype=torch.float32, device=device)
    masks = per_sample.to(device).reshape(n_samples, n, height * width).float()
    uncovered = masks.sum(1) == 0  # (N, H·W): pixels of no player stay present

    def forward(sample, present):
        return model(masked_images(x, base, masks, uncovered, sample, present))

    return evaluate_game(model, forward, y, n, batch_size, device, precision, progress)


def masked_images(x, base, masks, uncovered, sample, present) -> torch.Tensor:
    """The masked copies x_T: row b is image ``sample[b]`` of ``x`` (N, C, H, W) with only the
    players ``present[b]`` (B, n) kept and every other covered pixel set to ``base``. ``masks``
    (N, n, H·W) float are the players' pixels per image and ``uncovered`` (N, H·W) the pixels of
    no player (kept). Differentiable in the model that consumes it (``interactions.penalty``)."""
    height, width = x.shape[-2:]
    keep = torch.empty(len(sample), height * width, dtype=torch.bool, device=x.device)
    for s in sample.unique().tolist():  # rows are sample-major: few samples per batch
        rows = sample == s
        keep[rows] = (present[rows].float() @ masks[s] > 0) | uncovered[s]
    keep = keep.view(-1, 1, height, width)
    return torch.where(keep, x[sample], base)


def text_game(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    y: torch.Tensor,
    players: torch.Tensor,
    baseline: torch.Tensor,
    batch_size: int = 2048,
    max_players: int = DEFAULT_MAX_PLAYERS,
    device=None,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """v(x_T) of tokenised sentences (N, L) with true classes ``y``: (N, 2^n) float64.

    ``players`` is (N, n, L) bool (the tokens of each player word) or (n, L) shared. The tokens
    of absent players get the ``baseline`` embedding (D,) at the word-embedding level
    (``model.embed``, before positions are added); the attention mask is kept, so sequence length
    and positions do not change. The model must accept ``inputs_embeds`` and ``attention_mask``.
    """
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask "
            f"{tuple(attention_mask.shape)} must both be (N, L)"
        )
    n_samples, length = input_ids.shape
    per_sample = _per_sample(players, n_samples, "tokens")
    if per_sample.ndim != 3 or per_sample.shape[0] != n_samples or per_sample.shape[2] != length:
        raise ValueError(
            f"player masks of shape {tuple(players.shape)} do not match token ids of shape "
            f"{tuple(input_ids.shape)}; expected ({n_samples}, n, {length})"
        )
    n = per_sample.shape[1]
    check_players(n, max_players)
    device = _device_of(model, device)
    ids, attention = input_ids.to(device), attention_mask.to(device)
    masks = per_sample.to(device).float()
    with torch.inference_mode():
        embeddings = model.embed(ids)  # (N, L, D)
    base = baseline.to(device, embeddings.dtype).reshape(1, 1, -1)
    if base.shape[-1] != embeddings.shape[-1]:
        raise ValueError(
            f"baseline embedding has {base.shape[-1]} values, the model's embeddings "
            f"{embeddings.shape[-1]}"
        )

    def forward(sample, present):
        absent = torch.empty(len(sample), length, dtype=torch.bool, device=device)
        for s in sample.unique().tolist():
            rows = sample == s
            absent[rows] = (~present[rows]).float() @ masks[s] > 0
        embeds = torch.where(absent[..., None], base, embeddings[sample])
        return model(inputs_embeds=embeds, attention_mask=attention[sample])

    return evaluate_game(model, forward, y, n, batch_size, device, precision, progress)
