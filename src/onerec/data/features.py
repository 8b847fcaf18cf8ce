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
    user = log.user[order]
    ts = log.timestamp[order].astype(np.float64)
    gap = np.zeros(len(log), dtype=np.float64)
    if len(log) > 1:
        same = user[1:] == user[:-1]
        gap[1:] = np.where(same, np.maximum(ts[1:] - ts[:-1], 0.0), 0.0)
    out = np.empty(len(log), dtype=np.float64)
    out[order] = np.log1p(gap)
    return out


def _signal(log: InteractionLog, name: str) -> np.ndarray:
    """Signal ``name`` as ``sign(x) * log1p(|x|)``."""
    values = np.asarray(log.signals[name], dtype=np.float64)
    if not np.isfinite(values).all():
        raise DataError(
            f"signal {name!r} holds NaN or infinite values, which a side feature cannot carry",
            hint=f"fill or drop those rows, or leave {name!r} out of the features.",
        )
    return np.sign(values) * np.log1p(np.abs(values))
