"""Logged sessions with their realised feedback: what the reward model learns from.

A row is one logged session: its user, the user's *watched* items before the session (the
history the RM's target attention reads, most recent last) and the first ``session_items``
items the session showed, with each item's realised signals. Truncating a session to its first
m items keeps its signals exact: a response at position j depends only on the items before j,
and generated sessions (what the RM scores during alignment) have m items.

Signals read from the log (columns of ``InteractionLog.signals``): ``watch_time`` (seconds),
``view_through``, ``follow``, ``like`` (0/1), plus the log's session ids. ``skip`` (0/1), when
present, decides which items count as watched history; without it every exposure does. Any log
the data layer reads can be used when it has these columns (rename them with
``ColumnMapping(signals={...})``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onerec.data.ragged import Ragged
from onerec.data.schema import InteractionLog
from onerec.exceptions import MissingSignalError

# the RM's four outputs and the log column each one is learned from
SIGNALS: tuple[str, ...] = ("swt", "vtr", "wtr", "ltr")
LOG_COLUMNS: dict[str, str] = {
    "swt": "watch_time", "vtr": "view_through", "wtr": "follow", "ltr": "like",
}  # fmt: skip


@dataclass(frozen=True)
class LoggedSessions:
    """Sessions ``(S, m)`` (-1 pads short sessions at the end) with per-item signals
    ``(S, m, 4)`` in :data:`SIGNALS` order (zero on padding)."""

    user: np.ndarray  # (S,) user index
    history: Ragged  # (S rows) watched items before the session, oldest first
    items: np.ndarray  # (S, m) int64
    signals: np.ndarray  # (S, m, 4) float64

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> "LoggedSessions":
        rows = np.asarray(rows, dtype=np.int64)
        return LoggedSessions(self.user[rows], self.history.take(rows), self.items[rows],
                              self.signals[rows])  # fmt: skip

    @property
    def lengths(self) -> np.ndarray:
        return (self.items >= 0).sum(1)

    def targets(self) -> np.ndarray:
        """``(S, 4)`` session values as the oracle defines them: swt = summed watch time
        (seconds); vtr, wtr, ltr = the share of the session's items viewed through, followed,
        liked."""
        total = self.signals.sum(1)
        out = total / self.lengths[:, None]
        out[:, 0] = total[:, 0]
        return out


def logged_sessions(
    log: InteractionLog, session_items: int = 5, history_length: int = 20
) -> LoggedSessions:
    """Every session of ``log`` as a :class:`LoggedSessions` row (see the module doc).

    Raises :class:`MissingSignalError` when the log has no session ids or lacks a signal column.
    """
    missing = [c for c in LOG_COLUMNS.values() if c not in log.signals]
    if missing or log.session is None:
        what = missing + ([] if log.session is not None else ["session"])
        raise MissingSignalError(
            f"a reward model learns from sessions with watch_time (seconds), view_through, "
            f"follow and like per exposure; this log lacks {what} (it has signals "
            f"{sorted(log.signals)}, session ids: {log.session is not None})",
            hint="read the log with a session column and map its feedback columns onto these "
            "names, e.g. ColumnMapping(session='session_id', signals={'is_like': 'like', ...}); "
            "the simulator's logs (Simulator.generate_log) have them all",
        )
    n = len(log)
    row = np.arange(n)
    session = np.asarray(log.session, dtype=np.int64)
    # sessions in (user, start time) order, items in time order within each
    _, inverse = np.unique(session, return_inverse=True)
    start = np.full(inverse.max(initial=-1) + 1, np.iinfo(np.int64).max)
    np.minimum.at(start, inverse, log.timestamp)
    order = np.lexsort((row, log.timestamp, inverse, start[inverse], log.user))
    user, item, sess = log.user[order], log.item[order], inverse[order]
    first = np.r_[True, sess[1:] != sess[:-1]]
    session_row = np.cumsum(first) - 1  # sorted session number of every exposure
    position = row - np.flatnonzero(first)[session_row]
    heads = np.flatnonzero(first)

    watched = log.signals["skip"][order] == 0 if "skip" in log.signals else np.ones(n, bool)
    watched_rows = np.flatnonzero(watched)
    user_first = np.r_[True, user[1:] != user[:-1]]
    user_head = np.flatnonzero(user_first)[np.cumsum(user_first) - 1]  # user's first sorted row
    end = np.searchsorted(watched_rows, heads)  # watched exposures before the session
    begin = np.maximum(np.searchsorted(watched_rows, user_head[heads]), end - history_length)
    history = Ragged.from_lengths(item[watched_rows], np.r_[len(watched_rows)]).slices(
        begin, end - begin
    )

    keep = position < session_items
    s = len(heads)
    items = np.full((s, session_items), -1, dtype=np.int64)
    items[session_row[keep], position[keep]] = item[keep]
    signals = np.zeros((s, session_items, len(SIGNALS)))
    for k, name in enumerate(SIGNALS):
        values = np.asarray(log.signals[LOG_COLUMNS[name]], dtype=np.float64)[order]
        if np.isnan(values).any():
            raise MissingSignalError(
                f"column {LOG_COLUMNS[name]!r} is empty in {int(np.isnan(values).sum())} of "
                f"{n} rows (first at sorted row {int(np.flatnonzero(np.isnan(values))[0])})",
                hint="fill or drop the rows without feedback before training a reward model",
            )
        signals[session_row[keep], position[keep], k] = values[keep]
    return LoggedSessions(user[heads].astype(np.int64), history, items, signals)
