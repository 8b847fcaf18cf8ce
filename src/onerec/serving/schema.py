"""The HTTP request and response bodies of ``POST /recommend`` (pydantic models; FastAPI turns
them into the OpenAPI document).

Requests are strict: item and user ids are JSON integers or strings (no floats, no booleans),
unknown fields are refused (so a typo is not ignored), and there is no field a path could be
passed in: the server only ever reads the run folder it was started on.
"""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

RawId = Union[StrictInt, StrictStr]
Number = Union[StrictInt, StrictFloat]


class RecommendRequest(BaseModel):
    """One user's request: the history (raw item ids, oldest first) and the session wanted."""

    model_config = ConfigDict(extra="forbid")

    history: list[RawId] = Field(description="raw item ids the user interacted with, oldest first")
    user: RawId | None = Field(None, description="raw user id (absent or unknown: anonymous)")
    n_items: StrictInt | None = Field(None, description="items per session (default: the run's)")
    beam_size: StrictInt = Field(32, description="sessions kept while decoding, >= n_items")
    exclude: list[RawId] = Field(default_factory=list,
                                 description="raw item ids never to recommend (already shown)")
    exclude_history: bool = Field(True, description="never recommend an item of the history")
    truncate: bool = Field(False, description="keep the most recent items of a long history")
    alternatives: StrictInt = Field(0, description="next-best sessions to return as well")
    timestamps: list[Number] | None = Field(
        None, description="one timestamp per history item (models trained with time_gap)")
    signals: dict[str, list[Number]] | None = Field(
        None, description="signal name -> one value per history item (models trained with it)")

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one beam-search call."""
        return (self.n_items, self.beam_size, self.exclude_history, self.truncate,
                self.alternatives)  # fmt: skip


class SessionOut(BaseModel):
    items: list[RawId]
    log_prob: float = Field(description="the model's log-probability of the whole session")


class RecommendResponse(BaseModel):
    """The best session, the next-best ones asked for, and the model version that answered."""

    items: list[RawId]
    log_prob: float
    alternatives: list[SessionOut]
    user: RawId | None
    anonymous: bool
    history_used: int
    history_dropped: int
    exclude_unknown: int = Field(description="ids of exclude that are not in the catalog")
    version: str = Field(description="the model version that computed this answer")


class ErrorResponse(BaseModel):
    error: str = Field(description="the named error class, e.g. UnknownItemError")
    message: str = Field(description="what was expected, what came, and how to fix it")
