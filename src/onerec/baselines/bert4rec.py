"""BERT4Rec (Sun et al., CIKM 2019): a bidirectional encoder trained by the cloze task.

Training hides a random ``mask_prob`` of each sequence's items behind a [MASK] token and predicts
them with a full softmax over the catalog (both sides of a masked item are visible). To predict
the next item, [MASK] is appended after the history and its output scores the catalog. Hidden
64, 2 blocks, 2 heads, maximum length 50 (as the other baselines); dropout 0.2 and mask
probability 0.2 (BERT4Rec's Beauty settings; 0.5 dropout starves the cloze task).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onerec.baselines.base import PAD, SequenceBatch, SequentialRecommender
from onerec.baselines.sasrec import SequenceEncoder
from onerec.exceptions import BaselineError


class BERT4Rec(SequentialRecommender):
    name = "bert4rec"

    def __init__(
        self,
        num_items: int,
        max_length: int = 50,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        mask_prob: float = 0.2,
    ) -> None:
        super().__init__(num_items, max_length)
        if not 0.0 < mask_prob < 1.0:
            raise BaselineError(f"mask_prob must be in (0, 1), got {mask_prob}")
        self.mask_prob = mask_prob
        self.mask_token = num_items + 1
        self.encoder = SequenceEncoder(num_items + 2, max_length, hidden, layers, heads, dropout,
                                       causal=False)  # fmt: skip
        self.output_bias = torch.nn.Parameter(torch.zeros(num_items))

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.encoder.items.weight[1 : self.num_items + 1].T + self.output_bias

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        tokens = batch.tokens[:, -self.max_length :]
        real = tokens != PAD
        masked = real & (torch.rand(tokens.shape, device=tokens.device) < self.mask_prob)
        # every sequence gets at least its last item masked, so each one teaches something and
        # the training task includes the inference one (a [MASK] at the end)
        masked[:, -1] |= real[:, -1]
        inputs = torch.where(masked, torch.full_like(tokens, self.mask_token), tokens)
        h = self.encoder(inputs)[masked]  # (n, D)
        return F.cross_entropy(self._logits(h), tokens[masked] - 1)

    def forward_scores(self, tokens: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(tokens[:, :1], self.mask_token)
        inputs = torch.cat([tokens[:, 1:], mask], dim=1)  # the oldest item makes room
        return self._logits(self.encoder(inputs)[:, -1])
