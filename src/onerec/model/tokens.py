"""Where semantic-ID codes sit in the model's vocabulary, and what a decoder sequence looks like.

Vocabulary: PAD = 0, BOS = 1, SEP = 2, then every level's codes in its own slice: code c at
level l is token ``3 + offset[l] + c`` with ``offset[l] = level_sizes[0] + ... +
level_sizes[l-1]``. Giving each level its own slice (rather than sharing ids across levels)
lets the model's softmax at a position that predicts level l be restricted to that level's
``level_sizes[l]`` tokens: a code of the wrong level can never be predicted.

A session of m items is decoded as ``[BOS] c1_1 .. c1_L [SEP] c2_1 .. c2_L [SEP] ... cm_L [SEP]``
(L = L' codes per item). Decoder input = that sequence without its last token, target = without
its first, so position t of the input is slot ``t % (L+1)`` of item ``t // (L+1)``: slot 0 holds
the item's start token (BOS for the first item, SEP for the others) and predicts the item's
level-0 code; slot j >= 1 holds the level-(j-1) code and predicts level j, or SEP when j = L.
SEP is deterministic (it always follows the L-th code), so the loss skips those positions.

History items are encoded the same way, L' tokens each, in ``(B, n, L')`` tensors.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from onerec.data.ragged import Ragged
from onerec.exceptions import ModelError


class TokenLayout:
    """Token ids of codes and special tokens for one tokenizer's ``level_sizes``."""

    PAD = 0
    BOS = 1
    SEP = 2
    N_SPECIAL = 3

    def __init__(self, level_sizes: Sequence[int]) -> None:
        self.level_sizes: list[int] = [int(k) for k in level_sizes]
        if not self.level_sizes or min(self.level_sizes) < 1:
            raise ModelError(f"level_sizes must be non-empty ints >= 1, got {level_sizes!r}")
        starts = np.cumsum([0] + self.level_sizes)[:-1] + self.N_SPECIAL
        self.level_start: list[int] = [int(s) for s in starts]  # first token id of each level
        self.vocab_size = self.N_SPECIAL + sum(self.level_sizes)

    @property
    def n_levels(self) -> int:
        """Codes per item (L')."""
        return len(self.level_sizes)

    @property
    def block(self) -> int:
        """Decoder positions per item: its start token (BOS or SEP) and its L' codes."""
        return self.n_levels + 1

    def level_slice(self, level: int) -> slice:
        """The token ids of level ``level``'s codes."""
        return slice(self.level_start[level], self.level_start[level] + self.level_sizes[level])

    # --- items <-> tokens --------------------------------------------------------------------
    def encode_items(self, codes: Tensor) -> Tensor:
        """Tokens ``(..., L')`` of code sequences ``(..., L')`` (one row per item)."""
        codes = self._check_codes(codes, "codes")
        return codes + torch.tensor(self.level_start, device=codes.device)

    def decode(self, tokens: Tensor) -> Tensor:
        """Codes ``(..., L')`` of item tokens ``(..., L')``; the inverse of ``encode_items``."""
        tokens = torch.as_tensor(tokens)
        if tokens.ndim < 1 or tokens.shape[-1] != self.n_levels:
            raise ModelError(
                f"expected item tokens (..., {self.n_levels}), got shape {tuple(tokens.shape)}"
            )
        return self._check_codes(tokens - torch.tensor(self.level_start, device=tokens.device),
                                 "tokens (as codes)")  # fmt: skip

    def _check_codes(self, codes: Any, name: str) -> Tensor:
        codes = torch.as_tensor(codes)
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ModelError(f"{name}: expected integer codes, got dtype {codes.dtype}")
        if codes.ndim < 1 or codes.shape[-1] != self.n_levels:
            raise ModelError(
                f"{name}: expected (..., {self.n_levels}) codes (one per level), "
                f"got shape {tuple(codes.shape)}"
            )
        codes = codes.to(torch.int64)
        if codes.numel():
            high = torch.tensor(self.level_sizes, device=codes.device)
            bad = (codes < 0) | (codes >= high)
            if bool(bad.any()):
                level = int(torch.nonzero(bad)[0, -1])
                raise ModelError(
                    f"{name}: a level-{level} value lies outside [0, {self.level_sizes[level]})"
                )
        return codes

    # --- decoder sequences -----------------------------------------------------------------
    def session_targets(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder input and target tokens, each ``(B, m * (L'+1))``, for sessions ``(B, m, L')``.

        Target at the SEP-predicting positions is SEP (``target_levels`` marks them -1).
        """
        codes = self._check_codes(codes, "session codes")
        if codes.ndim != 3:
            raise ModelError(f"expected session codes (B, m, L'), got shape {tuple(codes.shape)}")
        b, m, _ = codes.shape
        tokens = self.encode_items(codes)  # (B, m, L')
        sep = torch.full((b, m, 1), self.SEP, dtype=torch.int64, device=codes.device)
        body = torch.cat([tokens, sep], dim=2).reshape(b, m * self.block)  # c.. SEP c.. SEP
        bos = torch.full((b, 1), self.BOS, dtype=torch.int64, device=codes.device)
        sequence = torch.cat([bos, body], dim=1)  # (B, 1 + m * (L'+1))
        return sequence[:, :-1], sequence[:, 1:]

    def session_input(self, items: Tensor, *, as_codes: bool = False) -> Tensor:
        """Decoder input ``(N, m * (L'+1) - 1)`` of sessions ``(N, m, L')`` of item tokens (or of
        codes, with ``as_codes``): ``[BOS] t1 .. [SEP] t2 .. tm`` without the last code, whose
        only successor is the SEP that is never scored."""
        if as_codes:
            items = self.encode_items(items)
        if items.ndim != 3 or items.shape[2] != self.n_levels:
            raise ModelError(
                f"expected sessions (N, m, {self.n_levels}), got shape {tuple(items.shape)}"
            )
        n, m, _ = items.shape
        start = torch.full((n, m, 1), self.SEP, dtype=torch.int64, device=items.device)
        start[:, 0] = self.BOS
        return torch.cat([start, items.long()], dim=2).reshape(n, m * self.block)[:, :-1]

    def decoder_positions(
        self, length: int, start: int = 0, device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Item index and slot ``(length,)`` of decoder positions ``start .. start+length-1``.

        Slot 0 is an item's start token (BOS / SEP), slot j >= 1 its level-(j-1) code.
        """
        t = torch.arange(start, start + length, device=device)
        return t // self.block, t % self.block

    def target_levels(self, length: int, device: torch.device | str | None = None) -> Tensor:
        """Level ``(length,)`` each decoder position predicts; -1 where it predicts SEP."""
        _, slot = self.decoder_positions(length, device=device)
        return torch.where(slot < self.n_levels, slot, -1)

    # --- histories ---------------------------------------------------------------------------
    def encode_history(self, items: Tensor, item_codes: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder inputs from padded history item ids ``(B, n)`` (-1 = padding).

        ``item_codes`` is the catalog's ``(N, L')`` code table (``SemanticIds.codes``). Returns
        tokens ``(B, n, L')`` (PAD where padded) and the item mask ``(B, n)`` (True = an item).
        """
        items = torch.as_tensor(items, device=item_codes.device)
        if items.ndim != 2 or items.dtype.is_floating_point:
            raise ModelError(
                f"expected padded history item ids (B, n), got {items.dtype} tensor of shape "
                f"{tuple(items.shape)}"
            )
        items = items.to(torch.int64)
        if item_codes.ndim != 2 or item_codes.shape[1] != self.n_levels:
            raise ModelError(
                f"item_codes must be (N, {self.n_levels}), got shape {tuple(item_codes.shape)}"
            )
        if items.numel() and int(items.max()) >= item_codes.shape[0]:
            raise ModelError(
                f"history item id {int(items.max())} is outside the catalog of "
                f"{item_codes.shape[0]} items"
            )
        mask = items >= 0
        tokens = self.encode_items(item_codes[items.clamp(min=0)])  # (B, n, L')
        return tokens.masked_fill(~mask.unsqueeze(-1), self.PAD), mask


def pad_history(history: Ragged | Tensor | np.ndarray, max_len: int) -> Tensor:
    """History item ids as a ``(B, n)`` int64 tensor, -1 padded, most recent item last.

    A :class:`Ragged` (oldest first, as in ``Examples.history``) keeps its last ``max_len``
    items per row and is right-aligned; an already padded array (-1 = padding) keeps its last
    ``max_len`` columns.
    """
    if isinstance(history, Ragged):
        width = max(1, min(max_len, int(history.lengths.max(initial=0))))
        return torch.from_numpy(history.to_padded(width, pad=-1, align="right"))
    padded = torch.as_tensor(history)
    if padded.ndim != 2 or padded.dtype.is_floating_point:
        raise ModelError(
            f"history must be a Ragged or a (B, n) integer array, got {padded.dtype} with shape "
            f"{tuple(padded.shape)}"
        )
    padded = padded.to(torch.int64)
    if padded.shape[1] > max_len:
        padded = padded[:, -max_len:]
    return padded


def pad_features(
    history: Ragged | Tensor | np.ndarray, features: Tensor | np.ndarray, max_len: int
) -> Tensor:
    """Side features laid out like :func:`pad_history`: ``(B, n, F)`` float32, zeros on padding.

    With a :class:`Ragged` history, ``features`` is ``(len(history.values), F)``: row i belongs
    to ``history.values[i]``. With a padded ``(B, n)`` history, ``features`` is ``(B, n, F)``.
    """
    feats = torch.as_tensor(np.asarray(features) if not isinstance(features, Tensor) else features)
    feats = feats.float()
    if isinstance(history, Ragged):
        if feats.ndim != 2 or feats.shape[0] != len(history.values):
            raise ModelError(
                f"with a Ragged history, features must be (history items = "
                f"{len(history.values)}, F), got {tuple(feats.shape)}"
            )
        index = Ragged(np.arange(len(history.values), dtype=np.int64), history.offsets)
        rows = pad_history(index, max_len)  # (B, n), -1 on padding
        table = torch.cat([feats, feats.new_zeros(1, feats.shape[1])])  # row -1: zeros
        return table[rows]
    shape = tuple(torch.as_tensor(history).shape)
    n = shape[1] if len(shape) == 2 else -1
    if feats.ndim != 3 or tuple(feats.shape[:2]) != (shape[0], n):
        raise ModelError(
            f"with a padded (B, n) history, features must be (B, n, F), got {tuple(feats.shape)}"
        )
    return feats[:, -max_len:] if n > max_len else feats
