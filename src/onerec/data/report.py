"""What a filter removed: every filter in the data layer returns one of these beside its result.

Nothing is dropped silently: the counts go to the log (``logging``), into run reports, and into
``onerec data split`` output.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from onerec.data.schema import InteractionLog

logger = logging.getLogger("onerec.data")


@dataclass(frozen=True)
class FilterReport:
    """Counts before and after one filtering step."""

    name: str
    rows_before: int
    rows_after: int
    users_before: int
    users_after: int
    items_before: int
    items_after: int
    sessions_before: int | None = None
    sessions_after: int | None = None
    detail: str = ""

    @classmethod
    def between(
        cls, name: str, before: InteractionLog, after: InteractionLog, detail: str = ""
    ) -> "FilterReport":
        def n_distinct(x: np.ndarray | None) -> int | None:
            if x is None:
                return None
            if len(x) == 0:
                return 0
            return int(np.count_nonzero(np.bincount(x)))  # indices are small non-negative ints

        report = cls(
            name,
            len(before),
            len(after),
            n_distinct(before.user) or 0,
            n_distinct(after.user) or 0,
            n_distinct(before.item) or 0,
            n_distinct(after.item) or 0,
            n_distinct(before.session),
            n_distinct(after.session),
            detail,
        )
        report.log()
        return report

    @property
    def rows_removed(self) -> int:
        return self.rows_before - self.rows_after

    @property
    def users_removed(self) -> int:
        return self.users_before - self.users_after

    @property
    def items_removed(self) -> int:
        return self.items_before - self.items_after

    @property
    def sessions_removed(self) -> int | None:
        if self.sessions_before is None or self.sessions_after is None:
            return None
        return self.sessions_before - self.sessions_after

    def __str__(self) -> str:
        parts = [
            f"{self.rows_removed:,} of {self.rows_before:,} rows",
            f"{self.users_removed:,} of {self.users_before:,} users",
            f"{self.items_removed:,} of {self.items_before:,} items",
        ]
        if self.sessions_removed is not None:
            parts.append(f"{self.sessions_removed:,} of {self.sessions_before:,} sessions")
        text = f"{self.name}: removed " + ", ".join(parts)
        return text + (f" ({self.detail})" if self.detail else "")

    def log(self) -> None:
        logger.info("%s", self)

    @classmethod
    def from_dict(cls, d: dict) -> "FilterReport":
        """The report :meth:`to_dict` wrote (the ``*_removed`` counts are derived again)."""
        return cls(**{k: v for k, v in d.items() if not k.endswith("_removed")})

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            rows_removed=self.rows_removed,
            users_removed=self.users_removed,
            items_removed=self.items_removed,
            sessions_removed=self.sessions_removed,
        )
        return d
