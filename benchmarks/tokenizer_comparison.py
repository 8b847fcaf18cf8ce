"""Tokenizer comparison: balanced RQ-kmeans (OneRec) vs plain RQ-kmeans vs RQ-VAE (TIGER), on
Beauty attributes, Yelp text and Scientific text, with the two published Beauty tokenizations
(LETTER, CollisionGenRec) as reference rows for utilization and collisions.

    python benchmarks/tokenizer_comparison.py --out benchmarks/results [--data-dir ../shared/data]

Writes tokenizer_comparison.json and .md. Every method gets the same embeddings, 3 levels and
the catalog-size default codebook (256 for these catalogs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from onerec.data.registry import load_dataset, resolve_data_dir
from onerec.embeddings import EmbeddingConfig, item_embeddings
from onerec.runinfo import environment
from onerec.tokenizer.published import read_index_json
from onerec.tokenizer.residual import SemanticIds
from onerec.tokenizer.pipeline import TokenizeConfig, tokenize

SETUPS = [
    ("beauty", "attributes", EmbeddingConfig(sources=("attributes",), dim=64)),
    ("yelp", "text", EmbeddingConfig(sources=("text",), text_fields=("title", "description"))),
    ("scientific", "text", EmbeddingConfig(sources=("text",))),
]
PUBLISHED = [
    ("beauty", "LETTER (published)", "letter/Beauty.index.json"),
    ("beauty", "CollisionGenRec RQ-VAE (published)", "cgr/Beauty.rqvae_native.index.json"),
]


def published_row(dataset: str, name: str, path: Path) -> dict:
    """Utilization and collisions of a published code table (all its levels count as base
    levels: neither file appends a separate disambiguation code)."""
    _, codes = read_index_json(path)
    sizes = [int(codes[:, i].max()) + 1 for i in range(codes.shape[1])]
    sizes = [256 if s <= 256 else s for s in sizes]
    ids = SemanticIds.from_codes(codes, sizes)
    levels = []
    for i, k in enumerate(sizes):
        counts = torch.bincount(codes[:, i], minlength=k).double()
        p = counts[counts > 0] / len(codes)
        levels.append({"utilization": float((counts > 0).sum()) / k,
                       "entropy_bits": float(-(p * p.log2()).sum()),
                       "largest": int(counts.max()), "smallest": int(counts.min())})
    return {"dataset": dataset, "embedding": "published", "method": name, "levels": levels,
            "codes_per_item": codes.shape[1], "collision_rate_before": ids.collision_rate_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--rqvae-epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = resolve_data_dir(args.data_dir)
    rows = []
    for name, emb_name, emb_config in SETUPS:
        ds = load_dataset(name, root)
        start = time.perf_counter()
        x = item_embeddings(ds, emb_config)
        embed_seconds = time.perf_counter() - start
        for method in ("balanced", "plain", "rqvae"):
            config = TokenizeConfig(method=method, iters=args.iters, rqvae_epochs=args.rqvae_epochs, seed=args.seed)
            result = tokenize(x, config)
            r = result.report
            rows.append({
                "dataset": name, "embedding": emb_name, "method": method,
                "items": r.n_items, "dim": int(x.shape[1]),
                "levels": [{"utilization": lv.utilization, "entropy_bits": lv.entropy_bits,
                            "largest": lv.largest, "smallest": lv.smallest} for lv in r.levels],
                "codes_per_item": result.semantic_ids.n_levels,
                "collision_rate_before": r.collision_rate_before,
                "collision_rate_after": r.collision_rate_after,
                "relative_error": r.relative_error, "mse": r.mse,
                "same_prefix_distance": r.same_prefix_distance,
                "random_pair_distance": r.random_pair_distance,
                "fit_seconds": round(result.seconds, 2),
                "embed_seconds_or_cache": round(embed_seconds, 2),
            })  # fmt: skip
            print(json.dumps({k: rows[-1][k] for k in ("dataset", "method", "collision_rate_before", "relative_error", "fit_seconds")}), flush=True)
    for dataset, name, rel in PUBLISHED:
        rows.append(published_row(dataset, name, root / rel))
    result = {"benchmark": "tokenizer_comparison", **environment(),
              "config": {"levels": 3, "codebook_size": "default (256 here)", "iters": args.iters,
                         "rqvae_epochs": args.rqvae_epochs, "seed": args.seed,
                         "embeddings": {n: e for n, e, _ in SETUPS}},
              "rows": rows}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tokenizer_comparison.json").write_text(json.dumps(result, indent=2, default=str))
    (args.out / "tokenizer_comparison.md").write_text(markdown(rows))
    print(markdown(rows))


def markdown(rows: list[dict]) -> str:
    head = ("| dataset | embedding | method | utilization per level | entropy per level (bits) | "
            "collisions before | rel. recon. error | same-prefix / random distance | fit s |")
    lines = [head, "|---" * 9 + "|"]
    for r in rows:
        util = " / ".join(f"{lv['utilization']:.2f}" for lv in r["levels"])
        ent = " / ".join(f"{lv['entropy_bits']:.2f}" for lv in r["levels"])
        err = f"{r['relative_error']:.4f}" if "relative_error" in r else "—"
        dist = (f"{r['same_prefix_distance']:.3f} / {r['random_pair_distance']:.3f}"
                if "same_prefix_distance" in r else "—")
        fit = str(r.get("fit_seconds", "—"))
        lines.append(f"| {r['dataset']} | {r['embedding']} | {r['method']} | {util} | {ent} | "
                     f"{100 * r['collision_rate_before']:.2f}% | {err} | {dist} | {fit} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
