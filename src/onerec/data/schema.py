"""The data model: id maps, interaction logs, item and user tables, and a dataset bundling them.

Everything is columnar. Users and items are referred to by contiguous indices ``0..n-1``; the
raw ids of the source files live in an :class:`IdMap` saved beside the data, so every index can
be traced back to the file it came from.

An interaction log is rows of (user, item, timestamp) plus any number of optional feedback
signals (watch_time, duration, like, follow, rating, ...) and an optional session id. Signals are
plain named float/int columns: the data layer does not assume which ones exist.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from onerec.exceptions import (
    DataError,
    UnknownIdError,
    UnknownItemError,
    UnknownUserError,
)

FORMAT_VERSION = 1


def canonical_ids(values: Iterable[Any] | np.ndarray) -> np.ndarray:
    """Raw ids as an int64 array when every id is a canonical decimal integer, else as strings.

    Integer ids then sort numerically (item "10" after item "9"), so datasets whose ids are
    1..N keep their order: index ``k`` is raw id ``k + 1``.
    """
    arr = np.asarray(values if isinstance(values, np.ndarray) else list(values))
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        if np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        return arr.astype(str)
    strs = arr.astype(str)
    if len(strs) == 0:
        return strs
    try:
        ints = strs.astype(np.int64)
    except ValueError:
        return strs
    # "007" or "+7" are ids, not numbers: keep them as written
    if np.array_equal(ints.astype(str), strs):
        return ints
    return strs


@dataclass(frozen=True)
class IdMap:
    """A bijection between raw ids (int64 or str, sorted) and indices ``0..len-1``."""

    raw: np.ndarray
    kind: str = "item"  # "item" or "user": used in error messages

    @classmethod
    def from_values(cls, values: np.ndarray, kind: str = "item") -> tuple["IdMap", np.ndarray]:
        """Build the map from raw ids as they occur; also return each value's index."""
        raw, inverse = np.unique(canonical_ids(values), return_inverse=True)
        return cls(raw, kind), inverse.astype(np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.raw)

    def index(
        self, values: np.ndarray | Iterable[Any], *, path: str | Path | None = None
    ) -> np.ndarray:
        """Indices of raw ids; raises Unknown{Item,User}Error naming the first unknown ids."""
        values = canonical_ids(values)
        if len(values) == 0:
            return np.zeros(0, dtype=np.int64)
        raw, vals = self.raw, values
        if raw.dtype.kind != vals.dtype.kind:  # one side numeric, the other not: compare as text
            raw, vals = raw.astype(str), vals.astype(str)
        idx = pc.index_in(pa.array(vals), value_set=pa.array(raw))
        if idx.null_count:
            missing_mask = idx.is_null().to_numpy(zero_copy_only=False)
            rows = np.flatnonzero(missing_mask)
            examples = ", ".join(repr(v) for v in vals[rows[:5]].tolist())
            error = UnknownItemError if self.kind == "item" else UnknownUserError
            if self.kind not in ("item", "user"):
                error = UnknownIdError
            raise error(
                f"{len(rows)} {self.kind} id(s) are not in the {self.kind} map of "
                f"{len(self)} ids (first: {examples} at row {int(rows[0])}).",
                path=path,
                row=int(rows[0]),
                hint=f"every {self.kind} of a validation or test file must also occur in the "
                "training data; drop those rows or rebuild the id map from all files.",
            )
        return idx.to_numpy().astype(np.int64)

    def to_raw(self, indices: np.ndarray | Iterable[int]) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"{self.kind} index out of range [0, {len(self)})")
        return self.raw[indices]


