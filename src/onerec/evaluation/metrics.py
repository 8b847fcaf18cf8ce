"""Full-ranking Recall@K and NDCG@K, vectorized over users, for scores or ranked lists.

The standard sequential-recommendation protocol ranks *all* items for each request (no sampled
negatives). Two kinds of prediction are accepted:

- a score matrix ``(rows, num_items)`` from a classic model: each target's rank is computed by
  counting the items scored above it, so no top-K list is materialized. Ties are broken against
  the target (an item with the same score counts as ranked above it): a model that scores
  everything alike gets no credit for the luck of a sort order.
- ranked item lists ``(rows, K_max)`` from a generative model (``-1`` pads a short list). A target
  counts at its first position; a duplicate later in the list cannot count twice.

With ``|T|`` distinct targets in a row and 0-based rank ``r_t`` of target ``t``:
``Recall@K = #{t : r_t < K} / |T|`` (equal to HR@K when ``|T| = 1``) and
``NDCG@K = sum_{t : r_t < K} 1 / log2(r_t + 2) / IDCG@K`` with
``IDCG@K = sum_{i < min(K, |T|)} 1 / log2(i + 2)``.

``exclude_seen`` removes the items a user interacted with before the request from the ranking,
as the S3-Rec code does. A target the user had already seen can then never be hit; on datasets
with repeat consumption (Yelp) that lowers the numbers, and the option is reported with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from onerec.data.examples import Examples
from onerec.data.ragged import Ragged
from onerec.exceptions import EvaluationError

ScoreFn = Callable[[np.ndarray], "torch.Tensor | np.ndarray"]
# at most this many (row, target, item) comparisons at once when ranking by scores
_CHUNK_ELEMENTS = 1 << 26


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if isinstance(ks, int) or not len(ks) or not all(isinstance(k, (int, np.integer)) for k in ks):
        raise EvaluationError(f"ks must be a non-empty list of ints, got {ks!r}")
    if min(ks) <= 0:
        raise EvaluationError(f"every K must be positive, got {list(ks)}")
    return tuple(sorted(set(int(k) for k in ks)))


def _distinct_targets(targets: Ragged) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets as a padded (rows, T) tensor (-1 pads) with duplicates within a row removed."""
    lists = []
    for row in targets:
        _, first = np.unique(row, return_index=True)
        lists.append(row[np.sort(first)])
    padded = Ragged.from_lists(lists).to_padded(pad=-1)
    t = torch.from_numpy(padded)
    return t, t >= 0


