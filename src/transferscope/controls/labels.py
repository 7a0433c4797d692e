"""The permuted-labels control: P trained on its source images with the labels permuted.

One permutation of the source training labels, drawn with ``derived_seed(seed, "labels")``,
replaces them for the whole run: the images, their order in every batch, the initialisation,
the optimiser and the number of steps are P's, and the class counts are unchanged, but no label
is tied to its image any more, so the run can learn no source-task knowledge (Zhang et al.
2017; Maennel et al. 2020: such networks may still transfer, which is what the control
measures; docs/references.md §4, Controls). The source test labels are kept, so the run's test
accuracy says whether it learned the source task (it should be at chance).
"""

from __future__ import annotations

import dataclasses

import torch


def permuted_labels(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """``labels`` in one seeded random order (a permutation of the same values)."""
    from transferscope.runtime import derived_seed

    generator = torch.Generator().manual_seed(derived_seed(int(seed), "labels"))
    return labels[torch.randperm(labels.numel(), generator=generator)].clone()


def permute_task_labels(data, settings: dict):
    """The training labels of a pre-training task permuted (``settings["permuted_labels"]``:
    ``{"seed": s}``); the test labels and all inputs unchanged."""
    if settings["regime"] != "pretrain" or int(settings["training"]["epochs"]) == 0:
        raise ValueError(
            f"controls.permuted_labels: {settings['experiment']}/{settings['regime']} trains no "
            "source epoch (labels are permuted for a pre-training run with "
            "training.pretrain.epochs > 0); leave the experiment out of controls.experiments"
        )
    return dataclasses.replace(
        data, train_y=permuted_labels(data.train_y, settings["permuted_labels"]["seed"])
    )
