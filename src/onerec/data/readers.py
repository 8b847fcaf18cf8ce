"""Readers for the interaction and item formats recommender research data comes in.

Each reader takes a path and returns columns keyed by *raw* ids; :func:`assemble` then builds the
id maps and aligns the item and user tables to them. Formats:

- sequence files (S3-Rec, ``user item1 item2 ...`` per line, time order): :func:`read_sequences`
- pair files (SASRec, ``user item`` per line, time order): :func:`read_pairs`
- RecBole atomic files (``.inter``/``.item``/``.user``, typed headers): :func:`read_atomic`
- JSON interactions ``{user: [items]}``: :func:`read_json_sequences`
- JSON item records ``{item: {title, description, ...}}``: :func:`read_json_items`
- JSON attributes ``{item: [attribute ids]}``: :func:`read_json_attributes`
- generic CSV / Parquet with a column mapping: :func:`read_table`

Files without timestamps (the first four) get the position in the user's sequence as timestamp,
which keeps their time order.

Every reader takes the text ``encoding`` of its files (default UTF-8; Parquet is always UTF-8)
and keeps ids exact (:func:`~onerec.data.schema.canonical_ids`): an id comes back as given, or
the reader stops with :class:`~onerec.exceptions.InvalidIdError` naming the row. Signal values
follow :mod:`onerec.data.signals`; what the duplicate and signal steps remove is counted in the
dataset's ``meta["filters"]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from onerec.data.files import (
    DEFAULT_ENCODING,
    ENCODING_HINT,
    check_bom,
    check_encoding,
    check_file,
    read_json,
    read_parquet,
    text_lines,
)
from onerec.data.report import FilterReport
from onerec.data.schema import (
    Dataset,
    FeatureTable,
    IdMap,
    InteractionLog,
    as_object_array,
    build_log,
    canonical_ids,
)
from onerec.data.signals import SignalPolicy, apply_signal_policy
from onerec.exceptions import (
    DataError,
    DuplicateRowsError,
    EmptyDataError,
    FileEncodingError,
    InvalidTimestampError,
    MalformedLineError,
    MissingColumnError,
    NotADatasetError,
)

DuplicatePolicy = Literal["drop", "error", "keep"]


@dataclass
class RawInteractions:
    """Interaction columns with raw ids, as a reader found them."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    signals: dict[str, np.ndarray] = field(default_factory=dict)
    sessions: np.ndarray | None = None
    source: str = ""
    line_offset: int | None = None  # row i is line i + line_offset of a text table (else row i)


# ------------------------------------------------------------------------------------------------
# Sequence-per-line text formats
# ------------------------------------------------------------------------------------------------
def read_sequences(path: str | Path, *, encoding: str = DEFAULT_ENCODING) -> RawInteractions:
    """S3-Rec sequence file: ``user item1 item2 ...`` per line, items in time order."""
    p = check_file(path)
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    first_line: dict[str, int] = {}
    for lineno, line in text_lines(p, encoding):
        tokens = line.split()
        if not tokens:
            continue  # blank line: no record
        if len(tokens) < 2:
            raise MalformedLineError(
                f"expected 'user item1 item2 ...', got {line.strip()!r} (a user with no items)",
                path=p,
                line=lineno,
                hint="remove the line or add the user's items.",
            )
        user = tokens[0]
        if user in first_line:
            raise MalformedLineError(
                f"user {user!r} already has a sequence on line {first_line[user]}",
                path=p,
                line=lineno,
                hint="a sequence file holds one line per user: merge the two lines.",
            )
        first_line[user] = lineno
        n = len(tokens) - 1
        users.extend([user] * n)
        items.extend(tokens[1:])
        positions.extend(range(n))
    if not users:
        raise EmptyDataError("no sequences found (only blank lines)", path=p)
    return RawInteractions(
        as_object_array(users), as_object_array(items), np.array(positions, dtype=np.int64),
        source=str(p),
    )


