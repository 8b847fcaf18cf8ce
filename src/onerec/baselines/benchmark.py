"""The baseline comparison: every model trained and tested on one split by the same code.

``run_benchmark("beauty", ["pop", "sasrec-ce", "sasrec-bce", "bert4rec", "fdsa"], "out")``:

1. leave-one-out split (last item test, second-to-last validation), histories of the last
   ``max_length`` (50, as S3-Rec's baselines) items;
2. each model built with a fixed seed and trained by :func:`onerec.baselines.train.fit`
   (early stopping on validation Recall@10);
3. the selected model scores every test user once through :func:`onerec.evaluation.evaluate`:
   full ranking over all items, seen items kept and excluded (S3-Rec's setting, whose code
   filters them); the table marks with * the setting validation selects
   (:func:`onerec.evaluation.exclude_seen_selected`), every record keeps standard errors.

Writes ``baselines_<dataset>.json`` (commit, machine, configs, per-epoch logs, metrics, seconds,
published numbers) and ``baselines_<dataset>.md`` (one table); ``<dataset>`` is the dataset's
name made safe as a file name (:func:`onerec.runs.safe_name`: ``../x`` becomes ``_x``), so it
never leaves ``out_dir``. Nothing else in ``out_dir`` is touched. Models of an earlier run of the
same dataset in ``out_dir`` are kept unless run again (the file is read again before each
write), so models can be run one at a time, or side by side. A seed other than 0 writes
``baselines_<dataset>_seed<S>.json`` and ``.md`` instead, and :func:`summarize_seeds` turns the
records of several seeds into a mean and spread per model.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from onerec.baselines.base import SequentialRecommender
from onerec.baselines.bert4rec import BERT4Rec
from onerec.baselines.bsarec import BSARec
from onerec.baselines.esasrec import ESASRec
from onerec.baselines.fdsa import FDSA, item_attributes
from onerec.baselines.popularity import Popularity
from onerec.baselines.sasrec import Dropout, SASRec, SelfAttention
from onerec.baselines.tiger import TigerSettings, run_tiger
from onerec.baselines.train import BaselineTrainConfig, fit, set_seed
from onerec.data.registry import load_dataset
from onerec.data.schema import Dataset
from onerec.data.splits import Split, drop_last_interactions, leave_one_out, split_protocol
from onerec.evaluation import evaluate, exclude_seen_selected
from onerec.exceptions import BaselineError, OutputExistsError, RunFileError, UnknownModelError
from onerec.runinfo import environment, peak_rss_bytes
from onerec.runs import read_json, safe_name
from onerec.training.pipeline import METRICS


Builder = Callable[..., SequentialRecommender]  # (dataset, split, max_length, **overrides)

MODELS: dict[str, Builder] = {
    "pop": lambda ds, split, L, **kw: Popularity.from_sequences(split.train_sequences(),
                                                                split.num_items, L, **kw),
    "sasrec-ce": lambda ds, split, L, **kw: SASRec(split.num_items, L, **{"loss": "ce", **kw}),
    "sasrec-bce": lambda ds, split, L, **kw: SASRec(split.num_items, L, **{"loss": "bce", **kw}),
    # SASRec+SS as the eSASRec benchmark trains it on Beauty: one block, one head, dropout 0.2,
    # 256 uniform negatives per position (batch 128 below)
    "sasrec-ss": lambda ds, split, L, **kw: SASRec(
        split.num_items, L, **{"loss": "ss", "layers": 1, "heads": 1, "dropout": 0.2, **kw}
    ),
    "bert4rec": lambda ds, split, L, **kw: BERT4Rec(split.num_items, L, **kw),
    "fdsa": lambda ds, split, L, **kw: FDSA(split.num_items, *item_attributes(ds), max_length=L,
                                            **kw),
    "esasrec": lambda ds, split, L, **kw: ESASRec(split.num_items, L, **kw),
    "bsarec": lambda ds, split, L, **kw: BSARec(split.num_items, L, **kw),
}

# training settings that differ per model: the BCE loss learns from one negative per position,
# so an epoch is cheap (~4 s on Beauty) and many are needed; validating every 5th keeps the
# validation passes from dominating its time. The sampled-softmax models use the eSASRec
# benchmark's batch of 128.
TRAINING: dict[str, dict[str, Any]] = {
    # trained on every prefix (BSARec's pipeline): on Beauty validation Recall@10 .0940 after 6
    # epochs against .0923 at best from one sequence per user (benchmarks/results/sweeps)
    "sasrec-ce": {"prefixes": True},
    "sasrec-bce": {"eval_every": 5, "patience": 4},
    "sasrec-ss": {"batch_size": 128},
    "esasrec": {"batch_size": 128},
    # BSARec's pipeline: every prefix a sample (its filter cannot train on all positions at
    # once), Adam at 5e-4 as its Beauty script
    "bsarec": {"prefixes": True, "lr": 5e-4},
}

# published test Recall@5, NDCG@5, Recall@10, NDCG@10 on the same splits (shared/data/README.md);
# None where the source does not report a metric
PUBLISHED: dict[str, dict[str, dict[str, Any]]] = {
    "beauty": {
        "sasrec-bce": {"source": "S3-Rec table (SASRec)", "values": [0.0387, 0.0249, 0.0605, 0.0318]},
        "bert4rec": {"source": "S3-Rec table", "values": [0.0203, 0.0124, 0.0347, 0.0170]},
        "fdsa": {"source": "S3-Rec table", "values": [0.0267, 0.0163, 0.0407, 0.0208]},
        "sasrec-ce": {"source": "RecBole tracker, full-softmax CE (approximate)",
                      "values": [None, None, 0.083, 0.042]},
        # the eSASRec paper's benchmark (blondered/transformer_benchmark README), seen items
        # filtered; their Beauty is S3-Rec's, as ours
        "sasrec-ss": {"source": "eSASRec benchmark, SASRec+SS 256 negatives",
                      "values": [None, None, 0.0921, 0.0531]},
        "esasrec": {"source": "eSASRec paper benchmark", "values": [None, None, 0.0928, 0.0523]},
        "bsarec": {"source": "BSARec paper", "values": [0.0736, 0.0523, 0.1008, 0.0611]},
    },
}


@dataclass(frozen=True)
class BaselineSettings:
    """Overrides of the registered settings, for a sweep: ``model`` goes to each model's
    constructor (``{"hidden": 256}``), ``train`` over its :class:`BaselineTrainConfig` (after the
    per-model ``TRAINING``); ``test=False`` measures validation only. Each record keeps them."""

    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    test: bool = True

    def record(self) -> dict[str, Any]:
        return {"model": dict(self.model), "train": dict(self.train), "test": self.test}


# generative baselines: trained and ranked by OneRec's own code (their own module), not `fit`
GENERATIVE = ("tiger",)
ALL_MODELS = (*MODELS, *GENERATIVE)


def check_models(models: Sequence[str]) -> list[str]:
    """The model names, lower-cased; an unknown one raises :class:`UnknownModelError`."""
    names = [m.strip().lower() for m in models if m.strip()]
    unknown = [m for m in names if m not in ALL_MODELS]
    if unknown or not names:
        what = f"unknown baseline model(s) {unknown}" if unknown else "no baseline model given"
        raise UnknownModelError(
            f"{what}; expected a comma-separated subset of {', '.join(ALL_MODELS)}"
        )
    return names


def evaluate_model(
    model: SequentialRecommender, split: Split, test: bool = True
) -> dict[str, dict[str, float]]:
    """Validation and test metrics (means and standard errors), seen items kept and excluded,
    all through ``evaluate``. ``test=False``: validation only (a settings sweep, where the test
    is run once, for the selected setting only)."""
    out = {}
    parts = (("valid", split.valid), ("test", split.test)) if test else (("valid", split.valid),)
    for part, examples in parts:
        for exclude in (False, True):
            result = evaluate(examples, scores=model.score_fn(examples), ks=(5, 10),
                              exclude_seen=exclude, num_items=model.num_items,
                              progress=False)  # fmt: skip
            out[part + ("_exclude_seen" if exclude else "")] = result.summary(METRICS)
    return out


def run_model(
    name: str, dataset: Dataset, split: Split, config: BaselineTrainConfig, progress: bool = True,
    settings: BaselineSettings | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Build, train (select on validation) and test one baseline; its JSON record."""
    settings = settings or BaselineSettings()
    start = time.perf_counter()
    try:
        config = replace(config, **{**TRAINING.get(name, {}), **settings.train})
    except TypeError as err:
        raise BaselineError(
            f"unknown training setting in {settings.train}: {err}. Fix: use fields of "
            f"BaselineTrainConfig (e.g. batch_size, lr, weight_decay, patience)."
        ) from err
    set_seed(config.seed)
    try:
        model = MODELS[name](dataset, split, config.max_length, **settings.model)
    except TypeError as err:  # an override the model's constructor does not take
        raise BaselineError(
            f"{name} does not take the model setting(s) {settings.model}: {err}. Fix: pass only "
            f"arguments of its constructor (e.g. hidden, layers, heads, dropout)."
        ) from err
    trained = fit(model, split, config, progress=progress)
    t = time.perf_counter()
    results = evaluate_model(model, split, test=settings.test)
    evaluate_seconds = time.perf_counter() - t
    return {
        "model": name,
        "class": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "hyperparameters": {**_hyperparameters(model), "settings": settings.record()},
        "train_config": config.to_dict(),
        "training": {
            "best_epoch": trained.best_epoch,
            "epochs": trained.epochs,
            "stopped": trained.stopped,
            "log": trained.log,
        },
        "seconds": {"train": trained.seconds, "evaluate": evaluate_seconds,
                    "total": time.perf_counter() - start},  # fmt: skip
        "results": results,
        "published": PUBLISHED.get(dataset.name, {}).get(name),
    }


