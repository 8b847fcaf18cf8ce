"""One entry point from a dataset to the item embeddings the tokenizer reads, cached on disk.

Each source (text, attributes, collaborative, user vectors) is computed once per distinct input
and stored as safetensors under ``$ONEREC_CACHE_DIR/embeddings``, keyed by a hash of exactly what
it was computed from (the texts, the attribute lists, the training sequences, the file) and the
settings. Several sources are fused by :func:`onerec.embeddings.vectors.fuse`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from safetensors.numpy import load_file, save_file

from onerec.data.registry import cache_dir
from onerec.data.schema import Dataset
from onerec.data.splits import Split
from onerec.embeddings.sparse import attribute_embeddings, cooccurrence_embeddings
from onerec.embeddings.text import DEFAULT_FIELDS, embed_texts, item_texts
from onerec.embeddings.vectors import check_embeddings, fuse, load_vectors
from onerec.exceptions import EmbeddingError

logger = logging.getLogger("onerec.embeddings")
SOURCES = ("text", "attributes", "collaborative", "vectors")


@dataclass(frozen=True)
class EmbeddingConfig:
    """Which item representations to build and how to combine them."""

    sources: tuple[str, ...] = ("text",)
    text_fields: tuple[str, ...] | None = None
    attribute_column: str = "attributes"
    dim: int = 64  # attribute and collaborative embeddings
    window: int = 5  # collaborative co-occurrence window
    vectors_path: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    fused_dim: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.sources if s not in SOURCES]
        if not self.sources or unknown:
            raise EmbeddingError(f"sources must be a non-empty subset of {SOURCES}, got {self.sources}")
        if "vectors" in self.sources and not self.vectors_path:
            raise EmbeddingError("the 'vectors' source needs vectors_path (a .npy or .parquet file)")
        if self.dim < 1:
            raise EmbeddingError(f"dim must be >= 1, got {self.dim}")
        if self.fused_dim is not None and self.fused_dim < 1:
            raise EmbeddingError(f"fused_dim must be >= 1 or None (no PCA), got {self.fused_dim}")


def _cached(key: dict, compute: Callable[[], np.ndarray], use_cache: bool) -> np.ndarray:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "embeddings" / f"{key['source']}-{digest}.safetensors"
    if use_cache and path.exists():
        return load_file(path)["embeddings"]
    x = compute()
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a file of this process's own: runs caching the same embeddings at once do not collide
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
        save_file({"embeddings": np.ascontiguousarray(x)}, tmp)
        tmp.rename(path)
        logger.info("cached %s embeddings at %s", key["source"], path)
    return x


def _hash(*arrays: np.ndarray | bytes | str) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.encode() if isinstance(a, str) else a.tobytes() if isinstance(a, np.ndarray) else a)
    return h.hexdigest()


def content_source(dataset: Dataset) -> str:
    """The item-content source a dataset supports: "text" where its item table has a text field
    (title, description, ...), else "attributes" (for example Beauty's category lists)."""
    return "text" if any(f in dataset.item_table.columns for f in DEFAULT_FIELDS) else "attributes"


def item_embeddings(
    dataset: Dataset,
    config: EmbeddingConfig = EmbeddingConfig(),
    *,
    split: Split | None = None,
    use_cache: bool = True,
    device: str | None = None,
) -> np.ndarray:
    """``(num_items, dim)`` float32 item embeddings for ``dataset``'s catalog."""
    blocks: dict[str, np.ndarray] = {}
    items = dataset.item_table
    for source in config.sources:
        if source == "text":
            texts = item_texts(items, config.text_fields)
            empty = sum(1 for t in texts if not t)
            if empty:
                logger.warning("%d of %d items have no text", empty, len(texts))
            key = {"source": "text", "model": "all-MiniLM-L6-v2", "texts": _hash("\x00".join(texts))}
            blocks[source] = _cached(key, lambda: embed_texts(texts, device=device), use_cache)
        elif source == "attributes":
            if config.attribute_column not in items.columns:
                raise EmbeddingError(
                    f"no attribute column {config.attribute_column!r}; the item table has "
                    f"{items.columns}"
                )
            attrs = items.attributes(config.attribute_column)
            key = {"source": "attributes", "dim": config.dim, "seed": config.seed,
                   "attrs": _hash(json.dumps(attrs, default=str))}
            blocks[source] = _cached(
                key, lambda: attribute_embeddings(attrs, config.dim, config.seed), use_cache
            )
        elif source == "collaborative":
            if split is None:
                raise EmbeddingError(
                    "collaborative embeddings are learned from the training split only: pass split="
                )
            seqs = split.train_sequences()
            key = {"source": "collaborative", "dim": config.dim, "window": config.window,
                   "seed": config.seed, "train": _hash(seqs.values, seqs.offsets)}
            blocks[source] = _cached(
                key,
                lambda: cooccurrence_embeddings(
                    seqs, dataset.num_items, config.dim, config.window, config.seed
                ),
                use_cache,
            )
        else:
            p = Path(config.vectors_path or "")
            blocks[source] = load_vectors(p, dataset.log.items)
    if len(blocks) == 1 and config.fused_dim is None:
        return check_embeddings(next(iter(blocks.values())), dataset.num_items)
    return fuse(blocks, config.weights, config.fused_dim, config.seed)
