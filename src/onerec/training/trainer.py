"""Next-token training of OneRec on a split, with early stopping and exact resume.

Training examples come from the training sequences only: every cut ``t`` of a user's sequence
gives one example, history = the ``history_length`` items before ``t``, target = the next
``session_items`` items (a session of m items; m = 1 is next-item prediction). After each epoch
the model ranks the validation users' next item by trie-constrained beam search; the epoch with
the best validation Recall@10 is kept (``best.safetensors``), training stops after ``patience``
epochs without improvement.

A run directory holds ``train_config.json``, ``model_config.json``, ``metrics.jsonl`` (one JSON
object per logged step and per epoch), ``last.safetensors`` and ``best.safetensors`` (weights,
optimizer moments, and the epoch as a tensor) and ``state.json``. Resuming reloads
``last.safetensors`` and continues with the next epoch; each epoch's shuffling and dropout are
seeded by ``seed + epoch``, so a run killed mid-epoch and resumed reproduces the uninterrupted
run exactly (on the same machine and thread count).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from onerec.data.examples import Examples
from onerec.data.ragged import Ragged
from onerec.data.splits import Split
from onerec.evaluation import evaluate
from onerec.exceptions import ConfigError
from onerec.generation.beam_search import beam_search_items
from onerec.model.onerec import OneRec
from onerec.model.tokens import pad_history
from onerec.tokenizer.residual import SemanticIds


@dataclass(frozen=True)
class TrainConfig:
    session_items: int = 1
    history_length: int = 20
    batch_size: int = 256
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    patience: int = 3
    eval_beam: int = 20
    log_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("session_items", "history_length", "batch_size", "epochs", "eval_beam"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_beam < 10:
            raise ConfigError(f"eval_beam must be >= 10 to rank 10 items, got {self.eval_beam}")


def training_examples(sequences: Ragged, history_length: int, session_items: int) -> Examples:
    """One example per cut of each training sequence that leaves ``session_items`` targets.

    Row ``u`` of ``sequences`` is user ``u``; cuts start at 1 (at least one history item).
    """
    lengths = sequences.lengths
    cuts = np.maximum(lengths - session_items, 0)  # cuts t = 1 .. n - m
    row = np.repeat(np.arange(len(sequences), dtype=np.int64), cuts)
    t = 1 + np.arange(int(cuts.sum()), dtype=np.int64) - np.repeat(np.cumsum(cuts) - cuts, cuts)
    start = sequences.offsets[row]
    hist_len = np.minimum(t, history_length)
    history = sequences.slices(start + t - hist_len, hist_len)
    target = sequences.slices(start + t, np.full(len(row), session_items, dtype=np.int64))
    return Examples(row, history, target, history)


def _schedule(step: int, warmup: int, total: int) -> float:
    """Linear warmup, then cosine decay to 10% of the peak learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    def __init__(
        self,
        model: OneRec,
        semantic_ids: SemanticIds,
        split: Split,
        config: TrainConfig,
        run_dir: str | Path,
    ) -> None:
        if semantic_ids.n_items != split.num_items:
            raise ConfigError(
                f"semantic IDs cover {semantic_ids.n_items} items, the split has {split.num_items}"
            )
        self.model, self.ids, self.split, self.config = model, semantic_ids, split, config
        self.run_dir = Path(run_dir)
        self.examples = training_examples(
            split.train_sequences(), config.history_length, config.session_items
        )
        if len(self.examples) == 0:
            raise ConfigError(
                f"no training sequence is longer than session_items={config.session_items}"
            )
        self.steps_per_epoch = math.ceil(len(self.examples) / config.batch_size)
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        total = self.steps_per_epoch * config.epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: _schedule(s, config.warmup_steps, total)
        )
        self.epoch, self.step, self.best, self.bad_epochs = 0, 0, -1.0, 0

    # --- one batch ------------------------------------------------------------------------------
    def _batch(self, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        ex = self.examples.take(rows)
        items = pad_history(ex.history, self.config.history_length)
        tokens, mask = self.model.layout.encode_history(items, self.ids.codes)
        codes = self.ids.codes[torch.from_numpy(ex.target.values)].view(len(rows), self.config.session_items, -1)
        return tokens, mask, torch.from_numpy(ex.user), codes

    def validate(self) -> float:
        """Validation Recall@10 of the next item, ranked by beam search (seen items allowed)."""
        valid = self.split.valid
        ranked = []
        for s in range(0, len(valid), 512):
            rows = np.arange(s, min(s + 512, len(valid)))
            v = valid.take(rows)
            beams = beam_search_items(self.model, v.history, torch.from_numpy(v.user), self.ids,
                                      self.config.eval_beam, 10)  # fmt: skip
            ranked.append(beams.items)
        result = evaluate(valid, ranked=torch.cat(ranked), ks=(10,))
        return result.means()["recall@10"]

    # --- the loop -------------------------------------------------------------------------------
    def fit(self, progress: bool = True) -> dict[str, Any]:
        c = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "train_config.json").write_text(json.dumps(asdict(c), indent=2))
        (self.run_dir / "model_config.json").write_text(json.dumps(self.model.config.to_dict(), indent=2))
        metrics = self.run_dir / "metrics.jsonl"
        if (self.run_dir / "last.safetensors").exists():
            self._load(self.run_dir / "last.safetensors")
            # drop what a killed epoch logged after the checkpoint: it is about to run again
            if metrics.exists():
                kept = [line for line in metrics.read_text().splitlines()
                        if json.loads(line)["epoch"] < self.epoch]  # fmt: skip
                metrics.write_text("".join(line + "\n" for line in kept))
        log = metrics.open("a")
        while self.epoch < c.epochs and self.bad_epochs < c.patience:
            torch.manual_seed(c.seed + self.epoch)
            order = torch.randperm(len(self.examples), generator=torch.Generator().manual_seed(c.seed + self.epoch)).numpy()
            self.model.train()
            start = time.perf_counter()
            total = 0.0
            for i in tqdm(range(self.steps_per_epoch), desc=f"epoch {self.epoch}", disable=not progress):
                out = self.model.loss(*self._batch(order[i * c.batch_size : (i + 1) * c.batch_size]))
                self.optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
                self.optimizer.step()
                self.scheduler.step()
                self.model.update_moe_bias()
                self.step += 1
                total += out.ntp.detach().item()
                if self.step % c.log_every == 0:
                    record = {"step": self.step, "epoch": self.epoch, "loss": out.loss.item(),
                              "ntp": out.ntp.item(), "aux": float(out.aux),
                              "lr": self.scheduler.get_last_lr()[0]}  # fmt: skip
                    load = self.model.moe_load()
                    if load.numel():
                        record["expert_load"] = load.mean(0).tolist()
                    log.write(json.dumps(record) + "\n")
            recall = self.validate()
            improved = recall > self.best
            self.best = max(self.best, recall)
            self.bad_epochs = 0 if improved else self.bad_epochs + 1
            self.epoch += 1
            log.write(json.dumps({"epoch": self.epoch - 1, "train_ntp": total / self.steps_per_epoch,
                                  "valid_recall@10": recall, "best": self.best,
                                  "seconds": time.perf_counter() - start}) + "\n")  # fmt: skip
            log.flush()
            self._save(self.run_dir / "last.safetensors")
            if improved:
                self._save(self.run_dir / "best.safetensors")
        log.close()
        state = {"epochs": self.epoch, "steps": self.step, "best_valid_recall@10": self.best}
        (self.run_dir / "state.json").write_text(json.dumps(state, indent=2))
        return state

    # --- checkpoints ----------------------------------------------------------------------------
    def _save(self, path: Path) -> None:
        tensors = {f"model.{k}": v.detach().contiguous() for k, v in self.model.state_dict().items()}
        for i, p in enumerate(self.model.parameters()):
            for k, v in self.optimizer.state.get(p, {}).items():
                tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().contiguous()
        tensors["trainer.counters"] = torch.tensor(
            [self.epoch, self.step, self.bad_epochs], dtype=torch.int64
        )
        tensors["trainer.best"] = torch.tensor([self.best], dtype=torch.float64)
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp))
        tmp.rename(path)

    def _load(self, path: Path) -> None:
        tensors = load_file(str(path))
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        for i, p in enumerate(self.model.parameters()):
            state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
            if state:
                self.optimizer.state[p] = state
        self.epoch, self.step, self.bad_epochs = (int(x) for x in tensors["trainer.counters"])
        self.best = float(tensors["trainer.best"][0])
        # the schedule is a function of the step alone: put it where the run stopped
        self.scheduler.last_epoch = self.step
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * _schedule(self.step, self.config.warmup_steps,
                                           self.steps_per_epoch * self.config.epochs)  # fmt: skip
