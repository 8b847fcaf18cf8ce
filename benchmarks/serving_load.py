"""Serving load test: open-loop Poisson arrivals against ``onerec serve`` in its own process,
dynamic batching off and on side by side, and the offline batch-64 throughput of the same model.

    python benchmarks/serving_load.py --run RUN_DIR --out benchmarks/results --name NAME
        [--loads 0.1,0.25,0.5,0.75,1,1.5,2] [--seconds 8] [--beam 32] [--items 5]
        [--history 20] [--max-batch 64] [--max-wait-ms 0] [--max-queue 256] [--workers 0]
        [--device cpu]

Steps, all in one run so that the numbers share a machine state:

1. **Offline**: ``Recommender.recommend_batch`` in this process on batches of 64 histories
   (after one warm-up batch), with as many batches computing at once as the server has inference
   workers and the same PyTorch threads per worker (the same share of the machine): users per
   second. It sets the offered loads: ``--loads`` are
   fractions of it (so 1.0 offers as many requests per second as the model can answer offline).
   It is measured again after the HTTP runs; the better of the two is the reference of the
   HTTP/offline ratio (a shared machine's load drifts).
2. For each mode (``off``: ``--max-batch 1``; ``on``: ``--max-batch``/``--max-wait-ms``), a
   fresh server process. First the single-request latency (closed loop, one request at a time),
   then each offered load for ``--seconds``: arrivals are a Poisson process (exponential gaps,
   fixed seed); every request is sent at its scheduled time whatever happened to earlier ones
   (open loop), and its latency is counted from the scheduled time, so a stalled client or
   server cannot hide the tail (coordinated omission). After the highest load, the lowest one
   again shows whether the server recovered. The server's resident memory is read after each
   load, and /healthz is probed every 0.25 s during it (it must answer while batches compute).
3. Per load: offered rate, achieved throughput (answers 200 per second of the window),
   p50 / p95 / p99 of answered requests, 503s (load shed) and other errors.

Requests: histories of ``--history`` distinct catalog items drawn with a fixed seed, anonymous,
``--items`` items, beam ``--beam``. The client is aiohttp (async, HTTP/1.1, one pool of at most
``--connections`` connections; beyond that requests wait in the client, and that wait counts in
their latency); client and server share the machine, which the JSON records. Writes
``serving_load_<name>.json``, ``.md`` and ``.png`` (latency and throughput against offered load).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import torch

from onerec.generation import Recommender
from onerec.runinfo import environment
from onerec.serving.process import ServerProcess


def make_bodies(rec: Recommender, n: int, history: int, items: int, beam: int,
                seed: int = 0) -> list[dict[str, Any]]:  # fmt: skip
    rng = np.random.default_rng(seed)
    length = min(history, rec.history_length)
    raw = rec.items.raw
    return [
        {"history": rng.choice(raw, size=length, replace=False).tolist(), "n_items": items,
         "beam_size": beam}
        for _ in range(n)
    ]  # fmt: skip


def offline_throughput(rec: Recommender, bodies: list[dict], batch: int, batches: int,
                       streams: int = 1) -> float:  # fmt: skip
    """Users per second of ``recommend_batch`` on batches of ``batch`` (after a warm-up), with
    ``streams`` threads each computing ``batches`` batches at the same time."""
    def run(k: int) -> None:
        chunk = [bodies[(k * batch + i) % len(bodies)] for i in range(batch)]
        rec.recommend_batch([b["history"] for b in chunk], n_items=chunk[0]["n_items"],
                            beam_size=chunk[0]["beam_size"])  # fmt: skip

    run(0)
    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(run, range(1, streams * batches + 1)))
    return batch * batches * streams / (time.perf_counter() - start)


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    a = np.asarray(values) * 1000
    return {f"p{q}_ms": float(np.percentile(a, q)) for q in (50, 95, 99)}


async def single_latency(url: str, bodies: list[dict], n: int) -> dict[str, Any]:
    """Closed loop, one request at a time: the latency of a lone request."""
    times = []
    async with aiohttp.ClientSession(url) as client:
        for i in range(n + 3):
            start = time.perf_counter()
            async with client.post("/recommend", json=bodies[i % len(bodies)]) as r:
                r.raise_for_status()
                await r.read()
            if i >= 3:  # warm-up
                times.append(time.perf_counter() - start)
    return percentiles(times)


async def open_loop(url: str, bodies: list[dict], rate: float, seconds: float, seed: int,
                    timeout: float, connections: int = 1024) -> dict[str, Any]:  # fmt: skip
    """Poisson arrivals at ``rate`` per second for ``seconds``; latency from the scheduled time."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 10)
    offsets = np.cumsum(gaps)
    offsets = offsets[offsets < seconds]
    latencies: list[float] = []
    codes: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=connections)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(url, connector=connector, timeout=client_timeout) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.05

        async def one(i: int, at: float) -> None:
            await asyncio.sleep(max(0.0, t0 + at - loop.time()))
            try:
                async with client.post("/recommend", json=bodies[i % len(bodies)]) as r:
                    await r.read()
                    key = str(r.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                key = type(e).__name__
            codes[key] = codes.get(key, 0) + 1
            if key == "200":
                latencies.append(loop.time() - (t0 + at))

        health: list[float] = []

        async def probe() -> None:  # health checks while the model computes (own connection)
            async with aiohttp.ClientSession(url, timeout=client_timeout) as own:
                while loop.time() < t0 + seconds:
                    start = loop.time()
                    async with own.get("/healthz") as r:
                        await r.read()
                    health.append(loop.time() - start)
                    await asyncio.sleep(0.25)

        await asyncio.gather(probe(), *(one(i, float(at)) for i, at in enumerate(offsets)))
        window = max(loop.time() - t0, seconds)
    ok = codes.get("200", 0)
    return {
        "offered_rps": rate, "sent": len(offsets), "ok": ok,
        "throughput_rps": ok / window, **percentiles(latencies),
        "shed_503": codes.get("503", 0),
        "errors": sum(v for k, v in codes.items() if k not in ("200", "503")),
        "codes": codes, "healthz_max_ms": 1000 * max(health, default=float("nan")),
    }  # fmt: skip


def run_mode(
    run: str, mode: str, server_args: list[str], bodies: list[dict], rates: list[float],
    args: argparse.Namespace, log: Path,
) -> dict[str, Any]:  # fmt: skip
    with ServerProcess(run, *server_args, "--watch-seconds", "0", log=log) as server:
        single = asyncio.run(single_latency(server.url, bodies, args.single))
        rss0 = server.rss_bytes()
        steps = []
        for k, rate in enumerate([*rates, rates[0]]):  # the last: recovery after overload
            step = asyncio.run(open_loop(server.url, bodies, rate, args.seconds, seed=k,
                                         timeout=args.timeout,
                                         connections=args.connections))  # fmt: skip
            step["server_rss_mb"] = server.rss_bytes() / 2**20
            step["recovery"] = k == len(rates)
            steps.append(step)
            print(f"  {mode:3s} offered {rate:8.1f}/s -> {step['throughput_rps']:8.1f}/s  "
                  f"p50 {_ms(step['p50_ms'])} p99 {_ms(step['p99_ms'])}  503 {step['shed_503']}"
                  f"  err {step['errors']}  rss {step['server_rss_mb']:.0f} MB", flush=True)
    return {"server_args": server_args, "single": single, "rss_mb_before": rss0 / 2**20,
            "steps": steps}  # fmt: skip


def load_checks(mode: dict[str, Any], saturation: float) -> dict[str, Any]:
    """Latency at half the saturation load (the nearest offered load), errors below
    saturation, shedding at the highest load, and the recovery step, for one mode."""
    steps = [s for s in mode["steps"] if not s["recovery"]]
    half = min(steps, key=lambda s: abs(s["offered_rps"] - saturation / 2))
    below = [s for s in steps if s["offered_rps"] < saturation]
    top, recovery = steps[-1], mode["steps"][-1]
    return {
        "half_load_offered_rps": half["offered_rps"], "half_load_p99_ms": half["p99_ms"],
        "half_load_p99_over_single_p50": (half["p99_ms"] or np.nan) / mode["single"]["p50_ms"],
        "failed_below_saturation": sum(s["errors"] + s["shed_503"] for s in below),
        "top_offered_rps": top["offered_rps"], "top_shed_503": top["shed_503"],
        "top_server_rss_mb": top["server_rss_mb"],
        "recovery_failed": recovery["errors"] + recovery["shed_503"],
        "recovery_p99_ms": recovery["p99_ms"],
    }  # fmt: skip


def _ms(v: float | None) -> str:
    return "     -" if v is None else f"{v:6.1f}"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, style in (("off", "--"), ("on", "-")):
        steps = [s for s in result["modes"][mode]["steps"] if not s["recovery"]]
        x = [s["offered_rps"] for s in steps]
        for q, marker in (("p50_ms", "o"), ("p99_ms", "^")):
            y = [np.nan if s[q] is None else s[q] for s in steps]
            ax1.plot(x, y, style, marker=marker, label=f"batching {mode}, {q[:3]}")
        ax2.plot(x, [s["throughput_rps"] for s in steps], style, marker="o",
                 label=f"batching {mode}")  # fmt: skip
    ax1.set(xlabel="offered load (requests/s)", ylabel="latency (ms)", yscale="log",
            title="latency vs offered load")  # fmt: skip
    ax2.plot(ax2.get_xlim(), ax2.get_xlim(), ":", color="grey", label="offered")
    ax2.axhline(result["offline_batch64_rps"], color="k", lw=0.8, label="offline batch-64")
    ax2.set(xlabel="offered load (requests/s)", ylabel="answered (requests/s)",
            title="throughput")  # fmt: skip
    for ax in (ax1, ax2):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"onerec serve: {result['name']} (beam {result['config']['beam']}, "
                 f"{result['config']['items']} items)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def setup_line(result: dict[str, Any]) -> str:
    """The model, the request shape and the machine, as the reports' first sentence."""
    c, machine = result["config"], result["environment"]["machine"]
    return (f"Model `{c['run']}`, beam {c['beam']}, {c['items']} items, histories of "
            f"{c['history']} items; machine: {machine['cpu']} ({machine['cpu_count']} cores)")


def markdown(result: dict[str, Any]) -> str:
    c = result["config"]
    lines = [
        f"# Serving load: {result['name']}",
        "",
        f"{setup_line(result)}; {c['seconds']} s per load, Poisson arrivals, client and server "
        f"on the same machine.",
        "",
        f"Offline `recommend_batch`, batch 64, in the benchmark process with "
        f"{c.get('workers_resolved', 1)} batches at once: **"
        f"{result['offline_batch64_rps']:.1f} users/s** (the better of before and after the "
        f"HTTP runs: {' / '.join(f'{v:.1f}' for v in result['offline_batch64_rps_before_after'])})"
        f"; offered loads are fractions of the first.",
        "",
    ]
    for mode in ("off", "on"):
        m = result["modes"][mode]
        lines += [
            f"## batching {mode} (`{' '.join(m['server_args'])}`)",
            "",
            f"Single request, closed loop: p50 {_ms(m['single']['p50_ms']).strip()} ms, "
            f"p99 {_ms(m['single']['p99_ms']).strip()} ms.",
            "",
            "| offered /s | answered /s | p50 ms | p95 ms | p99 ms | 503 | errors | server RSS "
            "MB | /healthz max ms |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in m["steps"]:
            tag = " (recovery)" if s["recovery"] else ""
            lines.append(
                f"| {s['offered_rps']:.1f}{tag} | {s['throughput_rps']:.1f} | "
                f"{_ms(s['p50_ms']).strip()} | {_ms(s['p95_ms']).strip()} | "
                f"{_ms(s['p99_ms']).strip()} | {s['shed_503']} | {s['errors']} | "
                f"{s['server_rss_mb']:.0f} | {s['healthz_max_ms']:.0f} |"
            )
        lines.append("")
    s = result["summary"]
    lines += [
        "## Summary",
        "",
        f"- saturation throughput over HTTP, batching on: {s['saturation_on_rps']:.1f}/s = "
        f"{s['on_vs_offline']:.0%} of offline batch-64; batching off: "
        f"{s['saturation_off_rps']:.1f}/s (on/off = {s['on_vs_off']:.1f}x)",
        f"- batching on, at {s['half_load_offered_rps']:.1f}/s offered (nearest to half "
        f"saturation): p99 {_ms(s['half_load_p99_ms']).strip()} ms = "
        f"{s['half_load_p99_over_single_p50']:.1f}x the single-request p50",
        f"- failed requests (errors and 503s) below saturation: {s['failed_below_saturation']}",
        f"- at {s['top_offered_rps']:.1f}/s offered: {s['top_shed_503']} shed with 503, server "
        f"RSS {s['top_server_rss_mb']:.0f} MB; back at the lowest load: "
        f"{s['recovery_failed']} failed, p99 {_ms(s['recovery_p99_ms']).strip()} ms",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder written by `onerec train`")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--name", default=None, help="result file suffix (default: the run's name)")
    p.add_argument("--loads", default="0.1,0.25,0.5,0.75,1,1.5,2",
                   help="offered loads as fractions of the offline batch-64 throughput")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each load step")
    p.add_argument("--beam", type=int, default=32)
    p.add_argument("--items", type=int, default=5)
    p.add_argument("--history", type=int, default=20, help="history items per request")
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=0.0)
    p.add_argument("--max-queue", type=int, default=256)
    p.add_argument("--workers", type=int, default=0,
                   help="the server's inference workers (0: one per usable core, as onerec serve)")
    p.add_argument("--single", type=int, default=50, help="closed-loop requests for the p50")
    p.add_argument("--offline-batches", type=int, default=5)
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout per request")
    p.add_argument("--connections", type=int, default=1024, help="client connections at most")
    p.add_argument("--device", default="cpu",
                   help="torch device of the server and of the offline reference (cpu, cuda)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or Path(args.run).resolve().parent.name
    # the server's own rule (serving.app.inference_workers): one per core on a CPU, one on an
    # accelerator, where a single stream of batches keeps it busy
    on_cpu = args.device == "cpu"
    workers = args.workers or (len(os.sched_getaffinity(0)) if on_cpu else 1)
    if on_cpu:
        torch.set_num_threads(max(1, torch.get_num_threads() // workers))  # as the server does
    rec = Recommender.from_run(args.run, device=args.device)
    bodies = make_bodies(rec, 512, args.history, args.items, args.beam)
    offline_before = offline_throughput(rec, bodies, 64, args.offline_batches, workers)
    print(f"offline batch-64: {offline_before:.1f} users/s", flush=True)
    rates = [max(1.0, float(f) * offline_before) for f in args.loads.split(",")]
    common = ["--max-queue", str(args.max_queue), "--workers", str(workers),
              "--device", args.device]
    modes = {
        "off": ["--max-batch", "1", "--max-wait-ms", "0", *common],
        "on": ["--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
               *common],
    }  # fmt: skip
    result: dict[str, Any] = {
        "name": name,
        "environment": environment(),
        "config": {"run": str(args.run), **{k: v for k, v in vars(args).items() if k != "run"},
                   "workers_resolved": workers,
                   "torch_threads_per_worker": torch.get_num_threads()},
        "offline_batch64_rps": offline_before,
        "modes": {},
    }
    logs = Path(tempfile.mkdtemp(prefix="serving_load_"))  # server logs, not results
    for mode, server_args in modes.items():
        result["modes"][mode] = run_mode(args.run, mode, server_args, bodies, rates, args,
                                         logs / f"serving_load_{name}_{mode}.log")  # fmt: skip
    # the machine's load drifts (other processes share it): offline again after the HTTP runs,
    # and the better of the two is the reference, so the HTTP/offline ratio is not flattered
    offline_after = offline_throughput(rec, bodies, 64, args.offline_batches, workers)
    offline = max(offline_before, offline_after)
    result["offline_batch64_rps"] = offline
    result["offline_batch64_rps_before_after"] = [offline_before, offline_after]
    top = {m: max(s["throughput_rps"] for s in result["modes"][m]["steps"]) for m in modes}
    result["summary"] = {
        "saturation_on_rps": top["on"], "saturation_off_rps": top["off"],
        "on_vs_offline": top["on"] / offline, "on_vs_off": top["on"] / max(top["off"], 1e-9),
        **load_checks(result["modes"]["on"], top["on"]),
    }  # fmt: skip
    (out / f"serving_load_{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"serving_load_{name}.md").write_text(markdown(result))
    plot(result, out / f"serving_load_{name}.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