def read_pairs(path: str | Path, *, encoding: str = DEFAULT_ENCODING) -> RawInteractions:
    """SASRec pair file: ``user item`` per line, lines of one user in time order."""
    p = check_file(path)
    users: list[str] = []
    items: list[str] = []
    for lineno, line in text_lines(p, encoding):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2:
            raise MalformedLineError(
                f"expected 'user item', got {line.strip()!r}",
                path=p,
                line=lineno,
                hint="one interaction per line, two whitespace-separated fields.",
            )
        users.append(tokens[0])
        items.append(tokens[1])
    if not users:
        raise EmptyDataError("no interactions found (only blank lines)", path=p)
    u = canonical_ids(as_object_array(users), what="user id", path=p)
    # position within the user's lines is the timestamp
    order = np.argsort(u, kind="stable")
    sorted_u = u[order]
    starts = np.r_[0, np.flatnonzero(sorted_u[1:] != sorted_u[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(u)]))
    pos = np.empty(len(u), dtype=np.int64)
    pos[order] = np.arange(len(u)) - run_start
    return RawInteractions(u, as_object_array(items), pos, source=str(p))


def _require_dict(data: Any, p: Path, what: str) -> dict:
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object {what}, got {type(data).__name__}", path=p)
    if not data:
        raise EmptyDataError("the JSON object is empty", path=p)
    return data


def read_json_sequences(path: str | Path, *, encoding: str = DEFAULT_ENCODING) -> RawInteractions:
    """JSON interactions ``{user: [item, item, ...]}``, items in time order. Items are JSON
    strings or numbers (integral: ``1.0`` is item 1); null, booleans and fractions are
    :class:`InvalidIdError` naming the user and position."""
    p = Path(path)
    data = _require_dict(read_json(p, encoding), p, "mapping users to item lists")
    users: list[Any] = []
    items: list[Any] = []
    positions: list[int] = []
    for user, seq in data.items():
        if not isinstance(seq, list) or any(isinstance(x, (list, dict)) for x in seq):
            raise MalformedLineError(
                f"user {user!r}: expected a list of item ids, got {json.dumps(seq)[:60]}",
                path=p,
                hint="each value must be a flat list of item ids in time order.",
            )
        users.extend([user] * len(seq))
        items.extend(seq)
        positions.extend(range(len(seq)))
    if not items:
        raise EmptyDataError("no interactions found (every item list is empty)", path=p)
    item_ids = canonical_ids(
        as_object_array(items),
        what="item id",
        path=p,
        locate=lambda i: {},
        context=lambda i: f"user {users[i]!r}, position {positions[i]}: ",
    )
    return RawInteractions(
        as_object_array(users), item_ids, np.array(positions, dtype=np.int64), source=str(p)
    )


def read_json_items(
    path: str | Path, fields: Iterable[str] | None = None, *, encoding: str = DEFAULT_ENCODING
) -> pa.Table:
    """JSON item records ``{item: {field: text, ...}}`` as a table with an ``id`` column and one
    string column per field (all fields seen, or the given ones)."""
    p = Path(path)
    return _items_table(read_json(p, encoding), p, fields)


def _items_table(data: Any, p: Path, fields: Iterable[str] | None = None) -> pa.Table:
    data = _require_dict(data, p, "mapping items to records")
    keys = list(data)
    bad = next((k for k in keys if not isinstance(data[k], dict)), None)
    if bad is not None:
        raise MalformedLineError(
            f"item {bad!r}: expected an object of fields, got {type(data[bad]).__name__}", path=p
        )
    if fields is None:
        seen: dict[str, None] = {}
        for rec in data.values():
            seen.update(dict.fromkeys(rec))
        fields = list(seen)
    cols: dict[str, Any] = {"id": canonical_ids(as_object_array(keys), what="item id", path=p)}
    for name in fields:
        values = [data[k].get(name) for k in keys]
        cols[name] = pa.array([None if v is None else _as_text(v) for v in values], pa.string())
    return pa.table(cols)


