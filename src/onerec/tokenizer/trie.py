"""A prefix trie over semantic IDs in flat tensors, for constrained beam search.

A decoder that generates items as code sequences must only emit sequences that name a real item.
At every decoding step beam search asks, for thousands of prefixes at once, "which next codes
are allowed?" and then "which prefix do I reach with this code?". Both answers come from a few
tensor ops here, with no Python loop over the batch, on CPU or GPU.

Layout (all int64 tensors; movable with ``.to(device)``):

- nodes are numbered level by level: the root is 0, then every distinct 1-code prefix in
  lexicographic order, then every 2-code prefix, ...; ``level_offsets[d]`` is the first node of
  depth d (``level_offsets[L + 1] == n_nodes``), and the leaves (depth L) are the items;
- because of that numbering the children of a node are consecutive node ids, already in
  increasing code order: they are ``child_ptr[v] : child_ptr[v + 1]`` (CSR row pointers whose
  column ids are the node ids themselves), and ``token[u]`` is the code on the edge into u;
- ``(parent[u], token[u])`` is sorted over u >= 1, so "child of v with code t" is one
  ``searchsorted`` on the packed key ``parent * V + token`` (V = the largest level size).

Codes at depth d (the d-th code of an item) are in ``0 .. level_sizes[d] - 1``; masks for a batch
of prefixes of length d have shape (B, level_sizes[d]).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from onerec.exceptions import CodeCollisionError, CodeError


def as_code_table(
    codes: Any, level_sizes: Sequence[int] | None = None, name: str = "codes"
) -> Tensor:
    """``codes`` as an int64 (N, L) tensor whose column l lies in ``[0, level_sizes[l])``."""
    if not isinstance(codes, Tensor):
        codes = torch.from_numpy(np.asarray(codes))
    if codes.ndim != 2:
        raise CodeError(
            f"{name}: expected a 2-D (N, L) table of codes, got {codes.ndim}-D tensor with shape "
            f"{tuple(codes.shape)}"
        )
    if codes.dtype.is_floating_point or codes.is_complex() or codes.dtype == torch.bool:
        raise CodeError(f"{name}: expected integer codes, got dtype {codes.dtype}")
    codes = codes.to(torch.int64)
    if level_sizes is not None:
        if len(level_sizes) != codes.shape[1]:
            raise CodeError(
                f"{name}: expected {len(level_sizes)} codes per item (one per level), "
                f"got {codes.shape[1]}"
            )
        if codes.numel():
            high = torch.tensor(list(level_sizes), device=codes.device)
            bad = (codes < 0) | (codes >= high)
            if bool(bad.any()):
                row, col = (int(v) for v in torch.nonzero(bad)[0])
                raise CodeError(
                    f"{name}: row {row} has code {int(codes[row, col])} at level {col}, outside "
                    f"[0, {level_sizes[col]})"
                )
    elif codes.numel() and bool((codes < 0).any()):
        raise CodeError(f"{name}: codes must be >= 0")
    return codes


def lexsort_rows(codes: Tensor) -> Tensor:
    """The permutation that sorts the rows of ``codes`` (N, L) lexicographically (stable)."""
    order = torch.arange(codes.shape[0], device=codes.device)
    for col in reversed(range(codes.shape[1])):
        order = order[torch.sort(codes[order, col], stable=True).indices]
    return order


class SemanticIdTrie:
    """All prefixes of the items' code sequences; see the module docstring for the layout."""

    root = 0

    def __init__(self, codes: Any, level_sizes: Sequence[int] | None = None) -> None:
        """Build from an item -> codes table (N, L): row i is item i's code sequence.

        ``level_sizes`` defaults to (max code + 1) per level. Two items with the same sequence
        raise :class:`CodeCollisionError`: a leaf must name exactly one item.
        """
        codes = as_code_table(codes, level_sizes)
        n, depth = codes.shape
        if n == 0 or depth == 0:
            raise CodeError(f"cannot build a trie from an empty code table {tuple(codes.shape)}")
        if level_sizes is None:
            level_sizes = [int(v) + 1 for v in codes.max(dim=0).values]
        self.level_sizes: list[int] = [int(s) for s in level_sizes]
        self.depth = depth
        self.n_items = n
        device = codes.device

        order = lexsort_rows(codes)
        sc = codes[order]
        new = torch.zeros(n, dtype=torch.bool, device=device)  # row starts a new prefix
        node_of_row = torch.zeros(n, dtype=torch.int64, device=device)  # depth-0 node: the root
        tokens = [torch.full((1,), -1, dtype=torch.int64, device=device)]  # root: no edge
        parents = [torch.full((1,), -1, dtype=torch.int64, device=device)]
        offsets = [0, 1]
        for d in range(1, depth + 1):
            col = sc[:, d - 1]
            new[0] = True
            new[1:] |= col[1:] != col[:-1]
            first_rows = torch.nonzero(new).flatten()
            tokens.append(col[first_rows])
            parents.append(node_of_row[first_rows])
            node_of_row = offsets[-1] + torch.cumsum(new, 0) - 1
            offsets.append(offsets[-1] + first_rows.numel())
        n_leaves = offsets[-1] - offsets[-2]
        if n_leaves != n:
            same = node_of_row == node_of_row[torch.nonzero(~new).flatten()[0]]
            raise CodeCollisionError(
                f"{n - n_leaves} items repeat another item's full code sequence, e.g. items "
                f"{order[same][:5].tolist()} all have {sc[same][0].tolist()}. Fix: build "
                "SemanticIds with dedup='suffix' to append a disambiguating code."
            )
        self.token = torch.cat(tokens)  # (n_nodes,) code on the edge into each node; -1 at root
        self.parent = torch.cat(parents)  # (n_nodes,) -1 at the root
        self.n_nodes = int(self.token.numel())
        self.level_offsets = torch.tensor(offsets, dtype=torch.int64, device=device)  # (L + 2,)
        self.node_depth = torch.repeat_interleave(
            torch.arange(depth + 1, device=device), self.level_offsets.diff()
        )
        counts = torch.bincount(self.parent[1:], minlength=self.n_nodes)
        self.child_ptr = torch.cat(
            [torch.ones(1, dtype=torch.int64, device=device), 1 + torch.cumsum(counts, 0)]
        )  # (n_nodes + 1,)
        self.leaf_item = torch.empty(n, dtype=torch.int64, device=device)  # (n,) leaf -> item
        self.leaf_item[node_of_row - offsets[-2]] = order
        self.item_leaf = torch.empty(n, dtype=torch.int64, device=device)  # (n,) item -> leaf node
        self.item_leaf[order] = node_of_row
        self.vocab = max(self.level_sizes)
        self.child_key = self.parent[1:] * self.vocab + self.token[1:]  # sorted, see docstring
        # widest fan-out per depth: the width of the gather in allowed_mask
        self.max_children = [
            int(counts[offsets[d] : offsets[d + 1]].max()) for d in range(depth)
        ]

    # --- device -----------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> "SemanticIdTrie":
        """A copy whose tensors live on ``device``."""
        new = object.__new__(SemanticIdTrie)
        new.__dict__ = {
            k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.__dict__.items()
        }
        return new

    @property
    def device(self) -> torch.device:
        return self.token.device

    # --- queries ----------------------------------------------------------------------------
    def depth_of(self, nodes: Tensor) -> Tensor:
        """Depth (prefix length) of every node; -1 for -1 (a dead prefix)."""
        nodes = nodes.to(self.device)
        return torch.where(nodes >= 0, self.node_depth[nodes.clamp(min=0)], -1)

    def _common_depth(self, nodes: Tensor, depth: int | None) -> int:
        live = nodes[nodes >= 0]
        if bool((nodes >= self.n_nodes).any()):
            raise CodeError(f"node ids must be < n_nodes = {self.n_nodes}")
        if live.numel() == 0:
            if depth is None:
                raise CodeError("all nodes are -1 (dead): pass depth= to say which level")
            return depth
        d = self.node_depth[live]
        lo, hi = int(d.min()), int(d.max())
        if lo != hi or (depth is not None and depth != lo):
            raise CodeError(
                f"all prefixes in one call must have the same length"
                f"{'' if depth is None else f' ({depth})'}; got lengths from {lo} to {hi}"
            )
        return lo

    def allowed_mask(self, nodes: Tensor, depth: int | None = None) -> Tensor:
        """(B, level_sizes[d]) bool: ``mask[i, t]`` iff code t may follow prefix ``nodes[i]``.

        All live nodes must be at the same depth d < L (checked; ``depth`` may state it). A -1
        node (a dead beam) gets an all-False row.
        """
        nodes = nodes.to(self.device)
        d = self._common_depth(nodes, depth)
        if not 0 <= d < self.depth:
            raise CodeError(f"prefixes of length {d} have no next code (codes have {self.depth})")
        k, width = self.level_sizes[d], self.max_children[d]
        v = nodes.clamp(min=0)
        start = self.child_ptr[v]
        count = torch.where(nodes >= 0, self.child_ptr[v + 1] - start, 0)
        j = torch.arange(width, device=self.device)
        child = (start.unsqueeze(1) + j).clamp_(max=self.n_nodes - 1)  # (B, width)
        tok = torch.where(j < count.unsqueeze(1), self.token[child], k)  # k: a spill column
        mask = torch.zeros(nodes.shape[0], k + 1, dtype=torch.bool, device=self.device)
        return mask.scatter_(1, tok, True)[:, :k]

    def step(self, nodes: Tensor, tokens: Tensor) -> Tensor:
        """The node reached from ``nodes[i]`` by code ``tokens[i]``; -1 where that is no prefix.

        -1 nodes stay -1, so dead beams can ride along.
        """
        nodes, tokens = nodes.to(self.device), tokens.to(self.device)
        ok = (nodes >= 0) & (tokens >= 0) & (tokens < self.vocab)
        q = nodes.clamp(min=0) * self.vocab + tokens.clamp(0, self.vocab - 1)
        pos = torch.searchsorted(self.child_key, q).clamp_(max=self.child_key.numel() - 1)
        found = ok & (self.child_key[pos] == q)
        return torch.where(found, pos + 1, -1)  # child_key[j] belongs to node j + 1

    def item_at(self, nodes: Tensor) -> Tensor:
        """The item at every leaf node; -1 for nodes that are not leaves (or are -1)."""
        nodes = nodes.to(self.device)
        first_leaf = int(self.level_offsets[self.depth])
        is_leaf = nodes >= first_leaf
        return torch.where(is_leaf, self.leaf_item[(nodes - first_leaf).clamp(min=0)], -1)

    def walk(self, codes: Tensor) -> Tensor:
        """The node of every prefix row of ``codes`` (B, d), d <= L; -1 for unknown prefixes."""
        codes = codes.to(self.device, torch.int64)
        if codes.ndim != 2 or codes.shape[1] > self.depth:
            raise CodeError(
                f"expected prefixes (B, d) with d <= {self.depth}, got shape {tuple(codes.shape)}"
            )
        nodes = torch.zeros(codes.shape[0], dtype=torch.int64, device=self.device)
        for col in range(codes.shape[1]):
            nodes = self.step(nodes, codes[:, col])
        return nodes

    def lookup(self, codes: Tensor) -> Tensor:
        """Item of every full code sequence (B, L); -1 where no item has that sequence."""
        if codes.ndim != 2 or codes.shape[1] != self.depth:
            raise CodeError(
                f"expected full sequences (B, {self.depth}), got shape {tuple(codes.shape)}"
            )
        return self.item_at(self.walk(codes))

    def __len__(self) -> int:
        return self.n_items

    def __repr__(self) -> str:
        return (
            f"SemanticIdTrie(items={self.n_items}, level_sizes={self.level_sizes}, "
            f"nodes={self.n_nodes}, device={self.device})"
        )
