"""Ids come back exactly as given (issue 23): through every reader, ``Dataset.save``/``load``,
``Split.save``/``load``, the tokenizer's ``semantic_ids.parquet`` and a served recommendation;
and the filters count exactly what they remove.

The id kinds: signed int64, uint64 hash ids above int64, integers beyond 64 bits, text in the
encoding the file declares, and floats that are integers. Distinct raw ids never share an item.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onerec.data import Dataset, SessionQualityFilter, Split, build_log, leave_one_out
from onerec.data.readers import deduplicate, read_dataset
from onerec.data.splits import filter_min_interactions

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- id strategies ------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64_HASH = st.integers(2**63, 2**64 - 1)  # hash ids: above int64, where they used to wrap
BEYOND_64 = st.integers(2**64, 2**90) | st.integers(-(2**90), -(2**63) - 1)


def _token(s: str) -> bool:
    """Text a whitespace-separated format can hold as one id."""
    return not any(c.isspace() for c in s) and "\x00" not in s


TEXT = st.text(min_size=1, max_size=12).filter(lambda s: "\x00" not in s)
TOKEN = TEXT.filter(_token)
LATIN1 = st.text(st.characters(max_codepoint=0xFF), min_size=1, max_size=8).filter(_token)

ID_KINDS: dict[str, st.SearchStrategy[Any]] = {
    "int64": INT64,
    "uint64": st.one_of(UINT64_HASH, st.integers(0, 1000)),
    "beyond64": st.one_of(BEYOND_64, INT64),
    "text": TEXT.filter(lambda s: "\n" not in s and "\r" not in s),
}


def id_lists(kind: str, n_min: int = 3) -> st.SearchStrategy[list[Any]]:
    return st.lists(ID_KINDS[kind], min_size=n_min, max_size=12, unique=True)


def same_id(given: Any, got: Any) -> bool:
    """``got`` (an id map entry) is the id ``given``: the same integer, or the same text."""
    got = got.item() if isinstance(got, np.generic) else got
    if isinstance(given, int):
        return isinstance(got, int) and got == given or isinstance(got, str) and got == str(given)
    if isinstance(got, int) and re.fullmatch(r"(0|-?[1-9][0-9]*)\.0+", given):
        return str(got) == given.split(".")[0]  # "12.0" is the integral float 12
    return str(got) == given


def interactions(items: list[Any]) -> tuple[list[str], list[Any], list[int]]:
    """Every item used by two users, in a known time order (users u0, u1)."""
    users = ["u0"] * len(items) + ["u1"] * len(items)
    return users, items + items[::-1], list(range(2 * len(items)))


def assert_items_exact(ds: Dataset, users: list[Any], items: list[Any]) -> None:
    """Every row of the dataset maps back to the raw (user, item) it was read from."""
    log = ds.log
    assert log.num_items == len(set(items)), "distinct raw ids merged or split"
    got = {
        (str(log.users.raw[u].item()), i)
        for u, i in zip(log.user.tolist(), log.item.tolist())
    }
    for user, item in zip(users, items):
        match = [i for i in range(log.num_items) if same_id(item, log.items.raw[i])]
        assert len(match) == 1, f"{item!r} maps to {len(match)} items"
        assert (user, match[0]) in got


def write_csv(path: Path, users: list[Any], items: list[Any], ts: list[int],
              encoding: str = "utf-8") -> None:  # fmt: skip
    with path.open("w", newline="", encoding=encoding) as f:
        w = csv.writer(f, quoting=csv.QUOTE_MINIMAL)
        w.writerow(["user_id", "item_id", "timestamp"])
        w.writerows(zip(users, items, ts))


def write_parquet(path: Path, users: list[Any], items: list[Any], ts: list[int]) -> None:
    if all(isinstance(i, int) for i in items) and 2**63 <= max(items) < 2**64 and min(items) >= 0:
        col = pa.array(items, pa.uint64())  # how a hash-id column is stored
    elif all(isinstance(i, int) for i in items) and max(items) < 2**63 and min(items) >= -(2**63):
        col = pa.array(items, pa.int64())
    else:
        col = pa.array([str(i) for i in items], pa.string())  # beyond 64 bits: text
    pq.write_table(pa.table({"user_id": users, "item_id": col, "timestamp": ts}), path)


def write_sequences(path: Path, users: list[Any], items: list[Any], ts: list[int],
                    encoding: str = "utf-8") -> None:  # fmt: skip
    lines: dict[Any, list[str]] = {}
    for u, i in zip(users, items):
        lines.setdefault(u, []).append(str(i))
    path.write_text("".join(f"{u} {' '.join(s)}\n" for u, s in lines.items()), encoding=encoding)


def write_json(path: Path, users: list[Any], items: list[Any], ts: list[int]) -> None:
    seqs: dict[str, list[Any]] = {}
    for u, i in zip(users, items):
        seqs.setdefault(u, []).append(i)
    path.write_text(json.dumps(seqs, ensure_ascii=False), encoding="utf-8")


def write_atomic(path: Path, users: list[Any], items: list[Any], ts: list[int]) -> None:
    rows = "".join(f"{u}\t{i}\t{t}\n" for u, i, t in zip(users, items, ts))
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n" + rows, encoding="utf-8")


WRITERS: dict[str, tuple[str, Callable[..., None]]] = {
    "csv": ("log.csv", write_csv),
    "parquet": ("log.parquet", write_parquet),
    "sequences": ("log.txt", write_sequences),
    "json": ("log.json", write_json),
    "atomic": ("log.inter", write_atomic),
}
# which id kinds each format can hold (sequence and atomic files cannot hold whitespace)
FORMAT_KINDS = [
    (fmt, kind)
    for fmt in WRITERS
    for kind in ID_KINDS
    if not (kind == "text" and fmt in ("sequences", "atomic"))
]


@pytest.mark.parametrize("fmt,kind", FORMAT_KINDS)
@SETTINGS
@given(data=st.data())
def test_ids_round_trip_through_every_reader_and_convert(tmp_path_factory, fmt, kind, data):
    items = data.draw(id_lists(kind))
    users, seq, ts = interactions(items)
    d = tmp_path_factory.mktemp("rt")
    name, write = WRITERS[fmt]
    write(d / name, users, seq, ts)
    ds = read_dataset(d / name)
    assert_items_exact(ds, users, seq)
    saved = Dataset.load(ds.save(d / "converted"))  # `onerec data convert`
    assert_items_exact(saved, users, seq)
    assert saved.log.items.raw.tolist() == ds.log.items.raw.tolist()


@SETTINGS
@given(items=st.lists(TOKEN, min_size=3, max_size=10, unique=True))
def test_text_ids_round_trip_through_the_sequence_reader(tmp_path_factory, items):
    users, seq, ts = interactions(items)
    d = tmp_path_factory.mktemp("seq")
    write_sequences(d / "log.txt", users, seq, ts)
    assert_items_exact(read_dataset(d / "log.txt"), users, seq)


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "utf-16", "utf-8"])
@SETTINGS
@given(items=st.lists(LATIN1, min_size=3, max_size=8, unique=True))
def test_text_ids_round_trip_in_the_encoding_the_file_declares(tmp_path_factory, encoding, items):
    items = [i for i in items if _encodable(i, encoding)]
    if len(items) < 2:
        return
    users, seq, ts = interactions(items)
    d = tmp_path_factory.mktemp("enc")
    write_csv(d / "log.csv", users, seq, ts, encoding=encoding)
    write_sequences(d / "log.txt", users, seq, ts, encoding=encoding)
    for name in ("log.csv", "log.txt"):
        ds = read_dataset(d / name, encoding=encoding)
        assert_items_exact(ds, users, seq)


def _encodable(s: str, encoding: str) -> bool:
    try:
        s.encode(encoding)
        return True
    except UnicodeEncodeError:
        return False


@SETTINGS
@given(values=st.lists(st.integers(-(2**52), 2**52), min_size=3, max_size=10, unique=True))
def test_floats_that_are_integers_become_those_integers(tmp_path_factory, values):
    users, seq, ts = interactions(values)
    d = tmp_path_factory.mktemp("fl")
    floats = pa.array([float(v) for v in seq], pa.float64())
    table = pa.table({"user_id": users, "item_id": floats, "timestamp": ts})
    pq.write_table(table, d / "f.parquet")
    write_csv(d / "f.csv", users, [f"{v}.0" for v in seq], ts)  # how pandas writes them
    for name in ("f.parquet", "f.csv"):
        ds = read_dataset(d / name)
        assert ds.log.items.raw.dtype == np.int64
        assert sorted(ds.log.items.raw.tolist()) == sorted(values)


# --- the silent failures of issue 23, each of which the old readers let through -----------------


def test_uint64_hash_ids_keep_their_value_instead_of_wrapping_negative(tmp_path):
    ids = [2**64 - 1, 2**63, 12_345_678_901_234_567_890, 5]
    users, seq, ts = interactions(ids)
    write_csv(tmp_path / "h.csv", users, seq, ts)
    write_parquet(tmp_path / "h.parquet", users, seq, ts)
    for name in ("h.csv", "h.parquet"):
        ds = read_dataset(tmp_path / name)
        assert sorted(int(v) for v in ds.log.items.raw.tolist()) == sorted(ids)
        assert (ds.log.items.raw.astype(object) >= 0).all()


def test_ids_beyond_64_bits_stay_distinct(tmp_path):
    ids = [10**23 + k for k in range(1, 5)]  # four items (the old reader made them one or two)
    users, seq, ts = interactions(ids)
    write_csv(tmp_path / "b.csv", users, seq, ts)
    ds = read_dataset(tmp_path / "b.csv")
    assert ds.num_items == 4
    assert sorted(ds.log.items.raw.tolist()) == sorted(str(i) for i in ids)


# --- split, tokenize and serve ------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ID_KINDS))
@SETTINGS
@given(data=st.data())
def test_ids_round_trip_through_split_and_tokenization(tmp_path_factory, kind, data):
    from onerec.tokenizer import SemanticIds
    from onerec.tokenizer.pipeline import load_tokenization, save_semantic_ids

    items = data.draw(id_lists(kind, n_min=4))
    users, seq, ts = interactions(items)
    d = tmp_path_factory.mktemp("sp")
    write_parquet(d / "log.parquet", users, seq, ts)
    ds = read_dataset(d / "log.parquet")
    split = Split.load(leave_one_out(ds.log).save(d / "split"))
    assert split.train.items.raw.tolist() == ds.log.items.raw.tolist()
    assert split.train.users.raw.tolist() == ds.log.users.raw.tolist()
    # each user's test target is the last item of their sequence, by raw id
    for user, target in zip(split.test.user.tolist(), split.test.target.values.tolist()):
        last = seq[len(items) - 1] if split.train.users.raw[user] == "u0" else seq[-1]
        assert same_id(last, split.train.items.raw[target])

    n = ds.num_items
    codes = torch.stack([torch.arange(n) % 4, torch.arange(n) // 4], dim=1)
    sem = SemanticIds.from_codes(codes, [4, max(1, (n + 3) // 4)])
    ids, loaded = load_tokenization(save_semantic_ids(d / "tok", sem, ds.log.items, {}))
    assert ids.raw.tolist() == ds.log.items.raw.tolist()
    assert ids.raw.dtype == ds.log.items.raw.dtype
    assert torch.equal(loaded.codes, sem.codes)


@pytest.fixture(scope="module")
def tiny_model():
    from onerec.model import OneRec, OneRecConfig

    torch.manual_seed(0)
    return OneRec(OneRecConfig.preset("tiny", [4, 4, 4], max_history=8)).eval()


@pytest.mark.parametrize("kind", list(ID_KINDS))
@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_ids_round_trip_through_a_served_recommendation(tmp_path_factory, tiny_model, kind, data):
    """A run folder built from a file's ids serves sessions of exactly those ids, and
    recognises a history given in them (it is excluded from the session)."""
    from onerec.generation import Recommender
    from onerec.tokenizer import SemanticIds
    from onerec.tokenizer.pipeline import save_semantic_ids

    items = data.draw(st.lists(ID_KINDS[kind], min_size=8, max_size=10, unique=True))
    users, seq, ts = interactions(items)
    d = tmp_path_factory.mktemp("run")
    write_parquet(d / "log.parquet", users, seq, ts)
    ds = read_dataset(d / "log.parquet")
    all_codes = torch.cartesian_prod(*(torch.arange(4) for _ in range(3)))[: ds.num_items]
    run = d / "run"
    tiny_model.save(run)
    save_semantic_ids(run, SemanticIds.from_codes(all_codes, [4, 4, 4]), ds.log.items, {})
    rec = Recommender.from_run(run)
    history = items[:3]
    out = rec.recommend(history, n_items=3, beam_size=6)
    given_ids = [str(i) for i in items]
    assert all(str(i) in given_ids for i in out.items)
    assert not {str(i) for i in out.items} & {str(i) for i in history}


# --- filters count exactly what they remove -----------------------------------------------------


@st.composite
def logs(draw, bad_signals: bool = True):
    n = draw(st.integers(1, 40))
    user = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    item = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    session = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    # no subnormals: a library loaded by other tests may set flush-to-zero, which hypothesis
    # refuses to draw subnormal floats under
    valid = st.floats(0, 100, allow_subnormal=False)
    values = valid | st.sampled_from([np.nan, np.inf, -np.inf, -1.0]) if bad_signals else valid
    watch = draw(st.lists(values, min_size=n, max_size=n))
    like = draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n))
    return build_log(
        np.array(user), np.array(item), np.array(ts),
        signals={"watch_time": np.array(watch), "like": np.array(like)},
        sessions=np.array(session),
    )  # fmt: skip


def expected_counts(log, keep: np.ndarray) -> dict[str, int]:
    """Rows, users, items and sessions removed, counted with Python sets."""
    def distinct(col: np.ndarray, mask: np.ndarray) -> int:
        return len(set(col[mask].tolist()))

    everything = np.ones(len(log), dtype=bool)
    return {
        name: distinct(col, everything) - distinct(col, keep)
        for name, col in (("users", log.user), ("items", log.item), ("sessions", log.session))
    } | {"rows": int((~keep).sum())}


def reported(report) -> dict[str, int]:
    return {"rows": report.rows_removed, "users": report.users_removed,
            "items": report.items_removed, "sessions": report.sessions_removed}  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(log=logs())
def test_the_signal_policy_counts_exactly_the_rows_it_drops(log):
    from onerec.data.signals import SignalPolicy, apply_signal_policy

    w = log.signals["watch_time"]
    keep = np.isfinite(w) & (w >= 0)
    out, report = apply_signal_policy(log, SignalPolicy("drop"))
    assert len(out) == int(keep.sum())
    assert np.array_equal(out.signals["watch_time"], w[keep])
    assert reported(report) == expected_counts(log, keep)


@settings(max_examples=60, deadline=None)
@given(log=logs(bad_signals=False), min_items=st.integers(0, 4))
def test_the_session_filter_counts_exactly_the_sessions_it_drops(log, min_items):
    flt = SessionQualityFilter(min_watched_items=min_items, min_item_watch=10.0)
    out, report = flt.apply(log)
    w, like = log.signals["watch_time"], log.signals["like"]
    keep = np.zeros(len(log), dtype=bool)
    for s in set(log.session.tolist()):
        rows = log.session == s
        keep[rows] = (w[rows] > 10.0).sum() >= min_items and (like[rows] > 0).any()
    assert len(out) == int(keep.sum())
    assert reported(report) == expected_counts(log, keep)


@settings(max_examples=60, deadline=None)
@given(log=logs(bad_signals=False), minimum=st.integers(1, 6))
def test_min_interactions_and_duplicates_count_exactly_what_they_drop(log, minimum):
    counts = np.bincount(log.user)
    keep = counts[log.user] >= minimum
    out, report = filter_min_interactions(log, minimum)
    assert len(out) == int(keep.sum())
    assert reported(report) == expected_counts(log, keep)

    seen: set[tuple[int, int, Any, int]] = set()
    first = np.zeros(len(log), dtype=bool)
    for r, key in enumerate(zip(log.user.tolist(), log.item.tolist(), log.timestamp.tolist(),
                                log.session.tolist())):  # fmt: skip
        first[r] = key not in seen
        seen.add(key)
    out, report = deduplicate(log, "drop")
    assert len(out) == int(first.sum())
    assert reported(report) == expected_counts(log, first)


@pytest.mark.parametrize("kind", ["uint64", "beyond64", "text"])
def test_a_fitted_tokenization_keeps_the_catalogs_raw_ids(tmp_path, kind):
    """``save_tokenization`` of a real fit (plain k-means) and ``load_tokenization`` give back
    the dataset's id map, value for value and in the dataset's order."""
    from onerec.tokenizer.pipeline import TokenizeConfig, load_tokenization, save_tokenization
    from onerec.tokenizer.pipeline import tokenize as fit_tokenizer

    items = {"uint64": [2**64 - 1 - k for k in range(12)] + list(range(12)),
             "beyond64": [10**25 + k for k in range(24)],
             "text": [f"vidéo-{k}" for k in range(24)]}[kind]  # fmt: skip
    users, seq, ts = interactions(items)
    write_parquet(tmp_path / "log.parquet", users, seq, ts)
    ds = read_dataset(tmp_path / "log.parquet")
    x = np.random.default_rng(0).normal(size=(ds.num_items, 8)).astype(np.float32)
    result = fit_tokenizer(x, TokenizeConfig(method="plain", levels=2, codebook_size=4, iters=5))
    ids, sem = load_tokenization(save_tokenization(tmp_path / "tok", result, ds.log.items))
    assert ids.raw.dtype == ds.log.items.raw.dtype
    assert ids.raw.tolist() == ds.log.items.raw.tolist()
    assert sorted(str(i) for i in ids.raw.tolist()) == sorted(str(i) for i in items)
    assert torch.equal(sem.codes, result.semantic_ids.codes)