def _as_text(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)


def read_json_attributes(
    path: str | Path, column: str = "attributes", *, encoding: str = DEFAULT_ENCODING
) -> pa.Table:
    """JSON attributes ``{item: [attribute id, ...]}`` as a table (``id``, ``column`` as a list)."""
    p = Path(path)
    return _attributes_table(read_json(p, encoding), p, column)


def _attributes_table(data: Any, p: Path, column: str = "attributes") -> pa.Table:
    data = _require_dict(data, p, "mapping items to attribute lists")
    keys = list(data)
    for k in keys:
        if not isinstance(data[k], list):
            raise MalformedLineError(
                f"item {k!r}: expected a list of attribute ids, got {type(data[k]).__name__}",
                path=p,
            )
    values = [[str(a) for a in data[k]] for k in keys]
    flat = canonical_ids(as_object_array([a for v in values for a in v]), what="attribute", path=p)
    offsets = np.r_[0, np.cumsum([len(v) for v in values])].astype(np.int32)
    arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
    ids = canonical_ids(as_object_array(keys), what="item id", path=p)
    return pa.table({"id": ids, column: arr})


# ------------------------------------------------------------------------------------------------
# RecBole atomic files
# ------------------------------------------------------------------------------------------------
_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def _read_atomic_file(
    path: Path, encoding: str = DEFAULT_ENCODING
) -> tuple[dict[str, str], pa.Table]:
    """One atomic file: typed header ``name:type`` (tab-separated), all columns typed."""
    p = check_file(path)
    header = next(text_lines(p, encoding))[1].rstrip("\r\n").split("\t")
    names: list[str] = []
    types: dict[str, str] = {}
    for h in header:
        name, _, typ = h.rpartition(":")
        if not name or typ not in _ATOMIC_TYPES:
            raise MalformedLineError(
                f"header field {h!r} is not 'name:type' with type in {_ATOMIC_TYPES}",
                path=p,
                line=1,
                hint="RecBole atomic files start with a typed header such as 'user_id:token'.",
            )
        names.append(name)
        types[name] = typ
    _check_header(names, p)
    try:
        table = pacsv.read_csv(
            p,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, encoding=encoding),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as e:
        raise _csv_error(p, e, encoding) from None
    if table.num_rows == 0:
        raise EmptyDataError("the file has a header but no rows", path=p)
    return types, table


def _to_float(col: pa.ChunkedArray, name: str, path: Path, error: type[DataError]) -> np.ndarray:
    strs = col.to_numpy(zero_copy_only=False).astype(str)
    try:
        return strs.astype(np.float64)
    except ValueError:
        bad = next(i for i, s in enumerate(strs) if not _is_float(s))
        raise error(
            f"column {name!r} must be numeric, got {strs[bad]!r}",
            path=path,
            line=bad + 2,
            hint="fix or remove the row; timestamps are seconds (or any number) since an epoch.",
        ) from None


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _csv_error(p: Path, e: pa.ArrowInvalid, encoding: str) -> DataError:
    """The named error for a CSV/TSV file Arrow cannot parse: undecodable text or a bad row."""
    text = str(e)
    if "UTF8" in text or "UTF-8" in text:
        return FileEncodingError(
            f"the text is not valid {encoding} ({text.splitlines()[0]})",
            path=p,
            hint=ENCODING_HINT,
        )
    return MalformedLineError(f"cannot parse: {text.splitlines()[0]}", path=p,
                              hint="every row needs the header's number of fields.")  # fmt: skip


