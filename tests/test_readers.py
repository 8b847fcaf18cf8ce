"""Each reader on small files it can read, and each kind of bad input with its named error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onerec.data.readers import (
    ColumnMapping,
    assemble,
    read_atomic,
    read_dataset,
    read_json_sequences,
    read_pairs,
    read_sequences,
    read_table,
)
from onerec.data.schema import Dataset, IdMap, build_log, canonical_ids
from onerec.exceptions import (
    DataError,
    DuplicateRowsError,
    EmptyDataError,
    InvalidTimestampError,
    MalformedLineError,
    MissingColumnError,
    UnknownItemError,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- formats -----------------------------------------------------------------------------------
def test_sequences_keep_order_and_numeric_ids(tmp_path: Path) -> None:
    p = write(tmp_path, "s.txt", "1 3 10 2\n2 10 9\n\n10 1 2 3\n")
    ds = read_dataset(p)
    assert ds.log.items.raw.tolist() == [1, 2, 3, 9, 10]  # numeric order, not "10" < "2"
    u0 = ds.log.item[ds.log.user == 0]
    assert ds.log.items.to_raw(u0).tolist() == [3, 10, 2]
    assert ds.log.users.raw.tolist() == [1, 2, 10]
    assert len(ds.log) == 8


def test_pairs_positions_are_per_user(tmp_path: Path) -> None:
    p = write(tmp_path, "v.txt", "a x\nb y\na z\nb x\na y\n")
    raw = read_pairs(p)
    assert raw.timestamps.tolist() == [0, 0, 1, 1, 2]
    ds = read_dataset(p, format="pairs")
    a = ds.log.item[ds.log.user == 0]
    assert ds.log.items.to_raw(a).tolist() == ["x", "z", "y"]


def test_json_sequences_and_item_files(tmp_path: Path) -> None:
    inter = write(tmp_path, "i.json", json.dumps({"0": [0, 1, 2], "1": [2, 0]}))
    items = write(
        tmp_path, "items.json", json.dumps({"0": {"title": "A"}, "1": {"title": "B"}, "7": {"title": "X"}})
    )
    attrs = write(tmp_path, "attrs.json", json.dumps({"0": [5, 6], "2": [6]}))
    ds = read_dataset(inter, item_files=[items, attrs])
    assert ds.item_table.text("title") == ["A", "B", None]
    assert ds.item_table.attributes("attributes") == [[5, 6], [], [6]]
    # item 7 has text but no interaction; item 2 has no text: both are counted
    assert ds.meta["item_table_rows_without_interactions"] == 1
    assert ds.meta["items_without_features"] == 2  # item 2 lacks text, item 1 lacks attributes


def test_atomic_files(tmp_path: Path) -> None:
    write(tmp_path, "toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
          "u1\ti1\t4\t100\nu1\ti2\t5\t50\nu2\ti1\t3\t70\n")
    write(tmp_path, "toy.item", "item_id:token\ttitle:token_seq\temb:float_seq\n"
          "i1\tThe Movie\t0.5 1.5\ni2\tOther\t1 2\n")
    raw, items, users = read_atomic(tmp_path / "toy")
    assert users is None
    assert raw.signals["rating"].tolist() == [4, 5, 3]
    ds = read_dataset(tmp_path / "toy.inter")
    u1 = ds.log.item[ds.log.user == 0]
    assert ds.log.items.to_raw(u1).tolist() == ["i2", "i1"]  # sorted by timestamp
    assert ds.item_table.attributes("title")[0] == ["The", "Movie"]
    np.testing.assert_allclose(ds.item_table.embedding("emb"), [[0.5, 1.5], [1, 2]])


def test_csv_and_parquet_with_column_mapping(tmp_path: Path) -> None:
    p = write(tmp_path, "log.csv", "uid,vid,ts,watch,req\n1,10,5,3.5,r1\n1,11,6,1.0,r1\n2,10,1,0.0,r9\n")
    cols = ColumnMapping(user="uid", item="vid", timestamp="ts", session="req")
    ds = read_dataset(p, columns=cols)
    assert ds.log.signals["watch"].tolist() == [3.5, 1.0, 0.0]
    assert ds.log.num_sessions == 2
    pq.write_table(pa.table({"uid": [1, 2], "vid": ["a", "b"], "ts": [1.0, 2.0]}), tmp_path / "l.parquet")
    raw = read_table(tmp_path / "l.parquet", ColumnMapping(user="uid", item="vid", timestamp="ts"))
    assert raw.items.tolist() == ["a", "b"]


def test_saved_dataset_round_trip(tmp_path: Path) -> None:
    p = write(tmp_path, "s.txt", "1 3 10 2\n2 10 9\n")
    ds = read_dataset(p)
    back = Dataset.load(ds.save(tmp_path / "saved"))
    np.testing.assert_array_equal(back.log.item, ds.log.item)
    assert back.log.items.raw.tolist() == ds.log.items.raw.tolist()


def test_canonical_ids() -> None:
    assert canonical_ids(["3", "10"]).dtype == np.int64
    assert canonical_ids(["007", "10"]).dtype.kind == "U"  # leading zeros are not numbers
    assert canonical_ids(np.array([1.0, 2.0])).dtype == np.int64


# --- bad input -----------------------------------------------------------------------------------
def test_empty_files(tmp_path: Path) -> None:
    for name in ("e.txt", "e.json", "e.csv", "e.inter"):
        with pytest.raises(EmptyDataError, match="empty"):
            read_dataset(write(tmp_path, name, ""))
    with pytest.raises(EmptyDataError):
        read_sequences(write(tmp_path, "blank.txt", "\n\n"))
    with pytest.raises(EmptyDataError):
        read_json_sequences(write(tmp_path, "e2.json", "{}"))
    with pytest.raises(EmptyDataError, match="no rows"):
        read_dataset(write(tmp_path, "h.csv", "user_id,item_id,timestamp\n"))


def test_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(MalformedLineError, match=r"s\.txt, line 2.*no items") as e:
        read_sequences(write(tmp_path, "s.txt", "1 2 3\n4\n"))
    assert e.value.line == 2 and e.value.path.endswith("s.txt")
    with pytest.raises(MalformedLineError, match="line 3.*already has a sequence on line 1"):
        read_sequences(write(tmp_path, "d.txt", "1 2 3\n2 3\n1 4\n"))
    with pytest.raises(MalformedLineError, match="line 2.*'user item'"):
        read_pairs(write(tmp_path, "p.txt", "a b\na b c\n"))
    with pytest.raises(MalformedLineError, match="invalid JSON"):
        read_json_sequences(write(tmp_path, "bad.json", '{"1": [1, 2'))
    with pytest.raises(MalformedLineError, match="user '1'"):
        read_json_sequences(write(tmp_path, "bad2.json", '{"1": 5}'))
    with pytest.raises(MalformedLineError, match="header"):
        read_atomic(write(tmp_path, "x.inter", "user_id\titem_id\n1\t2\n").with_suffix(""))


def test_missing_columns(tmp_path: Path) -> None:
    p = write(tmp_path, "m.csv", "user,item_id,timestamp\n1,2,3\n")
    with pytest.raises(MissingColumnError, match=r"missing column\(s\) \['user_id'\]; the file has"):
        read_table(p)
    with pytest.raises(MissingColumnError, match="item_id"):
        read_atomic(write(tmp_path, "y.inter", "user_id:token\tthing:token\n1\t2\n").with_suffix(""))


def test_non_numeric_timestamps(tmp_path: Path) -> None:
    p = write(tmp_path, "t.csv", "user_id,item_id,timestamp\n1,2,3\n1,3,yesterday\n")
    with pytest.raises(InvalidTimestampError, match=r"t\.csv, line 3.*'yesterday'") as e:
        read_table(p)
    assert e.value.line == 3
    q = write(tmp_path, "t.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\tnoon\n")
    with pytest.raises(InvalidTimestampError, match="line 2"):
        read_atomic(q.with_suffix(""))
    pq.write_table(pa.table({"user_id": [1, 1], "item_id": [1, 2], "timestamp": [1.0, float("nan")]}), tmp_path / "n.parquet")
    with pytest.raises(InvalidTimestampError, match="row 1.*not finite"):
        read_table(tmp_path / "n.parquet")


def test_duplicate_rows_dropped_and_counted_or_raised(tmp_path: Path) -> None:
    p = write(tmp_path, "d.csv", "user_id,item_id,timestamp\n1,2,3\n1,2,3\n1,4,5\n1,2,3\n")
    ds = read_dataset(p)
    assert len(ds.log) == 2
    assert ds.meta["duplicates_removed"] == 2
    with pytest.raises(DuplicateRowsError, match="2 rows repeat.*row 1"):
        read_dataset(p, duplicates="error")
    assert len(read_dataset(p, duplicates="keep").log) == 4


def test_unknown_items_in_a_split_file(tmp_path: Path) -> None:
    items = IdMap(np.array([1, 2, 3]), "item")
    users = IdMap(np.array([1]), "user")
    with pytest.raises(UnknownItemError, match=r"test\.csv, row 1.*1 item id\(s\).*\(first: 9"):
        build_log(np.array([1, 1]), np.array([2, 9]), np.array([0, 1]),
                  user_map=users, item_map=items, path="test.csv")


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot tell the format"):
        read_dataset(write(tmp_path, "x.dat", "1 2\n"))
    with pytest.raises(FileNotFoundError):
        read_dataset(tmp_path / "nope.txt")


def test_assemble_rejects_duplicate_feature_ids(tmp_path: Path) -> None:
    raw = read_sequences(write(tmp_path, "s.txt", "1 2 3\n"))
    table = pa.table({"id": [2, 2], "title": ["a", "b"]})
    with pytest.raises(DataError, match="item id 2 is listed 2 times"):
        assemble("x", raw, item_features=[table])
