"""Named errors. Every error raised at a boundary says what was expected, what came, and how to fix it.

All of them derive from :class:`OneRecError` (and from ``ValueError`` where the input is at fault),
so callers can catch the family or one member.
"""

from __future__ import annotations

from pathlib import Path


class OneRecError(Exception):
    """Base class of every error onerec raises on purpose."""


class DataError(OneRecError, ValueError):
    """Input data is not what the reader expected.

    ``path`` and ``line`` (1-based line in the file, or ``row`` for tabular files) locate the
    problem; ``hint`` says how to fix it. All three are optional and also appear in the message.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        row: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.row = row
        self.hint = hint
        where = ""
        if self.path is not None:
            where = self.path
            if line is not None:
                where += f", line {line}"
            elif row is not None:
                where += f", row {row}"
            where += ": "
        elif line is not None:
            where = f"line {line}: "
        elif row is not None:
            where = f"row {row}: "
        text = where + message
        if hint:
            text += f" Fix: {hint}"
        super().__init__(text)


class EmptyDataError(DataError):
    """A file or table holds no records."""


class MalformedLineError(DataError):
    """A line of a text file does not follow its format."""


class MissingColumnError(DataError):
    """A required column is absent from a tabular file."""


class InvalidTimestampError(DataError):
    """Timestamps are missing, non-numeric or not finite."""


class DuplicateRowsError(DataError):
    """The same (user, item, timestamp) occurs more than once and duplicates were set to error."""


class UnknownIdError(DataError):
    """An id is not in the id map it is looked up in."""


class UnknownItemError(UnknownIdError):
    """An item id is not in the item map (for example an item that appears only in a test file)."""


class UnknownUserError(UnknownIdError):
    """A user id is not in the user map."""


class TooFewInteractionsError(DataError):
    """A user has fewer interactions than a split protocol needs and dropping was disabled."""


# -- data integrity (issue 23): ids kept exact, signals checked, files read or named ----------
class InvalidIdError(DataError):
    """A user, item or session id cannot be kept exactly: it is missing (null, empty), a float
    with a fraction or beyond 2**53 (where floats no longer hold every integer), a NUL
    character, or a value of a type ids cannot have (a list, a boolean)."""


class IdCollisionError(InvalidIdError):
    """Two distinct raw ids would map to the same index (the map would merge two items)."""


class InvalidSignalError(DataError):
    """A signal column (watch time, like, ...) holds NaN, an infinite or a negative value and
    the signal policy says ``error``."""


class FileEncodingError(DataError):
    """A text file cannot be decoded in the encoding it was read with."""


class CorruptFileError(DataError):
    """A binary file (Parquet) or a JSON file is truncated or is not what its name says."""


class DataFileNotFoundError(DataError, FileNotFoundError):
    """A file the reader was pointed to does not exist."""


class NotADatasetError(DataError):
    """A folder is neither a saved onerec dataset or split nor a RecBole atomic-file folder."""


class OutputPathError(DataError):
    """An output location cannot be written as asked (for example it is an existing file)."""


class DatasetNotFoundError(OneRecError, FileNotFoundError):
    """A registered dataset's files are not in the data directory."""


class ConfigError(OneRecError, ValueError):
    """A configuration value is out of range or inconsistent."""


class UnknownFeatureError(ConfigError):
    """A side-feature name is neither a derived feature (``time_gap``) nor a signal of the log."""


class EvaluationError(OneRecError, ValueError):
    """Predictions and evaluation targets do not fit together."""


class EmbeddingError(OneRecError, ValueError):
    """Item embeddings are missing, misaligned with the catalog, or not finite."""


class TokenizerError(OneRecError, ValueError):
    """The semantic-ID tokenizer cannot work with the given embeddings, codes or state."""


class EmbeddingShapeError(TokenizerError, EmbeddingError):
    """Embeddings to cluster or encode are not a 2-D (N, D) array of the expected width."""


class EmptyCatalogError(EmbeddingShapeError):
    """There are no items (N == 0) or no features (D == 0) to cluster."""


class NonFiniteEmbeddingError(TokenizerError, EmbeddingError):
    """Embeddings contain NaN or infinite values (k-means would spread them to every centroid)."""


class TooFewItemsError(TokenizerError):
    """Fewer items than clusters were asked for (K > N)."""


class NotFittedError(TokenizerError):
    """A quantizer was used (encode, decode, save) before ``fit`` or ``load``."""


class CodeError(TokenizerError):
    """Semantic-ID codes have the wrong shape, are out of their level's range, or are unknown."""


class CodeCollisionError(CodeError):
    """Two items share a full code sequence where codes must be unique."""


class ModelError(OneRecError, ValueError):
    """Model inputs (tokens, masks, user ids) have the wrong shape or do not fit the config."""


class GenerationError(OneRecError, ValueError):
    """Beam search was asked for something it cannot do (beam too narrow, too few items, ...)."""


