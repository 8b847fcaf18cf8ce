"""The ``onerec`` command: a thin layer over the Python API (every command is a few calls)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from onerec import __version__
from onerec.exceptions import ConfigError, OneRecError


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="folder with the public datasets (default: $ONEREC_DATA_DIR, shared/data, ../shared/data)",
    )


def _load(source: str, args: argparse.Namespace):
    """A registered dataset name, a saved dataset folder, or an interaction file; prints what
    reading removed (to stderr under --json, so stdout stays JSON)."""
    ds = _read_source(source, args)
    _print_reading_reports(ds, sys.stderr if getattr(args, "json", False) else sys.stdout)
    return ds


def _read_source(source: str, args: argparse.Namespace):
    from onerec.data.readers import ColumnMapping, read_dataset
    from onerec.data.registry import REGISTRY, load_dataset
    from onerec.data.signals import SignalPolicy
    from onerec.exceptions import DatasetNotFoundError

    path = Path(source)
    if source.lower() in REGISTRY or (path / "meta.json").exists():
        return load_dataset(source, args.data_dir)
    if not path.exists():
        raise DatasetNotFoundError(
            f"{source!r} is neither a registered dataset ({', '.join(sorted(REGISTRY))}), a "
            "saved dataset folder, nor a file"
        )
    signed = tuple(args.signed_signals.split(",")) if args.signed_signals else ()
    signal_cols = {c: c for c in args.signal_cols.split(",")} if args.signal_cols else None
    columns = ColumnMapping(
        user=args.user_col, item=args.item_col, timestamp=args.time_col, session=args.session_col,
        signals=signal_cols,
    )  # fmt: skip
    return read_dataset(
        path,
        format=args.format,
        columns=columns,
        item_files=args.item_file or (),
        duplicates=args.duplicates,
        invalid_signals=SignalPolicy(args.invalid_signals, signed),
        encoding=args.encoding,
    )


def _add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="write into --out even when another command (or no onerec command) "
                   "made it; files of the same names are replaced, nothing else is deleted")


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="dataset name (beauty, yelp, ...), saved dataset folder, or file")
    _add_data_dir(p)
    g = p.add_argument_group("reading a file")
    g.add_argument(
        "--format",
        default="auto",
        choices=["auto", "sequences", "pairs", "atomic", "json", "csv", "parquet"],
    )
    g.add_argument("--user-col", default="user_id")
    g.add_argument("--item-col", default="item_id")
    g.add_argument("--time-col", default="timestamp")
    g.add_argument("--session-col", default=None)
    g.add_argument("--signal-cols", default=None,
                   help="comma-separated signal columns of a CSV/Parquet file (default: every "
                   "other numeric column)")
    g.add_argument("--item-file", action="append", help="item text/attribute file (repeatable)")
    g.add_argument("--duplicates", default="drop", choices=["drop", "error", "keep"])
    g.add_argument("--invalid-signals", default="error", choices=["error", "drop"],
                   help="rows with NaN, infinite or negative signal values: stop with an error "
                   "naming the first (default) or drop and count them")
    g.add_argument("--signed-signals", default=None,
                   help="comma-separated signals that may be negative (a centred rating, ...)")
    g.add_argument("--encoding", default="utf-8",
                   help="text encoding of the input files (latin-1, cp1252, utf-16, ...)")


def _print_reading_reports(ds, file) -> None:
    """What reading removed (invalid signal values, duplicate rows), one line per step."""
    from onerec.data.report import FilterReport

    for r in ds.meta.get("filters", []):
        print(FilterReport.from_dict(r), file=file)


def cmd_data_info(args: argparse.Namespace) -> int:
    ds = _load(args.source, args)
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print(f"{summary['name']}: {summary['users']:,} users, {summary['items']:,} items, "
          f"{summary['interactions']:,} interactions (density {summary['density']:.5f})")
    for key, value in summary.items():
        if key not in ("name", "users", "items", "interactions", "density", "filters"):
            print(f"  {key}: {value}")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from onerec.runs import check_output, claim_output

    check_output(args.out, "data convert", args.overwrite)
    ds = _load(args.source, args)
    out = ds.save(claim_output(args.out, "data convert", args.overwrite))
    print(f"wrote {ds.name} ({ds.num_users:,} users, {ds.num_items:,} items, "
          f"{len(ds.log):,} interactions) to {out}")
    return 0


def cmd_data_split(args: argparse.Namespace) -> int:
    from onerec.data.sessions import SessionQualityFilter, assign_sessions
    from onerec.data.splits import leave_one_out, temporal_split
    from onerec.runs import check_output, claim_output

    check_output(args.out, "data split", args.overwrite)
    ds = _load(args.source, args)
    log = ds.log
    reports = []
    if args.session_gap is not None:
        log = assign_sessions(log, args.session_gap)
    if args.session_filter:
        flt = SessionQualityFilter(
            min_watched_items=args.min_watched_items,
            min_total_watch=args.min_total_watch,
            watch_signal=args.watch_signal,
            require_positive=not args.no_positive,
        )
        log, report = flt.apply(assign_sessions(log) if args.session_gap is None else log)
        reports.append(report)
    if args.protocol == "leave-one-out":
        split = leave_one_out(
            log, history_length=args.history_length, min_interactions=args.min_interactions
        )
    else:
        split = temporal_split(
            log,
            history_length=args.history_length,
            valid_fraction=args.valid_fraction,
            test_fraction=args.test_fraction,
            targets=args.targets,
        )
    split.reports[:0] = reports
    split.save(claim_output(args.out, "data split", args.overwrite))
    for r in split.reports:
        print(r)
    s = split.summary()
    print(f"{s['protocol']}: {s['train_interactions']:,} training rows, "
          f"{s['valid_examples']:,} validation and {s['test_examples']:,} test examples -> {args.out}")
    return 0


def cmd_tokenize(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from onerec.data.splits import leave_one_out
    from onerec.embeddings import EmbeddingConfig, item_embeddings
    from onerec.runs import check_output, claim_output
    from onerec.tokenizer.pipeline import TokenizeConfig, report_markdown, save_tokenization, tokenize

    check_output(args.out, "tokenize", args.overwrite)
    ds = _load(args.source, args)
    emb_config = EmbeddingConfig(
        sources=tuple(args.embeddings.split(",")),
        text_fields=tuple(args.text_fields.split(",")) if args.text_fields else None,
        vectors_path=args.vectors,
        fused_dim=args.fused_dim,
        seed=args.seed,
    )
    # collaborative embeddings may only see training interactions: the leave-one-out train part
    split = leave_one_out(ds.log) if "collaborative" in emb_config.sources else None
    x = item_embeddings(ds, emb_config, split=split)
    config = TokenizeConfig(
        method=args.method,
        levels=args.levels,
        codebook_size=args.codebook_size,
        iters=args.iters,
        rqvae_epochs=args.rqvae_epochs,
        seed=args.seed,
    )
    result = tokenize(x, config, progress=not args.quiet)
    out = save_tokenization(
        claim_output(args.out, "tokenize", args.overwrite), result, ds.log.items,
        {"dataset": ds.name, "embeddings": asdict(emb_config), "embedding_dim": int(x.shape[1])},
    )  # fmt: skip
    print(f"{ds.name}: {ds.num_items:,} items -> {result.semantic_ids.n_levels} codes each "
          f"({config.method}, fitted in {result.seconds:.1f}s)")
    print(report_markdown(result.report))
    print(f"wrote {out}")
    return 0


# `onerec train` options that are TrainConfig fields of the same name; their parser default is
# None, so TrainConfig alone holds the defaults
TRAIN_OPTIONS = ("session_items", "history_length", "window_items", "batch_size", "epochs", "lr",
                 "patience", "eval_beam", "eval_users", "seed", "device", "max_seconds",
                 "ema_decay", "prefix_samples")  # fmt: skip


def cmd_train(args: argparse.Namespace) -> int:
    from onerec.model.config import parse_overrides
    from onerec.training import TrainConfig
    from onerec.training.pipeline import train_on_dataset

    # an option left out keeps TrainConfig's default (the validation-selected setting)
    given = {name: getattr(args, name) for name in TRAIN_OPTIONS if getattr(args, name) is not None}
    for off in ("eval_users", "ema_decay"):  # 0 = every validation user / the raw weights
        if given.get(off) == 0:
            given[off] = None
    config = TrainConfig(
        **given, exclude_seen=args.exclude_seen,
        features=tuple(f.strip() for f in (args.features or "").split(",") if f.strip()),
    )  # fmt: skip
    overrides = parse_overrides(args.model or ())
    run = train_on_dataset(_load(args.source, args), args.tokens, args.out, config,
                           preset=args.preset, model_overrides=overrides,
                           overwrite=args.overwrite, force_resume=args.force_resume)  # fmt: skip
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:  # under torchrun, one report
        print(run.model.describe())
        print(f"{run.state['epochs']} epochs, best validation recall@10 "
              f"{run.state['best_valid_recall@10']:.4f} -> {args.out}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from onerec.generation.recommend import Recommender

    history = [h.strip() for h in args.history.split(",") if h.strip()]
    recommender = Recommender.from_run(args.run, device=args.device)
    features = None
    if recommender.model.config.history_features or args.timestamps or args.signal:
        timestamps = None if args.timestamps is None else _numbers(args.timestamps, "--timestamps")
        signals = {}
        for spec in args.signal:
            name, sep, values = spec.partition("=")
            if not sep or not name.strip():
                raise ConfigError(f"--signal expects NAME=V,V,... (one value per history item), "
                                  f"got {spec!r}")  # fmt: skip
            signals[name.strip()] = _numbers(values, f"--signal {name.strip()}")
        features = recommender.request_features(len(history), timestamps, signals)
    rec = recommender.recommend(
        history, user=args.user, n_items=args.items, beam_size=args.beam,
        exclude_history=not args.keep_history, truncate=args.truncate,
        alternatives=args.alternatives, features=features,
    )  # fmt: skip
    if args.json:
        print(json.dumps(rec.to_dict(), indent=2, default=str))
        return 0
    who = "anonymous user" if rec.user is None else f"user {rec.user}"
    if rec.user is not None and rec.anonymous:
        who += " (not in the run's users: served as anonymous)"
    dropped = f", {rec.history_dropped} older dropped" if rec.history_dropped else ""
    read = (f"; side features {', '.join(recommender.feature_names)}"
            if recommender.model.config.history_features and recommender.feature_names else "")
    print(f"{who}, {rec.history_used} history items read{dropped}{read}")
    print(f"session of {len(rec.items)} items (log-prob {rec.log_prob:.4f}): "
          f"{', '.join(str(i) for i in rec.items)}")
    for k, alt in enumerate(rec.alternatives, start=1):
        print(f"  alternative {k} (log-prob {alt.log_prob:.4f}): "
              f"{', '.join(str(i) for i in alt.items)}")
    return 0


def _numbers(text: str, option: str) -> list[float]:
    """A comma-separated list of numbers, or a named error that quotes the option."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise ConfigError(f"{option} expects comma-separated numbers, got {text!r}") from e


