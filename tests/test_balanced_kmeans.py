"""Plain and balanced k-means: exact balance, determinism, quality against plain k-means and
against the optimal capacity-constrained assignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from onerec.tokenizer.kmeans import (
    balanced_assign,
    balanced_capacities,
    balanced_kmeans,
    init_centroids,
    kmeans,
    nearest_centroids,
)


def blobs(n_per: list[int], dim: int = 8, spread: float = 10.0, seed: int = 0):
    """Gaussian blobs of the given sizes; returns (x, blob id of every row)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(len(n_per), dim, generator=g) * spread
    y = torch.repeat_interleave(torch.arange(len(n_per)), torch.tensor(n_per))
    return centers[y] + torch.randn(len(y), dim, generator=g), y


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True if labelings a and b group the points identically (up to renaming)."""
    pairs = torch.unique(torch.stack([a, b], 1), dim=0)
    return len(pairs) == len(torch.unique(a)) == len(torch.unique(b))


def test_nearest_centroids_matches_brute_force_in_any_chunking():
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(103, 5, generator=g), torch.randn(11, 5, generator=g)
    brute = torch.cdist(x, c) ** 2
    for chunk in (None, 7, 1000):
        d, i = nearest_centroids(x, c, 3, chunk_size=chunk)
        assert torch.equal(i, brute.topk(3, largest=False).indices)
        assert torch.allclose(d, brute.gather(1, i), atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plain_kmeans_finds_separated_blobs_exactly(seed):
    x, y = blobs([40, 70, 25, 55, 30], seed=seed)
    r = kmeans(x, 5, seed=seed)
    assert same_partition(r.labels, y)
    assert r.centroids.shape == (5, 8) and r.labels.dtype == torch.int64
    assert r.inertia == pytest.approx(float(((x - r.centroids[r.labels]) ** 2).sum()), rel=1e-4)


def test_plain_kmeans_reseeds_empty_clusters():
    x, _ = blobs([50, 50], seed=3)
    far_away = torch.full((1, 8), 1e4)
    init = torch.cat([x[:1], x[60:61], far_away])  # the third centroid attracts nobody
    r = kmeans(x, 3, init=init)
    assert torch.bincount(r.labels, minlength=3).min() > 0


@pytest.mark.parametrize("n,k", [(600, 12), (605, 12), (97, 10), (64, 64), (50, 1)])
def test_balanced_kmeans_is_exactly_balanced(n, k):
    # unequal blobs, so plain k-means would be far from balanced
    x, _ = blobs([n // 2, n // 3, n - n // 2 - n // 3], seed=n)
    r = balanced_kmeans(x, k)
    sizes = torch.bincount(r.labels, minlength=k)
    assert int(sizes.max() - sizes.min()) <= 1
    assert int(sizes.sum()) == n
    if n % k == 0:
        assert (sizes == n // k).all()
    assert int((sizes == n // k + 1).sum()) == n % k


def test_kmeans_is_deterministic_under_a_seed():
    x, _ = blobs([100, 80, 60, 90], seed=5)
    for fn in (kmeans, balanced_kmeans):
        a, b = fn(x, 7, seed=11), fn(x, 7, seed=11)
        assert torch.equal(a.labels, b.labels) and torch.equal(a.centroids, b.centroids)
        assert a.inertia == b.inertia and a.n_iter == b.n_iter
        fn(x, 7, seed=12)  # another seed may differ; it must simply work


def test_balanced_inertia_is_close_to_plain_on_equal_blobs():
    x, _ = blobs([100] * 8, dim=16, spread=4.0, seed=7)
    plain, balanced = kmeans(x, 16), balanced_kmeans(x, 16)
    assert balanced.inertia <= 1.5 * plain.inertia
    # and on skewed blobs balance costs something, but not absurdly much
    x, _ = blobs([400, 100, 50, 50], dim=16, spread=4.0, seed=8)
    assert balanced_kmeans(x, 16).inertia <= 3.0 * kmeans(x, 16).inertia


def test_balanced_assignment_is_near_the_optimal_one():
    x, _ = blobs([150, 30, 120], dim=6, spread=3.0, seed=9)
    k = 10
    c = init_centroids(x, k, "kmeans++", torch.Generator().manual_seed(0))
    caps = balanced_capacities(len(x), k)
    labels, dist = balanced_assign(x, c, caps)
    assert torch.equal(torch.bincount(labels, minlength=k), caps)
    assert torch.allclose(dist, ((x - c[labels]) ** 2).sum(1), atol=1e-3)
    cost = (torch.cdist(x, c) ** 2).numpy()
    cols = np.repeat(np.arange(k), caps.numpy())
    rows, pick = linear_sum_assignment(cost[:, cols])
    optimal = cost[rows, cols[pick]].sum()
    assert float(dist.sum()) <= 1.25 * optimal


def paper_algorithm_1(x: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> float:
    """OneRec's Algorithm 1 (clusters in turn take their w nearest unassigned points), as a
    reference: returns its final inertia."""
    n = len(x)
    c = init_centroids(x, k, "kmeans++", torch.Generator().manual_seed(seed))
    caps, labels = balanced_capacities(n, k), None
    for _ in range(iters):
        free, new = torch.ones(n, dtype=torch.bool), torch.empty(n, dtype=torch.int64)
        for j in range(k):
            d = ((x - c[j]) ** 2).sum(1).masked_fill(~free, float("inf"))
            take = d.topk(int(caps[j]), largest=False).indices
            free[take], new[take], c[j] = False, j, x[take].mean(0)
        if labels is not None and torch.equal(new, labels):
            break
        labels = new
        c = torch.stack([x[labels == j].mean(0) for j in range(k)])
    return float(((x - c[labels]) ** 2).sum())


@pytest.mark.parametrize(
    "sizes,k", [([150, 30, 120], 10), ([100] * 8, 16), ([400, 100, 50, 50], 16)]
)
def test_balanced_kmeans_is_no_worse_than_the_papers_algorithm(sizes, k):
    x, _ = blobs(sizes, dim=8, spread=3.0, seed=len(sizes))
    ours = balanced_kmeans(x, k).inertia
    assert ours <= 1.02 * paper_algorithm_1(x, k)


def test_capacities_favour_the_clusters_in_demand():
    caps = balanced_capacities(10, 4, demand=torch.tensor([0, 5, 1, 4]))
    assert caps.tolist() == [2, 3, 2, 3]
    assert balanced_capacities(8, 4).tolist() == [2, 2, 2, 2]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 12),
    m=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_balanced_assign_meets_any_capacities(n, k, m, seed):
    g = torch.Generator().manual_seed(seed)
    x, c = torch.randn(n, 3, generator=g), torch.randn(k, 3, generator=g)
    # arbitrary capacities (some zero) that sum to n
    caps = torch.bincount(torch.randint(k, (n,), generator=g), minlength=k)
    labels, _ = balanced_assign(x, c, caps, m=m)
    assert torch.equal(torch.bincount(labels, minlength=k), caps)


def test_kmeans_plus_plus_picks_data_points():
    x, _ = blobs([30, 30, 30], seed=4)
    c = init_centroids(x, 5, "kmeans++", torch.Generator().manual_seed(0))
    assert all(bool((x == row).all(1).any()) for row in c)
    assert len(torch.unique(c, dim=0)) == 5
