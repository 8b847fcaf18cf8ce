"""Examples: what a split hands to a model and to the evaluator.

One row per prediction request: a user, the history the model may read, the items it should
recommend (one for leave-one-out, several for a session target), and every item the user had
already interacted with before the request (for the "exclude already-seen items" option: the
history a model reads is truncated, the seen set is not). Optionally, side features of every
history item (``onerec.data.features``), row for row beside ``history``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onerec.data.files import read_parquet
from onerec.data.ragged import Ragged
from onerec.exceptions import MissingColumnError


@dataclass(frozen=True)
class Examples:
    user: np.ndarray  # (n,) int64 user indices
    history: Ragged  # item indices, oldest first, at most the protocol's history length
    target: Ragged  # item indices to recommend, in time order
    seen: Ragged  # every item interacted with before the first target, oldest first
    # (nnz, F) float32 values: the features of history.values[i] in row i, same offsets
    history_features: Ragged | None = None

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("history", "target", "seen"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"Examples.{name} has {len(getattr(self, name))} rows but there are {n} users"
                )
        f = self.history_features
        if f is not None:
            if f.values.ndim != 2 or not np.array_equal(f.offsets, self.history.offsets):
                raise ValueError(
                    f"Examples.history_features must hold one (F,) row per history item with the "
                    f"history's offsets; got values of shape {f.values.shape} for "
                    f"{len(self.history.values)} history items"
                )

    def __len__(self) -> int:
        return len(self.user)

    def take(self, rows: np.ndarray) -> "Examples":
        rows = np.asarray(rows, dtype=np.int64)
        features = None if self.history_features is None else self.history_features.take(rows)
        return Examples(self.user[rows], self.history.take(rows), self.target.take(rows),
                        self.seen.take(rows), features)  # fmt: skip

    @property
    def n_features(self) -> int:
        """Side features per history item (0 without features)."""
        return 0 if self.history_features is None else int(self.history_features.values.shape[1])

    def max_item(self) -> int:
        """Largest item index referenced anywhere (-1 when empty)."""
        parts = [self.history.values, self.target.values, self.seen.values]
        return int(max((p.max() for p in parts if len(p)), default=-1))

    # persistence ------------------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        def col(r: Ragged) -> pa.ListArray:
            return pa.ListArray.from_arrays(pa.array(r.offsets, pa.int64()), pa.array(r.values))

        columns = {
            "user": pa.array(self.user, pa.int64()),
            "history": col(self.history),
            "target": col(self.target),
            "seen": col(self.seen),
        }
        if self.history_features is not None:
            f = self.history_features
            rows = pa.FixedSizeListArray.from_arrays(
                pa.array(f.values.astype(np.float32).ravel(), pa.float32()), f.values.shape[1]
            )  # one fixed-size list of F floats per history item
            columns["history_features"] = pa.ListArray.from_arrays(
                pa.array(f.offsets, pa.int64()), rows
            )
        return pa.table(columns)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> "Examples":
        def ragged(name: str) -> Ragged:
            arr = table.column(name).combine_chunks()
            offsets = arr.offsets.to_numpy().astype(np.int64)
            values = arr.values.to_numpy().astype(np.int64)
            # a sliced ListArray may start past 0: re-base it
            return Ragged(values[offsets[0] : offsets[-1]], offsets - offsets[0])

        return cls(
            table.column("user").to_numpy().astype(np.int64),
            ragged("history"),
            ragged("target"),
            ragged("seen"),
            _features(table) if "history_features" in table.column_names else None,
        )

    def save(self, path: str | Path) -> None:
        pq.write_table(self.to_arrow(), path)

    @classmethod
    def load(cls, path: str | Path) -> "Examples":
        """Examples written by :meth:`save`; a damaged file raises a named :class:`DataError`."""
        hint = "the file is damaged: write the examples (`onerec data split`) again."
        table = read_parquet(path, hint=hint)
        missing = [c for c in ("user", "history", "target", "seen") if c not in table.column_names]
        if missing:
            raise MissingColumnError(
                f"missing column(s) {missing}; it has {table.column_names}", path=path, hint=hint
            )
        return cls.from_arrow(table)


def _features(table: pa.Table) -> Ragged:
    """The ``history_features`` column (a list of fixed-size float lists per row) as a Ragged of
    ``(nnz, F)`` float32 rows."""
    arr = table.column("history_features").combine_chunks()
    offsets = arr.offsets.to_numpy().astype(np.int64)
    width = arr.type.value_type.list_size
    rows = arr.values.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    rows = rows.reshape(-1, width)
    return Ragged(rows[offsets[0] : offsets[-1]], offsets - offsets[0])
