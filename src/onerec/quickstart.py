"""``make quickstart``: the pipeline that exists so far, end to end, on a generated dataset.

Stages: generate a log with sessions and feedback -> save it as Parquet -> keep high-quality
sessions -> leave-one-out split -> collaborative item embeddings from the training split ->
balanced residual k-means semantic IDs -> rank items with two reference rankers (most popular
training items, and a random ranking) -> full-ranking Recall/NDCG -> paired significance test.
Every artifact lands in one run directory. Later stages (model, alignment) plug in here.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from onerec.data.sessions import SessionQualityFilter
from onerec.data.splits import leave_one_out
from onerec.data.synthetic import SyntheticConfig, generate
from onerec.embeddings import EmbeddingConfig, item_embeddings
from onerec.evaluation import EvalResult, evaluate, paired_test
from onerec.tokenizer.pipeline import TokenizeConfig, save_tokenization, tokenize

logger = logging.getLogger("onerec.quickstart")


@contextmanager
def _stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    print(f"[quickstart] {name} ...", flush=True)
    yield
    print(f"[quickstart] {name}: done in {time.perf_counter() - start:.1f}s", flush=True)


def popularity_scores(train_items: np.ndarray, num_items: int) -> torch.Tensor:
    """Training interaction counts per item: the simplest non-personalized ranking."""
    return torch.from_numpy(np.bincount(train_items, minlength=num_items).astype(np.float32))


def run(out: Path, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "synthetic": asdict(SyntheticConfig(seed=seed)),
        "session_filter": SessionQualityFilter(min_total_watch=60.0, watch_signal="watch_time").to_dict(),
        "split": {"protocol": "leave_one_out", "history_length": 20, "min_interactions": 3},
        "embeddings": {"sources": ["collaborative"], "dim": 32, "seed": seed},
        "tokenizer": {"method": "balanced", "levels": 3, "seed": seed},
        "metrics": {"ks": [5, 10, 20], "exclude_seen": False},
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))

    with _stage("generate a synthetic log"):
        dataset = generate(SyntheticConfig(**config["synthetic"]))
        dataset.save(out / "dataset")
        print(f"  {dataset.num_users:,} users, {dataset.num_items:,} items, "
              f"{len(dataset.log):,} interactions, {dataset.log.num_sessions:,} sessions")

    with _stage("keep high-quality sessions"):
        log, report = SessionQualityFilter(**config["session_filter"]).apply(dataset.log)
        print(f"  {report}")

    with _stage("leave-one-out split"):
        split = leave_one_out(log, history_length=20, min_interactions=3)
        split.reports.insert(0, report)
        split.save(out / "split")
        for r in split.reports[1:]:
            print(f"  {r}")
        print(f"  {len(split.train):,} training rows, {len(split.valid):,} validation and "
              f"{len(split.test):,} test examples")

    with _stage("item embeddings and semantic IDs"):
        # collaborative embeddings from training interactions only, then balanced RQ-kmeans
        emb_config = EmbeddingConfig(**config["embeddings"])
        x = item_embeddings(dataset, emb_config, split=split, use_cache=False)
        tokens = tokenize(x, TokenizeConfig(**config["tokenizer"]))
        save_tokenization(out / "semantic_ids", tokens, split.train.items)
        levels = ", ".join(f"{lv.utilization:.2f}" for lv in tokens.report.levels)
        print(f"  {tokens.semantic_ids.n_items:,} items -> {tokens.semantic_ids.n_levels} codes "
              f"(sizes {tokens.semantic_ids.level_sizes}); utilization per level {levels}; "
              f"collisions {100 * tokens.report.collision_rate_before:.1f}% before, "
              f"{100 * tokens.report.collision_rate_after:.1f}% after disambiguation")

    ks = tuple(config["metrics"]["ks"])
    results: dict[str, EvalResult] = {}
    with _stage("rank and evaluate (full ranking, test split)"):
        pop = popularity_scores(split.train.item, split.num_items)
        generator = torch.Generator().manual_seed(seed)
        random_scores = torch.rand(len(split.test), split.num_items, generator=generator)
        results["popularity"] = evaluate(
            split.test, scores=lambda rows: pop.expand(len(rows), -1), ks=ks
        )
        results["random"] = evaluate(split.test, scores=random_scores, ks=ks)
        for name, result in results.items():
            result.save(out / f"per_user_{name}.parquet")

    test = paired_test(results["random"], results["popularity"], metric="ndcg@10")
    table = _table(results, ks)
    print(table)
    print(f"paired t-test, popularity vs random on ndcg@10: {test}")
    summary = {
        "metrics": {n: r.means() for n, r in results.items()},
        "paired_test": asdict(test),
        "filters": [r.to_dict() for r in split.reports],
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "report.md").write_text(
        "# quickstart\n\nTest split, leave-one-out, full ranking over "
        f"{split.num_items:,} items.\n\n{table}\n\nPaired t-test (ndcg@10): {test}\n"
    )
    print(f"[quickstart] artifacts in {out}")
    return summary


def _table(results: dict[str, EvalResult], ks: tuple[int, ...]) -> str:
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
    lines = ["| model | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in results.items():
        means = r.means()
        lines.append(f"| {name} | " + " | ".join(f"{means[c]:.4f}" for c in cols) + " |")
    return "\n".join(lines)
