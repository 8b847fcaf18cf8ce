"""Iterative Preference Alignment (the paper's Algorithm 2), driving the existing trainer.

For t = 1..T: draw a fraction ``r_dpo`` of the training users (never the held-out evaluation
users); the sample server (:func:`onerec.alignment.pairs.sample_pairs`) beam-searches N sessions
per drawn user with the current model M_t, scores them with the reward model and keeps chosen and
rejected sessions with M_t's log-probabilities (M_t frozen as the DPO reference); then M_{t+1}
is trained from M_t by the ordinary :class:`onerec.training.Trainer` (its windows, optimizer,
schedule, validation and checkpoints) on ``L = ntp_weight * L_NTP + dpo_weight * L_DPO``: every
training step adds the DPO loss of ``pairs_per_step`` pairs (a seeded draw per step). With
``ntp_weight = 0`` it is DPO alone.

The run folder: ``align_config.json``; ``iteration_<t>/pairs.safetensors`` (the sampled pairs,
written before training, so a resumed iteration trains on the same pairs),
``iteration_<t>/dpo.jsonl`` (per step: DPO loss, mean margin, share of pairs ranked right) and
``iteration_<t>/train/`` (the trainer's run folder: model, metrics, plot, ``last.safetensors``);
``model.safetensors`` and ``model_config.json`` of the last model and ``state.json``. A run killed
anywhere resumes where it stopped and reproduces the uninterrupted run: finished iterations are
reloaded, pairs are reloaded, and the trainer resumes its own epochs (each seeded). A finished run called again with
more ``iterations`` goes on from its last model.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist

from onerec.alignment.dpo import dpo_loss, session_log_probs
from onerec.alignment.pairs import OracleReward, PreferencePairs, check_sampling, sample_pairs
from onerec.alignment.reward_model import RewardModel, config_from_dict, require_ints
from onerec.data.ragged import Ragged
from onerec.data.splits import Split
from onerec.exceptions import AlignmentConfigError, AlignmentError
from onerec.model.onerec import OneRec
from onerec.tokenizer.residual import SemanticIds
from onerec.training.trainer import TrainConfig, Trainer


@dataclass(frozen=True)
class AlignConfig:
    """IPA settings. ``r_dpo``: fraction of training users drawn per iteration (the paper's 1%
    on its scale); ``n_sessions``: N beams per drawn user (paper 128); ``beta``: DPO temperature;
    ``dpo_weight``: lambda; ``ntp_weight``: weight of the next-token loss (0: DPO alone);
    ``train``: :class:`TrainConfig` fields for each iteration's training (epochs, lr, ...;
    ``session_items`` and ``history_length`` should match the NTP run)."""

    iterations: int = 1
    r_dpo: float = 0.01
    n_sessions: int = 128
    session_items: int = 5
    strategy: str = "best_worst"
    negatives: int = 1
    beta: float = 0.1
    dpo_weight: float = 0.1
    ntp_weight: float = 1.0
    pairs_per_step: int = 16
    exclude_seen: bool = True
    sample_batch: int = 16
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.r_dpo <= 1:
            raise AlignmentConfigError(
                f"r_dpo is the fraction of training users drawn for DPO pairs per iteration and "
                f"must be in (0, 1], got {self.r_dpo}"
            )
        check_sampling(self.n_sessions, self.strategy, self.negatives)
        require_ints(self, ("iterations", "session_items", "pairs_per_step", "sample_batch"))
        if not self.beta > 0 or self.dpo_weight < 0 or self.ntp_weight < 0:
            raise AlignmentConfigError(
                f"beta must be > 0 and dpo_weight, ntp_weight >= 0; got {self.beta}, "
                f"{self.dpo_weight}, {self.ntp_weight}"
            )
        if self.dpo_weight == 0 and self.ntp_weight == 0:
            raise AlignmentConfigError("dpo_weight and ntp_weight are both 0: nothing to train")
        TrainConfig.from_dict(self.train)  # named errors for bad training fields now

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AlignConfig":
        return config_from_dict(cls, d)


@dataclass
class AlignedRun:
    models: list[OneRec]  # M_1 (the NTP model, untouched), M_2, ..., M_{T+1}
    pairs: list[PreferencePairs]
    state: dict[str, Any]
    run_dir: Path


def draw_users(pool: np.ndarray, r_dpo: float, iteration: int, seed: int) -> np.ndarray:
    """``ceil(r_dpo * |pool|)`` users of ``pool`` for iteration ``iteration``, sorted."""
    rng = np.random.default_rng([seed, 7, iteration])
    n = max(1, math.ceil(r_dpo * len(pool)))
    return np.sort(rng.choice(np.asarray(pool, dtype=np.int64), min(n, len(pool)), replace=False))


def _copy(model: OneRec) -> OneRec:
    other = OneRec(model.config)
    other.load_state_dict(model.state_dict())
    return other


def align(
    model: OneRec,
    semantic_ids: SemanticIds,
    split: Split,
    reward_model: RewardModel | OracleReward,
    out: str | Path,
    config: AlignConfig,
    *,
    exclude_users: np.ndarray | None = None,
    catalog: str = "",
    progress: bool = True,
) -> AlignedRun:
    """IPA from ``model`` (M_1, left untouched) into ``out`` (resumed when it holds a run).

    ``split``: the NTP run's split (its training sequences are the NTP data and the drawn users'
    histories); ``exclude_users``: never drawn (the held-out evaluation users); ``catalog``: the
    generator's catalog fingerprint, checked against the RM's."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        raise AlignmentError("IPA runs in one process; launch it without torchrun")
    reward_model.check_catalog(semantic_ids.n_items, catalog)
    if semantic_ids.n_items != split.num_items:
        raise AlignmentError(
            f"the semantic IDs cover {semantic_ids.n_items} items but the split has "
            f"{split.num_items}: use the split and tokenizer of the NTP run"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "align_config.json"
    # a run may be extended by more iterations; any other change needs a new folder
    if saved.exists():
        previous = AlignConfig.from_dict(json.loads(saved.read_text()))
        if replace(previous, iterations=config.iterations) != config:
            raise AlignmentConfigError(
                f"{out} holds an IPA run of another config; resume it with the same settings "
                "(more iterations are allowed) or choose a new output folder"
            )
    saved.write_text(json.dumps(asdict(config), indent=2))
    sequences = split.train_sequences()
    pool = np.flatnonzero(sequences.lengths > 0)
    if exclude_users is not None:
        pool = np.setdiff1d(pool, exclude_users)
    if len(pool) == 0:
        raise AlignmentError("no training user is left to draw DPO pairs from")
    train_config = TrainConfig.from_dict({"epochs": 1, "warmup_steps": 0, "seed": config.seed,
                                          **config.train})  # fmt: skip
    models, all_pairs, records = [model], [], []
    current = model
    for t in range(1, config.iterations + 1):
        started = time.perf_counter()
        folder = out / f"iteration_{t}"
        folder.mkdir(exist_ok=True)
        path = folder / "pairs.safetensors"
        if path.exists():
            pairs = PreferencePairs.load(path)
        else:
            users = draw_users(pool, config.r_dpo, t, config.seed)
            pairs = sample_pairs(current, semantic_ids, reward_model, sequences.take(users), users,
                                 n_sessions=config.n_sessions, session_items=config.session_items,
                                 strategy=config.strategy, negatives=config.negatives,
                                 exclude_seen=config.exclude_seen, batch_size=config.sample_batch,
                                 seed=config.seed + t, progress=progress)  # fmt: skip
            if len(pairs) == 0:
                raise AlignmentError(
                    f"iteration {t}: no drawn user had {config.negatives + 1} valid sessions; "
                    "raise n_sessions or r_dpo"
                )
            pairs.save(path)
        trainer = Trainer(_copy(current), semantic_ids, split, train_config, folder / "train")
        log = DpoLog(folder / "dpo.jsonl")
        trainer.objective = preference_objective(trainer, pairs, config, t, log)
        state = trainer.fit(progress=progress)
        log.close()
        current = trainer.model.eval()
        models.append(current)
        all_pairs.append(pairs)
        records.append({"iteration": t, "pairs": len(pairs), **state,
                        "mean_chosen_reward": float(pairs.reward_chosen.mean()),
                        "mean_rejected_reward": float(pairs.reward_rejected.mean()),
                        "sampling_seconds": float(pairs.stats.get("seconds", "nan")),
                        "seconds_this_call": time.perf_counter() - started})  # fmt: skip
    current.save(out)
    state = {"iterations": records}
    (out / "state.json").write_text(json.dumps(state, indent=2))
    return AlignedRun(models, all_pairs, state, out)


class DpoLog:
    """``dpo.jsonl``: one record per training step; a resumed run drops the records of steps it
    is about to take again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        lines = path.read_text().splitlines() if path.exists() else []
        self.records = [json.loads(r) for r in lines]
        self.file = path.open("a")

    def write(self, record: dict[str, Any]) -> None:
        if self.records and record["step"] <= self.records[-1]["step"]:
            kept = [r for r in self.records if r["step"] < record["step"]]
            self.file.close()
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            self.file, self.records = self.path.open("a"), kept
        self.records.append(record)
        self.file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self.file.close()


def preference_objective(
    trainer: Trainer, pairs: PreferencePairs, config: AlignConfig, iteration: int, log: DpoLog
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The trainer's ``objective``: the step's NTP loss weighted, plus lambda times the DPO loss
    of a seeded draw of ``pairs_per_step`` pairs (the draw depends on the step alone, so a
    resumed run draws the same pairs)."""
    codes = pairs.codes()
    reference = torch.from_numpy(np.concatenate([pairs.reference_chosen[:, None],
                                                 pairs.reference_rejected], axis=1))  # fmt: skip
    history: Ragged = pairs.history

    def objective(ntp: torch.Tensor) -> torch.Tensor:
        step = trainer.step
        rng = np.random.default_rng([config.seed, iteration, step])
        take = min(config.pairs_per_step, len(pairs))
        rows = np.sort(rng.choice(len(pairs), take, replace=False))
        policy = session_log_probs(trainer.model, trainer.ids, history.take(rows),
                                   pairs.user[rows], codes[rows])  # fmt: skip
        ref = reference[rows].to(policy)
        loss = dpo_loss(policy[:, 0], policy[:, 1:], ref[:, 0], ref[:, 1:], config.beta)
        with torch.no_grad():
            margin = config.beta * ((policy[:, :1] - ref[:, :1]) - (policy[:, 1:] - ref[:, 1:]))
        log.write({"step": step, "dpo": float(loss.detach()), "margin": float(margin.mean()),
                   "accuracy": float((margin > 0).float().mean()), "ntp": float(ntp.detach())})
        return config.ntp_weight * ntp + config.dpo_weight * loss

    return objective


def align_from_run(
    run_dir: str | Path,
    dataset: Any,
    reward_dir: str | Path,
    out: str | Path,
    config: AlignConfig,
    *,
    progress: bool = True,
) -> AlignedRun:
    """IPA from a run folder of ``onerec train`` (its model, semantic IDs and training settings)
    on the ``dataset`` it was trained on, with the reward model saved in ``reward_dir``. The
    run's training settings (session items, history, batches, validation) are the defaults of
    every iteration's training; ``config.train`` overrides them."""
    from onerec.alignment.reward_model import catalog_fingerprint
    from onerec.data.splits import leave_one_out
    from onerec.tokenizer.pipeline import load_tokenization

    run_dir = Path(run_dir)
    items, ids = load_tokenization(run_dir)
    if not np.array_equal(items.raw, dataset.log.items.raw):
        raise AlignmentError(
            f"the run in {run_dir} was trained on another catalog ({len(items)} items) than this "
            f"dataset ({dataset.num_items} items): pass the dataset the run was trained on"
        )
    trained = TrainConfig.from_dict(json.loads((run_dir / "train_config.json").read_text()))
    split = leave_one_out(dataset.log, history_length=trained.history_length,
                          features=trained.features)  # fmt: skip
    keys = ("session_items", "history_length", "window_items", "batch_size", "eval_beam",
            "eval_users", "exclude_seen", "features", "precision")  # fmt: skip
    inherited = {k: v for k, v in asdict(trained).items() if k in keys}
    config = replace(config, train={**inherited, **config.train})
    model = OneRec.load(run_dir).eval()
    reward_model = RewardModel.load(reward_dir)
    return align(model, ids, split, reward_model, out, config,
                 catalog=catalog_fingerprint(items.raw), progress=progress)  # fmt: skip