def cmd_benchmark(args: argparse.Namespace) -> int:
    from onerec.baselines.benchmark import markdown_table, run_benchmark
    from onerec.baselines.train import BaselineTrainConfig

    config = BaselineTrainConfig(
        max_length=args.max_length, batch_size=args.batch_size, lr=args.lr, epochs=args.epochs,
        patience=args.patience, max_seconds=args.max_seconds, seed=args.seed,
    )  # fmt: skip
    result = run_benchmark(args.dataset, args.models.split(","), args.out, data_dir=args.data_dir,
                           config=config, work_dir=args.work_dir,
                           progress=not args.quiet)  # fmt: skip
    print(markdown_table(result))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from onerec.quickstart import run
    from onerec.simulator import SimulatorConfig

    simulator = SimulatorConfig.load(args.simulator) if args.simulator else None
    run(Path(args.out), seed=args.seed, scale=args.scale, simulator=simulator,
        overwrite=args.overwrite)  # fmt: skip
    return 0


def cmd_online(args: argparse.Namespace) -> int:
    from onerec.online import OnlineConfig, run_online

    overrides = {} if args.days is None else {"days": args.days}
    config = OnlineConfig.scale(args.scale, args.seed, **overrides)
    run_online(Path(args.out), config, overwrite=args.overwrite)
    return 0


