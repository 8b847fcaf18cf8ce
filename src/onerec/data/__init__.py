"""Stage 1 of the data flow: interaction logs, item and user tables, sessions and splits."""

from onerec.data.examples import Examples
from onerec.data.ragged import Ragged
from onerec.data.readers import ColumnMapping, read_dataset
from onerec.data.registry import REGISTRY, load_dataset
from onerec.data.report import FilterReport
from onerec.data.schema import Dataset, FeatureTable, IdMap, InteractionLog, build_log
from onerec.data.sessions import SessionQualityFilter, assign_sessions
from onerec.data.signals import SignalPolicy, apply_signal_policy
from onerec.data.splits import (
    Split,
    drop_last_interactions,
    filter_min_interactions,
    leave_one_out,
    temporal_split,
)
from onerec.data.synthetic import SyntheticConfig, generate

__all__ = [
    "ColumnMapping",
    "Dataset",
    "Examples",
    "FeatureTable",
    "FilterReport",
    "IdMap",
    "InteractionLog",
    "REGISTRY",
    "Ragged",
    "SessionQualityFilter",
    "SignalPolicy",
    "Split",
    "SyntheticConfig",
    "apply_signal_policy",
    "assign_sessions",
    "build_log",
    "drop_last_interactions",
    "filter_min_interactions",
    "generate",
    "leave_one_out",
    "load_dataset",
    "read_dataset",
    "temporal_split",
]
