"""The logging policy: which sessions happened, and which videos each one showed.

A production feed mixes sources; this one draws each slot from the popular videos, from one of
the user's current interests (a popular video of that interest's tag, so the policy knows the
user's drifting interests but not their exact factors), or uniformly from the catalog. Sessions
hold ``min_session..max_session`` videos without repeats (a repeat is redrawn uniformly).
Everything is vectorized over sessions.
"""

from __future__ import annotations

import numpy as np

from onerec.simulator.catalog import Catalog
from onerec.simulator.config import PolicyConfig
from onerec.simulator.users import Users


def _sample_by_weight(
    rng: np.random.Generator, cum: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Per entry, an index j in [lo, hi) drawn proportionally to the weights whose running
    sum is ``cum``."""
    base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    target = base + rng.random(lo.shape) * (cum[hi - 1] - base)
    return np.clip(np.searchsorted(cum, target, side="right"), lo, hi - 1)


class LoggingPolicy:
    """Plans sessions (who, when, how long) and fills them with videos."""

    def __init__(self, config: PolicyConfig, catalog: Catalog, users: Users) -> None:
        self.config = config
        self.catalog = catalog
        self.users = users
        self.by_tag = np.argsort(catalog.main_tag, kind="stable")
        self.tag_start = np.searchsorted(
            catalog.main_tag[self.by_tag], np.arange(catalog.num_tags + 1)
        )
        self.cum_in_tag = np.cumsum(catalog.popularity[self.by_tag])
        self.cum_global = np.cumsum(catalog.popularity)

    def plan(self, mean_sessions: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Every session of the log: its user and its time in [0, 1), user-major, time-sorted.

        A user opens 1 + Poisson(lambda * session_rate) sessions, lambda set so that the mean is
        ``mean_sessions``.
        """
        rate = self.users.session_rate
        lam = (mean_sessions - 1.0) / max(rate.mean(), 1e-12)
        counts = 1 + rng.poisson(lam * rate)
        user = np.repeat(np.arange(len(rate), dtype=np.int64), counts)
        time = rng.random(len(user))
        order = np.lexsort((time, user))
        return user[order], time[order]

    def pilot(self, num_exposures: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sessions drawn as the log would hold them (users by activity, any time), about
        ``num_exposures`` videos in all, to solve intercepts and reward references on."""
        rate = self.users.session_rate
        mean_len = 0.5 * (self.config.min_session + self.config.max_session)
        n = max(1, int(np.ceil(num_exposures / mean_len)))
        user = rng.choice(len(rate), size=n, p=rate / rate.sum()).astype(np.int64)
        return user, rng.random(n)

    def fill(self, user: np.ndarray, time: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Items (S, max_session) of each session, -1 after its length."""
        c, cat = self.config, self.catalog
        s, width = len(user), c.max_session
        shape = (s, width)
        source = rng.random(shape)
        items = rng.integers(cat.num_items, size=shape)  # explore

        popular = source < c.popularity
        n_pop = int(popular.sum())
        items[popular] = _sample_by_weight(
            rng, self.cum_global, np.zeros(n_pop, dtype=np.int64), np.full(n_pop, cat.num_items)
        )

        by_interest = (source >= c.popularity) & (source < c.popularity + c.interest)
        rows, cols = np.nonzero(by_interest)
        weights = self.users.weights_at(user[rows], time[rows])
        pick = (rng.random(len(rows))[:, None] > np.cumsum(weights, axis=1)).sum(1)
        pick = np.minimum(pick, weights.shape[1] - 1)
        tag = self.users.home_tags[user[rows], pick]
        lo, hi = self.tag_start[tag], self.tag_start[tag + 1]
        in_tag = _sample_by_weight(rng, self.cum_in_tag, lo, hi)
        items[rows, cols] = self.by_tag[in_tag]

        items = self._redraw_repeats(items, rng)
        length = rng.integers(c.min_session, c.max_session + 1, size=s)
        items[np.arange(width)[None, :] >= length[:, None]] = -1
        return items

    def _redraw_repeats(
        self, items: np.ndarray, rng: np.random.Generator, rounds: int = 3
    ) -> np.ndarray:
        earlier = np.tri(items.shape[1], items.shape[1], -1, dtype=bool)[None]
        for _ in range(rounds):
            repeat = ((items[:, :, None] == items[:, None, :]) & earlier).any(-1)
            if not repeat.any():
                break
            items[repeat] = rng.integers(self.catalog.num_items, size=int(repeat.sum()))
        return items
