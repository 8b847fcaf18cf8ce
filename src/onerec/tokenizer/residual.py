"""Residual k-means semantic IDs (OneRec's tokenizer, "RQ-Kmeans").

Level 1 clusters the item embeddings into K_1 clusters; each item's centroid is subtracted; level
2 clusters what is left into K_2 clusters; and so on for L levels. An item's semantic ID is its
cluster at every level, coarse to fine, so similar items share prefixes. With ``balanced=True``
every level uses balanced k-means (equal cluster sizes), as in the paper, so every code is used.

Two items can still end up with the same L codes. ``SemanticIds`` makes every sequence unique by
appending one more code that numbers the items within each colliding group (TIGER's fix), and
answers item -> codes and codes -> item in both directions.

Files (never pickle): ``codebooks.safetensors`` holds the centroids of every level;
``quantizer.json`` the config, fit statistics and quality report; ``semantic_ids.json`` the
item -> codes table and its collision report.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from onerec.exceptions import (
    CodeCollisionError,
    CodeError,
    ConfigError,
    EmbeddingShapeError,
    NotFittedError,
    TooFewItemsError,
)
from onerec.tokenizer.kmeans import as_embeddings, balanced_kmeans, kmeans, nearest_centroids
from onerec.tokenizer.trie import SemanticIdTrie, as_code_table, lexsort_rows

DEDUP_MODES = ("suffix", "always", "error")


def default_codebook_size(n_items: int, levels: int, *, margin: int = 1000, cap: int = 8192) -> int:
    """A codebook size K (a power of two) for ``n_items`` items and ``levels`` levels.

    The smallest power of two with K^L >= margin * N, capped at ``cap`` and at N itself.

    Why: K^L is the number of distinct code sequences. If codes were spread uniformly, about
    N / (2 K^L) of the items would collide, so K^L must exceed N by a wide margin; real residual
    codes are far from uniform, hence the factor 1000. A larger K is not free: each level's
    codes are a softmax vocabulary for the decoder and each cluster holds only N / K items.
    The rule gives 256 for ~12k items (TIGER's 3 x 256 on Amazon Beauty) and 4096 for 1e7
    items with L = 3, next to the paper's 3 x 8192 for Kuaishou's catalog (the cap).
    """
    if n_items < 1 or levels < 1:
        raise ConfigError(f"need n_items >= 1 and levels >= 1, got {n_items} and {levels}")
    k = 2 ** math.ceil(math.log2((margin * n_items) ** (1.0 / levels)) - 1e-9)
    largest_fitting = 2 ** int(math.floor(math.log2(n_items)))  # K <= N, still a power of two
    return int(max(1, min(k, cap, largest_fitting)))


@dataclass
class ResidualQuantizerConfig:
    """How to build semantic IDs.

    ``codebook_size``: one K for every level, one per level, or None for
    :func:`default_codebook_size` of the catalog at fit time. ``dedup``: how colliding items are
    told apart (see :meth:`SemanticIds.from_codes`): "suffix" appends a code only if some items
    collide, "always" appends one even when none do (every catalog then gets L + 1 codes, so a
    model's sequence layout does not depend on the data), "error" raises instead.
    """

    levels: int = 3
    codebook_size: int | Sequence[int] | None = 256
    balanced: bool = True
    iters: int = 50
    seed: int = 0
    dedup: str = "suffix"
    tol: float = 1e-4

    def __post_init__(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 1:
            raise ConfigError(f"levels must be an int >= 1, got {self.levels!r}")
        if isinstance(self.codebook_size, (list, tuple)):
            sizes = list(self.codebook_size)
            if len(sizes) != self.levels:
                raise ConfigError(
                    f"codebook_size has {len(sizes)} entries but levels = {self.levels}"
                )
            self.codebook_size = tuple(sizes)
        elif self.codebook_size is not None:
            sizes = [self.codebook_size]
        else:
            sizes = []
        for k in sizes:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ConfigError(f"codebook sizes must be ints >= 1, got {self.codebook_size!r}")
        if isinstance(self.iters, bool) or not isinstance(self.iters, int) or self.iters < 1:
            raise ConfigError(f"iters must be an int >= 1, got {self.iters!r}")
        if self.dedup not in DEDUP_MODES:
            raise ConfigError(f"dedup must be one of {DEDUP_MODES}, got {self.dedup!r}")
        if not (isinstance(self.tol, (int, float)) and self.tol >= 0):
            raise ConfigError(f"tol must be a number >= 0, got {self.tol!r}")
        if not isinstance(self.balanced, bool):
            raise ConfigError(f"balanced must be True or False, got {self.balanced!r}")

    def sizes(self, n_items: int) -> list[int]:
        """The codebook size of every level for a catalog of ``n_items``."""
        if self.codebook_size is None:
            return [default_codebook_size(n_items, self.levels)] * self.levels
        if isinstance(self.codebook_size, int):
            return [self.codebook_size] * self.levels
        return list(self.codebook_size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if isinstance(d["codebook_size"], tuple):
            d["codebook_size"] = list(d["codebook_size"])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResidualQuantizerConfig":
        return cls(**d)


# --- unique semantic IDs ------------------------------------------------------------------------


@dataclass
class SemanticIds:
    """Every item's unique code sequence: ``codes[i]`` (L' codes) names item i and only it.

    ``base_levels`` (L) codes come from the quantizer; when ``codes`` has L + 1 columns, the
    last one numbers the items within each group that shares all L codes (0, 1, 2, ... by item
    id), and its level size is the largest group.
    """

    codes: Tensor  # (N, L') int64
    level_sizes: list[int]  # L' entries
    base_levels: int  # L
    collision_rate_before: float  # fraction of items sharing their L codes with another item
    collision_rate_after: float = 0.0  # the same for the L' codes: 0 by construction
    _trie: SemanticIdTrie | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_codes(
        cls, codes: Any, level_sizes: Sequence[int], dedup: str = "suffix"
    ) -> "SemanticIds":
        """Unique IDs from the quantizer's (N, L) codes; ``dedup`` as in the config."""
        if dedup not in DEDUP_MODES:
            raise ConfigError(f"dedup must be one of {DEDUP_MODES}, got {dedup!r}")
        codes = as_code_table(codes, level_sizes)
        n, depth = codes.shape
        if n == 0:
            raise CodeError("no items: the code table is empty")
        # Group identical rows: sort rows, mark where a new sequence starts.
        order = lexsort_rows(codes)
        sc = codes[order]
        starts_group = torch.ones(n, dtype=torch.bool, device=codes.device)
        starts_group[1:] = (sc[1:] != sc[:-1]).any(dim=1)
        group = torch.cumsum(starts_group, 0) - 1  # group of each sorted row
        size = torch.bincount(group)
        first = torch.nonzero(starts_group).flatten()
        rank_sorted = torch.arange(n, device=codes.device) - first[group]  # by item id: stable sort
        rank = torch.empty_like(rank_sorted)
        rank[order] = rank_sorted
        colliding = int((size[group] > 1).sum())
        before = colliding / n
        largest = int(size.max())
        if dedup == "error" and colliding:
            raise CodeCollisionError(
                f"{colliding} of {n} items share their full code with another item (largest "
                f"group: {largest}). Fix: use dedup='suffix', more levels or larger codebooks."
            )
        sizes = [int(s) for s in level_sizes]
        if colliding or dedup == "always":
            codes = torch.cat([codes, rank.unsqueeze(1)], dim=1)
            sizes.append(largest)
        return cls(codes, sizes, depth, before, 0.0)

    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_levels(self) -> int:
        return int(self.codes.shape[1])

    @property
    def trie(self) -> SemanticIdTrie:
        """The prefix trie of all sequences (built on first use, on the codes' device)."""
        if self._trie is None:
            self._trie = SemanticIdTrie(self.codes, self.level_sizes)
        return self._trie

    def item_to_codes(self, items: Any) -> Tensor:
        """(B, L') code sequences of the given item ids."""
        items = torch.as_tensor(items, dtype=torch.int64, device=self.codes.device)
        if items.numel() and bool(((items < 0) | (items >= self.n_items)).any()):
            raise CodeError(f"item ids must be in [0, {self.n_items})")
        return self.codes[items]

    def codes_to_item(self, codes: Any, *, strict: bool = True) -> Tensor:
        """(B,) item of every code sequence (B, L'); unknown: raise, or -1 if not ``strict``."""
        codes = torch.as_tensor(codes, dtype=torch.int64, device=self.codes.device)
        items = self.trie.lookup(codes)
        if strict and bool((items < 0).any()):
            row = int(torch.nonzero(items < 0)[0])
            raise CodeError(f"code sequence {codes[row].tolist()} (row {row}) names no item")
        return items

    def to(self, device: torch.device | str) -> "SemanticIds":
        trie = self._trie.to(device) if self._trie is not None else None
        return SemanticIds(
            self.codes.to(device), list(self.level_sizes), self.base_levels,
            self.collision_rate_before, self.collision_rate_after, trie,
        )  # fmt: skip

    # --- files ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "onerec.semantic_ids/1",
            "n_items": self.n_items,
            "level_sizes": self.level_sizes,
            "base_levels": self.base_levels,
            "collision_rate_before": self.collision_rate_before,
            "collision_rate_after": self.collision_rate_after,
            "codes": self.codes.cpu().tolist(),  # row i = item i
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SemanticIds":
        codes = torch.tensor(d["codes"], dtype=torch.int64).reshape(d["n_items"], -1)
        codes = as_code_table(codes, d["level_sizes"], "semantic_ids.json codes")
        return cls(
            codes, list(d["level_sizes"]), int(d["base_levels"]),
            float(d["collision_rate_before"]), float(d["collision_rate_after"]),
        )  # fmt: skip

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SemanticIds":
        return cls.from_dict(json.loads(Path(path).read_text()))


# --- the quantizer ------------------------------------------------------------------------------


class ResidualKMeansQuantizer:
    """``fit(x)`` learns L codebooks; ``semantic_ids`` are the catalog's unique IDs;
    ``encode(x)`` codes new items; ``decode(codes)`` reconstructs embeddings."""

    def __init__(self, config: ResidualQuantizerConfig | None = None) -> None:
        self.config = config or ResidualQuantizerConfig()
        self.codebooks: list[Tensor] = []  # level l: (K_l, D) float32
        self.semantic_ids: SemanticIds | None = None
        self.fit_stats: list[dict[str, Any]] = []  # per level: size, iterations, inertia

    # --- state ------------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return bool(self.codebooks)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError("the quantizer has no codebooks yet: call fit(x) or load(dir)")

    @property
    def dim(self) -> int:
        self._require_fitted()
        return int(self.codebooks[0].shape[1])

    @property
    def level_sizes(self) -> list[int]:
        return [int(b.shape[0]) for b in self.codebooks]

    def to(self, device: torch.device | str) -> "ResidualKMeansQuantizer":
        """Move codebooks and IDs to ``device`` (in place, like ``nn.Module.to``)."""
        self.codebooks = [b.to(device) for b in self.codebooks]
        if self.semantic_ids is not None:
            self.semantic_ids = self.semantic_ids.to(device)
        return self

    # --- fit / encode / decode ------------------------------------------------------------------
    def fit(self, x: Any, progress: bool = False) -> "ResidualKMeansQuantizer":
        """Learn one codebook per level on the residuals of the level before.

        The catalog's codes are the (balanced) k-means assignments themselves, not a nearest-
        centroid re-encoding, so every level stays exactly balanced; ``semantic_ids`` holds them
        made unique. ``progress`` is accepted so that every quantizer fits alike; this one takes
        seconds and shows no bar.
        """
        c = self.config
        x = as_embeddings(x)
        n = x.shape[0]
        sizes = c.sizes(n)
        for level, k in enumerate(sizes):
            if k > n:
                raise TooFewItemsError(
                    f"level {level} has codebook_size {k} but the catalog has only {n} items. "
                    f"Fix: codebook_size=None picks {default_codebook_size(n, c.levels)} here."
                )
        cluster = balanced_kmeans if c.balanced else kmeans
        residual = x.clone()
        codes = torch.empty(n, c.levels, dtype=torch.int64, device=x.device)
        books, stats = [], []
        for level, k in enumerate(sizes):
            r = cluster(residual, k, iters=c.iters, tol=c.tol, seed=c.seed + level)
            codes[:, level] = r.labels
            residual -= r.centroids[r.labels]
            books.append(r.centroids)
            stats.append({"level": level, "size": k, "n_iter": r.n_iter, "inertia": r.inertia})
        self.codebooks, self.fit_stats = books, stats
        self.semantic_ids = SemanticIds.from_codes(codes, sizes, c.dedup)
        return self

    def encode(self, x: Any) -> Tensor:
        """(N, L) codes of new items: the nearest centroid at every level, greedily.

        Not exactly balanced (no capacities for new items), and for catalog items it may differ
        from ``semantic_ids``, which keeps the balanced assignment made at fit time.
        """
        self._require_fitted()
        x = as_embeddings(x).to(self.codebooks[0].device)
        if x.shape[1] != self.dim:
            raise EmbeddingShapeError(
                f"expected embeddings with {self.dim} columns (the dimension the quantizer was "
                f"fitted on), got {x.shape[1]}"
            )
        residual = x.clone()
        codes = torch.empty(x.shape[0], len(self.codebooks), dtype=torch.int64, device=x.device)
        for level, book in enumerate(self.codebooks):
            codes[:, level] = nearest_centroids(residual, book, 1)[1][:, 0]
            residual -= book[codes[:, level]]
        return codes

    def decode(self, codes: Any) -> Tensor:
        """(N, D) reconstruction: the sum of the chosen centroids of the first L levels.

        Accepts (N, L) codes or (N, L + 1) semantic IDs (the disambiguating code is ignored).
        """
        self._require_fitted()
        levels = len(self.codebooks)
        codes = torch.as_tensor(codes, device=self.codebooks[0].device)
        if codes.ndim != 2 or codes.shape[1] not in (levels, levels + 1):
            raise CodeError(
                f"expected codes of shape (N, {levels}) or (N, {levels + 1}), "
                f"got {tuple(codes.shape)}"
            )
        codes = as_code_table(codes[:, :levels], self.level_sizes)
        out = torch.zeros(codes.shape[0], self.dim, device=codes.device)
        for level, book in enumerate(self.codebooks):
            out += book[codes[:, level]]
        return out

    # --- files ------------------------------------------------------------------------------
    def save(self, directory: str | Path, report: "QualityReport | None" = None) -> Path:
        """Write codebooks.safetensors, quantizer.json and semantic_ids.json into ``directory``."""
        self._require_fitted()
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        save_file(
            {f"level_{i}": b.detach().cpu().contiguous() for i, b in enumerate(self.codebooks)},
            str(out / "codebooks.safetensors"),
        )
        meta = {
            "format": "onerec.residual_kmeans/1",
            "config": self.config.to_dict(),
            "dim": self.dim,
            "level_sizes": self.level_sizes,
            "fit_stats": self.fit_stats,
            "report": report.to_dict() if report is not None else None,
        }
        (out / "quantizer.json").write_text(json.dumps(meta, indent=2))
        if self.semantic_ids is not None:
            self.semantic_ids.save(out / "semantic_ids.json")
        return out

    @classmethod
    def load(
        cls, directory: str | Path, device: torch.device | str = "cpu"
    ) -> "ResidualKMeansQuantizer":
        """A quantizer saved by :meth:`save`, with its semantic IDs, on ``device``."""
        path = Path(directory)
        meta = json.loads((path / "quantizer.json").read_text())
        q = cls(ResidualQuantizerConfig.from_dict(meta["config"]))
        tensors = load_file(str(path / "codebooks.safetensors"))
        q.codebooks = [tensors[f"level_{i}"] for i in range(len(meta["level_sizes"]))]
        q.fit_stats = meta.get("fit_stats", [])
        if (path / "semantic_ids.json").exists():
            q.semantic_ids = SemanticIds.load(path / "semantic_ids.json")
        return q.to(device)


# --- quality ------------------------------------------------------------------------------------


@dataclass
class LevelQuality:
    """How one level's codebook is used by the catalog."""

    size: int  # K
    used: int  # codes held by at least one item
    utilization: float  # used / K
    entropy_bits: float  # entropy of the code distribution
    entropy_normalized: float  # entropy_bits / log2(K): 1.0 means perfectly even use
    largest: int  # items in the largest cluster
    smallest: int  # items in the smallest cluster (0 when a code is unused)


@dataclass
class QualityReport:
    """Tokenizer quality: codebook use, collisions, reconstruction, and semantic locality."""

    n_items: int
    levels: list[LevelQuality]
    collision_rate_before: float
    collision_rate_after: float
    mse: float  # mean over items and dimensions of (x - sum of chosen centroids)^2
    relative_error: float  # ||x - x_hat||^2 / ||x||^2 over the catalog
    same_prefix_distance: float  # mean ||x_i - x_j|| for items sharing their first code
    random_pair_distance: float  # mean ||x_i - x_j|| for random pairs of items

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quality_report(
    quantizer: ResidualKMeansQuantizer,
    x: Any,
    semantic_ids: SemanticIds | None = None,
    *,
    n_pairs: int = 10_000,
    seed: int = 0,
) -> QualityReport:
    """Measure how good the semantic IDs of the items ``x`` are.

    ``semantic_ids`` are the IDs of exactly these items (default: the quantizer's own when ``x``
    is its catalog, else ``encode(x)`` made unique). The semantic check samples ``n_pairs``
    pairs of items that share their first code, and as many random pairs: similar items should
    share prefixes, so the first distance should be clearly smaller.
    """
    quantizer._require_fitted()
    x = as_embeddings(x).to(quantizer.codebooks[0].device)
    n = x.shape[0]
    if semantic_ids is None:
        own = quantizer.semantic_ids
        if own is not None and own.n_items == n:
            semantic_ids = own
        else:
            semantic_ids = SemanticIds.from_codes(
                quantizer.encode(x), quantizer.level_sizes, quantizer.config.dedup
            )
    if semantic_ids.n_items != n:
        raise CodeError(f"semantic_ids has {semantic_ids.n_items} items but x has {n} rows")
    codes = semantic_ids.codes[:, : semantic_ids.base_levels].to(x.device)

    levels = []
    for level, k in enumerate(quantizer.level_sizes):
        counts = torch.bincount(codes[:, level], minlength=k).double()
        p = counts[counts > 0] / n
        entropy = float(-(p * p.log2()).sum())
        levels.append(
            LevelQuality(
                size=k, used=int((counts > 0).sum()), utilization=float((counts > 0).sum()) / k,
                entropy_bits=entropy, entropy_normalized=entropy / math.log2(k) if k > 1 else 1.0,
                largest=int(counts.max()), smallest=int(counts.min()),
            )
        )  # fmt: skip

    err = x - quantizer.decode(codes)
    sq_err = float((err.double() ** 2).sum())
    mse = sq_err / x.numel()
    relative = sq_err / max(float((x.double() ** 2).sum()), 1e-30)

    same, rand = _pair_distances(x, codes[:, 0], n_pairs, seed)
    return QualityReport(
        n, levels, semantic_ids.collision_rate_before, semantic_ids.collision_rate_after,
        mse, relative, same, rand,
    )  # fmt: skip


def _pair_distances(x: Tensor, first: Tensor, n_pairs: int, seed: int) -> tuple[float, float]:
    """Mean distance of sampled same-first-code pairs and of random pairs (NaN if none exist)."""
    gen = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    first = first.cpu()
    if n < 2:
        return float("nan"), float("nan")
    # random pairs i != j
    i = torch.randint(n, (n_pairs,), generator=gen)
    j = torch.randint(n - 1, (n_pairs,), generator=gen)
    j += (j >= i).long()
    rand = float((x[i.to(x.device)] - x[j.to(x.device)]).norm(dim=1).mean())
    # same-first-code pairs: i from a group of >= 2, j another member of i's group
    order = torch.sort(first, stable=True).indices
    size = torch.bincount(first)
    start = torch.cumsum(size, 0) - size
    eligible = torch.nonzero(size[first] >= 2).flatten()
    if eligible.numel() == 0:
        return float("nan"), rand
    i = eligible[torch.randint(eligible.numel(), (n_pairs,), generator=gen)]
    g = first[i]
    pos_i = torch.empty(n, dtype=torch.int64)
    pos_i[order] = torch.arange(n)
    off = (torch.rand(n_pairs, generator=gen, dtype=torch.float64) * (size[g] - 1)).long()
    off += (off >= pos_i[i] - start[g]).long()  # skip i itself
    j = order[start[g] + off]
    same = float((x[i.to(x.device)] - x[j.to(x.device)]).norm(dim=1).mean())
    return same, rand
