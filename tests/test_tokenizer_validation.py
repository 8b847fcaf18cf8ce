"""Bad inputs to the tokenizer raise named errors that say what was expected."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from onerec.exceptions import (
    CodeError,
    ConfigError,
    EmbeddingError,
    EmbeddingShapeError,
    EmptyCatalogError,
    NonFiniteEmbeddingError,
    NotFittedError,
    OneRecError,
    TokenizerError,
    TooFewItemsError,
)
from onerec.tokenizer import (
    ResidualKMeansQuantizer,
    ResidualQuantizerConfig,
    SemanticIds,
    balanced_kmeans,
    kmeans,
)

CLUSTERERS = [kmeans, balanced_kmeans]


def small_quantizer(n: int = 64, dim: int = 4) -> tuple[ResidualKMeansQuantizer, torch.Tensor]:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    config = ResidualQuantizerConfig(levels=2, codebook_size=4, iters=5)
    return ResidualKMeansQuantizer(config).fit(x), x


@pytest.mark.parametrize("fn", CLUSTERERS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_vectors(fn, bad):
    x = torch.randn(20, 3)
    x[7, 1] = bad
    with pytest.raises(NonFiniteEmbeddingError, match="row 7"):
        fn(x, 2)
    with pytest.raises(NonFiniteEmbeddingError):
        ResidualKMeansQuantizer(ResidualQuantizerConfig(levels=1, codebook_size=2)).fit(x)


def test_float64_overflow_is_caught():
    x = np.ones((10, 2))
    x[3, 0] = 1e300  # finite in float64, inf in float32
    with pytest.raises(NonFiniteEmbeddingError):
        kmeans(x, 2)


@pytest.mark.parametrize("fn", CLUSTERERS)
def test_cluster_count(fn):
    x = torch.randn(5, 3)
    with pytest.raises(TooFewItemsError, match="6 clusters but there are only 5"):
        fn(x, 6)
    for k in (0, -1):
        with pytest.raises(ConfigError, match=">= 1"):
            fn(x, k)
    with pytest.raises(ConfigError):
        fn(x, 2.5)
    with pytest.raises(TooFewItemsError):
        ResidualKMeansQuantizer(ResidualQuantizerConfig(codebook_size=8)).fit(x)


@pytest.mark.parametrize("fn", CLUSTERERS)
def test_shapes(fn):
    with pytest.raises(EmptyCatalogError):
        fn(torch.zeros(0, 8), 1)
    with pytest.raises(EmptyCatalogError):
        fn(torch.zeros(5, 0), 1)
    with pytest.raises(EmbeddingShapeError, match=r"2-D input \(N, D\), got 3-D tensor with shape"):
        fn(torch.zeros(2, 3, 4), 1)
    with pytest.raises(EmbeddingShapeError, match="got 1-D"):
        fn(np.zeros(5), 1)
    with pytest.raises(EmbeddingShapeError):
        fn([["a", "b"]], 1)
    with pytest.raises(EmptyCatalogError):
        ResidualKMeansQuantizer().fit(np.zeros((0, 16)))


def test_bad_loop_settings():
    x = torch.randn(10, 2)
    with pytest.raises(ConfigError):
        kmeans(x, 2, iters=0)
    with pytest.raises(ConfigError):
        kmeans(x, 2, tol=-1.0)
    with pytest.raises(ConfigError):
        kmeans(x, 2, init="farthest")
    with pytest.raises(EmbeddingShapeError):
        kmeans(x, 2, init=torch.zeros(3, 2))
    with pytest.raises(ConfigError):
        balanced_kmeans(x, 2, n_candidates=0)


def test_encode_validates_its_input():
    q, _ = small_quantizer(dim=4)
    with pytest.raises(EmbeddingShapeError, match="4 columns"):
        q.encode(torch.randn(3, 5))
    with pytest.raises(NonFiniteEmbeddingError):
        q.encode(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    assert q.encode(np.zeros((2, 4))).shape == (2, 2)  # numpy works too


def test_not_fitted():
    q = ResidualKMeansQuantizer()
    for call in (lambda: q.encode(torch.zeros(2, 3)), lambda: q.decode([[0, 0, 0]]),
                 lambda: q.save("unused")):  # fmt: skip
        with pytest.raises(NotFittedError):
            call()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"levels": 0},
        {"levels": 2.0},
        {"codebook_size": 0},
        {"codebook_size": [8, 8]},  # 3 levels
        {"codebook_size": [8, 0, 8]},
        {"iters": 0},
        {"dedup": "bogus"},
        {"tol": -0.1},
        {"balanced": "yes"},
    ],
)
def test_bad_config_values(kwargs):
    with pytest.raises(ConfigError):
        ResidualQuantizerConfig(**kwargs)


def test_bad_codes():
    q, _ = small_quantizer()
    with pytest.raises(CodeError, match="outside"):
        q.decode(torch.tensor([[0, 4]]))  # level 1 has 4 codes: 0..3
    with pytest.raises(CodeError, match="shape"):
        q.decode(torch.tensor([[0, 1, 0, 0]]))
    with pytest.raises(CodeError, match="integer"):
        q.decode(torch.tensor([[0.0, 1.0]]))
    ids = q.semantic_ids
    with pytest.raises(CodeError, match="names no item"):
        ids.codes_to_item(torch.full((1, ids.n_levels), 0) - torch.eye(1, ids.n_levels).long())
    assert ids.codes_to_item(torch.full((1, ids.n_levels), -1), strict=False).tolist() == [-1]
    with pytest.raises(CodeError):
        ids.item_to_codes([ids.n_items])
    with pytest.raises(CodeError):
        SemanticIds.from_codes(torch.tensor([[0, 5]]), [2, 2])
    with pytest.raises(ConfigError):
        SemanticIds.from_codes(torch.tensor([[0, 1]]), [2, 2], dedup="nope")


def test_errors_belong_to_their_families():
    for cls in (EmbeddingShapeError, EmptyCatalogError, NonFiniteEmbeddingError):
        assert issubclass(cls, TokenizerError) and issubclass(cls, EmbeddingError)
    for cls in (TooFewItemsError, NotFittedError, CodeError):
        assert issubclass(cls, TokenizerError)
    assert issubclass(TokenizerError, OneRecError) and issubclass(TokenizerError, ValueError)
