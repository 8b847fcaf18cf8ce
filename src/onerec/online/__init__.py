"""The online loop on the simulated platform: a multi-day A/B test of OneRec against the
cascade, served over HTTP, with daily retraining, alignment and hot parameter sync
(``onerec online``; see docs/online.md)."""

from onerec.online.arms import arm_of, assign_arms
from onerec.online.config import ARMS, CONTROL, OnlineConfig
from onerec.online.loop import Hooks, run_online

__all__ = ["ARMS", "CONTROL", "Hooks", "OnlineConfig", "arm_of", "assign_arms", "run_online"]
