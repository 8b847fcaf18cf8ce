"""Serving: a user's history in, a generated session out.

:class:`Recommender` wraps a trained run folder (what ``onerec train`` writes) behind raw ids:
callers pass the item ids they know (oldest first) and, optionally, a user id, and get back a
session of distinct catalog items as raw ids with the model's log-probability. Everything a
request can get wrong (unknown items, an empty or too long history, a beam too narrow for the
session) is checked before any model work and raised as a named
:class:`~onerec.exceptions.RecommendationError` (or :class:`~onerec.exceptions.UnknownItemError`)
that says what was expected and how to fix it.

The run folder contract:

- ``model_config.json`` + ``model.safetensors``: the model (:meth:`OneRec.save`); the header
  of ``model.safetensors`` written by ``onerec train`` records fingerprints of the semantic IDs,
  users and model config it was trained with, and loading checks the files beside it against
  them (:mod:`onerec.training.run_folder`);
- ``semantic_ids.parquet``: the tokenization the model was trained with
  (:func:`~onerec.tokenizer.pipeline.load_tokenization`), which is also the raw item id map;
- ``train_config.json`` (optional here): ``history_length`` and ``session_items`` of training;
- ``users.parquet`` (optional): one column ``user_id``, row i = user index i in training.

A model trained with side features (``OneRecConfig.history_features`` > 0, ``onerec train
--features``) needs the feature rows of the history items with every request (``features=``,
computed as in training by :func:`onerec.data.features.interaction_features`).

Users not in ``users.parquet`` (or every user, when the file is absent) are served as anonymous
(user index -1, the model's zero user vector): new users are normal in serving, so this is
reported in the result (``Recommendation.anonymous``), not raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from onerec.data.ragged import Ragged
from onerec.data.schema import IdMap, canonical_ids
from onerec.exceptions import (
    BeamTooNarrowError,
    DataError,
    EmptyHistoryError,
    HistoryTooLongError,
    ModelError,
    RecommendationError,
    RunFileError,
    SessionSizeError,
    UnknownItemError,
)
from onerec.generation.beam_search import beam_search_sessions
from onerec.model.onerec import OneRec
from onerec.runs import ids_fingerprint, read_json, read_safetensors_metadata, resolve_device
from onerec.tokenizer.pipeline import load_tokenization
from onerec.tokenizer.residual import SemanticIds
from onerec.training.run_folder import check_served, semantic_ids_fingerprints

ANONYMOUS = -1  # the model's user index for a user it has not seen
_SHOWN_IDS = 5  # unknown ids listed in an error message


@dataclass(frozen=True)
class Session:
    """One generated session: raw item ids in generation order and the model's log-probability
    of exactly that sequence of items (sum over every code of every item)."""

    items: list[Any]
    log_prob: float

    def to_dict(self) -> dict[str, Any]:
        return {"items": list(self.items), "log_prob": self.log_prob}


@dataclass(frozen=True)
class Recommendation:
    """The answer for one user: the best session (``items``, ``log_prob``) and, when asked for,
    the next-best sessions of the same beam search (``alternatives``, best first).

    ``user`` is the raw user id as given (None when none was); ``anonymous`` is True when the
    model served the request without a user vector (no id, an id the model was not trained
    with, a run without ``users.parquet``, or a model without user embeddings).
    ``history_used`` counts the history items the model read; ``history_dropped`` the oldest
    ones left out by ``truncate=True``.
    """

    items: list[Any]
    log_prob: float
    user: Any
    anonymous: bool
    history_used: int
    history_dropped: int = 0
    alternatives: list[Session] = field(default_factory=list)
    exclude_unknown: int = 0

    @property
    def session(self) -> Session:
        """The best session as a :class:`Session`."""
        return Session(self.items, self.log_prob)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (raw ids stay ints or strings)."""
        return {
            "user": self.user,
            "anonymous": self.anonymous,
            "items": list(self.items),
            "log_prob": self.log_prob,
            "history_used": self.history_used,
            "history_dropped": self.history_dropped,
            "alternatives": [s.to_dict() for s in self.alternatives],
            "exclude_unknown": self.exclude_unknown,
        }


