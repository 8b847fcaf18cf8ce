"""The online A/B test on the quickstart platform (``onerec online``), timed, with its result
copied into the benchmark folder.

    python benchmarks/online_ab.py --run-dir runs/online --out benchmarks/results [--scale tiny]

Writes ``online_ab[_<scale>].json`` (commit, machine, configuration, load average before and
after, wall time, and the run's ``report.json``), ``online_ab[_<scale>].md`` (the run's report)
and ``online_ab[_<scale>]_<metric>.png``. A killed run resumes when called again with the same
``--run-dir``; its wall time then counts only the last call.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path

from onerec.online import OnlineConfig, run_online
from onerec.runinfo import environment, peak_rss_bytes


def _cpu_seconds() -> dict[str, float]:
    """CPU time (user + system) of this process and of its finished children (the servers):
    on a shared machine, what the test cost beside how long it took."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"self": own.ru_utime + own.ru_stime,
            "servers": children.ru_utime + children.ru_stime}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", default="default", choices=["default", "tiny"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--days", type=int, default=None, help="simulated days (default: the scale's)")
    p.add_argument("--run-dir", type=Path, default=Path("runs/online"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()

    overrides = {} if args.days is None else {"days": args.days}
    config = OnlineConfig.scale(args.scale, args.seed, **overrides)
    load_before = os.getloadavg()
    started = time.perf_counter()
    report = run_online(args.run_dir, config)
    wall = time.perf_counter() - started
    name = "online_ab" + ("" if args.scale == "default" else f"_{args.scale}")
    result = {
        "benchmark": "online_ab",
        "command": f"python benchmarks/online_ab.py --scale {args.scale} --seed {args.seed}"
                   + ("" if args.days is None else f" --days {args.days}"),
        **environment(),
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "wall_seconds": wall, "cpu_seconds": _cpu_seconds(), "peak_rss_bytes": peak_rss_bytes(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "report": report,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=float))
    shutil.copyfile(args.run_dir / "report.md", args.out / f"{name}.md")
    for plot in report["plots"]:
        shutil.copyfile(args.run_dir / "plots" / plot, args.out / f"{name}_{plot}")
    print(f"[online_ab] wall {wall:.0f}s (load average {load_before[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after); results in {args.out}/{name}.*")  # fmt: skip


if __name__ == "__main__":
    main()
