"""Singular-value spectra of a model's weight matrices.

Each weight with ≥ 2 dimensions is read as a matrix W ∈ ℝ^{out × (in·k·k)} (a conv kernel
(out, in, k, k) reshaped row-wise, as in the usual "weight matrix of a conv layer"; a linear
weight as is) and its singular values σ₁ ≥ σ₂ ≥ … are computed in float64. 1-D (biases,
norm scales) and integer tensors are skipped.
"""

from __future__ import annotations

import polars as pl
import torch

from transferscope.analyses.distances import Weights, as_state, module_of


def weight_spectra(weights: Weights) -> pl.DataFrame:
    """Long table (module, parameter, index, singular_value), descending within a parameter.

    ``weights`` is a module (its parameters) or a state dict (its floating entries).
    ``index`` counts from 0 for the largest singular value.
    """
    modules, parameters, indices, values = [], [], [], []
    for name, tensor in as_state(weights).items():
        if tensor.ndim < 2 or not tensor.is_floating_point():
            continue
        matrix = tensor.detach().to(torch.float64).reshape(tensor.shape[0], -1)
        sv = torch.linalg.svdvals(matrix).cpu().tolist()
        modules += [module_of(name)] * len(sv)
        parameters += [name] * len(sv)
        indices += range(len(sv))
        values += sv
    return pl.DataFrame(
        {"module": modules, "parameter": parameters, "index": indices, "singular_value": values},
        schema={
            "module": pl.String,
            "parameter": pl.String,
            "index": pl.Int64,
            "singular_value": pl.Float64,
        },
    )
