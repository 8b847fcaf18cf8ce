"""Train the reward model on logged sessions, with a run folder and exact resume; grade it on
held-out sessions beside a per-item-average baseline.

The run folder holds ``reward_train_config.json``, ``reward_config.json``, ``metrics.jsonl``
(step and epoch records), ``reward_model.safetensors`` (the epoch with the lowest held-out loss),
``last.safetensors`` (weights, AdamW moments and counters of the last finished epoch),
``training.png`` and ``evaluation.json``. Each epoch's shuffling and dropout are seeded by
``seed + epoch``, so a run killed mid-epoch and resumed reproduces the uninterrupted one.

Scores on held-out sessions: per rate signal (vtr, wtr, ltr) the AUC of the session's predicted
rate against its items' realised 0/1 labels (each exposure of a held-out session is one labelled
example, scored by its session's prediction); for swt the R^2 and the Spearman correlation of
predicted and realised session watch time. The baseline predicts each session from its items'
average feedback on the training sessions (smoothed towards the global mean with
``prior`` pseudo-sessions): swt the sum of the items' mean watch times, each rate the mean of the
items' rates.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from onerec.alignment.logged import SIGNALS, LoggedSessions
from onerec.alignment.reward_model import (
    RewardModel,
    RewardModelConfig,
    config_from_dict,
    require_ints,
)
from onerec.exceptions import AlignmentConfigError, ConfigError
from onerec.model.tokens import pad_history
from onerec.runs import write_safetensors


@dataclass(frozen=True)
class RewardTrainConfig:
    """How to train the RM. ``holdout``: share of sessions (random, seeded) kept out of training
    for early model selection and the evaluation; ``swt_quantile``: the training sessions' watch
    time quantile that becomes ``swt_scale``."""

    epochs: int = 8
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.01
    holdout: float = 0.1
    swt_quantile: float = 0.99
    rate_features: bool = True  # add each item's smoothed training-log feedback (item_rates)
    rate_prior: float = 5.0  # pseudo-exposures at the global mean that smooth those rates
    log_every: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        require_ints(self, ("epochs", "batch_size", "log_every"))
        if not self.rate_prior > 0:
            raise AlignmentConfigError(
                f"rate_prior must be > 0 (pseudo-exposures that keep unseen items' rates "
                f"defined), got {self.rate_prior}"
            )
        if not 0 < self.holdout < 1 or not 0 < self.swt_quantile <= 1 or not self.lr > 0:
            raise AlignmentConfigError(
                f"holdout must be in (0, 1), swt_quantile in (0, 1], lr > 0; got {self.holdout}, "
                f"{self.swt_quantile}, {self.lr}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RewardTrainConfig":
        return config_from_dict(cls, d, ConfigError)


# The measured reward models (docs/alignment.md), as (RewardTrainConfig fields, RewardModelConfig
# fields). v1: learned item ids beside the side features. v2: the items' smoothed training-log
# feedback rates as side features instead of ids (about 30 sessions per item made the id vectors
# overfit), no dropout, a lower learning rate for more epochs; it beat the per-item-average
# baseline on held-out sessions where v1 did not. v3: v2 with its towers on every item, trained
# on each exposure's own feedback (RewardModelConfig.targets = "item").
REWARD_SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "v1": ({"epochs": 6, "weight_decay": 0.1, "rate_features": False},
           {"d_model": 32, "dropout": 0.2}),
    "v2": ({"epochs": 12, "lr": 1e-3, "weight_decay": 0.1},
           {"d_model": 32, "dropout": 0.0, "item_ids": False}),
    "v3": ({"epochs": 12, "lr": 1e-3, "weight_decay": 0.1},
           {"d_model": 32, "dropout": 0.0, "item_ids": False, "targets": "item"}),
}  # fmt: skip


@dataclass
class RewardRun:
    model: RewardModel  # the best epoch's weights, eval mode
    evaluation: dict[str, Any]
    run_dir: Path


def holdout_rows(n: int, config: RewardTrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out session rows (sorted), a seeded random split."""
    rng = np.random.default_rng([config.seed, 17])
    held = np.zeros(n, dtype=bool)
    held[rng.choice(n, max(1, round(config.holdout * n)), replace=False)] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def fit_scales(
    train: LoggedSessions, quantile: float, targets: str
) -> tuple[float, tuple[float, ...], int]:
    """``swt_scale`` (the quantile of session watch time, or of one exposure's with ``targets``
    "item"), the per-item references of the combined score, and how many training sessions (or
    exposures) the scale clips."""
    if targets == "item":
        watch = train.signals[..., 0][train.items >= 0]
    else:
        watch = train.targets()[:, 0]
    scale = float(np.quantile(watch, quantile))
    if not scale > 0:
        raise AlignmentConfigError(
            f"the training {'exposures' if targets == 'item' else 'sessions'}' {quantile} "
            f"quantile of watch time is {scale}: the log has no watch time to learn swt from"
        )
    per_item = train.signals.reshape(-1, len(SIGNALS))[train.items.reshape(-1) >= 0].mean(0)
    if np.any(per_item <= 0):
        raise AlignmentConfigError(
            f"every signal needs some positive feedback in the training log; means per item "
            f"{dict(zip(SIGNALS, per_item.round(6).tolist()))}"
        )
    return scale, tuple(float(x) for x in per_item), int((watch > scale).sum())


