"""SASRec (Kang & McAuley, ICDM 2018): a causal self-attention encoder over the item sequence.

Settings as in S3-Rec's baseline, which produced the published .0605 Recall@10 on Beauty:
hidden 64, 2 blocks, 2 heads, dropout 0.5 on embeddings, attention and feed-forward (the
original SASRec also used 0.5 on the sparse Amazon data), maximum length 50, item embeddings
shared between input and output. One forward pass serves every position of a sequence:
position ``t`` predicts item ``t + 1``.

Three losses, as the benchmark compares them:

- ``bce``: the original one, binary cross-entropy of the next item against one uniformly
  sampled negative per position;
- ``ce``: full-softmax cross-entropy over the whole catalog (what later work found much
  stronger; RecBole's default);
- ``ss``: sampled softmax, cross-entropy of the next item against ``negatives`` uniformly
  sampled items per position (SASRec+SS of the eSASRec benchmark, 256 negatives); on CPU an
  epoch costs a fraction of the full softmax's, since 12k-item logits are never built.

Depth, width, heads and dropout are constructor arguments; the block is one too
(:class:`Block`, pre-norm, by default; eSASRec passes its gated LiGR block). With
``BaselineTrainConfig(prefixes=True)`` every prefix of a training sequence is a sample with
its loss on the last item only (how the benchmark trains ``sasrec-ce``).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from onerec.baselines.base import PAD, SequenceBatch, SequentialRecommender, attention_mask
from onerec.exceptions import BaselineError
from onerec.model.softmax import full_softmax_cross_entropy


class Dropout(nn.Module):
    """Inverted dropout from ``torch.rand``: the same as ``nn.Dropout``, but its mask is drawn
    about twice as fast on CPU, where ``bernoulli_`` took 40% of a SASRec training step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


class SelfAttention(nn.Module):
    """Multi-head self-attention with a boolean ``(B, 1, L, L)`` mask (True = may attend)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise BaselineError(f"hidden={hidden} is not divisible by heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, L, d)
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + FFN(LN(x)) (GELU, width 4x)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attn = SelfAttention(hidden, heads, dropout)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 4 * hidden), nn.GELU(), Dropout(dropout), nn.Linear(4 * hidden, hidden)
        )
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        return x + self.drop(self.ffn(self.ln2(x)))


BlockFactory = Callable[[int, int, float], nn.Module]  # (hidden, heads, dropout) -> block


class SequenceEncoder(nn.Module):
    """Embeddings (+ learned positions) -> LayerNorm -> blocks -> final LayerNorm;
    ``(B, L) -> (B, L, D)``.

    The LayerNorm on the embeddings (S3-Rec's and BERT's ``LayerNorm(item + position)``; the
    original SASRec scales them by sqrt(D) instead) matters: without it the embeddings, drawn at
    std 0.02, enter the residual stream far below the blocks' outputs, and SASRec-BCE on Beauty
    learned about 3x slower (validation Recall@10 .024 instead of .059 after 30 epochs).

    ``vocab`` counts every token including padding (0); SASRec has ``num_items + 1``, BERT4Rec
    one more for its mask token.
    """

    def __init__(
        self, vocab: int, max_length: int, hidden: int, layers: int, heads: int, dropout: float,
        causal: bool, block: BlockFactory = Block,
    ) -> None:  # fmt: skip
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise BaselineError(f"dropout must be in [0, 1), got {dropout}")
        if layers < 1 or heads < 1 or hidden < 1:
            raise BaselineError(
                f"layers, heads and hidden must be >= 1, got {layers}, {heads} and {hidden}"
            )
        self.causal = causal
        self.items = nn.Embedding(vocab, hidden, padding_idx=PAD)
        self.positions = nn.Embedding(max_length, hidden)
        self.emb_norm = nn.LayerNorm(hidden)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(block(hidden, heads, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(hidden)
        nn.init.normal_(self.items.weight, std=0.02)
        nn.init.normal_(self.positions.weight, std=0.02)
        with torch.no_grad():
            self.items.weight[PAD].zero_()

    def forward(self, tokens: torch.Tensor, embedded: torch.Tensor | None = None) -> torch.Tensor:
        """``embedded`` replaces the item embeddings of ``tokens`` (FDSA's feature branch)."""
        L = tokens.shape[1]
        x = self.items(tokens) if embedded is None else embedded
        # right-aligned: the last token gets the last position
        x = self.drop(self.emb_norm(x + self.positions.weight[-L:]))
        mask = attention_mask(tokens, self.causal)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)