def read_atomic(
    prefix: str | Path,
    *,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str = "timestamp",
    session_field: str | None = "session_id",
    encoding: str = DEFAULT_ENCODING,
) -> tuple[RawInteractions, pa.Table | None, pa.Table | None]:
    """RecBole atomic files ``<prefix>.inter`` (required), ``.item`` and ``.user`` (optional).

    ``prefix`` is e.g. ``data/ml-100k/ml-100k`` or the dataset folder (its name is the prefix).
    Float columns of ``.inter`` (rating, watch time, ...) become signals; a ``session_id`` token
    column becomes the session; other token columns of ``.inter`` are not read.
    """
    prefix = Path(prefix)
    if prefix.is_dir():
        prefix = prefix / prefix.name
    inter_path = prefix.with_name(prefix.name + ".inter")
    if prefix.parent.is_dir() and prefix.parent.name == prefix.name and not inter_path.exists():
        raise NotADatasetError(
            f"the folder holds no {inter_path.name} (RecBole atomic files) and no meta.json "
            "(a dataset saved by onerec)",
            path=prefix.parent,
            hint="point to an interaction file (CSV, Parquet, JSON, .txt), a registered dataset "
            "name, or a folder written by `onerec data convert`.",
        )
    types, table = _read_atomic_file(inter_path, encoding)
    for required in (user_field, item_field):
        if required not in types:
            raise MissingColumnError(
                f"no {required!r} column; the header has {list(types)}",
                path=inter_path,
                line=1,
                hint=f"name the column '{required}:token' or pass {required.split('_')[0]}_field=...",
            )
    col = lambda n: table.column(n).to_numpy(zero_copy_only=False)  # noqa: E731
    if time_field in types:
        ts = _to_float(table.column(time_field), time_field, inter_path, InvalidTimestampError)
        if np.all(ts == np.round(ts)):
            ts = ts.astype(np.int64)
    else:
        ts = np.arange(table.num_rows, dtype=np.int64)  # file order
    signals = {
        n: _to_float(table.column(n), n, inter_path, MalformedLineError)
        for n, t in types.items()
        if t == "float" and n != time_field
    }
    sessions = col(session_field) if session_field and session_field in types else None
    raw = RawInteractions(
        col(user_field), col(item_field), ts, signals, sessions, source=str(inter_path),
        line_offset=2,
    )  # fmt: skip
    item_table = user_table = None
    item_path = prefix.with_name(prefix.name + ".item")
    if item_path.exists():
        item_table = _atomic_features(item_path, item_field, encoding)
    user_path = prefix.with_name(prefix.name + ".user")
    if user_path.exists():
        user_table = _atomic_features(user_path, user_field, encoding)
    return raw, item_table, user_table


def _atomic_features(path: Path, id_field: str, encoding: str = DEFAULT_ENCODING) -> pa.Table:
    types, table = _read_atomic_file(path, encoding)
    if id_field not in types:
        raise MissingColumnError(
            f"no {id_field!r} column; the header has {list(types)}", path=path, line=1
        )
    cols: dict[str, Any] = {
        "id": canonical_ids(
            table.column(id_field).to_numpy(zero_copy_only=False), what=id_field, path=path,
            locate=lambda i: {"line": i + 2},
        )  # fmt: skip
    }
    for name, typ in types.items():
        if name == id_field:
            continue
        c = table.column(name)
        if typ == "token":
            cols[name] = c
        elif typ == "token_seq":
            cols[name] = pc.split_pattern(c, " ")
        elif typ == "float":
            cols[name] = _to_float(c, name, path, MalformedLineError)
        else:  # float_seq: an embedding when every row has the same length
            rows = []
            for i, text in enumerate(c.to_numpy(zero_copy_only=False)):
                try:
                    rows.append(np.array(text.split(), dtype=np.float32))
                except ValueError:
                    raise MalformedLineError(
                        f"float_seq column {name!r} holds {text[:40]!r}, not numbers",
                        path=path,
                        line=i + 2,
                        hint="a float_seq cell is space-separated numbers.",
                    ) from None
            dims = {len(r) for r in rows}
            if len(dims) != 1:
                raise MalformedLineError(
                    f"float_seq column {name!r} has rows of lengths {sorted(dims)[:5]}",
                    path=path,
                    hint="embedding columns need the same length on every row.",
                )
            flat = pa.array(np.concatenate(rows))
            cols[name] = pa.FixedSizeListArray.from_arrays(flat, dims.pop())
    return pa.table(cols)


