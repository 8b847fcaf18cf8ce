"""Folders onerec writes: who made them, what a run was made from, and their files read back
with named errors.

Every stage may use this module (it imports no stage), so the rules are written once:

- **Output folders** (:func:`claim_output`): a command writes only into a folder that is new,
  empty, or was made by the same command (``onerec_output.json`` names it; folders written
  before that file existed are recognised by their files). Anything else is refused with
  :class:`~onerec.exceptions.OutputExistsError` unless the caller asks to overwrite.
- **Names from data** (:func:`safe_name`): a dataset name becomes one path component inside
  the output folder, never a path that leaves it.
- **Fingerprints** (:func:`fingerprint`): a short SHA-256 of arrays and JSON values, recorded
  when a run is made and compared when it is resumed or served.
- **Files** (:func:`read_json`, :func:`read_safetensors`): a missing, truncated or malformed
  file is a :class:`~onerec.exceptions.RunFileError` naming the file, never a traceback.
- **Devices** (:func:`resolve_device`): a device this machine lacks is refused before a
  command makes anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from onerec import __version__
from onerec.exceptions import (
    CorruptCheckpointError,
    DeviceUnavailableError,
    OutputExistsError,
    RunFileError,
    UnsafeNameError,
)

OWNER_FILE = "onerec_output.json"

# files by which folders written before OWNER_FILE existed are recognised (all must be there)
_SIGNATURES: dict[str, tuple[str, ...]] = {
    "train": ("train_config.json",),
    "quickstart": ("config.json", "simulator.json"),
    "tokenize": ("semantic_ids.parquet", "report.json"),
    "data convert": ("meta.json", "interactions.parquet"),
    "data split": ("split.json", "train.parquet"),
}


# --- output folders -------------------------------------------------------------------------------
def made_by(folder: str | Path) -> str | None:
    """The command that made ``folder`` (None: unknown, or not a folder onerec made)."""
    folder = Path(folder)
    owner = folder / OWNER_FILE
    if owner.is_file():
        try:
            return str(json.loads(owner.read_text())["command"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    for command, files in _SIGNATURES.items():
        if all((folder / name).exists() for name in files):
            return command
    return None


def check_output(folder: str | Path, command: str, overwrite: bool = False) -> bool:
    """Whether ``folder`` may be written by ``command``, without writing anything: True when it
    holds an earlier output of the same command (to resume or refresh), False when it is new
    or empty. Raises :class:`OutputExistsError` for a file, or for a folder with other content,
    unless ``overwrite``."""
    folder = Path(folder)
    for place in (folder, *folder.parents):
        if place.exists() and not place.is_dir():
            where = "" if place == folder else f" ({place} is a file)"
            raise OutputExistsError(
                f"--out {folder} is a file, not a folder{where}: `onerec {command}` writes a "
                f"folder there. Fix: choose another --out."
            )
    if not folder.is_dir() or not any(folder.iterdir()):
        return False
    owner = made_by(folder)
    if owner == command:
        return True
    if overwrite:
        return False
    if owner:
        what = f"`onerec {owner}`"
    else:
        names = sorted(p.name for p in folder.iterdir())
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        what = f"no onerec command (it holds {shown})"
    raise OutputExistsError(
        f"--out {folder} already exists and was made by {what}, not `onerec {command}`: writing "
        f"there would mix or replace its files. Fix: choose a new --out, or pass --overwrite to "
        f"write into it anyway (files of the same names are replaced; nothing else is deleted)."
    )


def claim_output(folder: str | Path, command: str, overwrite: bool = False) -> Path:
    """:func:`check_output`, then create ``folder`` and record ``command`` as its maker."""
    folder = Path(folder)
    check_output(folder, command, overwrite)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"command": command, "onerec": __version__,
              "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    (folder / OWNER_FILE).write_text(json.dumps(record, indent=2))
    return folder


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+|\.{2,}")


def safe_name(name: str, what: str = "dataset name") -> str:
    """``name`` (taken from data) as one file-name component: every run of characters other
    than letters, digits and ``._+=-`` (and every ``..``) becomes one ``_``, and dots and
    underscores at either end go, so ``../../x`` is ``x`` and ``a/b`` is ``a_b``: the result
    can never leave the folder it is joined to. Raises :class:`UnsafeNameError` when nothing
    is left."""
    cleaned = re.sub(r"_+", "_", _UNSAFE.sub("_", str(name))).strip("._")
    if not cleaned:
        raise UnsafeNameError(
            f"the {what} {name!r} has no letters or digits to name a file with. Fix: give the "
            f"dataset a name (meta.json's \"name\") of letters, digits, '.', '_' or '-'."
        )
    return cleaned


# --- devices --------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """"auto": the GPU when there is one, else the CPU. Any other name must be a device this
    machine has: :class:`DeviceUnavailableError` otherwise, raised before anything is made."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    fix = "Fix: use --device auto (the GPU when there is one), cpu, or cuda:N of a GPU it has."
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as e:
        raise DeviceUnavailableError(f"device {name!r} is not a torch device name ({e}). {fix}") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceUnavailableError(
                f"device {name!r} asks for a CUDA GPU, but this machine has none that torch "
                f"{torch.__version__} can use. {fix}"
            )
        if device.index is not None and device.index >= count:
            raise DeviceUnavailableError(
                f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to "
                f"cuda:{count - 1}. {fix}"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f"device {name!r}: Apple MPS is not available here. {fix}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise DeviceUnavailableError(f"device {name!r}: onerec runs on cpu, cuda or mps. {fix}")
    return device


# --- fingerprints ---------------------------------------------------------------------------------
def fingerprint(*parts: Any) -> str:
    """A short SHA-256 of arrays, tensors and JSON values, in order: equal inputs (values,
    dtypes and shapes) give equal fingerprints. Object arrays (text ids) hash their values'
    text and types."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().numpy()
        if isinstance(part, np.ndarray):
            if part.dtype == object:
                h.update(json.dumps([[type(v).__name__, str(v)] for v in part.tolist()]).encode())
            else:
                h.update(f"{part.dtype.str}{part.shape}".encode())
                h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def ids_fingerprint(ids: Any) -> str:
    """A fingerprint of raw ids in order, by their text: the same ids read back from Parquet,
    JSON or a command line (as ints, numpy ints or strings) give the same fingerprint."""
    return fingerprint([str(v) for v in np.asarray(ids).tolist()])


# --- files ----------------------------------------------------------------------------------------
def read_json(path: str | Path, hint: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing file, text that is not UTF-8 JSON, or a value
    that is not an object raises :class:`RunFileError` naming the file, with ``hint`` as the
    fix."""
    path = Path(path)
    if not path.is_file():
        raise RunFileError("the file is missing", path=path, hint=hint)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise RunFileError(f"not UTF-8 text ({e.reason} at byte {e.start})", path=path,
                           hint=hint) from None  # fmt: skip
    except json.JSONDecodeError as e:
        raise RunFileError(f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})",
                           path=path, hint=hint) from None  # fmt: skip
    if not isinstance(value, dict):
        raise RunFileError(f"expected a JSON object, got {type(value).__name__}", path=path,
                           hint=hint)  # fmt: skip
    return value


