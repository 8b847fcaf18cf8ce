"""The serving latency a machine allows: a model's batch cost curve, and the tail latency an
ideal batcher would reach with it at half saturation.

    python benchmarks/serving_bound.py --run RUN_DIR --out benchmarks/results --name NAME
        [--beam 32] [--items 5] [--history 20] [--max-batch 64] [--workers 1,2] [--repeats 3]

Issue 19 asks for p99 at half the saturation load of at most 3x the single-request p50. Whether
any server can meet that on a machine depends on how much cheaper a batch is per request than a
lone request there. This measures it and answers the question without HTTP or queues:

1. **Cost curve.** For each worker count W in ``--workers``, PyTorch gets cores / W threads (as
   ``onerec serve --workers W`` gives each inference worker), and ``Recommender.recommend_batch``
   is timed on k = 1, 2, 4, ..., ``--max-batch`` histories (median of ``--repeats`` calls after
   a warm-up): T(k), one worker alone on its share of the cores.
2. **Ideal request-level batcher** (what ``onerec serve`` does, minus every overhead): W servers;
   a free server takes every queued request, at most ``--max-batch``, and answers all of them
   after T(k) (linear between measured k). Poisson arrivals at a fraction of its saturation
   throughput W * max_batch / T(max_batch), 200,000 requests, fixed seed.
3. **Ideal continuous batching** (iteration-level, as LLM servers do): one server; T(k) is spread
   evenly over the search's steps (the encoder, then ``items * (levels + 1)`` decoder steps); a
   request joins the running batch at the next step and leaves when its own steps are done.

Both are lower bounds for a real server on this machine: HTTP, JSON, the client and the event
loop only add time. The ratio reported is p99 at the given load over T(1), the bar's quantity
(the real bar divides by the single-request p50 over HTTP, which is T(1) plus overhead, so a
real server could only reach the bar where the ideal reaches it with room to spare).

Writes ``serving_bound_<name>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from onerec.generation import Recommender
from onerec.runinfo import environment

sys.path.insert(0, str(Path(__file__).parent))  # its sibling, also when loaded from a test
from serving_load import make_bodies, setup_line  # noqa: E402  (the load benchmark's)

LOADS = (0.1, 0.25, 0.5, 0.75)


def batch_sizes(max_batch: int) -> list[int]:
    sizes, k = [], 1
    while k < max_batch:
        sizes.append(k)
        k *= 2
    return [*sizes, max_batch]


def cost_curve(rec: Recommender, bodies: list[dict], sizes: list[int], repeats: int) -> list[float]:
    """Median seconds of one ``recommend_batch`` call on k histories, for every k in ``sizes``."""
    def call(k: int, offset: int) -> float:
        chunk = [bodies[(offset + i) % len(bodies)] for i in range(k)]
        start = time.perf_counter()
        rec.recommend_batch([b["history"] for b in chunk], n_items=chunk[0]["n_items"],
                            beam_size=chunk[0]["beam_size"])  # fmt: skip
        return time.perf_counter() - start

    out = []
    for k in sizes:
        call(k, 0)  # warm-up: allocator and caches at this size
        out.append(float(np.median([call(k, k * (r + 1)) for r in range(repeats)])))
    return out


def interpolate(sizes: list[int], seconds: list[float]):
    return lambda k: float(np.interp(k, sizes, seconds))


def request_batcher(cost, max_batch: int, servers: int, rate: float, n: int,
                    seed: int) -> np.ndarray:  # fmt: skip
    """Latencies of an overhead-free dynamic batcher with ``servers`` workers (see the module)."""
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n))
    free = np.zeros(servers)
    latency = np.empty(n)
    i = 0
    while i < n:
        s = int(np.argmin(free))
        start = max(free[s], arrivals[i])
        j = int(np.searchsorted(arrivals, start, side="right"))
        j = min(max(j, i + 1), i + max_batch)
        done = start + cost(j - i)
        latency[i:j] = done - arrivals[i:j]
        free[s] = done
        i = j
    return latency


def continuous_batcher(cost, max_batch: int, steps: int, rate: float, n: int,
                       seed: int) -> np.ndarray:  # fmt: skip
    """Latencies of an overhead-free iteration-level batcher (see the module)."""
    arrivals = np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, n))
    t, i = 0.0, 0
    running: list[list[float]] = []  # [arrival, steps left]
    latency: list[float] = []
    while len(latency) < n:
        while i < n and arrivals[i] <= t and len(running) < max_batch:
            running.append([arrivals[i], steps])
            i += 1
        if not running:
            t = arrivals[i]
            continue
        t += cost(len(running)) / steps
        for r in running:
            r[1] -= 1
        latency += [t - r[0] for r in running if r[1] == 0]
        running = [r for r in running if r[1] > 0]
    return np.asarray(latency)


def bounds(cost, max_batch: int, servers: int, steps: int, n: int) -> dict[str, Any]:
    saturation = servers * max_batch / cost(max_batch)
    single = cost(1)
    out: dict[str, Any] = {"saturation_rps": saturation, "single_ms": 1000 * single, "loads": []}
    for fraction in LOADS:
        row: dict[str, Any] = {"fraction": fraction, "offered_rps": fraction * saturation}
        kinds = {"request": request_batcher(cost, max_batch, servers, fraction * saturation, n, 0)}
        if servers == 1:
            kinds["continuous"] = continuous_batcher(cost, max_batch, steps,
                                                     fraction * saturation, n // 4, 0)  # fmt: skip
        for kind, lat in kinds.items():
            row[f"{kind}_p50_over_single"] = float(np.percentile(lat, 50) / single)
            row[f"{kind}_p99_over_single"] = float(np.percentile(lat, 99) / single)
        out["loads"].append(row)
    return out


def markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        f"# Serving bound: {result['name']}",
        "",
        f"{setup_line(result)}. Command: `{result['command']}`.",
        "",
        "Cost of one `recommend_batch` call on k histories (median of "
        f"{c['repeats']}), per worker count W (cores / W PyTorch threads each):",
        "",
        "| W | " + " | ".join(f"k={k}" for k in result["sizes"]) + " | T(max)/T(1) |",
        "|---:|" + "---:|" * (len(result["sizes"]) + 1),
    ]
    for w in result["workers"]:
        ms = w["seconds"]
        lines.append(f"| {w['workers']} | " + " | ".join(f"{1000 * s:.1f}" for s in ms)
                     + f" | {ms[-1] / ms[0]:.1f} |")  # fmt: skip
    lines += [
        "",
        "Latency of an overhead-free batcher over T(1), at fractions of its saturation "
        "throughput (p50 / p99):",
        "",
        "| W | batcher | saturation /s | T(1) ms | "
        + " | ".join(f"{f:g} x saturation" for f in LOADS) + " |",
        "|---:|---|---:|---:|" + "---|" * len(LOADS),
    ]
    for w in result["workers"]:
        b = w["bounds"]
        for kind in ("request", "continuous"):
            if f"{kind}_p99_over_single" not in b["loads"][0]:
                continue
            cells = [f"{r[f'{kind}_p50_over_single']:.2f} / **{r[f'{kind}_p99_over_single']:.2f}**"
                     if r["fraction"] == 0.5 else
                     f"{r[f'{kind}_p50_over_single']:.2f} / {r[f'{kind}_p99_over_single']:.2f}"
                     for r in b["loads"]]  # fmt: skip
            lines.append(f"| {w['workers']} | {kind} | {b['saturation_rps']:.1f} | "
                         f"{b['single_ms']:.1f} | " + " | ".join(cells) + " |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a trained run folder (as for onerec serve)")
    p.add_argument("--name", required=True)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--beam", type=int, default=32)
    p.add_argument("--items", type=int, default=5)
    p.add_argument("--history", type=int, default=20)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--workers", default="1,2", help="comma list of inference worker counts")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--requests", type=int, default=200_000, help="simulated arrivals per load")
    args = p.parse_args()

    cores = os.cpu_count() or 1
    rec = Recommender.from_run(args.run)
    bodies = make_bodies(rec, 256, args.history, args.items, args.beam)
    sizes = batch_sizes(args.max_batch)
    steps = 1 + args.items * (rec.model.config.n_levels + 1)  # encoder, then every decoder step
    workers, threads = [], torch.get_num_threads()
    for w in (int(x) for x in args.workers.split(",")):
        torch.set_num_threads(max(1, cores // w))
        seconds = cost_curve(rec, bodies, sizes, args.repeats)
        print(f"W={w}: " + "  ".join(f"T({k})={1000 * s:.1f}ms" for k, s in zip(sizes, seconds)),
              flush=True)  # fmt: skip
        b = bounds(interpolate(sizes, seconds), args.max_batch, w, steps, args.requests)
        half = next(r for r in b["loads"] if r["fraction"] == 0.5)
        print(f"  half saturation p99 / T(1): request-level {half['request_p99_over_single']:.2f}"
              + (f", continuous {half['continuous_p99_over_single']:.2f}"
                 if "continuous_p99_over_single" in half else ""), flush=True)  # fmt: skip
        workers.append({"workers": w, "threads": torch.get_num_threads(), "seconds": seconds,
                        "bounds": b})  # fmt: skip
    torch.set_num_threads(threads)
    result = {
        "name": args.name,
        "command": "python benchmarks/serving_bound.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "environment": environment(),
        "config": {**vars(args), "decode_steps": steps},
        "sizes": sizes,
        "workers": workers,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"serving_bound_{args.name}.json").write_text(json.dumps(result, indent=1))
    (out / f"serving_bound_{args.name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
