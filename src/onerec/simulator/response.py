"""The response model (how a user responds to each video of a session) and the oracle (its exact
expectations per session).

Every response of the video at position j of a session is drawn from distributions whose
parameters are deterministic functions of the user, the item, the position and the items
before it, through one engagement logit::

    z = affinity_weight * affinity(user's interests at time t, item)
        + quality(item) + bias(user)
        - position_decay * j - author_fatigue * (earlier items by the same author)
        - tag_fatigue * (earlier items with the same main tag) + coherence gain

Given z and the video's duration d (seconds), with s = skip_seconds:

- skip ~ Bernoulli(sigmoid(c_skip - z)); a skip watches U(0, s) seconds;
- otherwise view-through ~ Bernoulli(sigmoid(c_vt + z - duration_penalty * log(d / median)));
  a view-through watches d seconds; a partial watch s + ratio * (d - s) with
  ratio ~ Beta(k * sigmoid(z), k * (1 - sigmoid(z)));
- like, follow, share ~ Bernoulli(sigmoid(c + slope * z [+ vt_boost if watched to the end])),
  never after a skip.

So every expectation is closed form (:meth:`ResponseMeans.expected`) and all randomness lives in
:meth:`ResponseModel.sample`. The intercepts c are solved so that the logging policy's expected
rates equal :class:`BaseRates`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from onerec.exceptions import SimulatorError
from onerec.simulator.calibration import DURATION_QUANTILES_S
from onerec.simulator.catalog import Catalog
from onerec.simulator.config import BaseRates, ResponseConfig, RewardConfig
from onerec.simulator.users import Users

MEDIAN_DURATION_S = DURATION_QUANTILES_S[len(DURATION_QUANTILES_S) // 2]
SIGNALS: tuple[str, ...] = ("watch_time", "view_through", "like", "follow", "share", "skip")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warnings for large |x|


@dataclass(frozen=True)
class Intercepts:
    """Logit intercepts of the responses, solved against the base rates (see module doc)."""

    skip: float = 0.0
    view_through: float = 0.0
    like: float = -4.0
    follow: float = -6.0
    share: float = -6.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class ResponseMeans:
    """The parameters of every response at each (session, position); zero where padded."""

    valid: np.ndarray  # (B, L) bool
    duration: np.ndarray  # (B, L) seconds
    p_skip: np.ndarray
    p_vt: np.ndarray  # view-through probability given not skipped
    mu_partial: np.ndarray  # mean watched ratio of a partial watch
    like: tuple[np.ndarray, np.ndarray]  # probability (after a partial watch, after a full one)
    follow: tuple[np.ndarray, np.ndarray]
    share: tuple[np.ndarray, np.ndarray]
    skip_seconds: float

    def expected(self) -> dict[str, np.ndarray]:
        """Exact expectation of every signal per position, (B, L) each, zero where padded."""
        watched = 1.0 - self.p_skip
        s, d = self.skip_seconds, self.duration
        partial = s + self.mu_partial * (d - s)
        watch = self.p_skip * (0.5 * s) + watched * (self.p_vt * d + (1.0 - self.p_vt) * partial)

        def act(pair: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            return watched * ((1.0 - self.p_vt) * pair[0] + self.p_vt * pair[1])

        out = {
            "watch_time": watch,
            "view_through": watched * self.p_vt,
            "like": act(self.like),
            "follow": act(self.follow),
            "share": act(self.share),
            "skip": self.p_skip,
        }
        return {k: np.where(self.valid, v, 0.0) for k, v in out.items()}


class ResponseModel:
    """Maps (users, sessions, times) to response distributions and samples from them."""

    def __init__(
        self,
        config: ResponseConfig,
        catalog: Catalog,
        users: Users,
        intercepts: Intercepts | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.users = users
        self.intercepts = intercepts or Intercepts()

    # engagement ------------------------------------------------------------------------------
    def item_logits(
        self, users: np.ndarray, items: np.ndarray, time: np.ndarray | float
    ) -> np.ndarray:
        """Context-free engagement logit (B, K) of each user for K items: affinity, quality and
        bias, without position or session effects."""
        c = self.config
        latent = self.catalog.latent[items]  # (B, K, d)
        cos = latent @ self.users.interests[users].transpose(0, 2, 1)  # (B, K, M)
        log_w = np.log(self.users.weights_at(users, time))[:, None, :]
        x = cos / c.affinity_temperature + log_w
        top = x.max(-1)
        affinity = c.affinity_temperature * (top + np.log(np.exp(x - top[..., None]).sum(-1)))
        return (
            c.affinity_weight * affinity
            + self.catalog.quality[items]
            + self.users.bias[users][:, None]
        )

    def logits(
        self, users: np.ndarray, sessions: np.ndarray, time: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Engagement logit z (B, L) with session effects, the valid mask and padded-safe items.

        ``sessions`` holds item indices with -1 padding at the end of shorter sessions.
        """
        c, cat = self.config, self.catalog
        valid = sessions >= 0
        items = np.where(valid, sessions, 0)
        length = sessions.shape[1]
        z = self.item_logits(users, items, time)
        z -= c.position_decay * np.arange(length)

        # earlier valid items of the same session: prior[b, j, k] = k < j and k valid
        prior = valid[:, None, :] & np.tri(length, length, -1, dtype=bool)[None]
        author = cat.author[items]
        tag = cat.main_tag[items]
        n_author = ((author[:, :, None] == author[:, None, :]) & prior).sum(-1)
        n_tag = ((tag[:, :, None] == tag[:, None, :]) & prior).sum(-1)
        latent = cat.latent[items]
        sim = np.where(prior, latent @ latent.transpose(0, 2, 1), 0.0).sum(-1)
        n_prior = prior.sum(-1)
        mean_sim = sim / np.maximum(n_prior, 1)
        bump = np.exp(-(((mean_sim - c.coherence_target) / c.coherence_width) ** 2))
        z += c.coherence_gain * bump * (n_prior > 0)
        z -= c.author_fatigue * n_author + c.tag_fatigue * n_tag
        return z, valid, items

    def duration_term(self, items: np.ndarray) -> np.ndarray:
        """Completion penalty of long videos: duration_penalty * log(duration / median)."""
        ratio = self.catalog.duration[items] / MEDIAN_DURATION_S
        return self.config.duration_penalty * np.log(ratio)

    def means(
        self, users: np.ndarray, sessions: np.ndarray, time: np.ndarray | float = 1.0
    ) -> ResponseMeans:
        """Every response's distribution parameters for each (session, position)."""
        z, valid, items = self.logits(users, sessions, time)
        return self.means_from_logits(z, valid, items)

    def means_from_logits(
        self, z: np.ndarray, valid: np.ndarray, items: np.ndarray
    ) -> ResponseMeans:
        """Response parameters from engagement logits (as :meth:`logits` returns them)."""
        c, b = self.config, self.intercepts
        p_skip = sigmoid(b.skip - z)
        p_vt = sigmoid(b.view_through + z - self.duration_term(items))

        def pair(intercept: float, slope: float) -> tuple[np.ndarray, np.ndarray]:
            base = intercept + slope * z
            return sigmoid(base), sigmoid(base + c.vt_boost)

        return ResponseMeans(
            valid=valid,
            duration=self.catalog.duration[items],
            p_skip=p_skip,
            p_vt=p_vt,
            mu_partial=np.clip(sigmoid(z), 1e-6, 1 - 1e-6),
            like=pair(b.like, c.like_slope),
            follow=pair(b.follow, c.follow_slope),
            share=pair(b.share, c.share_slope),
            skip_seconds=c.skip_seconds,
        )

    def sample(self, means: ResponseMeans, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One draw of every signal per (session, position); padded positions are zero."""
        shape = means.valid.shape
        s, k = means.skip_seconds, self.config.partial_concentration
        skip = rng.random(shape) < means.p_skip
        vt = ~skip & (rng.random(shape) < means.p_vt)
        # a partial watch stops short of the end (ratio < 0.999), so view-through is exact
        ratio = np.minimum(rng.beta(k * means.mu_partial, k * (1.0 - means.mu_partial)), 0.999)
        partial = s + ratio * (means.duration - s)
        watch = np.where(skip, rng.random(shape) * s, np.where(vt, means.duration, partial))
        out = {"watch_time": watch, "view_through": vt, "skip": skip}
        for name in ("like", "follow", "share"):
            p_partial, p_full = getattr(means, name)
            out[name] = ~skip & (rng.random(shape) < np.where(vt, p_full, p_partial))
        return {k: np.where(means.valid, v, 0) for k, v in out.items()}


def solve_intercepts(
    model: ResponseModel, z: np.ndarray, items: np.ndarray, rates: BaseRates
) -> Intercepts:
    """Intercepts whose expected rates over the given exposures (engagement logits ``z`` of
    ``items``, 1-D) equal ``rates`` exactly (bisection; every rate is monotone in its
    intercept). Solved in order: skip, view-through, then like, follow and share."""
    c = model.config
    dterm = model.duration_term(items)

    def solve(rate_of, target: float) -> float:
        lo, hi = -40.0, 40.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if rate_of(mid) < target else (lo, mid)
        return 0.5 * (lo + hi)

    skip = solve(lambda b: sigmoid(b - z).mean(), rates.skip)
    watched = 1.0 - sigmoid(skip - z)
    vt = solve(lambda b: (watched * sigmoid(b + z - dterm)).mean(), rates.view_through)
    p_vt = sigmoid(vt + z - dterm)

    def act_rate(slope: float):
        return lambda b: (
            watched
            * ((1 - p_vt) * sigmoid(b + slope * z) + p_vt * sigmoid(b + slope * z + c.vt_boost))
        ).mean()

    return Intercepts(
        skip=skip,
        view_through=vt,
        like=solve(act_rate(c.like_slope), rates.like),
        follow=solve(act_rate(c.follow_slope), rates.follow),
        share=solve(act_rate(c.share_slope), rates.share),
    )


def check_request(
    users: np.ndarray | list, sessions: np.ndarray | list, time: np.ndarray | float,
    num_users: int, num_items: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | float]:
    """Validate an oracle or sampling request at the boundary; return it as arrays."""
    users = np.asarray(users)
    sessions = np.asarray(sessions)
    if sessions.ndim == 1:
        sessions = sessions[None, :]
    if sessions.ndim != 2 or sessions.shape[1] == 0:
        raise SimulatorError(
            f"sessions must be a 2-D array (sessions, positions) of item indices, got shape "
            f"{sessions.shape}"
        )
    if sessions.dtype.kind not in "iu" or users.dtype.kind not in "iu":
        raise SimulatorError(
            f"users and sessions must hold integer indices, got {users.dtype} and {sessions.dtype}"
        )
    users = users.reshape(-1).astype(np.int64)
    sessions = sessions.astype(np.int64)
    if len(users) == 1 and len(sessions) > 1:
        users = np.repeat(users, len(sessions))
    if len(users) != len(sessions):
        raise SimulatorError(
            f"{len(users)} users for {len(sessions)} sessions: give one per session"
        )
    if len(users) and (users.min() < 0 or users.max() >= num_users):
        raise SimulatorError(
            f"user indices must be in [0, {num_users}), got {users.min()}..{users.max()}"
        )
    if sessions.size and (sessions.min() < -1 or sessions.max() >= num_items):
        raise SimulatorError(
            f"item indices must be in [0, {num_items}) (-1 pads), got "
            f"{sessions.min()}..{sessions.max()}"
        )
    valid = sessions >= 0
    if np.any(valid[:, 1:] & ~valid[:, :-1]):
        raise SimulatorError("padding (-1) may only end a session; found it before an item")
    if not valid[:, 0].all():
        raise SimulatorError("every session needs at least one item (position 0 is padding)")
    t = np.asarray(time, dtype=np.float64)
    if t.ndim > 1 or (t.ndim == 1 and len(t) != len(users)):
        raise SimulatorError(f"time must be a scalar or one per session, got shape {t.shape}")
    if not np.all((t >= 0) & (t <= 1)):
        raise SimulatorError("time must be in [0, 1] (0 = start of the log, 1 = its end)")
    return users, sessions, (t if t.ndim else float(t))


class Oracle:
    """Exact expected session metrics: swt (seconds), vtr, wtr, ltr and a combined reward.

    ``references`` are the per-video means of watch time, view-through, follow and like under
    the logging policy; the reward is their weighted mean lift (1.0 = an average logged session).
    """

    def __init__(
        self, model: ResponseModel, weights: RewardConfig, references: dict[str, float]
    ) -> None:
        self.model = model
        self.weights = weights
        self.references = references

    def __call__(
        self, users: np.ndarray, sessions: np.ndarray, time: np.ndarray | float = 1.0
    ) -> dict[str, np.ndarray]:
        users, sessions, time = check_request(
            users, sessions, time, self.model.users.num_users, self.model.catalog.num_items
        )
        means = self.model.means(users, sessions, time)
        return self.metrics(means.expected(), means.valid)

    def metrics(self, expected: dict[str, np.ndarray], valid: np.ndarray) -> dict[str, np.ndarray]:
        n = valid.sum(1)
        out = {
            "swt": expected["watch_time"].sum(1),
            "vtr": expected["view_through"].sum(1) / n,
            "wtr": expected["follow"].sum(1) / n,
            "ltr": expected["like"].sum(1) / n,
            "share_rate": expected["share"].sum(1) / n,
            "skip_rate": expected["skip"].sum(1) / n,
        }
        w, r = self.weights, self.references
        total = w.swt + w.vtr + w.wtr + w.ltr
        out["reward"] = (
            w.swt * out["swt"] / n / r["watch_time"]
            + w.vtr * out["vtr"] / r["view_through"]
            + w.wtr * out["wtr"] / r["follow"]
            + w.ltr * out["ltr"] / r["like"]
        ) / total
        return out
