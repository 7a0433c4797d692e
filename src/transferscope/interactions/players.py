"""Players of the interaction game: image patches of a grid, CUB part regions, or words.

A game over n players needs, per sample, one boolean mask per player over the input's positions
(pixels or tokens). Player i is bit i of a subset index: S is stored at Σ_{i∈S} 2^i
(``transforms.subset_index``). Positions that belong to no player are never masked ("non-players
stay present"), for images and text alike.

* Image grid: a ``grid``×``grid`` partition of the image; player p is row p // grid, column
  p % grid (row-major), with the edges of :func:`grid_bounds`.
* CUB parts: ``transferscope.data.cub.part_player_masks`` (disjoint discs around annotated parts,
  see docs/datasets.md); only images with enough usable parts can be samples.
* Text: whitespace-separated words; a word's players mask is all tokens the tokenizer made of it.
  Following Chen et al. 2024 (generalizable-interaction; docs/references.md §1), a sentence
  with more words than players gets ``n`` of them drawn at random (seeded per sample, kept in
  sentence order); the other words and the special tokens stay present.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def grid_bounds(size: int, grid: int) -> list[tuple[int, int]]:
    """Half-open [start, end) pixel ranges of ``grid`` near-equal cells along a side of ``size``.

    Edge k is round(k · size / grid) (halves rounded up), e.g. size 32, grid 3 ->
    [(0, 11), (11, 21), (21, 32)].
    """
    if not 1 <= grid <= size:
        raise ValueError(
            f"a grid of {grid} cells does not fit a side of {size} pixels "
            f"(interactions.grid must be between 1 and {size})"
        )
    edges = [(2 * k * size + grid) // (2 * grid) for k in range(grid + 1)]
    return list(zip(edges[:-1], edges[1:]))


def grid_player_masks(height: int, width: int, grid: int) -> torch.Tensor:
    """(grid², height, width) bool: player p covers cell (p // grid, p % grid) of the grid."""
    rows, cols = grid_bounds(height, grid), grid_bounds(width, grid)
    masks = torch.zeros(grid * grid, height, width, dtype=torch.bool)
    for p in range(grid * grid):
        (r0, r1), (c0, c1) = rows[p // grid], cols[p % grid]
        masks[p, r0:r1, c0:c1] = True
    return masks


# ------------------------------------------------------------------------------------ text words


def word_spans(text: str) -> list[tuple[int, int]]:
    """Character spans [start, end) of the whitespace-separated words of ``text``."""
    spans, start = [], None
    for i, char in enumerate(text + " "):
        if char.isspace():
            if start is not None:
                spans.append((start, i))
                start = None
        elif start is None:
            start = i
    return spans


def word_token_masks(
    spans: list[tuple[int, int]], offsets: torch.Tensor
) -> tuple[list[int], torch.Tensor]:
    """Words that survive tokenisation whole, and the tokens of each.

    ``offsets`` is a fast tokenizer's (L, 2) character offset mapping (special and padding tokens
    have empty spans). A word counts only if its last character is inside a kept token, i.e. it
    was not cut by truncation. Returns (word positions, (len(positions), L) bool token masks).
    """
    start, end = offsets[:, 0], offsets[:, 1]
    real = end > start
    positions, masks = [], []
    for w, (w0, w1) in enumerate(spans):
        tokens = real & (start < w1) & (end > w0)
        if tokens.any() and int(end[tokens].max()) >= w1:
            positions.append(w)
            masks.append(tokens)
    empty = torch.zeros(0, len(offsets), dtype=torch.bool)
    return positions, torch.stack(masks) if masks else empty


@dataclass
class SentencePlayers:
    """The whole words of one tokenised sentence (candidates for players)."""

    words: list[str]  # all whitespace words of the sentence
    positions: list[int]  # indices into ``words`` that survived tokenisation whole
    token_masks: torch.Tensor  # (len(positions), L) bool


def sentence_players(tokenizer, texts: list[str], max_length: int):
    """Tokenise ``texts`` exactly as training does (padding and truncation to ``max_length``) and
    find each sentence's whole words. Returns (input_ids, attention_mask, [SentencePlayers])."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer: word players need its "
            f"character offsets; use a model whose tokenizer has a fast (Rust) version"
        )
    enc = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_offsets_mapping=True,
    )
    sentences = []
    for text, offsets in zip(texts, enc["offset_mapping"]):
        spans = word_spans(text)
        positions, masks = word_token_masks(spans, offsets)
        sentences.append(SentencePlayers([text[a:b] for a, b in spans], positions, masks))
    return enc["input_ids"], enc["attention_mask"], sentences


def choose_words(sentence: SentencePlayers, n: int, generator: torch.Generator):
    """``n`` of the sentence's whole words, drawn with ``generator`` and kept in sentence order.

    Returns (word positions, words, (n, L) bool token masks); a sentence with fewer than ``n``
    whole words is an error (such sentences are not eligible as samples).
    """
    if len(sentence.positions) < n:
        raise ValueError(
            f"sentence '{' '.join(sentence.words)[:60]}' has {len(sentence.positions)} whole "
            f"words after tokenisation, fewer than interactions.text_players = {n}"
        )
    pick = torch.randperm(len(sentence.positions), generator=generator)[:n].sort().values.tolist()
    positions = [sentence.positions[i] for i in pick]
    return positions, [sentence.words[p] for p in positions], sentence.token_masks[pick]