def _add_online_parser(sub) -> None:
    on = sub.add_parser("online", help="a simulated multi-day A/B test of OneRec against the "
                        "cascade, served by `onerec serve`, retrained and realigned every day")
    on.add_argument("--out", default="runs/online", help="run folder (resumed when it holds one)")
    _add_overwrite(on)
    on.add_argument("--seed", type=int, default=0)
    on.add_argument("--scale", choices=["default", "tiny"], default="default",
                    help="default: at most 30 minutes on one core; tiny: about a minute")
    on.add_argument("--days", type=int, default=None, help="simulated days (default: the scale's)")
    on.set_defaults(func=cmd_online)


# --- alignment: `onerec reward train` and `onerec align` ----------------------------------------
def cmd_reward_train(args: argparse.Namespace) -> int:
    from onerec.alignment import (RewardTrainConfig, catalog_fingerprint, logged_sessions,
                                  train_reward_model)  # fmt: skip

    ds = _load(args.source, args)
    sessions = logged_sessions(ds.log, args.session_items, args.history_length)
    features = None
    if args.item_embedding:
        features = np.array(ds.item_table.embedding(args.item_embedding), dtype=np.float64)
    model = {"d_model": args.d_model, "dropout": args.dropout, "item_ids": args.item_ids,
             "targets": args.targets, "weights": tuple(_numbers(args.weights, "--weights"))}
    config = RewardTrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               holdout=args.holdout, rate_features=not args.no_rate_features,
                               seed=args.seed)  # fmt: skip
    run = train_reward_model(sessions, args.out, config, num_items=ds.num_items,
                             catalog=catalog_fingerprint(ds.log.items.raw), model=model,
                             item_features=features, progress=not args.quiet)  # fmt: skip
    print(f"{len(sessions):,} logged sessions; held-out scores (RM vs per-item average):")
    ours, base = run.evaluation["reward_model"], run.evaluation["item_average"]
    for key in ours:
        print(f"  {key:<13} {ours[key]:.4f}  vs {base[key]:.4f}")
    print(f"-> {args.out}")
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from onerec.alignment.ipa import AlignConfig, align_from_run

    train = {"lr": args.lr, "epochs": args.epochs, "device": args.device}
    for name in ("session_items", "history_length", "batch_size", "eval_users"):
        value = getattr(args, name)
        if value is not None:
            train[name] = value
    config = AlignConfig(
        iterations=args.iterations, r_dpo=args.r_dpo, n_sessions=args.n_sessions,
        session_items=args.items, strategy=args.strategy, negatives=args.negatives,
        beta=args.beta, dpo_weight=args.dpo_weight, ntp_weight=args.ntp_weight,
        pairs_per_step=args.pairs_per_step, seed=args.seed, train=train,
    )  # fmt: skip
    run = align_from_run(args.run, _load(args.source, args), args.reward, args.out, config,
                         progress=not args.quiet)  # fmt: skip
    for record in run.state["iterations"]:
        print(f"iteration {record['iteration']}: {record['pairs']} pairs, chosen reward "
              f"{record['mean_chosen_reward']:.3f} vs rejected {record['mean_rejected_reward']:.3f}, "
              f"validation recall@10 {record['best_valid_recall@10']:.4f}")
    print(f"-> {args.out}")
    return 0


