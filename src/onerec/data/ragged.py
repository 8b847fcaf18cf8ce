"""A ragged array: many variable-length integer rows in two flat arrays (CSR layout).

Sequences of items per user, histories and targets of evaluation examples, allowed next tokens in
a prefix trie: all of them are "a list of int lists". Python lists of lists cost ~100 bytes per
element and cannot be vectorized; two numpy arrays cost 8 and can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class Ragged:
    """Rows ``values[offsets[i]:offsets[i+1]]`` for ``i`` in ``range(len(offsets) - 1)``."""

    values: np.ndarray  # (nnz,) int64; or (nnz, F) rows (side features), sliced the same way
    offsets: np.ndarray  # (n_rows + 1,) int64, offsets[0] == 0, non-decreasing

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise ValueError("Ragged offsets must be a 1-D array starting at 0")
        if self.offsets[-1] != len(self.values):
            raise ValueError(
                f"Ragged offsets end at {self.offsets[-1]} but there are {len(self.values)} values"
            )

    # construction -----------------------------------------------------------------------------
    @classmethod
    def from_lengths(cls, values: np.ndarray, lengths: np.ndarray) -> "Ragged":
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(np.asarray(values, dtype=np.int64), offsets)

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> "Ragged":
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        values = (
            np.fromiter((v for r in rows for v in r), dtype=np.int64, count=int(lengths.sum()))
            if len(rows)
            else np.zeros(0, dtype=np.int64)
        )
        return cls.from_lengths(values, lengths)

    @classmethod
    def from_sorted_groups(cls, group: np.ndarray, values: np.ndarray, n_groups: int) -> "Ragged":
        """Rows from values already sorted by a group index in ``[0, n_groups)``."""
        lengths = np.bincount(group, minlength=n_groups).astype(np.int64)
        return cls.from_lengths(values, lengths)

    # access -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def row_ids(self) -> np.ndarray:
        """The row index of every value: ``(nnz,)``."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.lengths)

    def tolist(self) -> list[list[int]]:
        return [r.tolist() for r in self]

    def slices(self, starts: np.ndarray, lengths: np.ndarray) -> "Ragged":
        """Rows made of ``values[starts[i] : starts[i] + lengths[i]]``."""
        out_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=out_offsets[1:])
        within = np.arange(out_offsets[-1], dtype=np.int64) - np.repeat(out_offsets[:-1], lengths)
        return Ragged(self.values[np.repeat(starts, lengths) + within], out_offsets)

    def take(self, rows: np.ndarray) -> "Ragged":
        """A new Ragged with the given rows, in the given order (vectorized)."""
        rows = np.asarray(rows, dtype=np.int64)
        return self.slices(self.offsets[rows], self.lengths[rows])

    def head(self, n: int) -> "Ragged":
        """The first ``n`` values of every row (all of a row shorter than ``n``)."""
        if n < 0:
            raise ValueError(f"head length must be >= 0, got {n}")
        return self.slices(self.offsets[:-1], np.minimum(self.lengths, n))

    def tail(self, n: int) -> "Ragged":
        """The last ``n`` values of every row (all of a row shorter than ``n``)."""
        if n < 0:
            raise ValueError(f"tail length must be >= 0, got {n}")
        lengths = np.minimum(self.lengths, n)
        return self.slices(self.offsets[1:] - lengths, lengths)

    def drop_last(self, k: np.ndarray | int) -> "Ragged":
        """Every row without its last ``k`` values (``k`` per row or one for all)."""
        lengths = np.maximum(self.lengths - np.asarray(k, dtype=np.int64), 0)
        return self.slices(self.offsets[:-1], lengths)

    def last(self) -> np.ndarray:
        """The last value of every row; every row must be non-empty."""
        if len(self) and self.lengths.min() == 0:
            raise ValueError("last() of an empty row")
        return self.values[self.offsets[1:] - 1]

    def to_padded(self, width: int | None = None, pad: int = -1, align: str = "left") -> np.ndarray:
        """A dense ``(n_rows, width)`` array. ``align='right'`` puts each row's last value in the
        last column (the usual layout for histories); rows longer than ``width`` keep their end
        when right-aligned and their start when left-aligned."""
        if align not in ("left", "right"):
            raise ValueError(f"align must be 'left' or 'right', got {align!r}")
        lengths = self.lengths
        width = int(lengths.max(initial=0)) if width is None else int(width)
        src = self.tail(width) if align == "right" else self.head(width)
        lengths = src.lengths
        out = np.full((len(self), width), pad, dtype=np.int64)
        rows = src.row_ids
        within = np.arange(len(src.values), dtype=np.int64) - np.repeat(src.offsets[:-1], lengths)
        cols = within + (width - np.repeat(lengths, lengths) if align == "right" else 0)
        out[rows, cols] = src.values
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ragged):
            return NotImplemented
        return np.array_equal(self.offsets, other.offsets) and np.array_equal(
            self.values, other.values
        )

    __hash__ = None  # type: ignore[assignment]
