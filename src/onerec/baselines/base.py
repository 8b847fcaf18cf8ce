"""The one contract every baseline honours, so one training loop and one evaluator serve them all.

A :class:`SequentialRecommender` reads a user's recent items and scores the whole catalog:

- ``loss(batch)``: the training loss of a :class:`SequenceBatch` (models without training, such
  as popularity, are never asked);
- ``scores(history, users)``: ``(B, num_items)`` scores of every item for each history;
- ``rank(examples, k, exclude_seen)``: the top-``k`` items per example, from ``scores``;
- ``score_fn(examples)``: the callable :func:`onerec.evaluation.evaluate` takes, so every model
  is measured by the same code (full ranking over all items).

Item indices are the dataset's (``0 .. num_items - 1``). Inside the models, index 0 is padding
and item ``i`` is token ``i + 1``; :func:`pad_histories` does that shift at the boundary.
Histories are right-aligned (the most recent item in the last column, padding on the left), as
SASRec reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from onerec.data.examples import Examples
from onerec.data.ragged import Ragged
from onerec.evaluation.metrics import fill_seen
from onerec.exceptions import BaselineError

PAD = 0  # token of padding; item i is token i + 1


@dataclass
class SequenceBatch:
    """A batch of training sequences, right-aligned tokens ``(B, max_length + 1)`` (0 = padding).

    Causal models read ``tokens[:, :-1]`` and predict ``tokens[:, 1:]`` at every position; a
    masked model (BERT4Rec) reads the last ``max_length`` tokens and hides some of them. With
    ``last_only`` each row is one prefix of a user's sequence and only its last token is a
    target (:func:`prefix_batches`).
    """

    tokens: torch.Tensor  # (B, L + 1) int64
    users: torch.Tensor  # (B,) int64 user indices
    last_only: bool = False

    def to(self, device: torch.device | str) -> "SequenceBatch":
        return SequenceBatch(self.tokens.to(device), self.users.to(device), self.last_only)


def pad_histories(histories: Ragged, width: int) -> torch.Tensor:
    """Tokens ``(B, width)``: each row's last ``width`` items shifted by one, right-aligned,
    0 on the left where a history is shorter."""
    return torch.from_numpy(histories.to_padded(width, pad=-1, align="right") + 1)


def sequence_batches(
    sequences: Ragged,
    rows: np.ndarray,
    max_length: int,
) -> SequenceBatch:
    """The batch of training rows ``rows`` of ``sequences`` (row = user), last
    ``max_length + 1`` items of each, padded only as wide as the longest row needs (most
    sequences are short: a narrower batch is the same computation, cheaper)."""
    rows = np.asarray(rows, dtype=np.int64)
    picked = sequences.take(rows)
    width = min(max_length + 1, max(1, int(picked.lengths.max(initial=0))))
    tokens = pad_histories(picked, width)
    return SequenceBatch(tokens, torch.from_numpy(rows))


def prefix_samples(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every prefix of every training sequence with at least two items, as ``(rows, ends)``: the
    sample ``i`` is ``sequences[rows[i]][:ends[i]]``, whose last item is its target."""
    lengths = np.asarray(lengths, dtype=np.int64)
    per_row = np.maximum(lengths - 1, 0)  # ends 2 .. length
    rows = np.repeat(np.arange(len(lengths), dtype=np.int64), per_row)
    first = np.repeat(np.cumsum(per_row) - per_row, per_row)
    ends = np.arange(len(rows), dtype=np.int64) - first + 2
    return rows, ends


def prefix_batches(
    sequences: Ragged, rows: np.ndarray, ends: np.ndarray, max_length: int
) -> SequenceBatch:
    """The prefixes ``sequences[rows[i]][:ends[i]]``, each cut to its last ``max_length + 1``
    items, right-aligned as :func:`sequence_batches` does; only the last token is a target.

    Training on every prefix (BSARec's and FMLP-Rec's data pipeline) sees each target with its
    history at the positions inference uses, the newest item in the last column."""
    rows, ends = np.asarray(rows, dtype=np.int64), np.asarray(ends, dtype=np.int64)
    widths = np.minimum(ends, max_length + 1)
    picked = sequences.slices(sequences.offsets[rows] + ends - widths, widths)
    tokens = pad_histories(picked, max(1, int(widths.max(initial=0))))
    return SequenceBatch(tokens, torch.from_numpy(rows), last_only=True)


