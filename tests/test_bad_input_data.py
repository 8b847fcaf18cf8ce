"""Bad input to the data layer (issue 23): every case stops with a named error whose message
names the offending file, row or field, and a command that writes leaves nothing behind.

Cases run through the CLI's own command functions (``onerec data convert/split``; the error is
the one ``main`` would print) or through the Python API where the input cannot come from a
file. Error classes are named by string so that this file also runs against older code, where
the silent failures below must fail.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onerec import exceptions as E
from onerec.cli import build_parser, main
from onerec.data import Dataset, SessionQualityFilter, build_log, read_dataset
from onerec.data.readers import ColumnMapping

HEADER = "user_id,item_id,timestamp"


def cli(argv: list[str]) -> int:
    """Run one command as ``main`` does, but let the error through to the test."""
    args = build_parser().parse_args(argv)
    return args.func(args)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def good_csv(d: Path, name: str = "log.csv", extra: str = "") -> Path:
    rows = "".join(f"u{u},{i},{t}\n" for u in range(3) for t, i in enumerate(range(u, u + 5)))
    return write(d / name, f"{HEADER}\n{rows}{extra}")


def parquet(d: Path, name: str, item_id: pa.Array, **cols) -> Path:
    n = len(item_id)
    table = {"user_id": ["u0"] * n, "item_id": item_id, "timestamp": list(range(n)), **cols}
    pq.write_table(pa.table(table), d / name)
    return d / name


def saved_dataset(d: Path) -> Path:
    return read_dataset(good_csv(d)).save(d / "saved")


def _write_ids(path: Path, ids: list[int]) -> None:
    pq.write_table(pa.table({"id": ids}), path)


def damage(path: Path, how: Callable[[Path], None]) -> Path:
    how(path)
    return path.parent


# Each case: (files to write -> argv of a writing command, error class name, needles that the
# message must contain). The output folder is {d}/out.
CONVERT_CASES = {
    "csv-zero-bytes": (lambda d: write(d / "e.csv", ""), "EmptyDataError", ["e.csv"]),
    "csv-header-only": (lambda d: write(d / "h.csv", HEADER + "\n"), "EmptyDataError", ["h.csv"]),
    "csv-wrong-columns": (lambda d: write(d / "w.csv", "a,b\n1,2\n"), "MissingColumnError",
                          ["w.csv", "item_id"]),
    "csv-not-utf8": (lambda d: write(d / "l.csv",
                                     f"{HEADER}\nJos\xe9,caf\xe9,1\n".encode("latin-1")),
                     "FileEncodingError", ["l.csv", "--encoding"]),
    "csv-utf16-read-as-utf8": (lambda d: write(d / "u.csv", f"{HEADER}\nu,i,1\n".encode("utf-16")),
                               "FileEncodingError", ["u.csv", "utf-16"]),
    "csv-empty-item-cell": (lambda d: good_csv(d, "c.csv", "u9,,7\n"), "InvalidIdError",
                            ["c.csv", "line 17", "item_id"]),
    "csv-empty-user-cell": (lambda d: write(d / "c.csv", f"{HEADER}\n,3,1\n"), "InvalidIdError",
                            ["c.csv", "line 2", "user_id"]),
    "csv-text-timestamp": (lambda d: good_csv(d, "t.csv", "u1,4,noon\n"), "InvalidTimestampError",
                           ["t.csv", "line 17", "noon"]),
    "csv-empty-timestamp": (lambda d: write(d / "t.csv", f"{HEADER}\nu1,4,\nu1,5,3\n"),
                            "InvalidTimestampError", ["t.csv"]),
    "csv-nan-signal": (lambda d: write(d / "s.csv", f"{HEADER},watch_time\nu,1,1,3\nu,2,2,\n"),
                       "InvalidSignalError", ["s.csv", "line 3", "watch_time", "NaN"]),
    "csv-inf-signal": (lambda d: write(d / "s.csv", f"{HEADER},watch_time\nu,1,1,inf\nu,2,2,1\n"),
                       "InvalidSignalError", ["s.csv", "line 2", "watch_time", "inf"]),
    "csv-negative-signal": (lambda d: write(d / "s.csv", f"{HEADER},like\nu,1,1,1\nu,2,2,-1\n"),
                            "InvalidSignalError", ["s.csv", "line 3", "like", "negative"]),
    "csv-ragged-row": (lambda d: good_csv(d, "r.csv", "u1,4,5,6\n"), "MalformedLineError",
                       ["r.csv"]),
    "csv-unknown-suffix": (lambda d: write(d / "log.dat", f"{HEADER}\nu,1,1\n"), "DataError",
                           ["log.dat", "format"]),
    "missing-file": (lambda d: d / "nowhere.csv", "DatasetNotFoundError", ["nowhere.csv"]),
    "folder-not-a-dataset": (lambda d: write(d / "stuff" / "notes.md", "hi").parent,
                             "NotADatasetError", ["stuff", "meta.json"]),
    "parquet-truncated": (lambda d: write(d / "t.parquet", parquet(d, "x.parquet",
                          pa.array([1, 2])).read_bytes()[:60]), "CorruptFileError", ["t.parquet"]),
    "parquet-not-parquet": (lambda d: write(d / "n.parquet", "user_id,item_id\n"),
                            "CorruptFileError", ["n.parquet", "Parquet"]),
    "parquet-fractional-id": (lambda d: parquet(d, "f.parquet", pa.array([1.0, 1.5])),
                              "InvalidIdError", ["f.parquet", "row 1", "1.5", "fraction"]),
    "parquet-float-id-beyond-2**53": (lambda d: parquet(d, "f.parquet", pa.array([1.0, 2.0**60])),
                                      "InvalidIdError", ["f.parquet", "row 1", "2**53"]),
    "parquet-float32-id-beyond-2**24": (lambda d: parquet(d, "f.parquet",
                                        pa.array([1.0, 2.0**25], pa.float32())),
                                        "InvalidIdError", ["f.parquet", "row 1", "2**24"]),
    "parquet-null-id": (lambda d: parquet(d, "n.parquet", pa.array([1, None, 3])),
                        "InvalidIdError", ["n.parquet", "row 1", "missing"]),
    "parquet-boolean-id": (lambda d: parquet(d, "b.parquet", pa.array([True, False])),
                           "InvalidIdError", ["b.parquet", "boolean"]),
    "parquet-list-id": (lambda d: parquet(d, "l.parquet", pa.array([[1], [2]])),
                        "InvalidIdError", ["l.parquet", "row 0"]),
    "parquet-bytes-id": (lambda d: parquet(d, "y.parquet", pa.array([b"a", b"\xe9"])),
                         "InvalidIdError", ["y.parquet", "bytes"]),
    "parquet-nul-in-id": (lambda d: parquet(d, "z.parquet", pa.array(["a", "a\x00"])),
                          "InvalidIdError", ["z.parquet", "row 1", "NUL"]),
    "parquet-nan-timestamp": (lambda d: parquet(d, "t.parquet", pa.array([1, 2]),
                              timestamp=[1.0, float("nan")]), "InvalidTimestampError",
                              ["t.parquet", "row 1"]),
    "sequences-not-utf8": (lambda d: write(d / "s.txt", "u1 a b\nu2 caf\xe9 b\n".encode("latin-1")),
                           "FileEncodingError", ["s.txt", "line 2"]),
    "sequences-user-without-items": (lambda d: write(d / "s.txt", "u1 a b\nu2\n"),
                                     "MalformedLineError", ["s.txt", "line 2"]),
    "sequences-user-twice": (lambda d: write(d / "s.txt", "u1 a b\nu1 c\n"), "MalformedLineError",
                             ["s.txt", "line 2", "line 1"]),
    "sequences-blank-only": (lambda d: write(d / "s.txt", "\n\n"), "EmptyDataError", ["s.txt"]),
    "json-user-listed-twice": (lambda d: write(d / "j.json", '{"u1": [1, 2],\n "u1": [3]}'),
                               "MalformedLineError", ["j.json", "line 2", "'u1'"]),
    "csv-column-named-twice": (lambda d: write(d / "c.csv", "user_id,item_id,item_id,timestamp\n"
                               "1,2,3,4\n"), "MalformedLineError", ["c.csv", "'item_id'"]),
    "atomic-column-named-twice": (lambda d: write(d / "a.inter", "user_id:token\titem_id:token\t"
                                  "item_id:token\n1\t2\t3\n"), "MalformedLineError",
                                  ["a.inter", "line 1", "'item_id'"]),
    "json-truncated": (lambda d: write(d / "j.json", '{"u1": [1, 2'), "MalformedLineError",
                       ["j.json", "line 1"]),
    "json-top-level-list": (lambda d: write(d / "j.json", "[1, 2]"), "DataError",
                            ["j.json", "list"]),
    "json-null-item": (lambda d: write(d / "j.json", '{"u1": [1, null]}'), "InvalidIdError",
                       ["j.json", "user 'u1', position 1", "missing"]),
    "json-fractional-item": (lambda d: write(d / "j.json", '{"u1": [1, 2.5]}'), "InvalidIdError",
                             ["j.json", "position 1", "2.5"]),
    "json-boolean-item": (lambda d: write(d / "j.json", '{"u1": [true, 2]}'), "InvalidIdError",
                          ["j.json", "position 0"]),
    "atomic-untyped-header": (lambda d: write(d / "a.inter", "user_id\titem_id\n1\t2\n"),
                              "MalformedLineError", ["a.inter", "line 1"]),
    "atomic-empty-item-token": (lambda d: write(d / "a.inter", "user_id:token\titem_id:token\n"
                                "1\t2\n1\t\n"), "InvalidIdError", ["a.inter", "line 3", "empty"]),
    "sequences-nul-in-id": (lambda d: write(d / "s.txt", "u1 a\x00 b\n"), "InvalidIdError",
                            ["s.txt", "NUL"]),
    "atomic-no-item-column": (lambda d: write(d / "a.inter", "user_id:token\tx:token\n1\t2\n"),
                              "MissingColumnError", ["a.inter", "item_id"]),
    "atomic-text-in-float-column": (lambda d: write(d / "a.inter",
                                    "user_id:token\titem_id:token\trating:float\n1\t2\tgood\n"),
                                    "MalformedLineError", ["a.inter", "line 2", "rating"]),
    "atomic-text-in-float-seq": (lambda d: (write(d / "a" / "a.item", "item_id:token\tv:float_seq\n"
                                 "2\t0.5 x\n"), write(d / "a" / "a.inter",
                                 "user_id:token\titem_id:token\n1\t2\n"))[1],
                                 "MalformedLineError", ["a.item", "line 2", "'v'"]),
    "saved-dataset-truncated-parquet": (lambda d: damage(saved_dataset(d) / "interactions.parquet",
                                        lambda p: p.write_bytes(p.read_bytes()[:50])),
                                        "CorruptFileError", ["interactions.parquet"]),
    "saved-dataset-invalid-meta": (lambda d: damage(saved_dataset(d) / "meta.json",
                                   lambda p: p.write_text("{")), "MalformedLineError",
                                   ["meta.json"]),
    "saved-dataset-item-listed-twice": (lambda d: damage(saved_dataset(d) / "items.parquet",
                                        lambda p: _write_ids(p, [1, 1, 2, 3, 4, 5, 6])),
                                        "IdCollisionError", ["items.parquet", "row 0"]),
    "saved-dataset-index-out-of-range": (lambda d: damage(saved_dataset(d) / "items.parquet",
                                         lambda p: _write_ids(p, [1, 2])),
                                         "CorruptFileError", ["interactions.parquet", "'item'"]),
}


def _argv(command: str, source: Path, out: Path, *extra: str) -> list[str]:
    return ["data", command, str(source), "--out", str(out), *extra]


@pytest.mark.parametrize("build,error,needles", list(CONVERT_CASES.values()),
                         ids=list(CONVERT_CASES))  # fmt: skip
def test_convert_names_the_error_and_writes_nothing(tmp_path, build, error, needles):
    source = build(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(getattr(E, error)) as raised:
        cli(_argv("convert", source, out))
    for needle in needles:
        assert needle in str(raised.value)
    assert not out.exists()
    assert main(_argv("convert", source, out)) == 2  # the CLI prints it, no traceback
    assert not out.exists()


SPLIT_CASES = {
    "every-user-too-short": (lambda d: write(d / "s.csv", f"{HEADER}\nu,1,1\nu,2,2\nv,1,1\n"), [],
                             "EmptyDataError", ["min_interactions", "2 of 2 users"]),
    "temporal-nothing-before-the-cut": (lambda d: write(d / "s.csv", f"{HEADER}\nu,1,5\nu,2,5\n"),
                                        ["--protocol", "temporal"], "EmptyDataError",
                                        ["validation cut"]),
    "history-length-zero": (good_csv, ["--history-length", "0"], "ConfigError", ["history_length"]),
    "session-filter-without-sessions": (good_csv, ["--session-filter"], "ConfigError",
                                        ["session"]),
    "session-filter-on-nan-watch-time": (
        lambda d: Dataset("w", build_log(
            np.array(["u"] * 6), np.arange(6), np.arange(6), sessions=np.zeros(6),
            signals={"watch_time": np.array([1, 2, np.nan, 3, 4, 5.0]), "like": np.ones(6)},
        ), *_tables(6)).save(d / "saved"),
        ["--session-filter", "--min-watched-items", "1"], "InvalidSignalError",
        ["watch_time", "row 2", "NaN"]),
    "session-filter-on-inf-watch-time": (
        lambda d: Dataset("w", build_log(
            np.array(["u"] * 6), np.arange(6), np.arange(6), sessions=np.zeros(6),
            signals={"watch_time": np.array([1, 2, 3, np.inf, 4, 5.0]), "like": np.ones(6)},
        ), *_tables(6)).save(d / "saved"),
        ["--session-filter", "--min-watched-items", "1"], "InvalidSignalError",
        ["watch_time", "row 3", "inf"]),
    "duplicates-set-to-error": (lambda d: good_csv(d, "d.csv", "u1,1,0\n"),
                                ["--duplicates", "error"], "DuplicateRowsError", ["d.csv", "row"]),
    "all-signals-invalid-and-dropped": (lambda d: write(d / "s.csv", f"{HEADER},like\nu,1,1,-1\n"),
                                        ["--invalid-signals", "drop"], "EmptyDataError",
                                        ["s.csv", "like: 1 negative"]),
    "unknown-encoding": (good_csv, ["--encoding", "klingon"], "ConfigError", ["klingon"]),
    "out-is-a-file": (good_csv, [], "OutputExistsError", ["out", "is a file"]),
}


def _tables(n: int):
    from onerec.data import FeatureTable, IdMap

    return (FeatureTable.from_ids(IdMap(np.arange(n), "item")),
            FeatureTable.from_ids(IdMap(np.array(["u"]), "user")))  # fmt: skip


@pytest.mark.parametrize("build,extra,error,needles", list(SPLIT_CASES.values()),
                         ids=list(SPLIT_CASES))  # fmt: skip
def test_split_names_the_error_and_writes_nothing(tmp_path, build, extra, error, needles):
    source = build(tmp_path)
    out = tmp_path / "out"
    if error == "OutputExistsError":
        out.write_text("keep me")
    with pytest.raises(getattr(E, error)) as raised:
        cli(_argv("split", source, out / "sub" if out.is_file() else out, *extra))
    for needle in needles:
        assert needle in str(raised.value)
    if error == "OutputExistsError":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()


def _string_signal(d: Path) -> None:
    path = write(d / "s.csv", f"{HEADER},label\nu,1,1,x\n")
    read_dataset(path, columns=ColumnMapping(signals={"label": "label"}))


def _split_without_json(d: Path) -> None:
    from onerec.data import Split

    Split.load(d)


def _split_with_truncated_train(d: Path) -> None:
    from onerec.data import Split, leave_one_out

    out = leave_one_out(read_dataset(good_csv(d)).log).save(d / "split")
    (out / "train.parquet").write_bytes(b"PAR1")
    Split.load(out)


def _split_with_examples_missing_a_column(d: Path) -> None:
    from onerec.data import Split, leave_one_out

    out = leave_one_out(read_dataset(good_csv(d)).log).save(d / "split")
    test = out / "test.parquet"
    pq.write_table(pq.read_table(test).drop_columns(["target"]), test)
    Split.load(out)


def _split_with_fewer_item_ids_than_its_rows_use(d: Path) -> None:
    from onerec.data import Split, leave_one_out

    out = leave_one_out(read_dataset(good_csv(d)).log).save(d / "split")
    _write_ids(out / "item_ids.parquet", [0, 1])
    Split.load(out)


def _tokenization_with_repeated_item(d: Path) -> None:
    from onerec.tokenizer.pipeline import load_tokenization

    table = pa.table({"item_id": [7, 7], "code_0": [0, 1]})
    meta = {"level_sizes": "[2]", "base_levels": "1", "collision_rate_before": "0.0"}
    pq.write_table(table.replace_schema_metadata(meta), d / "semantic_ids.parquet")
    load_tokenization(d)


def _filter_on_negative_watch_time(d: Path) -> None:
    log = build_log(np.array([1, 1]), np.array([1, 2]), np.array([1, 2]), sessions=np.zeros(2),
                    signals={"watch_time": np.array([3.0, -2.0]), "like": np.ones(2)})  # fmt: skip
    SessionQualityFilter(min_watched_items=1).apply(log)


def _too_short_users_set_to_error(d: Path) -> None:
    from onerec.data import leave_one_out

    leave_one_out(read_dataset(good_csv(d, extra="u7,1,1\n")).log, on_short="error")


def _item_file_listing_an_item_twice(d: Path) -> None:
    items = write(d / "items.csv", "item_id,title\n1,a\n1,b\n")
    read_dataset(good_csv(d), item_files=[items])


def _item_file_not_utf8(d: Path) -> None:
    items = write(d / "items.csv", "item_id,title\n1,caf\xe9\n".encode("latin-1"))
    read_dataset(good_csv(d), item_files=[items])


API_CASES = {
    "item-file-not-utf8": (_item_file_not_utf8, "FileEncodingError", ["items.csv"]),
    "signal-column-of-text": (_string_signal, "MalformedLineError", ["s.csv", "label"]),
    "split-folder-without-split-json": (_split_without_json, "NotADatasetError", ["split.json"]),
    "split-with-truncated-train": (_split_with_truncated_train, "CorruptFileError",
                                   ["train.parquet"]),
    "split-with-examples-missing-a-column": (_split_with_examples_missing_a_column,
                                             "MissingColumnError", ["test.parquet", "target"]),
    "split-with-fewer-item-ids-than-its-rows-use": (
        _split_with_fewer_item_ids_than_its_rows_use, "CorruptFileError",
        ["train.parquet", "'item'", "[0, 2)"]),
    "tokenization-listing-an-item-twice": (_tokenization_with_repeated_item, "IdCollisionError",
                                           ["semantic_ids.parquet", "7"]),
    "session-filter-on-negative-watch-time": (_filter_on_negative_watch_time,
                                              "InvalidSignalError", ["watch_time", "row 1"]),
    "too-short-users-set-to-error": (_too_short_users_set_to_error, "TooFewInteractionsError",
                                     ["'u7'"]),
    "item-file-listing-an-item-twice": (_item_file_listing_an_item_twice, "DataError",
                                        ["items.csv", "row 0"]),
}


@pytest.mark.parametrize("call,error,needles", list(API_CASES.values()), ids=list(API_CASES))
def test_api_names_the_error(tmp_path, call, error, needles):
    with pytest.raises(getattr(E, error)) as raised:
        call(tmp_path)
    for needle in needles:
        assert needle in str(raised.value)


# --- the silent failures of issue 23 (each passed without a word before) -------------------------


@pytest.mark.parametrize("value", ["", "nan", "inf", "-inf", "-3"])
def test_invalid_signal_values_no_longer_pass_convert(tmp_path, value):
    source = write(tmp_path / "s.csv", f"{HEADER},watch_time\nu,1,1,{value}\nu,2,2,4\n")
    out = tmp_path / "out"
    with pytest.raises(E.DataError) as raised:
        cli(_argv("convert", source, out))
    assert type(raised.value).__name__ == "InvalidSignalError"
    assert "watch_time" in str(raised.value) and "line 2" in str(raised.value)
    assert not out.exists()


def test_the_session_filter_no_longer_drops_nan_and_keeps_inf_sessions():
    log = build_log(np.array(["a"] * 2 + ["b"] * 2), np.array([1, 2, 3, 4]), np.arange(4),
                    sessions=np.array([0, 0, 1, 1]),
                    signals={"watch_time": np.array([np.nan, 1.0, np.inf, 1.0]),
                             "like": np.ones(4)})  # fmt: skip
    with pytest.raises(E.DataError) as raised:
        SessionQualityFilter(min_watched_items=1).apply(log)
    assert type(raised.value).__name__ == "InvalidSignalError"
    assert "1 NaN" in str(raised.value) or "1 inf" in str(raised.value)


def test_dropping_invalid_signals_counts_and_prints_what_went(tmp_path, capsys):
    rows = "u,1,1,5\nu,2,2,nan\nv,3,3,-1\nv,1,4,2\nw,4,5,inf\n"
    source = write(tmp_path / "s.csv", f"{HEADER},watch_time\n{rows}")
    assert main(_argv("convert", source, tmp_path / "out", "--invalid-signals", "drop")) == 0
    printed = capsys.readouterr().out
    assert "invalid signals: removed 3 of 5 rows, 1 of 3 users, 3 of 4 items" in printed
    assert "watch_time: 1 NaN, 1 inf, 1 negative" in printed
    saved = Dataset.load(tmp_path / "out")
    assert len(saved.log) == 2 and saved.num_items == 1  # item 1 only: 2, 3, 4 are gone
    assert saved.meta["filters"][0]["rows_removed"] == 3


@pytest.mark.parametrize("command", ["convert", "split", "info"])
def test_duplicate_rows_are_counted_and_printed(tmp_path, capsys, command):
    source = good_csv(tmp_path, "d.csv", "u1,1,0\nu1,1,0\n")  # two repeats of u1's first row
    out = [] if command == "info" else ["--out", str(tmp_path / "o")]
    argv = ["data", command, str(source), *out]
    assert main(argv) == 0
    assert "duplicates: removed 2 of 17 rows, 0 of 3 users, 0 of" in capsys.readouterr().out


def test_signals_named_signed_may_be_negative_but_not_infinite(tmp_path):
    source = write(tmp_path / "r.csv", f"{HEADER},rating\nu,1,1,-2\nu,2,2,1.5\n")
    with pytest.raises(E.DataError, match="rating"):
        cli(_argv("convert", source, tmp_path / "a"))
    assert main(_argv("convert", source, tmp_path / "b", "--signed-signals", "rating")) == 0
    assert Dataset.load(tmp_path / "b").log.signals["rating"].tolist() == [-2.0, 1.5]
    write(source, f"{HEADER},rating\nu,1,1,-2\nu,2,2,-inf\n")
    with pytest.raises(E.DataError, match="1 inf"):
        cli(_argv("convert", source, tmp_path / "c", "--signed-signals", "rating"))


def test_info_as_json_keeps_stdout_json_and_reports_on_stderr(tmp_path, capsys):
    source = good_csv(tmp_path, "d.csv", "u1,1,0\n")
    assert main(["data", "info", str(source), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["filters"][-1]["rows_removed"] == 1
    assert "duplicates: removed 1 of 16 rows" in captured.err


def test_a_signal_column_left_out_is_not_judged(tmp_path):
    source = write(tmp_path / "s.csv", f"{HEADER},watch_time,comment\nu,1,1,3,\nu,2,2,4,1\n")
    with pytest.raises(E.DataError, match="'comment'"):
        cli(_argv("convert", source, tmp_path / "a"))
    assert main(_argv("convert", source, tmp_path / "b", "--signal-cols", "watch_time")) == 0
    saved = Dataset.load(tmp_path / "b")
    assert sorted(saved.log.signals) == ["watch_time"] and len(saved.log) == 2
