"""Baselines in the same harness as OneRec: popularity, SASRec (BCE and CE), BERT4Rec, FDSA.

Every model honours :class:`SequentialRecommender` (``loss``, ``scores``, ``rank``), is trained
by :func:`fit` and evaluated by :func:`onerec.evaluation.evaluate`; :func:`run_benchmark` runs
the comparison and writes the table.
"""

from onerec.baselines.base import SequenceBatch, SequentialRecommender
from onerec.baselines.bert4rec import BERT4Rec
from onerec.baselines.benchmark import MODELS, run_benchmark
from onerec.baselines.fdsa import FDSA, item_attributes
from onerec.baselines.popularity import Popularity
from onerec.baselines.sasrec import SASRec
from onerec.baselines.train import BaselineTrainConfig, TrainResult, fit

__all__ = [
    "BERT4Rec",
    "BaselineTrainConfig",
    "FDSA",
    "MODELS",
    "Popularity",
    "SASRec",
    "SequenceBatch",
    "SequentialRecommender",
    "TrainResult",
    "fit",
    "item_attributes",
    "run_benchmark",
]
