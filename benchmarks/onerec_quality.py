"""OneRec quality on the standard leave-one-out protocol, from scratch: tokenize, train, test.

    python benchmarks/onerec_quality.py --datasets beauty --out benchmarks/results
    python benchmarks/onerec_quality.py --datasets beauty,scientific,yelp --seeds 0,1,2

The defaults are the command selected on validation, and they are the library's own defaults
(the ``small`` preset, ``TrainConfig()``), so ``onerec train`` trains the same model; every
other setting tried, and why it lost, is in ``benchmarks/README.md``. For each dataset, with
the same settings everywhere (nothing here is tuned per dataset):
1. item embeddings: text where the catalog has item text (else attribute lists), fused with
   collaborative co-occurrence vectors from the *training* split; balanced residual k-means,
   3 levels (codebook size from the catalog), a 4th code where items collide. With
   ``--codes published``: a published RQ-VAE tokenization made from item text instead (Beauty,
   whose text is not on this machine), first 3 levels plus our collision code;
2. OneRec (``--preset``, by default ``small``: 16 experts top-2, dropout 0.1, no user-id
   embedding, an item head (loss weight 2) that re-ranks the beam, hashed item identities under
   dropout 0.5, history dropout 0.5) trained by next-token prediction over whole sequences for
   20 epochs, early-stopped on the Recall@10 of 4,096 validation users (beam search,
   ``--eval-beam``, patience 5); what is validated and kept is a moving average of the weights
   (``--ema-decay``);
3. the selected model ranks every test user's next item once: Recall/NDCG@5/10 over the full
   catalog, seen items kept and excluded (S3-Rec's setting); whether to exclude them is chosen
   on validation Recall@10 (``selected`` in the JSON, * in the table): on Beauty no user ever
   returns to an item, on Yelp users do.

Every seed of ``--seeds`` (default 0, 1 and 2) runs all three steps from scratch: its own
tokenization and its own model. Per seed it writes ``onerec_quality_<dataset>_seed<S>.json``
(commit, machine, config, stage times, validation and test metrics, published numbers beside
them) and appends a row to ``onerec_quality.md``; then ``onerec_quality_<dataset>.json`` holds the
summary over seeds (mean and sample standard deviation of validation Recall@10 and of the
selected test metrics), with a summary row in the table when there are several seeds.
Seeds run as separate commands (in parallel, say) are summarized afterwards with
``--summarize``: it reads their records from ``--out`` and trains nothing. Records written to a
scratch ``--out`` (an experiment's own folder) join the results with ``--add-records FILE ...``:
each is copied into ``--out`` and its row added to the table.

``--selection-split`` runs the same three steps with each user's last item removed
(``onerec.data.drop_last_interactions``). Its "test" is then each user's validation item after
a newest history item the model never trained on, which is what the real test is one item later
and what leave-one-out validation is not. It is a score to choose settings on that never reads
the real test items; its records are named ``..._selection<tag>_seed<S>.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from onerec.baselines.benchmark import test_columns
from onerec.data.registry import load_dataset
from onerec.data.splits import drop_last_interactions, leave_one_out, split_protocol
from onerec.embeddings import EmbeddingConfig, content_source, item_embeddings
from onerec.exceptions import ConfigError
from onerec.evaluation import exclude_seen_selected
from onerec.model.config import parse_overrides
from onerec.runinfo import environment, peak_rss_bytes
from onerec.runs import safe_name
from onerec.tokenizer.pipeline import (
    TokenizeConfig,
    load_tokenization,
    save_semantic_ids,
    save_tokenization,
    tokenize,
)
from onerec.tokenizer.published import PUBLISHED_CODES, published_ids
from onerec.training import TrainConfig
from onerec.training.pipeline import METRICS, split_metrics, train_on_dataset

# test Recall@5, NDCG@5, Recall@10, NDCG@10 on the same splits (../shared/data/README.md)
PUBLISHED = {
    "beauty": {
        "TIGER (paper)": [0.0454, 0.0321, 0.0648, 0.0384],
        "SASRec (BCE, S3-Rec table)": [0.0387, 0.0249, 0.0605, 0.0318],
        "S3-Rec": [0.0387, 0.0244, 0.0647, 0.0327],
        "HSTU (genrec reproduction)": [0.0486, 0.0340, 0.0708, 0.0412],
    },
}


def embedding_config(dataset, sources: str = "content,collaborative") -> EmbeddingConfig:
    """The item embeddings our codes are made from: ``sources`` is a comma list of embedding
    sources, where "content" means text where the catalog has it and attributes otherwise
    (``content_source``); the default fuses it with collaborative vectors."""
    names = tuple(content_source(dataset) if s == "content" else s for s in sources.split(","))
    return EmbeddingConfig(sources=names, fused_dim=64)


def semantic_ids(ds, split, root: Path, seed: int, codes: str = "ours", data_dir=None,
                 sources: str = "content,collaborative"):
    """The item codes, saved under ``root / "tokens"`` (and read back from there when a previous
    run saved them). ``codes="ours"``: item embeddings (``sources``; collaborative vectors come
    from the training split) -> balanced residual k-means, 3 levels plus a collision code.
    ``codes="published"``: a published tokenization made from item text
    (``onerec.tokenizer.published.PUBLISHED_CODES``, for catalogs whose text is not here), first
    3 levels plus our collision code. Returns a record of how the codes were made, the tokens
    folder and a summary of the tokenization."""
    tok_dir = root / "tokens"
    if codes == "published":
        saved = (tok_dir / "semantic_ids.parquet").exists()
        table = None if saved else published_ids(ds, data_dir, levels=3)  # named error if none
        record = {"published": PUBLISHED_CODES[ds.name][0], "levels": 3}
        if table is not None:
            save_semantic_ids(tok_dir, table, ds.log.items,
                              {"dataset": ds.name, "tokenizer": record})  # fmt: skip
    else:
        emb_config = embedding_config(ds, sources)
        tok_config = TokenizeConfig(method="balanced", levels=3, seed=seed)
        record = {"embeddings": asdict(emb_config), "tokenizer": asdict(tok_config)}
        if not (tok_dir / "semantic_ids.parquet").exists():
            tokens = tokenize(item_embeddings(ds, emb_config, split=split), tok_config)
            save_tokenization(tok_dir, tokens, ds.log.items,
                              {"dataset": ds.name, "embeddings": asdict(emb_config)})  # fmt: skip
    ids = load_tokenization(tok_dir)[1]  # a resumed run keeps its item codes
    info = {"collision_rate_before": ids.collision_rate_before, "codes_per_item": ids.n_levels}
    return record, tok_dir, info


def run(source: str, seed: int, args: argparse.Namespace) -> dict:
    """Tokenize, train and test on ``source`` (a registry name or a dataset folder) with one
    ``seed`` (the tokenizer's and the model's); the record. Runs live in
    ``args.runs / <dataset name> / seed<seed>`` (resumed when present)."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    torch.manual_seed(seed)
    ds = load_dataset(source, args.data_dir)
    name = safe_name(ds.name)  # it names folders and files: it may not leave them
    dropped = None
    if args.selection_split:  # every stage below reads the shortened log, the trainer's too
        ds.log, report = drop_last_interactions(ds.log)
        dropped = report.to_dict()
    split = leave_one_out(ds.log, history_length=args.history_length)
    # a selection run never resumes (or overwrites) a run of the full log
    root = Path(args.runs) / (name + ("_selection" if dropped else "")) / f"seed{seed}"

    t = time.perf_counter()
    codes_record, tok_dir, ids_info = semantic_ids(ds, split, root, seed, args.codes,
                                                   args.data_dir, args.embeddings)  # fmt: skip
    times["tokenize"] = time.perf_counter() - t

    t = time.perf_counter()
    overrides = parse_overrides(args.model)
    config = TrainConfig(history_length=args.history_length, session_items=args.session_items,
                         epochs=args.epochs, patience=args.patience, lr=args.lr,
                         weight_decay=args.weight_decay, batch_size=args.batch_size,
                         eval_beam=args.eval_beam, eval_users=args.eval_users or None, seed=seed,
                         ema_decay=args.ema_decay or None,
                         prefix_samples=args.prefix_samples)  # fmt: skip
    trained = train_on_dataset(ds, tok_dir, root / "model", config,
                               preset=args.preset, model_overrides=overrides,
                               progress=not args.quiet)  # fmt: skip
    times["train"] = time.perf_counter() - t

    t = time.perf_counter()
    model, ids = trained.model, trained.semantic_ids
    results = split_metrics(model, split, ids, args.eval_beam)
    exclude = exclude_seen_selected(results)  # seen items kept or excluded, chosen on validation
    times["evaluate"] = time.perf_counter() - t
    times["total"] = time.perf_counter() - start
    metrics_lines = (root / "model" / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line) for line in metrics_lines if "valid_recall@10" in json.loads(line)]
    return {
        "benchmark": "onerec_quality",
        "dataset": name,
        **environment(),
        "peak_rss_bytes": peak_rss_bytes(),
        "protocol": split_protocol(args.history_length, ds.num_items, bool(dropped))
                    + f", beam {args.eval_beam}; model and seen-items setting selected on "
                    "validation Recall@10",
        "seed": seed,
        "split": {"selection": bool(dropped), "dropped": dropped,
                  "split": split.summary()},  # fmt: skip
        "config": {"args": vars(args), "model_overrides": overrides, **codes_record,
                   "train": asdict(config), "model": model.config.to_dict(),
                   "parameters": model.describe()},  # fmt: skip
        "tokenization": ids_info,
        "training": {**trained.state, "epochs_log": epochs},
        "seconds": times,
        "results": results,
        "selected": {"exclude_seen": exclude,
                     "test": results["test_exclude_seen" if exclude else "test"]},  # fmt: skip
        "published": PUBLISHED.get(name, {}),
    }


