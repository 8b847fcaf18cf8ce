"""BSARec (Shin et al., AAAI 2024): self-attention beside a Fourier filter that restores the
high frequencies attention smooths away.

Each layer mixes two views of its input ``x`` ``(B, L, D)``:

- a frequency filter: the ``c // 2 + 1`` lowest frequencies of ``x`` along the sequence (a real
  FFT over the whole, left-padded window) are the low pass, ``x - low`` the high pass, and
  ``low + beta^2 * high`` (``beta`` learned per channel) rescales the high frequencies;
- causal multi-head self-attention;

as ``alpha * LN(x + filter(x)) + (1 - alpha) * LN(x + attn(x))``, then a post-norm GELU
feed-forward, BERT style. The embeddings are ``LN(item + position)``; there is no final norm.

The filter mixes every position of the window with every other, future ones included, so the
model cannot predict every position of a sequence in one pass: it trains on every prefix of
every training sequence with a full-softmax cross-entropy on the last item only
(``BaselineTrainConfig(prefixes=True)``, its pipeline), and always reads a window of exactly
``max_length`` items, padding included, as the filter's frequencies depend on its length.

Published Beauty setting: hidden 64, 2 layers, 1 head, dropout 0.5 (hidden and attention),
alpha 0.7, c 5, Adam at 5e-4, batch 256, length 50, patience 10; weights drawn at std 0.02.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from onerec.baselines.base import PAD, SequenceBatch, SequentialRecommender, attention_mask
from onerec.baselines.sasrec import Dropout, SelfAttention, next_item_loss
from onerec.exceptions import BaselineError


class FrequencyFilter(nn.Module):
    """``LN(x + dropout(low + beta^2 * (x - low)))``, ``low`` = the lowest ``c // 2 + 1``
    frequencies of ``x`` along the sequence."""

    def __init__(self, hidden: int, c: int, dropout: float) -> None:
        super().__init__()
        self.keep = c // 2 + 1
        self.sqrt_beta = nn.Parameter(torch.randn(1, 1, hidden))
        self.drop = Dropout(dropout)
        self.ln = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfft(x, dim=1, norm="ortho")  # (B, L // 2 + 1, D)
        spectrum[:, self.keep :] = 0
        low = torch.fft.irfft(spectrum, n=x.shape[1], dim=1, norm="ortho")
        return self.ln(x + self.drop(low + self.sqrt_beta**2 * (x - low)))


class BSARecBlock(nn.Module):
    """``alpha * filter(x) + (1 - alpha) * LN(x + attn(x))``, then ``LN(h + FFN(h))``."""

    def __init__(self, hidden: int, heads: int, dropout: float, alpha: float, c: int) -> None:
        super().__init__()
        self.alpha = alpha
        self.filter = FrequencyFilter(hidden, c, dropout)
        self.attn = SelfAttention(hidden, heads, dropout)
        self.ln_attn, self.ln_ffn = nn.LayerNorm(hidden, eps=1e-12), nn.LayerNorm(hidden, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attended = self.ln_attn(x + self.drop(self.attn(x, mask)))
        h = self.alpha * self.filter(x) + (1 - self.alpha) * attended
        return self.ln_ffn(h + self.drop(self.ffn(h)))


class BSARec(SequentialRecommender):
    """Frequency filter + causal self-attention over a fixed window of ``max_length`` items."""

    prefix_training = True

    def __init__(
        self,
        num_items: int,
        max_length: int = 50,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 1,
        dropout: float = 0.5,
        alpha: float = 0.7,
        c: int = 5,
    ) -> None:
        super().__init__(num_items, max_length)
        if not 0.0 <= alpha <= 1.0:
            raise BaselineError(f"BSARec alpha must be in [0, 1], got {alpha}")
        if not 1 <= c <= max_length:
            raise BaselineError(f"BSARec c must be in [1, max_length={max_length}], got {c}")
        if not 0.0 <= dropout < 1.0:
            raise BaselineError(f"dropout must be in [0, 1), got {dropout}")
        if layers < 1:
            raise BaselineError(f"BSARec layers must be >= 1, got {layers}")
        self.name = "bsarec"
        self.hidden, self.alpha, self.c = hidden, alpha, c
        self.items = nn.Embedding(num_items + 1, hidden, padding_idx=PAD)
        self.positions = nn.Embedding(max_length, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(
            BSARecBlock(hidden, heads, dropout, alpha, c) for _ in range(layers)
        )
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        with torch.no_grad():
            self.items.weight[PAD].zero_()

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L') -> (B, max_length, D)``: left-padded (or cut) to the full window first."""
        L = self.max_length
        tokens = F.pad(tokens, (L - tokens.shape[1], 0)) if tokens.shape[1] < L else tokens[:, -L:]
        x = self.drop(self.emb_norm(self.items(tokens) + self.positions.weight))
        mask = attention_mask(tokens, causal=True)
        for block in self.blocks:
            x = block(x, mask)
        return x

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        if not batch.last_only:
            raise BaselineError(
                "BSARec's frequency filter mixes future positions into past ones: it trains on "
                "prefixes only. Fix: BaselineTrainConfig(prefixes=True)."
            )
        h = self.encode(batch.tokens[:, :-1])[:, -1:]  # (B, 1, D)
        return next_item_loss(h, batch.tokens[:, -1:], self.items.weight, "ce")

    def forward_scores(self, tokens: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return self.encode(tokens)[:, -1] @ self.items.weight[1:].T