def _hyperparameters(model: SequentialRecommender) -> dict[str, Any]:
    keys = ("num_items", "max_length", "loss_kind", "negatives", "ff_multiplier", "mask_prob",
            "hidden")
    out = {k: getattr(model, k) for k in keys if hasattr(model, k)}
    dropouts = {m.p for m in model.modules() if isinstance(m, (torch.nn.Dropout, Dropout))}
    if dropouts:
        out["dropout"] = sorted(dropouts)
    # transformer blocks of any kind (SASRec's, eSASRec's LiGR, BSARec's): modules whose
    # attention is a SelfAttention
    blocks = [m for m in model.modules() if isinstance(getattr(m, "attn", None), SelfAttention)]
    if blocks:
        out["blocks"] = len(blocks)
        out["heads"] = blocks[0].attn.heads
        out["hidden"] = blocks[0].attn.out.out_features
    return out


def run_benchmark(
    dataset_name: str,
    models: Sequence[str],
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    config: BaselineTrainConfig | None = None,
    work_dir: str | Path = "runs/baselines",
    tiger: TigerSettings = TigerSettings(),
    settings: BaselineSettings | None = None,
    progress: bool = True,
    selection_split: bool = False,
) -> dict[str, Any]:
    """Train and test ``models`` on ``dataset_name``; write and return the JSON record.
    ``work_dir``: where generative baselines keep their tokens and run folders; ``tiger``: the
    TIGER settings (its own schedule; ``config`` gives it the seed, device and time cap);
    ``settings``: overrides of the other models' registered settings (a sweep).
    ``selection_split``: drop every user's last item first
    (:func:`~onerec.data.splits.drop_last_interactions`), so that "test" is each user's
    validation item after a fresh newest history item; the record is then
    ``baselines_<dataset>_selection[_seed<S>]``."""
    names = check_models(models)
    config = config or BaselineTrainConfig()
    dataset = load_dataset(dataset_name, data_dir)
    dropped = None
    if selection_split:  # every model, TIGER's own split included, reads the shortened log
        dataset.log, report = drop_last_interactions(dataset.log)
        dropped = report.to_dict()
    split = leave_one_out(dataset.log, history_length=config.max_length)
    stem = safe_name(dataset.name)  # the name comes from data: it may not leave out_dir
    if selection_split:
        stem += "_selection"  # its records and TIGER's run folder stay apart from the full log's
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file, not a folder. Fix: choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    record = record_name(stem, config.seed)
    path = out / f"{record}.json"
    _records(path)  # an unreadable earlier record stops the run before any training
    ours: dict[str, Any] = {}
    for name in names:
        if name == "tiger":
            work = Path(work_dir) / f"tiger_{stem}"
            ours[name] = run_tiger(dataset, config, work, tiger, progress, data_dir)
        else:
            ours[name] = run_model(name, dataset, split, config, progress, settings)
        # the table keeps models from earlier runs: each record names the code that made it
        ours[name]["commit"] = environment()["commit"]
        if selection_split:  # published numbers are the real test's: not comparable here
            ours[name]["published"] = None
        # read the file again just before writing: another run may have added models meanwhile
        records = _records(path)
        records.update(ours)
        result = {
            "benchmark": "baselines",
            "dataset": dataset.name,
            **environment(),
            "peak_rss_bytes": peak_rss_bytes(),
            "protocol": split_protocol(config.max_length, split.num_items, bool(dropped))
                        + "; model selected on validation Recall@10 (seen items kept); test once",
            "split": {**split.summary(), "selection": bool(dropped), "dropped": dropped},
            "train_config": config.to_dict(),
            "note": "wall times measured on a shared 2-core CPU (another job may run beside it)",
            "models": {m: records[m] for m in [*ALL_MODELS, *records] if m in records},
        }
        path.write_text(json.dumps(result, indent=2, default=str))
        (out / f"{record}.md").write_text(markdown_table(result))
        if progress:
            print(markdown_row(ours[name]), flush=True)
    return result


