"""The served model and its hot replacement.

A :class:`ModelStore` holds one :class:`LoadedModel` (a ``Recommender`` plus the version that
names it). A reload builds the new model and its semantic IDs (catalog and trie) beside the old
one and only then replaces the reference; the batcher reads the reference once per batch, so a
batch is computed by one model and the swap happens at a batch boundary.

A version is the first 12 hex digits of the SHA-256 of the run files the server reads (the model,
its config, the semantic IDs, the training settings and the user map): the same files give the
same version on every replica, and any change to them gives a new one.

Checkpoints are refused, and the old model keeps serving, when loading fails for any reason (a
half-written ``model.safetensors``, a config that does not fit the weights, semantic IDs of
another model), when a weight is not finite, when a probe request does not give a finite session,
or when the files change while they are being read (a trainer still writing).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from onerec.exceptions import ReloadRefusedError
from onerec.generation.recommend import Recommender

log = logging.getLogger("onerec.serving")

RUN_FILES = (
    "model_config.json",
    "model.safetensors",
    "semantic_ids.parquet",
    "train_config.json",
    "users.parquet",
)
Signature = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class LoadedModel:
    """A servable model: the recommender, its version and the file signature it was read from."""

    recommender: Recommender
    version: str
    signature: Signature
    loaded_at: float


def run_signature(run: Path) -> Signature:
    """(name, size, mtime) of every run file present: cheap to poll, changes with every write."""
    out = []
    for name in RUN_FILES:
        try:
            st = (run / name).stat()
        except FileNotFoundError:
            continue
        out.append((name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def run_version(run: Path) -> str:
    """The SHA-256 (12 hex digits) of the run files the server reads, names included."""
    digest = hashlib.sha256()
    for name in RUN_FILES:
        path = run / name
        if path.is_file():
            digest.update(name.encode() + b"\0")
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:12]


def load_model(run: Path, device: str = "cpu") -> LoadedModel:
    """The run folder's model, checked to be servable; :class:`ReloadRefusedError` otherwise."""
    before = run_signature(run)
    version = run_version(run)
    try:
        recommender = Recommender.from_run(run, device=device)
    except Exception as e:  # any failure to read a checkpoint means the same: do not serve it
        raise ReloadRefusedError(
            f"the checkpoint in {run} cannot be loaded ({type(e).__name__}: {e}); the loaded "
            f"model keeps serving"
        ) from e
    _probe(recommender, run)
    if run_signature(run) != before:
        raise ReloadRefusedError(
            f"the files of {run} changed while they were read (a checkpoint still being "
            f"written?); the loaded model keeps serving and the next poll tries again"
        )
    return LoadedModel(recommender, version, before, time.time())


def _probe(recommender: Recommender, run: Path) -> None:
    """Finite weights, and a finite session for one catalog item: a model that would answer."""
    bad = [n for n, p in recommender.model.named_parameters() if not torch.isfinite(p).all()]
    if bad:
        raise ReloadRefusedError(
            f"the checkpoint in {run} holds non-finite weights ({', '.join(bad[:3])}"
            f"{' ...' if len(bad) > 3 else ''}); the loaded model keeps serving"
        )
    first = recommender.items.raw[0]
    out = recommender.recommend([first], n_items=1, beam_size=1, exclude_history=False)
    if not torch.isfinite(torch.tensor(out.log_prob)):
        raise ReloadRefusedError(
            f"the checkpoint in {run} gives a non-finite score for a probe request; the loaded "
            f"model keeps serving"
        )


class ModelStore:
    """The model being served and the reloads that replace it.

    ``current`` is None until the first load succeeds (the server then answers /readyz with 503).
    :meth:`reload` and :meth:`poll` block while a model loads: call them off the event loop.
    ``on_reload(outcome, version, error)`` is told every outcome: ``swapped``, ``unchanged``,
    ``refused``.
    """

    def __init__(self, run: str | Path, device: str = "cpu", on_reload=None) -> None:
        self.run = Path(run)
        self.device = device
        self.current: LoadedModel | None = None
        self.last_error: str | None = None
        self._on_reload = on_reload or (lambda outcome, version, error: None)
        self._lock = threading.Lock()  # one load at a time (watcher and admin call)
        self._refused: Signature | None = None  # not retried until the files change again
        self._seen: Signature | None = None  # a change is loaded once it held for one poll

    def reload(self) -> tuple[str, LoadedModel]:
        """Load the run folder now; ``('swapped' | 'unchanged', model)``, or raise
        :class:`ReloadRefusedError` (the current model stays)."""
        with self._lock:
            signature = run_signature(self.run)
            old = self.current
            try:
                new = load_model(self.run, self.device)
            except ReloadRefusedError as e:
                self._refused = signature
                self.last_error = str(e)
                log.error("reload refused: %s", e)
                self._on_reload("refused", None if old is None else old.version, e)
                raise
            self._refused = None
            self.last_error = None
            if old is not None and new.version == old.version:
                self.current = LoadedModel(old.recommender, old.version, new.signature,
                                           old.loaded_at)  # fmt: skip
                self._on_reload("unchanged", old.version, None)
                return "unchanged", self.current
            self.current = new  # the swap: the next batch reads the new model
            log.warning("serving model version %s (was %s)", new.version,
                        None if old is None else old.version)  # fmt: skip
            self._on_reload("swapped", new.version, None)
            return "swapped", new

    def poll(self) -> str | None:
        """One watcher step: reload when the run files changed and then held still for one
        poll (a checkpoint being written keeps changing). Returns the outcome or None."""
        signature = run_signature(self.run)
        loaded = None if self.current is None else self.current.signature
        if signature in (loaded, self._refused) or "model.safetensors" not in dict(
            (name, size) for name, size, _ in signature
        ):
            self._seen = None
            return None
        if signature != self._seen:
            self._seen = signature
            return None
        self._seen = None
        try:
            return self.reload()[0]
        except ReloadRefusedError:
            return "refused"
