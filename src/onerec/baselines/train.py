"""One training loop for every baseline: AdamW, validation Recall@10 after each epoch, early
stopping with patience, the best epoch kept, fixed seeds.

A batch is the training sequences of ``batch_size`` users (their last ``max_length + 1``
items); each model's ``loss`` uses every position of a sequence in one forward pass. Validation
goes through :func:`onerec.evaluation.evaluate` (full ranking, seen items not excluded), as
the test does; the model is selected on validation only.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from onerec.baselines.base import (
    SequenceBatch,
    SequentialRecommender,
    prefix_batches,
    prefix_samples,
    sequence_batches,
)
from onerec.data.splits import Split
from onerec.evaluation import evaluate
from onerec.exceptions import ConfigError


@dataclass
class BaselineTrainConfig:
    """How baselines are trained. Defaults follow S3-Rec's baseline setup (Adam at 1e-3, batch
    256, length 50). ``max_seconds`` caps training time, validation included (the issue asks for
    < 20 minutes): checked after every step, the step that spends it ends the epoch early
    (logged ``"partial": true``), which is validated like any other before training stops."""

    max_length: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs: int = 200
    patience: int = 10  # validations without a better Recall@10 before stopping (S3-Rec: 10)
    eval_every: int = 1  # epochs between validations
    eval_users: int | None = None  # validate on a fixed random subset of this size
    max_seconds: float | None = 1140.0  # then validate once more and keep the best epoch
    seed: int = 0
    device: str = "cpu"
    # every prefix of a training sequence is a sample, with a loss on its last item only
    # (BSARec's and FMLP-Rec's pipeline): ~9x the samples of one sequence per user on Beauty
    prefixes: bool = False

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size", "epochs", "patience", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")
        if self.eval_users is not None and self.eval_users < 1:
            raise ConfigError(f"eval_users must be >= 1 or None, got {self.eval_users}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`fit` did: the best validation epoch and its metrics, every validation, time."""

    best_epoch: int
    best_valid: dict[str, float]
    epochs: int
    seconds: float
    stopped: str  # "patience", "epochs" or "time"
    log: list[dict[str, float]] = field(default_factory=list)


def set_seed(seed: int) -> None:
    """Seeds torch and numpy's global state (model init, dropout, negative sampling)."""
    torch.manual_seed(seed)
    np.random.seed(seed)


def length_batches(
    rows: np.ndarray, lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
    bucket: int = 50,
) -> list[np.ndarray]:  # fmt: skip
    """Rows in batches of similar sequence length, in random order.

    Rows are shuffled, cut into chunks of ``bucket`` batches, sorted by length within a chunk,
    then cut into batches whose order is shuffled again: a batch is padded to its longest row,
    and on Beauty (median 4 training items, maximum 50) random batches would be 85% padding.
    """
    order = rng.permutation(rows)
    batches: list[np.ndarray] = []
    chunk = batch_size * bucket
    for c in range(0, len(order), chunk):
        part = order[c : c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def fit(
    model: SequentialRecommender,
    split: Split,
    config: BaselineTrainConfig | None = None,
    *,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on ``split``'s training sequences; on return it holds its best epoch."""
    config = config or BaselineTrainConfig()
    if model.max_length != config.max_length:
        raise ConfigError(
            f"the model reads {model.max_length} items but config.max_length={config.max_length}"
        )
    device = torch.device(config.device)
    if device.type == "cpu":
        # attention and softmax gradients underflow into subnormal floats, which x86 CPUs
        # process up to 100x slower; flushing them to zero changes no result that matters
        torch.set_flush_denormal(True)
    model.to(device)
    start = time.perf_counter()
    valid = split.valid
    if config.eval_users is not None and config.eval_users < len(valid):
        rng = np.random.default_rng(config.seed)
        valid = valid.take(np.sort(rng.choice(len(valid), config.eval_users, replace=False)))

    def validate() -> dict[str, float]:
        return evaluate(valid, scores=model.score_fn(valid), ks=(5, 10), progress=False).means()

    if not model.trainable:
        means = validate()
        return TrainResult(0, means, 0, time.perf_counter() - start, "nothing to train",
                           [{"epoch": 0, **{f"valid_{k}": v for k, v in means.items()}}])  # fmt: skip

    if config.prefixes and not model.prefix_training:
        raise ConfigError(
            f"{type(model).__name__} does not train on prefixes (its loss reads every position "
            f"of a sequence); set prefixes=False for it"
        )
    sequences = split.train_sequences()
    rows = np.flatnonzero(sequences.lengths >= 2)
    if len(rows) == 0:
        raise ConfigError("no training sequence has 2 items: there is nothing to predict")
    if config.prefixes:  # samples are (row, end) pairs; a batch is bucketed by prefix width
        prefix_rows, prefix_ends = prefix_samples(sequences.lengths)
        rows = np.arange(len(prefix_rows))
        sample_lengths = np.minimum(prefix_ends, config.max_length + 1)

        def make_batch(samples: np.ndarray) -> SequenceBatch:
            return prefix_batches(sequences, prefix_rows[samples], prefix_ends[samples],
                                  config.max_length)  # fmt: skip
    else:
        sample_lengths = sequences.lengths

        def make_batch(samples: np.ndarray) -> SequenceBatch:
            return sequence_batches(sequences, samples, config.max_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    best, best_epoch, best_state, waited = -math.inf, 0, None, 0
    best_means: dict[str, float] = {}
    log: list[dict[str, float]] = []
    stopped = "epochs"
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        batches = length_batches(rows, sample_lengths, config.batch_size, rng)
        bar = tqdm(batches, desc=f"{model.name} epoch {epoch}", unit="step", disable=not progress,
                   leave=False)  # fmt: skip
        total, done, out_of_time, t0 = 0.0, 0, False, time.perf_counter()
        for batch_rows in bar:
            batch = make_batch(batch_rows)
            loss = model.loss(batch.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            done += 1
            out_of_time = (config.max_seconds is not None
                           and time.perf_counter() - start > config.max_seconds)  # fmt: skip
            if out_of_time:  # end the epoch here; it is validated like any other
                break
        bar.close()
        entry = {"epoch": epoch, "loss": total / max(done, 1),
                 "epoch_seconds": time.perf_counter() - t0}  # fmt: skip
        if out_of_time and done < len(batches):
            entry["partial"] = True
        if epoch % config.eval_every == 0 or epoch == config.epochs or out_of_time:
            means = validate()
            entry.update({f"valid_{k}": v for k, v in means.items()})
            if means["recall@10"] > best:
                best, best_epoch, best_means, waited = means["recall@10"], epoch, means, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
            if progress:
                tqdm.write(f"{model.name} epoch {epoch}: loss {entry['loss']:.4f} valid "
                           f"recall@10 {means['recall@10']:.4f} (best {best:.4f} @ {best_epoch})")
        log.append(entry)
        if out_of_time:
            stopped = "time"
            break
        if waited >= config.patience:
            stopped = "patience"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_epoch, best_means, epoch, time.perf_counter() - start, stopped, log)
