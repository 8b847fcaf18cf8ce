"""How much a model gets out of the newest item of a history it has never been trained on.

    python benchmarks/newest_item_probe.py --run RUN_DIR --dataset scientific
        [--sasrec-seconds 600] [--name NAME] [--out benchmarks/results]

Leave-one-out trains on every item but the last two. Validation then reads a history the model
was trained on, item by item; at test the newest history item is the validation item, which the
model has never seen in that user's sequence. Test with that item taken out of the history is a
prediction two steps ahead from the histories validation reads. So three numbers per model:
validation, test, and test without the newest item; test minus the last is what the model makes
of a fresh newest item, where item-ID models like SASRec are strong.

Scored: the OneRec run ranked as its config says (beam search, re-ranked when it has an item
head and ``rerank_weight``), its item head alone over the whole catalog (when it has one), and,
with ``--sasrec-seconds`` > 0, SASRec-CE trained here in the baseline benchmark's setting (every
prefix a sample, 50 items, seed 0) for that many seconds. Seen items are excluded, the setting
validation selects on Beauty and Scientific; ``--keep-seen`` keeps them, the setting validation
selects where users return to items (Yelp). Every set's metrics are also split by whether the
target is an item the user had interacted with before (``returning``, scored only with
``--keep-seen``) or not (``new``), with the rows of each: where users return, how much of a
gap between two models is the returns; with ``--keep-seen`` the scorers (the head, SASRec-CE)
are also scored with the user's seen items moved first (``, seen first``). Writes
``newest_item_probe_<name>.json`` (commit, machine, config, Recall/NDCG@10 with standard
errors).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from onerec.baselines.sasrec import SASRec
from onerec.baselines.train import BaselineTrainConfig, fit, set_seed
from onerec.data.examples import Examples
from onerec.data.registry import load_dataset
from onerec.data.splits import Split, leave_one_out
from onerec.evaluation import evaluate, fill_seen
from onerec.exceptions import ConfigError
from onerec.generation import item_head_log_probs, rank_examples
from onerec.model import OneRec
from onerec.runinfo import environment
from onerec.tokenizer.pipeline import load_tokenization
from onerec.training.trainer import TrainConfig

METRICS = ("recall@10", "ndcg@10")  # with their standard errors


SETS = ("valid", "test", "test without the newest item")


def probe_sets(split: Split) -> dict[str, Examples]:
    """Validation, test, and test whose history is validation's (the newest item taken out)."""
    valid, test = split.valid, split.test
    return {"valid": valid, "test": test,
            "test without the newest item": Examples(test.user, valid.history, test.target,
                                                     valid.seen)}  # fmt: skip


def returning(examples: Examples) -> np.ndarray:
    """``(rows,)`` bool: whether each row's target is among the items its user had seen."""
    return np.array([bool(np.isin(examples.target[i], examples.seen[i]).any())
                     for i in range(len(examples))], dtype=bool)  # fmt: skip


def seen_first(scorer):
    """``scorer`` (``examples -> f(rows) -> scores``) with every item the user had seen moved
    above the rest, each group kept in the scorer's order: the ranking of a policy that serves
    returns first."""
    def by_examples(ex: Examples):
        inner = scorer(ex)

        def f(rows: np.ndarray) -> torch.Tensor:
            s = torch.as_tensor(inner(rows)).float()
            mask = fill_seen(torch.zeros_like(s, dtype=torch.bool), ex.seen.take(rows), True)
            finite = torch.isfinite(s)
            top = torch.where(finite, s, -torch.inf).amax(1, keepdim=True)
            bottom = torch.where(finite, s, torch.inf).amin(1, keepdim=True)
            return torch.where(mask & finite, s + (top - bottom + 1), s)

        return f

    return by_examples


