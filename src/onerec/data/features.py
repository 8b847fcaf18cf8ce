"""Per-interaction side features: numbers about each history item beyond its identity.

The model's encoder adds a projection of these to every history item's tokens
(``OneRecConfig.history_features``), so it can tell a video watched to the end yesterday from one
skipped a second ago. Features of an interaction describe that interaction (when it happened,
how the user responded); a target never sees its own, because the encoder lets a target attend
only to the items before it.

Names:

- ``"time_gap"``: ``log1p`` of the time since the same user's previous interaction, in the log's
  timestamp unit (0 for a user's first interaction): recency and session boundaries (a long gap
  starts a new visit) in one number whose scale does not explode on months-long gaps.
- any key of ``log.signals`` (the simulator's ``watch_time``, ``like``, ``follow``, ...) as
  ``sign(x) * log1p(|x|)``: heavy tails (durations, counts) land in a range a linear projection
  can use, flags stay two distinct values (0 and log 2), signs are kept. The transform depends
  on the value alone, never on the rows it is computed over, so training windows, validation and
  test examples and a served request scale the same value the same way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from onerec.data.schema import InteractionLog
from onerec.exceptions import DataError, UnknownFeatureError

TIME_GAP = "time_gap"


def available_features(log: InteractionLog) -> list[str]:
    """Every feature name ``log`` can give: ``time_gap`` and its signals."""
    return [TIME_GAP, *sorted(log.signals)]


def interaction_features(log: InteractionLog, names: Sequence[str]) -> np.ndarray:
    """Features ``(len(log), len(names))`` float32 of every row of ``log``, in its row order
    (callers pass ``log.sorted()``, the order of ``Examples`` and training sequences); column j
    is feature ``names[j]`` (see the module docstring). Raises :class:`UnknownFeatureError` for
    a name the log cannot give."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n != TIME_GAP and n not in log.signals]
    if unknown:
        raise UnknownFeatureError(
            f"unknown side feature(s) {unknown}; this log offers {available_features(log)}. "
            f"Fix: choose among those names (signals are the log's columns beyond user, item "
            f"and timestamp), e.g. features=('{TIME_GAP}',)."
        )
    out = np.zeros((len(log), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        out[:, j] = _time_gap(log) if name == TIME_GAP else _signal(log, name)
    return out


def _time_gap(log: InteractionLog) -> np.ndarray:
    """``log1p`` of the time since the user's previous row (0 on a user's first row)."""
    order = log.time_order()  # any row order works; ties keep row order (gap 0)
    out = np.empty(len(log), dtype=np.float64)
    out[order] = _gaps(log.user[order], log.timestamp[order])
    return out


def _gaps(user: np.ndarray, timestamp: np.ndarray) -> np.ndarray:
    """``log1p`` of the gap to the previous row of the same user, rows in time order per user."""
    ts = np.asarray(timestamp, dtype=np.float64)
    gap = np.zeros(len(ts), dtype=np.float64)
    if len(ts) > 1:
        same = user[1:] == user[:-1]
        gap[1:] = np.where(same, np.maximum(ts[1:] - ts[:-1], 0.0), 0.0)
    return np.log1p(gap)


def _signal(log: InteractionLog, name: str) -> np.ndarray:
    """Signal ``name`` as ``sign(x) * log1p(|x|)``."""
    return _signed_log(log.signals[name], name)


def _signed_log(raw: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(raw, dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError(
            f"signal {name!r} holds NaN or infinite values, which a side feature cannot carry",
            hint=f"fill or drop those rows, or leave {name!r} out of the features.",
        )
    return np.sign(values) * np.log1p(np.abs(values))


def history_features(
    names: Sequence[str],
    n_items: int,
    timestamps: Sequence[float] | np.ndarray | None = None,
    signals: dict[str, Sequence[float]] | None = None,
) -> np.ndarray:
    """Features ``(n_items, len(names))`` float32 of one request's history (oldest first) from
    raw values, transformed exactly as :func:`interaction_features` transforms a log: what a
    served request passes to ``Recommender.recommend(features=...)``.

    ``timestamps`` (needed for ``time_gap``) and every ``signals[name]`` hold one value per
    history item. The first item's ``time_gap`` is 0, as for a user's first logged row: the
    request does not say what came before it. Raises :class:`DataError` for a missing or
    mis-sized column and :class:`UnknownFeatureError` for an unknown name."""
    signals = dict(signals or {})
    unused = sorted(set(signals) - set(names))
    if unused:
        raise UnknownFeatureError(
            f"signal(s) {unused} given, but the model reads only {list(names)}. Fix: leave "
            f"them out, or train a model with those features."
        )
    out = np.zeros((n_items, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        if name == TIME_GAP:
            column, what, option = timestamps, "timestamps", "--timestamps T,T,..."
        else:
            column, what, option = signals.get(name), f"{name!r} values", f"--signal {name}=V,..."
        if column is None:
            raise DataError(
                f"the model reads side feature {name!r} of every history item, but the request "
                f"carries no {what}",
                hint=f"pass one per history item, oldest first (onerec recommend {option}).",
            )
        if len(column) != n_items:
            raise DataError(
                f"{what} holds {len(column)} entries for {n_items} history items",
                hint="pass exactly one value per history item, oldest first.",
            )
        if name == TIME_GAP:
            out[:, j] = _gaps(np.zeros(n_items, dtype=np.int64), np.asarray(column))
        else:
            out[:, j] = _signed_log(column, name)
    return out