# ------------------------------------------------------------------------------------------------
# Generic tables
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnMapping:
    """Which columns of a CSV/Parquet file hold what. ``signals=None`` takes every other
    numeric column as a signal; a mapping renames ``{file column: signal name}``."""

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str | None = "timestamp"
    session: str | None = None
    signals: Mapping[str, str] | None = None


def read_table(
    path: str | Path,
    columns: ColumnMapping = ColumnMapping(),
    *,
    encoding: str = DEFAULT_ENCODING,
    format: Literal["csv", "parquet"] | None = None,
) -> RawInteractions:
    """A CSV (header row, comma-separated, text in ``encoding``) or Parquet interaction file
    (``format``; by default by the file's suffix).

    CSV id columns are read as text, so no id passes through a float: hash ids beyond int64
    and ids beyond 64 bits keep every digit (see :func:`canonical_ids`)."""
    p = check_file(path)
    id_cols = [c for c in (columns.user, columns.item, columns.session) if c]
    if (format or ("parquet" if p.suffix == ".parquet" else "csv")) == "parquet":
        table = read_parquet(p, hint="the file is truncated or not Parquet: write it again.")
        row_offset = 0  # rows are 0-based in Parquet
    else:
        table = _read_csv(p, encoding, id_cols)
        row_offset = 2  # the header is line 1: data row r is line r + 2
    if table.num_rows == 0:
        raise EmptyDataError("the table has no rows", path=p)
    names = table.column_names
    _check_header(names, p)
    wanted = [c for c in (columns.user, columns.item, columns.timestamp, columns.session) if c]
    if columns.signals:
        wanted += list(columns.signals)
    missing = [c for c in wanted if c not in names]
    if missing:
        raise MissingColumnError(
            f"missing column(s) {missing}; the file has {names}",
            path=p,
            hint="pass a ColumnMapping (CLI: --user-col/--item-col/--time-col) naming them.",
        )

    def locate(i: int) -> dict[str, int]:
        return {"line": i + row_offset} if row_offset else {"row": i}

    def ids(name: str) -> np.ndarray:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        return canonical_ids(
            col.to_numpy(zero_copy_only=False), what=f"column {name!r}:", path=p, locate=locate
        )

    if columns.timestamp:
        ts = _numeric_timestamps(table.column(columns.timestamp), p, locate)
    else:
        ts = np.arange(table.num_rows, dtype=np.int64)
    taken = {columns.user, columns.item, columns.timestamp, columns.session}
    if columns.signals is None:
        sig_map = {n: n for n in names if n not in taken and _is_numeric(table.schema.field(n).type)}
    else:
        sig_map = dict(columns.signals)
    signals = {}
    for src, dst in sig_map.items():
        col = table.column(src)
        if not (_is_numeric(col.type) or pa.types.is_null(col.type)):
            raise MalformedLineError(
                f"signal column {src!r} holds {col.type} values, not numbers",
                path=p,
                hint="map only numeric columns to signals.",
            )
        if col.null_count:  # a missing value is NaN, which the signal policy then judges
            col = pc.fill_null(col.cast(pa.float64()), float("nan"))
        signals[dst] = col.to_numpy()
    return RawInteractions(
        ids(columns.user),
        ids(columns.item),
        ts,
        signals,
        ids(columns.session) if columns.session else None,
        source=str(p),
        line_offset=row_offset or None,
    )


