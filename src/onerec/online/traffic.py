"""Who opens the feed on a simulated day, when, and what each user has watched so far.

A user opens ``Poisson(sessions_per_day * rate / mean rate)`` sessions a day (``rate``: the
simulator's activity level), at uniform times within the day; the draw depends on the seed and
the day alone, never on the arms, so arrivals are the same whatever the arms show. Times are on
the simulator's timeline in [0, 1]: the log holds its first 30 days, online day d (1-based) is
the span ``[(30 + d - 1) / (30 + D), (30 + d) / (30 + D))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onerec.data.schema import InteractionLog
from onerec.simulator import PolicyConfig, Simulator

_ARRIVALS = 21
LOGGED_DAYS = PolicyConfig().period_days  # the quickstart's log, before the online days


@dataclass(frozen=True)
class DayTraffic:
    """The sessions of one day in time order: their user, time and global session id."""

    day: int
    user: np.ndarray  # (S,) int64 user index
    time: np.ndarray  # (S,) float64 on the simulator's timeline
    session: np.ndarray  # (S,) int64, unique over the test

    def __len__(self) -> int:
        return len(self.user)

    def chunk(self, index: int, chunks: int) -> np.ndarray:
        """Rows of chunk ``index`` of ``chunks`` (consecutive in time, sizes differ by <= 1)."""
        bounds = np.linspace(0, len(self), chunks + 1).round().astype(np.int64)
        return np.arange(bounds[index], bounds[index + 1])


def day_span(sim: Simulator, day: int) -> tuple[float, float]:
    """The timeline span [start, end) of online day ``day`` (1-based)."""
    period = sim.config.policy.period_days
    return ((LOGGED_DAYS + day - 1) / period, (LOGGED_DAYS + day) / period)


def day_traffic(sim: Simulator, day: int, sessions_per_day: float, seed: int) -> DayTraffic:
    """The day's sessions (see the module doc); session ids are ``day * 10**7 + rank``."""
    rng = np.random.default_rng([seed, _ARRIVALS, day])
    rate = sim.users.session_rate
    counts = rng.poisson(sessions_per_day * rate / rate.mean())
    user = np.repeat(np.arange(len(rate), dtype=np.int64), counts)
    start, end = day_span(sim, day)
    time = start + rng.random(len(user)) * (end - start)
    order = np.argsort(time, kind="stable")
    session = day * 10**7 + np.arange(len(user), dtype=np.int64)
    return DayTraffic(day, user[order], time[order], session)


def watched_histories(log: InteractionLog, skip_column: str = "skip") -> list[list[int]]:
    """Every user's watched items (not skipped), oldest first, as item indices."""
    log = log.sorted()
    watched = log.take(log.signals[skip_column] == 0)
    bounds = np.searchsorted(watched.user, np.arange(log.num_users + 1))
    items = watched.item.tolist()
    return [items[bounds[u] : bounds[u + 1]] for u in range(log.num_users)]
