"""Leave-one-out and temporal splits, session grouping and the session-quality filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from onerec.data.schema import InteractionLog, build_log
from onerec.data.sessions import SessionQualityFilter, assign_sessions
from onerec.data.splits import (
    Split,
    drop_last_interactions,
    filter_min_interactions,
    leave_one_out,
    temporal_split,
)
from onerec.data.synthetic import SyntheticConfig, generate
from onerec.exceptions import ConfigError, TooFewInteractionsError


def log_from(rows: list[tuple], **signals: list) -> InteractionLog:
    users, items, ts = (np.array(c) for c in zip(*rows))
    return build_log(users, items, ts, signals={k: np.array(v) for k, v in signals.items()})


@pytest.fixture
def small_log() -> InteractionLog:
    # user 1: items 10 11 12 13 14 in time order (rows shuffled); user 2: 20 21 22; user 3: 30 31
    rows = [(1, 12, 3), (2, 20, 1), (1, 10, 1), (1, 14, 9), (3, 30, 1), (1, 11, 2), (2, 22, 3),
            (1, 13, 5), (2, 21, 2), (3, 31, 2)]
    return log_from(rows)


def raw_items(log: InteractionLog, rows) -> list[list[int]]:
    return [log.items.to_raw(r).tolist() for r in rows]


def test_leave_one_out_by_hand(small_log: InteractionLog) -> None:
    split = leave_one_out(small_log, history_length=2)
    assert split.reports[0].users_removed == 1 and split.reports[0].rows_removed == 2
    assert split.test.user.tolist() == [0, 1]  # user 3 (index 2) had only 2 interactions
    assert raw_items(small_log, split.test.target) == [[14], [22]]
    assert raw_items(small_log, split.valid.target) == [[13], [21]]
    assert raw_items(small_log, split.test.history) == [[12, 13], [20, 21]]
    assert raw_items(small_log, split.valid.history) == [[11, 12], [20]]
    assert raw_items(small_log, split.test.seen) == [[10, 11, 12, 13], [20, 21]]
    assert raw_items(small_log, split.train_sequences().take(np.array([0, 1]))) == [[10, 11, 12], [20]]


def test_leave_one_out_strict_and_config_errors(small_log: InteractionLog) -> None:
    with pytest.raises(TooFewInteractionsError, match="user 3 has 2"):
        leave_one_out(small_log, on_short="error")
    with pytest.raises(ConfigError):
        leave_one_out(small_log, history_length=0)
    with pytest.raises(ConfigError):
        leave_one_out(small_log, min_interactions=2)
    with pytest.raises(ConfigError):
        filter_min_interactions(small_log, 3, on_short="ignore")


def test_selection_split_mirrors_test_one_item_earlier(small_log: InteractionLog) -> None:
    shorter, report = drop_last_interactions(small_log)
    assert (report.rows_removed, report.users_removed) == (3, 0)  # one row per user, rows shuffled
    full, sel = leave_one_out(small_log, history_length=3), leave_one_out(shorter, history_length=3)
    # user 2 (21 22 -> 20 21) is now too short, and the filter counts it
    assert sel.reports[0].users_removed == 2 and sel.test.user.tolist() == [0]
    # its test is user 1's real validation item, after a history whose newest item (12) is not
    # among its training rows, as the real test's newest item (13) is not among the full split's
    assert raw_items(small_log, sel.test.target) == raw_items(small_log, full.valid.target.take(np.array([0])))
    assert raw_items(small_log, sel.test.history) == [[10, 11, 12]]
    assert raw_items(small_log, sel.train_sequences().take(np.array([0]))) == [[10, 11]]
    assert raw_items(small_log, full.test.history.take(np.array([0]))) == [[11, 12, 13]]
    assert 14 not in small_log.items.to_raw(shorter.item).tolist()  # the real test item is gone
    assert len(shorter.items) == len(small_log.items)  # same catalog: codes still match
    gone, report = drop_last_interactions(small_log, 2)
    assert report.users_removed == 1 and len(gone) == 4  # user 3 had only 2 rows
    with pytest.raises(ConfigError, match="n >= 1"):
        drop_last_interactions(small_log, 0)


def test_split_save_load(small_log: InteractionLog, tmp_path: Path) -> None:
    split = leave_one_out(small_log, history_length=2)
    back = Split.load(split.save(tmp_path / "split"))
    assert back.test.target == split.test.target and back.valid.history == split.valid.history
    np.testing.assert_array_equal(back.train.item, split.train.item)
    assert back.params == split.params and back.reports == split.reports


def test_temporal_split(small_log: InteractionLog) -> None:
    split = temporal_split(small_log, valid_start=3, test_start=5, history_length=5)
    # train: t < 3; valid window [3, 5): user 1 -> 12, user 2 -> 22; test: t >= 5: user 1 -> 13, 14
    assert len(split.train) == 6
    assert raw_items(small_log, split.valid.target) == [[12], [22]]
    assert raw_items(small_log, split.valid.history) == [[10, 11], [20, 21]]
    assert raw_items(small_log, split.test.target) == [[13, 14]]
    assert raw_items(small_log, split.test.history) == [[10, 11, 12]]
    nxt = temporal_split(small_log, valid_start=3, test_start=5, targets="next")
    assert raw_items(small_log, nxt.test.target) == [[13]]
    with pytest.raises(ConfigError):
        temporal_split(small_log, valid_start=6, test_start=5)
    with pytest.raises(ConfigError):
        temporal_split(small_log, valid_fraction=0.6, test_fraction=0.5)


def test_temporal_split_reports_cold_users() -> None:
    log = log_from([(1, 1, 1), (1, 2, 2), (2, 1, 3), (1, 3, 4)])
    split = temporal_split(log, valid_start=3, test_start=4)
    assert split.reports[0].users_removed == 1  # user 2 has no history before the window
    assert len(split.valid) == 0


def test_assign_sessions_by_gap() -> None:
    log = log_from([(1, 1, 0), (1, 2, 10), (1, 3, 100), (2, 1, 5), (2, 2, 6)])
    s = assign_sessions(log, gap=30)
    assert s.session.tolist() == [0, 0, 1, 2, 2]
    with pytest.raises(ConfigError, match="no session ids"):
        assign_sessions(log)
    with pytest.raises(ConfigError):
        assign_sessions(log, gap=-1)


def test_session_quality_filter_counts() -> None:
    # session A: 3 watched, total 30, a like -> kept; B: 3 watched but no like; C: 1 watched
    rows = [(1, 1, 0), (1, 2, 1), (1, 3, 2), (1, 4, 100), (1, 5, 101), (1, 6, 102),
            (2, 1, 0), (2, 2, 1)]
    log = assign_sessions(
        log_from(rows, watch_time=[10, 10, 10, 5, 5, 5, 4, 0], like=[0, 1, 0, 0, 0, 0, 1, 0]),
        gap=50,
    )
    flt = SessionQualityFilter(min_watched_items=3, min_total_watch=12)
    kept, report = flt.apply(log)
    assert len(kept) == 3 and report.sessions_removed == 2 and report.rows_removed == 5
    assert report.users_removed == 1
    kept2, _ = SessionQualityFilter(min_watched_items=3, require_positive=False).apply(log)
    assert len(kept2) == 6
    with pytest.raises(ConfigError, match="no 'dwell' signal"):
        SessionQualityFilter(watch_signal="dwell").apply(log)
    with pytest.raises(ConfigError, match="positive"):
        SessionQualityFilter(positive_signals=("follow",)).apply(log)
    with pytest.raises(ConfigError):
        SessionQualityFilter(min_watched_items=-1)


def test_synthetic_log_is_deterministic_and_filterable() -> None:
    a = generate(SyntheticConfig(num_users=200, num_items=100, seed=3))
    b = generate(SyntheticConfig(num_users=200, num_items=100, seed=3))
    np.testing.assert_array_equal(a.log.item, b.log.item)
    assert a.log.is_sorted()
    kept, report = SessionQualityFilter(min_total_watch=30).apply(a.log)
    assert 0 < report.sessions_removed < report.sessions_before
    split = leave_one_out(kept)
    assert len(split.test) == report.users_after - split.reports[0].users_removed
    with pytest.raises(ConfigError):
        SyntheticConfig(num_users=0)