def _read_csv(p: Path, encoding: str, id_columns: list[str]) -> pa.Table:
    """A CSV file with a header; ``id_columns`` are read as text (never through a float), and
    text that is not valid in ``encoding`` raises :class:`FileEncodingError`."""
    check_bom(p, encoding)
    try:
        table = pacsv.read_csv(
            p,
            read_options=pacsv.ReadOptions(encoding=encoding),
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in id_columns}),
        )
    except pa.ArrowInvalid as e:
        raise _csv_error(p, e, encoding) from None
    binary = [f.name for f in table.schema if pa.types.is_binary(f.type)]
    if binary:  # Arrow reads undecodable text as bytes instead of failing
        raise FileEncodingError(
            f"column {binary[0]!r} holds text that is not valid {encoding}",
            path=p,
            hint=ENCODING_HINT,
        )
    return table


def _check_header(names: list[str], p: Path) -> None:
    """Two columns of one name make every lookup of that name ambiguous: name the column."""
    repeated = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if repeated is not None:
        raise MalformedLineError(
            f"column {repeated!r} appears twice in the header {names}",
            path=p,
            line=1 if p.suffix != ".parquet" else None,
            hint="rename one of the two columns.",
        )


def _is_numeric(typ: pa.DataType) -> bool:
    return pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ)


def _numeric_timestamps(col: pa.ChunkedArray, p: Path, locate) -> np.ndarray:
    typ = col.type
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        col = col.cast(pa.timestamp("s")) if pa.types.is_date(typ) else col
        arr = col.cast(pa.timestamp("s")).cast(pa.int64())
    elif pa.types.is_integer(typ) or pa.types.is_floating(typ):
        arr = col
    else:
        strs = col.to_numpy(zero_copy_only=False)
        bad = next((i for i, s in enumerate(strs) if s is None or not _is_float(str(s))), None)
        if bad is None:
            return strs.astype(np.float64)
        raise InvalidTimestampError(
            f"timestamp {strs[bad]!r} is not a number",
            path=p,
            **locate(bad),
            hint="timestamps must be numbers (e.g. Unix seconds) or Parquet timestamp columns.",
        )
    if arr.null_count:
        i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise InvalidTimestampError("timestamp is empty", path=p, **locate(i))
    out = arr.to_numpy()
    if out.dtype.kind == "f" and not np.all(np.isfinite(out)):
        i = int(np.flatnonzero(~np.isfinite(out))[0])
        raise InvalidTimestampError(f"timestamp {out[i]} is not finite", path=p, **locate(i))
    return out


# ------------------------------------------------------------------------------------------------
# Assembly
# ------------------------------------------------------------------------------------------------
def deduplicate(
    log: InteractionLog, policy: DuplicatePolicy = "drop", source: str | None = None
) -> tuple[InteractionLog, FilterReport]:
    """Handle rows repeating the same (user, item, timestamp[, session]).

    ``drop`` keeps the first occurrence and reports the count; ``error`` raises
    :class:`DuplicateRowsError` naming the first duplicate; ``keep`` leaves the log as it is.
    """
    if policy not in ("drop", "error", "keep"):
        raise ValueError(f"duplicates policy must be 'drop', 'error' or 'keep', got {policy!r}")
    if policy == "keep" or len(log) == 0:
        return log, FilterReport.between("duplicates", log, log, "kept")
    keys = [log.user, log.item, log.timestamp]
    if log.session is not None:
        keys.append(log.session)
    order = np.lexsort(keys[::-1])
    same = np.ones(len(log) - 1, dtype=bool)
    for k in keys:
        ks = k[order]
        same &= ks[1:] == ks[:-1]
    dup_rows = order[1:][same]
    if policy == "error" and len(dup_rows):
        first = int(dup_rows.min())
        raise DuplicateRowsError(
            f"{len(dup_rows)} rows repeat an earlier (user, item, timestamp); the first is "
            f"row {first}",
            path=source,
            row=first,
            hint="remove the repeats, or read with duplicates='drop' to keep first occurrences.",
        )
    keep = np.ones(len(log), dtype=bool)
    keep[dup_rows] = False
    out = log.take(keep) if len(dup_rows) else log
    return out, FilterReport.between("duplicates", log, out, "same user, item and timestamp")


