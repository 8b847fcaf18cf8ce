"""Scoring recommendations: full-ranking metrics and paired significance tests."""

from onerec.evaluation.metrics import EvalResult, Evaluator, evaluate
from onerec.evaluation.significance import PairedTestResult, paired_test

__all__ = ["EvalResult", "Evaluator", "PairedTestResult", "evaluate", "paired_test"]