def _add_alignment_commands(sub: argparse._SubParsersAction) -> None:
    reward = sub.add_parser("reward", help="the reward model of preference alignment")
    rsub = reward.add_subparsers(dest="reward_command", required=True)
    rt = rsub.add_parser("train", help="train a reward model on logged sessions with feedback "
                         "(watch_time, view_through, follow, like and session ids)")
    _add_source(rt)
    rt.add_argument("--out", required=True, help="run folder (an existing one is resumed)")
    rt.add_argument("--session-items", type=int, default=5, help="items per session scored")
    rt.add_argument("--history-length", type=int, default=20)
    rt.add_argument("--item-embedding", default=None,
                    help="an item-table embedding column to use as item side features, e.g. content")
    rt.add_argument("--weights", default="1,1,1,1",
                    help="swt,vtr,wtr,ltr weights of the combined score (default 1,1,1,1)")
    rt.add_argument("--no-rate-features", action="store_true",
                    help="leave out the items' smoothed feedback rates on the training sessions "
                    "as side features")
    rt.add_argument("--item-ids", action="store_true",
                    help="also learn a vector per item id (overfits when items have few sessions)")
    rt.add_argument("--targets", choices=["session", "item"], default="item",
                    help="item (default): towers on every item, trained on each exposure's "
                    "feedback (ranks a user's sessions better, docs/alignment.md); session: "
                    "towers on the pooled session, trained on its values (the paper)")
    rt.add_argument("--d-model", type=int, default=32)
    rt.add_argument("--dropout", type=float, default=0.0)
    rt.add_argument("--epochs", type=int, default=12)
    rt.add_argument("--batch-size", type=int, default=256)
    rt.add_argument("--lr", type=float, default=1e-3)
    rt.add_argument("--holdout", type=float, default=0.1, help="share of sessions held out")
    rt.add_argument("--seed", type=int, default=0)
    rt.add_argument("--quiet", action="store_true", help="no progress bars")
    rt.set_defaults(func=cmd_reward_train)

    al = sub.add_parser("align", help="Iterative Preference Alignment (DPO) of a trained run")
    al.add_argument("run", help="run folder written by `onerec train`")
    _add_source(al)
    al.add_argument("--reward", required=True, help="folder written by `onerec reward train`")
    al.add_argument("--out", required=True, help="IPA run folder (an existing one is resumed)")
    al.add_argument("--iterations", type=int, default=1)
    al.add_argument("--r-dpo", type=float, default=0.01, help="share of users drawn per iteration")
    al.add_argument("--n-sessions", type=int, default=128, help="beams per drawn user (N)")
    al.add_argument("--items", type=int, default=5, help="items per generated session")
    al.add_argument("--strategy", default="best_worst",
                    help="best_worst (paper), softmax (several negatives) or bottom_random")
    al.add_argument("--negatives", type=int, default=1, help="rejected sessions (softmax)")
    al.add_argument("--beta", type=float, default=0.1)
    al.add_argument("--dpo-weight", type=float, default=0.1, help="lambda")
    al.add_argument("--ntp-weight", type=float, default=1.0, help="0: DPO alone")
    al.add_argument("--pairs-per-step", type=int, default=16)
    al.add_argument("--lr", type=float, default=3e-4)
    al.add_argument("--epochs", type=int, default=1, help="training epochs per iteration")
    al.add_argument("--session-items", type=int, default=None, help="default: TrainConfig's")
    al.add_argument("--history-length", type=int, default=None)
    al.add_argument("--batch-size", type=int, default=None)
    al.add_argument("--eval-users", type=int, default=None)
    al.add_argument("--device", default="cpu")
    al.add_argument("--seed", type=int, default=0)
    al.add_argument("--quiet", action="store_true", help="no progress bars")
    al.set_defaults(func=cmd_align)


