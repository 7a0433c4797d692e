"""Game-theoretic interactions of a classifier's output (Harsanyi AND-OR interactions).

Modules, from the bottom up:

* ``transforms``: O(n·2^n) subset transforms in float64 (Harsanyi/Möbius, OR, their inverses and
  adjoints); one subset convention everywhere: S is stored at index Σ_{i∈S} 2^i.
* ``andor``: the AND-OR decomposition ``decompose(v, q_thres)`` (sparsest I_and, I_or with a
  bounded noise term q), solved to its linear-program optimum.
* ``salient``: salient masks |I(S)| > τ · max_S |I(S)| and reconstruction errors.
* ``players``: who the players are (image patch grid, CUB part regions, words).
* ``masking``: the game v(x_T) = z_y − logsumexp_{c≠y} z_c of all 2^n masked inputs of many
  samples, in large batches on the configured device.
* ``extract``: the workflow stage; one Parquet cache per checkpoint (probe final epoch, every
  fine-tune and scratch epoch) and a summary.json, read back by ``transferscope.knowledge``.

Submodules are imported on use, so a stage pays only for what it needs.
"""
