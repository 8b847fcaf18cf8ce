"""Item vectors a user brings (.npy rows in item-index order, or Parquet keyed by item id),
checked and aligned to the catalog; and the fusion of several embeddings into one."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from onerec.data.schema import IdMap
from onerec.exceptions import EmbeddingError


def check_embeddings(x: np.ndarray, num_items: int | None = None, name: str = "embeddings") -> np.ndarray:
    """A finite 2-D float32 array with one row per item, or a named error saying what is off."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise EmbeddingError(f"{name}: expected a 2-D array (items, dim), got shape {x.shape}")
    if num_items is not None and x.shape[0] != num_items:
        raise EmbeddingError(
            f"{name}: {x.shape[0]} rows for a catalog of {num_items} items; row i must be item "
            "index i (or use a Parquet file keyed by item id)"
        )
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise EmbeddingError(
            f"{name}: {int(bad.sum())} rows hold NaN or infinite values (first: row "
            f"{int(np.flatnonzero(bad)[0])}); fix or drop those items' vectors"
        )
    return x.astype(np.float32, copy=False)


def load_vectors(path: str | Path, items: IdMap, column: str | None = None) -> np.ndarray:
    """``(len(items), dim)`` vectors from ``.npy`` (rows in item-index order) or ``.parquet``
    (an ``id`` column and one list/fixed-size-list column, or several float columns)."""
    p = Path(path)
    if p.suffix not in (".npy", ".parquet"):
        raise EmbeddingError(f"{p.name}: expected a .npy or .parquet file of item vectors")
    if not p.is_file():
        raise EmbeddingError(f"{p}: no such file of item vectors (--vectors)")
    try:  # never unpickled: an .npy of objects is refused
        data = np.load(p, allow_pickle=False) if p.suffix == ".npy" else pq.read_table(p)
    except (ValueError, OSError, EOFError, pa.ArrowException) as e:
        raise EmbeddingError(f"{p}: cannot read it as {p.suffix[1:]} item vectors ({e})") from None
    if p.suffix == ".npy":
        return check_embeddings(data, len(items), p.name)
    table = data
    if "id" not in table.column_names:
        raise EmbeddingError(f"{p.name}: needs an 'id' column naming each row's item")
    rows = items.index(table.column("id").to_numpy(zero_copy_only=False), path=p)
    others = [c for c in table.column_names if c != "id"]
    col_name = column or (others[0] if len(others) == 1 else None)
    if col_name is not None:
        col = table.column(col_name).combine_chunks()
        if not (pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type)):
            raise EmbeddingError(f"{p.name}: column {col_name!r} is {col.type}, not a vector")
        lengths = set(pa.compute.list_value_length(col).to_numpy().tolist())
        if len(lengths) != 1:
            raise EmbeddingError(f"{p.name}: vectors of different lengths {sorted(lengths)[:5]}")
        vecs = col.flatten().to_numpy().reshape(len(col), lengths.pop())
    else:
        vecs = np.stack([table.column(c).to_numpy() for c in others], axis=1)
    if len(np.unique(rows)) != len(rows):
        raise EmbeddingError(f"{p.name}: some item ids appear twice")
    if len(rows) != len(items):
        raise EmbeddingError(
            f"{p.name}: vectors for {len(rows)} of {len(items)} items; every item needs one"
        )
    out = np.empty((len(items), vecs.shape[1]), dtype=np.float32)
    out[rows] = vecs
    return check_embeddings(out, len(items), p.name)


def fuse(
    blocks: Mapping[str, np.ndarray],
    weights: Mapping[str, float] | None = None,
    dim: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """One embedding from several: each block centered and scaled to unit mean row norm, times
    ``sqrt(weight)``, concatenated; then optionally projected to ``dim`` by PCA.

    Normalizing per block keeps a 384-d text vector from drowning a 64-d collaborative one.
    """
    if not blocks:
        raise EmbeddingError("nothing to fuse")
    n = {name: b.shape[0] for name, b in blocks.items()}
    if len(set(n.values())) != 1:
        raise EmbeddingError(f"blocks have different item counts: {n}")
    parts = []
    for name, block in blocks.items():
        x = check_embeddings(block, name=name).astype(np.float64)
        x = x - x.mean(0)
        scale = np.linalg.norm(x, axis=1).mean()
        w = (weights or {}).get(name, 1.0)
        if w < 0:
            raise EmbeddingError(f"weight of {name!r} must be >= 0, got {w}")
        parts.append(x / max(scale, 1e-12) * np.sqrt(w))
    fused = np.concatenate(parts, axis=1)
    if dim is not None and dim < fused.shape[1]:
        torch.manual_seed(seed)
        u, s, _ = torch.pca_lowrank(torch.from_numpy(fused), q=dim, center=True, niter=4)
        fused = (u * s).numpy()
    return fused.astype(np.float32)
