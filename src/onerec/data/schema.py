"""The data model: id maps, interaction logs, item and user tables, and a dataset bundling them.

Everything is columnar. Users and items are referred to by contiguous indices ``0..n-1``; the
raw ids of the source files live in an :class:`IdMap` saved beside the data, so every index can
be traced back to the file it came from. Raw ids are kept exactly (:func:`canonical_ids`):
uint64 hash ids stay uint64, ids beyond 64 bits stay decimal text, and no two distinct ids of a
file ever share an index.

An interaction log is rows of (user, item, timestamp) plus any number of optional feedback
signals (watch_time, duration, like, follow, rating, ...) and an optional session id. Signals are
plain named float/int columns: the data layer does not assume which ones exist.
"""

from __future__ import annotations

import json
from decimal import Decimal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from onerec.data.files import output_dir, read_json, read_parquet
from onerec.exceptions import (
    CorruptFileError,
    DataError,
    IdCollisionError,
    InvalidIdError,
    MissingColumnError,
    NotADatasetError,
    UnknownIdError,
    UnknownItemError,
    UnknownUserError,
)

FORMAT_VERSION = 1


_INT64_MAX = np.iinfo(np.int64).max
_UINT64_MAX = np.iinfo(np.uint64).max
_INT_TEXT = r"^(0|-?[1-9][0-9]*)$"  # one spelling per integer: no "+7", "007" or "-0"
_INTEGRAL_FLOAT_TEXT = r"^(0|-?[1-9][0-9]*)\.0+$"  # "12.0", as pandas writes integer floats


def canonical_ids(
    values: Iterable[Any] | np.ndarray,
    *,
    what: str = "id",
    path: str | Path | None = None,
    locate: Callable[[int], dict[str, int]] | None = None,
    context: Callable[[int], str] | None = None,
) -> np.ndarray:
    """Raw ids in one exact form: an ``int64``, ``uint64`` or ``str`` array, one value per id.

    The form never merges two ids that differ as given, and never changes an id's value:

    - integers stay integers: ``int64`` when all fit, ``uint64`` when all are in
      ``[0, 2**64)`` and some exceed int64 (hash ids), else decimal strings (ids beyond 64 bits);
    - text that spells integers canonically ("10", "-3"; not "007" or "+7") becomes integers
      by the same rule, so ids 1..N sort numerically; text that spells integral floats
      ("12.0", as pandas writes an integer column with gaps) does too, unless two spellings
      name one number ("1.0", "1.00"); any other text stays text, exactly as written
      (so the text "1.5" is a string id);
    - typed floats (a Parquet double column, a JSON number) are ids only when they are
      integers below 2**53 (2**24 for float32): ``1.0`` becomes ``1``; ``1.5``, NaN, inf and
      values from 2**53 on (where distinct integers share one float) raise
      :class:`InvalidIdError`, because such a column has lost ids already and no reading can
      restore them.

    Missing ids (None, NaN, ""), booleans, bytes, ids with a NUL character and values of other
    types raise :class:`InvalidIdError` naming the row (``locate`` maps a position to
    ``{"line": n}`` or ``{"row": n}``; default: the 0-based row), ``what`` (a column name) and
    ``context`` (a position's description, e.g. "user 'u1', position 3: ").
    Applying the function twice gives the same array as applying it once.
    """
    arr = values if isinstance(values, np.ndarray) else as_object_array(values)
    arr = arr.reshape(-1)

    def bad(i: int, why: str) -> InvalidIdError:
        where = locate(i) if locate is not None else {"row": i}
        value = arr[i].item() if isinstance(arr[i], np.generic) else arr[i]
        return InvalidIdError(
            f"{context(i) if context is not None else ''}{what} {value!r} {why}",
            path=path,
            **where,
            hint="ids must be integers or non-empty strings; fix or remove the row.",
        )

    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    kind = arr.dtype.kind
    if kind == "i":
        return arr.astype(np.int64)
    if kind == "u":
        return arr.astype(np.uint64 if arr.max() > _INT64_MAX else np.int64)
    if kind == "f":
        return _float_ids(arr, bad)
    if kind == "U":
        return _text_ids(pa.array(arr), bad)
    if kind == "b":
        raise bad(0, "is a boolean, not an id")
    if kind == "S":
        raise bad(0, "is bytes, not text")
    if kind != "O":
        raise bad(0, f"has type {arr.dtype}, which ids cannot have")
    if all(isinstance(v, str) for v in arr):
        return _text_ids(pa.array(arr, pa.string()), bad)
    out: list[int | str] = []
    for i, v in enumerate(arr):
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            out.append(int(v))
        elif isinstance(v, (float, np.floating)):
            as_float = np.array([v], dtype=np.float64)
            out.append(int(_float_ids(as_float, lambda _, why: bad(i, why))[0]))
        elif v is None:
            raise bad(i, "is missing")
        elif isinstance(v, Decimal) and v.is_finite() and v == v.to_integral_value():
            out.append(int(v))  # a Parquet decimal(p, 0) column
        elif isinstance(v, bytes):
            raise bad(i, "is bytes, not text: read the file with its encoding")
        elif isinstance(v, (list, tuple, dict, np.ndarray)):
            raise bad(i, "is a list or record, which ids cannot be")
        else:
            raise bad(i, f"is a {type(v).__name__}, which ids cannot be")
    if all(isinstance(v, int) for v in out):
        return _int_ids(out)
    return _text_ids(pa.array([str(v) for v in out], pa.string()), bad)


