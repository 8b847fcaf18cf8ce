"""Re-ranking weights of a model with an item head, on validation, from one beam search.

    python benchmarks/rerank_sweep.py --run RUN_DIR --dataset beauty --out benchmarks/results
        [--name NAME] [--weights 0,0.25,0.5,1,2,4] [--beam 20] [--users 0] [--union 20]
        [--split valid] [--checkpoint best] [--keep-seen]

A model trained with ``item_loss_weight`` > 0 ranks the beam's candidates by log p + r x the
item head's log p (``rerank_weight`` r, see ``OneRecConfig``). Which r is best is a validation
question, and it needs only one beam search: the candidates, their beam scores and the head's
scores are computed once per user, and every r re-orders them. It also ranks the whole catalog
by the head alone (not generative: an upper reference for what the head knows). With
``--union`` N, the head's N best items outside the beam join the candidates, scored by their
exact decoder log p (``head_candidates``), and every r ranks them too.

Validation of the leave-one-out split by default, seen items excluded (on Beauty and
Scientific no target is a seen item; ``--keep-seen`` ranks them too, Yelp's setting, where
users return); ``--split test`` is for a setting already chosen on
validation, once. ``--users`` N > 0 takes a fixed random subset. ``--checkpoint last`` scores
the weights after the run's last epoch instead of its best (what further training did to the
beam and to the head). Writes
``rerank_sweep_<name>.json`` (commit, machine, config, Recall/NDCG@10 per weight and for the head
alone, with standard errors).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from onerec.data.registry import load_dataset
from onerec.data.splits import drop_last_interactions, leave_one_out
from onerec.evaluation import evaluate, fill_seen
from onerec.exceptions import ConfigError
from onerec.generation.beam_search import (
    _prepare,
    _search,
    add_head_candidates,
    rerank_order,
)
from onerec.model import OneRec
from onerec.runinfo import environment
from onerec.tokenizer.pipeline import load_tokenization
from onerec.training.trainer import load_last_weights

METRICS = ("recall@10", "ndcg@10")  # with their standard errors


def sweep(model: OneRec, examples, ids, weights: list[float], beam: int, union: int = 0,
          batch: int = 256, keep_seen: bool = False) -> dict[str, dict[str, float]]:  # fmt: skip
    """Metrics per re-ranking weight (keys ``"rerank <w>"``) and for the head alone. With
    ``union`` K > 0, also ``"union <w>"``: the beam's candidates plus the head's K best items
    not in the beam, every one scored by its exact decoder log p + w x head log p.
    ``keep_seen``: rank the users' seen items too (else they are excluded everywhere)."""
    if model.item_query is None:
        raise ConfigError("the model has no item head (trained with item_loss_weight=0)")
    ranked: dict[str, list[torch.Tensor]] = {f"rerank {w:g}": [] for w in weights}
    ranked["head alone"] = []
    if union:
        ranked.update({f"union {w:g}": [] for w in weights})
    model.eval()
    for start in range(0, len(examples), batch):
        part = examples.take(np.arange(start, min(start + batch, len(examples))))
        with torch.no_grad():
            memory, mask, trie, banned, seen = _prepare(
                model, part.history, torch.from_numpy(part.user), ids,
                None if keep_seen else part.seen, None)
            items, scores, codes = _search(model, memory, mask, trie, beam, 1, banned, True)
            items, codes = items[:, :, 0], codes[:, :, 0]
            head = model.item_log_probs(memory, ids.codes, seen)
        for w in weights:
            order, _ = rerank_order(items, scores, head, w)
            ranked[f"rerank {w:g}"].append(items.gather(1, order)[:, :10])
        alone = head if keep_seen else fill_seen(head.clone(), part.seen)
        ranked["head alone"].append(alone.topk(10, dim=1).indices)
        if union:
            with torch.no_grad():
                every, every_scores, _ = add_head_candidates(
                    model, memory, mask, ids.codes, head, items, scores, codes, banned, union
                )
            for w in weights:
                order, _ = rerank_order(every, every_scores, head, w)
                ranked[f"union {w:g}"].append(every.gather(1, order)[:, :10])
    return {key: evaluate(examples, ranked=torch.cat(r).numpy(), ks=(10,),
                          exclude_seen=not keep_seen).summary(METRICS)
            for key, r in ranked.items()}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a trained run folder with an item head")
    p.add_argument("--dataset", required=True, help="the dataset it was trained on")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--name", default=None, help="names the record (default: the dataset)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--weights", default="0,0.25,0.5,1,2,4")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--history-length", type=int, default=50)
    p.add_argument("--users", type=int, default=0, help="a random subset of the split (0: all)")
    p.add_argument("--split", choices=("valid", "test", "selection"), default="valid",
                   help="test: once, for settings already chosen on validation; selection: the "
                        "selection split's test, for a run trained with --selection-split")
    p.add_argument("--union", type=int, default=0,
                   help="also rank the beam plus the head's N best other items (0: off)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="the kept epoch's weights, or the last finished epoch's")
    p.add_argument("--keep-seen", action="store_true",
                   help="rank already-seen items too (default: excluded)")
    args = p.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    ds = load_dataset(args.dataset, args.data_dir)
    if args.split == "selection":  # the run trained on this shortened log
        log = drop_last_interactions(ds.log)[0]
        examples = leave_one_out(log, history_length=args.history_length).test
    else:
        examples = getattr(leave_one_out(ds.log, history_length=args.history_length), args.split)
    if 0 < args.users < len(examples):
        rng = np.random.default_rng(0)
        examples = examples.take(np.sort(rng.choice(len(examples), args.users, replace=False)))
    ids = load_tokenization(args.run)[1]
    model = OneRec.load(args.run)
    epochs = load_last_weights(model, args.run) if args.checkpoint == "last" else None
    results = sweep(model, examples, ids, weights, args.beam, args.union,
                    keep_seen=args.keep_seen)
    record = {
        "benchmark": "rerank_sweep", **environment(),
        "config": {**vars(args), "out": str(args.out), "model": model.config.to_dict()},
        "users": len(examples), "last_checkpoint_epochs": epochs,
        "protocol": (f"{args.split} of the leave-one-out split" if args.split != "selection"
                     else "test of the selection split (each user's last item removed)")
                    + (", seen items kept" if args.keep_seen else ", seen items excluded")
                    + ", full catalog",
        "results": results,
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"rerank_sweep_{args.name or ds.name}.json"
    path.write_text(json.dumps(record, indent=2))
    for key, r in results.items():
        print(f"{key:12s} R@10 {r['recall@10']:.4f}  N@10 {r['ndcg@10']:.4f}")


if __name__ == "__main__":
    main()
