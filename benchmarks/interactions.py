"""Benchmark the interaction engine: transforms, AND-OR decomposition, masked evaluation.

    .venv/bin/python benchmarks/interactions.py [--quick] [--threads 1] [--out PATH]

Sections (one table each, all rows also written to results/benchmarks/interactions.json):
  (a) ``harsanyi`` against shapiq's exact Möbius transform (ExactComputer, index "Moebius") at
      n = 10, 12, and the butterfly engine alone at n = 16, 20;
  (b) batched ``decompose`` against a straightforward reference written here: the lab's dense
      2^n × 2^n matrices, one sample at a time, SGD with momentum 0.9, lr decaying log-uniformly
      from lr to lr/10, q clipped every step (sjtu-xai-lab ``_train_p_q``), at n = 10, 12 on the
      same games; time per sample, final loss, and the gap to the exact LP optimum at n = 10;
  (c) masked-evaluation throughput rows from benchmarks/masked_eval.py ``run(quick)`` if present.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from transferscope.interactions import andor
from transferscope.interactions import transforms as T

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int = 5) -> float:
    """Median wall time of fn() over ``repeat`` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ---------------------------------------------------------------- games
def planted_game(n: int, g: torch.Generator, k_and: int = 6, k_or: int = 4, noise: float = 0.01):
    """Sparse random AND and OR terms (values ~ N(0, 3²)) plus Gaussian noise."""
    idx = torch.randperm(2**n - 1, generator=g)[: k_and + k_or] + 1
    vals = 3 * torch.randn(k_and + k_or, generator=g, dtype=torch.float64)
    i_and = torch.zeros(2**n, dtype=torch.float64).index_put((idx[:k_and],), vals[:k_and])
    i_or = torch.zeros(2**n, dtype=torch.float64).index_put((idx[k_and:],), vals[k_and:])
    eps = noise * torch.randn(2**n, generator=g, dtype=torch.float64)
    return T.harsanyi_inverse(i_and) + T.or_inverse(i_or) + eps


def network_game(n: int, g: torch.Generator, width: int = 32):
    """Log-odds z_y − logsumexp_{c≠y} z_c of a random 3-layer ReLU net, absent players = 0."""
    x = 2 * torch.randn(n, generator=g, dtype=torch.float64)
    w1 = torch.randn(n, width, generator=g, dtype=torch.float64) / n**0.5
    b1 = 0.5 * torch.randn(width, generator=g, dtype=torch.float64)
    w2 = torch.randn(width, width, generator=g, dtype=torch.float64) / width**0.5
    w3 = 3 * torch.randn(width, 3, generator=g, dtype=torch.float64) / width**0.5
    h = torch.relu((T.subset_matrix(n).double() * x) @ w1 + b1)
    logits = torch.relu(h @ w2) @ w3
    return logits[:, 0] - torch.logsumexp(logits[:, 1:], -1)


