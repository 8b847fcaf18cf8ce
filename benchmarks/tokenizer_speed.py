"""Tokenizer speed: balanced vs plain residual k-means at catalog scale, and our balanced mode vs
the balanced ("constrained") mode of the `semantic-id` package on a size it can finish.

    python benchmarks/tokenizer_speed.py --out benchmarks/results
        [--items 1000000 --dim 256 --codebook 1024 --levels 3 --iters 10]
        [--ref-items 20000 --ref-dim 64 --ref-codebook 64 --ref-levels 2]

Each measured fit runs in its own process, so that its peak memory is its own. The data are a
seeded mixture of Gaussians. Both k-means variants run a fixed number of iterations (tol=0):
the comparison is per iteration, as the goal is stated (balanced at most 2x plain). Timings
are wall time: run it on an otherwise idle machine (semantic-id works in joblib worker
processes, so the process's own CPU time would not count its work).
The reference comparison needs `pip install semantic-id` (skipped with a note if missing).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from onerec.runinfo import environment, peak_rss_bytes


def mixture(n: int, dim: int, seed: int = 0, centers: int = 4096) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(min(centers, n), dim, generator=g)
    x = c[torch.randint(len(c), (n,), generator=g)]
    return x.add_(0.5 * torch.randn(n, dim, generator=g))


def balance(codes: torch.Tensor, k: int) -> list[int]:
    """Largest minus smallest cluster size per level."""
    out = []
    for level in range(codes.shape[1]):
        counts = torch.bincount(codes[:, level], minlength=k)
        out.append(int(counts.max() - counts.min()))
    return out


def worker(args: argparse.Namespace) -> dict:
    """One fit in this process; prints a JSON line."""
    if args.worker in ("balanced", "plain"):
        from onerec.tokenizer.residual import ResidualKMeansQuantizer, ResidualQuantizerConfig

        x = mixture(args.items, args.dim)
        q = ResidualKMeansQuantizer(ResidualQuantizerConfig(
            levels=args.levels, codebook_size=args.codebook, balanced=args.worker == "balanced",
            iters=args.iters, tol=0.0, seed=0, dedup="suffix",
        ))  # fmt: skip
        start = time.perf_counter()
        q.fit(x)
        seconds = time.perf_counter() - start
        codes = q.semantic_ids.codes[:, : args.levels]
        iters = [s["n_iter"] for s in q.fit_stats]
        return {"method": args.worker, "seconds": seconds, "iterations_per_level": iters,
                "seconds_per_iteration": seconds / sum(iters), "balance_max_minus_min": balance(codes, args.codebook),
                "collision_rate_before": q.semantic_ids.collision_rate_before,
                "peak_memory_gb": peak_rss_bytes() / 2**30}  # fmt: skip
    # semantic-id's balanced mode vs ours on the same data and iteration budget
    x = mixture(args.items, args.dim)
    if args.worker == "ours-ref":
        from onerec.tokenizer.residual import ResidualKMeansQuantizer, ResidualQuantizerConfig

        q = ResidualKMeansQuantizer(ResidualQuantizerConfig(
            levels=args.levels, codebook_size=args.codebook, balanced=True, iters=args.iters, tol=0.0))  # fmt: skip
        start = time.perf_counter()
        q.fit(x)
        seconds = time.perf_counter() - start
        codes = q.semantic_ids.codes[:, : args.levels]
    else:
        from semantic_id.algorithms.rq_kmeans import RQKMeans

        import joblib

        m = RQKMeans(n_levels=args.levels, n_clusters=args.codebook, implementation="constrained",
                     max_iter=args.iters, n_init=1, random_state=0)  # fmt: skip
        start = time.perf_counter()
        # joblib would hand its workers read-only memory maps, which k-means-constrained rejects
        with joblib.parallel_config(max_nbytes=None):
            m.fit(x.numpy())
        seconds = time.perf_counter() - start
        codes = torch.from_numpy(np.asarray(m.encode(x.numpy()), dtype=np.int64))
    # codes as a user gets them: our catalog IDs, semantic-id's encode() of the catalog
    return {"method": args.worker, "seconds": seconds,
            "balance_max_minus_min": balance(codes, args.codebook),
            "peak_memory_gb": peak_rss_bytes() / 2**30}  # fmt: skip


def run_worker(name: str, items: int, dim: int, codebook: int, levels: int, iters: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--items", str(items), "--dim", str(dim),
           "--codebook", str(codebook), "--levels", str(levels), "--iters", str(iters)]  # fmt: skip
    print("running", " ".join(cmd[2:]), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"method": name, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--codebook", type=int, default=1024)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--ref-items", type=int, default=20_000)
    p.add_argument("--ref-dim", type=int, default=64)
    p.add_argument("--ref-codebook", type=int, default=64)
    p.add_argument("--ref-levels", type=int, default=2)
    p.add_argument("--ref-iters", type=int, default=10)
    p.add_argument("--skip-large", action="store_true", help="only the semantic-id comparison")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    large = {}
    if not args.skip_large:
        for method in ("plain", "balanced"):
            large[method] = run_worker(method, args.items, args.dim, args.codebook, args.levels, args.iters)
        if "error" not in large["plain"] and "error" not in large["balanced"]:
            large["balanced_over_plain_per_iteration"] = (
                large["balanced"]["seconds_per_iteration"] / large["plain"]["seconds_per_iteration"]
            )
    ref = {}
    try:
        import semantic_id  # noqa: F401

        ref_args = (args.ref_items, args.ref_dim, args.ref_codebook, args.ref_levels, args.ref_iters)
        ref["ours"] = run_worker("ours-ref", *ref_args)
        ref["semantic_id_constrained"] = run_worker("semantic-id", *ref_args)
        if "error" not in ref["ours"] and "error" not in ref["semantic_id_constrained"]:
            ref["speedup"] = ref["semantic_id_constrained"]["seconds"] / ref["ours"]["seconds"]
    except ImportError:
        ref["note"] = "semantic-id is not installed: pip install semantic-id"
    result = {
        "benchmark": "tokenizer_speed", **environment(),
        "config": {k: v for k, v in vars(args).items() if k not in ("worker", "out")},
        "large": large, "reference": ref,
        "goals": {"balanced_over_plain_per_iteration": "<= 2", "speedup_vs_semantic_id": ">= 10"},
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("tokenizer_speed.json" if not args.skip_large else "tokenizer_speed_reference.json")
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
