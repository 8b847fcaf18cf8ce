"""A simulated short-video platform with ground-truth user response.

Catalog (KuaiRand-calibrated durations, tags, authors; content embeddings that correlate with
the hidden item factors), users with drifting interests, a logging policy writing sessions of
5 to 10 videos with watch time, view-through, like, follow, share and skip, and an oracle giving
the exact expected session metrics (swt, vtr, wtr, ltr, reward) of any list for any user.
"""

from onerec.simulator.catalog import Catalog
from onerec.simulator.config import (
    BaseRates,
    CatalogConfig,
    PolicyConfig,
    ResponseConfig,
    RewardConfig,
    SimulatorConfig,
    UserConfig,
)
from onerec.simulator.response import Intercepts, ResponseModel
from onerec.simulator.simulator import Simulator
from onerec.simulator.users import Users

__all__ = [
    "BaseRates",
    "Catalog",
    "CatalogConfig",
    "Intercepts",
    "PolicyConfig",
    "ResponseConfig",
    "ResponseModel",
    "RewardConfig",
    "Simulator",
    "SimulatorConfig",
    "UserConfig",
    "Users",
]