def make_games(n: int, per_kind: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(seed)
    games, kinds = [], []
    for _ in range(per_kind):
        games += [planted_game(n, g), network_game(n, g)]
        kinds += ["planted", "network"]
    return torch.stack(games), kinds


# ---------------------------------------------------------------- (a) transforms
def bench_transforms(quick: bool) -> list[dict]:
    from shapiq import ExactComputer

    rows = []
    for n in (10, 12):
        values = torch.randn(2**n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
        table = values.numpy()

        def game(coalitions: np.ndarray, table=table, n=n) -> np.ndarray:
            return table[(coalitions.astype(np.int64) << np.arange(n)).sum(axis=1)]

        start = time.perf_counter()
        moebius = ExactComputer(game, n_players=n)("Moebius")
        shapiq_s = time.perf_counter() - start
        ours_s = timed(lambda values=values: T.harsanyi(values), repeat=20)
        ours = T.harsanyi(values)
        err = max(abs(ours[T.subset_index(s)].item() - x) for s, x in moebius.dict_values.items())
        rows.append(
            dict(n=n, what="harsanyi vs shapiq", ours_s=ours_s, shapiq_s=shapiq_s,
                 speedup=shapiq_s / ours_s, max_abs_diff=err)
        )  # fmt: skip
    for n in (16,) if quick else (16, 20):
        values = torch.randn(2**n, dtype=torch.float64)
        ours_s = timed(lambda values=values: T.harsanyi(values), repeat=5)
        rows.append(
            dict(
                n=n,
                what="harsanyi engine",
                ours_s=ours_s,
                ns_per_entry_bit=ours_s / (n * 2**n) * 1e9,
            )
        )
    return rows


# ---------------------------------------------------------------- (b) decomposition
def dense_matrices(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The lab's dense reward→I_and and reward→I_or matrices (float32, as in its code)."""
    eye = torch.eye(2**n, dtype=torch.float64)
    return T.harsanyi(eye).T.float().contiguous(), T.or_interactions(eye).T.float().contiguous()


def sgd_reference(v, h, o, q_thres, iters, lr):
    """One sample: the lab's _train_p_q (dense matmuls, SGD momentum 0.9, q clipped)."""
    v = v.float()
    bound = q_thres * (v[-1] - v[0]).abs()
    p = torch.zeros_like(v, requires_grad=True)
    q = torch.zeros_like(v, requires_grad=True)
    opt = torch.optim.SGD([p, q], lr=0.0, momentum=0.9)
    lrs = np.logspace(np.log10(lr), np.log10(lr) - 1, iters)
    for it in range(iters):
        q.data = torch.max(torch.min(q.data, bound), -bound)
        half = 0.5 * (v + q)
        loss = (h @ (half + p)).abs().sum() + (o @ (half - p)).abs().sum()
        if it + 1 < iters:
            opt.zero_grad()
            opt.param_groups[0]["lr"] = lrs[it]
            loss.backward()
            opt.step()
    return p.detach().double(), q.detach().double()


def bench_decompose(quick: bool, device: str, sgd_iters: int, sgd_lr: float) -> list[dict]:
    rows = []
    for n, per_kind in ((10, 2 if quick else 8), (12, 1 if quick else 4)):
        vs, kinds = make_games(n, per_kind, seed=100 + n)
        start = time.perf_counter()
        res = andor.decompose(vs.to(device))
        ours_s = (time.perf_counter() - start) / len(vs)
        res_cpu = res.loss.cpu()

        h, o = dense_matrices(n)
        sgd_loss, sgd_s = [], 0.0
        for v in vs:
            start = time.perf_counter()
            p, q = sgd_reference(v, h, o, 0.04, sgd_iters, sgd_lr)
            sgd_s += time.perf_counter() - start
            q = q.clamp(-0.04 * (v[-1] - v[0]).abs(), 0.04 * (v[-1] - v[0]).abs())
            sgd_loss.append(andor.objective(v, p, q).item())
        sgd_s /= len(vs)
        del h, o

        lp = [andor.decompose_lp(v, 0.04)[0] for v in vs] if n <= 10 else [float("nan")] * len(vs)
        for kind in sorted(set(kinds)):
            sel = [i for i, k in enumerate(kinds) if k == kind]
            rows.append(
                dict(
                    n=n,
                    games=kind,
                    samples=len(sel),
                    decompose_s_per_sample=ours_s,
                    sgd_iters=sgd_iters,
                    sgd_s_per_sample=sgd_s,
                    sgd_s_per_sample_at_10k=sgd_s * 10_000 / sgd_iters,
                    speedup_at_10k=sgd_s * 10_000 / sgd_iters / ours_s,
                    loss_decompose=float(np.mean([res_cpu[i].item() for i in sel])),
                    loss_sgd=float(np.mean([sgd_loss[i] for i in sel])),
                    loss_lp=float(np.mean([lp[i] for i in sel])),
                    max_gap_decompose_vs_lp=max((res_cpu[i].item() - lp[i]) / lp[i] for i in sel),
                    max_certified_gap=max(res.gap.cpu()[i].item() for i in sel),
                    max_iterations=max(res.iterations.cpu()[i].item() for i in sel),
                    all_converged=bool(res.converged.cpu()[sel].all()),
                )
            )
    return rows


# ---------------------------------------------------------------- (c) masked evaluation
def bench_masked_eval(quick: bool) -> list[dict]:
    path = Path(__file__).with_name("masked_eval.py")
    if not path.exists():
        return []
    spec = importlib.util.spec_from_file_location("masked_eval_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.run(quick))


# ---------------------------------------------------------------- report
def print_table(title: str, rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(dict.fromkeys(k for row in rows for k in row))

    def fmt(x) -> str:
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 1e5 else f"{x:.3e}"
        return str(x)

    cells = [[fmt(row.get(c, "")) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(cols)]
    print(f"\n## {title}")
    print("  ".join(c.rjust(w) for c, w in zip(cols, widths)))
    for r in cells:
        print("  ".join(x.rjust(w) for x, w in zip(r, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer games and SGD iterations")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sgd-iters", type=int, default=None, help="10000 (500 with --quick)")
    parser.add_argument("--sgd-lr", type=float, default=1e-5, help="the lab's lr for q_thres 0.04")
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/interactions.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sgd_iters = args.sgd_iters or (500 if args.quick else 10_000)

    report = dict(
        config=dict(
            quick=args.quick,
            threads=torch.get_num_threads(),
            device=args.device,
            sgd_iters=sgd_iters,
            sgd_lr=args.sgd_lr,
            torch=torch.__version__,
            machine=platform.platform(),
            processor=platform.processor(),
        )
    )
    report["transforms"] = bench_transforms(args.quick)
    print_table("(a) transforms", report["transforms"])
    report["decompose"] = bench_decompose(args.quick, args.device, sgd_iters, args.sgd_lr)
    print_table("(b) AND-OR decomposition (time per sample)", report["decompose"])
    report["masked_eval"] = bench_masked_eval(args.quick)
    print_table("(c) masked evaluation", report["masked_eval"])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
