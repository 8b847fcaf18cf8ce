"""The "DPO sample server": preference pairs from a model snapshot's own beam search.

:func:`sample_pairs` is a pure function of a model snapshot, its semantic IDs, a reward model
and a batch of users, so it can later run as a separate service fed with synced parameters (as
in the paper). For every user it beam-searches N sessions (``beam_search_sessions``, batched),
scores them with the RM's combined score, and returns:

- ``"best_worst"`` (the paper): chosen = the best session, rejected = the worst;
- ``"softmax"`` (softmax-DPO, several negatives): chosen = the best, rejected = the K worst;
- ``"bottom_random"``: chosen = the best, rejected = one session drawn uniformly from the bottom
  quarter (a less extreme negative than the very worst, which is often degenerate).

Beams that died (fewer valid sessions than the beam is wide, in a tiny catalog) are never used;
a user with fewer valid sessions than one chosen plus the rejected ones is dropped and counted.
The reference log-probabilities of every session (the snapshot's, teacher-forced, eval mode)
are computed here once: the snapshot is the frozen reference of the next DPO step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from onerec.alignment.dpo import session_log_probs
from onerec.alignment.reward_model import RewardModel
from onerec.data.ragged import Ragged
from onerec.exceptions import AlignmentConfigError, CatalogMismatchError
from onerec.generation.beam_search import beam_search_sessions
from onerec.model.onerec import OneRec
from onerec.runs import write_safetensors
from onerec.simulator import Simulator
from onerec.tokenizer.residual import SemanticIds

STRATEGIES = ("best_worst", "softmax", "bottom_random")


class OracleReward:
    """The simulator's exact combined reward in the reward model's place (right after the log,
    ``time``): alignment against ground truth, the ceiling of what an RM could give."""

    def __init__(self, sim: Simulator, time: float = 1.0) -> None:
        self.sim, self.time = sim, time

    def reward(self, users: np.ndarray, history: Ragged, sessions: np.ndarray) -> np.ndarray:
        return self.sim.oracle(users, sessions, time=self.time)["reward"]

    def check_catalog(self, n_items: int, fingerprint: str = "") -> None:
        if n_items != self.sim.num_items:
            raise CatalogMismatchError(
                f"the simulator has {self.sim.num_items} items but the generator's semantic IDs "
                f"cover {n_items}: tokenize the simulator's catalog"
            )


@dataclass
class PreferencePairs:
    """One chosen and K rejected sessions per kept user, with their RM rewards and the
    snapshot's (reference) log-probabilities."""

    user: np.ndarray  # (P,)
    history: Ragged  # (P rows) what the sessions were generated after
    chosen: np.ndarray  # (P, m) items
    rejected: np.ndarray  # (P, K, m)
    chosen_codes: np.ndarray  # (P, m, L')
    rejected_codes: np.ndarray  # (P, K, m, L')
    reward_chosen: np.ndarray  # (P,) the RM's combined score
    reward_rejected: np.ndarray  # (P, K)
    reference_chosen: np.ndarray  # (P,) log-probability under the snapshot
    reference_rejected: np.ndarray  # (P, K)
    stats: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user)

    def codes(self) -> torch.Tensor:
        """``(P, 1 + K, m, L')``: chosen first, then the rejected sessions."""
        both = np.concatenate([self.chosen_codes[:, None], self.rejected_codes], axis=1)
        return torch.from_numpy(both)

    _ARRAYS = ("user", "chosen", "rejected", "chosen_codes", "rejected_codes", "reward_chosen",
               "reward_rejected", "reference_chosen", "reference_rejected")  # fmt: skip

    def save(self, path: str | Path) -> Path:
        tensors = {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k)))
                   for k in self._ARRAYS}  # fmt: skip
        tensors["history.values"] = torch.from_numpy(self.history.values)
        tensors["history.offsets"] = torch.from_numpy(self.history.offsets)
        meta = {k: str(v) for k, v in self.stats.items()}
        write_safetensors(tensors, path, meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "PreferencePairs":
        from safetensors import safe_open

        t = {k: v.numpy() for k, v in load_file(str(path)).items()}
        with safe_open(str(path), "pt") as f:
            stats: dict[str, Any] = dict(f.metadata() or {})
        history = Ragged(t.pop("history.values"), t.pop("history.offsets"))
        return cls(history=history, stats=stats, **{k: t[k] for k in cls._ARRAYS})


def check_sampling(n_sessions: int, strategy: str, negatives: int) -> None:
    """Named errors for a sampling request that cannot give pairs."""
    integer = isinstance(n_sessions, (int, np.integer)) and not isinstance(n_sessions, bool)
    if not integer or n_sessions < 2:
        raise AlignmentConfigError(
            f"n_sessions (N) must be an int >= 2: a pair needs a chosen and a rejected session "
            f"from the same user; got {n_sessions!r}"
        )
    if strategy not in STRATEGIES:
        raise AlignmentConfigError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    k = negatives if strategy == "softmax" else 1
    if k < 1 or k + 1 > n_sessions:
        raise AlignmentConfigError(
            f"{strategy} needs 1 chosen + {k} rejected sessions out of n_sessions={n_sessions}: "
            f"use negatives in [1, {n_sessions - 1}]"
        )


def beam_sessions(
    model: OneRec, semantic_ids: SemanticIds, history: Ragged, users: np.ndarray, n_sessions: int,
    session_items: int, *, exclude_seen: bool = True, batch_size: int = 16, progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The ``n_sessions`` best beams of every user: items ``(U, N, m)`` (-1 where a beam died)
    and codes ``(U, N, m, L')``, batched over users; history items are never generated with
    ``exclude_seen``."""
    items, codes = [], []
    for start in tqdm(range(0, len(users), batch_size), desc="beam search", unit="batch",
                      disable=not progress, leave=False):  # fmt: skip
        rows = np.arange(start, min(start + batch_size, len(users)))
        h = history.take(rows)
        beams = beam_search_sessions(
            model, h, torch.from_numpy(np.asarray(users)[rows]), semantic_ids,
            beam_size=n_sessions, n_items=session_items, exclude_items=h if exclude_seen else None,
        )  # fmt: skip
        items.append(beams.items.cpu().numpy())
        codes.append(beams.codes.cpu().numpy())
    return np.concatenate(items).astype(np.int64), np.concatenate(codes).astype(np.int64)


def sample_pairs(
    model: OneRec,
    semantic_ids: SemanticIds,
    reward_model: RewardModel | OracleReward,
    history: Ragged,
    users: np.ndarray,
    *,
    n_sessions: int = 128,
    session_items: int = 5,
    strategy: str = "best_worst",
    negatives: int = 1,
    exclude_seen: bool = True,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> PreferencePairs:
    """Preference pairs for ``users`` (with their ``history`` rows) from the snapshot ``model``
    (see the module doc). ``reward_model``: the RM, or :class:`OracleReward` (the simulator's
    exact reward: the upper bound of what alignment could achieve)."""
    check_sampling(n_sessions, strategy, negatives)
    reward_model.check_catalog(semantic_ids.n_items)
    users = np.asarray(users, dtype=np.int64)
    started = time.perf_counter()
    items, codes = beam_sessions(model, semantic_ids, history, users, n_sessions, session_items,
                                 exclude_seen=exclude_seen, batch_size=batch_size,
                                 progress=progress)  # fmt: skip
    u, n, m = items.shape
    valid = (items >= 0).all(axis=2)  # (U, N)
    flat_history = history.take(np.repeat(np.arange(u), n))
    # dead beams are scored as copies of the user's first beam, then never picked
    flat = np.where(valid[..., None], items, items[:, :1]).reshape(u * n, m)
    reward = reward_model.reward(np.repeat(users, n), flat_history, flat)
    reward = np.where(valid, reward.reshape(u, n), -np.inf)
    k = negatives if strategy == "softmax" else 1
    keep = valid.sum(1) >= k + 1
    rows = np.flatnonzero(keep)
    order = np.argsort(-reward[rows], axis=1, kind="stable")  # best first, dead beams last
    n_valid = valid[rows].sum(1)
    best = order[:, 0]
    if strategy == "bottom_random":
        rng = np.random.default_rng([seed, 23])
        quarter = np.maximum(1, n_valid // 4)
        pick = n_valid - 1 - np.floor(rng.random(len(rows)) * quarter).astype(np.int64)
        worst = order[np.arange(len(rows)), np.maximum(pick, 1)][:, None]
    else:  # the k lowest valid sessions, worst first
        worst = order[np.arange(len(rows))[:, None], n_valid[:, None] - 1 - np.arange(k)]
    chosen_codes = codes[rows, best]  # (P, m, L')
    rejected_codes = codes[rows[:, None], worst]  # (P, K, m, L')
    pair_history = history.take(rows)
    reference = _reference_log_probs(model, semantic_ids, pair_history, users[rows],
                                     chosen_codes, rejected_codes, batch_size)  # fmt: skip
    stats = {"users": u, "kept_users": len(rows), "dropped_users": int(u - len(rows)),
             "dead_beams": int((~valid).sum()), "n_sessions": n, "strategy": strategy,
             "negatives": k, "seconds": time.perf_counter() - started}  # fmt: skip
    return PreferencePairs(
        user=users[rows], history=pair_history, chosen=items[rows, best],
        rejected=items[rows[:, None], worst], chosen_codes=chosen_codes,
        rejected_codes=rejected_codes, reward_chosen=reward[rows, best],
        reward_rejected=reward[rows[:, None], worst], reference_chosen=reference[:, 0],
        reference_rejected=reference[:, 1:], stats=stats,
    )  # fmt: skip


@torch.no_grad()
def _reference_log_probs(
    model: OneRec, semantic_ids: SemanticIds, history: Ragged, users: np.ndarray,
    chosen: np.ndarray, rejected: np.ndarray, batch_size: int,
) -> np.ndarray:  # fmt: skip
    """``(P, 1 + K)`` teacher-forced log-probabilities of the chosen and rejected sessions under
    the snapshot, in eval mode (no dropout): the frozen reference."""
    was_training = model.training
    model.eval()
    codes = torch.from_numpy(np.concatenate([chosen[:, None], rejected], axis=1))
    out = []
    try:
        for start in range(0, len(users), batch_size):
            rows = np.arange(start, min(start + batch_size, len(users)))
            out.append(session_log_probs(model, semantic_ids, history.take(rows), users[rows],
                                         codes[rows]).double().cpu())  # fmt: skip
    finally:
        model.train(was_training)
    k = codes.shape[1]
    return torch.cat(out).numpy() if out else np.zeros((0, k))