def cmd_serve(args: argparse.Namespace) -> int:
    from onerec.serving import ServeConfig, serve

    config = ServeConfig(
        run=args.run, device=args.device, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue, workers=args.workers, max_body_bytes=args.max_body_bytes,
        max_history_items=args.max_history_items, watch_seconds=args.watch_seconds,
    )  # fmt: skip
    if args.ray:
        from onerec.serving.ray_app import serve_ray

        serve_ray(config, args.host, args.port, args.replicas, args.cpus_per_replica)
        return 0
    serve(config, host=args.host, port=args.port, access_log=args.access_log)
    return 0


def _add_serve_parser(sub) -> None:
    sv = sub.add_parser("serve", help="serve a trained run over HTTP (FastAPI on uvicorn): "
                        "POST /recommend, /healthz, /readyz, /metrics, /admin/reload")
    sv.add_argument("run", help="run folder written by `onerec train` (watched for new "
                    "checkpoints)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: all)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    sv.add_argument("--max-batch", type=int, default=64,
                    help="requests per beam-search call (1: batching off)")
    sv.add_argument("--max-wait-ms", type=float, default=0.0,
                    help="how long a free worker waits for more requests after the first (0: it "
                    "starts at once; requests queued while workers are busy form the next batch)")
    sv.add_argument("--max-queue", type=int, default=256,
                    help="requests waiting at most; beyond that 503 with Retry-After")
    sv.add_argument("--workers", type=int, default=0,
                    help="batches computed at once (0: one per CPU core; one on a GPU)")
    sv.add_argument("--max-body-bytes", type=int, default=1 << 16, help="request body limit")
    sv.add_argument("--max-history-items", type=int, default=1024,
                    help="history ids a request may send (with truncate, more than the model "
                    "reads)")
    sv.add_argument("--watch-seconds", type=float, default=2.0,
                    help="poll the run folder for a new checkpoint this often (0: off)")
    sv.add_argument("--access-log", action="store_true", help="log every request")
    sv.add_argument("--ray", action="store_true", help="run as a Ray Serve deployment "
                    "(pip install onerec[ray]; joins $RAY_ADDRESS if set)")
    sv.add_argument("--replicas", type=int, default=2, help="Ray Serve replicas (with --ray)")
    sv.add_argument("--cpus-per-replica", type=float, default=1.0,
                    help="CPUs Ray reserves for each replica (with --ray)")
    sv.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onerec",
        description="OneRec: an end-to-end generative recommender. Data, tokenizer, model, "
        "alignment and evaluation from one command line.",
    )
    parser.add_argument("--version", action="version", version=f"onerec {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every step")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="read, convert and split interaction logs")
    dsub = data.add_subparsers(dest="data_command", required=True)
    info = dsub.add_parser("info", help="sizes and statistics of a dataset")
    _add_source(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=cmd_data_info)

    conv = dsub.add_parser("convert", help="convert a dataset to onerec's Parquet layout")
    _add_source(conv)
    conv.add_argument("--out", required=True, help="output folder")
    _add_overwrite(conv)
    conv.set_defaults(func=cmd_data_convert)

    split = dsub.add_parser("split", help="train/validation/test split (and session filter)")
    _add_source(split)
    split.add_argument("--out", required=True, help="output folder")
    _add_overwrite(split)
    split.add_argument("--protocol", default="leave-one-out", choices=["leave-one-out", "temporal"])
    split.add_argument("--history-length", type=int, default=20)
    split.add_argument("--min-interactions", type=int, default=3)
    split.add_argument("--valid-fraction", type=float, default=0.1)
    split.add_argument("--test-fraction", type=float, default=0.1)
    split.add_argument("--targets", default="all", choices=["all", "next"], help="temporal only")
    split.add_argument("--session-gap", type=float, default=None,
                       help="group interactions into sessions split at gaps over this many seconds")
    split.add_argument("--session-filter", action="store_true",
                       help="keep only high-quality sessions (paper, section 2.3)")
    split.add_argument("--min-watched-items", type=int, default=5)
    split.add_argument("--min-total-watch", type=float, default=0.0)
    split.add_argument("--watch-signal", default="watch_time")
    split.add_argument("--no-positive", action="store_true",
                       help="do not require a positive interaction (like, follow, ...)")
    split.set_defaults(func=cmd_data_split)

    tok = sub.add_parser("tokenize", help="item embeddings -> semantic IDs, with a quality report")
    _add_source(tok)
    tok.add_argument("--out", required=True, help="output folder")
    _add_overwrite(tok)
    tok.add_argument("--embeddings", default="text",
                     help="comma-separated sources: text, attributes, collaborative, vectors")
    tok.add_argument("--text-fields", default=None, help="comma-separated item text columns")
    tok.add_argument("--vectors", default=None, help=".npy or .parquet item vectors (source 'vectors')")
    tok.add_argument("--fused-dim", type=int, default=None, help="PCA size of fused embeddings")
    tok.add_argument("--method", default="balanced", choices=["balanced", "plain", "rqvae"])
    tok.add_argument("--levels", type=int, default=3)
    tok.add_argument("--codebook-size", type=int, default=None, help="default: from catalog size")
    tok.add_argument("--iters", type=int, default=50, help="k-means iterations per level")
    tok.add_argument("--rqvae-epochs", type=int, default=200)
    tok.add_argument("--seed", type=int, default=0)
    tok.add_argument("--quiet", action="store_true", help="no progress bar (RQ-VAE training)")
    tok.set_defaults(func=cmd_tokenize)

    tr = sub.add_parser("train", help="train OneRec by next-token prediction (leave-one-out split)")
    _add_source(tr)
    tr.add_argument("--tokens", required=True, help="folder written by `onerec tokenize`")
    tr.add_argument("--out", required=True,
                    help="run folder (an existing run is resumed when made from the same data, "
                    "semantic IDs, model and settings; more --epochs, --patience, "
                    "--max-seconds or another --device may change)")
    tr.add_argument("--overwrite", action="store_true",
                    help="start over in --out: replace the run there (or write into a folder "
                    "another command made)")
    tr.add_argument("--force-resume", action="store_true",
                    help="resume the run in --out even with other inputs or settings (what "
                    "changed is recorded in train_config.json)")
    # not argparse choices: listing them would import torch for every `onerec` call; an
    # unknown name stops with a ConfigError that lists the presets
    tr.add_argument("--preset", default="small",
                    help="model size: tiny, small (default: the selected model), tiger, base "
                    "or large")
    tr.add_argument("--model", action="append", metavar="KEY=VALUE",
                    help="override a model config field, e.g. --model n_experts=0 (dense)")
    # defaults (None here) come from TrainConfig: the settings the quality benchmark selected
    tr.add_argument("--session-items", type=int, help="target items per example, m (default 1)")
    tr.add_argument("--history-length", type=int, help="history items read (default 20)")
    tr.add_argument("--window-items", type=int,
                    help="longest sequence read in one piece; longer ones are windowed "
                    "(default 100)")
    tr.add_argument("--prefix-samples", action=argparse.BooleanOptionalAction, default=None,
                    help="every target its own sample, with its own encoder pass over its "
                    "history (default: every target of a sequence from one pass)")
    tr.add_argument("--batch-size", type=int, help="next-item targets per step (default 256)")
    tr.add_argument("--epochs", type=int, help="(default 20)")
    tr.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    tr.add_argument("--patience", type=int,
                    help="epochs without a better validation Recall@10 before stopping (default 5)")
    tr.add_argument("--eval-beam", type=int, help="beam of the validation ranking (default 20)")
    tr.add_argument("--eval-users", type=int,
                    help="validate on this many users after each epoch; 0 = all (default 4096)")
    tr.add_argument("--exclude-seen", action="store_true",
                    help="never rank a user's earlier items (validation)")
    tr.add_argument("--max-seconds", type=float,
                    help="time budget, checked after every step: the epoch that spends it is "
                    "cut short and validated, then training stops (best epoch kept)")
    tr.add_argument("--ema-decay", type=float,
                    help="validate and keep a moving average of the weights with this decay "
                    "per step; 0 = the raw weights (default 0.999)")
    tr.add_argument("--features", default=None, metavar="NAME,NAME",
                    help="side features of every history item: time_gap and/or signals of the "
                    "log, e.g. time_gap,watch_time (default: none)")
    tr.add_argument("--device", help="auto (GPU if present; the default), cpu, cuda, cuda:1")
    tr.add_argument("--seed", type=int, help="(default 0)")
    tr.set_defaults(func=cmd_train)

    rec = sub.add_parser("recommend", help="generate a session for one user from a trained run")
    rec.add_argument("run", help="run folder written by `onerec train`")
    rec.add_argument("--history", required=True,
                     help="comma-separated raw item ids the user interacted with, oldest first")
    rec.add_argument("--user", default=None, help="raw user id (default, or unknown: anonymous)")
    rec.add_argument("--items", type=int, default=None,
                     help="items per session (default: the run's session_items)")
    rec.add_argument("--beam", type=int, default=32, help="beam size, at least --items")
    rec.add_argument("--keep-history", action="store_true",
                     help="allow items of the history in the session (default: excluded)")
    rec.add_argument("--truncate", action="store_true",
                     help="keep the most recent items of a history longer than the model reads")
    rec.add_argument("--alternatives", type=int, default=0,
                     help="also print this many next-best sessions")
    rec.add_argument("--timestamps", default=None, metavar="T,T,...",
                     help="one timestamp per history item (models trained with time_gap)")
    rec.add_argument("--signal", "--features", action="append", default=[], metavar="NAME=V,V,...",
                     help="one raw value of a side feature per history item, for runs trained "
                     "with `onerec train --features` (time_gap comes from --timestamps); "
                     "repeatable")
    rec.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    rec.add_argument("--json", action="store_true", help="print JSON")
    rec.set_defaults(func=cmd_recommend)

    bench = sub.add_parser("benchmark", help="train and test baselines (SASRec, BERT4Rec, FDSA, "
                           "TIGER, popularity) on one leave-one-out split, in one table")
    bench.add_argument("--dataset", required=True, help="dataset name (beauty, yelp, ...) or folder")
    _add_data_dir(bench)
    bench.add_argument("--models", default="pop,sasrec-ce,sasrec-bce,bert4rec,fdsa,tiger",
                       help="comma-separated: pop, sasrec-ce, sasrec-bce, sasrec-ss, bert4rec, "
                            "fdsa, esasrec, bsarec, tiger")
    bench.add_argument("--out", required=True, help="folder for baselines_<dataset>.json and .md "
                                                    "(baselines_<dataset>_seed<S> for seed S > 0)")
    bench.add_argument("--work-dir", default="runs/baselines",
                       help="TIGER's tokens and run folder (resumed if present)")
    bench.add_argument("--max-length", type=int, default=50, help="history items read")
    bench.add_argument("--batch-size", type=int, default=256, help="sequences per step")
    bench.add_argument("--lr", type=float, default=1e-3)
    bench.add_argument("--epochs", type=int, default=200)
    bench.add_argument("--patience", type=int, default=10, help="validations without improvement")
    bench.add_argument("--max-seconds", type=float, default=1140.0,
                       help="training time cap per model (the best epoch so far is kept)")
    bench.add_argument("--seed", type=int, default=0)
    bench.add_argument("--quiet", action="store_true", help="no progress bars")
    bench.set_defaults(func=cmd_benchmark)

    qs = sub.add_parser("quickstart", help="simulate a platform, train OneRec and baselines, "
                        "grade their sessions")
    qs.add_argument("--out", default="runs/quickstart")
    _add_overwrite(qs)
    qs.add_argument("--seed", type=int, default=0)
    qs.add_argument("--scale", choices=["default", "tiny"], default="default",
                    help="default: about 10 minutes on a 2-core CPU; tiny: seconds (a smoke test)")
    qs.add_argument("--simulator", default=None, metavar="CONFIG.json",
                    help="the platform to simulate: a SimulatorConfig JSON file (any subset of "
                    "its fields, e.g. {\"catalog\": {\"num_items\": 5000}, \"seed\": 3}); its "
                    "sizes replace the scale's")
    qs.set_defaults(func=cmd_quickstart)
    _add_alignment_commands(sub)
    _add_serve_parser(sub)
    _add_online_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except OneRecError as e:
        print(f"onerec: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine, not the input: a full disk, a folder it may not write
        print(f"onerec: error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
