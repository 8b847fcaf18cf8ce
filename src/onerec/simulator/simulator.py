"""The simulated short-video platform: one object holding the catalog, the users, the logging
policy, the response model and the oracle, all fixed by one seed.

    sim = Simulator(SimulatorConfig(seed=0))
    ds = sim.generate_log()                      # a Dataset with sessions and all signals
    hq, report = sim.high_quality(ds)            # the paper's session filter, with counts
    truth = sim.oracle(users, sessions)          # exact expected swt, vtr, wtr, ltr, reward

Random streams are separate per part (catalog, users, pilot, plan, each chunk of the log), so a
log of the same seed is the same on every machine, and changing the log's size does not change
the catalog or the users.
"""

from __future__ import annotations

import numpy as np

from onerec.data.report import FilterReport
from onerec.data.schema import Dataset, IdMap, InteractionLog
from onerec.data.sessions import SessionQualityFilter
from onerec.exceptions import ConfigError
from onerec.simulator.catalog import Catalog, make_catalog
from onerec.simulator.config import SimulatorConfig
from onerec.simulator.logging_policy import LoggingPolicy
from onerec.simulator.response import (
    Oracle,
    ResponseModel,
    check_request,
    solve_intercepts,
)
from onerec.simulator.users import Users, make_users

_CATALOG, _USERS, _PILOT, _PLAN, _LOG, _SAMPLE = range(1, 7)
CHUNK_SESSIONS = 50_000  # part of the random streams: changing it changes the logs
REFERENCE_SIGNALS = ("watch_time", "view_through", "follow", "like")


