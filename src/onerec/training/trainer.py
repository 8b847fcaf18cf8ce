"""Next-token training of OneRec on a split, with early stopping, exact resume and data parallelism.

A step reads whole training sequences (``windows.py``): one encoder pass per sequence serves every
next-item target in it (``OneRec.sequence_loss``), so an epoch costs about one forward over the
training log instead of one per (history, target) pair. The target of column t is the next
``session_items`` items (m = 1 is next-item prediction). After each epoch the model ranks the
validation users' next item by trie-constrained beam search; the epoch with the best
validation Recall@10 is kept, and training stops after ``patience`` epochs without improvement.

A run directory holds ``train_config.json`` (the settings in force, and a ``resumes`` list:
the epoch each resume started at and what it changed), ``model_config.json``,
``metrics.jsonl`` (one JSON object per logged step and per epoch), ``training.png`` (loss and
validation curves),
``model.safetensors`` (the best epoch's weights, loadable with ``OneRec.load``),
``last.safetensors`` (weights, AdamW moments and counters of the last finished epoch) and
``state.json``. Resuming reloads ``last.safetensors`` and continues with the next epoch; each
epoch's batching and dropout are seeded by ``seed + epoch``, so a run killed mid-epoch and
resumed reproduces the uninterrupted run exactly (on the same machine and thread count). A run
resumes only with the data, semantic IDs, model config and settings it was made with (apart
from :data:`~onerec.training.run_folder.RESUMABLE` settings); see
:mod:`onerec.training.run_folder` for the record and ``resume="force"``.

Data parallel: launched under ``torchrun`` (``torch.distributed`` initialized before the
Trainer is made), every process builds the same batches and takes every world-size-th window of
each; the summed losses are divided by the global number of scored codes and gradients are
summed across processes, so P processes take the same steps as one process with the same
global batch. Rank 0 validates and writes the run directory.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from onerec.data.ragged import Ragged
from onerec.data.splits import Split
from onerec.evaluation import evaluate
from onerec.exceptions import ConfigError, CorruptCheckpointError
from onerec.generation.beam_search import rank_examples
from onerec.model.onerec import OneRec
from onerec.model.tokens import pad_features, pad_history
from onerec.runs import check_shapes, read_safetensors, resolve_device, write_safetensors
from onerec.tokenizer.residual import SemanticIds
from onerec.training.plots import plot_metrics
from onerec.training.run_folder import (
    RESTART_HINT,
    TRAINER_FILES,
    check_resume,
    checkpoint_metadata,
    source_fingerprints,
    train_config_record,
    weights_metadata,
)
from onerec.training.windows import length_batches, prefix_windows, training_windows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. ``batch_size`` counts next-item targets per step (summed over processes);
    ``window_items``: longest training sequence read in one piece (longer ones are cut into
    windows that repeat ``history_length`` items of context). ``eval_users``: validate on this
    many validation users (a fixed random subset; None = all) after every epoch.
    The defaults are the settings the quality benchmark selected on validation
    (``benchmarks/results/onerec_quality.md``): patience 5, 4,096 validation users, weights
    averaged with decay 0.999; the ``small`` model preset holds the selected model.
    ``precision``: "auto" uses bf16 autocast on a GPU and fp32 elsewhere. ``max_seconds``: a
    budget for the run's time (training and validation, summed over resumes), checked after
    every step: the step that spends it ends the epoch early (logged ``"partial": true``), which
    is then validated like any other, and training stops; the best epoch so far is kept. A
    resumed run with a larger budget goes on with the *next* epoch. The learning-rate schedule
    still spans ``epochs``, so set ``epochs`` to what the budget holds when the schedule should
    finish.
    ``features``: side features of every history item (``onerec.data.features`` names) the
    split is built with and the model reads (``history_features = len(features)``).
    ``prefix_samples``: make every target its own sample (``windows.prefix_windows``: its own
    encoder pass over at most ``history_length`` items, its own dropout, batches that mix many
    users), instead of scoring every target of a sequence from one encoder pass (False, the
    default); ``window_items`` is then unused.
    ``ema_decay``: keep an exponential moving average of the weights (decay per step, e.g.
    0.999: about the last 1,000 steps; the default) and validate, keep and return the average
    instead of the raw weights; None trains and keeps the raw weights."""

    session_items: int = 1
    history_length: int = 20
    window_items: int = 100
    batch_size: int = 256
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    patience: int = 5
    eval_beam: int = 20
    eval_users: int | None = 4096
    exclude_seen: bool = False
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    max_seconds: float | None = None
    features: tuple[str, ...] = ()
    ema_decay: float | None = 0.999
    prefix_samples: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.features, (list, tuple)) or not all(
            isinstance(f, str) and f for f in self.features
        ):
            raise ConfigError(
                f"features must be a list of feature names, e.g. ['time_gap', 'watch_time'], "
                f"got {self.features!r}"
            )
        object.__setattr__(self, "features", tuple(self.features))  # JSON gives a list
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"features must not repeat a name, got {list(self.features)}")
        for name in ("session_items", "history_length", "batch_size", "epochs", "eval_beam",
                     "log_every", "patience"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if self.eval_beam < 10:
            raise ConfigError(f"eval_beam must be >= 10 to rank 10 items, got {self.eval_beam}")
        if self.window_items <= self.history_length:
            raise ConfigError(
                f"window_items ({self.window_items}) must exceed history_length "
                f"({self.history_length})"
            )
        if not isinstance(self.prefix_samples, bool):
            raise ConfigError(f"prefix_samples must be true or false, got {self.prefix_samples!r}")
        if self.eval_users is not None and self.eval_users < 1:
            raise ConfigError(f"eval_users must be >= 1 or None, got {self.eval_users}")
        if not self.lr > 0 or self.weight_decay < 0 or self.grad_clip <= 0 or self.warmup_steps < 0:
            raise ConfigError("lr and grad_clip must be > 0, weight_decay and warmup_steps >= 0")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ConfigError(f"max_seconds must be > 0 or None, got {self.max_seconds}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in (0, 1) or None, got {self.ema_decay}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """The settings of a ``train_config.json`` (its ``resumes`` record is not a setting)."""
        d = {k: v for k, v in d.items() if k != "resumes"}
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)


def _train_features(model: OneRec, split: Split, config: TrainConfig) -> Ragged | None:
    """The training sequences' side features when the model reads them (else None); raises
    :class:`ConfigError` when the model, the split and ``config.features`` disagree."""
    wanted, names = model.config.history_features, split.features
    if config.features and config.features != names:
        raise ConfigError(
            f"TrainConfig.features is {list(config.features)} but the split was built with "
            f"{list(names)}: build the split with features={list(config.features)}"
        )
    if config.features and wanted != len(config.features):
        raise ConfigError(
            f"TrainConfig.features names {len(config.features)} features but the model reads "
            f"{wanted}: build it with history_features={len(config.features)}"
        )
    if wanted == 0:
        return None
    if len(names) != wanted or split.valid.n_features != wanted:
        raise ConfigError(
            f"the model reads {wanted} side features per history item but the split has "
            f"{len(names)} ({list(names)}): build the split with {wanted} features (e.g. "
            f"leave_one_out(..., features=('time_gap', ...)), TrainConfig.features, "
            f"`onerec train --features`) or the model with history_features={len(names)}"
        )
    return split.train_features()


def _schedule(step: int, warmup: int, total: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class WeightAverage:
    """An exponential moving average of a model's parameters (buffers are not averaged).

    The effective decay starts low and rises to ``decay`` (``min(decay, (1 + t) / (10 + t))``
    after t updates), so the average is not dominated by the random initialization."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay, self.updates = decay, 0
        self.params = [p.detach().clone() for p in model.parameters()]
        self._live = [p.detach() for p in model.parameters()]  # views: built once, not per step

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's current weights (after an optimizer step)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.params, self._live, 1 - d)

    @contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; afterwards its own again."""
        own = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            for p, a in zip(model.parameters(), self.params):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, o in zip(model.parameters(), own):
                    p.copy_(o)


def load_last_weights(model: OneRec, run_dir: str | Path) -> int:
    """Put into ``model`` the weights that validation read after the last finished epoch of the
    run in ``run_dir`` (its ``last.safetensors``): the weight average where the run keeps one,
    else the raw weights. Returns the number of finished epochs. ``model.safetensors`` holds
    the best epoch's instead; comparing the two shows what kept training did."""
    path = Path(run_dir) / "last.safetensors"
    hint = "the trainer writes last.safetensors after every epoch: pass a run folder it trained"
    tensors, _ = read_safetensors(path, next(model.parameters()).device, hint=hint)
    if "trainer.counters" not in tensors:
        raise CorruptCheckpointError("it holds no trainer counters", path=path, hint=hint)
    model.load_state_dict(_checkpoint_weights(tensors, model, path, hint))
    if "ema.updates" in tensors:
        with torch.no_grad():
            for i, p in enumerate(model.parameters()):
                p.copy_(tensors[f"ema.{i}"])
    return int(tensors["trainer.counters"][0])


def _checkpoint_weights(
    tensors: dict[str, torch.Tensor], model: OneRec, path: Path, hint: str
) -> dict[str, torch.Tensor]:
    """The raw model weights (``model.*``) of a ``last.safetensors`` checkpoint, checked
    against ``model``'s shapes."""
    weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    check_shapes(weights, model.state_dict(), path, "the model config of this run", hint=hint)
    return weights


class Trainer:
    """Trains ``model`` into ``run_dir``. An existing run there (``last.safetensors``) is
    resumed when it was made from the same data, semantic IDs, model config and settings;
    ``resume="force"`` resumes it anyway (recorded), ``resume="restart"`` removes the trainer's
    files and starts over. ``item_ids`` / ``user_ids`` (raw ids, row = index) join the run's
    fingerprints when given. Everything is checked here; nothing is written before ``fit``."""

    def __init__(
        self,
        model: OneRec,
        semantic_ids: SemanticIds,
        split: Split,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        item_ids: np.ndarray | None = None,
        user_ids: np.ndarray | None = None,
        resume: str = "check",
    ) -> None:
        if semantic_ids.n_items != split.num_items:
            raise ConfigError(
                f"semantic IDs cover {semantic_ids.n_items} items, the split has {split.num_items}"
            )
        if model.config.max_history < config.history_length:
            raise ConfigError(
                f"the model reads at most max_history={model.config.max_history} items but "
                f"history_length={config.history_length}: build the model with max_history >= it"
            )
        self.device = resolve_device(config.device)
        if self.device.type == "cpu":
            # attention and softmax gradients underflow into subnormal floats, which x86 CPUs
            # process up to 100x slower; flushing them to zero changes no result that matters
            torch.set_flush_denormal(True)
        self.model = model.to(self.device)
        self.ids = semantic_ids.to(self.device)
        self.split, self.config = split, config
        self.run_dir = Path(run_dir)
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if (
            dist.is_available() and dist.is_initialized()) else (0, 1)  # fmt: skip
        sequences, features = split.train_sequences(), _train_features(model, split, config)
        if config.prefix_samples:
            self.windows = prefix_windows(sequences, config.history_length,
                                          config.session_items, features)  # fmt: skip
        else:
            self.windows = training_windows(sequences, config.history_length,
                                            config.window_items, features)  # fmt: skip
        n_targets = int(self.windows.n_targets.sum())
        if n_targets == 0:
            raise ConfigError("no training sequence has 2 items: there is nothing to predict")
        self.steps_per_epoch = math.ceil(n_targets / config.batch_size)  # for the schedule
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.total_steps = self.steps_per_epoch * config.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _schedule(s, config.warmup_steps, self.total_steps)
        )
        bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self.autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16
                         else nullcontext())  # fmt: skip
        valid = split.valid
        if config.eval_users is not None and config.eval_users < len(valid):
            rows = np.random.default_rng(config.seed).choice(len(valid), config.eval_users,
                                                             replace=False)  # fmt: skip
            valid = valid.take(np.sort(rows))
        self.valid = valid
        self.average = WeightAverage(model, config.ema_decay) if config.ema_decay else None
        self.epoch, self.step, self.best, self.bad_epochs = 0, 0, -1.0, 0
        self.elapsed = 0.0  # seconds of training and validation, summed over resumes
        self.sources = source_fingerprints(split, semantic_ids, item_ids, user_ids)
        self.restart = resume == "restart"
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        self.resumes = check_resume(self.run_dir, self.sources, model.config.to_dict(), config,
                                    shapes, resume)  # fmt: skip
        if self.world > 1:
            dist.barrier()  # every process has read the run folder before rank 0 writes to it
        # turns a step's next-token loss into the loss to minimise (None: the loss itself);
        # preference alignment adds its DPO term here (onerec.alignment.ipa), single process
        self.objective: Callable[[torch.Tensor], torch.Tensor] | None = None

    # --- one batch ------------------------------------------------------------------------------
    def _tensors(self, rows: np.ndarray) -> tuple[torch.Tensor | None, ...]:
        """Item tokens, mask, target starts, users, side features (None when the model reads
        none; zeros on padding) and item ids (-1 on padding) of windows ``rows``, right-aligned."""
        w = self.windows
        items = w.items.take(rows)
        width = int(items.lengths.max())
        padded = pad_history(items, width).to(self.device)  # (B, n), -1 on the left
        tokens, mask = self.model.layout.encode_history(padded, self.ids.codes)
        shift = width - items.lengths
        first = torch.from_numpy(shift + w.first_target[rows]).to(self.device)
        end = torch.from_numpy(shift + w.end_target[rows]).to(self.device)
        column = torch.arange(width, device=self.device)
        starts = (column >= first.unsqueeze(1)) & (column < end.unsqueeze(1))
        features = None
        if w.features is not None:
            features = pad_features(items, w.features.take(rows).values, width).to(self.device)
        users = torch.from_numpy(w.user[rows]).to(self.device)
        return tokens, mask, starts, users, features, padded

    def _train_step(self, batch: np.ndarray) -> dict[str, float]:
        c, model = self.config, self.model
        rows = batch[self.rank :: self.world]
        self.optimizer.zero_grad(set_to_none=False)
        total = aux = item = torch.zeros((), device=self.device)
        n_codes = n_item = 0
        if len(rows):  # a batch may have fewer windows than there are processes
            tokens, mask, starts, users, features, items = self._tensors(rows)
            with self.autocast:
                out = model.sequence_loss(tokens, mask, users, c.session_items, starts=starts,
                                          normalizer=1.0, features=features, items=items,
                                          catalog=self.ids.codes)  # fmt: skip
            total, n_codes, aux = out.ntp, out.n_codes, out.aux
            if out.item_sum is not None:
                item, n_item = out.item_sum, out.n_item_targets
        count = self._sum(torch.tensor(float(n_codes), device=self.device)).clamp(min=1)
        loss = total / count + model.config.aux_loss_weight * aux / self.world
        if model.item_query is not None:  # the item head's softmax, per target over all processes
            targets = self._sum(torch.tensor(float(n_item), device=self.device)).clamp(min=1)
            loss = loss + model.config.item_loss_weight * item / targets
        if self.objective is not None:
            loss = self.objective(loss)
        if loss.requires_grad:
            loss.backward()
        for p in model.parameters():  # experts no token chose: a zero gradient, in every process
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.world > 1:
            for p in model.parameters():
                dist.all_reduce(p.grad)
            for moe in model.moe_layers():
                dist.all_reduce(moe.pending_load)
                # the logged load: this step's share of the whole batch, not of this process's part
                moe.load.copy_(moe.pending_load / moe.pending_load.sum().clamp(min=1))
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        model.update_moe_bias()
        if self.average is not None:
            self.average.update()
        self.step += 1
        ntp = self._sum(total.detach().float()) / count
        record = {"ntp": float(ntp), "aux": float(aux), "codes": int(count)}
        if model.item_query is not None:  # the item head's cross-entropy per target
            record["item"] = float(self._sum(item.detach().float()) / targets)
        return record

    def _sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            value = value.clone()
            dist.all_reduce(value)
        return value

    # --- validation -----------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Validation Recall@10 and NDCG@10 of the next item, ranked by beam search."""
        c = self.config
        ranked = rank_examples(self.model, self.valid, self.ids, c.eval_beam, 10,
                               exclude_seen=c.exclude_seen)  # fmt: skip
        result = evaluate(self.valid, ranked=ranked.numpy(), ks=(10,), exclude_seen=c.exclude_seen)
        return result.means()

    def _averaged(self) -> AbstractContextManager[None]:
        """The weights that are validated and kept: the moving average when there is one."""
        return nullcontext() if self.average is None else self.average.applied(self.model)

    def _validate_everywhere(self) -> dict[str, float]:
        """Rank 0 validates; every process gets its numbers (the same early-stopping decision)."""
        values = torch.zeros(2, dtype=torch.float64)
        if self.rank == 0:
            with self._averaged():
                means = self.validate()
            values = torch.tensor([means["recall@10"], means["ndcg@10"]], dtype=torch.float64)
        if self.world > 1:
            dist.broadcast(values, 0)
        return {"recall@10": float(values[0]), "ndcg@10": float(values[1])}

    # --- the loop -------------------------------------------------------------------------------
    def fit(self, progress: bool = True) -> dict[str, Any]:
        c = self.config
        main = self.rank == 0
        metrics = self.run_dir / "metrics.jsonl"
        if main:
            if self.restart:  # the earlier run's files only; anything else stays
                for name in TRAINER_FILES:
                    (self.run_dir / name).unlink(missing_ok=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "train_config.json").write_text(
                train_config_record(c, self.resumes)
            )
            (self.run_dir / "model_config.json").write_text(
                json.dumps(self.model.config.to_dict(), indent=2)
            )
        if self.world > 1:
            dist.barrier()  # the restart's removals are done before any process looks
        if self.resumes is not None:
            self._load(self.run_dir / "last.safetensors")
        if main:
            # drop what a killed epoch logged after the checkpoint (it is about to run again),
            # and on a fresh start everything an unfinished first epoch logged
            kept, torn = [], 0
            if self.resumes is not None and metrics.exists():
                for line in metrics.read_text(errors="replace").splitlines():
                    try:
                        epoch = json.loads(line)["epoch"]
                    except (ValueError, KeyError, TypeError):  # a line a kill cut short
                        torn += 1
                        continue
                    if epoch < self.epoch:
                        kept.append(line)
            if torn:
                logger.warning("%s: dropped %d unreadable line(s), written when the run was "
                               "killed", metrics, torn)  # fmt: skip
            metrics.write_text("".join(line + "\n" for line in kept))
        log = metrics.open("a") if main else None
        while self.epoch < c.epochs and self.bad_epochs < c.patience and not self._out_of_time():
            torch.manual_seed(c.seed + self.epoch)
            batches = length_batches(self.windows, c.batch_size,
                                     np.random.default_rng(c.seed + self.epoch))  # fmt: skip
            self.model.train()
            start = time.perf_counter()
            total, codes, partial = 0.0, 0, False
            bar = tqdm(batches, desc=f"epoch {self.epoch}", unit="step", disable=not (progress and main))
            for batch in bar:
                record = self._train_step(batch)
                total += record["ntp"] * record["codes"]
                codes += record["codes"]
                if self.step % c.log_every == 0:
                    bar.set_postfix(loss=f"{record['ntp']:.3f}")
                    if log is not None:
                        record.update(step=self.step, epoch=self.epoch,
                                      lr=self.scheduler.get_last_lr()[0])  # fmt: skip
                        load = self.model.moe_load()
                        if load.numel():
                            record["expert_load"] = [round(x, 4) for x in load.mean(0).tolist()]
                        log.write(json.dumps(record) + "\n")
                if self._out_of_time(time.perf_counter() - start):
                    partial = True
                    break
            bar.close()
            train_seconds = time.perf_counter() - start
            valid = self._validate_everywhere()
            improved = valid["recall@10"] > self.best
            self.best = max(self.best, valid["recall@10"])
            self.bad_epochs = 0 if improved else self.bad_epochs + 1
            self.epoch += 1
            self.elapsed += time.perf_counter() - start
            if log is not None:
                log.write(json.dumps({
                    "epoch": self.epoch - 1, "train_ntp": total / max(codes, 1),
                    "valid_recall@10": valid["recall@10"], "valid_ndcg@10": valid["ndcg@10"],
                    "best": self.best, "train_seconds": train_seconds,
                    "seconds": time.perf_counter() - start,
                    **({"partial": True} if partial else {}),
                }) + "\n")  # fmt: skip
                log.flush()
                if improved:
                    with self._averaged():
                        self.model.save(self.run_dir, metadata=weights_metadata(
                            self.sources, self.model.config.to_dict()))  # fmt: skip
                self._save(self.run_dir / "last.safetensors")
                plot_metrics(metrics, self.run_dir / "training.png")
            if self.world > 1:
                dist.barrier()
        if log is not None:
            log.close()
        stopped = ("epochs" if self.epoch >= c.epochs
                   else "patience" if self.bad_epochs >= c.patience else "time")  # fmt: skip
        state = {"epochs": self.epoch, "steps": self.step, "best_valid_recall@10": self.best,
                 "seconds": self.elapsed, "stopped": stopped}  # fmt: skip
        if main:
            (self.run_dir / "state.json").write_text(json.dumps(state, indent=2))
        if self.world > 1:
            dist.barrier()
        self.load_best()
        return state

    def _out_of_time(self, running: float = 0.0) -> bool:
        """Whether the time budget is spent, counting ``running`` seconds of the current epoch.
        Rank 0's clock decides for every process, so all of them stop at the same step."""
        if self.config.max_seconds is None:
            return False
        spent = self.elapsed + running >= self.config.max_seconds
        if self.world > 1:  # a tensor (and on a GPU a sync) only where processes must agree
            flag = torch.tensor(float(spent), device=self.device)
            dist.broadcast(flag, 0)
            spent = bool(flag)
        return spent

    def load_best(self) -> None:
        """Put the best epoch's weights (``model.safetensors``) into the model."""
        path = self.run_dir / "model.safetensors"
        if path.exists():
            tensors, _ = read_safetensors(path, self.device)
            self.model.load_state_dict(tensors)

    # --- checkpoints ----------------------------------------------------------------------------
    def _save(self, path: Path) -> None:
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
        for i, p in enumerate(self.model.parameters()):
            for k, v in self.optimizer.state.get(p, {}).items():
                tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().contiguous()
        if self.average is not None:
            tensors.update({f"ema.{i}": a.contiguous() for i, a in enumerate(self.average.params)})
            tensors["ema.updates"] = torch.tensor([self.average.updates], dtype=torch.int64)
        tensors["trainer.counters"] = torch.tensor(
            [self.epoch, self.step, self.bad_epochs], dtype=torch.int64
        )
        tensors["trainer.best"] = torch.tensor([self.best], dtype=torch.float64)
        tensors["trainer.elapsed"] = torch.tensor([self.elapsed], dtype=torch.float64)
        metadata = checkpoint_metadata(self.sources, self.model.config.to_dict(), self.config)
        write_safetensors(tensors, path, metadata)

    def _load(self, path: Path) -> None:
        tensors, _ = read_safetensors(path, self.device, hint=RESTART_HINT)
        if "trainer.counters" not in tensors or "trainer.best" not in tensors:
            raise CorruptCheckpointError("it holds no trainer counters", path=path,
                                         hint=RESTART_HINT)  # fmt: skip
        self.model.load_state_dict(_checkpoint_weights(tensors, self.model, path, RESTART_HINT))
        for i, p in enumerate(self.model.parameters()):
            state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
            if state:
                self.optimizer.state[p] = state
        if self.average is not None:
            if "ema.updates" not in tensors:
                raise ConfigError(
                    f"{path} was written without ema_decay: resume it with the same TrainConfig "
                    "(ema_decay None) or start a new run directory"
                )
            self.average.params = [tensors[f"ema.{i}"] for i in range(len(self.average.params))]
            self.average.updates = int(tensors["ema.updates"][0])
        self.epoch, self.step, self.bad_epochs = (int(x) for x in tensors["trainer.counters"])
        self.best = float(tensors["trainer.best"][0])
        if "trainer.elapsed" in tensors:  # absent in checkpoints written before max_seconds
            self.elapsed = float(tensors["trainer.elapsed"][0])
        # the schedule is a function of the step alone: put it where the run stopped
        self.scheduler.last_epoch = self.step
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * _schedule(self.step, self.config.warmup_steps, self.total_steps)