class SequentialRecommender(nn.Module):
    """Base class: a next-item recommender over a fixed catalog of ``num_items`` items.

    Subclasses implement :meth:`loss` and :meth:`scores`; :meth:`rank` and :meth:`score_fn` are
    shared so that ranking and evaluation are the same code for every model.
    """

    name: str = "base"
    trainable: bool = True  # False: nothing to fit (popularity)
    prefix_training: bool = False  # True: ``loss`` honours ``SequenceBatch.last_only``

    def __init__(self, num_items: int, max_length: int = 50) -> None:
        super().__init__()
        if num_items < 1:
            raise BaselineError(f"num_items must be >= 1, got {num_items}")
        if max_length < 1:
            raise BaselineError(f"max_length must be >= 1, got {max_length}")
        self.num_items = int(num_items)
        self.max_length = int(max_length)

    # to implement ------------------------------------------------------------------------------
    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        """Scalar training loss of one batch."""
        raise NotImplementedError(f"{type(self).__name__} has no training loss")

    def forward_scores(self, tokens: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """``(B, num_items)`` scores from right-aligned history tokens ``(B, max_length)``."""
        raise NotImplementedError

    # shared ------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        b = next(self.buffers(), None)
        t = p if p is not None else b
        return t.device if t is not None else torch.device("cpu")

    def _history_tokens(self, history: Ragged | torch.Tensor) -> torch.Tensor:
        if isinstance(history, Ragged):
            tokens = pad_histories(history, self.max_length)
        else:
            h = torch.as_tensor(history)
            if h.ndim != 2 or h.dtype.is_floating_point:
                raise BaselineError(
                    f"history must be a Ragged of item indices or an integer (B, L) tensor of "
                    f"item indices right-aligned with -1 padding; got {h.dtype} {tuple(h.shape)}"
                )
            tokens = h.long() + 1  # -1 padding -> 0
            if tokens.shape[1] > self.max_length:
                tokens = tokens[:, -self.max_length :]
            elif tokens.shape[1] < self.max_length:
                tokens = nn.functional.pad(tokens, (self.max_length - tokens.shape[1], 0))
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > self.num_items):
            raise BaselineError(
                f"history items must be in [0, {self.num_items}) (or -1 for padding); got "
                f"{int(tokens.min()) - 1}..{int(tokens.max()) - 1}"
            )
        return tokens

    @torch.no_grad()
    def scores(
        self, history: Ragged | torch.Tensor, users: np.ndarray | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores ``(B, num_items)`` of every catalog item after each history (float32, CPU).

        ``history`` is a :class:`Ragged` of item indices (oldest first) or a ``(B, L)`` integer
        tensor right-aligned with -1 padding; only the last ``max_length`` items are read.
        """
        tokens = self._history_tokens(history)
        n = tokens.shape[0]
        users_t = torch.as_tensor(users if users is not None else np.full(n, -1)).long()
        if users_t.shape != (n,):
            raise BaselineError(f"users must be ({n},), got {tuple(users_t.shape)}")
        was_training = self.training
        self.eval()
        try:
            out = self.forward_scores(tokens.to(self.device), users_t.to(self.device))
        finally:
            self.train(was_training)
        return out.float().cpu()

    def score_fn(self, examples: Examples) -> Callable[[np.ndarray], torch.Tensor]:
        """``f(rows) -> (len(rows), num_items)``: the scorer :func:`evaluate` takes."""

        def f(rows: np.ndarray) -> torch.Tensor:
            return self.scores(examples.history.take(rows), examples.user[rows])

        return f

    @torch.no_grad()
    def rank(
        self, examples: Examples, k: int = 10, exclude_seen: bool = False, batch_size: int = 1024
    ) -> torch.Tensor:
        """Top-``k`` item indices ``(len(examples), k)``, best first; with ``exclude_seen`` a
        user's earlier items are never ranked (S3-Rec's setting)."""
        if k < 1 or k > self.num_items:
            raise BaselineError(f"k must be in [1, {self.num_items}], got {k}")
        out = torch.empty((len(examples), k), dtype=torch.long)
        for start in range(0, len(examples), batch_size):
            rows = np.arange(start, min(start + batch_size, len(examples)))
            s = self.score_fn(examples)(rows)
            if exclude_seen:
                fill_seen(s, examples.seen.take(rows))
            out[rows] = s.topk(k, dim=1).indices
        return out


def attention_mask(tokens: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean ``(B, 1, L, L)`` mask, True where a query may attend to a key: real keys (and, for
    causal models, only earlier ones); every position may always attend to itself, so a padding
    row never has an empty softmax."""
    L = tokens.shape[1]
    allowed = (tokens != PAD)[:, None, None, :]  # keys
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=tokens.device).tril()
    return allowed | torch.eye(L, dtype=torch.bool, device=tokens.device)
