"""Train / validation / test splits, and the training data they leave for models.

- :func:`leave_one_out`: the TIGER / S3-Rec protocol. Each user's interactions in time order;
  the last is the test target, the second-to-last the validation target, the rest is training.
  Models read at most the most recent ``history_length`` items (20 in TIGER).
- :func:`temporal_split`: one global time cut for validation and one for test, as a production
  system sees it (no user's future leaks into training).
- :func:`drop_last_interactions` then :func:`leave_one_out`: a selection split whose test
  mirrors the real test one item earlier (a fresh newest history item), for choosing settings
  without reading the real test items.

A :class:`Split` holds the training rows as an :class:`InteractionLog` (all signals kept, so a
reward model or a session builder can still read them) and the evaluation rows as
:class:`Examples`. With ``features`` (names of :func:`~onerec.data.features.interaction_features`)
the examples carry every history item's side features, and :meth:`Split.train_features` gives
those of the training sequences.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onerec.data.examples import Examples
from onerec.data.features import interaction_features
from onerec.data.files import output_dir, read_json, read_parquet
from onerec.data.ragged import Ragged
from onerec.data.report import FilterReport
from onerec.data.schema import IdMap, InteractionLog
from onerec.exceptions import (
    ConfigError,
    CorruptFileError,
    EmptyDataError,
    MissingColumnError,
    NotADatasetError,
    TooFewInteractionsError,
)


@dataclass
class Split:
    protocol: str
    train: InteractionLog
    valid: Examples
    test: Examples
    params: dict[str, Any] = field(default_factory=dict)
    reports: list[FilterReport] = field(default_factory=list)

    @property
    def num_items(self) -> int:
        return self.train.num_items

    def train_sequences(self) -> Ragged:
        """Each user's training items in time order; row ``u`` is user index ``u``."""
        log = self.train.sorted()
        return Ragged.from_sorted_groups(log.user, log.item, log.num_users)

    @property
    def features(self) -> tuple[str, ...]:
        """Names of the side features the split was built with (empty: none)."""
        return tuple(self.params.get("features") or ())

    def train_features(self) -> Ragged | None:
        """Side features ``(nnz, F)`` of :meth:`train_sequences`, row for row (None without
        features). Both protocols train on a time prefix of every user's rows, so the time gaps
        computed here equal those of the full log that the examples were built from."""
        if not self.features:
            return None
        log = self.train.sorted()
        lengths = np.bincount(log.user, minlength=log.num_users).astype(np.int64)
        return _rows(interaction_features(log, self.features), lengths)

    def summary(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            **self.params,
            "train_interactions": len(self.train),
            "train_users": int(len(np.unique(self.train.user))),
            "valid_examples": len(self.valid),
            "test_examples": len(self.test),
            "filters": [r.to_dict() for r in self.reports],
        }

    def save(self, directory: str | Path) -> Path:
        """Training rows, examples, id maps and a summary in one directory."""
        d = output_dir(directory)
        pq.write_table(self.train.to_arrow(), d / "train.parquet")
        self.valid.save(d / "valid.parquet")
        self.test.save(d / "test.parquet")
        pq.write_table(pa.table({"id": self.train.users.raw}), d / "user_ids.parquet")
        pq.write_table(pa.table({"id": self.train.items.raw}), d / "item_ids.parquet")
        (d / "split.json").write_text(json.dumps(self.summary(), indent=2, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "Split":
        d = Path(directory)
        if not (d / "split.json").is_file():
            raise NotADatasetError(
                "not a saved split (no split.json)",
                path=d,
                hint="write it with Split.save or `onerec data split`.",
            )
        summary = read_json(d / "split.json")
        if not isinstance(summary, dict) or "protocol" not in summary:
            raise CorruptFileError("expected a JSON object with a 'protocol'", path=d / "split.json",
                                   hint="run `onerec data split` again.")  # fmt: skip
        hint = "the saved split is damaged: run `onerec data split` again."
        users, items = (
            IdMap.from_saved(_id_column(d / f"{k}_ids.parquet", hint), k, d / f"{k}_ids.parquet")
            for k in ("user", "item")
        )
        path = d / "train.parquet"
        train = InteractionLog.from_arrow(read_parquet(path, hint=hint), users, items, path)
        reports = [FilterReport.from_dict(r) for r in summary.pop("filters", [])]
        protocol = summary.pop("protocol")
        params = {
            k: v
            for k, v in summary.items()
            if k not in ("train_interactions", "train_users", "valid_examples", "test_examples")
        }
        return cls(protocol, train, Examples.load(d / "valid.parquet"), Examples.load(d / "test.parquet"), params, reports)


def _id_column(path: Path, hint: str) -> np.ndarray:
    table = read_parquet(path, hint=hint)
    if "id" not in table.column_names:
        raise MissingColumnError(
            f"no 'id' column; it has {table.column_names}", path=path, hint=hint
        )
    return table.column("id").to_numpy(zero_copy_only=False)


def filter_min_interactions(
    log: InteractionLog, min_interactions: int, *, on_short: str = "drop"
) -> tuple[InteractionLog, FilterReport]:
    """Remove users with fewer than ``min_interactions`` rows (``on_short='drop'``, reported) or
    raise :class:`TooFewInteractionsError` naming the first such user (``on_short='error'``)."""
    if on_short not in ("drop", "error"):
        raise ConfigError(f"on_short must be 'drop' or 'error', got {on_short!r}")
    counts = np.bincount(log.user, minlength=log.num_users)
    short = (counts > 0) & (counts < min_interactions)
    if short.any() and on_short == "error":
        u = int(np.flatnonzero(short)[0])
        raise TooFewInteractionsError(
            f"{int(short.sum())} users have fewer than {min_interactions} interactions; user "
            f"{log.users.raw[u].tolist()!r} has {counts[u]}",
            hint="drop them (on_short='drop', the protocol's default) or collect more data.",
        )
    out = log.take(~short[log.user]) if short.any() else log
    return out, FilterReport.between(
        "min interactions", log, out, f"users with < {min_interactions} interactions"
    )


def split_protocol(history: int, num_items: int, selection: bool = False) -> str:
    """How a benchmark record names its split: leave-one-out with ``history`` items read and a
    full ranking over ``num_items``, on the selection split (``drop_last_interactions``) when
    ``selection``. The records' ``protocol`` strings start with it."""
    return (("selection split: each user's last item removed, then " if selection else "")
            + "leave-one-out (last item test, second-to-last validation), history "
            f"{history}, full ranking over {num_items} items")  # fmt: skip


def drop_last_interactions(
    log: InteractionLog, n: int = 1
) -> tuple[InteractionLog, FilterReport]:
    """Every user's log without its last ``n`` interactions in time order, and a report of what
    that removed (users left with none disappear from it, counted).

    :func:`leave_one_out` on the result with ``n = 1`` is a *selection split*: its test example
    is each user's real validation item, read after a history whose newest item (the user's last
    training item) the model never trained on, as at the real test, where the newest history item
    is the validation item. Leave-one-out validation instead reads histories the model trained on
    item by item, so it cannot see what a model makes of a fresh newest item. The selection split
    never reads the real test items; its training rows end one item earlier.
    """
    if n < 1:
        raise ConfigError(f"drop_last_interactions needs n >= 1, got {n}")
    log = log.sorted()
    lengths = np.bincount(log.user, minlength=log.num_users).astype(np.int64)
    ends = np.cumsum(lengths)
    pos_from_end = np.repeat(ends, lengths) - 1 - np.arange(len(log))  # 0 for a user's last row
    out = log.take(pos_from_end >= n)
    return out, FilterReport.between(
        "drop last interactions", log, out, f"each user's last {n} interaction(s)"
    )


def _check_history_length(history_length: int) -> None:
    if history_length < 1:
        raise ConfigError(f"history_length must be >= 1, got {history_length}")


def _rows(values: np.ndarray, lengths: np.ndarray) -> Ragged:
    """A Ragged of ``values`` rows (any trailing shape, unlike ``Ragged.from_lengths``)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return Ragged(values, offsets)


def _with_features(params: dict[str, Any], features: Sequence[str]) -> dict[str, Any]:
    """``params`` plus the feature names, only when there are some (old summaries unchanged)."""
    return {**params, "features": list(features)} if features else params


def leave_one_out(
    log: InteractionLog,
    *,
    history_length: int = 20,
    min_interactions: int = 3,
    on_short: str = "drop",
    features: Sequence[str] = (),
) -> Split:
    """Last item test, second-to-last validation, the rest training (TIGER / S3-Rec).

    Users with fewer than ``min_interactions`` (at least 3: one to train on, one to validate,
    one to test) are dropped and counted, or raise with ``on_short='error'``. ``features``:
    side features (:func:`~onerec.data.features.interaction_features` names) for
    ``Examples.history_features``.
    """
    _check_history_length(history_length)
    if min_interactions < 3:
        raise ConfigError(f"leave-one-out needs min_interactions >= 3, got {min_interactions}")
    log, report = filter_min_interactions(log, min_interactions, on_short=on_short)
    if len(log) == 0:
        raise EmptyDataError(
            f"no user has {min_interactions} interactions: nothing is left to split ({report})",
            hint="lower min_interactions (CLI: --min-interactions, at least 3) or check the "
            "filters before it.",
        )
    features = tuple(features)
    log = log.sorted()
    seqs = Ragged.from_sorted_groups(log.user, log.item, log.num_users)
    feats = _rows(interaction_features(log, features), seqs.lengths) if features else None
    users = np.flatnonzero(seqs.lengths > 0)
    seqs = seqs.take(users)
    feats = None if feats is None else feats.take(users)

    def examples(cut: int) -> Examples:
        # history = everything before the last `cut` items; target = the item right after it
        before = seqs.drop_last(cut)
        target = Ragged(seqs.values[seqs.offsets[1:] - cut], np.arange(len(users) + 1))
        history_features = None if feats is None else feats.drop_last(cut).tail(history_length)
        return Examples(users.copy(), before.tail(history_length), target, before,
                        history_features)  # fmt: skip

    # the sorted log's rows are the values of `seqs`, row for row: count positions from the end
    pos_from_end = np.repeat(seqs.offsets[1:], seqs.lengths) - 1 - np.arange(len(log))
    train = log.take(pos_from_end >= 2)
    return Split(
        "leave_one_out",
        train,
        examples(2),
        examples(1),
        _with_features({"history_length": history_length, "min_interactions": min_interactions},
                       features),  # fmt: skip
        [report],
    )


def temporal_split(
    log: InteractionLog,
    *,
    valid_start: float | None = None,
    test_start: float | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    history_length: int = 20,
    targets: str = "all",
    features: Sequence[str] = (),
) -> Split:
    """A global temporal split: rows before ``valid_start`` train, rows in
    ``[valid_start, test_start)`` validate, rows from ``test_start`` on test.

    Cut points default to the time quantiles that leave ``valid_fraction`` and
    ``test_fraction`` of the rows after them. Each user with rows in a window gives one example:
    history = the user's rows before the window (most recent ``history_length``), targets = the
    user's items in the window (``targets='all'``, in time order) or only the first
    (``targets='next'``). Users with no history before a window are dropped and counted.
    ``features``: side features of the history items, as in :func:`leave_one_out`.
    """
    _check_history_length(history_length)
    if targets not in ("all", "next"):
        raise ConfigError(f"targets must be 'all' or 'next', got {targets!r}")
    for name, frac in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0 < frac < 1:
            raise ConfigError(f"{name} must be in (0, 1), got {frac}")
    if valid_fraction + test_fraction >= 1:
        raise ConfigError("valid_fraction + test_fraction must be < 1")
    if len(log) == 0:
        raise EmptyDataError("the log has no interactions to split",
                             hint="check the filters before the split.")  # fmt: skip
    features = tuple(features)
    log = log.sorted()
    ts = log.timestamp
    feats = interaction_features(log, features) if features else None
    if test_start is None:
        test_start = float(np.quantile(ts, 1 - test_fraction))
    if valid_start is None:
        valid_start = float(np.quantile(ts, 1 - test_fraction - valid_fraction))
    if not valid_start <= test_start:
        raise ConfigError(f"valid_start ({valid_start}) must not come after test_start ({test_start})")
    reports: list[FilterReport] = []

    def window(start: float, end: float) -> Examples:
        earlier = ts < start
        before = log.take(earlier)
        inside = log.take((ts >= start) & (ts < end))
        hist = Ragged.from_sorted_groups(before.user, before.item, log.num_users)
        tgt = Ragged.from_sorted_groups(inside.user, inside.item, log.num_users)
        has_target = tgt.lengths > 0
        users = np.flatnonzero(has_target & (hist.lengths > 0))
        reports.append(
            FilterReport.between(
                f"no history before {start:g}",
                inside,
                inside.take((hist.lengths > 0)[inside.user]),
                "users whose first interaction is inside the window",
            )
        )
        target = tgt.take(users)
        if targets == "next":
            target = target.head(1)
        seen = hist.take(users)
        history_features = None
        if feats is not None:
            history_features = Ragged(feats[earlier], hist.offsets).take(users).tail(history_length)
        return Examples(users, seen.tail(history_length), target, seen, history_features)

    valid = window(valid_start, test_start)
    test = window(test_start, np.inf)
    train = log.take(ts < valid_start)
    if len(train) == 0:
        raise EmptyDataError(
            f"no interaction comes before the validation cut {valid_start:g}: nothing to train on",
            hint="pass a later valid_start, or smaller valid_fraction and test_fraction.",
        )
    return Split(
        "temporal",
        train,
        valid,
        test,
        _with_features({
            "history_length": history_length,
            "valid_start": valid_start,
            "test_start": test_start,
            "targets": targets,
        }, features),  # fmt: skip
        reports,
    )
