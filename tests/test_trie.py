"""The semantic-ID prefix trie against a brute-force scan of the code table."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from onerec.exceptions import CodeCollisionError, CodeError
from onerec.tokenizer import SemanticIds, SemanticIdTrie


def random_unique_codes(n: int, sizes: list[int], seed: int) -> torch.Tensor:
    """n distinct code rows, level l drawn from [0, sizes[l]) (skewed, to get deep sharing)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.stack(
        [(torch.rand(4 * n, generator=g) ** 2 * k).long() for k in sizes], dim=1
    )
    rows = torch.unique(rows, dim=0)
    return rows[torch.randperm(len(rows), generator=g)[:n]]


def brute_next(codes: torch.Tensor, prefix: list[int], size: int) -> torch.Tensor:
    """The allowed next codes after ``prefix``, by scanning every row."""
    mask = torch.zeros(size, dtype=torch.bool)
    for row in codes.tolist():
        if row[: len(prefix)] == prefix:
            mask[row[len(prefix)]] = True
    return mask


def check_against_brute_force(codes: torch.Tensor, sizes: list[int], seed: int) -> None:
    trie = SemanticIdTrie(codes, sizes)
    g = torch.Generator().manual_seed(seed)
    for depth in range(codes.shape[1]):
        # prefixes of real items plus random (often invalid) prefixes of this length
        real = codes[torch.randint(len(codes), (20,), generator=g), :depth]
        rand = torch.stack([torch.randint(k, (20,), generator=g) for k in sizes[:depth]], 1) \
            if depth else torch.zeros(20, 0, dtype=torch.int64)  # fmt: skip
        prefixes = torch.cat([real, rand])
        nodes = trie.walk(prefixes)
        live = nodes >= 0
        for p, node in zip(prefixes.tolist(), nodes.tolist()):
            expected = brute_next(codes, p, sizes[depth])
            assert (node >= 0) == bool(expected.any())
        mask = trie.allowed_mask(nodes, depth=depth)
        assert mask.shape == (len(prefixes), sizes[depth])
        for p, row, ok in zip(prefixes.tolist(), mask, live.tolist()):
            assert torch.equal(row, brute_next(codes, p, sizes[depth]) if ok else row & False)
        if bool(live.any()):
            assert torch.equal(trie.allowed_mask(nodes[live]), mask[live])


@pytest.mark.parametrize("sizes", [[4, 4, 4], [8, 3, 5, 2], [16, 16], [3]])
def test_masks_match_brute_force(sizes):
    n = min(60, int(torch.tensor(sizes).prod()) // 2)
    check_against_brute_force(random_unique_codes(n, sizes, seed=len(sizes)), sizes, seed=0)


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    n=st.integers(1, 30),
    seed=st.integers(0, 1000),
)
def test_masks_match_brute_force_property(sizes, n, seed):
    codes = random_unique_codes(n, sizes, seed)
    check_against_brute_force(codes, sizes, seed)


def test_walking_each_item_reaches_its_leaf():
    sizes = [6, 5, 4]
    codes = random_unique_codes(80, sizes, seed=3)
    trie = SemanticIdTrie(codes, sizes)
    nodes = torch.full((len(codes),), trie.root)
    for d in range(3):
        assert (trie.depth_of(nodes) == d).all()
        assert trie.allowed_mask(nodes)[torch.arange(len(codes)), codes[:, d]].all()
        assert (trie.item_at(nodes) == -1).all()  # not a leaf yet
        nodes = trie.step(nodes, codes[:, d])
        assert (nodes >= 0).all()
    assert torch.equal(trie.item_at(nodes), torch.arange(len(codes)))
    assert torch.equal(trie.item_leaf, nodes)
    assert torch.equal(trie.lookup(codes), torch.arange(len(codes)))


def test_invalid_steps_give_minus_one():
    codes = torch.tensor([[0, 1], [0, 2], [2, 0]])
    trie = SemanticIdTrie(codes, [3, 3])
    root = torch.zeros(5, dtype=torch.int64)
    nxt = trie.step(root, torch.tensor([0, 1, 2, 3, -1]))
    assert (nxt[[0, 2]] >= 0).all() and (nxt[[1, 3, 4]] == -1).all()
    dead = trie.step(torch.tensor([-1, -1]), torch.tensor([0, 1]))
    assert dead.tolist() == [-1, -1]
    assert trie.allowed_mask(torch.tensor([-1, int(nxt[0])])).tolist() == [
        [False, False, False], [False, True, True],
    ]  # fmt: skip
    assert trie.lookup(torch.tensor([[0, 0], [2, 0]])).tolist() == [-1, 2]
    # a huge code must not alias another node's child (node * V + token arithmetic)
    assert trie.step(torch.tensor([0]), torch.tensor([3 + 2])).item() == -1


def test_mixed_depths_and_leaves_are_rejected():
    trie = SemanticIdTrie(torch.tensor([[0, 1], [1, 0]]), [2, 2])
    child = trie.step(torch.tensor([0]), torch.tensor([0]))
    with pytest.raises(CodeError, match="same length"):
        trie.allowed_mask(torch.cat([torch.tensor([0]), child]))
    with pytest.raises(CodeError, match="same length"):
        trie.allowed_mask(child, depth=0)
    with pytest.raises(CodeError, match="no next code"):
        trie.allowed_mask(trie.item_leaf)
    with pytest.raises(CodeError, match="dead"):
        trie.allowed_mask(torch.tensor([-1]))
    with pytest.raises(CodeCollisionError):
        SemanticIdTrie(torch.tensor([[0, 1], [0, 1]]))


def test_trie_from_semantic_ids_with_a_suffix_level():
    codes = torch.tensor([[1, 2], [0, 0], [1, 2], [1, 2]])
    ids = SemanticIds.from_codes(codes, [2, 3])
    trie = ids.trie
    assert trie.level_sizes == [2, 3, 3]
    node = trie.walk(torch.tensor([[1, 2]]))
    assert trie.allowed_mask(node).tolist() == [[True, True, True]]
    moved = trie.to("cpu")
    assert torch.equal(moved.lookup(ids.codes), torch.arange(4))
    assert moved.n_nodes == trie.n_nodes == 1 + 2 + 2 + 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_trie_on_gpu_matches_cpu():
    sizes = [8, 8, 8]
    codes = random_unique_codes(200, sizes, seed=1)
    cpu = SemanticIdTrie(codes, sizes)
    gpu = cpu.to("cuda")
    nodes = cpu.walk(codes[:, :2])
    assert torch.equal(gpu.allowed_mask(nodes.cuda()).cpu(), cpu.allowed_mask(nodes))
    assert torch.equal(gpu.lookup(codes.cuda()).cpu(), torch.arange(200))
