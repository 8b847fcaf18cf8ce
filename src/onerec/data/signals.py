"""The one policy for signal values: what NaN, infinite and negative watch times, likes, ... mean.

Signals (watch time, duration, like, follow, rating, ...) are durations, counts or flags: finite
and, unless named otherwise, non-negative. A value that is NaN (an empty cell), +inf or -inf,
or below zero is *invalid*, and :class:`SignalPolicy` says what happens to its row:

- ``on_invalid="error"`` (the default): :class:`~onerec.exceptions.InvalidSignalError` names the
  file, the column, the first bad row (with its user and item) and how many rows hold NaN, inf
  or negative values. No value is guessed: a NaN watch time is not a zero watch time.
- ``on_invalid="drop"``: the rows are removed, and a :class:`FilterReport` named
  ``invalid signals`` counts the rows, users, items and sessions removed, its detail the NaN,
  inf and negative counts per column.

Signals that may be negative by nature (a centred rating, a dislike coded -1) are listed in
``signed``; for them only NaN and inf are invalid.

The readers apply the policy while assembling a dataset (``read_dataset(...,
invalid_signals=...)``, CLI ``--invalid-signals``), so ``onerec data info/convert/split`` all
see it; the session quality filter checks the signals it reads with the default policy, so a
log built by other means cannot pass NaN or inf through it either.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import numpy as np

from onerec.data.report import FilterReport
from onerec.data.schema import InteractionLog
from onerec.exceptions import ConfigError, InvalidSignalError

InvalidSignalAction = Literal["error", "drop"]


@dataclass(frozen=True)
class SignalPolicy:
    """What rows with NaN, infinite or (outside ``signed``) negative signal values become."""

    on_invalid: InvalidSignalAction = "error"
    signed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.on_invalid not in ("error", "drop"):
            raise ConfigError(
                f"on_invalid must be 'error' or 'drop', got {self.on_invalid!r}"
            )

    def problems(self, name: str, values: np.ndarray) -> dict[str, np.ndarray]:
        """Masks of the invalid rows of one signal column, by kind (``NaN``, ``inf``,
        ``negative``); only kinds that occur are present."""
        v = np.asarray(values)
        if v.dtype.kind not in "biuf":
            raise InvalidSignalError(
                f"signal column {name!r} holds {v.dtype} values, not numbers",
                hint="map only numeric columns to signals.",
            )
        if v.dtype.kind == "b":
            return {}
        masks = {}
        if v.dtype.kind == "f":
            masks["NaN"] = np.isnan(v)
            masks["inf"] = np.isinf(v)
        if name not in self.signed:
            masks["negative"] = v < 0
        return {k: m for k, m in masks.items() if m.any()}


def apply_signal_policy(
    log: InteractionLog,
    policy: SignalPolicy = SignalPolicy(),
    *,
    names: Iterable[str] | None = None,
    source: str | Path | None = None,
    line_offset: int | None = None,
) -> tuple[InteractionLog, FilterReport]:
    """The log with the policy applied to the signals ``names`` (default: all), and a report
    of the rows removed (none under ``error``, which raises instead). ``line_offset``: row i
    of the log is line ``i + line_offset`` of ``source`` (a text table), else row i."""
    bad, counts = _invalid_rows(log, policy, names, source, line_offset)
    out = log.take(~bad) if bad.any() else log
    detail = "; ".join(counts) if counts else "no NaN, infinite or negative values"
    return out, FilterReport.between("invalid signals", log, out, detail)


def check_signals(log: InteractionLog, names: Iterable[str]) -> None:
    """Raise :class:`InvalidSignalError` when a signal of ``names`` holds an invalid value
    (for steps that read signals, such as the session filter, and must not guess)."""
    _invalid_rows(log, SignalPolicy("error"), names, None, None)


def _invalid_rows(
    log: InteractionLog,
    policy: SignalPolicy,
    names: Iterable[str] | None,
    source: str | Path | None,
    line_offset: int | None,
) -> tuple[np.ndarray, list[str]]:
    """The rows with an invalid value in any signal of ``names`` and, per signal, the counts
    by kind; under ``error`` the first such row raises instead."""
    names = list(log.signals) if names is None else list(names)
    bad = np.zeros(len(log), dtype=bool)
    counts: list[str] = []
    for name in names:
        problems = policy.problems(name, log.signals[name])
        if not problems:
            continue
        rows = np.logical_or.reduce(list(problems.values()))
        kinds = ", ".join(f"{int(m.sum())} {k}" for k, m in problems.items())
        if policy.on_invalid == "error":
            i = int(np.flatnonzero(rows)[0])
            user = log.users.raw[log.user[i]].item()
            item = log.items.raw[log.item[i]].item()
            raise InvalidSignalError(
                f"signal column {name!r} has invalid values ({kinds}); the first is "
                f"{float(log.signals[name][i])!r} (user {user!r}, item {item!r})",
                path=source,
                **({"row": i} if line_offset is None else {"line": i + line_offset}),
                hint="fix the values; or drop those rows and count them with "
                "invalid_signals='drop' (CLI: --invalid-signals drop); or leave the column out "
                "of the signals (ColumnMapping(signals=...), CLI: --signal-cols); a signal that "
                "may be negative goes in SignalPolicy(signed=...) (CLI: --signed-signals).",
            )
        counts.append(f"{name}: {kinds}")
        bad |= rows
    return bad, counts
