"""Serving a trained run: ``Recommender`` (raw ids in, a generated session out) and
``onerec recommend``.

The run folder is built here the way ``onerec train`` writes it: a tiny model saved with
``OneRec.save``, ``semantic_ids.parquet`` in ``save_tokenization``'s layout, ``train_config.json``
and ``users.parquet``. Raw item ids are 101..130 (not the indices 0..29) and users.parquet is not
sorted, so every raw-id <-> index mapping is exercised.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from onerec.cli import main
from onerec.data.ragged import Ragged
from onerec.data.schema import IdMap
from onerec.exceptions import (
    BeamTooNarrowError,
    DataError,
    EmptyHistoryError,
    GenerationError,
    HistoryTooLongError,
    OneRecError,
    SessionSizeError,
    UnknownItemError,
)
from onerec.generation import Recommendation, Recommender, beam_search_sessions
from onerec.model import OneRec, OneRecConfig
from onerec.tokenizer import SemanticIds

SIZES = [4, 4, 4]
N_ITEMS = 30
RAW_ITEMS = np.arange(101, 101 + N_ITEMS)  # raw id of item index i: 101 + i
RAW_USERS = ["u5", "u2", "u9", "u0", "u7"]  # index order, deliberately unsorted
HISTORY_LENGTH, SESSION_ITEMS = 6, 3  # train_config.json; the model's max_history is 8


def make_ids(n: int, seed: int = 0) -> SemanticIds:
    g = torch.Generator().manual_seed(seed)
    all_codes = torch.cartesian_prod(*(torch.arange(k) for k in SIZES))  # (64, 3), unique
    return SemanticIds.from_codes(all_codes[torch.randperm(len(all_codes), generator=g)[:n]], SIZES)


def peaky_model(seed: int = 0) -> OneRec:
    """A tiny model with large random weights: well-separated scores, so best-first orders do
    not hinge on float rounding."""
    torch.manual_seed(seed)
    model = OneRec(OneRecConfig.preset("tiny", SIZES, max_history=8))
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


def write_semantic_ids(directory: Path, ids: SemanticIds, raw_items: np.ndarray) -> None:
    """``semantic_ids.parquet`` in the layout ``save_tokenization`` writes."""
    codes = ids.codes.numpy()
    columns = {f"code_{i}": codes[:, i] for i in range(codes.shape[1])}
    table = pa.table({"item_id": pa.array(raw_items), **columns})
    meta = {
        "level_sizes": json.dumps(ids.level_sizes),
        "base_levels": str(ids.base_levels),
        "collision_rate_before": repr(ids.collision_rate_before),
    }
    pq.write_table(table.replace_schema_metadata(meta), directory / "semantic_ids.parquet")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("run")
    peaky_model().save(run)
    write_semantic_ids(run, make_ids(N_ITEMS), RAW_ITEMS)
    (run / "train_config.json").write_text(
        json.dumps({"history_length": HISTORY_LENGTH, "session_items": SESSION_ITEMS, "lr": 1e-3})
    )
    pq.write_table(pa.table({"user_id": RAW_USERS}), run / "users.parquet")
    return run


@pytest.fixture(scope="module")
def rec(run: Path) -> Recommender:
    return Recommender.from_run(run)


def direct(rec: Recommender, history_idx: list[int], user_idx: int, n: int, beam: int,
           exclude: bool = True):  # fmt: skip
    """The same request as a direct beam search on indices."""
    rows = Ragged.from_lists([history_idx])
    return beam_search_sessions(
        rec.model, rows, torch.tensor([user_idx]), rec.semantic_ids, beam, n,
        rows if exclude else None,
    )  # fmt: skip


# --- loading ------------------------------------------------------------------------------------


def test_from_run_reads_the_training_settings(rec: Recommender):
    assert rec.history_length == HISTORY_LENGTH
    assert rec.session_items == SESSION_ITEMS
    assert rec.n_catalog == N_ITEMS
    assert rec.items.raw.tolist() == RAW_ITEMS.tolist()
    out = rec.recommend([101, 102])
    assert len(out.items) == SESSION_ITEMS  # the default session length is the trained one


def test_a_run_without_user_map_or_train_config_serves_everyone_anonymously(run, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("model_config.json", "model.safetensors", "semantic_ids.parquet"):
        shutil.copy(run / name, bare / name)
    r = Recommender.from_run(bare)
    assert r.history_length == 8 and r.session_items == 5  # the model config's values
    out = r.recommend([101, 110], user="u2", n_items=2, beam_size=4)
    assert out.anonymous and out.user == "u2"


def test_from_run_on_a_folder_without_semantic_ids_says_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="semantic_ids.parquet"):
        Recommender.from_run(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        Recommender.from_run(tmp_path / "nowhere")


# --- the session --------------------------------------------------------------------------------


def test_session_is_distinct_catalog_items_outside_the_history(rec: Recommender):
    history = [101, 105, 110, 117]
    out = rec.recommend(history, user="u2", n_items=3, beam_size=8, alternatives=3)
    assert isinstance(out, Recommendation)
    assert not out.anonymous and out.history_used == 4 and out.history_dropped == 0
    sessions = [out.session, *out.alternatives]
    assert len(out.alternatives) == 3
    for s in sessions:
        assert len(s.items) == 3 and len(set(s.items)) == 3
        assert set(s.items) <= set(RAW_ITEMS.tolist())
        assert not set(s.items) & set(history)
        assert np.isfinite(s.log_prob) and s.log_prob < 0
    log_probs = [s.log_prob for s in sessions]
    assert log_probs == sorted(log_probs, reverse=True)  # best first
    assert len({tuple(s.items) for s in sessions}) == len(sessions)


def test_session_matches_a_direct_beam_search(rec: Recommender):
    history = [130, 102, 107]  # raw ids -> indices 29, 1, 6
    for exclude in (True, False):
        out = rec.recommend(history, user="u9", n_items=3, beam_size=6, exclude_history=exclude,
                            alternatives=2)  # fmt: skip
        beams = direct(rec, [29, 1, 6], 2, 3, 6, exclude)  # "u9" is user index 2
        expected = (beams.items[0] + 101).tolist()  # (beam, m) raw ids
        got = [out.items] + [a.items for a in out.alternatives]
        assert got == expected[:3]
        assert out.log_prob == pytest.approx(float(beams.log_probs[0, 0]), abs=1e-6)


def test_keep_history_can_recommend_history_items_and_exclusion_removes_them(rec: Recommender):
    # the items the model likes best when nothing is excluded, fed back as the history
    free = rec.recommend([101], n_items=3, beam_size=8, exclude_history=False)
    history = [101, *free.items]
    kept = rec.recommend(history, n_items=3, beam_size=8, exclude_history=False,
                         alternatives=7)  # fmt: skip
    excluded = rec.recommend(history, n_items=3, beam_size=8, alternatives=7)
    assert any(set(s.items) & set(history) for s in [kept.session, *kept.alternatives])
    assert not any(set(s.items) & set(history) for s in [excluded.session, *excluded.alternatives])


def test_unknown_or_missing_user_is_served_anonymously(rec: Recommender):
    anon = rec.recommend([103, 104], user=None, n_items=2, beam_size=4)
    stranger = rec.recommend([103, 104], user="nobody", n_items=2, beam_size=4)
    known = rec.recommend([103, 104], user="u5", n_items=2, beam_size=4)
    assert anon.anonymous and stranger.anonymous and not known.anonymous
    assert stranger.items == anon.items
    assert stranger.log_prob == pytest.approx(anon.log_prob, abs=1e-6)
    beams = direct(rec, [2, 3], -1, 2, 4)
    assert anon.items == (beams.items[0, 0] + 101).tolist()
    assert known.log_prob != pytest.approx(anon.log_prob, abs=1e-6)  # the user vector is used


def test_a_model_without_user_embeddings_serves_known_users_anonymously(rec: Recommender):
    torch.manual_seed(0)
    model = OneRec(OneRecConfig.preset("tiny", SIZES, max_history=8, n_user_buckets=0)).eval()
    r = Recommender(model, rec.semantic_ids, rec.items, RAW_USERS)
    known = r.recommend([103, 104], user="u5", n_items=2, beam_size=4)
    anon = r.recommend([103, 104], n_items=2, beam_size=4)
    assert known.anonymous and known.items == anon.items


def test_batch_equals_one_call_per_user(rec: Recommender):
    histories = [[101, 105, 110, 117], [130], [102, 103, 104, 125, 126, 127]]
    users = ["u2", None, "stranger"]
    batch = rec.recommend_batch(histories, users, n_items=3, beam_size=8, alternatives=2)
    assert len(batch) == 3
    for out, history, user in zip(batch, histories, users):
        single = rec.recommend(history, user, n_items=3, beam_size=8, alternatives=2)
        assert out.items == single.items
        assert [a.items for a in out.alternatives] == [a.items for a in single.alternatives]
        assert out.log_prob == pytest.approx(single.log_prob, abs=1e-5)
        assert out.anonymous == single.anonymous and out.user == user
    assert rec.recommend_batch([], n_items=3, beam_size=8) == []


def test_truncate_keeps_the_most_recent_items_and_still_excludes_all(rec: Recommender):
    history = [101, 102, 103, 104, 105, 106, 107, 108]  # 8 > history_length 6
    out = rec.recommend(history, n_items=3, beam_size=8, truncate=True, exclude_history=False)
    recent = rec.recommend(history[-HISTORY_LENGTH:], n_items=3, beam_size=8,
                           exclude_history=False)  # fmt: skip
    assert out.history_used == HISTORY_LENGTH and out.history_dropped == 2
    assert out.items == recent.items
    assert out.log_prob == pytest.approx(recent.log_prob, abs=1e-6)
    excluded = rec.recommend(history, n_items=3, beam_size=8, truncate=True, alternatives=7)
    for s in [excluded.session, *excluded.alternatives]:
        assert not set(s.items) & set(history)  # also the 2 items the model did not read


def test_string_ids_from_a_command_line_match_integer_ids(rec: Recommender):
    a = rec.recommend(["101", "110"], user="u0", n_items=2, beam_size=4)
    b = rec.recommend([101, 110], user="u0", n_items=2, beam_size=4)
    assert a.items == b.items and isinstance(a.items[0], int)


# --- named errors, raised before any model work -------------------------------------------------


@pytest.fixture
def no_search(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("the request reached the beam search")

    monkeypatch.setattr("onerec.generation.recommend.beam_search_sessions", forbidden)


@pytest.mark.parametrize(
    "kwargs, error, words",
    [
        (dict(history=[101, 999, 102, 998]), UnknownItemError, ["2 item id(s)", "999", "998"]),
        (dict(history=[]), EmptyHistoryError, ["empty", "at least 1"]),
        (dict(history=list(range(101, 108))), HistoryTooLongError, ["7 items", "at most 6"]),
        (dict(history=[101], n_items=3, beam_size=2), BeamTooNarrowError,
         ["beam_size (2)", "n_items (3)"]),
        (dict(history=[101], n_items=1, beam_size=0), BeamTooNarrowError, ["beam_size", "got 0"]),
        (dict(history=[101], n_items=6, beam_size=8), SessionSizeError,
         ["n_items (6)", "max_session_items (5)"]),
        (dict(history=[101], n_items=0), SessionSizeError, ["n_items", ">= 1"]),
        (dict(history=[101], n_items=2, beam_size=4, alternatives=4), BeamTooNarrowError,
         ["4 alternatives", "beam_size >= 5"]),
    ],
)  # fmt: skip
def test_each_bad_request_raises_its_named_error(rec, no_search, kwargs, error, words):
    with pytest.raises(error) as info:
        rec.recommend(**kwargs)
    assert isinstance(info.value, OneRecError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, GenerationError) != (error is UnknownItemError)
    for word in words:
        assert word in str(info.value)
    assert "Fix:" in str(info.value) or error in (BeamTooNarrowError, SessionSizeError)


def test_unknown_items_are_listed_up_to_five_with_their_count(rec, no_search):
    with pytest.raises(UnknownItemError, match=r"7 item id\(s\).*and 2 more") as info:
        rec.recommend([101, *range(901, 908)], truncate=True)
    assert "901" in str(info.value) and "906" not in str(info.value)
    with pytest.raises(UnknownItemError, match=r"history rows \[1\]"):
        rec.recommend_batch([[101], [102, 555]])


def test_empty_history_in_a_batch_names_its_row(rec, no_search):
    with pytest.raises(EmptyHistoryError, match="row 1"):
        rec.recommend_batch([[101], []], n_items=2, beam_size=4)


def test_a_string_history_is_refused_not_split_into_characters(rec, no_search):
    with pytest.raises(GenerationError, match="list of item ids"):
        rec.recommend("101,102")


def test_sessions_longer_than_the_catalog_or_what_exclusion_leaves(run, no_search):
    small = make_ids(4)
    r = Recommender(OneRec.load(run), small, IdMap(np.array([1, 2, 3, 4])))
    with pytest.raises(SessionSizeError, match="catalog has 4 items"):
        r.recommend([1], n_items=5, beam_size=8)
    with pytest.raises(SessionSizeError, match="leaving 2"):
        r.recommend([1, 2, 1], n_items=3, beam_size=8)


def test_history_items_may_fill_the_session_when_kept(run):
    r = Recommender(OneRec.load(run), make_ids(4), IdMap(np.array([1, 2, 3, 4])))
    out = r.recommend([1, 2], n_items=4, beam_size=4, exclude_history=False)
    assert sorted(out.items) == [1, 2, 3, 4]


# --- the command line ---------------------------------------------------------------------------


def test_cli_prints_the_session(rec, run, capsys):
    assert main(["recommend", str(run), "--history", "101, 105,110", "--user", "u2",
                 "--alternatives", "2", "--beam", "8"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    expected = rec.recommend([101, 105, 110], user="u2", beam_size=8, alternatives=2)
    assert f"log-prob {expected.log_prob:.4f}" in out
    assert ", ".join(map(str, expected.items)) in out
    assert out.count("alternative") == 2
    assert "user u2" in out and "anonymous" not in out


def test_cli_json(rec, run, capsys):
    args = ["recommend", str(run), "--history", "101,102,103,104,105,106,107", "--truncate",
            "--items", "2", "--keep-history", "--user", "ghost", "--json"]  # fmt: skip
    assert main(args) == 0
    got = json.loads(capsys.readouterr().out)
    expected = rec.recommend(list(range(101, 108)), user="ghost", n_items=2, truncate=True,
                             exclude_history=False)  # fmt: skip
    assert got["items"] == expected.items and got["anonymous"] is True
    assert got["history_dropped"] == 1 and got["user"] == "ghost"


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--history", "101,999"], ["999", "not in the model's catalog"]),
        (["--history", " , "], ["empty"]),
        (["--history", "101", "--beam", "1"], ["beam_size (1)", "n_items (3)"]),
        (["--history", ",".join(map(str, range(101, 108)))], ["at most 6", "--truncate"]),
    ],
)
def test_cli_bad_input_is_an_error_line(run, capsys, extra, words):
    assert main(["recommend", str(run), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("onerec: error: ")
    for word in words:
        assert word in captured.err


# --- extra exclusions (served requests: items already shown) ------------------------------------


def test_exclude_removes_items_counts_unknown_ids_and_checks_what_is_left(rec: Recommender):
    free = rec.recommend([101], n_items=3, beam_size=8, alternatives=7)
    shown = free.items[:2]
    out = rec.recommend_batch([[101], [101]], n_items=3, beam_size=8, alternatives=7,
                              exclude=[[*shown, "nope", 999], []])  # fmt: skip
    for s in [out[0].session, *out[0].alternatives]:
        assert not set(s.items) & set(shown) and 101 not in s.items
    assert out[0].exclude_unknown == 2 and out[1].exclude_unknown == 0
    assert out[1].items == free.items  # an empty list excludes nothing more
    with pytest.raises(SessionSizeError, match="its excluded items cover 28 .* leaving 2"):
        rec.recommend_batch([[101]], n_items=3, beam_size=8, exclude=[RAW_ITEMS[1:28].tolist()])
    with pytest.raises(GenerationError, match="one list of item ids per history"):
        rec.recommend_batch([[101], [102]], exclude=[[103]])
