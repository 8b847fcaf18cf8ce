"""Train OneRec on a dataset in one call: split, semantic IDs, model, trainer, run folder.

``train_on_dataset`` is what ``onerec train`` and the benchmarks run. The run folder it writes
is self-contained for serving (``onerec recommend``): beside the trainer's files it holds a copy
of the semantic IDs (``semantic_ids.parquet``), the raw user ids (``users.parquet``, row i =
user index i), ``run.json`` (dataset name, tokens folder, preset, overrides and the run's
fingerprints) and ``onerec_output.json`` (made by ``onerec train``).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist

from onerec.data.examples import Examples
from onerec.data.schema import Dataset
from onerec.data.splits import Split, leave_one_out
from onerec.evaluation import evaluate
from onerec.exceptions import ConfigError
from onerec.generation.beam_search import rank_examples
from onerec.model.config import OneRecConfig
from onerec.model.onerec import OneRec
from onerec.runs import check_output, claim_output
from onerec.tokenizer.pipeline import load_tokenization
from onerec.tokenizer.residual import SemanticIds
from onerec.training.trainer import TrainConfig, Trainer, resolve_device


@dataclass
class TrainedRun:
    model: OneRec  # the best epoch's weights
    semantic_ids: SemanticIds
    split: Split
    state: dict[str, Any]
    run_dir: Path


def train_on_dataset(
    dataset: Dataset,
    tokens: str | Path,
    out: str | Path,
    config: TrainConfig,
    *,
    preset: str = "small",
    model_overrides: dict[str, Any] | None = None,
    progress: bool = True,
    overwrite: bool = False,
    force_resume: bool = False,
) -> TrainedRun:
    """Leave-one-out split of ``dataset`` (history ``config.history_length``), the semantic IDs
    saved by ``onerec tokenize`` in ``tokens``, a ``preset`` model (with ``model_overrides``), and
    a :class:`Trainer` writing into ``out``. With ``config.features`` the split carries those side
    features and the model reads them (``history_features``).

    An ``out`` that holds a run (``onerec train``'s) is resumed, only when it was made from the
    same dataset, semantic IDs, model config and settings (:mod:`onerec.training.run_folder`);
    ``force_resume`` resumes it anyway, recorded in ``train_config.json``. ``overwrite`` starts
    over (the earlier run's files are replaced) and also writes into a folder another command
    made. Everything is checked before anything is written: a failed start leaves no folder."""
    if overwrite and force_resume:
        raise ConfigError("--overwrite starts the run over and --force-resume continues it: "
                          "pass one of them")  # fmt: skip
    out = Path(out)
    check_output(out, "train", overwrite)
    resolve_device(config.device)
    items, ids = load_tokenization(tokens)
    if not np.array_equal(items.raw, dataset.log.items.raw):
        raise ConfigError(
            f"the semantic IDs in {tokens} were made for another catalog ({len(items)} items, "
            f"the dataset has {dataset.num_items}); run `onerec tokenize` on this dataset"
        )
    split = leave_one_out(dataset.log, history_length=config.history_length,
                          features=config.features)  # fmt: skip
    settings = {"max_history": config.history_length,
                "max_session_items": max(5, config.session_items)}  # fmt: skip
    if config.features:  # absent otherwise: configs of runs without features stay as they were
        settings["history_features"] = len(config.features)
    settings.update(model_overrides or {})
    model_config = OneRecConfig.preset(preset, ids.level_sizes, **settings)
    torch.manual_seed(config.seed)
    model = OneRec(model_config)
    users = dataset.log.users.raw
    distributed = init_distributed_from_env() is not None  # before the Trainer: it asks the rank
    trainer = Trainer(model, ids, split, config, out, item_ids=items.raw, user_ids=users,
                      resume="restart" if overwrite else "force" if force_resume else "check")  # fmt: skip
    if not distributed or dist.get_rank() == 0:
        claim_output(out, "train", overwrite)
        source = Path(tokens) / "semantic_ids.parquet"
        if not (out / "semantic_ids.parquet").exists() or not source.samefile(
            out / "semantic_ids.parquet"
        ):  # --overwrite may write a run into its own tokens folder
            shutil.copyfile(source, out / "semantic_ids.parquet")
        pq.write_table(pa.table({"user_id": pa.array(users)}), out / "users.parquet")
        (out / "run.json").write_text(json.dumps(
            {"dataset": dataset.name, "tokens": str(tokens), "preset": preset,
             "model_overrides": model_overrides or {}, "describe": model.describe(),
             "fingerprints": trainer.sources}, indent=2))  # fmt: skip
    state = trainer.fit(progress=progress)
    return TrainedRun(trainer.model, trainer.ids, split, state, out)


METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def ranking_metrics(
    model: OneRec, examples: Examples, ids: SemanticIds, beam: int, exclude_seen: bool
) -> dict[str, float]:
    """Recall/NDCG@5/10 of the next item over the full catalog, ranked by beam search, with
    their standard errors (``<metric>_se``)."""
    ranked = rank_examples(model, examples, ids, beam, 10, exclude_seen=exclude_seen)
    result = evaluate(examples, ranked=ranked.numpy(), ks=(5, 10), exclude_seen=exclude_seen)
    return result.summary(METRICS)


def split_metrics(model: OneRec, split: Split, ids: SemanticIds, beam: int) -> dict[str, dict]:
    """:func:`ranking_metrics` of validation and test, seen items kept and excluded: the keys
    ``valid``, ``valid_exclude_seen``, ``test``, ``test_exclude_seen`` of every benchmark."""
    return {part + ("_exclude_seen" if exclude else ""):
            ranking_metrics(model, examples, ids, beam, exclude)
            for part, examples in (("valid", split.valid), ("test", split.test))
            for exclude in (False, True)}  # fmt: skip


def init_distributed_from_env() -> int | None:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE > 1):
    NCCL with one GPU per process where there are GPUs, gloo on CPUs. Returns the world size,
    or None when not launched that way."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    if not dist.is_initialized():
        gpu = torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if gpu else "gloo")
    return world
