"""What one training step reads: windows of users' training sequences, batched by length.

The model's ``sequence_loss`` scores every next-item target of a sequence from one encoder pass,
so the unit of training data is a *sequence*, not a (history, target) pair. A sequence longer
than ``max_length`` items is cut into windows: the first holds items ``0 .. max_length - 1``
and scores targets from column 1; each later window starts ``history_length`` items before its
first target, so every target still sees its full history, and scores only the targets after
that context. Every target of the training sequence is scored exactly once per epoch.

With ``prefix_windows`` every target is a window of its own instead: its history (at most
``history_length`` items) and its target items, the newest history item in the last context
column, as at inference. Each target then gets its own encoder pass and dropout, and a batch
mixes targets of many users (SASRec-CE's training in our harness, "every prefix a sample"), at
the cost of re-encoding the shared history once per target.

Side features of the items (``Split.train_features``), when given, are cut the same way, so
window w's feature rows belong to its items one for one.

Batches group windows of similar length (no compute is spent on long padding) and hold about
``batch_targets`` targets each; which windows share a batch is reshuffled every epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onerec.data.ragged import Ragged
from onerec.exceptions import ConfigError


@dataclass(frozen=True)
class Windows:
    """Slices of training sequences; window w scores the targets that start at its columns
    ``first_target[w] .. end_target[w] - 1``."""

    user: np.ndarray  # (W,) user index of every window
    items: Ragged  # item ids per window, oldest first
    first_target: np.ndarray  # (W,) >= 1
    end_target: np.ndarray  # (W,) one past the last scored column
    features: Ragged | None = None  # (nnz, F) side features of `items`, same offsets

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_targets(self) -> np.ndarray:
        """Targets (columns that start a next-items target) in every window."""
        return np.maximum(self.end_target - self.first_target, 0)


def _check_features(sequences: Ragged, features: Ragged | None) -> None:
    if features is not None and not np.array_equal(features.offsets, sequences.offsets):
        raise ConfigError(
            "features must hold one row per item of sequences (the same offsets); build both "
            "from the same split (Split.train_sequences and Split.train_features)"
        )


def training_windows(
    sequences: Ragged, history_length: int, max_length: int, features: Ragged | None = None
) -> Windows:
    """Cut row ``u`` of ``sequences`` (user u's training items, oldest first) into windows of at
    most ``max_length`` items; rows with fewer than 2 items give no window (no target).
    ``features``: side-feature rows of the items (same offsets as ``sequences``), sliced alike."""
    _check_features(sequences, features)
    if history_length < 1:
        raise ConfigError(f"history_length must be >= 1, got {history_length}")
    if max_length <= history_length:
        raise ConfigError(
            f"max_length ({max_length}) must exceed history_length ({history_length}): a window "
            f"after the first repeats history_length items of context before its targets"
        )
    lengths = sequences.lengths
    step = max_length - history_length  # targets per later window
    # targets 1 .. n-1: the first window takes max_length - 1, the others `step` each
    extra = np.maximum(lengths - max_length, 0)
    per_row = np.where(lengths >= 2, 1 + -(-extra // step), 0)
    row = np.repeat(np.arange(len(sequences), dtype=np.int64), per_row)
    k = np.arange(int(per_row.sum()), dtype=np.int64) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    first_col = np.where(k == 0, 1, max_length + (k - 1) * step)  # first target, in the row
    start = np.where(k == 0, 0, first_col - history_length)
    end = np.minimum(np.where(k == 0, max_length, first_col + step), lengths[row])
    starts, lengths = sequences.offsets[row] + start, end - start
    items = sequences.slices(starts, lengths)
    window_features = None if features is None else features.slices(starts, lengths)
    return Windows(row, items, first_col - start, lengths, window_features)


def prefix_windows(
    sequences: Ragged, history_length: int, session_items: int = 1,
    features: Ragged | None = None,
) -> Windows:
    """One window per target of row ``u`` of ``sequences`` (user u's training items, oldest
    first): for the target starting at item j >= 1, items ``max(0, j - history_length) .. j +
    session_items - 1`` (cut at the sequence's end), scoring column j alone. Every target is
    scored exactly once per epoch, as with :func:`training_windows`."""
    _check_features(sequences, features)
    if history_length < 1 or session_items < 1:
        raise ConfigError(
            f"history_length and session_items must be >= 1, got {history_length} and "
            f"{session_items}"
        )
    lengths = sequences.lengths
    per_row = np.maximum(lengths - 1, 0)
    row = np.repeat(np.arange(len(sequences), dtype=np.int64), per_row)
    first = np.cumsum(per_row) - per_row
    target = np.arange(int(per_row.sum()), dtype=np.int64) - np.repeat(first, per_row) + 1
    start = np.maximum(target - history_length, 0)
    end = np.minimum(target + session_items, lengths[row])
    starts = sequences.offsets[row] + start
    items = sequences.slices(starts, end - start)
    window_features = None if features is None else features.slices(starts, end - start)
    column = target - start
    return Windows(row, items, column, column + 1, window_features)


def length_batches(
    windows: Windows, batch_targets: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Window indices per batch: similar lengths together, about ``batch_targets`` targets each
    (a window with more targets than that is a batch of its own), in a random order."""
    if batch_targets < 1:
        raise ConfigError(f"batch_targets must be >= 1, got {batch_targets}")
    lengths = windows.items.lengths
    # sort by length, ties in random order, so batch membership changes from epoch to epoch
    order = np.lexsort((rng.random(len(windows)), lengths))
    targets = windows.n_targets[order]
    batches, start, total = [], 0, 0
    for i, t in enumerate(targets):
        if total and total + t > batch_targets:
            batches.append(order[start:i])
            start, total = i, 0
        total += int(t)
    if start < len(order):
        batches.append(order[start:])
    return [batches[i] for i in rng.permutation(len(batches))]
