"""Item embeddings from sparse counts: attributes (TF-IDF) and co-occurrence (PPMI), each
reduced to a dense vector by a truncated SVD. Both are the classic, training-free ways to put
items that share attributes, or that the same users consume, close together."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from onerec.data.ragged import Ragged
from onerec.exceptions import EmbeddingError


def _svd_embed(matrix: torch.Tensor, dim: int, seed: int) -> np.ndarray:
    """Rows of ``U * sqrt(S)`` from a rank-``dim`` randomized SVD (deterministic by seed)."""
    n_rows, n_cols = matrix.shape
    dim = min(dim, n_rows, n_cols)
    if dim < 1:
        raise EmbeddingError(f"cannot embed a {n_rows} x {n_cols} matrix")
    torch.manual_seed(seed)  # svd_lowrank draws its random projection from the global generator
    u, s, _ = torch.svd_lowrank(matrix, q=min(dim + 10, n_rows, n_cols), niter=4)
    u, s = u[:, :dim], s[:dim]
    # fix each component's sign so that results do not flip between runs or machines
    signs = torch.sign(u[u.abs().argmax(0), torch.arange(u.shape[1])])
    emb = (u * signs) * s.sqrt()
    return emb.float().numpy()


def attribute_embeddings(
    attributes: Sequence[Sequence[Any]], dim: int = 64, seed: int = 0
) -> np.ndarray:
    """``(n_items, dim)`` from attribute lists: multi-hot -> TF-IDF (smooth idf, unit rows) ->
    truncated SVD. Items without attributes get the zero vector."""
    vocab: dict[Any, int] = {}
    rows, cols = [], []
    for i, attrs in enumerate(attributes):
        for a in set(attrs):
            rows.append(i)
            cols.append(vocab.setdefault(a, len(vocab)))
    if not vocab:
        raise EmbeddingError("no item has any attribute")
    n, v = len(attributes), len(vocab)
    r, c = torch.tensor(rows), torch.tensor(cols)
    df = torch.bincount(c, minlength=v).double()
    idf = torch.log((1 + n) / (1 + df)) + 1
    vals = idf[c]
    norms = torch.zeros(n, dtype=torch.float64).index_add_(0, r, vals**2).sqrt()
    vals = vals / norms[r]
    m = torch.sparse_coo_tensor(torch.stack([r, c]), vals, (n, v), check_invariants=True).coalesce()
    return _svd_embed(m, dim, seed)


def cooccurrence_embeddings(
    sequences: Ragged, num_items: int, dim: int = 64, window: int = 5, seed: int = 0
) -> np.ndarray:
    """``(num_items, dim)`` collaborative embeddings: positive PMI of items that occur within
    ``window`` positions of each other in the *training* sequences, then truncated SVD.

    Pass only training sequences (``split.train_sequences()``): anything from validation or test
    would leak the targets into the item codes.
    """
    if window < 1:
        raise EmbeddingError(f"window must be >= 1, got {window}")
    if len(sequences.values) and sequences.values.max() >= num_items:
        raise EmbeddingError(f"an item index exceeds num_items={num_items}")
    vals, row = sequences.values, sequences.row_ids
    src, dst = [], []
    for lag in range(1, window + 1):
        same = row[lag:] == row[:-lag]
        a, b = vals[:-lag][same], vals[lag:][same]
        src += [a, b]
        dst += [b, a]
    if not src or sum(len(s) for s in src) == 0:
        raise EmbeddingError("no co-occurring pairs: sequences are too short for the window")
    s, d = np.concatenate(src), np.concatenate(dst)
    key = s * num_items + d
    uniq, counts = np.unique(key, return_counts=True)
    s, d = uniq // num_items, uniq % num_items
    counts = counts.astype(np.float64)
    total = counts.sum()
    item_count = np.bincount(s, weights=counts, minlength=num_items)
    pmi = np.log(counts * total / (item_count[s] * item_count[d]))
    keep = pmi > 0
    m = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([s[keep], d[keep]])),
        torch.from_numpy(pmi[keep]),
        (num_items, num_items),
        check_invariants=True,
    ).coalesce()
    return _svd_embed(m, dim, seed)
