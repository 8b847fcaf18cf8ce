"""Session targets (m = 5) vs next-item targets (m = 1), graded by the simulator's ground truth.

    python benchmarks/session_targets.py --out benchmarks/results

Next-item metrics cannot tell what OneRec's session-wise training is for: generating a *list*
whose items work together. The simulator can: its oracle gives the exact expected session
watch time (swt), view-through, follow, like and reward of any session, with list effects
(author and tag fatigue, coherence, position). This runs the quickstart platform twice, the
same in everything but OneRec's training targets, and compares OneRec's generated sessions:

- ``m5``: targets are the next 5 items (the quickstart's default);
- ``m1``: targets are the next item only; generation still decodes 5-item sessions.

Both generate 8 sessions of 5 per user for the same 500 held-out users by the same beam search;
differences are paired per user (mean and its standard error). Popularity and SASRec are trained
in both runs and must come out identical (a check that only OneRec changed).

Writes ``session_targets.json`` (commit, machine, config, both tables, paired differences).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from onerec.quickstart import METRICS, QuickstartConfig, run
from onerec.runinfo import environment, peak_rss_bytes


def onerec_values(run_dir: Path) -> dict[str, np.ndarray]:
    """Per-user means of every metric over OneRec's sessions, users in ascending id order."""
    table = pq.read_table(run_dir / "sessions.parquet")
    keep = np.asarray(table.column("model").to_pylist()) == "onerec"
    users = table.column("user").to_numpy()[keep]
    _, row, count = np.unique(users, return_inverse=True, return_counts=True)
    return {m: np.bincount(row, weights=table.column(m).to_numpy()[keep]) / count
            for m in METRICS}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--runs", type=Path, default=Path("runs/session_targets"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", default="default", help="quickstart scale (default or tiny)")
    args = parser.parse_args()
    # next-token targets only: alignment (benchmarks/alignment.py) would add a row to both arms
    base = replace(QuickstartConfig.scale(args.scale, args.seed), ipa_iterations=0)
    arms = {"m5": replace(base, onerec_train_items=base.session_items),
            "m1": replace(base, onerec_train_items=1)}  # fmt: skip
    summaries = {name: run(args.runs / name, config=cfg) for name, cfg in arms.items()}
    for other in ("popularity", "sasrec-ce"):
        if summaries["m5"]["rewards"][other] != summaries["m1"]["rewards"][other]:
            raise RuntimeError(f"{other} differs between the arms: the runs were not paired")
    per_user = {name: onerec_values(args.runs / name) for name in arms}
    paired = {}
    for m in METRICS:
        d = per_user["m5"][m] - per_user["m1"][m]
        paired[m] = {"m5_minus_m1": float(d.mean()),
                     "standard_error": float(d.std(ddof=1) / np.sqrt(len(d)))}  # fmt: skip
    result = {
        "benchmark": "session_targets",
        **environment(),
        "peak_rss_bytes": peak_rss_bytes(),
        "config": {name: asdict(cfg) for name, cfg in arms.items()},
        "onerec": {name: s["rewards"]["onerec"] for name, s in summaries.items()},
        "baselines": {k: v for k, v in summaries["m5"]["rewards"].items() if k != "onerec"},
        "paired_difference_of_user_means": paired,
        "users": summaries["m5"]["eval_users"],
        "seconds": {name: s["seconds"] for name, s in summaries.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "session_targets.json"
    path.write_text(json.dumps(result, indent=2, default=float))
    print("| OneRec targets | " + " | ".join(f"{m} mean" for m in METRICS) + " |")
    print("|---|" + "---|" * len(METRICS))
    for name in arms:
        row = result["onerec"][name]
        print(f"| {name} | " + " | ".join(f"{row[f'{m}_mean']:.4g}" for m in METRICS) + " |")
    for m, p in paired.items():
        print(f"{m}: m5 - m1 = {p['m5_minus_m1']:+.4g} (standard error {p['standard_error']:.3g})")
    print(f"wrote {path}")


if __name__ == "__main__":
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    main()
