"""The online test's logs, one Parquet file per served chunk, each written whole (a temporary
file, then a rename), so a killed run leaves only finished chunks.

- ``log/day_DDD_chunk_CCC.parquet``: one row per exposure, in the format the data layer reads
  for training (``onerec.data.readers.read_table`` / ``read_dataset`` with
  ``ColumnMapping(session="session")``): ``user_id``, ``item_id``, ``timestamp`` (s),
  ``session``, the sampled responses (``watch_time``, ``duration``, ``view_through``, ``like``,
  ``follow``, ``share``, ``skip``, ``position``), ``day``, and as text ``arm`` and ``version``
  (the model version that answered; ``cascade`` for the control arm);
- ``sessions/day_DDD_chunk_CCC.parquet``: one row per session with the oracle's exact values
  (``swt`` s, ``vtr``, ``wtr``, ``ltr``, ``reward``) at the session's time.

:func:`combine` writes ``log.parquet``, every chunk of the test in order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onerec.data.schema import IdMap, InteractionLog
from onerec.runs import replaced_atomically

RESPONSES = ("view_through", "like", "follow", "share", "skip")
ORACLE = ("swt", "vtr", "wtr", "ltr", "reward")


def chunk_name(day: int, chunk: int) -> str:
    return f"day_{day:03d}_chunk_{chunk:03d}.parquet"


def write_atomic(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        pq.write_table(table, tmp)


def exposure_table(
    users: IdMap, items: IdMap, user: np.ndarray, sessions: np.ndarray, session_id: np.ndarray,
    start_seconds: np.ndarray, responses: dict[str, np.ndarray], duration: np.ndarray,
    arm: list[str], version: list[str], day: int,
) -> pa.Table:  # fmt: skip
    """The exposure rows of served sessions ``(S, m)`` (item indices, all valid) with their
    sampled ``responses`` ``(S, m)`` each; a video starts 1 s after the previous one ended."""
    s, m = sessions.shape
    step = responses["watch_time"] + 1.0
    before = np.cumsum(step, axis=1) - step
    timestamp = np.floor(start_seconds[:, None] + before).astype(np.int64)
    cols: dict[str, pa.Array] = {
        "user_id": pa.array(users.to_raw(np.repeat(user, m))),
        "item_id": pa.array(items.to_raw(sessions.reshape(-1))),
        "timestamp": pa.array(timestamp.reshape(-1)),
        "session": pa.array(np.repeat(session_id, m)),
        "position": pa.array(np.tile(np.arange(m, dtype=np.int8), s)),
        "watch_time": pa.array(responses["watch_time"].reshape(-1).astype(np.float32)),
        "duration": pa.array(duration.reshape(-1).astype(np.float32)),
    }
    for name in RESPONSES:
        cols[name] = pa.array(responses[name].reshape(-1).astype(np.int8))
    cols["day"] = pa.array(np.full(s * m, day, dtype=np.int16))
    cols["arm"] = pa.array(np.repeat(np.asarray(arm, dtype=object), m).tolist(), pa.string())
    cols["version"] = pa.array(np.repeat(np.asarray(version, dtype=object), m).tolist(),
                               pa.string())  # fmt: skip
    return pa.table(cols)


def session_table(
    user: np.ndarray, sessions: np.ndarray, session_id: np.ndarray, time: np.ndarray,
    arm: list[str], version: list[str], fallback: np.ndarray, truth: dict[str, np.ndarray],
    day: int, chunk: int,
) -> pa.Table:  # fmt: skip
    cols: dict[str, pa.Array] = {
        "session": pa.array(session_id), "user": pa.array(user),
        "day": pa.array(np.full(len(user), day, dtype=np.int16)),
        "chunk": pa.array(np.full(len(user), chunk, dtype=np.int16)),
        "time": pa.array(time), "arm": pa.array(arm, pa.string()),
        "version": pa.array(version, pa.string()), "fallback": pa.array(fallback),
        "items": pa.array(sessions.tolist(), pa.list_(pa.int64())),
    }  # fmt: skip
    for name in ORACLE:
        cols[name] = pa.array(truth[name].astype(np.float64))
    return pa.table(cols)


def read_chunks(folder: Path) -> pa.Table | None:
    """Every chunk file in ``folder``, in day and chunk order (None: none yet)."""
    files = sorted(folder.glob("day_*_chunk_*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else None


def as_log(table: pa.Table, users: IdMap, items: IdMap) -> InteractionLog:
    """Exposure rows as an :class:`InteractionLog` over the platform's id maps (what the
    trainer and the reward model read)."""
    signals = {name: table.column(name).to_numpy() for name in
               ("watch_time", "duration", "position", *RESPONSES)}  # fmt: skip
    return InteractionLog(
        users.index(table.column("user_id").to_numpy()),
        items.index(table.column("item_id").to_numpy()),
        table.column("timestamp").to_numpy(), users, items, signals,
        table.column("session").to_numpy(),
    )  # fmt: skip


def combine(folder: Path, out: Path) -> int:
    """``out``: every chunk of ``folder`` in one Parquet file; returns its rows."""
    table = read_chunks(folder)
    if table is None:
        return 0
    write_atomic(table, out)
    return table.num_rows
