"""Opening input files with named errors: a missing, empty, truncated or wrongly encoded file
stops with an error that names it and says how to fix it, never with a raw traceback.

Every reader of the data layer opens its files through these functions.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from onerec.exceptions import (
    ConfigError,
    CorruptFileError,
    DataFileNotFoundError,
    EmptyDataError,
    FileEncodingError,
    MalformedLineError,
    OutputPathError,
)

DEFAULT_ENCODING = "utf-8"
ENCODING_HINT = (
    "pass the file's encoding (CLI: --encoding latin-1, cp1252, utf-16, ...) or re-save the "
    "file as UTF-8."
)


def check_encoding(encoding: str) -> str:
    """The encoding's name, or :class:`ConfigError` when Python does not know it."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise ConfigError(
            f"unknown text encoding {encoding!r}: use a Python codec name such as utf-8, "
            "latin-1, cp1252 or utf-16"
        ) from None


def check_file(path: str | Path) -> Path:
    """The path of an existing, non-empty file."""
    p = Path(path)
    if not p.exists():
        raise DataFileNotFoundError("no such file", path=p, hint="check the path.")
    if p.is_dir():
        raise DataFileNotFoundError(
            "is a folder, not a file", path=p, hint="point to the file inside it."
        )
    if p.stat().st_size == 0:
        raise EmptyDataError("the file is empty", path=p, hint="point to a file with records.")
    return p


def encoding_error(p: Path, e: UnicodeDecodeError, encoding: str) -> FileEncodingError:
    """The named error for bytes that do not decode in ``encoding``, naming their line."""
    return FileEncodingError(
        f"byte {e.object[e.start:e.start + 1]!r} is not valid {encoding} ({e.reason})",
        path=p,
        line=_undecodable_line(p, encoding),
        hint=ENCODING_HINT,
    )


_BOMS = {b"\xff\xfe": "utf-16", b"\xfe\xff": "utf-16"}


def check_bom(p: Path, encoding: str) -> None:
    """A UTF-16 file read as UTF-8 parses as garbage (one column, odd bytes): name it instead."""
    if codecs.lookup(encoding).name != "utf-8":
        return
    with p.open("rb") as f:
        head = f.read(2)
    if head in _BOMS:
        raise FileEncodingError(
            f"the file starts with a {_BOMS[head]} byte-order mark but is read as {encoding}",
            path=p,
            hint=f"pass the encoding (CLI: --encoding {_BOMS[head]}).",
        )


def _undecodable_line(p: Path, encoding: str) -> int:
    """The 1-based line of the first byte that does not decode (a text file decodes ahead of
    the line it yields, so the line being read when the error came is not it)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    with p.open("rb") as f:
        for chunk in f:
            try:
                line += decoder.decode(chunk).count("\n")
            except UnicodeDecodeError:
                break
    return line


def text_lines(p: Path, encoding: str = DEFAULT_ENCODING) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a text file, with a byte-progress bar for files over
    50 MB. A UTF-8 byte-order mark is skipped; undecodable bytes raise
    :class:`FileEncodingError` naming the line."""
    check_bom(p, encoding)
    size = p.stat().st_size
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    with p.open(encoding=codec) as f, tqdm(
        total=size, unit="B", unit_scale=True, desc=f"reading {p.name}", disable=size < 50e6
    ) as bar:
        try:
            for lineno, line in enumerate(f, start=1):
                bar.update(len(line))
                yield lineno, line
        except UnicodeDecodeError as e:
            raise encoding_error(p, e, encoding) from None


def read_text(p: Path, encoding: str = DEFAULT_ENCODING) -> str:
    """A whole text file, decoded (a UTF-8 byte-order mark is skipped)."""
    check_bom(p, encoding)
    codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        return p.read_text(encoding=codec)
    except UnicodeDecodeError as e:
        raise encoding_error(p, e, encoding) from None


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def read_json(path: str | Path, encoding: str = DEFAULT_ENCODING) -> Any:
    """A JSON file; invalid JSON raises :class:`MalformedLineError` naming the line, and so does
    a key repeated within one object (JSON parsers keep the last and lose the rest silently)."""
    p = check_file(path)
    text = read_text(p, encoding)
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _RepeatedKey as e:
        key = json.dumps(e.key)
        second = text.find(key, text.find(key) + 1)
        raise MalformedLineError(
            f"key {e.key!r} appears twice in one object; a reader would keep only the last",
            path=p,
            line=text.count("\n", 0, second) + 1 if second >= 0 else None,
            hint="merge the two entries into one.",
        ) from None
    except json.JSONDecodeError as e:
        raise MalformedLineError(
            f"invalid JSON: {e.msg}", path=p, line=e.lineno,
            hint="the file is truncated or not JSON: write it again.",
        ) from None  # fmt: skip


def read_parquet(
    path: str | Path, *, hint: str = "write the file again from its source."
) -> pa.Table:
    """A Parquet file; a truncated or non-Parquet file raises :class:`CorruptFileError`."""
    p = check_file(path)
    try:
        return pq.read_table(p)
    except (pa.ArrowException, OSError) as e:
        raise CorruptFileError(
            f"cannot read it as Parquet ({str(e).splitlines()[0]})", path=p, hint=hint
        ) from None


def output_dir(path: str | Path) -> Path:
    """A folder to write into, created if needed; an existing file there raises
    :class:`OutputPathError` (checked before anything is written)."""
    d = Path(path)
    for parent in (d, *d.parents):
        if parent.exists() and not parent.is_dir():
            raise OutputPathError(
                f"cannot write a folder here: {parent} is a file",
                path=d,
                hint="choose another --out, or move the file away.",
            )
    d.mkdir(parents=True, exist_ok=True)
    return d
