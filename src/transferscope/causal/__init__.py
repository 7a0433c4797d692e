"""The causal test in training (docs/evidence.md): fine-tunes with an interaction penalty
(``transferscope.interactions.penalty``), their settings and paths (``settings``), and the
dose-response table, figure and claim rows (``dose``)."""
