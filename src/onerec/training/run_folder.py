"""What a run was made from, recorded in its checkpoints and compared on resume and in serving.

A run records three things (issue 23: a run folder is one consistent thing):

- **fingerprints** of its sources (:func:`source_fingerprints`): ``data.split`` (training
  sequences, validation and test targets), ``data.user_ids`` (raw user ids, row = user index),
  ``semantic_ids.codes`` (codes and level sizes) and ``semantic_ids.item_ids`` (raw item ids,
  row = item index); the last two are also computed from a run's ``semantic_ids.parquet``;
- the **model config** (every field);
- the **training settings** (every :class:`TrainConfig` field).

They travel in the header metadata of ``last.safetensors`` (all three: what resuming compares)
and ``model.safetensors`` (the fingerprints and a fingerprint of the model config: what serving
compares), so the record cannot be separated from the weights it describes. ``run.json`` holds
a readable copy of the fingerprints. Resuming with anything different raises
:class:`RunMismatchError` listing every difference, except the settings in :data:`RESUMABLE`
(how long the run goes on and where it runs). ``resume="force"`` goes on regardless; every
resume, forced or not, is appended to ``train_config.json``'s ``resumes`` list with the epoch it
started at and the settings it changed (``[before, after]``), so that file, the settings in
force now, also says what earlier epochs used.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from onerec.data.splits import Split
from onerec.exceptions import (
    ConfigError,
    CorruptCheckpointError,
    RunFileError,
    RunIntegrityError,
    RunMismatchError,
)
from onerec.model.config import OneRecConfig
from onerec.runs import (
    check_shapes,
    fingerprint,
    ids_fingerprint,
    read_json,
    read_safetensors,
    read_safetensors_metadata,
    read_safetensors_shapes,
)
from onerec.tokenizer.pipeline import load_tokenization
from onerec.tokenizer.residual import SemanticIds

# settings a resumed run may change without --force-resume: how long it goes on and where it
# runs. Every other field shaped the weights, or the model selection, of the epochs trained.
RESUMABLE = ("epochs", "patience", "max_seconds", "device", "precision", "log_every")
RESUME_MODES = ("check", "force", "restart")
# files the Trainer writes; resume="restart" removes them (and nothing else) before training
TRAINER_FILES = ("last.safetensors", "model.safetensors", "metrics.jsonl", "state.json",
                 "training.png", "train_config.json", "model_config.json")  # fmt: skip
_META = "onerec.run"  # the safetensors metadata key of the record
RESTART_HINT = "this run cannot be resumed: start over in a new --out (or here with --overwrite)."
_FIX_CONFIG = "restore the file or start a new --out."
_SOURCES = {  # what each fingerprint covers, for the error message
    "data.split": " (the dataset's interactions: training sequences, validation and test targets)",
    "data.user_ids": " (the dataset's raw user ids)",
    "semantic_ids.codes": " (the codes in --tokens' semantic_ids.parquet)",
    "semantic_ids.item_ids": " (the raw item ids in --tokens' semantic_ids.parquet)",
}


def semantic_ids_fingerprints(ids: SemanticIds, item_ids: np.ndarray | None) -> dict[str, str]:
    """``semantic_ids.codes`` and (when the raw ids are known) ``semantic_ids.item_ids``."""
    out = {"semantic_ids.codes": fingerprint(ids.codes, list(ids.level_sizes))}
    if item_ids is not None:
        out["semantic_ids.item_ids"] = ids_fingerprint(item_ids)
    return out


def source_fingerprints(
    split: Split,
    ids: SemanticIds,
    item_ids: np.ndarray | None = None,
    user_ids: np.ndarray | None = None,
) -> dict[str, str]:
    """Fingerprints of what a run is trained from (raw ids only where the caller knows them)."""
    seqs = split.train_sequences()
    parts: list[Any] = [seqs.values, seqs.offsets, list(split.features)]
    for examples in (split.valid, split.test):
        parts += [examples.user, examples.target.values, examples.target.offsets]
    out = {"data.split": fingerprint(*parts), **semantic_ids_fingerprints(ids, item_ids)}
    if user_ids is not None:
        out["data.user_ids"] = ids_fingerprint(user_ids)
    return out


def checkpoint_metadata(
    sources: dict[str, str], model_config: dict[str, Any], train_config: Any
) -> dict[str, str]:
    """The record for ``last.safetensors``: sources, model config and training settings."""
    record = {"sources": sources, "model_config": model_config, "train_config": asdict(train_config)}
    return {_META: json.dumps(record, default=list)}


def weights_metadata(sources: dict[str, str], model_config: dict[str, Any]) -> dict[str, str]:
    """The record for ``model.safetensors``: sources and the model config's fingerprint."""
    return {_META: json.dumps({"sources": sources, "model_config": fingerprint(model_config)})}


