"""Full-ranking Recall@K and NDCG@K, vectorized over users, for scores or ranked lists.

The standard sequential-recommendation protocol (leave-one-out, S3-Rec and its successors) ranks
*all* items for each request, with no sampled negatives. Two kinds of prediction are accepted:

- a score matrix ``(rows, num_items)`` from a classic model: each target's rank is found by
  counting, not by sorting, so no top-K list is built. Ties are broken **against the target**
  (pessimistic): rank = #items scored strictly higher + #other items scored equal. A model that
  scores everything alike therefore gets no credit for the luck of a sort order. A target scored
  ``-inf`` is never a hit.
- ranked item lists ``(rows, K_max)`` of item indices from a generative model; ``-1`` pads a short
  list and is a miss that still takes its position. A target counts at its first position, so a
  duplicate later in the list cannot count twice. The lists need at least ``max(ks)`` entries.

With ``|T|`` distinct targets in a row (duplicates dropped, first kept) and 0-based rank ``r_t``:
``Recall@K = #{t : r_t < K} / |T|`` (equal to HR@K when ``|T| = 1``, leave-one-out) and
``NDCG@K = sum_{t : r_t < K} 1 / log2(r_t + 2) / IDCG@K``, where
``IDCG@K = sum_{i < min(K, |T|)} 1 / log2(i + 2)``.

``exclude_seen`` removes the items a user interacted with before the request
(:attr:`Examples.seen`) from candidacy: in a score matrix they are set to ``-inf``; from a ranked
list they are deleted, and the later entries move up (positions past the end are misses). As in
the S3-Rec code, a target the user had already seen can then never be hit; on datasets with
repeat consumption that lowers the numbers, which is why the setting is stored with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from onerec.data.examples import Examples
from onerec.data.ragged import Ragged
from onerec.exceptions import EvaluationError

ScoreFn = Callable[[np.ndarray], "torch.Tensor | np.ndarray"]

# at most this many (row, target, item) comparisons at once: bounds memory to ~64 MB of booleans
_CHUNK_ELEMENTS = 1 << 26


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """The cut-offs, sorted and deduplicated; each must be a positive int."""
    ok = isinstance(ks, (Sequence, np.ndarray)) and not isinstance(ks, str) and len(ks) > 0
    if not ok or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in ks):
        raise EvaluationError(f"ks must be a non-empty list of ints, got {ks!r}")
    if min(ks) <= 0:
        raise EvaluationError(f"every K must be positive, got {list(ks)}")
    return tuple(sorted({int(k) for k in ks}))


def _rows_text(rows: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:limit])
    return shown + (f", ... ({len(rows)} in all)" if len(rows) > limit else "")


def distinct_targets(targets: Ragged) -> Ragged:
    """Every row without repeated items, first occurrence kept, order kept (vectorized)."""
    rows = targets.row_ids
    order = np.lexsort((np.arange(len(rows)), targets.values, rows))  # by row, item, position
    v, r = targets.values[order], rows[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (v[1:] != v[:-1]) | (r[1:] != r[:-1])
    keep = np.zeros(len(order), dtype=bool)
    keep[order[first]] = True
    return Ragged.from_sorted_groups(rows[keep], targets.values[keep], len(targets))


def metrics_from_ranks(
    ranks: torch.Tensor, valid: torch.Tensor, ks: Sequence[int]
) -> dict[str, torch.Tensor]:
    """Per-row Recall@K and NDCG@K (float64) from 0-based target ranks ``(rows, T)``.

    ``valid`` marks real targets (the rest is padding); every row needs at least one.
    """
    ranks, valid = ranks.cpu(), valid.cpu()
    zero = torch.zeros((), dtype=torch.float64)
    n_targets = valid.sum(1)
    gains = torch.where(valid, 1.0 / torch.log2(ranks.double() + 2.0), zero)
    ideal = torch.cumsum(1.0 / torch.log2(torch.arange(max(ks), dtype=torch.float64) + 2.0), 0)
    out = {}
    for k in ks:
        hit = valid & (ranks < k)
        out[f"recall@{k}"] = hit.sum(1).double() / n_targets.double()
        idcg = ideal[n_targets.clamp(1, k) - 1]
        out[f"ndcg@{k}"] = torch.where(hit, gains, zero).sum(1) / idcg
    return out


def fill_seen(
    scores: torch.Tensor, seen: Ragged, value: float | bool = float("-inf")
) -> torch.Tensor:
    """``scores`` (rows, num_items) with each row's ``seen`` items (one Ragged row per score
    row) set to ``value``, in place; returns ``scores``."""
    rows = torch.from_numpy(seen.row_ids).to(scores.device)
    scores[rows, torch.from_numpy(seen.values.astype(np.int64)).to(scores.device)] = value
    return scores


def ranks_from_scores(
    scores: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, seen: Ragged | None = None
) -> torch.Tensor:
    """0-based rank ``(rows, T)`` of each target in each row of ``scores``.

    Ties are broken against the target: rank = #items with a score >= the target's, minus the
    target itself. ``seen`` (one row per score row) leaves items out: their scores become -inf.
    A target scored -inf (seen, or masked by the model) and padding get rank ``num_items``, a miss
    at every K. Runs on the device of ``scores``, ``rows * T * num_items / 2**26`` chunks.
    """
    if not scores.dtype.is_floating_point:
        scores = scores.double()  # ints: exact comparisons, and -inf must be representable
    rows, num_items = scores.shape
    if seen is not None and len(seen.values):
        scores = fill_seen(scores.clone(), seen)
    tgt = targets.clamp_min(0).to(scores.device)
    target_scores = scores.gather(1, tgt)  # (rows, T)
    ranks = torch.empty_like(tgt)
    step = max(1, _CHUNK_ELEMENTS // max(1, num_items * tgt.shape[1]))
    for s in range(0, rows, step):
        ge = scores[s : s + step].unsqueeze(1) >= target_scores[s : s + step].unsqueeze(2)
        ranks[s : s + step] = ge.sum(-1) - 1  # (b, T)
    miss = torch.isneginf(target_scores) | ~valid.to(scores.device)
    return torch.where(miss, torch.full_like(ranks, num_items), ranks).cpu()


def ranks_from_lists(
    ranked: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, seen: Ragged | None = None
) -> torch.Tensor:
    """0-based first position ``(rows, T)`` of each target in each ranked list; ``K_max`` (past
    the end, a miss) when absent. ``seen`` items are deleted first and later entries move up."""
    ranked = ranked.long().cpu()
    targets, valid = targets.cpu(), valid.cpu()
    rows, width = ranked.shape
    if seen is not None and len(seen.values):
        seen_t = torch.from_numpy(seen.to_padded(pad=-2))  # -2 never equals an item or padding
        is_seen = torch.zeros_like(ranked, dtype=torch.bool)
        step = max(1, _CHUNK_ELEMENTS // max(1, width * seen_t.shape[1]))
        for s in range(0, rows, step):
            eq = ranked[s : s + step].unsqueeze(2) == seen_t[s : s + step].unsqueeze(1)
            is_seen[s : s + step] = eq.any(-1)
        keep = ~is_seen & (ranked >= 0)
        # a stable sort of "not kept" flags moves kept entries to the front in their order
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        ranked = torch.where(keep.gather(1, order), ranked.gather(1, order), -1)
    ranks = torch.empty_like(targets)
    step = max(1, _CHUNK_ELEMENTS // max(1, width * targets.shape[1]))
    for s in range(0, rows, step):
        r = ranked[s : s + step]
        match = (r.unsqueeze(1) == targets[s : s + step].unsqueeze(2)) & (r >= 0).unsqueeze(1)
        first = match.to(torch.int8).argmax(-1)  # argmax returns the first maximum
        ranks[s : s + step] = torch.where(match.any(-1), first, width)
    return torch.where(valid, ranks, width)


@dataclass
class EvalResult:
    """Per-row metric values, with the settings they were computed under.

    ``users[i]`` is the user of row ``i``; ``per_user["ndcg@10"][i]`` its NDCG@10 (float64).
    ``settings`` holds anything else worth keeping with the numbers (saved with them).
    """

    users: np.ndarray
    per_user: dict[str, np.ndarray]
    ks: tuple[int, ...]
    exclude_seen: bool
    settings: dict[str, Any] = field(default_factory=dict)

    def means(self) -> dict[str, float]:
        """The mean of every metric over rows (the number a paper reports)."""
        return {
            name: float(values.mean()) if len(values) else float("nan")
            for name, values in self.per_user.items()
        }

    def standard_errors(self) -> dict[str, float]:
        """The standard error of every mean (sample std / sqrt(rows)): how far a mean could move
        on another draw of users, the yardstick for a gap between two reported numbers."""
        return {
            name: float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1
            else float("nan")
            for name, values in self.per_user.items()
        }  # fmt: skip

    def summary(self, names: Sequence[str]) -> dict[str, float]:
        """The means of ``names`` and, under ``<name>_se``, their standard errors: what a
        benchmark record keeps."""
        means, errors = self.means(), self.standard_errors()
        return {**{k: means[k] for k in names}, **{f"{k}_se": errors[k] for k in names}}

    def __str__(self) -> str:
        return " ".join(f"{name}={value:.4f}" for name, value in self.means().items())

    def save(self, path: str | Path) -> None:
        """Parquet: a ``user`` column, one column per metric, settings as JSON in the metadata."""
        table = pa.table({"user": np.asarray(self.users, dtype=np.int64), **self.per_user})
        meta = {"ks": list(self.ks), "exclude_seen": self.exclude_seen, **self.settings}
        pq.write_table(table.replace_schema_metadata({"onerec": json.dumps(meta)}), path)

    @classmethod
    def load(cls, path: str | Path) -> "EvalResult":
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {}).get(b"onerec", b"{}"))
        per_user = {
            c: table.column(c).to_numpy().astype(np.float64)
            for c in table.column_names
            if c != "user"
        }
        ks = tuple(int(k) for k in meta.pop("ks", ()))
        exclude_seen = bool(meta.pop("exclude_seen", False))
        users = table.column("user").to_numpy().astype(np.int64)
        return cls(users, per_user, ks, exclude_seen, meta)


class Evaluator:
    """Accumulates metrics over batches of rows of an :class:`Examples` set.

    Call ``update(rows, scores=...)`` or ``update(rows, ranked=...)`` once per batch, rows in any
    order, then ``result()`` once every row has been scored exactly once; a row skipped or scored
    twice is an error rather than a silently biased mean.
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
        self.exclude_seen = bool(exclude_seen)
        self.num_items = num_items
        empty = np.flatnonzero(examples.target.lengths == 0)
        if len(empty):
            raise EvaluationError(
                f"rows without a target item: {_rows_text(empty)}; every evaluation row needs at "
                "least one (drop those rows from the examples)"
            )
        targets = distinct_targets(examples.target)
        if len(targets.values) and targets.values.min() < 0:
            raise EvaluationError(f"target item {int(targets.values.min())} is negative")
        self._max_item = int(targets.values.max(initial=-1))
        if exclude_seen:
            self._max_item = max(self._max_item, int(examples.seen.values.max(initial=-1)))
        if num_items is not None and self._max_item >= num_items:
            raise EvaluationError(
                f"the examples reference item {self._max_item} but num_items={num_items}"
            )
        self._targets = targets
        names = [f"{m}@{k}" for k in self.ks for m in ("recall", "ndcg")]
        self._values = {name: np.full(len(examples), np.nan) for name in names}
        self._done = np.zeros(len(examples), dtype=bool)

    def update(
        self,
        rows: np.ndarray | Sequence[int],
        *,
        scores: torch.Tensor | np.ndarray | None = None,
        ranked: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Score the examples ``rows`` (indices into the examples) with ``scores`` of shape
        ``(len(rows), num_items)`` or ``ranked`` lists of shape ``(len(rows), >= max(ks))``."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        n = len(self.examples)
        if (scores is None) == (ranked is None):
            raise EvaluationError("pass exactly one of scores= or ranked=")
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise EvaluationError(
                f"row indices must be in [0, {n}), got {rows.min()}..{rows.max()}"
            )
        uniq, counts = np.unique(rows, return_counts=True)
        again = np.union1d(uniq[counts > 1], rows[self._done[rows]])
        if len(again):
            raise EvaluationError(
                f"rows scored twice: {_rows_text(again)}; give each row to update() once"
            )
        target_rows = self._targets.take(rows)
        targets = torch.from_numpy(target_rows.to_padded(pad=-1))
        valid = targets >= 0
        seen = self.examples.seen.take(rows) if self.exclude_seen else None
        if scores is not None:
            ranks = ranks_from_scores(self._check_scores(scores, len(rows)), targets, valid, seen)
        else:
            ranks = ranks_from_lists(self._check_ranked(ranked, len(rows)), targets, valid, seen)
        for name, values in metrics_from_ranks(ranks, valid, self.ks).items():
            self._values[name][rows] = values.numpy()
        self._done[rows] = True

    def _check_scores(self, scores: torch.Tensor | np.ndarray, n_rows: int) -> torch.Tensor:
        s = torch.as_tensor(scores)
        if s.ndim != 2 or s.shape[0] != n_rows:
            raise EvaluationError(
                f"scores must be (rows, num_items) with {n_rows} rows, got shape {tuple(s.shape)}"
            )
        if self.num_items is not None and s.shape[1] != self.num_items:
            raise EvaluationError(
                f"scores have {s.shape[1]} columns, expected num_items={self.num_items}"
            )
        if self._max_item >= s.shape[1]:
            raise EvaluationError(
                f"item index {self._max_item} is out of range for {s.shape[1]} score columns"
            )
        if s.dtype.is_floating_point and bool(torch.isnan(s).any()):
            bad = torch.isnan(s).any(1).nonzero().flatten().cpu().numpy()
            raise EvaluationError(
                f"scores contain NaN in batch rows {_rows_text(bad)}; a model must score every item"
            )
        return s

    def _check_ranked(self, ranked: torch.Tensor | np.ndarray, n_rows: int) -> torch.Tensor:
        r = torch.as_tensor(ranked)
        if r.ndim != 2 or r.shape[0] != n_rows:
            raise EvaluationError(
                f"ranked must be (rows, K) with {n_rows} rows, got shape {tuple(r.shape)}"
            )
        if r.dtype.is_floating_point or r.dtype == torch.bool:
            raise EvaluationError(f"ranked lists must hold integer item indices, got {r.dtype}")
        if r.shape[1] < max(self.ks):
            raise EvaluationError(
                f"ranked lists have {r.shape[1]} entries but metrics go up to K={max(self.ks)}; "
                "pad short lists with -1"
            )
        if r.numel() and int(r.min()) < -1:
            raise EvaluationError(
                f"ranked lists hold {int(r.min())}; only item indices and -1 (padding) are allowed"
            )
        if self.num_items is not None and r.numel() and int(r.max()) >= self.num_items:
            raise EvaluationError(
                f"ranked lists hold item {int(r.max())}, "
                f"out of range for num_items={self.num_items}"
            )
        return r

    @property
    def missing(self) -> int:
        """How many rows have not been scored yet."""
        return int((~self._done).sum())

    def result(self) -> EvalResult:
        """The per-row metrics; every row must have been scored."""
        if self.missing:
            first = np.flatnonzero(~self._done)
            raise EvaluationError(
                f"{self.missing} of {len(self._done)} rows were never scored "
                f"(rows {_rows_text(first)})"
            )
        values = {name: v.copy() for name, v in self._values.items()}
        return EvalResult(self.examples.user.copy(), values, self.ks, self.exclude_seen)


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
    """Metrics for every row of ``examples``, computed ``batch_size`` rows at a time.

    ``scores`` is a full ``(rows, num_items)`` matrix, or a function ``f(rows) -> scores`` called
    batch by batch with an int64 array of row indices (so a model never materializes every
    user's scores at once); ``ranked`` is a ``(rows, K)`` matrix of item indices. A progress bar
    shows when there are more than 20 batches, or as ``progress`` says.
    """
    if (scores is None) == (ranked is None):
        raise EvaluationError("pass exactly one of scores= or ranked=")
    if batch_size <= 0:
        raise EvaluationError(f"batch_size must be positive, got {batch_size}")
    evaluator = Evaluator(examples, ks, exclude_seen, num_items)
    n = len(examples)
    matrix = ranked if ranked is not None else None if callable(scores) else scores
    if matrix is not None and len(matrix) != n:
        kind = "ranked" if ranked is not None else "scores"
        raise EvaluationError(f"{kind} has {len(matrix)} rows but there are {n} examples (rows)")
    starts = range(0, n, batch_size)
    show = len(starts) > 20 if progress is None else progress
    for start in tqdm(starts, desc="evaluating", unit="batch", disable=not show):
        rows = np.arange(start, min(start + batch_size, n), dtype=np.int64)
        if ranked is not None:
            evaluator.update(rows, ranked=ranked[start : start + len(rows)])
        elif callable(scores):
            evaluator.update(rows, scores=scores(rows))
        else:
            evaluator.update(rows, scores=scores[start : start + len(rows)])
    return evaluator.result()


def exclude_seen_selected(
    results: Mapping[str, Mapping[str, float]], metric: str = "recall@10"
) -> bool:
    """Whether validation selects ranking with already-seen items excluded.

    ``results`` holds the ``valid`` and ``valid_exclude_seen`` metrics of one model (the
    benchmarks' ``split_metrics`` records). Excluding seen items is a serving choice, not a
    property of the protocol: on a catalog where users never return to an item (Beauty) it can
    only help, on one with repeat visits (Yelp) it hides correct answers. Deciding it on
    validation ``metric`` keeps the test set out of the choice; ties keep seen items."""
    if "valid" not in results or "valid_exclude_seen" not in results:
        raise EvaluationError(
            f"results need 'valid' and 'valid_exclude_seen' metrics (as split_metrics returns), "
            f"got {sorted(results)}"
        )
    return results["valid_exclude_seen"][metric] > results["valid"][metric]