def _tensors(data: LoggedSessions, config: RewardModelConfig) -> tuple[torch.Tensor, ...]:
    """History (S, n), sessions (S, m) and normalized targets in [0, 1]: the sessions' values
    (S, 4), or with ``targets="item"`` every exposure's feedback (S, m, 4), zero on padding."""
    t = data.targets() if config.targets == "session" else data.signals.copy()
    t[..., 0] = np.minimum(t[..., 0] / config.swt_scale, 1.0)
    return (pad_history(data.history, config.history_length),
            torch.from_numpy(data.items), torch.from_numpy(t).float())  # fmt: skip


def _loss(model: RewardModel, h: torch.Tensor, s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the four towers on soft targets, summed over towers (per item
    targets: averaged over the real exposures, padding left out)."""
    bce = F.binary_cross_entropy_with_logits(model(h, s), y, reduction="none")
    if bce.dim() == 2:
        return bce.mean(0).sum()
    valid = (s >= 0).unsqueeze(-1)
    return (bce * valid).sum((0, 1)).div(valid.sum()).sum()


@torch.no_grad()
def _heldout_loss(model: RewardModel, tensors: tuple[torch.Tensor, ...], batch: int) -> float:
    model.eval()
    h, s, y = tensors
    total = sum(float(_loss(model, h[i : i + batch], s[i : i + batch], y[i : i + batch]))
                * len(s[i : i + batch]) for i in range(0, len(s), batch))  # fmt: skip
    model.train()
    return total / max(len(s), 1)


def train_reward_model(
    sessions: LoggedSessions,
    out: str | Path,
    config: RewardTrainConfig | None = None,
    *,
    num_items: int,
    catalog: str = "",
    model: dict[str, Any] | None = None,
    item_features: np.ndarray | None = None,
    progress: bool = True,
) -> RewardRun:
    """Train an RM on ``sessions`` into ``out`` (resumed when it holds a run), select the epoch
    with the lowest held-out loss, and grade it (``evaluation.json``). ``model``: fields of
    :class:`RewardModelConfig` (sizes, ``weights``); the scale and references are fitted here.
    ``item_features`` ``(num_items, F)``: fixed side features of every item; with
    ``config.rate_features`` the items' smoothed feedback on the *training* sessions
    (:func:`rate_features`) joins them. All are standardized here and kept in the model's
    weights."""
    config = config or RewardTrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    train_rows, held_rows = holdout_rows(len(sessions), config)
    train, held = sessions.take(train_rows), sessions.take(held_rows)
    overrides = dict(model or {})
    scale, references, clipped = fit_scales(
        train, config.swt_quantile, overrides.get("targets", RewardModelConfig.targets)
    )
    overrides.setdefault("session_items", sessions.items.shape[1])
    columns = []
    if item_features is not None:
        given = np.asarray(item_features, dtype=np.float64)
        if given.ndim != 2 or len(given) != num_items or not np.isfinite(given).all():
            raise AlignmentConfigError(
                f"item_features must be a finite (num_items={num_items}, F) array, got shape "
                f"{given.shape}"
            )
        columns.append(given)
    if config.rate_features:
        columns.append(rate_features(train, num_items, config.rate_prior))
    features = None
    if columns:
        features = np.concatenate(columns, axis=1)
        features = (features - features.mean(0)) / np.maximum(features.std(0), 1e-8)
        overrides["item_features"] = features.shape[1]
    model_config = RewardModelConfig(num_items=num_items, catalog=catalog, swt_scale=scale,
                                     references=references, **overrides)  # fmt: skip
    saved = out / "reward_config.json"
    if (out / "last.safetensors").exists() and saved.exists():
        previous = RewardModelConfig.from_dict(json.loads(saved.read_text()))
        if previous != model_config:
            raise AlignmentConfigError(
                f"{out} holds a reward-model run of another config or log; resume it with the "
                "same settings and log, or choose a new output folder"
            )
    (out / "reward_train_config.json").write_text(json.dumps(asdict(config), indent=2))
    torch.manual_seed(config.seed)
    rm = RewardModel(model_config)
    if features is not None:
        rm.features[:num_items] = torch.from_numpy(features).float()
    optimizer = torch.optim.AdamW(rm.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    epoch, step, best = 0, 0, float("inf")
    metrics = out / "metrics.jsonl"
    if (out / "last.safetensors").exists():
        epoch, step, best = _load(out / "last.safetensors", rm, optimizer)
        if metrics.exists():  # a killed epoch's records are about to be written again
            kept = [r for r in metrics.read_text().splitlines() if json.loads(r)["epoch"] < epoch]
            metrics.write_text("".join(r + "\n" for r in kept))
    else:
        metrics.unlink(missing_ok=True)
        rm.save(out)  # the config now; the best epoch's weights replace these
    train_t, held_t = _tensors(train, model_config), _tensors(held, model_config)
    with metrics.open("a") as log:
        while epoch < config.epochs:
            torch.manual_seed(config.seed + epoch)
            order = np.random.default_rng(config.seed + epoch).permutation(len(train))
            rm.train()
            total = 0.0
            bar = tqdm(range(0, len(order), config.batch_size), desc=f"RM epoch {epoch}",
                       unit="step", disable=not progress)  # fmt: skip
            for start in bar:
                rows = torch.from_numpy(order[start : start + config.batch_size])
                loss = _loss(rm, *(t[rows] for t in train_t))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
                if step % config.log_every == 0:
                    record = {"epoch": epoch, "step": step, "loss": float(loss.detach())}
                    log.write(json.dumps(record) + "\n")
                step += 1
            heldout = _heldout_loss(rm, held_t, config.batch_size)
            improved = heldout < best
            best = min(best, heldout)
            log.write(json.dumps({"epoch": epoch, "train_loss": total / len(order),
                                  "heldout_loss": heldout, "best": best}) + "\n")  # fmt: skip
            log.flush()
            epoch += 1
            if improved:
                rm.save(out)
            _save(out / "last.safetensors", rm, optimizer, epoch, step, best)
            plot_reward_metrics(metrics, out / "training.png")
    rm = RewardModel.load(out)
    evaluation = evaluate_reward_model(rm, held, train)
    evaluation.update(train_sessions=len(train), heldout_sessions=len(held),
                      swt_scale=scale, swt_clipped=clipped, best_heldout_loss=best)  # fmt: skip
    (out / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    return RewardRun(rm, evaluation, out)


def _save(path: Path, rm: RewardModel, optimizer: torch.optim.Optimizer, epoch: int, step: int,
          best: float) -> None:  # fmt: skip
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in rm.state_dict().items()}
    for i, p in enumerate(rm.parameters()):
        for k, v in optimizer.state.get(p, {}).items():
            tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().contiguous()
    tensors["counters"] = torch.tensor([epoch, step], dtype=torch.int64)
    tensors["best"] = torch.tensor([best], dtype=torch.float64)
    write_safetensors(tensors, path)


def _load(path: Path, rm: RewardModel, optimizer: torch.optim.Optimizer) -> tuple[int, int, float]:
    tensors = load_file(str(path))
    rm.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, p in enumerate(rm.parameters()):
        state = {k.split(".", 2)[2]: v for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
        if state:
            optimizer.state[p] = state
    epoch, step = (int(x) for x in tensors["counters"])
    return epoch, step, float(tensors["best"][0])


# --- evaluation ---------------------------------------------------------------------------------


def weighted_auc(score: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> float:
    """AUC when example i stands for ``positives[i]`` positive and ``negatives[i]`` negative
    labels sharing the score ``score[i]`` (ties count one half)."""
    order = np.argsort(score, kind="stable")
    s, p, n = score[order], positives[order], negatives[order]
    _, start = np.unique(s, return_index=True)
    p_group, n_group = np.add.reduceat(p, start), np.add.reduceat(n, start)
    below = np.cumsum(n_group) - n_group  # negatives with a strictly lower score
    total_p, total_n = p.sum(), n.sum()
    if total_p == 0 or total_n == 0:
        return float("nan")
    return float((p_group * (below + 0.5 * n_group)).sum() / (total_p * total_n))


def session_scores(predicted: np.ndarray, data: LoggedSessions) -> dict[str, float]:
    """AUC of vtr, wtr, ltr and R^2 / Spearman of swt for predictions ``(S, 4)``."""
    truth = data.targets()
    n = data.lengths.astype(np.float64)
    out: dict[str, float] = {}
    residual = ((truth[:, 0] - predicted[:, 0]) ** 2).sum()
    spread = ((truth[:, 0] - truth[:, 0].mean()) ** 2).sum()
    constant = spread == 0 or np.ptp(predicted[:, 0]) == 0  # no fitting score is defined
    out["swt_r2"] = float("nan") if spread == 0 else float(1 - residual / spread)
    out["swt_spearman"] = (float("nan") if constant
                           else float(spearmanr(predicted[:, 0], truth[:, 0]).statistic))  # fmt: skip
    for k, name in enumerate(SIGNALS[1:], start=1):
        positives = truth[:, k] * n
        out[f"{name}_auc"] = weighted_auc(predicted[:, k], positives, n - positives)
    return out


def item_rates(
    train: LoggedSessions, num_items: int, prior: float = 5.0
) -> tuple[np.ndarray, np.ndarray]:
    """Every item's mean feedback on ``train``'s sessions ``(num_items, 4)`` (watch time in
    seconds, view-through, follow, like), smoothed towards the global mean with ``prior``
    pseudo-exposures, and its exposure count ``(num_items,)``."""
    valid = train.items >= 0
    items = train.items[valid]
    signals = train.signals[valid]  # (exposures, 4)
    count = np.bincount(items, minlength=num_items).astype(np.float64)
    per_item = np.stack([np.bincount(items, signals[:, k], minlength=num_items)
                         for k in range(len(SIGNALS))], axis=1)  # fmt: skip
    return (per_item + prior * signals.mean(0)) / (count + prior)[:, None], count


def rate_features(train: LoggedSessions, num_items: int, prior: float = 5.0) -> np.ndarray:
    """Side features ``(num_items, 9)`` from the training sessions only: the smoothed rates of
    :func:`item_rates`, their logs (rare signals such as follows span orders of magnitude), and
    log(1 + exposures) (how much to trust them). What the per-item baseline knows, given to
    the RM as input so that it only has to learn what the history and the session add."""
    rates, count = item_rates(train, num_items, prior)
    return np.c_[rates, np.log(rates + 1e-6), np.log1p(count)]


def item_average_baseline(
    train: LoggedSessions, data: LoggedSessions, num_items: int, prior: float = 5.0
) -> np.ndarray:
    """Per-item average feedback ``(S, 4)`` for ``data``'s sessions (module doc)."""
    per_item, _ = item_rates(train, num_items, prior)
    ok = data.items >= 0
    looked = np.where(ok[..., None], per_item[np.where(ok, data.items, 0)], 0.0)  # (S, m, 4)
    out = looked.sum(1) / ok.sum(1, keepdims=True)
    out[:, 0] = looked[:, :, 0].sum(1)
    return out


def evaluate_reward_model(
    rm: RewardModel, heldout: LoggedSessions, train: LoggedSessions
) -> dict[str, Any]:
    """The RM's and the item-average baseline's scores on held-out logged sessions."""
    predicted = rm.score(heldout.history, heldout.items)
    ours = np.stack([predicted[name] for name in SIGNALS], axis=1)
    base = item_average_baseline(train, heldout, rm.config.num_items)
    return {"reward_model": session_scores(ours, heldout),
            "item_average": session_scores(base, heldout)}  # fmt: skip


def plot_reward_metrics(metrics_path: Path, out_path: Path) -> Path:
    """Training loss per step and held-out loss per epoch, two panels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(r) for r in metrics_path.read_text().splitlines() if r]
    steps = [r for r in records if "step" in r]
    epochs = [r for r in records if "heldout_loss" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=1)
    left.set(xlabel="step", ylabel="BCE, 4 towers summed", title="reward model training")
    right.plot([r["epoch"] for r in epochs], [r["heldout_loss"] for r in epochs], marker="o")
    right.set(xlabel="epoch", ylabel="held-out loss", title="held-out sessions")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def with_weights(rm: RewardModel, weights: tuple[float, float, float, float]) -> RewardModel:
    """The same RM combining its towers with other ``weights`` (multi-objective alignment)."""
    other = RewardModel(replace(rm.config, weights=weights))
    other.load_state_dict(rm.state_dict())
    return other.eval()
