"""Named public datasets and where their files are.

``load_dataset("beauty")`` reads the files from a data directory (argument, ``ONEREC_DATA_DIR``,
or ``shared/data`` / ``../shared/data`` from the working directory), converts them once, and
caches the result as Parquet under ``ONEREC_CACHE_DIR`` (default ``~/.cache/onerec``), keyed by
the source files' sizes and modification times and the reader version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.compute as pc

from onerec.data import readers
from onerec.data.schema import Dataset
from onerec.exceptions import DatasetNotFoundError

logger = logging.getLogger("onerec.data")

READER_VERSION = 2  # 2: exact ids, signal policy, filter reports in meta
DATA_DIR_ENV = "ONEREC_DATA_DIR"
CACHE_DIR_ENV = "ONEREC_CACHE_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """A public dataset: its files (relative to the data directory) and how to read them."""

    name: str
    description: str
    files: tuple[str, ...]
    read: Callable[[Path], Dataset]
    # published sizes, checked by the tests: users, items, interactions
    expected: tuple[int, int, int] | None = None


def _beauty_like(name: str, stem: str) -> Callable[[Path], Dataset]:
    def read(root: Path) -> Dataset:
        raw = readers.read_sequences(root / f"s3rec/{stem}.txt")
        attrs = readers.read_json_attributes(root / f"s3rec/{stem}_item2attributes.json")
        return readers.assemble(
            name, raw, item_features=[attrs], meta={"protocol_source": "S3-Rec"}
        )

    return read


def _read_yelp(root: Path) -> Dataset:
    ds = _beauty_like("yelp", "Yelp")(root)
    text = readers.read_json_items(root / "letter/Yelp.item.json")
    # LETTER numbers items from 0; item k there is item k + 1 of the S3-Rec file (approximately:
    # the published category sets agree for about 12.5k of 20k items)
    text = text.set_column(0, "id", pc.add(text.column("id"), 1))
    aligned, stats = readers.align_features(text, ds.log.items, "item")
    ds.item_table = ds.item_table.with_columns_of(aligned)
    ds.meta.update({f"text_{k}": v for k, v in stats.items()})
    ds.meta["text_join"] = "approximate: LETTER Yelp.item.json key k = S3-Rec item k+1"
    return ds


def _read_scientific(root: Path) -> Dataset:
    raw = readers.read_json_sequences(root / "cgr/Scientific.inter.json")
    items = readers.read_json_items(root / "cgr/Scientific.item.json")
    return readers.assemble("scientific", raw, item_features=[items])


def _read_ml100k(root: Path) -> Dataset:
    raw, items, users = readers.read_atomic(root / "ml-100k/ml-100k")
    return readers.assemble(
        "ml-100k", raw, item_features=[items] if items is not None else [], user_features=users
    )


def _read_video_games(root: Path) -> Dataset:
    raw = readers.read_pairs(root / "sasrec/Video.txt")
    return readers.assemble("video-games", raw)


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "beauty",
            "Amazon 2014 Beauty, 5-core, S3-Rec sequences with item attributes",
            ("s3rec/Beauty.txt", "s3rec/Beauty_item2attributes.json"),
            _beauty_like("beauty", "Beauty"),
            (22_363, 12_101, 198_502),
        ),
        DatasetSpec(
            "yelp",
            "Yelp, S3-Rec sequences with attributes and LETTER item text (approximate join)",
            ("s3rec/Yelp.txt", "s3rec/Yelp_item2attributes.json", "letter/Yelp.item.json"),
            _read_yelp,
            (30_431, 20_033, 316_354),
        ),
        DatasetSpec(
            "scientific",
            "Amazon Industrial & Scientific with title, description, brand, categories",
            ("cgr/Scientific.inter.json", "cgr/Scientific.item.json"),
            _read_scientific,
            (8_317, 4_344, 58_492),
        ),
        DatasetSpec(
            "ml-100k",
            "MovieLens-100k ratings with timestamps (RecBole atomic files)",
            ("ml-100k/ml-100k.inter", "ml-100k/ml-100k.item", "ml-100k/ml-100k.user"),
            _read_ml100k,
            (943, 1_682, 100_000),
        ),
        DatasetSpec(
            "video-games",
            "Amazon Video Games as used by SASRec (user item pairs in time order)",
            ("sasrec/Video.txt",),
            _read_video_games,
            (31_013, 23_715, 287_107),
        ),
    ]
}


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data directory: the argument, else ``$ONEREC_DATA_DIR``, else ``shared/data`` or
    ``../shared/data`` from the working directory."""
    if data_dir is not None:
        return Path(data_dir)
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    for candidate in (Path("shared/data"), Path("../shared/data")):
        if candidate.is_dir():
            return candidate.resolve()
    raise DatasetNotFoundError(
        "no data directory: pass --data-dir (Python: data_dir=...) or set "
        f"{DATA_DIR_ENV} to the folder holding s3rec/, cgr/, ml-100k/, ..."
    )


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "onerec")


def _fingerprint(spec: DatasetSpec, root: Path) -> str:
    h = hashlib.sha256(f"{spec.name}:{READER_VERSION}".encode())
    for rel in spec.files:
        st = (root / rel).stat()
        h.update(f"{rel}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_dataset(
    name: str, data_dir: str | Path | None = None, *, use_cache: bool = True
) -> Dataset:
    """A registered dataset by name (see :data:`REGISTRY`), or a saved dataset directory."""
    path = Path(name)
    if (path / "meta.json").exists():
        return Dataset.load(path)
    key = name.lower()
    if key not in REGISTRY:
        raise DatasetNotFoundError(
            f"unknown dataset {name!r}: expected one of {sorted(REGISTRY)} or a directory "
            "written by Dataset.save / `onerec data convert`"
        )
    spec = REGISTRY[key]
    root = resolve_data_dir(data_dir)
    missing = [rel for rel in spec.files if not (root / rel).exists()]
    if missing:
        raise DatasetNotFoundError(
            f"dataset {spec.name!r} needs {missing} under {root}; set --data-dir or "
            f"{DATA_DIR_ENV} to the folder that holds them"
        )
    cached = cache_dir() / "datasets" / f"{spec.name}-{_fingerprint(spec, root)}"
    if use_cache and (cached / "meta.json").exists():
        return Dataset.load(cached)
    dataset = spec.read(root)
    dataset.meta["data_dir"] = str(root)
    if use_cache:
        # a folder of this process's own, renamed into place at once: a killed conversion never
        # leaves a half-written cache, and processes converting at the same time do not collide
        tmp = cached.with_name(f"{cached.name}.{uuid.uuid4().hex}.tmp")
        dataset.save(tmp)
        if cached.exists() and not (cached / "meta.json").exists():
            shutil.rmtree(cached, ignore_errors=True)  # left by an older, non-atomic version
        try:
            tmp.rename(cached)
            logger.info("cached %s at %s", spec.name, cached)
        except OSError:  # another process cached the same files first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return dataset


def describe_registry() -> str:
    return json.dumps({n: s.description for n, s in REGISTRY.items()}, indent=2)
