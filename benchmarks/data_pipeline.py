"""Data-layer benchmark: a 10-million-row log written to and read from Parquet, then split
leave-one-out. Reports seconds per stage and the process's peak memory as JSON.

    python benchmarks/data_pipeline.py --out benchmarks/results [--users 330000 --items 100000]

Goal on the 2-core reference machine: write + read + split under 30 s, peak memory under 4 GB.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from functools import partial
from pathlib import Path

from onerec.data.schema import Dataset
from onerec.data.splits import leave_one_out
from onerec.data.synthetic import SyntheticConfig, generate
from onerec.runinfo import environment, peak_rss_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=330_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=10_000_000, help="log size (truncated to it)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    # 2% more rows than asked on average, then cut to exactly --rows
    mean = 1.02 * args.rows / args.users
    config = SyntheticConfig(num_users=args.users, num_items=args.items, mean_interactions=mean)
    seconds: dict[str, float] = {}

    def timed(name: str, fn):
        start = time.perf_counter()
        result = fn()
        seconds[name] = round(time.perf_counter() - start, 3)
        print(f"{name}: {seconds[name]:.2f}s", flush=True)
        return result

    dataset = timed("generate", lambda: generate(config))
    if len(dataset.log) < args.rows:
        raise SystemExit(f"generated {len(dataset.log)} rows, fewer than --rows {args.rows}")
    dataset.log = dataset.log.take(slice(0, args.rows))
    rows = len(dataset.log)
    with tempfile.TemporaryDirectory() as tmp:
        timed("write_parquet", partial(dataset.save, Path(tmp) / "log"))
        del dataset
        loaded = timed("read_parquet", lambda: Dataset.load(Path(tmp) / "log"))
        split = timed("leave_one_out", lambda: leave_one_out(loaded.log, history_length=20))
    pipeline = seconds["write_parquet"] + seconds["read_parquet"] + seconds["leave_one_out"]
    result = {
        "benchmark": "data_pipeline",
        **environment(),
        "config": {**vars(config), "rows": args.rows, "history_length": 20},
        "rows": rows,
        "users": loaded.num_users,
        "items": loaded.num_items,
        "test_examples": len(split.test),
        "seconds": seconds,
        "write_read_split_seconds": round(pipeline, 3),
        "peak_memory_gb": round(peak_rss_bytes() / 2**30, 3),
        "goal": {"seconds": 30, "peak_memory_gb": 4},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "data_pipeline.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("rows", "seconds", "write_read_split_seconds", "peak_memory_gb")}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