class FeatureTable:
    """Side features of items (or users), one row per index, as an Arrow table.

    Column ``id`` holds the raw id (so the table *is* the id map); other columns are text
    (string), attributes (list of strings or ints), numbers, or embeddings (fixed-size lists of
    float32). Arrow keeps them typed and Parquet stores them as they are.
    """

    def __init__(self, table: pa.Table, kind: str = "item") -> None:
        if "id" not in table.column_names:
            raise DataError(f"a {kind} table needs an 'id' column; got {table.column_names}")
        self.table = table
        self.kind = kind

    @classmethod
    def from_ids(cls, ids: IdMap) -> "FeatureTable":
        return cls(pa.table({"id": pa.array(ids.raw)}), ids.kind)

    @property
    def ids(self) -> IdMap:
        return IdMap(canonical_ids(self.table.column("id").to_numpy(zero_copy_only=False)), self.kind)

    @property
    def columns(self) -> list[str]:
        return [c for c in self.table.column_names if c != "id"]

    def __len__(self) -> int:
        return self.table.num_rows

    def text(self, name: str) -> list[str | None]:
        return self.table.column(name).to_pylist()

    def attributes(self, name: str) -> list[list[Any]]:
        return [v if v is not None else [] for v in self.table.column(name).to_pylist()]

    def embedding(self, name: str) -> np.ndarray:
        col = self.table.column(name).combine_chunks()
        if not pa.types.is_fixed_size_list(col.type):
            raise DataError(f"{self.kind} column {name!r} is {col.type}, not an embedding")
        dim = col.type.list_size
        return col.flatten().to_numpy().reshape(-1, dim)

    def with_columns_of(self, other: "FeatureTable") -> "FeatureTable":
        """A copy with every feature column of ``other`` (aligned to the same ids) added."""
        out = self
        for c in other.columns:
            out = out.with_column(c, other.table.column(c))
        return out

    def with_column(self, name: str, values: Any) -> "FeatureTable":
        """A copy with a column added or replaced; 2-D float arrays become embeddings."""
        if isinstance(values, np.ndarray) and values.ndim == 2:
            flat = pa.array(values.astype(np.float32).reshape(-1))
            values = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
        arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
        if len(arr) != len(self):
            raise DataError(
                f"{self.kind} column {name!r} has {len(arr)} rows, the table has {len(self)}"
            )
        table = self.table
        if name in table.column_names:
            table = table.drop_columns([name])
        return FeatureTable(table.append_column(name, arr), self.kind)


@dataclass
class InteractionLog:
    """Rows of (user, item, timestamp, signals..., session), indices into the id maps."""

    user: np.ndarray  # (n,) int64
    item: np.ndarray  # (n,) int64
    timestamp: np.ndarray  # (n,) int64 or float64; order within a user is the time order
    users: IdMap
    items: IdMap
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    session: np.ndarray | None = None  # (n,) int64 session index, or None

    def __post_init__(self) -> None:
        n = len(self.user)
        columns = {"item": self.item, "timestamp": self.timestamp, **self.signals}
        if self.session is not None:
            columns["session"] = self.session
        for name, col in columns.items():
            if len(col) != n:
                raise DataError(f"log column {name!r} has {len(col)} rows, 'user' has {n}")

    def __len__(self) -> int:
        return len(self.user)

    @property
    def num_users(self) -> int:
        return len(self.users)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_sessions(self) -> int:
        if self.session is None or len(self.session) == 0:
            return 0
        return int(np.count_nonzero(np.bincount(self.session)))

    def take(self, rows: np.ndarray) -> "InteractionLog":
        """A log with the given rows (a boolean mask or indices); id maps are kept as they are."""
        return InteractionLog(
            self.user[rows],
            self.item[rows],
            self.timestamp[rows],
            self.users,
            self.items,
            {k: v[rows] for k, v in self.signals.items()},
            None if self.session is None else self.session[rows],
        )

    def time_order(self) -> np.ndarray:
        """Row order by (user, timestamp, row): a stable sort, so ties keep file order."""
        return np.lexsort((self.timestamp, self.user))

    def sorted(self) -> "InteractionLog":
        """The log in (user, time) order; the same object when it already is."""
        return self if self.is_sorted() else self.take(self.time_order())

    def is_sorted(self) -> bool:
        u, t = self.user, self.timestamp
        if len(u) < 2:
            return True
        same = u[1:] == u[:-1]
        return bool(np.all((u[1:] > u[:-1]) | (same & (t[1:] >= t[:-1]))))

    # persistence ------------------------------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        cols: dict[str, Any] = {
            "user": pa.array(self.user, pa.int64()),
            "item": pa.array(self.item, pa.int64()),
            "timestamp": pa.array(self.timestamp),
        }
        if self.session is not None:
            cols["session"] = pa.array(self.session, pa.int64())
        for k, v in self.signals.items():
            cols[k] = pa.array(v)
        return pa.table(cols)

    @classmethod
    def from_arrow(cls, table: pa.Table, users: IdMap, items: IdMap) -> "InteractionLog":
        def col(name: str) -> np.ndarray:
            return table.column(name).to_numpy()

        reserved = {"user", "item", "timestamp", "session"}
        return cls(
            col("user").astype(np.int64, copy=False),
            col("item").astype(np.int64, copy=False),
            col("timestamp"),
            users,
            items,
            {c: col(c) for c in table.column_names if c not in reserved},
            col("session").astype(np.int64, copy=False)
            if "session" in table.column_names
            else None,
        )