def record_name(stem: str, seed: int) -> str:
    """The file name (without suffix) of one seed's records of dataset ``stem``: seed 0 keeps
    the plain ``baselines_<dataset>``, the one every earlier record has."""
    return f"baselines_{stem}" if seed == 0 else f"baselines_{stem}_seed{seed}"


def summarize_seeds(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds, per model, of validation Recall@10 and of
    test Recall/NDCG@5/10 in the setting each seed's validation selects (seen items kept or
    excluded); ``records`` are the ``baselines_<dataset>[_seed<S>].json`` of several seeds of
    one dataset. Models missing from any seed are left out, and listed."""
    if len(records) < 2:
        raise BaselineError(f"a seed summary needs 2 or more seeds' records, got {len(records)}")
    seeds = [r["train_config"]["seed"] for r in records]
    datasets = {r["dataset"] for r in records}
    if len(set(seeds)) != len(seeds) or len(datasets) != 1:
        raise BaselineError(
            f"records must be of one dataset and distinct seeds, got datasets {sorted(datasets)} "
            f"and seeds {seeds}: pass each seed's baselines_<dataset>[_seed<S>].json once"
        )
    everywhere = [m for m in records[0]["models"] if all(m in r["models"] for r in records)]
    models: dict[str, Any] = {}
    for m in everywhere:
        results = [r["models"][m]["results"] for r in records]
        if any("test" not in res for res in results):
            continue  # a validation-only sweep has no test to summarize
        exclude = [exclude_seen_selected(res) for res in results]
        tests = [res["test_exclude_seen" if ex else "test"] for res, ex in zip(results, exclude)]
        models[m] = {
            "test": {k: _mean_sd([t[k] for t in tests]) for k in METRICS},
            "valid_recall@10": _mean_sd([res["valid"]["recall@10"] for res in results]),
            "exclude_seen": exclude,
            "train_seconds": _mean_sd([r["models"][m]["seconds"]["train"] for r in records]),
        }
    left_out = sorted({m for r in records for m in r["models"]} - set(models))
    return {"dataset": records[0]["dataset"], "seeds": seeds, "models": models,
            "left_out": left_out}  # fmt: skip


def write_seed_summary(out_dir: str | Path, dataset: str, seeds: Sequence[int]) -> dict[str, Any]:
    """Summarize (:func:`summarize_seeds`) the records that runs of ``seeds`` on ``dataset``
    wrote into ``out_dir``; write ``baselines_<dataset>_seeds.json`` (with the commit and
    machine of this summary, and the records' file names) and ``.md`` there."""
    out, stem = Path(out_dir), safe_name(dataset)
    records = []
    for seed in seeds:
        path = out / f"{record_name(stem, seed)}.json"
        if not path.is_file():
            raise RunFileError("no record of this seed", path=path,
                               hint=f"run the benchmark with --seed {seed} and this --out first")
        records.append(read_json(path, f"run the benchmark with --seed {seed} again"))
    summary = {"benchmark": "baselines_seeds", **environment(), **summarize_seeds(records),
               "records": [f"{record_name(stem, seed)}.json" for seed in seeds]}  # fmt: skip
    (out / f"baselines_{stem}_seeds.json").write_text(json.dumps(summary, indent=2))
    (out / f"baselines_{stem}_seeds.md").write_text(seeds_table(summary))
    return summary


def _mean_sd(values: Sequence[float]) -> dict[str, float]:
    a = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(a.mean()), "sd": float(a.std()) if len(values) > 1 else 0.0}


