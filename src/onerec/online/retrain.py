"""The loop's training side: the day's logs become training sequences, OneRec is fine-tuned on
them by next-token prediction (or realigned with one IPA iteration, whose loss holds the same
NTP term), the reward model is retrained on every log so far, and a model is published into a
served run folder.

Fine-tuning starts from the weights that served the day (the :class:`Trainer` trains the model
it is given) and reads each active user's new watched videos with ``history_length`` watched
videos of context before them, so one pass costs what the day's traffic holds, not the whole log.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from onerec.alignment import RewardModel, RewardTrainConfig, logged_sessions, train_reward_model
from onerec.alignment.ipa import AlignConfig, align
from onerec.alignment.reward_model import catalog_fingerprint
from onerec.data.schema import InteractionLog
from onerec.data.splits import Split, leave_one_out
from onerec.model.onerec import OneRec
from onerec.runs import replaced_atomically
from onerec.tokenizer.residual import SemanticIds
from onerec.training.trainer import TrainConfig, Trainer

SERVED_FILES = ("model_config.json", "semantic_ids.parquet", "train_config.json", "users.parquet")


def recent_split(log: InteractionLog, since: float, history_length: int) -> Split:
    """Training sequences of the watched rows at or after timestamp ``since``, each user's with
    up to ``history_length`` watched rows before it as context. Every row is a training target
    (the leave-one-out held-out items included); validation and test are the leave-one-out
    examples of the same rows, used only to log the fine-tuning's quality."""
    log = log.sorted()
    watched = log.take(log.signals["skip"] == 0)
    new = watched.timestamp >= since
    users = np.unique(watched.user[new])
    bounds = np.searchsorted(watched.user, np.arange(log.num_users + 1))
    keep = np.zeros(len(watched), dtype=bool)
    for u in users:
        lo, hi = bounds[u], bounds[u + 1]
        first_new = lo + int(np.argmax(new[lo:hi]))
        keep[max(lo, first_new - history_length) : hi] = True
    rows = watched.take(keep)
    split = leave_one_out(rows, history_length=history_length)
    return Split("online-recent", rows, split.valid, split.test,
                 {**split.params, "since": since}, split.reports)  # fmt: skip


def finetune(
    model: OneRec, ids: SemanticIds, split: Split, config: TrainConfig, out: Path,
    item_ids: np.ndarray, user_ids: np.ndarray,
) -> Path:  # fmt: skip
    """One NTP fine-tuning of a copy of ``model`` into ``out`` (started over when it holds a
    killed one); returns the folder holding the new ``model.safetensors``."""
    copy = OneRec(model.config)
    copy.load_state_dict(model.state_dict())
    trainer = Trainer(copy, ids, split, config, out, item_ids=item_ids, user_ids=user_ids,
                      resume="restart")  # fmt: skip
    trainer.fit(progress=False)
    return out


def train_rm(
    log: InteractionLog, out: Path, session_items: int, history_length: int,
    train: dict[str, Any], model: dict[str, Any], seed: int,
) -> RewardModel:  # fmt: skip
    """A reward model trained on every session of ``log`` (resumed when ``out`` holds one)."""
    sessions = logged_sessions(log, session_items, history_length)
    config = RewardTrainConfig(**{**train, "seed": seed})
    run = train_reward_model(sessions, out, config, num_items=log.num_items,
                             catalog=catalog_fingerprint(log.items.raw), model=model,
                             progress=False)  # fmt: skip
    return run.model


def ipa_step(
    model: OneRec, ids: SemanticIds, split: Split, rm: RewardModel, out: Path,
    align_fields: dict[str, Any], train: dict[str, Any], item_raw: np.ndarray, seed: int,
) -> Path:  # fmt: skip
    """One IPA iteration (NTP on ``split`` + DPO on pairs the RM picks) into ``out`` (resumed
    when it holds a killed one); returns the folder holding the new ``model.safetensors``."""
    config = AlignConfig(**{"iterations": 1, "seed": seed, **align_fields, "train": train})
    align(model, ids, split, rm, out, config, catalog=catalog_fingerprint(item_raw),
          progress=False)  # fmt: skip
    return out


def save_model(source: Path, target: Path) -> None:
    """Copy ``model.safetensors`` and ``model_config.json`` of ``source`` into ``target``,
    the weights last and by rename, so ``target`` holds a model only once it is whole."""
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / "model_config.json", target / "model_config.json")
    with replaced_atomically(target / "model.safetensors") as tmp:
        shutil.copyfile(source / "model.safetensors", tmp)


def make_served_folder(run: Path, model_dir: Path, target: Path) -> None:
    """A run folder ``onerec serve`` reads: the initial run's semantic IDs, training settings
    and users, and the model of ``model_dir``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in SERVED_FILES:
        shutil.copyfile(run / name, target / name)
    save_model(model_dir, target)


def load_model(folder: Path) -> OneRec:
    return OneRec.load(folder).eval()


def finetune_config(fields: dict[str, Any], session_items: int, history_length: int,
                    seed: int) -> TrainConfig:  # fmt: skip
    """The daily fine-tuning's :class:`TrainConfig` (CPU, the platform's window sizes)."""
    base = TrainConfig(session_items=session_items, history_length=history_length, seed=seed,
                       device="cpu")  # fmt: skip
    return replace(base, **fields)
