"""Train OneRec on a dataset in one call: split, semantic IDs, model, trainer, run folder.

``train_on_dataset`` is what ``onerec train`` and the benchmarks run. The run folder it writes
is self-contained for serving (``onerec recommend``): beside the trainer's files it holds a copy
of the semantic IDs (``semantic_ids.parquet``) and the raw user ids (``users.parquet``, row i =
user index i).
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
from onerec.tokenizer.pipeline import load_tokenization
from onerec.tokenizer.residual import SemanticIds
from onerec.training.trainer import TrainConfig, Trainer


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
) -> TrainedRun:
    """Leave-one-out split of ``dataset`` (history ``config.history_length``), the semantic IDs
    saved by ``onerec tokenize`` in ``tokens``, a ``preset`` model (with ``model_overrides``), and
    a :class:`Trainer` writing into ``out``. An ``out`` that already holds a run is resumed with
    its own model config (``model_overrides`` must then agree with it). With
    ``config.features`` the split carries those side features and the model reads them
    (``history_features``)."""
    out = Path(out)
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
    saved = out / "model_config.json"
    if (out / "last.safetensors").exists() and saved.exists():
        previous = OneRecConfig.from_dict(json.loads(saved.read_text()))
        if previous != model_config:
            raise ConfigError(
                f"{out} holds a run of another model config; resume it with the same settings "
                f"or choose a new --out"
            )
    torch.manual_seed(config.seed)
    model = OneRec(model_config)
    if init_distributed_from_env() is None or dist.get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tokens) / "semantic_ids.parquet", out / "semantic_ids.parquet")
        users = pa.table({"user_id": pa.array(dataset.log.users.raw)})
        pq.write_table(users, out / "users.parquet")
        (out / "run.json").write_text(json.dumps(
            {"dataset": dataset.name, "tokens": str(tokens), "preset": preset,
             "model_overrides": model_overrides or {}, "describe": model.describe()}, indent=2))  # fmt: skip
    trainer = Trainer(model, ids, split, config, out)
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
