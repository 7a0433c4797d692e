"""Writing the analysis stages' outputs: JSON-safe values, tables, pyplot, note figures."""

from __future__ import annotations

import math
from pathlib import Path


def _finite(value):
    """JSON-safe: non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (list, dict)):
        try:
            obj = obj.item()
        except (ValueError, AttributeError):
            pass
    return _finite(obj)


def _write_table(frame, path: Path) -> None:
    from transferscope.knowledge.aggregate import write_table

    write_table(frame, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def note_figure(path: Path, text: str, dpi: int = 120) -> None:
    from transferscope.figures import save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    save_figure(fig, path, dpi)