def summarize(records: list[dict]) -> dict:
    """Mean and sample standard deviation over seeds of validation Recall@10 and of the test
    metrics in the setting each seed's validation selected (the seen-items choice), and of the
    training time: the trainer's own, summed over every resumed segment (``seconds.train``
    covers only the last one) and including each epoch's validation."""
    def stats(values: list[float]) -> dict[str, float]:
        a = np.asarray(values, dtype=float)
        return {"mean": float(a.mean()), "sd": float(a.std(ddof=1)) if len(a) > 1 else 0.0}

    test = {k: stats([r["selected"]["test"][k] for r in records]) for k in METRICS}
    valid = stats([r["results"]["valid"]["recall@10"] for r in records])
    return {"seeds": [r["seed"] for r in records], "valid_recall@10": valid, "test": test,
            "exclude_seen": [r["selected"]["exclude_seen"] for r in records],
            "best_epochs": [best_epoch(r) for r in records],
            "train_seconds": stats([r["training"]["seconds"] for r in records])}  # fmt: skip


def best_epoch(record: dict) -> int | None:
    """The epoch whose validation (the subset early stopping reads) chose the kept weights."""
    log = record["training"]["epochs_log"]
    return max(log, key=lambda e: e["valid_recall@10"])["epoch"] if log else None