def align_features(
    features: pa.Table | None, ids: IdMap, kind: str, source: str | Path | None = None
) -> tuple[FeatureTable, dict]:
    """Reorder a feature table to the id map; count rows without interactions and ids without
    features (both are reported in the dataset's meta, nothing disappears silently)."""
    if features is None:
        return FeatureTable.from_ids(ids), {}
    # a feature row per id: an id listed twice raises IdCollisionError
    keys_feat = IdMap.from_saved(features.column("id").to_numpy(zero_copy_only=False), kind,
                                 source).raw  # fmt: skip
    keys_log = ids.raw
    if keys_log.dtype.kind != keys_feat.dtype.kind:
        keys_log, keys_feat = keys_log.astype(str), keys_feat.astype(str)
    pos = pc.index_in(pa.array(keys_log), value_set=pa.array(keys_feat))
    has = pos.is_valid().to_numpy(zero_copy_only=False)
    aligned = features.drop_columns(["id"]).take(pc.fill_null(pos, 0))
    if not has.all():  # null out rows of ids that had no features
        mask = pa.array(~has)
        aligned = pa.table(
            {
                n: pc.if_else(mask, pa.scalar(None, aligned.schema.field(n).type), aligned.column(n))
                for n in aligned.column_names
            }
        )
    table = pa.table({"id": pa.array(ids.raw), **{n: aligned.column(n) for n in aligned.column_names}})
    stats = {
        f"{kind}_table_rows_without_interactions": int(len(keys_feat) - has.sum()),
        f"{kind}s_without_features": int((~has).sum()),
    }
    return FeatureTable(table, kind), stats


def assemble(
    name: str,
    raw: RawInteractions,
    *,
    item_features: Iterable[pa.Table] = (),
    user_features: pa.Table | None = None,
    duplicates: DuplicatePolicy = "drop",
    invalid_signals: SignalPolicy | str = "error",
    meta: Mapping[str, Any] | None = None,
) -> Dataset:
    """A :class:`Dataset` from raw columns: id maps from the log's users and items, signal
    values checked (:mod:`onerec.data.signals`; a string is ``SignalPolicy(on_invalid=...)``),
    feature tables joined onto them (several item tables are merged column-wise), duplicates
    handled. What the signal and duplicate steps removed is in ``meta["filters"]``."""
    policy = SignalPolicy(invalid_signals) if isinstance(invalid_signals, str) else invalid_signals
    log = build_log(
        raw.users,
        raw.items,
        raw.timestamps,
        signals=raw.signals,
        sessions=raw.sessions,
        path=raw.source or None,
        line_offset=raw.line_offset,
    )
    reports: list[FilterReport] = []
    if log.signals:
        log, signal_report = apply_signal_policy(
            log, policy, source=raw.source or None, line_offset=raw.line_offset
        )
        reports.append(signal_report)
        if len(log) == 0:
            raise EmptyDataError(
                f"every row has an invalid signal value ({signal_report.detail})",
                path=raw.source or None,
                hint="fix the signal columns, or leave them out of the column mapping.",
            )
        log = log.without_unused_ids()
    log, dup_report = deduplicate(log, duplicates, raw.source or None)
    reports.append(dup_report)
    item_table = FeatureTable.from_ids(log.items)
    info: dict[str, Any] = {"source": raw.source}
    for table in item_features:
        aligned, stats = align_features(table, log.items, "item")
        item_table = item_table.with_columns_of(aligned)
        for k, v in stats.items():
            info[k] = info.get(k, 0) + v
    user_table, stats = align_features(user_features, log.users, "user")
    info.update(stats)
    info["duplicates_removed"] = dup_report.rows_removed
    info["filters"] = [r.to_dict() for r in reports]
    info.update(meta or {})
    return Dataset(name, log.sorted(), item_table, user_table, info)


