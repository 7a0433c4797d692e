"""Masked evaluation against its ceiling, and the extraction jobs' start-up overhead.

(1) Throughput: `transferscope.interactions.masking.image_game` evaluates all N · 2^n masked
    inputs of N samples; its ceiling is plain inference of the same model on the same number of
    ready-made inputs at the same batch size (`model(x)` under inference_mode, no masking, no
    log-odds). Reported: masked inputs per second, the ceiling's inputs per second, their ratio
    (target ≥ 0.9). On a CUDA device (``--device cuda``) the table adds a ResNet-50 at 224×224
    with n = 10 (a 4×4 grid's first 10 cells), in fp32 and bf16 (both sides under the same
    autocast), timed with device synchronisation.
(2) Start-up: a fresh `transferscope interactions` process pays interpreter start-up and imports
    (torch, timm, transformers, polars) before any work. Measured as the wall time of a cold
    process importing what the stage imports; multiplied by the default config's extraction
    job count and divided by the default run's wall time (``--run-seconds``, measured by
    `make run`) it is the workflow overhead (target < 10 %).

Run: .venv/bin/python benchmarks/masked_eval.py [--quick] [--run-seconds S] [--device cuda]
(benchmarks/interactions.py also calls ``run(quick, device=...)`` and puts the rows in its table.)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import timm
import torch

from transferscope.interactions.masking import autocast, image_game
from transferscope.interactions.players import grid_player_masks

ROOT = Path(__file__).resolve().parents[1]
STAGE_IMPORTS = (
    "import torch, timm, polars, transformers; "
    "import transferscope.interactions.extract, transferscope.models, transferscope.data"
)


def _model(name: str, width: int | None) -> torch.nn.Module:
    """A randomly initialised timm model: resnet10t of the given width on 1-channel 32×32
    inputs, or the standard ``name`` (width None) on 3-channel inputs."""
    torch.manual_seed(0)
    if width is None:
        return timm.create_model(name, num_classes=10).eval()
    channels = [width, 2 * width, 4 * width, 8 * width]
    model = timm.create_model(name, num_classes=10, in_chans=1, channels=channels, stem_width=width)
    return model.eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def throughput_rows(quick: bool, device: str = "cpu") -> list[dict]:
    device = torch.device(device)
    # (model, width, channels, side, n, samples, batch, precision)
    settings = (
        [("resnet10t", 16, 1, 32, 9, 8, 512, "fp32")]
        if quick
        else [
            ("resnet10t", 16, 1, 32, 9, 16, 512, "fp32"),
            ("resnet10t", 32, 1, 32, 9, 16, 512, "fp32"),
            ("resnet10t", 16, 1, 32, 12, 2, 1024, "fp32"),
        ]
    )
    if device.type == "cuda":
        settings += [("resnet50", None, 3, 224, 10, 2 if quick else 8, 512, p) for p in ("fp32", "bf16")]  # fmt: skip
    rows = []
    for name, width, chans, side, n, samples, batch, precision in settings:
        model = _model(name, width).to(device)
        # a 3×3 grid for n = 9; the first n cells of a 4×4 grid otherwise
        players = grid_player_masks(side, side, 3 if n == 9 else 4)[:n]
        x = torch.randn(samples, chans, side, side)
        y = torch.randint(0, 10, (samples,))
        total = samples * 2**n

        def masked(model=model, x=x, y=y, players=players, batch=batch, precision=precision):
            image_game(model, x, y, players, batch_size=batch, precision=precision)
            _sync(device)

        ready = torch.randn(batch, chans, side, side, device=device)

        def plain(model=model, ready=ready, total=total, batch=batch, precision=precision):
            with torch.inference_mode(), autocast(device, precision):
                for _ in range(total // batch):
                    model(ready)
            _sync(device)

        masked()  # warm-up (allocator, kernels)
        plain()
        t_masked = _best_of(masked, 2 if quick else 3)
        t_plain = _best_of(plain, 2 if quick else 3) * total / (total // batch * batch)
        rows.append(
            {
                "model": name if width is None else f"{name} width {width}",
                "device": device.type,
                "precision": precision,
                "image": side,
                "n": n,
                "samples": samples,
                "batch": batch,
                "masked_inputs_per_s": total / t_masked,
                "plain_inputs_per_s": total / t_plain,
                "ratio": t_plain / t_masked,
            }
        )
    return rows


def startup_seconds(repeat: int = 3) -> float:
    """Median wall time of a fresh interpreter importing what the extraction stage imports."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", STAGE_IMPORTS], check=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup_row(run_seconds: float | None) -> dict:
    import yaml

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    jobs = len(config["experiments"]) * len(config["seeds"])
    startup = startup_seconds()
    row = {"extraction_jobs": jobs, "startup_s_per_job": startup, "startup_s_total": jobs * startup}
    if run_seconds:
        row["default_run_s"] = run_seconds
        row["overhead_share"] = jobs * startup / run_seconds
    return row


def run(quick: bool = False, run_seconds: float | None = None, device: str = "cpu") -> list[dict]:
    torch.set_num_threads(1)
    rows = throughput_rows(quick, device)
    rows.append(startup_row(run_seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--run-seconds", type=float, help="wall time of the default `make run`")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/masked_eval.json")
    args = parser.parse_args()
    rows = run(args.quick, args.run_seconds, args.device)
    for row in rows:
        print(
            "  ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            )
        )
    report = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "threads": 1,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