class RecommendationError(GenerationError):
    """A serving request (``Recommender.recommend``) cannot be answered as asked.

    Raised at the boundary, before any model work. ``hint`` says how to fix the request; it is
    optional and also appears in the message, as with :class:`DataError`.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        if hint:
            message += (" " if message.endswith(".") else ". ") + f"Fix: {hint}"
        super().__init__(message)


class EmptyHistoryError(RecommendationError):
    """A user's history holds no items: the model has nothing to condition the session on."""


class HistoryTooLongError(RecommendationError):
    """A history is longer than the model reads and truncation was not asked for."""


class BeamTooNarrowError(RecommendationError):
    """``beam_size`` is below 1, below the session's item count, or too small for the
    alternatives asked for."""


class SessionSizeError(RecommendationError):
    """The session's item count is below 1, above the model's ``max_session_items``, or above
    the items the catalog (less the excluded history) can supply."""


class BaselineError(OneRecError, ValueError):
    """A baseline recommender (SASRec, BERT4Rec, FDSA, popularity) was asked for something it
    cannot do: an unknown model name, inputs of the wrong shape, a dataset it cannot read."""


class UnknownModelError(BaselineError):
    """A baseline name is not in the benchmark's model registry."""


class MissingItemAttributesError(BaselineError):
    """A model that reads item attributes (FDSA) was given a dataset whose item table has none."""


class SimulatorError(OneRecError, ValueError):
    """The simulator's oracle or response sampler was given users, sessions or times it cannot
    score: ids out of range, a session array that is not 2-D, padding (-1) before an item, or a
    time outside [0, 1]."""


class SimulatorConfigError(ConfigError):
    """A simulator configuration (a ``SimulatorConfig`` JSON file or dict) is not valid JSON, has
    a field the config does not know, or a value of the wrong type or out of range; the message
    names the file and the field."""


# --- run folders and output folders (issue 23) ------------------------------------------------
class RunFileError(DataError):
    """A file of a run, tokenization or model folder is missing, not valid JSON, lacks a field,
    or holds a value of the wrong type; ``path`` names the file."""


class CorruptCheckpointError(RunFileError):
    """A safetensors file (``model.safetensors``, ``last.safetensors``) is truncated, corrupt,
    or holds tensors that do not fit the model config beside it."""


class RunIntegrityError(RunFileError):
    """A run folder's parts do not belong together: the weights were trained with other semantic
    IDs, another model config or other users than the files beside them."""


class RunMismatchError(ConfigError):
    """Resuming a run with other data, semantic IDs, model config or training settings than the
    run was made with. ``differences`` maps each differing field to ``(in the run, now)``."""

    def __init__(self, message: str, differences: dict[str, tuple[object, object]]) -> None:
        self.differences = differences
        super().__init__(message)


class OutputExistsError(OneRecError, FileExistsError):
    """An output folder exists and was not made by the command writing into it (or is a file)."""


class UnsafeNameError(ConfigError):
    """A name taken from data (a dataset name) cannot be made into a file name inside the
    output folder."""


class DeviceUnavailableError(ConfigError):
    """A torch device name is malformed or names a device this machine does not have."""


# --- alignment (reward model, DPO, IPA) -----------------------------------------------------------
class MissingSignalError(MissingColumnError):
    """A log lacks the feedback signals (or session ids) a reward model is trained on."""


class AlignmentError(OneRecError, ValueError):
    """Preference alignment got inputs that do not fit together."""


class AlignmentConfigError(AlignmentError, ConfigError):
    """An alignment setting is out of range (r_DPO, sessions per user, beta, weights, ...)."""


class CatalogMismatchError(AlignmentError):
    """A generator's semantic IDs and a reward model were made for different catalogs."""


# -- online serving (issue 19): the HTTP service's own errors -----------------------------------
class ServingError(OneRecError):
    """The recommendation service cannot take a request, a model or an admin call as given."""


class InvalidRequestError(ServingError, ValueError):
    """A request body is not valid JSON or does not follow the endpoint's schema (HTTP 422)."""


class RequestTooLargeError(ServingError, ValueError):
    """A request body, history or exclusion list is over the server's limits (HTTP 413)."""


class ServerBusyError(ServingError):
    """The request queue is full, or no model is loaded yet: retry later (HTTP 503)."""


class AdminAuthError(ServingError):
    """An admin call without the right bearer token, or with admin calls disabled (HTTP 401)."""


class ReloadRefusedError(ServingError):
    """A checkpoint in the run folder cannot be served (half-written, corrupt, not finite, or
    not fitting its semantic IDs): it is refused and the loaded model keeps serving (HTTP 409)."""


class OnlineError(OneRecError):
    """The simulated online test (``onerec online``) cannot go on: a server failed, or its run
    folder holds another test."""


class OnlineConfigError(OnlineError, ConfigError):
    """A setting of the online test is out of range or unknown."""
