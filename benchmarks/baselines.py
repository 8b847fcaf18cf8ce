"""Baselines (popularity, SASRec-CE/-BCE/-SS, BERT4Rec, FDSA, eSASRec, TIGER) on the standard
leave-one-out protocol, in the same harness as OneRec (a thin script over
``onerec.baselines.benchmark``).

    python benchmarks/baselines.py --dataset beauty
    python benchmarks/baselines.py --dataset scientific --models pop,sasrec-ce,fdsa

Writes ``benchmarks/results/baselines_<dataset>.json`` and ``.md``: test Recall/NDCG@5/10 with
seen items kept and excluded (S3-Rec's setting; * marks the one validation selects), validation
Recall@10, epochs, wall times, and the published numbers beside ours. Models already in the JSON
and not run again are kept, so a model can be re-run alone.

Several seeds: run each with ``--seed S`` (seed S > 0 writes ``baselines_<dataset>_seedS.json``),
then ``--summarize 0,1,2`` writes each model's mean and spread, ``baselines_<dataset>_seeds.json``
and ``.md``, and trains nothing:

    python benchmarks/baselines.py --dataset scientific --models sasrec-ce --seed 1
    python benchmarks/baselines.py --dataset scientific --summarize 0,1,2

A settings sweep overrides the registered settings and measures validation only, into its own
folder (the test is run once, for the selected setting):

    python benchmarks/baselines.py --models sasrec-ss --set hidden=256 --valid-only \
        --out benchmarks/results/sweeps/sasrec_beauty/hidden256
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from onerec.baselines.benchmark import (
    ALL_MODELS,
    BaselineSettings,
    record_name,
    run_benchmark,
    seeds_table,
    write_seed_summary,
)
from onerec.baselines.tiger import TigerSettings
from onerec.baselines.train import BaselineTrainConfig
from onerec.data.registry import load_dataset
from onerec.model.config import parse_overrides
from onerec.runs import safe_name


def seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (argparse reports a ValueError as a usage error)."""
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beauty")
    parser.add_argument("--models", default=",".join(ALL_MODELS))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--work-dir", default="runs/baselines",
                        help="TIGER's tokens and run folder (resumed if present)")
    parser.add_argument("--max-length", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=1140.0,
                        help="training time cap per model (the best epoch so far is kept)")
    parser.add_argument("--tiger-epochs", type=int, default=TigerSettings().epochs,
                        help="TIGER's schedule length (its training also stops at --max-seconds)")
    parser.add_argument("--tiger-model", action="append", default=[], metavar="KEY=VALUE",
                        help="override of TIGER's model preset, repeatable (e.g. "
                             "encoder_layers=2); the record keeps them")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the models' registered constructor settings, "
                             "repeatable (e.g. hidden=256, dropout=0.2); the record keeps them")
    parser.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                        help="override of the training settings after the per-model ones, "
                             "repeatable (e.g. batch_size=256, weight_decay=0.1)")
    parser.add_argument("--valid-only", action="store_true",
                        help="a sweep: measure validation only, never the test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selection-split", action="store_true",
                        help="drop each user's last item first: 'test' is then each user's "
                             "validation item after a fresh newest history item, a score to "
                             "select settings on that never reads the real test items "
                             "(records baselines_<dataset>_selection[_seed<S>])")
    parser.add_argument("--summarize", metavar="SEEDS", default=None, type=seed_list,
                        help="train nothing: summarize these seeds' records in --out (0,1,2)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.summarize is not None:
        name = load_dataset(args.dataset, args.data_dir).name
        name += "_selection" if args.selection_split else ""
        print(seeds_table(write_seed_summary(args.out, name, args.summarize)))
        return
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    config = BaselineTrainConfig(max_length=args.max_length, batch_size=args.batch_size,
                                 lr=args.lr, epochs=args.epochs, patience=args.patience,
                                 max_seconds=args.max_seconds, seed=args.seed,
                                 device=args.device)  # fmt: skip
    result = run_benchmark(args.dataset, args.models.split(","), args.out, data_dir=args.data_dir,
                           config=config, work_dir=args.work_dir,
                           tiger=TigerSettings(epochs=args.tiger_epochs,
                                               model=parse_overrides(args.tiger_model)),
                           settings=BaselineSettings(parse_overrides(args.set),
                                                     parse_overrides(args.train),
                                                     test=not args.valid_only),
                           progress=not args.quiet,
                           selection_split=args.selection_split)  # fmt: skip
    stem = safe_name(result["dataset"]) + ("_selection" if args.selection_split else "")
    name = record_name(stem, args.seed)
    print((args.out / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