def first_repeat(ids: np.ndarray) -> tuple[Any, int, int] | None:
    """The smallest id that occurs more than once, the row it first occurs at and how often
    it occurs; None when every id is unique."""
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if len(uniq) == len(ids):
        return None
    dup = int(np.flatnonzero(counts > 1)[0])
    return uniq[dup].item(), int(first[dup]), int(counts[dup])


def as_object_array(values: Iterable[Any]) -> np.ndarray:
    """An object array of the values as they are (``np.asarray`` would cut trailing NULs off
    strings and round Python ints beyond 64 bits to floats)."""
    items = list(values)
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def _int_ids(ints: list[int]) -> np.ndarray:
    lo, hi = min(ints), max(ints)
    if lo >= -_INT64_MAX - 1 and hi <= _INT64_MAX:
        return np.array(ints, dtype=np.int64)
    if lo >= 0 and hi <= _UINT64_MAX:
        return np.array(ints, dtype=np.uint64)
    return np.array([str(v) for v in ints], dtype=str)


def _float_ids(arr: np.ndarray, bad: Callable[[int, str], InvalidIdError]) -> np.ndarray:
    exact_bits = np.finfo(arr.dtype).nmant + 1  # 53 for float64, 24 for float32
    width = arr.dtype.itemsize * 8
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise bad(i, "is missing or not finite")
    frac = arr != np.floor(arr)
    if frac.any():
        raise bad(int(np.flatnonzero(frac)[0]), "is a float with a fraction, not an integer id")
    big = np.abs(arr) >= 2.0**exact_bits
    if big.any():
        raise bad(
            int(np.flatnonzero(big)[0]),
            f"is a {width}-bit float from 2**{exact_bits} on, where distinct "
            "integer ids share one float; store ids as integers or strings",
        )
    return arr.astype(np.int64)


def _text_ids(text: pa.Array, bad: Callable[[int, str], InvalidIdError]) -> np.ndarray:
    if text.null_count:
        nulls = text.is_null().to_numpy(zero_copy_only=False)
        raise bad(int(np.flatnonzero(nulls)[0]), "is missing")
    for mask, why in (
        (pc.equal(pc.utf8_length(text), 0), "is empty"),
        (pc.match_substring(text, "\x00"), "holds a NUL character"),
    ):
        if pc.any(mask).as_py():
            raise bad(int(np.flatnonzero(mask.to_numpy(zero_copy_only=False))[0]), why)

    def as_written() -> np.ndarray:
        return text.to_numpy(zero_copy_only=False).astype(str)

    if pc.all(pc.match_substring_regex(text, _INT_TEXT)).as_py():
        digits = text
    elif pc.all(pc.match_substring_regex(text, _INTEGRAL_FLOAT_TEXT)).as_py():
        digits = pc.replace_substring_regex(text, r"\.0+$", "")
    else:
        return as_written()
    for typ in (pa.int64(), pa.uint64()):
        try:
            ints = pc.cast(digits, typ).to_numpy()
        except (pa.ArrowInvalid, OverflowError):
            continue
        if digits is not text and len(np.unique(ints)) != len(pc.unique(text)):
            return as_written()  # "1.0" and "1.00": two spellings, kept apart as text
        return ints.astype(np.int64) if typ == pa.int64() else ints
    return as_written()  # beyond 64 bits: the decimal text is the exact id