def seeds_table(summary: dict[str, Any]) -> str:
    """The markdown table of :func:`summarize_seeds`: mean (sd) per model."""
    seeds = ",".join(map(str, summary["seeds"]))
    lines = [f"Seeds {seeds}: mean (sample sd); test in the setting each seed's validation "
             "selects (seen items kept or excluded).", "",
             "| model | test R@5 / N@5 / R@10 / N@10 | valid R@10 | seen items | train s |",
             "|---|---|---|---|---|"]  # fmt: skip
    for m, s in summary["models"].items():
        test = " / ".join(f"{s['test'][k]['mean']:.4f} ({s['test'][k]['sd']:.4f})"
                          for k in METRICS)  # fmt: skip
        v = s["valid_recall@10"]
        seen = {True: "excluded", False: "kept"}
        setting = "/".join(seen[e] for e in s["exclude_seen"])
        lines.append(f"| {m} | {test} | {v['mean']:.4f} ({v['sd']:.4f}) | {setting} | "
                     f"{s['train_seconds']['mean']:.0f} |")
    if summary["left_out"]:
        lines += ["", "Not in every seed's record (or validation only): "
                  + ", ".join(summary["left_out"]) + "."]
    return "\n".join(lines) + "\n"


def _records(path: Path) -> dict[str, Any]:
    """The model records of an earlier run's ``baselines_<dataset>.json`` ({} when none)."""
    if not path.exists():
        return {}
    hint = f"move {path} away; the benchmark then writes a new one."
    models = read_json(path, hint).get("models", {})
    if not isinstance(models, dict):
        raise RunFileError(f"'models' must be an object, got {type(models).__name__}", path=path,
                           hint=hint)  # fmt: skip
    return models