def _record(path: Path, metadata: dict[str, str]) -> dict[str, Any] | None:
    if _META not in metadata:
        return None  # written before runs recorded their sources
    try:
        record = json.loads(metadata[_META])
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("sources"), dict):
        raise RunIntegrityError(f"the metadata {_META!r} is damaged", path=path,
                                hint=RESTART_HINT)  # fmt: skip
    return record


def _differences(
    before: dict[str, Any], now: dict[str, Any], prefix: str
) -> dict[str, tuple[Any, Any]]:
    """``prefix.key -> (before, now)`` for every key whose value differs (JSON-normalized)."""
    norm = lambda v: json.loads(json.dumps(v, default=list))  # noqa: E731  (tuples vs lists)
    return {f"{prefix}{k}": (before.get(k), now.get(k)) for k in sorted({*before, *now})
            if norm(before.get(k)) != norm(now.get(k))}  # fmt: skip


def check_resume(
    run_dir: Path,
    sources: dict[str, str],
    model_config: dict[str, Any],
    train_config: Any,
    model_shapes: dict[str, tuple[int, ...]],
    mode: str = "check",
) -> list[dict[str, Any]] | None:
    """The resumes of ``run_dir``, this one last (None when there is nothing to resume, or
    ``mode`` is "restart"): each with the epoch and step it started at, whether it was forced,
    and what changed (``[in the run, now]``). Raises :class:`RunMismatchError` when anything but
    :data:`RESUMABLE` settings differs and ``mode`` is "check", and
    :class:`CorruptCheckpointError` when the checkpoint's weights cannot take the shapes of the
    model now (``model_shapes``), even when forced. Reads the checkpoint's header and
    ``train_config.json``; writes nothing."""
    if mode not in RESUME_MODES:
        raise ConfigError(f"resume must be one of {RESUME_MODES}, got {mode!r}")
    last = run_dir / "last.safetensors"
    if mode == "restart" or not last.exists():
        return None
    record = _record(last, read_safetensors_metadata(last, RESTART_HINT))
    if record is None:  # an older run: compare with the files it wrote beside the checkpoint
        record = _legacy_record(run_dir, type(train_config))
    now = asdict(train_config)
    # sources the run did not record (older runs, or raw ids the caller did not give) stay
    # unchecked: only what both sides know is compared
    known = {k: v for k, v in record["sources"].items() if k in sources}
    diff = _differences(known, {k: sources[k] for k in known}, "")
    if record["model_config"] is not None:
        diff.update(_differences(record["model_config"], model_config, "model_config."))
    changed: dict[str, tuple[Any, Any]] = {}
    if record["train_config"] is not None:
        changed = _differences(record["train_config"], now, "train_config.")
    refused = {**diff, **{k: v for k, v in changed.items()
                          if k.removeprefix("train_config.") not in RESUMABLE}}  # fmt: skip
    if refused and mode == "check":
        lines = "; ".join(f"{k}{_SOURCES.get(k, '')}: {_show(a)} in the run, {_show(b)} now"
                          for k, a, b in ((k, *v) for k, v in refused.items()))  # fmt: skip
        raise RunMismatchError(
            f"{run_dir} holds a run made from other inputs or settings, so resuming it would mix "
            f"them: {lines}. Fix: start over in a new --out (or pass --overwrite to replace "
            f"this run), give the run's own inputs and settings, or pass --force-resume to go "
            f"on anyway (recorded in train_config.json). Settings a resume may change: "
            f"{', '.join(RESUMABLE)}.",
            {**refused},
        )
    shapes = read_safetensors_shapes(last, RESTART_HINT)
    check_shapes({k[6:]: v for k, v in shapes.items() if k.startswith("model.")}, model_shapes,
                 last, "the model config asked for now",
                 hint="resume with the run's model settings, or start over in a new --out.")  # fmt: skip
    epoch, step = _counters(last)
    earlier: list[Any] = []
    if (run_dir / "train_config.json").is_file():
        earlier = read_json(run_dir / "train_config.json", _FIX_CONFIG).get("resumes", [])
        if not isinstance(earlier, list):
            raise RunIntegrityError(f"'resumes' must be a list, got {earlier!r}",
                                    path=run_dir / "train_config.json", hint=_FIX_CONFIG)  # fmt: skip
    return [*earlier, {
        "epoch": epoch, "step": step, "forced": bool(refused),
        "changed": {k: list(v) for k, v in {**diff, **changed}.items()},
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }]  # fmt: skip


