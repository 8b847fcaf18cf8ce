"""Configuration of the simulated platform: catalog, users, response model, logging policy.

Every field has a default that gives a small platform (3,000 videos, 2,000 users, about 150k
exposures) on which the quickstart can simulate, tokenize and train in minutes on a CPU; scale
any of them up. Distributions that real data could fix come from :mod:`.calibration`; every
value is checked here, at the boundary, and a bad one raises :class:`ConfigError` naming it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from onerec.exceptions import ConfigError, SimulatorConfigError
from onerec.simulator.calibration import DURATION_QUANTILES_S, TAG_SHARES


def _at_least(obj: object, names: tuple[str, ...], low: float) -> None:
    for name in names:
        value = getattr(obj, name)
        if not value >= low:  # also catches NaN
            raise ConfigError(f"{type(obj).__name__}.{name} must be >= {low}, got {value}")


def _probability(obj: object, names: tuple[str, ...], *, open_interval: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        ok = 0 < value < 1 if open_interval else 0 <= value <= 1
        if not ok:
            span = "(0, 1)" if open_interval else "[0, 1]"
            raise ConfigError(f"{type(obj).__name__}.{name} must be in {span}, got {value}")


@dataclass(frozen=True)
class CatalogConfig:
    """The videos: tags, authors, durations, latent factors and content embeddings.

    ``content_noise`` is the standard deviation of the noise added (per dimension, relative to
    the projected latent factors) to make the content embedding: the tokenizer sees a vector
    that correlates with the latent factors that drive user response, but does not reveal them.
    """

    num_items: int = 3_000
    num_tags: int = len(TAG_SHARES)
    latent_dim: int = 16
    content_dim: int = 64
    content_noise: float = 0.7
    author_style: float = 0.5  # weight of the author's own direction in an item's factors
    item_noise: float = 0.5  # weight of the item's own direction
    second_tag_weight: float = 0.4  # weight of a second tag's direction
    author_tag_loyalty: float = 0.85  # share of an author's videos on the author's main tag
    quality_sd: float = 0.5  # item appeal independent of the user (logit scale)
    popularity_temperature: float = 1.5  # popularity weight = exp(temperature * quality)

    def __post_init__(self) -> None:
        _at_least(self, ("num_items", "num_tags", "latent_dim", "content_dim"), 1)
        _at_least(self, ("content_noise", "author_style", "item_noise", "second_tag_weight",
                         "quality_sd", "popularity_temperature"), 0)  # fmt: skip
        _probability(self, ("author_tag_loyalty",))
        if self.num_tags > self.num_items:
            raise ConfigError(
                f"CatalogConfig.num_tags ({self.num_tags}) exceeds num_items ({self.num_items}): "
                "every tag needs at least one video; lower num_tags or raise num_items"
            )


@dataclass(frozen=True)
class UserConfig:
    """The users: several latent interests whose weights drift over the logged period.

    A user's interest weights move linearly from one Dirichlet draw at time 0 to another at
    time 1 (``drift`` scales how far they move: 0 means fixed interests), so the state at any
    time is known exactly. Logs span times [0, 1); the oracle defaults to time 1, the moment
    right after the log (where a model trained on the log makes its recommendations).
    """

    num_users: int = 2_000
    interests_per_user: int = 3
    interest_concentration: float = 0.7  # Dirichlet concentration of interest weights
    interest_noise: float = 0.5  # how far an interest sits from its tag's direction
    drift: float = 0.5
    bias_sd: float = 0.3  # user-level engagement offset (logit scale)
    mean_sessions: float = 10.0  # average sessions per user; activity levels spread it

    def __post_init__(self) -> None:
        _at_least(self, ("num_users", "interests_per_user"), 1)
        _at_least(self, ("interest_noise", "bias_sd"), 0)
        _probability(self, ("drift",))
        if not self.interest_concentration > 0:
            raise ConfigError(
                f"UserConfig.interest_concentration must be > 0, got {self.interest_concentration}"
            )
        if not self.mean_sessions >= 1:
            raise ConfigError(f"UserConfig.mean_sessions must be >= 1, got {self.mean_sessions}")


@dataclass(frozen=True)
class BaseRates:
    """Target share of logged exposures with each response, under the logging policy.

    ASSUMED, typical of a short-video feed (the KuaiRand logs that could measure them are not
    available here): most exposures get some watch time, a third are watched to the end, likes
    are rare and follows and shares rarer. The simulator solves its intercepts so that the
    expected rates over a pilot of logged sessions equal these exactly.
    """

    skip: float = 0.30
    view_through: float = 0.30
    like: float = 0.03
    follow: float = 0.003
    share: float = 0.002

    def __post_init__(self) -> None:
        _probability(self, ("skip", "view_through", "like", "follow", "share"), open_interval=True)
        if self.view_through >= 1 - self.skip:
            raise ConfigError(
                f"BaseRates.view_through ({self.view_through}) must be below 1 - skip "
                f"({1 - self.skip:.3f}): a skipped video is never watched to the end"
            )
        for name in ("like", "follow", "share"):
            if getattr(self, name) >= 1 - self.skip:
                raise ConfigError(
                    f"BaseRates.{name} ({getattr(self, name)}) must be below 1 - skip "
                    f"({1 - self.skip:.3f}): skipped videos get no {name}"
                )


@dataclass(frozen=True)
class ResponseConfig:
    """How a user responds to each video of a session (see :mod:`.response`).

    Session effects, all on the engagement logit of the video at position j:
    ``- position_decay * j`` (attention fades down the list), ``- author_fatigue * (earlier
    videos by the same author)``, ``- tag_fatigue * (earlier videos with the same main tag)``,
    and ``+ coherence_gain * exp(-((s - coherence_target) / coherence_width)^2)`` where s is the
    video's mean latent similarity to the earlier videos: related but not repetitive lists win.
    """

    base_rates: BaseRates = field(default_factory=BaseRates)
    affinity_weight: float = 3.0
    affinity_temperature: float = 0.1  # soft maximum over a user's interests
    position_decay: float = 0.04
    author_fatigue: float = 0.5
    tag_fatigue: float = 0.2
    coherence_gain: float = 0.5
    coherence_target: float = 0.3
    coherence_width: float = 0.3
    skip_seconds: float = 3.0  # a skip watches up to this long; a watch at least this long
    duration_penalty: float = 0.5  # completion logit per log(duration / median duration)
    partial_concentration: float = 4.0  # Beta concentration of a partial watch's ratio
    vt_boost: float = 1.0  # like/follow/share logit boost when watched to the end
    like_slope: float = 1.0
    follow_slope: float = 1.0
    share_slope: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.base_rates, dict):
            object.__setattr__(self, "base_rates", _build(BaseRates, self.base_rates, "base_rates"))
        _at_least(self, ("affinity_weight", "position_decay", "author_fatigue", "tag_fatigue",
                         "coherence_gain", "duration_penalty", "vt_boost", "like_slope",
                         "follow_slope", "share_slope"), 0)  # fmt: skip
        for name in ("affinity_temperature", "coherence_width", "skip_seconds",
                     "partial_concentration"):  # fmt: skip
            if not getattr(self, name) > 0:
                raise ConfigError(f"ResponseConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.skip_seconds >= DURATION_QUANTILES_S[0]:
            raise ConfigError(
                f"ResponseConfig.skip_seconds ({self.skip_seconds}) must be below the shortest "
                f"video ({DURATION_QUANTILES_S[0]} s), or a skip could outlast a full watch"
            )


@dataclass(frozen=True)
class PolicyConfig:
    """The logging policy that chose what was shown: shares of its three sources, and sessions.

    Each exposure comes from the popular items (by popularity weight), from one of the user's
    current interests (a popular video of that interest's tag), or uniformly from the catalog.
    """

    popularity: float = 0.3
    interest: float = 0.6
    explore: float = 0.1
    min_session: int = 5
    max_session: int = 10
    period_days: float = 30.0
    start_timestamp: int = 1_649_548_800  # 2022-04-10, the first upload day in KuaiRand-Pure
    pilot_exposures: int = 30_000  # logged exposures the intercepts are solved on

    def __post_init__(self) -> None:
        _probability(self, ("popularity", "interest", "explore"))
        total = self.popularity + self.interest + self.explore
        if abs(total - 1.0) > 1e-6:
            raise ConfigError(
                f"PolicyConfig source shares must sum to 1, got popularity {self.popularity} + "
                f"interest {self.interest} + explore {self.explore} = {total}"
            )
        _at_least(self, ("min_session", "pilot_exposures"), 1)
        if self.max_session < self.min_session:
            raise ConfigError(
                f"PolicyConfig.max_session ({self.max_session}) is below min_session "
                f"({self.min_session})"
            )
        if not self.period_days > 0:
            raise ConfigError(f"PolicyConfig.period_days must be > 0, got {self.period_days}")


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the combined reward: each metric relative to the logging policy's average.

    ``reward = sum_k w_k * metric_k / reference_k / sum_k w_k`` over k in swt (per video),
    vtr, wtr, ltr; the references are the metrics' expected values over the pilot sessions,
    so an average logged session scores about 1.
    """

    swt: float = 1.0
    vtr: float = 1.0
    wtr: float = 1.0
    ltr: float = 1.0

    def __post_init__(self) -> None:
        _at_least(self, ("swt", "vtr", "wtr", "ltr"), 0)
        if self.swt + self.vtr + self.wtr + self.ltr <= 0:
            raise ConfigError("RewardConfig needs at least one weight above 0")


@dataclass(frozen=True)
class SimulatorConfig:
    """The whole platform. ``seed`` fixes the catalog, the users and every sampled log."""

    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    users: UserConfig = field(default_factory=UserConfig)
    response: ResponseConfig = field(default_factory=ResponseConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    quality_min_total_watch: float = 60.0  # seconds: the paper's session-filter threshold
    seed: int = 0

    def __post_init__(self) -> None:
        parts = {"catalog": CatalogConfig, "users": UserConfig, "response": ResponseConfig,
                 "policy": PolicyConfig, "reward": RewardConfig}  # fmt: skip
        for name, cls in parts.items():
            value = getattr(self, name)
            if isinstance(value, dict):
                object.__setattr__(self, name, _build(cls, value, name))
            elif not isinstance(value, cls):
                raise ConfigError(f"SimulatorConfig.{name} must be a {cls.__name__}, got {value!r}")
        if self.users.interests_per_user > self.catalog.num_tags:
            raise ConfigError(
                f"UserConfig.interests_per_user ({self.users.interests_per_user}) exceeds "
                f"CatalogConfig.num_tags ({self.catalog.num_tags}): interests sit on distinct tags"
            )
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"SimulatorConfig.seed must be an integer >= 0, got {self.seed!r}")
        if self.quality_min_total_watch < 0:
            raise ConfigError(
                f"SimulatorConfig.quality_min_total_watch must be >= 0, got "
                f"{self.quality_min_total_watch}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SimulatorConfig":
        """The config from nested dicts (``to_dict``'s form); fields left out keep their
        defaults. Unknown fields and values of the wrong type raise
        :class:`SimulatorConfigError` naming the field and what it expects."""
        return _build(cls, data, "SimulatorConfig")

    @classmethod
    def load(cls, path: str | Path) -> "SimulatorConfig":
        """The config in a JSON file (``save``'s, or any subset of its fields). Every problem
        (no file, bad JSON, an unknown field, a wrong type, a value out of range) is a
        :class:`SimulatorConfigError` that names the file."""
        path = Path(path)
        hint = ("Fix: write a JSON object of SimulatorConfig fields, e.g. "
                '{"catalog": {"num_items": 5000}, "users": {"interests_per_user": 2}, "seed": 3} '
                "(`SimulatorConfig().save(path)` writes every field with its "
                "default).")  # fmt: skip
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise SimulatorConfigError(f"{path}: no such simulator config file. {hint}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SimulatorConfigError(f"{path}: not valid JSON ({e}). {hint}") from None
        if not isinstance(data, dict):
            raise SimulatorConfigError(
                f"{path}: expected a JSON object of SimulatorConfig fields, got a "
                f"{type(data).__name__}. {hint}"
            )
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise SimulatorConfigError(f"{path}: {e}") from None


def _build(cls: type, data: Any, where: str) -> Any:
    """``cls`` from the dict ``data`` read at ``where``: unknown fields and values of the wrong
    type are named (an int is accepted for a float; nested configs are built the same way)."""
    if not isinstance(data, dict):
        raise SimulatorConfigError(
            f"{where} must be an object of {cls.__name__} fields, got {data!r} "
            f"({type(data).__name__})"
        )
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SimulatorConfigError(f"unknown {where} field(s) {unknown}; known: {sorted(known)}")
    types = get_type_hints(cls)
    values = {}
    for name, value in data.items():
        expected, at = types[name], f"{where}.{name}"
        if is_dataclass(expected):
            value = value if isinstance(value, expected) else _build(expected, value, at)
        elif expected in (int, float):
            ok = isinstance(value, (int, float) if expected is float else int)
            if isinstance(value, bool) or not ok:
                raise SimulatorConfigError(
                    f"{at} must be {'an integer' if expected is int else 'a number'}, got "
                    f"{value!r} ({type(value).__name__})"
                )
        values[name] = value
    return cls(**values)