class Recommender:
    """A trained model behind raw item and user ids: histories in, generated sessions out.

    ``items`` maps raw item ids to the rows of ``semantic_ids``; ``users`` (optional) holds the
    raw user id of every user index the model was trained with. ``history_length``: the most
    history items a request may carry (default and upper bound: the model's ``max_history``);
    ``session_items``: the default session length (default: the model's ``max_session_items``).
    """

    def __init__(
        self,
        model: OneRec,
        semantic_ids: SemanticIds,
        items: IdMap,
        users: Sequence[Any] | np.ndarray | None = None,
        *,
        history_length: int | None = None,
        session_items: int | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> None:
        config = model.config
        if list(semantic_ids.level_sizes) != list(config.level_sizes):
            raise ModelError(
                f"the semantic IDs have level sizes {semantic_ids.level_sizes} but the model was "
                f"built for {config.level_sizes}: use the tokenization the model was trained with"
            )
        if len(items) != semantic_ids.n_items:
            raise ModelError(
                f"{len(items)} raw item ids for {semantic_ids.n_items} semantic IDs: the item map "
                f"and the semantic IDs must come from the same tokenization"
            )
        history_length = config.max_history if history_length is None else history_length
        if not _is_int(history_length) or not 1 <= history_length <= config.max_history:
            raise ModelError(
                f"history_length must be an int in [1, {config.max_history}] (the model's "
                f"max_history), got {history_length!r}"
            )
        session_items = config.max_session_items if session_items is None else session_items
        if not _is_int(session_items) or not 1 <= session_items <= config.max_session_items:
            raise ModelError(
                f"session_items must be an int in [1, {config.max_session_items}] (the model's "
                f"max_session_items), got {session_items!r}"
            )
        device = next(model.parameters()).device
        if semantic_ids.codes.device != device:
            semantic_ids.trie  # built once where the IDs are, then moved along with them
            semantic_ids = semantic_ids.to(device)
        self.model = model.eval()
        self.semantic_ids = semantic_ids
        self.items = items
        self.users = None if users is None else canonical_ids(users)
        if self.users is not None and len(np.unique(self.users)) != len(self.users):
            raise DataError("the user ids hold duplicates: row i must be user index i, once")
        self.history_length = int(history_length)
        self.session_items = int(session_items)
        if feature_names is not None and len(feature_names) != config.history_features:
            raise ModelError(
                f"{len(feature_names)} feature names {list(feature_names)} for a model that reads "
                f"{config.history_features} side features per history item"
            )
        self.feature_names = None if feature_names is None else tuple(feature_names)

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def from_run(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> "Recommender":
        """The model, semantic IDs, item map and (if present) user map of a run folder.

        ``history_length`` and the default session length come from ``train_config.json``
        when it is there (the values the model was trained with), else from the model config.
        The weights must belong with the model config, semantic IDs and users beside them (the
        fingerprints ``onerec train`` records in ``model.safetensors``, and every tensor's
        shape): :class:`~onerec.exceptions.RunIntegrityError` or
        :class:`~onerec.exceptions.CorruptCheckpointError` otherwise, naming the file.
        """
        device = resolve_device(str(device))
        run = Path(run_dir)
        if not run.is_dir():
            raise DataError(
                f"run folder {run} does not exist",
                hint="pass the --out folder of `onerec train`.",
            )
        if not (run / "semantic_ids.parquet").is_file():
            raise DataError(
                f"{run} holds no semantic_ids.parquet, the tokenization the model was trained "
                f"with",
                hint="pass a run folder written by `onerec train`, which copies it there.",
            )
        model = OneRec.load(run, device)
        items, semantic_ids = load_tokenization(run)
        users = _read_users(run / "users.parquet")
        sources = semantic_ids_fingerprints(semantic_ids, items.raw)
        if users is not None:
            sources["data.user_ids"] = ids_fingerprint(users)
        check_served(run / "model.safetensors", read_safetensors_metadata(run / "model.safetensors"),
                     sources, model.config.to_dict())  # fmt: skip
        train = _read_train_config(run / "train_config.json")
        history_length = train.get("history_length")
        if _is_int(history_length):
            history_length = min(history_length, model.config.max_history)
        session_items = train.get("session_items")
        if _is_int(session_items):
            session_items = min(session_items, model.config.max_session_items)
        names = train.get("features")
        return cls(
            model, semantic_ids, items, users,
            history_length=history_length if _is_int(history_length) else None,
            session_items=session_items if _is_int(session_items) else None,
            feature_names=names if model.config.history_features and names else None,
        )  # fmt: skip

    def request_features(
        self,
        n_items: int,
        timestamps: Sequence[float] | None = None,
        signals: dict[str, Sequence[float]] | None = None,
    ) -> np.ndarray:
        """One history's side-feature rows from raw values (one timestamp and one value of every
        signal per history item, oldest first), transformed as in training; pass the result to
        :meth:`recommend` as ``features``."""
        from onerec.data.features import history_features

        if self.model.config.history_features == 0:
            raise RecommendationError("this model reads no side features",
                                      hint="pass no timestamps or signals.")  # fmt: skip
        if self.feature_names is None:
            raise RecommendationError(
                "the run does not record which side features the model was trained with",
                hint="pass features= rows computed as in training, or restore train_config.json.",
            )
        return history_features(self.feature_names, n_items, timestamps, signals)

    @property
    def n_catalog(self) -> int:
        """Items the model can recommend."""
        return self.semantic_ids.n_items

    # --- serving ------------------------------------------------------------------------------
    def recommend(
        self,
        history: Sequence[Any],
        user: Any = None,
        n_items: int | None = None,
        beam_size: int = 32,
        exclude_history: bool = True,
        truncate: bool = False,
        alternatives: int = 0,
        features: np.ndarray | None = None,
    ) -> Recommendation:
        """A session of ``n_items`` distinct items for one user (see :meth:`recommend_batch`);
        ``features``: ``(len(history), F)`` side features of the history items."""
        return self.recommend_batch(
            [history], [user], n_items=n_items, beam_size=beam_size,
            exclude_history=exclude_history, truncate=truncate, alternatives=alternatives,
            features=None if features is None else [features],
        )[0]  # fmt: skip

    def recommend_batch(
        self,
        histories: Sequence[Sequence[Any]],
        users: Sequence[Any] | None = None,
        n_items: int | None = None,
        beam_size: int = 32,
        exclude_history: bool = True,
        truncate: bool = False,
        alternatives: int = 0,
        features: Sequence[np.ndarray] | None = None,
        exclude: Sequence[Sequence[Any]] | None = None,
    ) -> list[Recommendation]:
        """One session per history, from a single beam search over all of them.

        ``histories``: raw item ids per user, oldest first; ``users``: raw user ids (None or an
        unknown id: anonymous), one per history, or None for all anonymous. ``n_items``: items
        per session (default ``session_items``); ``beam_size``: sessions kept per user while
        decoding, at least ``n_items``; ``exclude_history``: never recommend an item of the
        user's history (all of it, also the part ``truncate`` drops); ``truncate``: keep only
        the most recent ``history_length`` items instead of raising; ``alternatives``: how many
        next-best sessions to return besides the best (fewer when the search found fewer).
        ``features``: for a model trained with side features (and only then), one ``(len(h),
        F)`` array per history ``h``: the features of its items, row for row. ``exclude``: one
        list of raw item ids per history never to recommend to that user (items already shown),
        on top of the history; ids outside the catalog are counted, not raised.
        """
        n_items = self.session_items if n_items is None else n_items
        self._check_sizes(n_items, beam_size, alternatives)
        rows = _as_rows(histories)
        if users is None:
            users = [None] * len(rows)
        elif isinstance(users, (str, bytes)) or len(users) != len(rows):
            got = repr(users) if isinstance(users, (str, bytes)) else f"{len(users)} users"
            raise RecommendationError(
                f"users must hold one id (or None) per history: {len(rows)} histories, got {got}",
                hint="pass users=None to serve every history anonymously.",
            )
        if not rows:
            return []
        many = len(rows) > 1
        for r, row in enumerate(rows):
            self._check_length(row, r if many else None, truncate)
        feature_rows = self._feature_rows(features, rows, many)
        indices = self._item_indices(rows, many)
        extra, unknown = self._exclude_indices(exclude, len(rows))
        banned = [np.concatenate([idx, ex]) if exclude_history else ex
                  for idx, ex in zip(indices, extra)]  # fmt: skip
        if exclude_history or exclude is not None:
            what = ("the history" if exclude is None else "the history and its excluded items"
                    if exclude_history else "the excluded items")  # fmt: skip
            self._check_enough_items(banned, n_items, many, what)
        kept = [idx[-self.history_length :] for idx in indices]
        user_index, anonymous = self._user_indices(users)

        beams = beam_search_sessions(
            self.model,
            Ragged.from_lists(kept),
            torch.as_tensor(user_index, dtype=torch.int64),
            self.semantic_ids,
            beam_size,
            n_items,
            Ragged.from_lists(banned) if exclude_history or exclude is not None else None,
            history_features=None if feature_rows is None else np.concatenate(
                [f[-self.history_length :] for f in feature_rows]),
        )  # fmt: skip
        items = beams.items.cpu().numpy()  # (B, beam, m)
        log_probs = beams.log_probs.cpu().numpy().astype(float)  # (B, beam)
        out = []
        for r in range(len(rows)):
            sessions = [
                Session(self.items.to_raw(items[r, w]).tolist(), float(log_probs[r, w]))
                for w in range(items.shape[1])
                if np.isfinite(log_probs[r, w]) and (items[r, w] >= 0).all()
            ]
            if not sessions:  # the checks above leave every user enough items: a bug if seen
                raise RecommendationError(
                    f"the beam search found no valid session of {n_items} items for history "
                    f"row {r}"
                )
            out.append(
                Recommendation(
                    items=sessions[0].items,
                    log_prob=sessions[0].log_prob,
                    user=users[r],
                    anonymous=bool(anonymous[r]),
                    history_used=len(kept[r]),
                    history_dropped=len(indices[r]) - len(kept[r]),
                    alternatives=sessions[1 : 1 + alternatives],
                    exclude_unknown=int(unknown[r]),
                )
            )
        return out

    # --- request checks -----------------------------------------------------------------------
    def _check_sizes(self, n_items: Any, beam_size: Any, alternatives: Any) -> None:
        """Session length, beam width and alternatives against the model and the catalog."""
        max_items = self.model.config.max_session_items
        if not _is_int(n_items) or n_items < 1:
            raise SessionSizeError(
                f"n_items must be an int >= 1 (items per session), got {n_items!r}"
            )
        if n_items > max_items:
            raise SessionSizeError(
                f"n_items ({n_items}) exceeds the model's max_session_items ({max_items}), the "
                f"longest session it was configured to generate",
                hint=f"ask for at most {max_items} items.",
            )
        if n_items > self.n_catalog:
            raise SessionSizeError(
                f"a session of {n_items} distinct items needs a catalog that large; the model's "
                f"catalog has {self.n_catalog} items",
                hint=f"ask for at most {self.n_catalog} items.",
            )
        if not _is_int(beam_size) or beam_size < 1:
            raise BeamTooNarrowError(
                f"beam_size must be an int >= 1 (sessions kept while decoding), got "
                f"{beam_size!r}"
            )
        if beam_size < n_items:
            raise BeamTooNarrowError(
                f"beam_size ({beam_size}) must be at least n_items ({n_items}): the rule is one "
                f"beam or more per item of the session",
                hint=f"use beam_size >= {n_items} or ask for at most {beam_size} items.",
            )
        if not _is_int(alternatives) or alternatives < 0:
            raise BeamTooNarrowError(
                f"alternatives must be an int >= 0 (next-best sessions to return), got "
                f"{alternatives!r}"
            )
        if alternatives >= beam_size:
            raise BeamTooNarrowError(
                f"{alternatives} alternatives plus the best session need beam_size >= "
                f"{alternatives + 1}, got {beam_size}: every session returned is one beam",
                hint=f"use beam_size >= {alternatives + 1} or ask for fewer alternatives.",
            )

    def _check_length(self, row: np.ndarray, r: int | None, truncate: bool) -> None:
        """An empty history, or one longer than the model reads without ``truncate``."""
        who = "the history" if r is None else f"the history of row {r}"
        if len(row) == 0:
            raise EmptyHistoryError(
                f"{who} is empty: at least 1 item id is needed, the model generates from the "
                f"items a user interacted with",
                hint="pass the user's recent item ids, oldest first.",
            )
        if len(row) > self.history_length and not truncate:
            raise HistoryTooLongError(
                f"{who} holds {len(row)} items but the model reads at most "
                f"{self.history_length}",
                hint=f"pass the {self.history_length} most recent items, or truncate=True "
                f"(--truncate) to keep them and drop the older ones.",
            )

    def _feature_rows(
        self, features: Sequence[Any] | None, rows: list[np.ndarray], many: bool
    ) -> list[np.ndarray] | None:
        """Every history's ``(len, F)`` float32 side features, checked against the model."""
        f = self.model.config.history_features
        if f == 0:
            if features is not None:
                raise RecommendationError(
                    "features were given but the model was trained without side features",
                    hint="leave features out (None).",
                )
            return None
        if features is None or len(features) != len(rows):
            got = "none" if features is None else f"{len(features)} arrays"
            raise RecommendationError(
                f"the model was trained with {f} side features per history item: features must "
                f"hold one (history length, {f}) array per history ({len(rows)}), got {got}",
                hint="pass features=request_features(len(history), timestamps, signals) from "
                "raw values (on the command line: --timestamps, --signal NAME=V,...).",
            )
        out = []
        for r, (row, x) in enumerate(zip(rows, features)):
            x = np.asarray(x, dtype=np.float32)
            if x.shape != (len(row), f) or not np.isfinite(x).all():
                who = "the history" if not many else f"the history of row {r}"
                raise RecommendationError(
                    f"{who} holds {len(row)} items, so its features must be a finite "
                    f"({len(row)}, {f}) array, one row per item; got shape {x.shape}",
                    hint="pass one row of the model's features per history item, oldest first.",
                )
            out.append(x)
        return out

    def _item_indices(self, rows: list[np.ndarray], many: bool) -> list[np.ndarray]:
        """Catalog indices of every history's raw ids; UnknownItemError lists the unknown."""
        lengths = np.array([len(row) for row in rows], dtype=np.int64)
        flat = canonical_ids(np.concatenate(rows)) if lengths.sum() else np.zeros(0, np.int64)
        found = _positions(self.items.raw, flat)
        missing = np.flatnonzero(found < 0)
        if missing.size:
            distinct = list(dict.fromkeys(flat[missing].tolist()))  # in order of appearance
            shown = ", ".join(repr(v) for v in distinct[:_SHOWN_IDS])
            more = f" and {len(distinct) - _SHOWN_IDS} more" if len(distinct) > _SHOWN_IDS else ""
            where = ""
            if many:
                row_of = np.repeat(np.arange(len(rows)), lengths)[missing]
                where = f" (in history rows {sorted(set(row_of.tolist()))[:_SHOWN_IDS]})"
            raise UnknownItemError(
                f"{len(distinct)} item id(s) of the history are not in the model's catalog of "
                f"{self.n_catalog} items: {shown}{more}{where}.",
                hint="use raw item ids of the dataset the model was trained on (the catalog in "
                "the run's semantic_ids.parquet); drop new items from the history, or tokenize "
                "and train again with them.",
            )
        return np.split(found, np.cumsum(lengths)[:-1])

    def _exclude_indices(
        self, exclude: Sequence[Sequence[Any]] | None, n_rows: int
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Catalog indices of every history's excluded ids, and how many ids were unknown."""
        if exclude is None:
            return [np.zeros(0, np.int64)] * n_rows, np.zeros(n_rows, np.int64)
        if isinstance(exclude, (str, bytes)) or len(exclude) != n_rows:
            got = repr(exclude) if isinstance(exclude, (str, bytes)) else f"{len(exclude)} lists"
            raise RecommendationError(
                f"exclude must hold one list of item ids per history: {n_rows} histories, got "
                f"{got}",
                hint="pass exclude=None to exclude nothing beyond the history.",
            )
        out, unknown = [], np.zeros(n_rows, np.int64)
        for r, row in enumerate(_as_rows(exclude)):
            found = _positions(self.items.raw, canonical_ids(row)) if len(row) else row
            found = np.asarray(found, dtype=np.int64)
            unknown[r] = int((found < 0).sum())
            out.append(found[found >= 0])
        return out, unknown

    def _check_enough_items(
        self, indices: list[np.ndarray], n_items: int, many: bool, what: str = "the history"
    ) -> None:
        """With the history (and ``exclude``) left out, every user must still have ``n_items``
        items to get."""
        for r, idx in enumerate(indices):
            left = self.n_catalog - len(np.unique(idx))
            if left < n_items:
                who = what if not many else f"{what} of row {r}"
                raise SessionSizeError(
                    f"{who} {'covers' if what == 'the history' else 'cover'} "
                    f"{self.n_catalog - left} of the {self.n_catalog} catalog items, "
                    f"leaving {left} to recommend, fewer than the {n_items} items asked for",
                    hint=f"ask for at most {left} items, or keep the history recommendable "
                    f"(exclude_history=False, --keep-history).",
                )

    def _user_indices(self, users: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """User indices (-1 = anonymous) and whether each user was served anonymously."""
        index = np.full(len(users), ANONYMOUS, dtype=np.int64)
        if self.model.config.n_user_buckets == 0:  # the model reads no user ids: all alike
            return index, index == ANONYMOUS
        given = [r for r, u in enumerate(users) if u is not None]
        if given and self.users is not None:
            index[given] = _positions(self.users, canonical_ids([users[r] for r in given]))
        return index, index == ANONYMOUS


# --- helpers ------------------------------------------------------------------------------------


def _as_rows(histories: Any) -> list[np.ndarray]:
    """Every history as an array of raw ids; a string is refused (it would split into chars)."""
    if isinstance(histories, (str, bytes)) or not isinstance(histories, (Sequence, np.ndarray)):
        raise RecommendationError(
            f"histories must be a list of histories (lists of item ids), got {histories!r}"
        )
    rows = []
    for r, h in enumerate(histories):
        if isinstance(h, (str, bytes)) or not isinstance(h, (Sequence, np.ndarray)):
            raise RecommendationError(
                f"history {r} must be a list of item ids, oldest first, got {h!r}",
                hint='split the ids, e.g. "1,2,3".split(",").',
            )
        rows.append(np.asarray(list(h), dtype=object))
    return rows


def _positions(known: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of every value in ``known`` (any order), -1 where it is absent."""
    if len(values) == 0:
        return np.zeros(0, dtype=np.int64)
    if known.dtype.kind != values.dtype.kind:  # numeric ids vs text ids: compare as text
        known, values = known.astype(str), values.astype(str)
    found = pc.index_in(pa.array(values), value_set=pa.array(known))
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _read_train_config(path: Path) -> dict[str, Any]:
    """``train_config.json`` as a dict ({} when the file is absent)."""
    if not path.is_file():
        return {}
    config = read_json(path, "restore the file written by `onerec train`.")
    for name in ("history_length", "session_items"):
        if name in config and not (_is_int(config[name]) and config[name] >= 1):
            raise RunFileError(f"{name} must be an int >= 1, got {config[name]!r}", path=path,
                               hint="restore the file written by `onerec train`.")  # fmt: skip
    names = config.get("features")
    if names is not None and not (
        isinstance(names, list) and all(isinstance(n, str) and n for n in names)
    ):
        raise RunFileError(f"features must be a list of names, got {names!r}", path=path,
                           hint="restore the file written by `onerec train`.")  # fmt: skip
    return config


def _read_users(path: Path) -> np.ndarray | None:
    """The raw user ids of ``users.parquet`` in index order (None when the file is absent)."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise RunFileError(f"cannot read it as Parquet ({e})", path=path,
                           hint="restore users.parquet written by `onerec train`.") from None  # fmt: skip
    if "user_id" not in table.column_names:
        raise DataError(
            f"expected a column 'user_id', got {table.column_names}", path=path,
            hint="write one column user_id, row i = the raw id of user index i.",
        )  # fmt: skip
    return canonical_ids(table.column("user_id").to_numpy(zero_copy_only=False))


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
