"""Preference alignment (the paper's parts 4 and 5): the reward model, DPO preference pairs from
the model's own beam search, Iterative Preference Alignment, and their evaluation against the
simulator's ground truth. Between training and generation in the data flow."""

from onerec.alignment.logged import SIGNALS, LoggedSessions, logged_sessions
from onerec.alignment.reward_model import RewardModel, RewardModelConfig, catalog_fingerprint
from onerec.alignment.reward_training import RewardRun, RewardTrainConfig, train_reward_model

__all__ = [
    "SIGNALS",
    "LoggedSessions",
    "RewardModel",
    "RewardModelConfig",
    "RewardRun",
    "RewardTrainConfig",
    "catalog_fingerprint",
    "logged_sessions",
    "train_reward_model",
]
