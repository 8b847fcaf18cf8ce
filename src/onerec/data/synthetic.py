"""A fast synthetic interaction log with sessions and feedback signals.

It exists for smoke runs (``make quickstart`` until the simulator lands), tests and the data
pipeline benchmark: it is *not* a model of real users (the simulator with a ground-truth
response model is a separate stage). Users draw items from a few latent interest clusters with
Zipf-like popularity, in sessions of 5 to 10 items; watch time depends on whether an item matches
the user's main interest. Everything is vectorized: 10 million rows take a few seconds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from onerec.data.schema import Dataset, FeatureTable, IdMap, InteractionLog
from onerec.exceptions import ConfigError


@dataclass(frozen=True)
class SyntheticConfig:
    num_users: int = 2_000
    num_items: int = 1_000
    mean_interactions: float = 30.0
    num_clusters: int = 20
    interests_per_user: int = 3
    explore_rate: float = 0.1
    min_session: int = 5
    max_session: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_users", "num_items", "num_clusters", "interests_per_user", "min_session"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_clusters > self.num_items:
            raise ConfigError(f"num_clusters ({self.num_clusters}) exceeds num_items ({self.num_items})")
        if self.mean_interactions < 3:
            raise ConfigError(f"mean_interactions must be >= 3, got {self.mean_interactions}")
        if not 0 <= self.explore_rate <= 1:
            raise ConfigError(f"explore_rate must be in [0, 1], got {self.explore_rate}")
        if self.max_session < self.min_session:
            raise ConfigError("max_session must be >= min_session")


def _sample_by_weight(
    rng: np.random.Generator, cum: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """For each row, an index ``j`` in ``[lo, hi)`` drawn with probability proportional to the
    weight whose running sum is ``cum`` (``cum[j]`` = sum of weights up to and including j)."""
    base = np.where(lo > 0, cum[np.maximum(lo - 1, 0)], 0.0)
    target = base + rng.random(len(lo)) * (cum[hi - 1] - base)
    return np.minimum(np.searchsorted(cum, target, side="right"), hi - 1)


def generate(config: SyntheticConfig = SyntheticConfig()) -> Dataset:
    """A :class:`Dataset` with ``watch_time``, ``duration`` and ``like`` signals and sessions."""
    c = config
    rng = np.random.default_rng(c.seed)

    # items: a cluster each, Zipf-like popularity, a duration in seconds
    item_cluster = rng.integers(c.num_clusters, size=c.num_items)
    popularity = 1.0 / np.arange(1, c.num_items + 1) ** 0.8
    popularity = popularity[rng.permutation(c.num_items)]
    duration = np.clip(rng.lognormal(np.log(30.0), 0.6, c.num_items), 3.0, 600.0)
    by_cluster = np.argsort(item_cluster, kind="stable")
    cluster_start = np.searchsorted(item_cluster[by_cluster], np.arange(c.num_clusters + 1))
    cum_in_cluster = np.cumsum(popularity[by_cluster])
    cum_global = np.cumsum(popularity)

    # users: interests and an activity level (interaction count, at least one full session)
    interests = rng.integers(c.num_clusters, size=(c.num_users, c.interests_per_user))
    counts = np.maximum(
        rng.geometric(1.0 / (c.mean_interactions - c.min_session + 1), c.num_users)
        + c.min_session
        - 1,
        c.min_session,
    ).astype(np.int64)
    user = np.repeat(np.arange(c.num_users, dtype=np.int64), counts)
    n = len(user)

    # items: mostly from one of the user's interests (the first is the main one), some exploration
    choice = np.minimum(rng.geometric(0.6, n) - 1, c.interests_per_user - 1)
    cluster = interests[user, choice]
    in_cluster = _sample_by_weight(rng, cum_in_cluster, cluster_start[cluster], cluster_start[cluster + 1])
    item = by_cluster[in_cluster]
    explore = rng.random(n) < c.explore_rate
    item[explore] = _sample_by_weight(
        rng, cum_global, np.zeros(explore.sum(), dtype=np.int64), np.full(explore.sum(), c.num_items)
    )

    # sessions of min..max items (a user's last session may be cut short by the end of the
    # user's rows); within a session ~40 s apart, between sessions hours apart
    user_start = np.repeat(np.cumsum(counts) - counts, counts)
    lengths = rng.integers(c.min_session, c.max_session + 1, size=n // c.min_session + 1)
    bounds = np.cumsum(lengths)
    new_session = np.zeros(n, dtype=bool)
    new_session[bounds[bounds < n]] = True
    new_session[user_start == np.arange(n)] = True
    session = np.cumsum(new_session) - 1
    gap = np.where(new_session, rng.exponential(6 * 3600.0, n), rng.exponential(40.0, n))
    start_time = rng.integers(1_600_000_000, 1_600_000_000 + 30 * 86400, size=c.num_users)
    t = np.cumsum(gap)
    t -= np.repeat(t[np.cumsum(counts) - counts], counts)
    timestamp = (start_time[user] + t).astype(np.int64)

    # feedback: affinity 1 for the main interest, 0.5 for others, 0.2 outside them
    match = (interests[user] == item_cluster[item][:, None]).astype(np.float64)
    affinity = np.maximum(match[:, 0], 0.5 * match[:, 1:].max(axis=1, initial=0.0))
    affinity = np.maximum(affinity, 0.2)
    ratio = rng.beta(1.0 + 4.0 * affinity, 2.0, n)
    watch_time = (duration[item] * ratio).astype(np.float32)
    like = (rng.random(n) < 0.01 + 0.08 * affinity * ratio).astype(np.int8)

    users = IdMap(np.arange(c.num_users, dtype=np.int64), "user")
    items = IdMap(np.arange(c.num_items, dtype=np.int64), "item")
    log = InteractionLog(
        user,
        item.astype(np.int64),
        timestamp,
        users,
        items,
        {"watch_time": watch_time, "duration": duration[item].astype(np.float32), "like": like},
        session.astype(np.int64),
    )
    item_table = (
        FeatureTable.from_ids(items)
        .with_column("cluster", item_cluster)
        .with_column("duration", duration.astype(np.float32))
    )
    return Dataset(
        "synthetic", log, item_table, FeatureTable.from_ids(users), {"synthetic": asdict(c)}
    )