def _metric_values(
    ranks: torch.Tensor, valid: torch.Tensor, ks: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Per-row Recall and NDCG from 0-based target ranks (rows, T); invalid entries ignored."""
    n_targets = valid.sum(1).double()
    gains = torch.where(valid, 1.0 / torch.log2(ranks.double() + 2.0), torch.zeros((), dtype=torch.float64))
    discounts = 1.0 / torch.log2(torch.arange(max(ks), dtype=torch.float64) + 2.0)
    ideal_cum = torch.cumsum(discounts, 0)
    out = {}
    for k in ks:
        hit = valid & (ranks < k)
        out[f"recall@{k}"] = hit.sum(1).double() / n_targets
        idcg = ideal_cum[(torch.clamp(n_targets.long(), max=k) - 1).clamp_min(0)]
        out[f"ndcg@{k}"] = torch.where(hit, gains, torch.zeros((), dtype=torch.float64)).sum(1) / idcg
    return out


def ranks_from_scores(
    scores: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, seen: Ragged | None = None
) -> torch.Tensor:
    """0-based rank of each target in each row of ``scores``, ties broken against the target.

    ``seen`` (one row per score row) marks items to leave out of the ranking: their scores
    become -inf, and a seen target is given a rank past every list (never a hit).
    """
    scores = scores.float().clone()
    rows, num_items = scores.shape
    if seen is not None and len(seen.values):
        r = torch.from_numpy(seen.row_ids).to(scores.device)
        c = torch.from_numpy(seen.values).to(scores.device)
        scores[r, c] = float("-inf")
    tgt = targets.clamp_min(0).to(scores.device)
    valid = valid.to(scores.device)
    target_scores = scores.gather(1, tgt)  # (rows, T)
    ranks = torch.empty_like(tgt)
    per_row = max(1, _CHUNK_ELEMENTS // max(1, num_items * tgt.shape[1]))
    for s in range(0, rows, per_row):
        sc = scores[s : s + per_row].unsqueeze(1)  # (b, 1, n)
        ts = target_scores[s : s + per_row].unsqueeze(2)  # (b, T, 1)
        # items strictly above, plus items tied with the target other than the target itself
        ranks[s : s + per_row] = (sc > ts).sum(-1) + (sc == ts).sum(-1) - 1
    ranks = torch.where(torch.isneginf(target_scores), torch.full_like(ranks, num_items), ranks)
    return torch.where(valid, ranks, torch.full_like(ranks, num_items)).cpu()


def ranks_from_lists(
    ranked: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, seen: Ragged | None = None
) -> torch.Tensor:
    """0-based position of each target in each ranked list (after removing seen items);
    ``K_max`` (past the end) when absent."""
    ranked = ranked.long().cpu().clone()
    rows, width = ranked.shape
    if seen is not None and len(seen.values):
        # drop seen items, then close the gaps so later items move up
        is_seen = torch.zeros_like(ranked, dtype=torch.bool)
        seen_lists = seen.to_padded(pad=-2)
        seen_t = torch.from_numpy(seen_lists)
        per = max(1, _CHUNK_ELEMENTS // max(1, width * seen_t.shape[1]))
        for s in range(0, rows, per):
            block = ranked[s : s + per].unsqueeze(2) == seen_t[s : s + per].unsqueeze(1)
            is_seen[s : s + per] = block.any(-1)
        keep = ~is_seen & (ranked >= 0)
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        ranked = torch.where(keep.gather(1, order), ranked.gather(1, order), torch.full_like(ranked, -1))
    match = (ranked.unsqueeze(1) == targets.unsqueeze(2)) & (ranked.unsqueeze(1) >= 0)  # (rows, T, K)
    found = match.any(-1)
    first = match.to(torch.int8).argmax(-1)
    ranks = torch.where(found, first, torch.full_like(first, width))
    return torch.where(valid, ranks, torch.full_like(ranks, width))


@dataclass
class EvalResult:
    """Per-row metric values with the settings they were computed under."""

    users: np.ndarray
    per_user: dict[str, np.ndarray]
    ks: tuple[int, ...]
    exclude_seen: bool
    settings: dict = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        return {name: float(values.mean()) if len(values) else float("nan") for name, values in self.per_user.items()}

    def __str__(self) -> str:
        return " ".join(f"{name}={value:.4f}" for name, value in self.means().items())

    def save(self, path: str | Path) -> None:
        table = pa.table({"user": self.users, **self.per_user})
        meta = {"ks": list(self.ks), "exclude_seen": self.exclude_seen, **self.settings}
        table = table.replace_schema_metadata({"onerec": json.dumps(meta)})
        pq.write_table(table, path)

    @classmethod
    def load(cls, path: str | Path) -> "EvalResult":
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(b"onerec", b"{}"))
        per_user = {c: table.column(c).to_numpy() for c in table.column_names if c != "user"}
        ks = tuple(meta.pop("ks", ()))
        exclude_seen = bool(meta.pop("exclude_seen", False))
        return cls(table.column("user").to_numpy(), per_user, ks, exclude_seen, meta)


class Evaluator:
    """Accumulates metrics over batches of rows of an :class:`Examples` set.

    ``update(rows, scores=...)`` or ``update(rows, ranked=...)`` for each batch, in any order;
    ``result()`` once every row has been scored exactly once.
    """

    def __init__(
        self,
        examples: Examples,
        ks: Sequence[int] = (5, 10),
        exclude_seen: bool = False,
        num_items: int | None = None,
    ) -> None:
        self.examples = examples
        self.ks = _check_ks(ks)
        self.exclude_seen = exclude_seen
        self.num_items = num_items
        empty = np.flatnonzero(examples.target.lengths == 0)
        if len(empty):
            raise EvaluationError(
                f"{len(empty)} rows have no target (first: row {int(empty[0])}); every "
                "evaluation row needs at least one target item"
            )
        if num_items is not None and examples.max_item() >= num_items:
            raise EvaluationError(
                f"the examples reference item {examples.max_item()} but num_items={num_items}"
            )
        self._values = {f"{m}@{k}": np.full(len(examples), np.nan) for k in self.ks for m in ("recall", "ndcg")}
        self._done = np.zeros(len(examples), dtype=bool)

    def update(
        self,
        rows: np.ndarray | Sequence[int],
        *,
        scores: torch.Tensor | np.ndarray | None = None,
        ranked: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if (scores is None) == (ranked is None):
            raise EvaluationError("pass exactly one of scores= or ranked=")
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self.examples)):
            raise EvaluationError(f"row indices must be in [0, {len(self.examples)})")
        if len(np.unique(rows)) != len(rows) or self._done[rows].any():
            raise EvaluationError("a row was scored twice; give each row to update() once")
        batch = self.examples.take(rows)
        targets, valid = _distinct_targets(batch.target)
        seen = batch.seen if self.exclude_seen else None
        if scores is not None:
            s = torch.as_tensor(scores)
            if s.ndim != 2 or s.shape[0] != len(rows):
                raise EvaluationError(
                    f"scores must be (rows, num_items) with {len(rows)} rows, got {tuple(s.shape)}"
                )
            n = self.num_items if self.num_items is not None else s.shape[1]
            if s.shape[1] != n:
                raise EvaluationError(f"scores have {s.shape[1]} columns, expected num_items={n}")
            if batch.max_item() >= s.shape[1]:
                raise EvaluationError(
                    f"item index {batch.max_item()} is out of range for {s.shape[1]} score columns"
                )
            if torch.isnan(s).any():
                raise EvaluationError("scores contain NaN; a model must score every item")
            ranks = ranks_from_scores(s, targets, valid, seen)
        else:
            r = torch.as_tensor(ranked)
            if r.ndim != 2 or r.shape[0] != len(rows):
                raise EvaluationError(
                    f"ranked must be (rows, K) with {len(rows)} rows, got {tuple(r.shape)}"
                )
            if r.dtype.is_floating_point:
                raise EvaluationError("ranked lists must hold integer item indices")
            if r.shape[1] < max(self.ks):
                raise EvaluationError(
                    f"ranked lists have {r.shape[1]} entries but metrics go up to K={max(self.ks)}"
                )
            if self.num_items is not None and len(r) and r.max() >= self.num_items:
                raise EvaluationError(f"ranked lists hold item {int(r.max())} >= num_items")
            if len(r) and r.min() < -1:
                raise EvaluationError("ranked lists may hold item indices and -1 (padding) only")
            ranks = ranks_from_lists(r, targets, valid, seen)
        for name, values in _metric_values(ranks, valid, self.ks).items():
            self._values[name][rows] = values.numpy()
        self._done[rows] = True

    def result(self) -> EvalResult:
        missing = int((~self._done).sum())
        if missing:
            raise EvaluationError(f"{missing} of {len(self._done)} rows were never scored")
        return EvalResult(self.examples.user.copy(), dict(self._values), self.ks, self.exclude_seen)


def evaluate(
    examples: Examples,
    *,
    scores: torch.Tensor | np.ndarray | ScoreFn | None = None,
    ranked: torch.Tensor | np.ndarray | None = None,
    ks: Sequence[int] = (5, 10),
    exclude_seen: bool = False,
    num_items: int | None = None,
    batch_size: int = 1024,
    progress: bool | None = None,
) -> EvalResult:
    """Metrics for every row of ``examples``.

    ``scores`` is a full ``(rows, num_items)`` matrix or a function ``rows -> scores`` called
    batch by batch (so a model never materializes every user's scores at once); ``ranked`` is a
    ``(rows, K)`` matrix of item indices.
    """
    evaluator = Evaluator(examples, ks, exclude_seen, num_items)
    n = len(examples)
    starts = range(0, n, batch_size)
    show = len(starts) > 20 if progress is None else progress
    for start in tqdm(starts, desc="evaluating", disable=not show):
        rows = np.arange(start, min(start + batch_size, n))
        if ranked is not None:
            evaluator.update(rows, ranked=ranked[start : start + len(rows)])
        elif callable(scores):
            evaluator.update(rows, scores=scores(rows))
        elif scores is not None:
            evaluator.update(rows, scores=scores[start : start + len(rows)])
        else:
            raise EvaluationError("pass scores= or ranked=")
    return evaluator.result()
