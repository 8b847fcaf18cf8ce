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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from onerec.data.report import FilterReport
from onerec.data.schema import (
    Dataset,
    FeatureTable,
    IdMap,
    InteractionLog,
    build_log,
    canonical_ids,
)
from onerec.exceptions import (
    DataError,
    DuplicateRowsError,
    EmptyDataError,
    InvalidTimestampError,
    MalformedLineError,
    MissingColumnError,
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


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) with a byte-progress bar for files over 50 MB."""
    size = p.stat().st_size
    with p.open() as f, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"reading {p.name}", disable=size < 50e6
    ) as bar:
        for lineno, line in enumerate(f, start=1):
            bar.update(len(line))
            yield lineno, line


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise EmptyDataError("the file is empty", path=p, hint="point to a file with records.")
    return p


# ------------------------------------------------------------------------------------------------
# Sequence-per-line text formats
# ------------------------------------------------------------------------------------------------
def read_sequences(path: str | Path) -> RawInteractions:
    """S3-Rec sequence file: ``user item1 item2 ...`` per line, items in time order."""
    p = _check_file(path)
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    first_line: dict[str, int] = {}
    for lineno, line in _lines(p):
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
        np.array(users), np.array(items), np.array(positions, dtype=np.int64), source=str(p)
    )


def read_pairs(path: str | Path) -> RawInteractions:
    """SASRec pair file: ``user item`` per line, lines of one user in time order."""
    p = _check_file(path)
    users: list[str] = []
    items: list[str] = []
    for lineno, line in _lines(p):
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
    u = canonical_ids(users)
    # position within the user's lines is the timestamp
    order = np.argsort(u, kind="stable")
    sorted_u = u[order]
    starts = np.r_[0, np.flatnonzero(sorted_u[1:] != sorted_u[:-1]) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(u)]))
    pos = np.empty(len(u), dtype=np.int64)
    pos[order] = np.arange(len(u)) - run_start
    return RawInteractions(u, np.array(items), pos, source=str(p))


def _read_json(path: str | Path) -> Any:
    p = _check_file(path)
    try:
        with p.open() as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise MalformedLineError(f"invalid JSON: {e.msg}", path=p, line=e.lineno) from None


def _require_dict(data: Any, p: Path, what: str) -> dict:
    if not isinstance(data, dict):
        raise DataError(f"expected a JSON object {what}, got {type(data).__name__}", path=p)
    if not data:
        raise EmptyDataError("the JSON object is empty", path=p)
    return data


def read_json_sequences(path: str | Path) -> RawInteractions:
    """JSON interactions ``{user: [item, item, ...]}``, items in time order."""
    p = Path(path)
    data = _require_dict(_read_json(p), p, "mapping users to item lists")
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
    return RawInteractions(
        np.array([str(u) for u in users]),
        np.array([str(i) for i in items]),
        np.array(positions, dtype=np.int64),
        source=str(p),
    )


def read_json_items(path: str | Path, fields: Iterable[str] | None = None) -> pa.Table:
    """JSON item records ``{item: {field: text, ...}}`` as a table with an ``id`` column and one
    string column per field (all fields seen, or the given ones)."""
    p = Path(path)
    return _items_table(_read_json(p), p, fields)


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
    cols: dict[str, Any] = {"id": canonical_ids(keys)}
    for name in fields:
        values = [data[k].get(name) for k in keys]
        cols[name] = pa.array([None if v is None else _as_text(v) for v in values], pa.string())
    return pa.table(cols)


def _as_text(v: Any) -> str:
    if isinstance(v, list):
        return ", ".join(str(x) for x in v)
    return str(v)


def read_json_attributes(path: str | Path, column: str = "attributes") -> pa.Table:
    """JSON attributes ``{item: [attribute id, ...]}`` as a table (``id``, ``column`` as a list)."""
    p = Path(path)
    return _attributes_table(_read_json(p), p, column)


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
    flat = canonical_ids([a for v in values for a in v])
    offsets = np.r_[0, np.cumsum([len(v) for v in values])].astype(np.int32)
    arr = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
    return pa.table({"id": canonical_ids(keys), column: arr})


# ------------------------------------------------------------------------------------------------
# RecBole atomic files
# ------------------------------------------------------------------------------------------------
_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def _read_atomic_file(path: Path) -> tuple[dict[str, str], pa.Table]:
    """One atomic file: typed header ``name:type`` (tab-separated), all columns typed."""
    p = _check_file(path)
    with p.open() as f:
        header = f.readline().rstrip("\n").split("\t")
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
    try:
        table = pacsv.read_csv(
            p,
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as e:
        raise MalformedLineError(f"cannot parse: {e}", path=p) from None
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


def read_atomic(
    prefix: str | Path,
    *,
    user_field: str = "user_id",
    item_field: str = "item_id",
    time_field: str = "timestamp",
    session_field: str | None = "session_id",
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
    types, table = _read_atomic_file(inter_path)
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
        col(user_field), col(item_field), ts, signals, sessions, source=str(inter_path)
    )
    item_table = user_table = None
    item_path = prefix.with_name(prefix.name + ".item")
    if item_path.exists():
        item_table = _atomic_features(item_path, item_field)
    user_path = prefix.with_name(prefix.name + ".user")
    if user_path.exists():
        user_table = _atomic_features(user_path, user_field)
    return raw, item_table, user_table


def _atomic_features(path: Path, id_field: str) -> pa.Table:
    types, table = _read_atomic_file(path)
    if id_field not in types:
        raise MissingColumnError(
            f"no {id_field!r} column; the header has {list(types)}", path=path, line=1
        )
    cols: dict[str, Any] = {"id": canonical_ids(table.column(id_field).to_numpy(zero_copy_only=False))}
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
            rows = [
                np.array(s.split(), dtype=np.float32) for s in c.to_numpy(zero_copy_only=False)
            ]
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


def read_table(path: str | Path, columns: ColumnMapping = ColumnMapping()) -> RawInteractions:
    """A CSV (header row, comma-separated) or Parquet interaction file."""
    p = _check_file(path)
    if p.suffix == ".parquet":
        table = pq.read_table(p)
        row_offset = 0  # rows are 0-based in Parquet
    else:
        try:
            table = pacsv.read_csv(p)
        except pa.ArrowInvalid as e:
            raise MalformedLineError(f"cannot parse CSV: {e}", path=p) from None
        row_offset = 2  # the header is line 1: data row r is line r + 2
    if table.num_rows == 0:
        raise EmptyDataError("the table has no rows", path=p)
    names = table.column_names
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

    for c in (columns.user, columns.item):
        nulls = table.column(c).is_null()
        if pc.any(nulls).as_py():
            i = int(np.flatnonzero(nulls.to_numpy(zero_copy_only=False))[0])
            raise MalformedLineError(f"column {c!r} is empty", **locate(i), path=p)
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
        if col.null_count:
            col = pc.fill_null(col.cast(pa.float64()), float("nan"))
        signals[dst] = col.to_numpy()
    to_np = lambda n: table.column(n).to_numpy(zero_copy_only=False)  # noqa: E731
    return RawInteractions(
        to_np(columns.user),
        to_np(columns.item),
        ts,
        signals,
        to_np(columns.session) if columns.session else None,
        source=str(p),
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


def align_features(features: pa.Table | None, ids: IdMap, kind: str) -> tuple[FeatureTable, dict]:
    """Reorder a feature table to the id map; count rows without interactions and ids without
    features (both are reported in the dataset's meta, nothing disappears silently)."""
    if features is None:
        return FeatureTable.from_ids(ids), {}
    raw = canonical_ids(features.column("id").to_numpy(zero_copy_only=False))
    keys_log, keys_feat = ids.raw, raw
    if keys_log.dtype.kind != keys_feat.dtype.kind:
        keys_log, keys_feat = keys_log.astype(str), keys_feat.astype(str)
    n_unique = len(np.unique(keys_feat))
    if n_unique != len(keys_feat):
        raise DataError(f"the {kind} table lists {len(keys_feat) - n_unique} ids twice")
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
    meta: Mapping[str, Any] | None = None,
) -> Dataset:
    """A :class:`Dataset` from raw columns: id maps from the log's users and items, feature
    tables joined onto them (several item tables are merged column-wise), duplicates handled."""
    log = build_log(
        raw.users,
        raw.items,
        raw.timestamps,
        signals=raw.signals,
        sessions=raw.sessions,
        path=raw.source or None,
    )
    log, dup_report = deduplicate(log, duplicates, raw.source or None)
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
) -> Dataset:
    """Any supported interaction file as a :class:`Dataset`.

    ``item_files`` are JSON item records (``{item: {field: text}}``), JSON attribute lists
    (``{item: [ids]}``), or CSV/Parquet tables whose first column is the item id.
    """
    p = Path(path)
    fmt = guess_format(p) if format == "auto" else format
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}", hint=f"use one of {FORMATS}.")
    user_table = None
    tables: list[pa.Table] = []
    if fmt == "sequences":
        raw = read_sequences(p)
    elif fmt == "pairs":
        raw = read_pairs(p)
    elif fmt == "json":
        raw = read_json_sequences(p)
    elif fmt == "atomic":
        raw, item_table, user_table = read_atomic(p.with_suffix("") if p.suffix == ".inter" else p)
        tables += [item_table] if item_table is not None else []
    else:
        raw = read_table(p, columns)
    for f in item_files:
        tables.append(_read_item_file(Path(f)))
    return assemble(name or p.stem, raw, item_features=tables, user_features=user_table, duplicates=duplicates)


def _read_item_file(p: Path) -> pa.Table:
    if p.suffix == ".json":
        data = _read_json(p)
        first = next(iter(data.values()), None) if isinstance(data, dict) else None
        return _attributes_table(data, p) if isinstance(first, list) else _items_table(data, p)
    table = pq.read_table(p) if p.suffix == ".parquet" else pacsv.read_csv(_check_file(p))
    if table.num_columns == 0 or table.num_rows == 0:
        raise EmptyDataError("the item table is empty", path=p)
    ids = canonical_ids(table.column(0).to_numpy(zero_copy_only=False))
    return table.drop_columns([table.column_names[0]]).add_column(0, "id", pa.array(ids))
