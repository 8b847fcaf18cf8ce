"""Simulator speed: how long a logged period of N exposures takes to generate (goal: 10 million
exposures in under 2 minutes on the 2-core CPU), and the oracle's throughput.

    python benchmarks/simulator_speed.py --out benchmarks/results
        [--exposures 10000000 --items 100000 --sessions-per-user 10 --oracle-sessions 100000]

Users are scaled so that the log has about ``--exposures`` rows (sessions hold 7.5 videos on
average). Timings are wall time; the JSON records the load average at the start, so a number
taken on a busy machine says so.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from onerec.runinfo import environment, peak_rss_bytes
from onerec.simulator import CatalogConfig, Simulator, SimulatorConfig, UserConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exposures", type=int, default=10_000_000)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--sessions-per-user", type=float, default=10.0)
    p.add_argument("--oracle-sessions", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()

    mean_len = 7.5
    num_users = max(1, round(args.exposures / (args.sessions_per_user * mean_len)))
    config = SimulatorConfig(
        catalog=CatalogConfig(num_items=args.items),
        users=UserConfig(num_users=num_users, mean_sessions=args.sessions_per_user),
        seed=args.seed,
    )
    load_before = os.getloadavg()

    start = time.perf_counter()
    sim = Simulator(config)
    build_s = time.perf_counter() - start

    start = time.perf_counter()
    ds = sim.generate_log(quality_report=False)
    log_s = time.perf_counter() - start

    start = time.perf_counter()
    _, report = sim.high_quality(ds)
    filter_s = time.perf_counter() - start

    rng = np.random.default_rng(args.seed)
    users = rng.integers(sim.num_users, size=args.oracle_sessions)
    sessions = rng.integers(sim.num_items, size=(args.oracle_sessions, 5))
    start = time.perf_counter()
    sim.oracle(users, sessions)
    oracle_s = time.perf_counter() - start

    result = {
        "benchmark": "simulator_speed",
        **environment(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": load_before,
        "config": config.to_dict(),
        "exposures": len(ds.log),
        "sessions": ds.log.num_sessions,
        "build_seconds": round(build_s, 2),
        "generate_log_seconds": round(log_s, 2),
        "exposures_per_second": round(len(ds.log) / log_s),
        "goal": "10,000,000 exposures in under 120 s",
        "session_filter_seconds": round(filter_s, 2),
        "session_filter": report.to_dict(),
        "rates": ds.meta["rates"],
        "oracle_sessions": args.oracle_sessions,
        "oracle_seconds": round(oracle_s, 2),
        "oracle_sessions_per_second": round(args.oracle_sessions / oracle_s),
        "peak_rss_bytes": peak_rss_bytes(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "simulator_speed.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    brief = {k: v for k, v in result.items() if k not in ("config", "session_filter")}
    print(json.dumps(brief, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
