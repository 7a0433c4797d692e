"""The causal test in training: a penalty on chosen AND interactions of the model being trained.

For a training image x with players N (the extraction's grid players and baseline,
``interactions.extract.prepare_game``) and a subset S of low order, the AND (Harsanyi)
interaction with every player outside S absent is (docs/references.md §1)

    I(S) = Σ_{T⊆S} (−1)^{|S|−|T|} v(x_T),   v(x_T) = z_y − logsumexp_{c≠y} z_c,

v the extraction's log-odds (``masking.log_odds``) of the model in eval() mode on the masked
copy x_T (``masking.masked_images``), so it equals ``transforms.harsanyi`` of the extraction's
game at S, and it is differentiable in the weights. A step evaluates the 2^{|S|} masked copies
of each sampled (image, S) pair once (shared subsets of one image are evaluated once).

Ω_pre(x): the salient low-order sets of the pre-trained model P (seen through its linear probe,
as the extraction measures P): S with 1 ≤ |S| ≤ ``max_order`` and
|I_P(S)| > τ · max_{1≤|S'|≤max_order} |I_P(S')| (``salient.salient_mask``), kept to the
``sets_per_image`` strongest (at low orders the τ rule alone marks nearly every set, and random
sets would then be the inherited ones), found once before training on ``samples`` training
images. The random arm takes, per image, as many sets of each
order as Ω_pre(x) holds, drawn uniformly among all sets of that order (the random-overlap
convention of docs/references.md §4: it may hit Ω_pre by chance). Penalty of one step on a
uniform draw B of ``masks_per_step`` (image, S) pairs from the arm's pool:

    protect:          λ · mean_B (I_θ(S) − I_P(S))² / s²
    suppress, random: λ · mean_B I_θ(S)² / s²

with s² = mean over the pool's images of (v_P(x_N) − v_P(x_∅))², the scale of P's game, so λ
means the same in every experiment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transferscope.interactions.masking import log_odds, masked_images

ARMS = ("protect", "suppress", "random")


def submasks(subset: int) -> list[int]:
    """Every T ⊆ S of a subset index S (bit i = player i), S itself first, ∅ last."""
    out, t = [], subset
    while True:
        out.append(t)
        if t == 0:
            return out
        t = (t - 1) & subset


def popcount(subset: int) -> int:
    return bin(int(subset)).count("1")


@dataclass
class ImagePlayers:
    """Grid players of a set of images, in the layout ``masking.masked_images`` takes."""

    x: torch.Tensor  # (N, C, H, W) model inputs (normalised)
    y: torch.Tensor  # (N,) true classes
    masks: torch.Tensor  # (N, n, H·W) float
    uncovered: torch.Tensor  # (N, H·W) bool
    base: torch.Tensor  # baseline value(s), broadcastable to (C, H, W)
    n: int

    @classmethod
    def from_grid(cls, x, y, players: torch.Tensor, baseline) -> ImagePlayers:
        """``players``: (n, H, W) bool shared by all images (the extraction's patch grid)."""
        if players.ndim != 3:
            raise ValueError(
                "the causal penalty takes players shared by all images (a patch grid, "
                f"interactions.grid); got player masks of shape {tuple(players.shape)}"
            )
        n, height, width = players.shape
        flat = players.reshape(n, height * width).float()
        masks = flat.unsqueeze(0).expand(len(x), n, height * width)
        uncovered = (flat.sum(0) == 0).unsqueeze(0).expand(len(x), height * width)
        base = torch.as_tensor(baseline, dtype=torch.float32)
        return cls(x.float(), y.long(), masks, uncovered, base, n)

    def to(self, device) -> ImagePlayers:
        return ImagePlayers(
            self.x.to(device),
            self.y.to(device),
            self.masks.to(device),
            self.uncovered.to(device),
            self.base.to(device),
            self.n,
        )


def harsanyi_terms(
    model: nn.Module, images: ImagePlayers, rows: torch.Tensor, subsets: torch.Tensor
) -> torch.Tensor:
    """I(S_j) of image ``rows[j]`` for each pair j (module docstring), float64 (M,), with the
    model in eval() mode (batch norm uses its running statistics, as in the extraction) and
    gradients flowing to its weights; the model's previous mode is restored."""
    rows, subsets = rows.tolist(), subsets.tolist()
    keys: dict[tuple[int, int], int] = {}
    pair_of, slot_of, signs = [], [], []
    for j, (row, subset) in enumerate(zip(rows, subsets)):
        order = popcount(subset)
        for t in submasks(subset):
            slot = keys.setdefault((row, t), len(keys))
            pair_of.append(j)
            slot_of.append(slot)
            signs.append(-1.0 if (order - popcount(t)) % 2 else 1.0)
    device = images.x.device
    sample = torch.tensor([k[0] for k in keys], dtype=torch.long, device=device)
    t_index = torch.tensor([k[1] for k in keys], dtype=torch.long, device=device)
    present = (t_index[:, None] >> torch.arange(images.n, device=device)) & 1 == 1
    was_training = model.training
    model.eval()
    try:
        batch = masked_images(
            images.x, images.base, images.masks, images.uncovered, sample, present
        )
        v = log_odds(model(batch).float(), images.y[sample])
    finally:
        model.train(was_training)
    weights = torch.tensor(signs, dtype=v.dtype, device=device)
    out = torch.zeros(len(rows), dtype=v.dtype, device=device)
    return out.index_add(
        0,
        torch.tensor(pair_of, device=device),
        weights * v[torch.tensor(slot_of, device=device)],
    )


def low_order_subsets(n: int, max_order: int) -> torch.Tensor:
    """Subset indices S with 1 ≤ |S| ≤ max_order, ascending."""
    return torch.tensor([s for s in range(1, 2**n) if popcount(s) <= max_order])


@torch.no_grad()
def reference_terms(
    model: nn.Module, images: ImagePlayers, subsets: torch.Tensor, chunk: int = 512
) -> torch.Tensor:
    """I(S) of every image for every subset in ``subsets``: (N, len(subsets)) float64."""
    rows = torch.arange(len(images.x)).repeat_interleave(len(subsets))
    flat = subsets.repeat(len(images.x))
    # a pair of order k costs 2^k masked inputs; chunks of pairs keep the batches bounded
    step = max(1, chunk // 8)
    out = [
        harsanyi_terms(model, images, rows[i : i + step], flat[i : i + step]).cpu()
        for i in range(0, len(rows), step)
    ]
    return torch.cat(out).view(len(images.x), len(subsets))


@torch.no_grad()
def game_scale(model: nn.Module, images: ImagePlayers) -> float:
    """s² = mean over images of (v(x_N) − v(x_∅))² (module docstring)."""
    full = (1 << images.n) - 1
    rows = torch.arange(len(images.x)).repeat(2)
    subsets = torch.tensor([full] * len(images.x) + [0] * len(images.x))
    # harsanyi_terms of the single subsets N and ∅ would expand N's 2^n submasks: evaluate v
    device = images.x.device
    present = (subsets[:, None] >> torch.arange(images.n)) & 1 == 1
    was_training = model.training
    model.eval()
    try:
        batch = masked_images(
            images.x,
            images.base,
            images.masks,
            images.uncovered,
            rows.to(device),
            present.to(device),
        )
        v = log_odds(model(batch).float(), images.y[rows.to(device)]).cpu()
    finally:
        model.train(was_training)
    diff = v[: len(images.x)] - v[len(images.x) :]
    return max(float((diff**2).mean()), 1e-12)


def salient_low_order(terms: torch.Tensor, tau: float, top_k: int | None = None) -> torch.Tensor:
    """Salient mask (N, K) of low-order terms: |I(S)| > τ · max over the row's K sets, and,
    with ``top_k``, among the row's ``top_k`` largest |I(S)| (ties: the smaller subset index)."""
    from transferscope.interactions.salient import salient_mask

    mask = salient_mask(terms, tau)
    if top_k is not None and top_k < terms.shape[1]:
        order = torch.sort(terms.abs(), dim=1, descending=True, stable=True).indices[:, :top_k]
        strongest = torch.zeros_like(mask).scatter_(1, order, True)
        mask &= strongest
    return mask


def random_like(
    salient: torch.Tensor, subsets: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """Per row, as many sets of each order as ``salient`` marks, placed uniformly at random
    among the sets of that order: a bool mask (N, K) of the same per-order counts."""
    orders = torch.tensor([popcount(s) for s in subsets.tolist()])
    out = torch.zeros_like(salient)
    for row in range(salient.shape[0]):
        for order in orders.unique().tolist():
            cols = (orders == order).nonzero().flatten()
            count = int(salient[row, cols].sum())
            pick = cols[torch.randperm(len(cols), generator=generator)[:count]]
            out[row, pick] = True
    return out


@dataclass
class Penalty:
    """The pool of (image, S, target) pairs of one arm and its per-step penalty."""

    arm: str
    strength: float
    masks_per_step: int
    images: ImagePlayers
    rows: torch.Tensor  # (M,) index into images
    subsets: torch.Tensor  # (M,)
    targets: torch.Tensor  # (M,) float64: I_P(S) (protect) or 0
    scale: float  # s²

    def __call__(self, model: nn.Module, generator: torch.Generator) -> torch.Tensor:
        """λ · mean over a uniform draw of pairs of (I_θ(S) − target)² / s²."""
        if len(self.rows) == 0 or self.strength == 0:
            return torch.zeros((), device=self.images.x.device)
        pick = torch.randperm(len(self.rows), generator=generator)[: self.masks_per_step]
        terms = harsanyi_terms(model, self.images, self.rows[pick], self.subsets[pick])
        target = self.targets[pick].to(terms.device)
        return (self.strength * ((terms - target) ** 2).mean() / self.scale).float()

    def describe(self) -> dict:
        orders = [popcount(s) for s in self.subsets.tolist()]
        return {
            "arm": self.arm,
            "pairs": len(self.rows),
            "images": int(len(self.rows.unique())) if len(self.rows) else 0,
            "pairs_by_order": {str(k): orders.count(k) for k in sorted(set(orders))},
            "scale_v_squared": self.scale,
        }


def build_penalty(
    arm: str,
    strength: float,
    masks_per_step: int,
    images: ImagePlayers,
    reference: nn.Module | None,
    max_order: int,
    tau: float,
    seed: int,
    sets: list[list[int]] | None = None,
    top_k: int | None = None,
) -> Penalty:
    """The penalty of one arm on ``images`` (module docstring).

    ``reference`` is P (through its probe); it gives Ω_pre (its salient low-order sets, the
    ``top_k`` strongest per image when given), the protect targets I_P(S) and the scale s². ``sets`` (per image, subset indices) replaces Ω_pre for the suppress arm and, with
    its per-order counts, the random arm's draw (a planted ground truth); without a reference
    s² = 1 (``reference`` must be given for protect).
    """
    if arm not in ARMS:
        raise ValueError(f"causal_training.arms: unknown arm '{arm}'; allowed: {list(ARMS)}")
    generator = torch.Generator().manual_seed(seed)
    candidates = low_order_subsets(images.n, max_order)
    if sets is None:
        if reference is None:
            raise ValueError(f"arm '{arm}' needs the pre-trained model P (its probe run)")
        terms = reference_terms(reference, images, candidates)
        chosen = salient_low_order(terms, tau, top_k)
    else:
        column = {int(s): k for k, s in enumerate(candidates.tolist())}
        chosen = torch.zeros(len(images.x), len(candidates), dtype=torch.bool)
        for row, subs in enumerate(sets):
            for s in subs:
                if int(s) not in column:
                    raise ValueError(f"set {s} is not a subset of order 1..{max_order}")
                chosen[row, column[int(s)]] = True
        terms = None
        if arm == "protect":
            if reference is None:
                raise ValueError("arm 'protect' needs the pre-trained model P (its probe run)")
            terms = reference_terms(reference, images, candidates)
    if arm == "random":
        chosen = random_like(chosen, candidates, generator)
    rows, cols = chosen.nonzero(as_tuple=True)
    targets = torch.zeros(len(rows), dtype=torch.float64)
    if arm == "protect":
        targets = terms[rows, cols].double()
    return Penalty(
        arm,
        float(strength),
        int(masks_per_step),
        images,
        rows,
        candidates[cols],
        targets,
        game_scale(reference, images) if reference is not None else 1.0,
    )


def penalty_for_run(settings: dict, data, data_dir, reference_checkpoint, device) -> Penalty:
    """The penalty of a fine-tuning run whose settings hold a ``causal`` block (arm, strength,
    masks_per_step, samples, max_order; ``transferscope.causal.run_settings``): Ω_pre of P
    (``reference_checkpoint``, the final probe checkpoint) on ``samples`` class-balanced
    training images (``extract.choose_samples``, the extraction's fixed sample seed), players
    and baseline as the extraction's (``interactions`` block of the settings)."""
    from transferscope.interactions.extract import (
        SAMPLE_SEED,
        choose_samples,
        interaction_params,
        prepare_game,
    )
    from transferscope.models import load_model
    from transferscope.runtime import derived_seed

    causal = settings["causal"]
    if "x" not in data.train_inputs:
        raise ValueError(
            f"causal_training.experiments: {settings['experiment']} is not an image "
            "experiment; the causal penalty is defined on image players"
        )
    if reference_checkpoint is None:
        raise ValueError(
            "a causal fine-tuning run needs --reference (the probe run of P) to find Ω_pre"
        )
    params = interaction_params(settings)
    game = prepare_game(settings, params, data_dir)
    eligible = torch.ones(len(data.train_y), dtype=torch.bool)
    index = choose_samples(data.train_y, eligible, int(causal["samples"]), SAMPLE_SEED)
    images = ImagePlayers.from_grid(
        data.train_inputs["x"][index], data.train_y[index], game.players, game.baseline
    ).to(device)
    reference, _ = load_model(reference_checkpoint, device)
    for param in reference.parameters():
        param.requires_grad_(False)
    return build_penalty(
        causal["arm"],
        float(causal["strength"]),
        int(causal["masks_per_step"]),
        images,
        reference,
        int(causal["max_order"]),
        float(params["tau"]),
        derived_seed(settings["seed"], "causal", causal["arm"]),
        top_k=causal.get("sets_per_image"),
    )


def planted_and_sets(rules: list[dict], count: int) -> list[list[int]]:
    """The planted AND rules of a ``shapes`` task (its manifest's ``rules[task]``) as subset
    indices S* = Σ_{cell ∈ present parts} 2^cell, the same list for each of ``count`` images (a
    label depends on every rule: an image's class says its own rule holds and the others do
    not). A planted ground truth for the causal test."""
    from transferscope.interactions.transforms import subset_index

    sets = [
        int(subset_index(p["cell"] for p in rule["present"]))
        for rule in rules
        if rule["type"] == "and" and len(rule["present"]) >= 2
    ]
    return [list(sets) for _ in range(count)]
