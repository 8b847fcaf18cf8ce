"""Simulated users: several latent interests with weights that drift, a bias, an activity level.

Each interest sits near one tag's direction (distinct tags per user, popular tags more often).
Interest weights move linearly from a start draw to an end draw over the logged period, so the
user's state at any time in [0, 1] is known exactly; activity levels follow KuaiRand-Pure's
``user_active_degree`` shares and set how many sessions a user opens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onerec.data.schema import FeatureTable, IdMap
from onerec.simulator.calibration import ACTIVITY_LEVELS
from onerec.simulator.catalog import Catalog, unit_rows
from onerec.simulator.config import UserConfig

LEVEL_NAMES: tuple[str, ...] = tuple(ACTIVITY_LEVELS)


@dataclass(frozen=True)
class Users:
    """Per-user arrays, indexed by user ``0..num_users-1``."""

    interests: np.ndarray  # (U, M, latent_dim) float64 unit vectors
    home_tags: np.ndarray  # (U, M) int64, the tag each interest sits on
    weights_start: np.ndarray  # (U, M) interest weights at time 0 (rows sum to 1)
    weights_end: np.ndarray  # (U, M) interest weights at time 1 (rows sum to 1)
    bias: np.ndarray  # (U,) float64 engagement offset
    activity_level: np.ndarray  # (U,) int64 index into LEVEL_NAMES
    session_rate: np.ndarray  # (U,) float64 relative rate of opening the feed

    @property
    def num_users(self) -> int:
        return len(self.bias)

    def weights_at(self, users: np.ndarray, time: np.ndarray | float) -> np.ndarray:
        """Interest weights (B, M) of ``users`` at ``time`` in [0, 1] (scalar or (B,))."""
        t = np.broadcast_to(np.asarray(time, dtype=np.float64), users.shape)[:, None]
        return (1.0 - t) * self.weights_start[users] + t * self.weights_end[users]

    def feature_table(self) -> FeatureTable:
        """The user table of a simulated dataset: the activity level only (what a platform
        knows); interests stay hidden."""
        ids = IdMap(np.arange(self.num_users, dtype=np.int64), "user")
        levels = np.asarray(LEVEL_NAMES)[self.activity_level]
        return FeatureTable.from_ids(ids).with_column("activity_level", levels.tolist())


def make_users(config: UserConfig, catalog: Catalog, rng: np.random.Generator) -> Users:
    """Draw a population; the same config, catalog and generator state give the same users."""
    c = config
    u, m, d = c.num_users, c.interests_per_user, catalog.tag_directions.shape[1]

    # M distinct home tags per user, drawn by tag share (Gumbel top-k)
    keys = np.log(catalog.tag_shares)[None, :] + rng.gumbel(size=(u, catalog.num_tags))
    home_tags = np.argsort(-keys, axis=1)[:, :m].astype(np.int64)
    offsets = unit_rows(rng.standard_normal((u, m, d)))
    interests = unit_rows(catalog.tag_directions[home_tags] + c.interest_noise * offsets)

    alpha = np.full(m, c.interest_concentration)
    start = np.maximum(rng.dirichlet(alpha, size=u), 1e-9)
    target = np.maximum(rng.dirichlet(alpha, size=u), 1e-9)
    end = start + c.drift * (target - start)
    start /= start.sum(1, keepdims=True)
    end /= end.sum(1, keepdims=True)

    level_share = np.array([v[0] for v in ACTIVITY_LEVELS.values()])
    level_rate = np.array([v[1] for v in ACTIVITY_LEVELS.values()])
    level = rng.choice(len(level_share), size=u, p=level_share / level_share.sum())
    return Users(
        interests=interests,
        home_tags=home_tags,
        weights_start=start,
        weights_end=end,
        bias=rng.normal(0.0, c.bias_sd, u),
        activity_level=level.astype(np.int64),
        session_rate=level_rate[level],
    )