@dataclass
class Dataset:
    """An interaction log with its item table, optional user table and provenance."""

    name: str
    log: InteractionLog
    item_table: FeatureTable
    user_table: FeatureTable
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return self.log.num_users

    @property
    def num_items(self) -> int:
        return self.log.num_items

    def summary(self) -> dict[str, Any]:
        log = self.log
        per_user = np.bincount(log.user, minlength=log.num_users)
        per_item = np.bincount(log.item, minlength=log.num_items)
        out: dict[str, Any] = {
            "name": self.name,
            "users": log.num_users,
            "items": log.num_items,
            "interactions": len(log),
            "density": len(log) / max(1, log.num_users * log.num_items),
            "interactions_per_user": _describe(per_user),
            "interactions_per_item": _describe(per_item),
            "signals": sorted(log.signals),
            "sessions": log.num_sessions if log.session is not None else None,
            "item_features": self.item_table.columns,
            "user_features": self.user_table.columns,
        }
        if len(log):
            out["timestamp_range"] = [_scalar(log.timestamp.min()), _scalar(log.timestamp.max())]
        out.update({k: v for k, v in self.meta.items() if k not in out})
        return out

    def save(self, directory: str | Path) -> Path:
        """Write ``interactions.parquet``, ``items.parquet``, ``users.parquet``, ``meta.json``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        pq.write_table(self.log.to_arrow(), d / "interactions.parquet")
        pq.write_table(self.item_table.table, d / "items.parquet")
        pq.write_table(self.user_table.table, d / "users.parquet")
        meta = {"format_version": FORMAT_VERSION, "name": self.name, **self.meta}
        (d / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Dataset":
        d = Path(directory)
        meta_path = d / "meta.json"
        if not meta_path.exists():
            raise DataError(
                f"{d} is not a saved onerec dataset (no meta.json)",
                hint="create it with Dataset.save or `onerec data convert`.",
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{d} was saved in format {meta.get('format_version')}, "
                f"this onerec reads format {FORMAT_VERSION}",
                hint="convert it again from the source files.",
            )
        items = FeatureTable(pq.read_table(d / "items.parquet"), "item")
        users = FeatureTable(pq.read_table(d / "users.parquet"), "user")
        log = InteractionLog.from_arrow(pq.read_table(d / "interactions.parquet"), users.ids, items.ids)
        name = meta.pop("name")
        meta.pop("format_version")
        return cls(name, log, items, users, meta)


def _scalar(x: Any) -> Any:
    return x.item() if hasattr(x, "item") else x


def _describe(counts: np.ndarray) -> dict[str, float]:
    if len(counts) == 0:
        return {"min": 0, "median": 0, "mean": 0.0, "max": 0}
    return {
        "min": int(counts.min()),
        "median": float(np.median(counts)),
        "mean": float(counts.mean()),
        "max": int(counts.max()),
    }


def build_log(
    users: np.ndarray,
    items: np.ndarray,
    timestamps: np.ndarray,
    *,
    signals: Mapping[str, np.ndarray] | None = None,
    sessions: np.ndarray | None = None,
    user_map: IdMap | None = None,
    item_map: IdMap | None = None,
    path: str | Path | None = None,
) -> InteractionLog:
    """An InteractionLog from raw-id columns: builds the id maps, or looks ids up in given maps
    (raising UnknownItemError / UnknownUserError for ids the maps do not hold)."""
    if user_map is None:
        user_map, u = IdMap.from_values(users, "user")
    else:
        u = user_map.index(users, path=path)
    if item_map is None:
        item_map, i = IdMap.from_values(items, "item")
    else:
        i = item_map.index(items, path=path)
    sess = None
    if sessions is not None:
        # a session id is only unique within its user in many logs: index (user, session) pairs
        _, raw_sess = np.unique(canonical_ids(sessions), return_inverse=True)
        key = u * (int(raw_sess.max(initial=0)) + 1) + raw_sess.reshape(-1)
        _, sess = np.unique(key, return_inverse=True)
        sess = sess.astype(np.int64).reshape(-1)
    return InteractionLog(u, i, timestamps, user_map, item_map, dict(signals or {}), sess)