class Simulator:
    """A short-video platform whose users' true responses are known exactly."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config = config or SimulatorConfig()
        self.catalog: Catalog = make_catalog(config.catalog, self._rng(_CATALOG))
        self.users: Users = make_users(config.users, self.catalog, self._rng(_USERS))
        self.policy = LoggingPolicy(config.policy, self.catalog, self.users)

        # intercepts and reward references from a pilot of logged sessions
        draft = ResponseModel(config.response, self.catalog, self.users)
        rng = self._rng(_PILOT)
        users, times = self.policy.pilot(config.policy.pilot_exposures, rng)
        z, valid, items = draft.logits(users, self.policy.fill(users, times, rng), times)
        intercepts = solve_intercepts(draft, z[valid], items[valid], config.response.base_rates)
        self.response = ResponseModel(config.response, self.catalog, self.users, intercepts)
        expected = self.response.means_from_logits(z, valid, items).expected()
        references = {k: float(expected[k][valid].mean()) for k in REFERENCE_SIGNALS}
        self._oracle = Oracle(self.response, config.reward, references)

    def _rng(self, *stream: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, *stream])

    @property
    def num_users(self) -> int:
        return self.users.num_users

    @property
    def num_items(self) -> int:
        return self.catalog.num_items

    # ground truth ------------------------------------------------------------------------------
    def oracle(
        self, users: np.ndarray, sessions: np.ndarray, time: np.ndarray | float = 1.0
    ) -> dict[str, np.ndarray]:
        """Exact expected metrics per session (B,): ``swt`` (session watch time, seconds),
        ``vtr``, ``wtr`` (follow rate), ``ltr`` (like rate), ``share_rate``, ``skip_rate`` and
        ``reward``. ``sessions`` is (B, L) item indices, -1 padding at the end; ``users`` one per
        session (or one for all); ``time`` in [0, 1], default 1 = right after the log."""
        return self._oracle(users, sessions, time)

    def expected_responses(
        self, users: np.ndarray, sessions: np.ndarray, time: np.ndarray | float = 1.0
    ) -> dict[str, np.ndarray]:
        """Exact expectation of every signal per (session, position), (B, L) each."""
        users, sessions, time = check_request(users, sessions, time, self.num_users, self.num_items)
        return self.response.means(users, sessions, time).expected()

    def sample_response(
        self,
        users: np.ndarray,
        sessions: np.ndarray,
        time: np.ndarray | float = 1.0,
        *,
        seed: int = 0,
    ) -> dict[str, np.ndarray]:
        """One random draw of every signal per (session, position), as a user would respond:
        ``watch_time`` (seconds), ``view_through``, ``like``, ``follow``, ``share``, ``skip``."""
        users, sessions, time = check_request(users, sessions, time, self.num_users, self.num_items)
        means = self.response.means(users, sessions, time)
        return self.response.sample(means, self._rng(_SAMPLE, seed))

    def item_scores(
        self, users: np.ndarray, items: np.ndarray | None = None, time: float = 1.0
    ) -> np.ndarray:
        """Context-free engagement logits (B, K) of users for items (default: all items): the
        true ranking of single videos, before position and session effects."""
        users = np.asarray(users, dtype=np.int64).reshape(-1)
        if items is None:
            items = np.broadcast_to(np.arange(self.num_items), (len(users), self.num_items))
        items = np.asarray(items, dtype=np.int64)
        if items.ndim == 1:
            items = np.broadcast_to(items, (len(users), len(items)))
        check_request(users, items, time, self.num_users, self.num_items)
        step = max(1, 2_000_000 // max(1, items.shape[1]))  # bounds the (B, K, d) gather
        return np.concatenate([
            self.response.item_logits(users[i : i + step], items[i : i + step], time)
            for i in range(0, len(users), step)
        ]) if len(users) else np.zeros(items.shape)  # fmt: skip

    # logs --------------------------------------------------------------------------------------
    def generate_log(
        self,
        *,
        mean_sessions: float | None = None,
        seed: int | None = None,
        quality_report: bool = True,
        until: float = 1.0,
    ) -> Dataset:
        """A logged period: the logging policy's sessions with every sampled signal.

        Signals: ``watch_time`` and ``duration`` (seconds), ``view_through``, ``like``,
        ``follow``, ``share``, ``skip`` (0/1) and ``position`` in the session. ``seed`` (default:
        the config's) changes the sessions and responses, not the platform. With
        ``quality_report`` the paper's session filter runs once and its counts go into
        ``meta["quality_filter"]``. ``until`` in (0, 1]: the log covers times [0, until) only,
        leaving the rest of the timeline (users keep drifting) to an online test after it.
        """
        c = self.config
        mean_sessions = c.users.mean_sessions if mean_sessions is None else mean_sessions
        if not mean_sessions >= 1:
            raise ConfigError(f"mean_sessions must be >= 1, got {mean_sessions}")
        if not 0 < until <= 1:
            raise ConfigError(f"until must be in (0, 1] (the end of the log's time span), got {until}")
        seed = c.seed if seed is None else seed
        rng = np.random.default_rng([seed, _PLAN])
        session_user, session_time = self.policy.plan(mean_sessions, rng)
        if until < 1:  # a product with 1.0 would leave the times as they are anyway
            session_time = session_time * until

        parts: list[dict[str, np.ndarray]] = []
        for i, start in enumerate(range(0, len(session_user), CHUNK_SESSIONS)):
            rows = slice(start, start + CHUNK_SESSIONS)
            rng = np.random.default_rng([seed, _LOG, i])
            parts.append(self._log_chunk(session_user[rows], session_time[rows], start, rng))
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

        # overlapping sessions of one user (two opened within minutes) must not go back in time
        offset = cols["user"] * np.int64(10**11)
        cols["timestamp"] = np.maximum.accumulate(cols["timestamp"] + offset) - offset

        user, item, session, timestamp = (
            cols.pop(k) for k in ("user", "item", "session", "timestamp")
        )
        log = InteractionLog(
            user, item, timestamp,
            IdMap(np.arange(self.num_users, dtype=np.int64), "user"),
            IdMap(np.arange(self.num_items, dtype=np.int64), "item"),
            cols, session,
        )  # fmt: skip
        meta = {
            "simulator": c.to_dict(),
            "calibration": "KuaiRand-Pure side tables, see onerec.simulator.calibration",
            "intercepts": self.response.intercepts.to_dict(),
            "reward_references": self._oracle.references,
            "rates": {
                k: float(cols[k].mean())
                for k in ("skip", "view_through", "like", "follow", "share")
            },
            "mean_watch_time": float(cols["watch_time"].mean()),
            "content_signal_share": self.catalog.content_signal_share(),
            "log_seed": seed,
        }
        items, users = self.catalog.feature_table(), self.users.feature_table()
        ds = Dataset("simulated", log, items, users, meta)
        if quality_report:
            meta["quality_filter"] = self.high_quality(ds)[1].to_dict()
        return ds

    def _log_chunk(
        self, user: np.ndarray, time: np.ndarray, first_session: int, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        items = self.policy.fill(user, time, rng)
        means = self.response.means(user, items, time)
        draw = self.response.sample(means, rng)
        valid = means.valid
        # a session starts at its time; each video begins after the previous one's watch + 1 s
        policy = self.config.policy
        start = policy.start_timestamp + time * (policy.period_days * 86400.0)
        step = draw["watch_time"] + 1.0
        before = np.cumsum(step, axis=1) - step
        timestamp = np.floor(start[:, None] + before).astype(np.int64)
        session = np.arange(first_session, first_session + len(user), dtype=np.int64)
        position = np.broadcast_to(np.arange(items.shape[1], dtype=np.int8), items.shape)
        out = {
            "user": np.broadcast_to(user[:, None], items.shape)[valid],
            "item": items[valid].astype(np.int64),
            "session": np.broadcast_to(session[:, None], items.shape)[valid],
            "timestamp": timestamp[valid],
            "watch_time": draw["watch_time"][valid].astype(np.float32),
            "duration": means.duration[valid].astype(np.float32),
            "position": position[valid],
        }
        for name in ("view_through", "like", "follow", "share", "skip"):
            out[name] = draw[name][valid].astype(np.int8)
        return out

    # the paper's session filter -----------------------------------------------------------------
    def quality_filter(self) -> SessionQualityFilter:
        """The paper's high-quality sessions: at least 5 videos actually watched (beyond a
        skip), total watch time >= ``quality_min_total_watch``, at least one like, follow or
        share."""
        return SessionQualityFilter(
            min_watched_items=5,
            min_total_watch=self.config.quality_min_total_watch,
            require_positive=True,
            watch_signal="watch_time",
            min_item_watch=self.config.response.skip_seconds,
            positive_signals=("like", "follow", "share"),
        )

    def high_quality(self, dataset: Dataset) -> tuple[Dataset, FilterReport]:
        """The dataset restricted to high-quality sessions, and the filter's counts."""
        log, report = self.quality_filter().apply(dataset.log)
        meta = {**dataset.meta, "quality_filter": report.to_dict()}
        return Dataset(dataset.name, log, dataset.item_table, dataset.user_table, meta), report