def summary_row(dataset: str, summary: dict) -> str:
    """The table row of the mean (sd) over seeds, test in the selected setting."""
    t = summary["test"]
    cells = " / ".join(f"{t[k]['mean']:.4f} ({t[k]['sd']:.4f})" for k in METRICS)
    seeds = ",".join(map(str, summary["seeds"]))
    v = summary["valid_recall@10"]
    return (f"| {dataset}, mean (sd) of seeds {seeds} | selected setting: {cells} | | "
            f"{v['mean']:.4f} ({v['sd']:.4f}) | | train {summary['train_seconds']['mean']:.0f} "
            f"per seed | |")


def label(record: dict) -> str:
    """The table's dataset cell: the dataset, and the selection split where it is one."""
    selection = (record.get("split") or {}).get("selection")
    return record["dataset"] + (", selection split" if selection else "")


def markdown_row(r: dict) -> str:
    """One row of ``onerec_quality.md``; * marks the seen-items setting validation selects."""
    fmt, fmt_ex = test_columns(r["results"])
    s = r["seconds"]
    return (f"| {label(r)} | {fmt} | {fmt_ex} | {r['results']['valid']['recall@10']:.4f} | "
            f"{r['training']['epochs']} | {s['tokenize']:.0f} / {s['train']:.0f} / "
            f"{s['evaluate']:.0f} / {s['total']:.0f} | {r['commit']} |")


