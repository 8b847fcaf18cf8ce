"""Popularity: every user gets the items most frequent in the training interactions.

The floor every learned model must clear. It honours the same contract (``scores``, ``rank``,
``score_fn``) so the benchmark evaluates it with the same code; there is nothing to train.
"""

from __future__ import annotations

import numpy as np
import torch

from onerec.baselines.base import SequentialRecommender
from onerec.data.ragged import Ragged
from onerec.exceptions import BaselineError


class Popularity(SequentialRecommender):
    name = "pop"
    trainable = False

    def __init__(self, num_items: int, train_items: np.ndarray, max_length: int = 50) -> None:
        super().__init__(num_items, max_length)
        train_items = np.asarray(train_items, dtype=np.int64)
        if len(train_items) and (train_items.min() < 0 or train_items.max() >= num_items):
            raise BaselineError(f"training items must be in [0, {num_items})")
        counts = np.bincount(train_items, minlength=num_items).astype(np.float32)
        self.register_buffer("counts", torch.from_numpy(counts))

    @classmethod
    def from_sequences(cls, sequences: Ragged, num_items: int, max_length: int = 50) -> "Popularity":
        return cls(num_items, sequences.values, max_length)

    def forward_scores(self, tokens: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return self.counts.expand(tokens.shape[0], -1).clone()