def _fmt(values: Sequence[float | None]) -> str:
    return " / ".join("—" if v is None else f"{v:.4f}" for v in values)


def test_columns(results: dict[str, dict[str, float]]) -> tuple[str, str]:
    """Test R@5 / N@5 / R@10 / N@10 with seen items kept and excluded, as two table cells; * marks
    the setting validation selects (:func:`onerec.evaluation.exclude_seen_selected`). A
    validation-only record (a sweep) shows the validation numbers instead, marked as such."""
    exclude = exclude_seen_selected(results)
    if "test" not in results:
        kept = "valid " + _fmt([results["valid"][k] for k in METRICS]) + ("" if exclude else " *")
        excluded = "valid " + _fmt([results["valid_exclude_seen"][k] for k in METRICS]) + (
            " *" if exclude else ""
        )
        return kept, excluded
    kept = _fmt([results["test"][k] for k in METRICS]) + ("" if exclude else " *")
    excluded = _fmt([results["test_exclude_seen"][k] for k in METRICS]) + (" *" if exclude else "")
    return kept, excluded


def markdown_row(r: dict[str, Any]) -> str:
    res = r["results"]
    published = r.get("published")
    pub = f"{_fmt(published['values'])} ({published['source']})" if published else "—"
    t = r["training"]
    kept, excluded = test_columns(res)
    label = r["model"]
    settings = r.get("hyperparameters", {}).get("settings") or {}
    overrides = {**(settings.get("model") or {}), **(settings.get("train") or {})}
    if overrides:  # e.g. TIGER at a smaller size than its preset
        label += " (" + ", ".join(f"{k}={v}" for k, v in overrides.items()) + ")"
    train_config = r.get("train_config", {})
    cap = train_config.get("max_seconds")
    trained = r.get("training", {}).get("epochs", 0) > 0
    if trained and "max_seconds" in train_config and cap != BaselineTrainConfig.max_seconds:  # the published setting needed more time
        label += " (time cap " + ("none" if cap is None else f"{cap:.0f} s") + ")"
    return (f"| {label} | {kept} | {excluded} | {pub} | "
            f"{res['valid']['recall@10']:.4f} | {t['best_epoch']} / {t['epochs']} | "
            f"{r['seconds']['train']:.0f} | {r['seconds']['evaluate']:.0f} |")  # fmt: skip


def markdown_table(result: dict[str, Any]) -> str:
    """The comparison table of one dataset, published numbers beside ours."""
    head = (
        f"# Baselines on {result['dataset']}\n\n{result['protocol']}. Commit of the latest run "
        f"{result['commit']} (each model's JSON record names its own); "
        f"{result['machine']['cpu']}, {result['note']}. * marks the setting validation selects "
        "(seen items kept or excluded, whichever gives the higher validation Recall@10).\n\n"
        "| model | test R@5 / N@5 / R@10 / N@10 | same, seen items excluded | published "
        "| valid R@10 | best epoch / epochs | train s | evaluate s |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    return head + "".join(markdown_row(r) + "\n" for r in result["models"].values())