def add_row(table: Path, row: str) -> None:
    """Add ``row`` to the table in ``table`` (made if missing), right after its last row: the
    notes written below the table, tables of their own included, stay below it."""
    if not table.exists():
        table.write_text(
            "| dataset | test R@5 / N@5 / R@10 / N@10 | same, seen items excluded | valid R@10 "
            "| epochs | seconds: tokenize / train / evaluate / total | commit |\n"
            "|---|---|---|---|---|---|---|\n"
        )
    lines = table.read_text().splitlines()
    last = next(i for i, line in enumerate(lines) if line.startswith("|"))
    while last + 1 < len(lines) and lines[last + 1].startswith("|"):
        last += 1
    lines.insert(last + 1, row)
    table.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="beauty")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--runs", default="runs/quality", help="run folders (resumed if present)")
    parser.add_argument("--codes", choices=("ours", "published"), default="ours",
                        help="item codes: our tokenizer on content + collaborative embeddings, "
                             "or a published tokenization from item text (Beauty)")
    parser.add_argument("--embeddings", default="content,collaborative",
                        help="embedding sources of our codes (content = text, else attributes)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                        help="model config override on top of the preset, repeatable "
                             "(e.g. dropout=0.2)")
    # the training defaults are TrainConfig's (the selected settings)
    parser.add_argument("--history-length", type=int, default=TrainConfig.history_length)
    parser.add_argument("--session-items", type=int, default=TrainConfig.session_items)
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--patience", type=int, default=TrainConfig.patience,
                        help="epochs without a better validation Recall@10 before stopping")
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--weight-decay", type=float, default=TrainConfig.weight_decay,
                        help="AdamW's decoupled weight decay, on every parameter")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--eval-beam", type=int, default=TrainConfig.eval_beam)
    parser.add_argument("--eval-users", type=int, default=TrainConfig.eval_users,
                        help="validation users ranked after every epoch (0 = all)")
    parser.add_argument("--ema-decay", type=float, default=TrainConfig.ema_decay,
                        help="validate and keep a moving average of the weights with this decay "
                             "per step (0 = the raw weights)")
    parser.add_argument("--prefix-samples", action=argparse.BooleanOptionalAction,
                        default=TrainConfig.prefix_samples,
                        help="every target its own sample (its own encoder pass), instead of "
                             "every target of a sequence from one pass")
    parser.add_argument("--seeds", default="0,1,2",
                        help="comma list; each seed tokenizes and trains from scratch, and the "
                             "summary gives the mean and spread")  # fmt: skip
    parser.add_argument("--selection-split", action="store_true",
                        help="drop each user's last item first: 'test' is then each user's "
                             "validation item after a fresh newest history item, a score to "
                             "select settings on that never reads the real test items; records "
                             "are named with '_selection' before the tag")
    parser.add_argument("--tag", default="", help="appended to the record names")
    parser.add_argument("--summarize", action="store_true",
                        help="train nothing: summarize the --seeds records already in --out")
    parser.add_argument("--add-records", nargs="+", type=Path, default=None, metavar="FILE",
                        help="train nothing: copy these finished per-seed records into --out "
                             "and add their rows to its table")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if args.add_records:
        args.out.mkdir(parents=True, exist_ok=True)
        for row in add_records(args.add_records, args.out):
            print(row)
        return
    seeds = parse_seeds(args.seeds)
    if args.selection_split:
        args.tag = "_selection" + args.tag
    args.out.mkdir(parents=True, exist_ok=True)
    for source in args.datasets.split(","):
        records = []
        dataset = safe_name(load_dataset(source, args.data_dir).name) if args.summarize else ""
        for seed in seeds:
            if args.summarize:
                records.append(read_record(args.out, dataset, args.tag, seed))
                continue
            result = run(source, seed, args)
            name = f"onerec_quality_{result['dataset']}{args.tag}_seed{seed}.json"
            (args.out / name).write_text(json.dumps(result, indent=2, default=str))
            row = markdown_row(result)
            add_row(args.out / "onerec_quality.md", row)
            print(row, flush=True)
            records.append(result)
        summary = summarize(records)
        aggregate = {
            "benchmark": "onerec_quality", "dataset": records[0]["dataset"], **environment(),
            "protocol": records[0]["protocol"] + f"; seeds {args.seeds}, mean and sample sd",
            "config": records[0]["config"], "summary": summary,
            "records": [f"onerec_quality_{r['dataset']}{args.tag}_seed{r['seed']}.json"
                        for r in records],
            "published": records[0]["published"],
        }  # fmt: skip
        path = args.out / f"onerec_quality_{records[0]['dataset']}{args.tag}.json"
        path.write_text(json.dumps(aggregate, indent=2, default=str))
        if len(records) > 1:
            row = summary_row(label(records[0]), summary)
            add_row(args.out / "onerec_quality.md", row)
            print(row)