def score(sets: dict[str, Examples], exclude_seen: bool, **how) -> dict[str, dict]:
    """Recall/NDCG@10 of one ranker on every set, and the same over the rows whose target the
    user had seen before (``returning``) and the rest (``new``), with their row counts; ``how``
    is ``ranked=f(examples)`` or ``scores=f(examples)`` (a scorer for :func:`evaluate`)."""
    (kind, f), = how.items()
    out = {}
    for name, ex in sets.items():
        result = evaluate(ex, **{kind: f(ex)}, ks=(10,), exclude_seen=exclude_seen,
                          progress=False)  # fmt: skip
        back = returning(ex)
        out[name] = result.summary(METRICS)
        for part, rows in (("returning", back), ("new", ~back)):
            out[name][part] = {"rows": int(rows.sum()), **{
                m: float(result.per_user[m][rows].mean()) if rows.any() else float("nan")
                for m in METRICS}}  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a trained OneRec run folder")
    p.add_argument("--dataset", required=True, help="the dataset it was trained on")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--history-length", type=int, default=TrainConfig.history_length)
    p.add_argument("--beam", type=int, default=TrainConfig.eval_beam)
    p.add_argument("--sasrec-seconds", type=float, default=0.0,
                   help="also train SASRec-CE for this many seconds and probe it (0: no)")
    p.add_argument("--sets", default=",".join(SETS),
                   help=f"comma list of the sets to score (default all: {', '.join(SETS)})")
    p.add_argument("--keep-seen", action="store_true",
                   help="rank already-seen items too (default: excluded)")
    p.add_argument("--name", default=None, help="names the record (default: the dataset)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    chosen = [name.strip() for name in args.sets.split(",")]
    if not chosen or any(name not in SETS for name in chosen):
        raise ConfigError(f"--sets must name some of {list(SETS)}, got {args.sets!r}")
    ds = load_dataset(args.dataset, args.data_dir)

    def pick(split: Split) -> dict[str, Examples]:
        return {name: ex for name, ex in probe_sets(split).items() if name in chosen}

    sets = pick(leave_one_out(ds.log, history_length=args.history_length))
    model, ids = OneRec.load(args.run), load_tokenization(args.run)[1]
    exclude = not args.keep_seen
    results = {"onerec": score(sets, exclude, ranked=lambda ex: rank_examples(
        model, ex, ids, args.beam, exclude_seen=exclude))}
    if model.item_query is not None:
        def head(ex: Examples):
            return lambda rows: item_head_log_probs(model, ex.history.take(rows), ex.user[rows],
                                                    ids)  # fmt: skip
        results["onerec item head alone"] = score(sets, exclude, scores=head)
        if args.keep_seen:
            results["onerec item head alone, seen first"] = score(sets, False,
                                                                  scores=seen_first(head))
    if args.sasrec_seconds > 0:
        config = BaselineTrainConfig(prefixes=True, max_seconds=args.sasrec_seconds)
        split = leave_one_out(ds.log, history_length=config.max_length)
        set_seed(config.seed)
        sasrec = SASRec(ds.num_items, config.max_length)
        fit(sasrec, split, config, progress=False)
        results["sasrec-ce"] = score(pick(split), exclude, scores=sasrec.score_fn)
        if args.keep_seen:
            results["sasrec-ce, seen first"] = score(pick(split), False,
                                                     scores=seen_first(sasrec.score_fn))
    record = {
        "benchmark": "newest_item_probe", **environment(),
        "config": {**vars(args), "out": str(args.out), "model": model.config.to_dict()},
        "protocol": "leave-one-out; Recall/NDCG@10 over the full catalog, seen items "
                    + ("kept" if args.keep_seen else "excluded") + "; 'test without the newest "
                    "item': test targets after validation's histories; 'returning' / 'new': the "
                    "rows whose target the user had seen before / not",
        "results": results,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"newest_item_probe_{args.name or ds.name}.json"
    path.write_text(json.dumps(record, indent=2))
    for who, sets_result in results.items():
        for name, r in sets_result.items():
            parts = "  ".join(f"{k} ({r[k]['rows']}) {r[k]['recall@10']:.4f} / "
                              f"{r[k]['ndcg@10']:.4f}" for k in ("returning", "new"))
            print(f"{who:24s} {name:30s} R@10 {r['recall@10']:.4f}  N@10 {r['ndcg@10']:.4f}  "
                  f"{parts}")


if __name__ == "__main__":
    main()
