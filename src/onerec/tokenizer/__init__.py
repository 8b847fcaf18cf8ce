"""Semantic-ID tokenizer: items -> short code sequences (balanced residual k-means), made unique,
with a prefix trie for constrained decoding."""

from onerec.tokenizer.kmeans import (
    KMeansResult,
    balanced_assign,
    balanced_capacities,
    balanced_kmeans,
    kmeans,
    nearest_centroids,
)
from onerec.tokenizer.residual import (
    LevelQuality,
    QualityReport,
    ResidualKMeansQuantizer,
    ResidualQuantizerConfig,
    SemanticIds,
    default_codebook_size,
    quality_report,
)
from onerec.tokenizer.trie import SemanticIdTrie

__all__ = [
    "KMeansResult",
    "LevelQuality",
    "QualityReport",
    "ResidualKMeansQuantizer",
    "ResidualQuantizerConfig",
    "SemanticIdTrie",
    "SemanticIds",
    "balanced_assign",
    "balanced_capacities",
    "balanced_kmeans",
    "default_codebook_size",
    "kmeans",
    "nearest_centroids",
    "quality_report",
]