def add_records(files: list[Path], out: Path) -> list[str]:
    """Copy finished per-seed records into ``out`` and add their rows to its table; the rows.

    A record already in ``out`` under the same name must be the same file (nothing is
    overwritten), and a row already in the table is not added twice, so a repeated call
    changes nothing."""
    table = out / "onerec_quality.md"
    rows = []
    for file in files:
        try:
            data = file.read_bytes()
            record = json.loads(data)
        except (OSError, ValueError) as error:
            raise ConfigError(f"--add-records: cannot read {file} as JSON ({error})") from None
        if not isinstance(record, dict) or record.get("benchmark") != "onerec_quality" or (
                "seed" not in record or "results" not in record):  # fmt: skip
            raise ConfigError(
                f"--add-records: {file} is not a per-seed record of this benchmark (expected "
                f"the onerec_quality_<dataset><tag>_seed<S>.json that a run writes)"
            )
        target = out / file.name
        if target.exists() and target.read_bytes() != data:
            raise ConfigError(f"--add-records: {target} exists and differs from {file}; "
                              f"remove it first or rename the record")  # fmt: skip
        if not target.exists():
            target.write_bytes(data)
        row = markdown_row(record)
        if not (table.exists() and row in table.read_text().splitlines()):
            add_row(table, row)
        rows.append(row)
    return rows


def read_record(out: Path, name: str, tag: str, seed: int) -> dict:
    """The record an earlier run of ``seed`` on dataset ``name`` wrote into ``out``."""
    path = out / f"onerec_quality_{name}{tag}_seed{seed}.json"
    if not path.is_file():
        raise ConfigError(f"--summarize: {path} not found; run seed {seed} with --tag "
                          f"{tag!r} and --out {out} first")  # fmt: skip
    return json.loads(path.read_text())


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``, with a named error for anything else."""
    try:
        seeds = [int(x) for x in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct integers separated by commas, got {text!r}")
    return seeds


if __name__ == "__main__":
    main()
