"""Settings of a simulated online A/B test (``onerec online``): the platform, the arms, the
traffic, the daily retraining and alignment, and the sizes of the default and tiny runs.

Saved as ``config.json`` in the run folder; a resumed run must be called with the same settings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from onerec.exceptions import OnlineConfigError
from onerec.quickstart import QuickstartConfig

# every arm this module knows; control is the simulator's logging policy (the cascade)
ARMS: tuple[str, ...] = ("cascade", "onerec-frozen", "onerec-ntp", "onerec-ipa")
CONTROL = "cascade"
RETRAINED = ("onerec-ntp", "onerec-ipa")  # fine-tuned every day on the new logs
ALIGNED = ("onerec-ipa",)  # realigned with IPA every day (and before day 1)


@dataclass(frozen=True)
class OnlineConfig:
    """One online test. ``platform``: the quickstart platform and its initial OneRec (its
    sizes and training); ``days``: simulated days after the 30 logged ones;
    ``sessions_per_day``: mean sessions a user opens per day (spread by activity level);
    ``chunks_per_day``: the day's traffic is served and checkpointed in this many parts;
    ``session_items``/``beam_size``/``history_items``: what each request asks for (every arm
    shows ``session_items`` videos per session, the cascade its first ones);
    ``finetune``: TrainConfig fields of the daily NTP fine-tuning (one epoch on the day's
    watched videos with ``history_length`` items of context); ``reward``: RewardTrainConfig
    fields of the daily reward model; ``align``: AlignConfig fields of the daily IPA
    iteration; ``align_context_days``: the days of the initial log the pre-test alignment
    trains on; ``concurrency``: requests in flight per server; ``sync_requests``: requests in
    flight while a reload is asked for (its load). The logged traffic is sent one request at a
    time by default: at a near-tie a beam search can order a session differently depending on
    which requests share its batch (measured: 1 of about 2,400 sessions of an arm, the same
    videos in another order), which would make a rerun or a resumed run differ; a
    ``concurrency`` above 1 batches the logged traffic too, at that cost."""

    seed: int = 0
    platform: dict[str, Any] = field(default_factory=dict)  # QuickstartConfig overrides
    platform_scale: str = "default"
    days: int = 5
    arms: tuple[str, ...] = ARMS
    sessions_per_day: float = 1.0
    chunks_per_day: int = 4
    session_items: int = 5
    beam_size: int = 16
    history_items: int = 50
    finetune: dict[str, Any] = field(default_factory=lambda: {
        "epochs": 1, "lr": 3e-4, "warmup_steps": 0, "ema_decay": None, "eval_users": 64,
        "batch_size": 256,
    })  # fmt: skip
    # the reward model and IPA settings measured on this platform (benchmarks/results/
    # alignment_summary.md: RM v2, r_DPO 0.2, N = 128)
    reward: dict[str, Any] = field(default_factory=lambda: {
        "epochs": 12, "lr": 1e-3, "weight_decay": 0.1,
    })  # fmt: skip
    reward_model: dict[str, Any] = field(default_factory=lambda: {
        "d_model": 32, "dropout": 0.0, "item_ids": False,
    })  # fmt: skip
    align: dict[str, Any] = field(default_factory=lambda: {
        "r_dpo": 0.2, "n_sessions": 128, "dpo_weight": 0.1, "beta": 0.1,
    })  # fmt: skip
    align_context_days: float = 3.0
    concurrency: int = 1
    sync_requests: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", tuple(self.arms))
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or len(set(self.arms)) != len(self.arms):
            raise OnlineConfigError(
                f"arms must be distinct names among {list(ARMS)}, got {list(self.arms)}"
            )
        if CONTROL not in self.arms or len(self.arms) < 2:
            raise OnlineConfigError(
                f"an A/B test needs the control arm {CONTROL!r} and at least one OneRec arm, "
                f"got {list(self.arms)}"
            )
        for name in ("days", "chunks_per_day", "session_items", "beam_size", "history_items",
                     "concurrency", "sync_requests"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OnlineConfigError(f"OnlineConfig.{name} must be an int >= 1, got {value!r}")
        if self.beam_size < self.session_items:
            raise OnlineConfigError(
                f"beam_size ({self.beam_size}) must be >= session_items ({self.session_items})"
            )
        if not self.sessions_per_day > 0 or not self.align_context_days > 0:
            raise OnlineConfigError(
                f"sessions_per_day and align_context_days must be > 0, got "
                f"{self.sessions_per_day} and {self.align_context_days}"
            )
        self.quickstart()  # named errors for bad platform fields now

    def quickstart(self) -> QuickstartConfig:
        """The platform's quickstart settings (scale, seed, overrides)."""
        base = QuickstartConfig.scale(self.platform_scale, self.seed)
        known = {f.name for f in fields(QuickstartConfig)}
        unknown = set(self.platform) - known
        if unknown:
            raise OnlineConfigError(f"unknown platform (QuickstartConfig) fields {sorted(unknown)}")
        return replace(base, **self.platform)

    @property
    def onerec_arms(self) -> tuple[str, ...]:
        return tuple(a for a in self.arms if a != CONTROL)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OnlineConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise OnlineConfigError(f"unknown OnlineConfig fields {sorted(unknown)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def scale(cls, name: str, seed: int = 0, **overrides: Any) -> "OnlineConfig":
        if name not in SCALES:
            raise OnlineConfigError(
                f"unknown online scale {name!r}; choose one of {sorted(SCALES)}"
            )
        return replace(SCALES[name], seed=seed, **overrides)


SCALES: dict[str, OnlineConfig] = {
    # sized to finish within 30 minutes on one core of the 2-core CPU (measured, see
    # docs/online.md): the quickstart platform, its OneRec trained for 2 epochs
    "default": OnlineConfig(platform={"onerec_epochs": 2, "validation_users": 200}),
    # for tests: a minute on a CPU, every stage runs, nothing is meaningful
    "tiny": OnlineConfig(
        platform_scale="tiny", days=2, arms=("cascade", "onerec-ntp", "onerec-ipa"),
        chunks_per_day=2, sessions_per_day=1.0, beam_size=8,
        history_items=20, sync_requests=8,
        finetune={"epochs": 1, "lr": 3e-4, "warmup_steps": 0, "ema_decay": None,
                  "eval_users": 16, "batch_size": 128, "eval_beam": 10},
        reward={"epochs": 1, "lr": 1e-3},
        reward_model={"d_model": 16, "dropout": 0.0, "item_ids": False},
        align={"r_dpo": 0.2, "n_sessions": 8, "dpo_weight": 0.1, "beta": 0.1},
    ),  # fmt: skip
}
