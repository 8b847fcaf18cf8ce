"""Resume check of a finished online test at its own size: a copy of its platform and day-1
models is run again, killed from a hook after chunk 1 of day 3, resumed, and compared with the
finished run (report up to its timing section, summary, every logged exposure).

    python benchmarks/online_resume_check.py DONE_RUN COPY [--out benchmarks/results]

Writes ``online_ab_resume.json`` (commit, machine, the three comparisons, seconds).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from onerec.online import Hooks, OnlineConfig, run_online
from onerec.online.report import TIMING_SECTION
from onerec.runinfo import environment

class Killed(Exception):
    """Raised by the hook to stop the copy mid-day."""


def kill(day: int, chunk: int) -> None:
    if (day, chunk) == (3, 1):
        raise Killed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("done", type=Path)
    p.add_argument("copy", type=Path)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    done, out = args.done, args.copy
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    for name in ("platform", "setup"):
        shutil.copytree(done / name, out / name)
    for first in sorted(done.glob("models/*/day_001")):  # retraining is redone by the copy
        shutil.copytree(first, out / first.relative_to(done))
    shutil.copyfile(done / "onerec_output.json", out / "onerec_output.json")
    config = OnlineConfig.from_dict(json.loads((done / "config.json").read_text()))

    t = time.time()
    try:
        run_online(out, config, hooks=Hooks(after_chunk=kill))
    except Killed:
        print(f"killed after day 3 chunk 1 at {time.time() - t:.0f}s", flush=True)
    run_online(out, config)
    def stable(run: Path) -> str:
        return (run / "report.md").read_text().split(TIMING_SECTION)[0]

    same_md = stable(out) == stable(done)
    same_log = pq.read_table(out / "log.parquet").equals(pq.read_table(done / "log.parquet"))
    a, b = (json.loads((run / "report.json").read_text()) for run in (out, done))
    result = {"benchmark": "online_resume_check", "command": " ".join(["python", *sys.argv]),
              **environment(), "killed_after": [3, 1], "same_report_md": same_md,
              "same_log_parquet": same_log, "same_summary": a["summary"] == b["summary"],
              "seconds": time.time() - t}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "online_ab_resume.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
