"""The simulated catalog: videos with duration, author, tags, latent factors and a content vector.

Tags, durations and author sizes follow the KuaiRand-Pure distributions of :mod:`.calibration`.
An item's latent factors (what users respond to) mix its main tag's direction, a second tag's,
its author's style and its own; its content embedding (what the tokenizer reads, the
"multimodal" vector) is a random projection of those factors plus noise, so it correlates with
the factors without revealing them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onerec.data.schema import FeatureTable, IdMap
from onerec.simulator.calibration import (
    AUTHOR_SIZE_COUNTS,
    DURATION_QUANTILES_S,
    TAG_SHARES,
    TAGS_PER_VIDEO_SHARES,
)
from onerec.simulator.config import CatalogConfig


@dataclass(frozen=True)
class Catalog:
    """Per-item arrays, indexed by item ``0..num_items-1``; ``second_tag`` is -1 where none."""

    duration: np.ndarray  # (N,) float64 seconds
    author: np.ndarray  # (N,) int64
    main_tag: np.ndarray  # (N,) int64
    second_tag: np.ndarray  # (N,) int64, -1 = no second tag
    latent: np.ndarray  # (N, latent_dim) float64, unit rows: drives the response model
    content: np.ndarray  # (N, content_dim) float32: the embedding a tokenizer may read
    quality: np.ndarray  # (N,) float64 logit offset independent of the user
    popularity: np.ndarray  # (N,) float64 positive weights for the logging policy
    tag_shares: np.ndarray  # (T,) float64, sums to 1
    tag_directions: np.ndarray  # (T, latent_dim) float64 unit rows

    @property
    def num_items(self) -> int:
        return len(self.duration)

    @property
    def num_tags(self) -> int:
        return len(self.tag_shares)

    def content_signal_share(self) -> float:
        """Share of the content embedding's variance explained by the latent factors (a linear
        least-squares fit): how much of the truth the tokenizer's input carries."""
        x = self.latent - self.latent.mean(0)
        y = self.content.astype(np.float64) - self.content.mean(0)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        return float(1.0 - ((y - x @ coef) ** 2).sum() / (y**2).sum())

    def feature_table(self) -> FeatureTable:
        """The item table of a simulated :class:`Dataset`: what a real platform would know
        (duration, author, tags, main tag as ``category``, content embedding), never the latent
        factors or quality."""
        ids = IdMap(np.arange(self.num_items, dtype=np.int64), "item")
        pairs = zip(self.main_tag.tolist(), self.second_tag.tolist())
        tags = [[a] if b < 0 else [a, b] for a, b in pairs]
        return (
            FeatureTable.from_ids(ids)
            .with_column("duration", self.duration.astype(np.float32))
            .with_column("author", self.author)
            .with_column("category", self.main_tag)
            .with_column("tags", tags)
            .with_column("content", self.content)
        )


def stretch_shares(shares: tuple[float, ...] | np.ndarray, n: int) -> np.ndarray:
    """A rank-frequency curve resampled to ``n`` ranks (linear in log share), summing to 1."""
    src = np.log(np.asarray(shares, dtype=np.float64))
    x_src = (np.arange(len(src)) + 0.5) / len(src)
    x_new = (np.arange(n) + 0.5) / n
    out = np.exp(np.interp(x_new, x_src, src))
    return out / out.sum()


def sample_durations(rng: np.random.Generator, n: int) -> np.ndarray:
    """Durations in seconds by inverse CDF through the calibrated quantiles (log-linear)."""
    q = np.log(np.asarray(DURATION_QUANTILES_S))
    u = rng.random(n) * (len(q) - 1)
    return np.exp(np.interp(u, np.arange(len(q)), q))


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def make_catalog(config: CatalogConfig, rng: np.random.Generator) -> Catalog:
    """Draw a catalog; the same config and generator state give the same catalog."""
    c = config
    n, t, d = c.num_items, c.num_tags, c.latent_dim
    shares = stretch_shares(TAG_SHARES, t)

    # authors: sizes from KuaiRand's author-size histogram, until every item has an author
    size_p = np.asarray(AUTHOR_SIZE_COUNTS, dtype=np.float64)
    sizes = rng.choice(np.arange(1, len(size_p) + 1), size=n, p=size_p / size_p.sum())
    num_authors = int(np.searchsorted(np.cumsum(sizes), n) + 1)
    author = np.repeat(np.arange(num_authors, dtype=np.int64), sizes[:num_authors])[:n]

    # tags: an author mostly posts on one tag; about a quarter of videos carry a second tag
    author_tag = rng.choice(t, size=num_authors, p=shares)
    main_tag = np.where(
        rng.random(n) < c.author_tag_loyalty, author_tag[author], rng.choice(t, size=n, p=shares)
    ).astype(np.int64)
    main_tag = _cover_every_tag(main_tag, t, rng)
    two_tags = rng.random(n) < 1.0 - TAGS_PER_VIDEO_SHARES[0]
    second_tag = rng.choice(t, size=n, p=shares).astype(np.int64)
    second_tag = np.where(two_tags & (second_tag != main_tag), second_tag, -1)

    # latent factors: tag direction + second tag + author style + the item's own direction
    tag_dir = unit_rows(rng.standard_normal((t, d)))
    author_dir = unit_rows(rng.standard_normal((num_authors, d)))
    own_dir = unit_rows(rng.standard_normal((n, d)))
    second = np.where((second_tag >= 0)[:, None], tag_dir[np.maximum(second_tag, 0)], 0.0)
    latent = unit_rows(
        tag_dir[main_tag]
        + c.second_tag_weight * second
        + c.author_style * author_dir[author]
        + c.item_noise * own_dir
    )

    # content embedding: a norm-preserving random projection of the factors, plus noise
    if c.content_dim >= d:
        proj = np.linalg.qr(rng.standard_normal((c.content_dim, d)))[0].T  # (d, content_dim)
    else:
        proj = rng.standard_normal((d, c.content_dim)) / np.sqrt(c.content_dim)
    noise = rng.standard_normal((n, c.content_dim)) * (c.content_noise / np.sqrt(c.content_dim))
    content = (latent @ proj + noise).astype(np.float32)

    quality = rng.normal(0.0, c.quality_sd, n)
    return Catalog(
        duration=sample_durations(rng, n),
        author=author,
        main_tag=main_tag,
        second_tag=second_tag,
        latent=latent,
        content=content,
        quality=quality,
        popularity=np.exp(c.popularity_temperature * quality),
        tag_shares=shares,
        tag_directions=tag_dir,
    )


def _cover_every_tag(main_tag: np.ndarray, num_tags: int, rng: np.random.Generator) -> np.ndarray:
    """Move single videos from crowded tags to empty ones, so every tag has a video (the
    logging policy draws from a user's interest tags)."""
    main_tag = main_tag.copy()
    counts = np.bincount(main_tag, minlength=num_tags)
    for tag in np.flatnonzero(counts == 0):
        donors = np.flatnonzero(counts[main_tag] > 1)
        pick = donors[rng.integers(len(donors))]
        counts[main_tag[pick]] -= 1
        main_tag[pick] = tag
        counts[tag] += 1
    return main_tag
