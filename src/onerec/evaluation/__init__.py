"""Scoring recommendations: full-ranking metrics and paired significance tests."""

from onerec.evaluation.metrics import (
    EvalResult,
    Evaluator,
    distinct_targets,
    evaluate,
    exclude_seen_selected,
    fill_seen,
    metrics_from_ranks,
    ranks_from_lists,
    ranks_from_scores,
)
from onerec.evaluation.significance import PairedTestResult, paired_test

__all__ = [
    "EvalResult",
    "Evaluator",
    "PairedTestResult",
    "distinct_targets",
    "evaluate",
    "exclude_seen_selected",
    "fill_seen",
    "metrics_from_ranks",
    "paired_test",
    "ranks_from_lists",
    "ranks_from_scores",
]