@dataclass(frozen=True)
class IdMap:
    """A bijection between raw ids (int64, uint64 or str, as :func:`canonical_ids` gives them;
    sorted when built from values) and indices ``0..len-1``."""

    raw: np.ndarray
    kind: str = "item"  # "item" or "user": used in error messages

    @classmethod
    def from_values(
        cls,
        values: np.ndarray,
        kind: str = "item",
        *,
        path: str | Path | None = None,
        line_offset: int | None = None,
    ) -> tuple["IdMap", np.ndarray]:
        """Build the map from raw ids as they occur; also return each value's index. An id
        that cannot be kept exactly raises :class:`InvalidIdError` naming row i (or line
        ``i + line_offset`` of a text table)."""
        locate = None if line_offset is None else (lambda i: {"line": i + line_offset})
        ids = canonical_ids(values, what=f"{kind} id", path=path, locate=locate)
        raw, inverse = np.unique(ids, return_inverse=True)
        return cls(raw, kind), inverse.astype(np.int64).reshape(-1)

    @classmethod
    def from_saved(cls, values: np.ndarray, kind: str, path: str | Path | None) -> "IdMap":
        """The map of an id column with one row per index (a saved map, a feature table); an
        id listed twice raises :class:`IdCollisionError`, since two rows would share one id."""
        raw = canonical_ids(values, what=f"{kind} id", path=path)
        repeat = first_repeat(raw)
        if repeat is not None:
            raise IdCollisionError(
                f"{kind} id {repeat[0]!r} is listed {repeat[2]} times (first at row "
                f"{repeat[1]}); every index needs its own id",
                path=path,
                hint="list each id once (a saved file that repeats ids was edited or damaged: "
                "write it again).",
            )
        return cls(raw, kind)

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

    def without_unused_ids(self) -> "InteractionLog":
        """The log with id maps cut to the users and items that still have rows (for a filter
        that removed every row of some item: the catalog must not keep items nobody saw)."""
        used_u, user = np.unique(self.user, return_inverse=True)
        used_i, item = np.unique(self.item, return_inverse=True)
        if len(used_u) == len(self.users) and len(used_i) == len(self.items):
            return self
        return InteractionLog(
            user.astype(np.int64).reshape(-1),
            item.astype(np.int64).reshape(-1),
            self.timestamp,
            IdMap(self.users.raw[used_u], self.users.kind),
            IdMap(self.items.raw[used_i], self.items.kind),
            self.signals,
            self.session,
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
    def from_arrow(
        cls, table: pa.Table, users: IdMap, items: IdMap, path: str | Path | None = None
    ) -> "InteractionLog":
        """The log :meth:`to_arrow` wrote; ``path`` (the file it came from) is named when a
        column is missing or an index lies outside its id map (a damaged file)."""
        hint = "the file is damaged: write it again."
        missing = [c for c in ("user", "item", "timestamp") if c not in table.column_names]
        if missing:
            raise MissingColumnError(
                f"missing column(s) {missing}; it has {table.column_names}", path=path, hint=hint
            )
        for name, ids in (("user", users), ("item", items)):
            idx = table.column(name)
            if len(idx) and (pc.min(idx).as_py() < 0 or pc.max(idx).as_py() >= len(ids)):
                raise CorruptFileError(
                    f"column {name!r} holds indices outside [0, {len(ids)})", path=path, hint=hint
                )

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
        d = output_dir(directory)
        pq.write_table(self.log.to_arrow(), d / "interactions.parquet")
        pq.write_table(self.item_table.table, d / "items.parquet")
        pq.write_table(self.user_table.table, d / "users.parquet")
        meta = {"format_version": FORMAT_VERSION, "name": self.name, **self.meta}
        (d / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Dataset":
        """A dataset written by :meth:`save`; a missing, truncated or inconsistent file raises a
        named :class:`DataError` subclass naming it."""
        d = Path(directory)
        meta_path = d / "meta.json"
        if not meta_path.is_file():
            raise NotADatasetError(
                "not a saved onerec dataset (no meta.json)",
                path=d,
                hint="create it with Dataset.save or `onerec data convert`.",
            )
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or "name" not in meta:
            raise CorruptFileError("expected a JSON object with a 'name'", path=meta_path,
                                   hint="convert the dataset again.")  # fmt: skip
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"{d} was saved in format {meta.get('format_version')}, "
                f"this onerec reads format {FORMAT_VERSION}",
                hint="convert it again from the source files.",
            )
        hint = "the saved dataset is damaged: convert it again (or delete the cache folder)."
        items = FeatureTable(read_parquet(d / "items.parquet", hint=hint), "item")
        users = FeatureTable(read_parquet(d / "users.parquet", hint=hint), "user")
        item_ids, user_ids = (
            IdMap.from_saved(table.table.column("id").to_numpy(zero_copy_only=False), table.kind,
                             d / f"{table.kind}s.parquet")
            for table in (items, users)
        )  # fmt: skip
        path = d / "interactions.parquet"
        log = InteractionLog.from_arrow(read_parquet(path, hint=hint), user_ids, item_ids, path)
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
    line_offset: int | None = None,
) -> InteractionLog:
    """An InteractionLog from raw-id columns: builds the id maps, or looks ids up in given maps
    (raising UnknownItemError / UnknownUserError for ids the maps do not hold). ``path`` and
    ``line_offset`` (row i is line ``i + line_offset``) locate invalid ids in messages."""
    if user_map is None:
        user_map, u = IdMap.from_values(users, "user", path=path, line_offset=line_offset)
    else:
        u = user_map.index(users, path=path)
    if item_map is None:
        item_map, i = IdMap.from_values(items, "item", path=path, line_offset=line_offset)
    else:
        i = item_map.index(items, path=path)
    sess = None
    if sessions is not None:
        # a session id is only unique within its user in many logs: index (user, session) pairs
        _, raw_sess = np.unique(
            canonical_ids(sessions, what="session id", path=path), return_inverse=True
        )
        pairs = np.stack([u, raw_sess.reshape(-1).astype(np.int64)], axis=1)
        _, sess = np.unique(pairs, axis=0, return_inverse=True)
        sess = sess.astype(np.int64).reshape(-1)
    return InteractionLog(u, i, timestamps, user_map, item_map, dict(signals or {}), sess)