def read_safetensors(
    path: str | Path, device: str | torch.device = "cpu", hint: str = "train the run again.",
    keys: tuple[str, ...] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (only ``keys`` of them, those present, when given) and the header metadata
    of a safetensors file; a missing, truncated or corrupt file raises
    :class:`CorruptCheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CorruptCheckpointError("the file is missing", path=path, hint=hint)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys() if keys is None or k in keys}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CorruptCheckpointError(f"cannot read it as safetensors ({e})", path=path,
                                     hint=hint) from None  # fmt: skip
    return tensors, metadata


@contextmanager
def replaced_atomically(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write into; when the block ends without an error it
    is renamed over ``path``, so a reader (a serving process watching the run, a resume after a
    kill) sees the old file or the new one, never half of one. On an error it is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_safetensors(
    tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file atomically (see :func:`replaced_atomically`)."""
    with replaced_atomically(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
                  metadata=metadata)  # fmt: skip


def write_text(path: str | Path, text: str) -> None:
    """Write a text file atomically (see :func:`replaced_atomically`)."""
    with replaced_atomically(path) as tmp:
        tmp.write_text(text)


def read_safetensors_metadata(
    path: str | Path, hint: str = "train the run again."
) -> dict[str, str]:
    """Only the header metadata of a safetensors file (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CorruptCheckpointError(f"cannot read it as safetensors ({e})", path=path,
                                     hint=hint) from None  # fmt: skip


def read_safetensors_shapes(path: str | Path, hint: str) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a safetensors file, from its header (no tensor is read)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CorruptCheckpointError(f"cannot read it as safetensors ({e})", path=path,
                                     hint=hint) from None  # fmt: skip


def check_shapes(
    tensors: dict[str, Any], expected: dict[str, Any], path: str | Path, config_name: str,
    note: str = "", hint: str = "keep the weights and the model_config.json of one run together, "
    "or train again.",
) -> None:  # fmt: skip
    """Every expected tensor (or shape) is in ``tensors`` with its shape, and nothing else is
    there; else :class:`CorruptCheckpointError` naming the file, the config file and the first
    tensors (and ``note``, a likely cause)."""
    have = {k: tuple(getattr(v, "shape", v)) for k, v in tensors.items()}
    want = {k: tuple(getattr(v, "shape", v)) for k, v in expected.items()}
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    shapes = [f"{k} {have[k]} (the config gives {v})"
              for k, v in want.items() if k in have and have[k] != v]  # fmt: skip
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"shapes differ: {'; '.join(shapes[:3])}")
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        if note:
            parts.append(note)
        raise CorruptCheckpointError(
            f"the weights do not fit {config_name}: " + ", ".join(parts), path=path, hint=hint,
        )
