"""Baselines in the same harness as OneRec: popularity, SASRec (BCE, CE and sampled softmax),
BERT4Rec, FDSA, eSASRec, BSARec, TIGER.

Every scoring model honours :class:`SequentialRecommender` (``loss``, ``scores``, ``rank``), is
trained by :func:`fit` and evaluated by :func:`onerec.evaluation.evaluate`. TIGER is OneRec's
own code in TIGER's configuration (:func:`run_tiger`), ranked by beam search and measured by the
same ``evaluate``. :func:`run_benchmark` runs the comparison and writes the table;
:func:`write_seed_summary` gives each model's mean and spread over seeds.
"""

from onerec.baselines.base import SequenceBatch, SequentialRecommender
from onerec.baselines.bert4rec import BERT4Rec
from onerec.baselines.bsarec import BSARec
from onerec.baselines.benchmark import (
    ALL_MODELS,
    MODELS,
    BaselineSettings,
    run_benchmark,
    summarize_seeds,
    write_seed_summary,
)
from onerec.baselines.esasrec import ESASRec
from onerec.baselines.fdsa import FDSA, item_attributes
from onerec.baselines.popularity import Popularity
from onerec.baselines.sasrec import SASRec
from onerec.baselines.tiger import TigerSettings, run_tiger
from onerec.baselines.train import BaselineTrainConfig, TrainResult, fit

__all__ = [
    "ALL_MODELS",
    "BERT4Rec",
    "BSARec",
    "BaselineSettings",
    "BaselineTrainConfig",
    "ESASRec",
    "FDSA",
    "MODELS",
    "Popularity",
    "SASRec",
    "SequenceBatch",
    "SequentialRecommender",
    "TigerSettings",
    "TrainResult",
    "fit",
    "item_attributes",
    "run_benchmark",
    "summarize_seeds",
    "write_seed_summary",
    "run_tiger",
]
