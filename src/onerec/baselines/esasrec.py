"""eSASRec (Tikhonov et al., RecSys 2025): SASRec with LiGR blocks, trained by sampled softmax.

The eSASRec benchmark ("transformer_benchmark") found that two modules lift SASRec most: the
shifted-sequence objective with a sampled softmax (256 uniform negatives per position, what
``SASRec(loss="ss")`` does) and LinkedIn's LiGR transformer layer, a pre-norm block whose
residual branches are gated by the block's input:

    x = x + sigmoid(W1 x) * dropout(attn(LN(x)))
    x = x + sigmoid(W2 x) * dropout(SwiGLU(LN(x)))

with a bias-free SwiGLU feed-forward of width ``ff_multiplier * hidden``. Its Beauty setting:
1 block, 1 head, dropout 0.2, length 50, 256 negatives, Adam at 1e-3; their grid listed width
64 for Beauty, their leave-one-out config file 256.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onerec.baselines.sasrec import Dropout, SASRec, SelfAttention
from onerec.exceptions import BaselineError


class SwiGLU(nn.Module):
    """``down(silu(gate(x)) * up(x))``, bias-free, inner width ``multiplier * hidden``."""

    def __init__(self, hidden: int, multiplier: int, dropout: float) -> None:
        super().__init__()
        inner = multiplier * hidden
        self.gate_up = nn.Linear(hidden, 2 * inner, bias=False)
        self.down = nn.Linear(inner, hidden, bias=False)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(self.drop(F.silu(gate) * up))


class LiGRBlock(nn.Module):
    """Pre-norm block with input-gated residual branches (LiGR); same interface as
    :class:`onerec.baselines.sasrec.Block`."""

    def __init__(self, hidden: int, heads: int, dropout: float, ff_multiplier: int = 4) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, heads, dropout)
        self.ffn = SwiGLU(hidden, ff_multiplier, dropout)
        self.gate1, self.gate2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + torch.sigmoid(self.gate1(x)) * self.drop(self.attn(self.ln1(x), mask))
        return x + torch.sigmoid(self.gate2(x)) * self.drop(self.ffn(self.ln2(x)))


class ESASRec(SASRec):
    """SASRec with LiGR blocks and the sampled-softmax loss; scores = h_last . E_item."""

    def __init__(
        self,
        num_items: int,
        max_length: int = 50,
        hidden: int = 64,
        layers: int = 1,
        heads: int = 1,
        dropout: float = 0.2,
        negatives: int = 256,
        ff_multiplier: int = 4,
    ) -> None:
        if ff_multiplier < 1:
            raise BaselineError(f"eSASRec ff_multiplier must be >= 1, got {ff_multiplier}")

        def block(h: int, n_heads: int, p: float) -> nn.Module:
            return LiGRBlock(h, n_heads, p, ff_multiplier)

        super().__init__(num_items, max_length, hidden, layers, heads, dropout, loss="ss",
                         negatives=negatives, block=block)  # fmt: skip
        self.name = "esasrec"
        self.ff_multiplier = ff_multiplier