FORMATS = ("sequences", "pairs", "atomic", "json", "csv", "parquet")


def guess_format(path: str | Path) -> str:
    """The reader for a file by its name: ``.inter`` atomic, ``.json`` JSON sequences,
    ``.csv``/``.parquet`` tables, ``.txt`` sequences (S3-Rec)."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".inter":
        return "atomic"
    by_suffix = {".json": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "sequences"}
    if p.suffix in by_suffix:
        return by_suffix[p.suffix]
    raise DataError(
        f"cannot tell the format of {p.name!r} from its name",
        path=p,
        hint=f"pass the format explicitly, one of {FORMATS}.",
    )


def read_dataset(
    path: str | Path,
    *,
    format: str = "auto",
    name: str | None = None,
    columns: ColumnMapping = ColumnMapping(),
    item_files: Iterable[str | Path] = (),
    duplicates: DuplicatePolicy = "drop",
    invalid_signals: SignalPolicy | str = "error",
    encoding: str = DEFAULT_ENCODING,
) -> Dataset:
    """Any supported interaction file as a :class:`Dataset`.

    ``item_files`` are JSON item records (``{item: {field: text}}``), JSON attribute lists
    (``{item: [ids]}``), or CSV/Parquet tables whose first column is the item id. ``encoding``
    is that of every text file read; ``invalid_signals`` see :func:`assemble`.
    """
    p = Path(path)
    encoding = check_encoding(encoding)
    fmt = guess_format(p) if format == "auto" else format
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}", hint=f"use one of {FORMATS}.")
    user_table = None
    tables: list[pa.Table] = []
    if fmt == "sequences":
        raw = read_sequences(p, encoding=encoding)
    elif fmt == "pairs":
        raw = read_pairs(p, encoding=encoding)
    elif fmt == "json":
        raw = read_json_sequences(p, encoding=encoding)
    elif fmt == "atomic":
        prefix = p.with_suffix("") if p.suffix == ".inter" else p
        raw, item_table, user_table = read_atomic(prefix, encoding=encoding)
        tables += [item_table] if item_table is not None else []
    else:
        raw = read_table(p, columns, encoding=encoding, format=fmt)  # type: ignore[arg-type]
    for f in item_files:
        tables.append(_read_item_file(Path(f), encoding))
    return assemble(name or p.stem, raw, item_features=tables, user_features=user_table,
                    duplicates=duplicates, invalid_signals=invalid_signals)  # fmt: skip


def _read_item_file(p: Path, encoding: str = DEFAULT_ENCODING) -> pa.Table:
    if p.suffix == ".json":
        data = read_json(p, encoding)
        first = next(iter(data.values()), None) if isinstance(data, dict) else None
        return _attributes_table(data, p) if isinstance(first, list) else _items_table(data, p)
    if p.suffix == ".parquet":
        table = read_parquet(p)
    else:
        first_column = next(text_lines(check_file(p), encoding))[1].split(",")[0].strip().strip('"')
        table = _read_csv(p, encoding, [first_column])
    if table.num_columns == 0 or table.num_rows == 0:
        raise EmptyDataError("the item table is empty", path=p)
    _check_header(table.column_names, p)
    offset = 0 if p.suffix == ".parquet" else 2
    ids = canonical_ids(
        table.column(0).to_numpy(zero_copy_only=False),
        what=f"item id column {table.column_names[0]!r}:",
        path=p,
        locate=lambda i: {"row": i} if offset == 0 else {"line": i + offset},
    )
    IdMap.from_saved(ids, "item", p)  # an item listed twice is named here, with the file
    return table.drop_columns([table.column_names[0]]).add_column(0, "id", pa.array(ids))
