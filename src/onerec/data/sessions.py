"""Sessions: grouping a user's interactions into visits, and the paper's session-quality filter.

OneRec trains on *high-quality sessions* (paper, section 2.3): at least 5 videos actually
watched, a total watch time above a threshold, and at least one positive interaction such as a
like, collect or share. The thresholds are the caller's: :class:`SessionQualityFilter` holds them
and every run saves it with its config. The signals it reads must be valid
(:mod:`onerec.data.signals`): a NaN or infinite watch time raises instead of being guessed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from onerec.data.report import FilterReport
from onerec.data.schema import InteractionLog
from onerec.data.signals import check_signals
from onerec.exceptions import ConfigError


def assign_sessions(log: InteractionLog, gap: float | None = None) -> InteractionLog:
    """A log whose ``session`` column groups each user's interactions into sessions.

    With ``gap=None`` the log's own session ids are kept (and required). With a gap (in the
    timestamp's unit, e.g. 1800 for half an hour of seconds), a user's next interaction starts a
    new session when it comes more than ``gap`` after the previous one; existing ids are replaced.
    """
    if gap is None:
        if log.session is None:
            raise ConfigError(
                "the log has no session ids; pass gap=<max seconds between interactions of one "
                "session> to group by time"
            )
        return log
    if gap < 0:
        raise ConfigError(f"session gap must be >= 0, got {gap}")
    log = log.sorted()
    n = len(log)
    new = np.ones(n, dtype=bool)
    if n > 1:
        same_user = log.user[1:] == log.user[:-1]
        close = (log.timestamp[1:] - log.timestamp[:-1]) <= gap
        new[1:] = ~(same_user & close)
    session = np.cumsum(new) - 1
    return InteractionLog(
        log.user, log.item, log.timestamp, log.users, log.items, log.signals, session
    )


@dataclass(frozen=True)
class SessionQualityFilter:
    """Keeps sessions with enough watched items, enough watch time and a positive interaction.

    An item counts as *watched* when ``watch_signal > min_item_watch``. Positive interactions
    are any of ``positive_signals`` that the log has, above zero; at least one signal named in
    ``positive_signals`` must exist when ``require_positive`` is set.
    """

    min_watched_items: int = 5
    min_total_watch: float = 0.0
    require_positive: bool = True
    watch_signal: str = "watch_time"
    min_item_watch: float = 0.0
    positive_signals: tuple[str, ...] = ("like", "follow", "share", "comment", "collect")

    def __post_init__(self) -> None:
        if self.min_watched_items < 0:
            raise ConfigError(f"min_watched_items must be >= 0, got {self.min_watched_items}")
        if self.min_total_watch < 0:
            raise ConfigError(f"min_total_watch must be >= 0, got {self.min_total_watch}")

    def to_dict(self) -> dict:
        return asdict(self)

    def apply(self, log: InteractionLog) -> tuple[InteractionLog, FilterReport]:
        """The log restricted to the sessions that pass, and what was removed."""
        if log.session is None:
            raise ConfigError(
                "the session filter needs sessions: call assign_sessions(log, gap=...) first"
            )
        if self.watch_signal not in log.signals:
            raise ConfigError(
                f"the log has no {self.watch_signal!r} signal (it has {sorted(log.signals)}); "
                "set watch_signal to the column that holds watch time"
            )
        present = [s for s in self.positive_signals if s in log.signals]
        if self.require_positive and not present:
            raise ConfigError(
                f"require_positive needs one of {list(self.positive_signals)} in the log, "
                f"which has {sorted(log.signals)}; set positive_signals or "
                "require_positive=False"
            )
        # NaN or inf would make a session's watch time unknowable: stop rather than guess
        read = [self.watch_signal] + (present if self.require_positive else [])
        check_signals(log, read)
        n_sessions = int(log.session.max(initial=-1)) + 1
        watch = log.signals[self.watch_signal].astype(np.float64)
        watched = np.bincount(
            log.session, weights=(watch > self.min_item_watch).astype(np.float64), minlength=n_sessions
        )
        total = np.bincount(log.session, weights=watch, minlength=n_sessions)
        keep = (watched >= self.min_watched_items) & (total >= self.min_total_watch)
        if self.require_positive:
            positive = np.zeros(len(log), dtype=bool)
            for s in present:
                positive |= log.signals[s].astype(np.float64) > 0
            keep &= np.bincount(log.session, weights=positive, minlength=n_sessions) > 0
        out = log.take(keep[log.session])
        detail = (
            f">= {self.min_watched_items} watched items, total {self.watch_signal} >= "
            f"{self.min_total_watch}" + (", a positive interaction" if self.require_positive else "")
        )
        return out, FilterReport.between("session quality", log, out, detail)
