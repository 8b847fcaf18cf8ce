"""OneRec ablations on validation: MoE vs dense decoder, session vs single-item targets, beam.

    python benchmarks/onerec_ablation.py --dataset beauty --epochs 8 --out benchmarks/results

Three models share one tokenization and one training budget (``--epochs``, early stopping on
the validation subset ``--eval-users``):

- ``moe_m1``: the sparse-MoE decoder (the preset's E experts, top-k), single-item targets;
- ``dense_m1``: the same model with a dense decoder FFN (``n_experts=0``): the preset's
  ``expert_d_ff = d_ff // top_k`` makes the active FFN width per token equal (the router aside);
- ``moe_m5``: the MoE model trained on sessions of the next 5 items (m = 5).

Each is scored on the validation split (all of it, or ``--score-users`` users drawn once with
a fixed seed): Recall/NDCG@5/10 of the next item, beam ``--eval-beam``, seen items not
excluded; then ``moe_m1`` is scored again at every beam width of ``--beams``. The test split
is never read. Writes ``onerec_ablation_<dataset>.json`` (commit, machine, configs, times) and
``onerec_ablation_<dataset>.md``. Run folders under ``--runs`` are
resumed, so a stopped ablation continues where it was.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from onerec.training.pipeline import METRICS, ranking_metrics
from onerec_quality import semantic_ids

from onerec.data.registry import load_dataset
from onerec.data.splits import leave_one_out
from onerec.model.config import parse_overrides
from onerec.runinfo import environment, peak_rss_bytes
from onerec.training import TrainConfig
from onerec.training.pipeline import train_on_dataset

ARMS = {
    "moe_m1": ({}, 1),
    "dense_m1": ({"n_experts": 0}, 1),
    "moe_m5": ({}, 5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"subset of {list(ARMS)}")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--runs", default="runs/ablation")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                        help="model override for every arm, repeatable (e.g. dropout=0.1)")
    parser.add_argument("--history-length", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-beam", type=int, default=20)
    parser.add_argument("--eval-users", type=int, default=4096)
    parser.add_argument("--beams", default="10,32,128", help="beam widths for moe_m1 ('' = none)")
    parser.add_argument("--score-users", type=int, default=None,
                        help="score this many validation users (fixed random subset; default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    common = parse_overrides(args.model)
    unknown = set(args.arms.split(",")) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")

    root = Path(args.runs) / args.dataset
    ds = load_dataset(args.dataset, args.data_dir)
    split = leave_one_out(ds.log, history_length=args.history_length)
    t = time.perf_counter()
    _, _, tok_dir, ids_info = semantic_ids(ds, split, root, args.seed)
    scored = split.valid
    if args.score_users is not None and args.score_users < len(scored):
        rows = np.random.default_rng(args.seed + 1).choice(len(scored), args.score_users,
                                                           replace=False)  # fmt: skip
        scored = scored.take(np.sort(rows))
    seconds = {"tokenize": time.perf_counter() - t}

    arms: dict[str, dict] = {}
    models = {}
    for name in args.arms.split(","):
        overrides, m = ARMS[name]
        config = TrainConfig(history_length=args.history_length, session_items=m,
                             epochs=args.epochs, patience=args.patience, lr=args.lr,
                             batch_size=args.batch_size, eval_beam=args.eval_beam,
                             eval_users=args.eval_users, seed=args.seed)  # fmt: skip
        torch.manual_seed(args.seed)
        run = train_on_dataset(ds, tok_dir, root / name, config, preset=args.preset,
                               model_overrides={**common, **overrides},
                               progress=not args.quiet)  # fmt: skip
        # from the epoch log, so that a resumed run reports its whole training time
        epochs = [json.loads(line) for line in (root / name / "metrics.jsonl").open()]
        seconds[f"train_{name}"] = sum(e["seconds"] for e in epochs if "seconds" in e)
        t = time.perf_counter()
        valid = ranking_metrics(run.model, scored, run.semantic_ids, args.eval_beam, False)
        seconds[f"evaluate_{name}"] = time.perf_counter() - t
        models[name] = run
        arms[name] = {"session_items": m, "model_overrides": {**common, **overrides},
                      "parameters": run.model.describe(), "training": run.state,
                      "valid": valid}  # fmt: skip
        print(name, json.dumps(valid), flush=True)

    beams: dict[int, dict[str, float]] = {}
    if "moe_m1" in models:
        run = models["moe_m1"]
        for beam in (int(b) for b in args.beams.split(",") if b):
            t = time.perf_counter()
            beams[beam] = ranking_metrics(run.model, scored, run.semantic_ids, beam, False)
            seconds[f"beam_{beam}"] = time.perf_counter() - t
            print("beam", beam, json.dumps(beams[beam]), flush=True)

    result = {
        "benchmark": "onerec_ablation",
        "dataset": args.dataset,
        **environment(),
        "peak_rss_bytes": peak_rss_bytes(),
        "protocol": "leave-one-out validation split (second-to-last item), "
                    f"{len(scored)} of {len(split.valid)} users, full ranking over "
                    f"{ds.num_items} items, seen items "
                    f"not excluded; training early-stopped on {args.eval_users} validation users",
        "config": {"args": vars(args), "tokenization": ids_info},
        "arms": arms,
        "beams_moe_m1": beams,
        "seconds": seconds,
    }  # fmt: skip
    (args.out / f"onerec_ablation_{args.dataset}.json").write_text(
        json.dumps(result, indent=2, default=str)
    )
    (args.out / f"onerec_ablation_{args.dataset}.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    head = " | ".join(METRICS)
    lines = [
        f"# OneRec ablation on {r['dataset']} validation (commit {r['commit']})",
        "",
        r["protocol"] + ".",
        "",
        f"| arm | parameters (active) | epochs | train s | {head} |",
        "|---|---|---|---|" + "---|" * len(METRICS),
    ]
    for name, a in r["arms"].items():
        vals = " | ".join(f"{a['valid'][k]:.4f}" for k in METRICS)
        lines.append(f"| {name} | {a['parameters']} | {a['training']['epochs']} | "
                     f"{r['seconds'][f'train_{name}']:.0f} | {vals} |")  # fmt: skip
    if r["beams_moe_m1"]:
        lines += ["", f"| moe_m1 beam | seconds | {head} |", "|---|---|" + "---|" * len(METRICS)]
        for beam, v in r["beams_moe_m1"].items():
            vals = " | ".join(f"{v[k]:.4f}" for k in METRICS)
            lines.append(f"| {beam} | {r['seconds'][f'beam_{beam}']:.0f} | {vals} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