def _legacy_record(run_dir: Path, config_class: Any) -> dict[str, Any]:
    """The record of a run written before runs recorded one, from the files beside its
    checkpoint: its own copies of the semantic IDs and users, and its configs (fields added
    since take their defaults, as when it is loaded)."""
    record: dict[str, Any] = {"sources": {}, "model_config": None, "train_config": None}
    if (run_dir / "model_config.json").is_file():
        record["model_config"] = OneRecConfig.read(run_dir / "model_config.json").to_dict()
    path = run_dir / "train_config.json"
    if path.is_file():
        try:
            record["train_config"] = asdict(config_class.from_dict(read_json(path, _FIX_CONFIG)))
        except ConfigError as e:
            raise RunFileError(str(e), path=path, hint=_FIX_CONFIG) from None
    sources = record["sources"]
    if (run_dir / "semantic_ids.parquet").is_file():
        items, ids = load_tokenization(run_dir)
        sources.update(semantic_ids_fingerprints(ids, items.raw))
    if (run_dir / "users.parquet").is_file():
        try:
            users = pq.read_table(run_dir / "users.parquet", columns=["user_id"]).column(0)
        except (pa.ArrowException, OSError, KeyError) as e:
            raise RunFileError(f"cannot read its user_id column ({e})",
                               path=run_dir / "users.parquet", hint=RESTART_HINT) from None  # fmt: skip
        sources["data.user_ids"] = ids_fingerprint(users.to_numpy(zero_copy_only=False))
    return record


def _show(value: Any) -> str:
    return json.dumps(value, default=list)


def _counters(last: Path) -> tuple[int, int]:
    tensors, _ = read_safetensors(last, hint=RESTART_HINT, keys=("trainer.counters",))
    counters = tensors.get("trainer.counters")
    if counters is None or counters.numel() < 2:
        raise CorruptCheckpointError("it holds no trainer counters (epoch, step)", path=last,
                                     hint=RESTART_HINT)  # fmt: skip
    return int(counters[0]), int(counters[1])


def train_config_record(train_config: Any, resumes: list[dict[str, Any]] | None) -> str:
    """``train_config.json``: the settings in force, and every resume so far."""
    record: dict[str, Any] = asdict(train_config)
    if resumes:
        record["resumes"] = resumes
    return json.dumps(record, indent=2, default=list)


def check_served(
    weights: Path, metadata: dict[str, str], sources: dict[str, str], model_config: dict[str, Any]
) -> None:
    """The weights in ``weights`` were trained with these semantic IDs, users and model config;
    else :class:`RunIntegrityError` naming the file that does not belong. Runs written before
    the record existed are not checked (shapes still are, by the loader)."""
    record = _record(weights, metadata)
    if record is None:
        return
    files = {"semantic_ids": "semantic_ids.parquet", "data.user_ids": "users.parquet"}
    for key, value in record["sources"].items():
        if key in sources and sources[key] != value:
            name = next((f for prefix, f in files.items() if key.startswith(prefix)), key)
            raise RunIntegrityError(
                f"{weights.name} was trained with another {name} than the one beside it "
                f"({key} {value} in the weights, {sources[key]} in the file)",
                path=weights.parent / name,
                hint=f"put back the {name} the run was trained with (the run folder's own copy), "
                     f"or train a run with this one.",
            )  # fmt: skip
    if record.get("model_config") != fingerprint(model_config):
        raise RunIntegrityError(
            f"{weights.name} was trained with another model config than the one beside it",
            path=weights.parent / "model_config.json",
            hint="put back the model_config.json the run was trained with, or train again.",
        )