LOSSES = ("ce", "bce", "ss")


def next_item_loss(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    item_weights: torch.Tensor,
    loss: str,
    negatives: int = 256,
) -> torch.Tensor:
    """Mean loss over positions with a real target.

    ``hidden`` ``(B, L, D)``, ``targets`` ``(B, L)`` tokens (0 = no target), ``item_weights``
    ``(num_items + 1, D)`` output embeddings (row 0 = padding, never a candidate). Only real
    positions are gathered before the product, so a batch of short sequences never builds a
    ``(B * L, num_items)`` matrix of padding. ``negatives``: items per position for ``ss``.
    """
    real = targets != PAD
    h, t = hidden[real], targets[real]  # (n, D), (n,)
    if loss == "ce":
        return full_softmax_cross_entropy(h, item_weights[1:], t - 1)
    if loss == "bce":
        num_items = item_weights.shape[0] - 1
        # one negative per position, uniform over the catalog, never the target itself
        neg = torch.randint(1, num_items, t.shape, device=t.device)
        neg = neg + (neg >= t).long()
        pos_logit = (h * item_weights[t]).sum(-1)
        neg_logit = (h * item_weights[neg]).sum(-1)
        return F.binary_cross_entropy_with_logits(
            torch.cat([pos_logit, neg_logit]),
            torch.cat([torch.ones_like(pos_logit), torch.zeros_like(neg_logit)]),
        )
    if loss == "ss":
        num_items = item_weights.shape[0] - 1
        neg = torch.randint(1, num_items + 1, (len(t), negatives), device=t.device)  # (n, N)
        pos_logit = (h * item_weights[t]).sum(-1, keepdim=True)  # (n, 1)
        neg_logit = torch.einsum("nd,nkd->nk", h, item_weights[neg])
        # a negative that happens to be the target is not a negative
        neg_logit = neg_logit.masked_fill(neg == t[:, None], float("-inf"))
        logits = torch.cat([pos_logit, neg_logit], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(t), dtype=torch.long, device=t.device))
    raise BaselineError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")


class SASRec(SequentialRecommender):
    """Causal self-attention over the last ``max_length`` items; scores = h_last . E_item.
    Trains on whole sequences (a loss at every position) or on prefixes (the last one only)."""

    prefix_training = True

    def __init__(
        self,
        num_items: int,
        max_length: int = 50,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.5,
        loss: str = "ce",
        negatives: int = 256,
        block: BlockFactory = Block,
    ) -> None:
        super().__init__(num_items, max_length)
        if loss not in LOSSES:
            raise BaselineError(f"SASRec loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if loss in ("bce", "ss") and num_items < 2:
            raise BaselineError(f"the {loss} loss samples negative items: it needs >= 2 items")
        if loss == "ss" and negatives < 1:
            raise BaselineError(f"the sampled softmax needs negatives >= 1, got {negatives}")
        self.loss_kind = loss
        self.name = f"sasrec-{loss}"
        self.hidden = hidden
        self.negatives = negatives if loss == "ss" else None
        self.encoder = SequenceEncoder(num_items + 1, max_length, hidden, layers, heads, dropout,
                                       causal=True, block=block)  # fmt: skip

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        h = self.encoder(batch.tokens[:, :-1])
        targets = batch.tokens[:, 1:]
        if batch.last_only:  # one prefix per row: its last item is the only target
            h, targets = h[:, -1:], targets[:, -1:]
        return next_item_loss(h, targets, self.encoder.items.weight, self.loss_kind,
                              self.negatives or 0)  # fmt: skip

    def forward_scores(self, tokens: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        h = self.encoder(tokens)[:, -1]  # right-aligned: the last column is the newest item
        return h @ self.encoder.items.weight[1:].T

