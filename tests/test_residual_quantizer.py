"""Residual k-means semantic IDs: balance per level, determinism, unique IDs after collisions,
save/load, and the quality report."""

from __future__ import annotations

import json
import math

import pytest
import torch

from onerec.exceptions import CodeCollisionError
from onerec.tokenizer import (
    ResidualKMeansQuantizer,
    ResidualQuantizerConfig,
    SemanticIds,
    default_codebook_size,
    quality_report,
)


def blobs(
    n: int, dim: int = 16, n_blobs: int = 20, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points in ``n_blobs`` well-separated blobs, and the blob of every point."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_blobs, dim, generator=g) * 4
    blob = torch.randint(n_blobs, (n,), generator=g)
    return centers[blob] + torch.randn(n, dim, generator=g), blob


def clustered(n: int, dim: int = 16, n_blobs: int = 20, seed: int = 0) -> torch.Tensor:
    return blobs(n, dim, n_blobs, seed)[0]


def fit(x: torch.Tensor, **kw) -> ResidualKMeansQuantizer:
    kw.setdefault("levels", 3)
    kw.setdefault("codebook_size", 8)
    kw.setdefault("iters", 20)
    return ResidualKMeansQuantizer(ResidualQuantizerConfig(**kw)).fit(x)


@pytest.mark.parametrize("n", [512, 500])
def test_every_level_is_exactly_balanced(n):
    q = fit(clustered(n))
    base = q.semantic_ids.codes[:, :3]
    for level in range(3):
        sizes = torch.bincount(base[:, level], minlength=8)
        assert int(sizes.max() - sizes.min()) <= 1
        if n % 8 == 0:
            assert (sizes == n // 8).all()


def test_per_level_codebook_sizes_and_plain_kmeans(same_blob_rate):
    x, blob = blobs(300)
    q = fit(x, codebook_size=[16, 8, 4])
    assert q.level_sizes == [16, 8, 4]
    assert [b.shape for b in q.codebooks] == [(16, 16), (8, 16), (4, 16)]
    plain = fit(x, codebook_size=[16, 8, 4], balanced=False)
    ids = plain.semantic_ids
    assert ids.codes.shape[0] == 300 and ids.base_levels == 3
    # plain k-means codes, before the disambiguating code: every code of every level in use
    # (k-means re-seeds empty clusters), and the 20 blobs recovered (seeds 0-3: every pair of
    # items sharing their 3 codes is from one blob; constant or random codes: about 1 in 20)
    base = ids.codes[:, :3]
    assert [len(torch.unique(base[:, level])) for level in range(3)] == [16, 8, 4]
    assert same_blob_rate(base, blob) > 0.95
    # most blobs lie inside one first-level cluster (seeds 0-3: 98-100% of the items)
    majority = sum(int(torch.bincount(base[blob == b, 0]).max()) for b in blob.unique())
    assert majority >= 0.95 * len(x)


def test_fit_is_deterministic_under_a_seed():
    x = clustered(400)
    a, b = fit(x, seed=3), fit(x, seed=3)
    assert torch.equal(a.semantic_ids.codes, b.semantic_ids.codes)
    assert all(torch.equal(u, v) for u, v in zip(a.codebooks, b.codebooks))
    fit(x, seed=4)  # another seed may give other codes


def test_duplicated_embeddings_get_unique_codes():
    base = clustered(50, seed=1)
    x = base.repeat(4, 1)  # every embedding four times: items i, i+50, i+100, i+150
    q = fit(x, levels=2, codebook_size=4)
    ids = q.semantic_ids
    assert ids.collision_rate_before == 1.0  # every item shares its code with its copies
    assert ids.collision_rate_after == 0.0
    assert ids.n_levels == 3 and ids.level_sizes[-1] >= 4
    assert len(torch.unique(ids.codes, dim=0)) == len(x)
    items = torch.arange(len(x))
    assert torch.equal(ids.codes_to_item(ids.item_to_codes(items)), items)


def test_disambiguation_numbers_items_within_a_group_by_id():
    codes = torch.tensor([[1, 2], [0, 0], [1, 2], [1, 2], [0, 1]])
    ids = SemanticIds.from_codes(codes, [2, 3], dedup="suffix")
    assert ids.codes[:, 2].tolist() == [0, 0, 1, 2, 0]
    assert ids.level_sizes == [2, 3, 3]
    assert ids.collision_rate_before == pytest.approx(3 / 5)


def test_dedup_modes():
    unique = torch.tensor([[0, 1], [1, 0], [1, 1]])
    assert SemanticIds.from_codes(unique, [2, 2], "suffix").n_levels == 2
    always = SemanticIds.from_codes(unique, [2, 2], "always")
    assert always.n_levels == 3 and always.level_sizes == [2, 2, 1]
    assert always.codes[:, 2].tolist() == [0, 0, 0]
    with pytest.raises(CodeCollisionError):
        SemanticIds.from_codes(torch.tensor([[0, 1], [0, 1]]), [2, 2], "error")


def test_encode_decode():
    x = clustered(600)
    q = fit(x, codebook_size=16)
    codes = q.encode(x)
    assert codes.shape == (600, 3) and codes.dtype == torch.int64
    # nearest-centroid codes of the catalog mostly agree with the balanced assignment
    assert (codes[:, 0] == q.semantic_ids.codes[:, 0]).float().mean() > 0.8
    ids = q.semantic_ids.codes
    assert torch.equal(q.decode(ids), q.decode(ids[:, :3]))
    # every level removes error
    err = [float(((x - sum(q.codebooks[i][ids[:, i]] for i in range(lv))) ** 2).sum())
           for lv in range(1, 4)]  # fmt: skip
    assert err[0] > err[1] > err[2]


def test_save_load_round_trip(tmp_path):
    x = clustered(300)
    q = fit(x, codebook_size=8)
    report = quality_report(q, x)
    q.save(tmp_path, report=report)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "codebooks.safetensors", "quantizer.json", "semantic_ids.json",
    ]  # fmt: skip
    meta = json.loads((tmp_path / "quantizer.json").read_text())
    assert meta["report"]["collision_rate_after"] == 0.0
    back = ResidualKMeansQuantizer.load(tmp_path)
    assert back.config == q.config
    assert all(torch.equal(u, v) for u, v in zip(back.codebooks, q.codebooks))
    assert torch.equal(back.semantic_ids.codes, q.semantic_ids.codes)
    assert back.semantic_ids.level_sizes == q.semantic_ids.level_sizes
    assert torch.equal(back.encode(x), q.encode(x))
    ids = SemanticIds.load(q.semantic_ids.save(tmp_path / "ids.json"))
    assert torch.equal(ids.codes_to_item(ids.codes), torch.arange(300))


def test_quality_report():
    x = clustered(640, n_blobs=8)
    q = fit(x, codebook_size=8)
    r = quality_report(q, x)
    assert r.n_items == 640 and len(r.levels) == 3
    for lv in r.levels:
        assert lv.utilization == 1.0 and lv.used == 8
        assert lv.largest == lv.smallest == 80
        assert lv.entropy_bits == pytest.approx(3.0) and lv.entropy_normalized == pytest.approx(1.0)
    assert r.collision_rate_after == 0.0
    assert 0 < r.relative_error < 1 and r.mse > 0
    assert r.same_prefix_distance < 0.7 * r.random_pair_distance
    assert quality_report(q, x, seed=1).same_prefix_distance != r.same_prefix_distance
    # for new items the report encodes them itself
    r2 = quality_report(q, clustered(100, n_blobs=8, seed=5))
    assert r2.n_items == 100


def test_default_codebook_size():
    assert default_codebook_size(12_000, 3) == 256  # TIGER's 3 x 256 on Amazon Beauty
    assert default_codebook_size(10**9, 3) == 8192  # capped at the paper's size
    for n in (1, 7, 100, 5_000, 10**6):
        for levels in (1, 2, 3, 4):
            k = default_codebook_size(n, levels)
            assert 1 <= k <= n and k & (k - 1) == 0
            if k < min(8192, 2 ** int(math.log2(n))):
                assert k**levels >= 1000 * n
    q = ResidualKMeansQuantizer(ResidualQuantizerConfig(levels=2, codebook_size=None, iters=5))
    q.fit(clustered(200))
    assert q.level_sizes == [default_codebook_size(200, 2)] * 2
