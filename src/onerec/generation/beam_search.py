"""Beam search over semantic IDs, constrained by the catalog's prefix trie.

Every step extends each beam by one code, and only by a code that the trie says continues some
catalog item's prefix, so every finished item exists (100% valid, no post-filtering).
Scores are the model's log-probabilities (each level's softmax over that level's codes, as in
training), *not* renormalized over the allowed codes: a beam's score is exactly the
log-probability the model gives its items, so with a beam as wide as the catalog the search is
exact (the tests check this against brute force).

Two modes:
- ``beam_search_items`` (ranking): decode one item (L' steps) and return the best
  ``top_k_items`` distinct items per user, for retrieval/ranking metrics. A model with an item
  head re-ranks the beam's items (``rerank_weight``) and may add the head's best items to them
  (``head_candidates``), each scored by its exact decoder log-probability.
- ``beam_search_sessions`` (session-wise generation): decode m items per beam, feeding SEP
  between them; no item twice within a session, optionally none of the excluded items
  (e.g. the history). Returns every beam: the sessions IPA/DPO samples from.

Both are vectorized over users and beams (rows ``b * beam + w``); the only Python loop is over
decoding steps. The encoder runs once per user and its memory is never copied per beam (the
decoder's cross-attention folds the beams into its query axis); self-attention keys/values are
cached and reordered with the beams. Repeats and exclusions are enforced at every level: a code
is masked when every item below the prefix it leads to is already in the beam's session or
excluded, so beams never walk into dead ends (see ``_Forbidden``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from onerec.data.examples import Examples
from onerec.data.ragged import Ragged
from onerec.exceptions import GenerationError
from onerec.model.onerec import DecoderCache, OneRec
from onerec.model.tokens import TokenLayout, pad_features, pad_history
from onerec.tokenizer.residual import SemanticIds
from onerec.tokenizer.trie import SemanticIdTrie


class Beams(NamedTuple):
    """Search results; -1 items and -inf log-probs where fewer valid beams than slots remained
    (a tiny catalog, or exclusions)."""

    items: Tensor  # (B, K) ranking mode, (B, beam, m) session mode; int64 item ids
    log_probs: Tensor  # (B, K) or (B, beam): the model's log-probability, best first (ranking
    # mode with ``rerank_weight`` > 0: plus that weight times the item head's log-probability;
    # with ``head_candidates``, some items are the head's, scored the same way)
    codes: Tensor  # (B, K, L') or (B, beam, m, L'): the generated codes of every item


def beam_search_items(
    model: OneRec,
    history: Ragged | Tensor | np.ndarray,
    user_ids: Any,
    semantic_ids: SemanticIds,
    beam_size: int,
    top_k_items: int,
    exclude_items: Ragged | Sequence[Sequence[int]] | None = None,
    *,
    history_features: Tensor | np.ndarray | None = None,
    use_cache: bool = True,
) -> Beams:
    """The ``top_k_items`` most likely next items ``(B, top_k_items)`` of every user, best first.

    ``history``: item ids per user, oldest first (a Ragged, or a (B, n) array padded with -1
    on the left); ``user_ids`` (B,); ``exclude_items``: items never to return, per user (for
    example ``Examples.seen``). ``beam_size`` >= ``top_k_items``: each beam ends as one item.
    ``history_features``: side features of the history items, for a model built with
    ``history_features > 0`` (layout: :func:`onerec.model.tokens.pad_features`).
    """
    _check_count("beam_size", beam_size)
    _check_count("top_k_items", top_k_items)
    if top_k_items > beam_size:
        raise GenerationError(
            f"beam_size ({beam_size}) must be >= top_k_items ({top_k_items}): each beam ends as "
            f"one item, so a beam of {beam_size} returns at most {beam_size} items"
        )
    if top_k_items > semantic_ids.n_items:
        raise GenerationError(
            f"top_k_items ({top_k_items}) exceeds the catalog ({semantic_ids.n_items} items)"
        )
    with _inference(model):
        memory, memory_mask, trie, banned, seen = _prepare(
            model, history, user_ids, semantic_ids, exclude_items, history_features
        )
        items, scores, codes = _search(
            model, memory, memory_mask, trie, beam_size, 1, banned, use_cache
        )
        items, scores, codes = items[:, :, 0], scores, codes[:, :, 0]
        if model.config.rerank_weight > 0 or model.config.head_candidates > 0:
            items, scores, codes = _rank_with_head(model, memory, memory_mask, semantic_ids, seen,
                                                   items, scores, codes, banned)  # fmt: skip
    k = top_k_items
    return Beams(items[:, :k], scores[:, :k], codes[:, :k])


def rerank_order(
    items: Tensor, scores: Tensor, head: Tensor, weight: float
) -> tuple[Tensor, Tensor]:
    """The order ``(B, beam)`` of a beam's items (B, beam) by log p ``scores`` + ``weight`` x the
    item head's log p (``head``, (B, N) over the catalog), and the combined scores in that order;
    empty slots (-1) stay last."""
    combined = scores + weight * head.gather(1, items.clamp(min=0))
    combined = combined.masked_fill(items < 0, float("-inf"))
    order = combined.argsort(dim=1, descending=True, stable=True)
    return order, combined.gather(1, order)


def add_head_candidates(
    model: OneRec, memory: Tensor, memory_mask: Tensor, catalog: Tensor, head: Tensor,
    items: Tensor, scores: Tensor, codes: Tensor, banned: Tensor | None, n: int,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """The beam's items (B, beam), log p ``scores`` and ``codes`` (B, beam, L') followed by the
    item head's ``n`` best items outside the beam and outside the excluded keys ``banned``
    (``head`` (B, N): the head's log p over ``catalog`` (N, L')), each scored by its exact
    decoder log p; -1 items and -inf scores where fewer are left."""
    in_beam = torch.zeros_like(head, dtype=torch.int32)  # empty slots (-1) count nowhere
    in_beam.scatter_add_(1, items.clamp(min=0), (items >= 0).int())
    others = head.masked_fill(in_beam > 0, float("-inf"))
    if banned is not None:
        others.view(-1)[banned] = float("-inf")
    best, extra = others.topk(min(n, others.shape[1]), dim=1)  # (B, n)
    extra = extra.masked_fill(~torch.isfinite(best), -1)  # none left: an empty slot
    extra_codes = catalog[extra.clamp(min=0)].long()
    extra_scores = model.candidate_log_probs(memory, memory_mask, extra_codes)
    empty = extra < 0
    return (torch.cat([items, extra], dim=1),
            torch.cat([scores, extra_scores.masked_fill(empty, float("-inf"))], dim=1),
            torch.cat([codes, extra_codes.masked_fill(empty.unsqueeze(2), -1)], dim=1))  # fmt: skip


def _rank_with_head(
    model: OneRec, memory: Tensor, memory_mask: Tensor, semantic_ids: SemanticIds,
    history: Tensor, items: Tensor, scores: Tensor, codes: Tensor, banned: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """The beam's items, scores and codes, joined by the item head's ``head_candidates`` best
    other items (:func:`add_head_candidates`) and re-ordered by :func:`rerank_order` with the
    model's ``rerank_weight`` (see ``OneRecConfig``); ``history`` (B, n): the encoded item
    ids, for the head's ``repeat_bias``."""
    catalog = semantic_ids.codes.to(memory.device)
    head = model.item_log_probs(memory, catalog, history)  # (B, N)
    if model.config.head_candidates > 0:
        items, scores, codes = add_head_candidates(model, memory, memory_mask, catalog, head,
                                                   items, scores, codes, banned,
                                                   model.config.head_candidates)  # fmt: skip
    order, combined = rerank_order(items, scores, head, model.config.rerank_weight)
    rows = torch.arange(items.shape[0], device=items.device)[:, None]
    return items.gather(1, order), combined, codes[rows, order]


def beam_search_sessions(
    model: OneRec,
    history: Ragged | Tensor | np.ndarray,
    user_ids: Any,
    semantic_ids: SemanticIds,
    beam_size: int,
    n_items: int | None = None,
    exclude_items: Ragged | Sequence[Sequence[int]] | None = None,
    *,
    history_features: Tensor | np.ndarray | None = None,
    use_cache: bool = True,
) -> Beams:
    """``beam_size`` sessions of ``n_items`` distinct items per user: items ``(B, beam, m)``
    and session log-probabilities ``(B, beam)``, best first.

    ``n_items`` defaults to the model's ``max_session_items``; other arguments as in
    :func:`beam_search_items`.
    """
    n_items = model.config.max_session_items if n_items is None else n_items
    _check_count("beam_size", beam_size)
    _check_count("n_items", n_items)
    if n_items > model.config.max_session_items:
        raise GenerationError(
            f"n_items ({n_items}) exceeds the model's max_session_items "
            f"({model.config.max_session_items}), the longest session it was configured for"
        )
    if n_items > semantic_ids.n_items:
        raise GenerationError(
            f"a session of {n_items} distinct items needs a catalog that large, got "
            f"{semantic_ids.n_items} items"
        )
    with _inference(model):
        memory, memory_mask, trie, banned, _ = _prepare(
            model, history, user_ids, semantic_ids, exclude_items, history_features
        )
        items, scores, codes = _search(
            model, memory, memory_mask, trie, beam_size, n_items, banned, use_cache
        )
    return Beams(items, scores, codes)


# --- the search ---------------------------------------------------------------------------------


def _search(
    model: OneRec,
    memory: Tensor,
    memory_mask: Tensor,
    trie: SemanticIdTrie,
    beam: int,
    n_items: int,
    banned: Tensor | None,
    use_cache: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Items ``(B, beam, n_items)``, scores ``(B, beam)`` and codes ``(B, beam, n_items, L')``
    of the best ``beam`` sessions."""
    b, device = memory.shape[0], memory.device
    n = b * beam  # decoder rows: beam w of user u is row u * beam + w
    n_levels = trie.depth
    forbidden = _Forbidden(trie, banned)
    score = torch.full((b, beam), float("-inf"), device=device)
    score[:, 0] = 0.0  # all beams start equal: keep one, or the first step would pick duplicates
    nodes = torch.full((n,), trie.root, dtype=torch.int64, device=device)  # trie prefix per beam
    chosen = torch.full((n, n_items), -1, dtype=torch.int64, device=device)  # items so far
    codes = torch.full((n, n_items, n_levels), -1, dtype=torch.int64, device=device)
    user_of_row = torch.arange(b, device=device).repeat_interleave(beam)  # (N,)
    first_row = (torch.arange(b, device=device) * beam).unsqueeze(1)  # (B, 1)
    step = torch.full((n, 1), TokenLayout.BOS, dtype=torch.int64, device=device)  # tokens to feed
    sequence = step[:, :0]  # (N, t) everything fed so far: the uncached path re-reads it
    cache: DecoderCache | None = None
    if use_cache:  # room for every token fed: BOS, L' codes per item, a SEP between items
        cache = model.start_cache(memory, memory_mask, n_items * (n_levels + 1))
    alive = torch.ones(n, dtype=torch.bool, device=device)

    for i in range(n_items):
        for level in range(n_levels):
            if use_cache:
                logits, cache = model.decode_step(memory, memory_mask, step, cache, level=level)
            else:
                sequence = torch.cat([sequence, step], dim=1)
                logits, _ = model.decode_step(memory, memory_mask, sequence, None, level=level)
            logp = logits.float().log_softmax(dim=-1)  # (N, K_level)
            allowed = trie.allowed_mask(nodes, depth=level)  # (N, K_level); dead beams: none
            if i > 0 or forbidden.any_excluded:
                allowed &= ~forbidden.dead_codes(nodes, level, chosen[:, :i], user_of_row)
            k = logp.shape[1]
            candidates = (score.reshape(n, 1) + logp).masked_fill(~allowed, float("-inf"))
            score, flat = candidates.reshape(b, beam * k).topk(beam, dim=1)  # (B, beam), sorted
            rows = (first_row + flat // k).flatten()  # (N,) the parent row of every new beam
            code = (flat % k).flatten()  # (N,)
            alive = torch.isfinite(score).flatten()
            nodes = torch.where(alive, trie.step(nodes[rows], code), -1)
            chosen, codes = chosen[rows], codes[rows]
            codes[:, i, level] = code
            if cache is not None:
                cache.reorder(rows)
            else:
                sequence = sequence[rows]
            step = (code + model.layout.level_start[level]).unsqueeze(1)  # (N, 1)
        chosen[:, i] = trie.item_at(nodes)  # -1 for dead beams
        nodes = torch.where(alive, trie.root, -1)  # the next item starts at the root
        sep = torch.full_like(step, TokenLayout.SEP)
        step = torch.cat([step, sep], dim=1)  # the last code (predicts SEP), then SEP itself

    dead = ~alive.unsqueeze(1)
    items = chosen.masked_fill(dead, -1).view(b, beam, n_items)
    codes = codes.masked_fill(dead.unsqueeze(2), -1).view(b, beam, n_items, n_levels)
    return items, score, codes


class _Forbidden:
    """Which codes would lead a beam only to items it must not produce.

    Forbidden for a beam: the items already in its session (``chosen``) and its user's excluded
    items. A code is masked when *every* catalog item below the prefix it leads to is
    forbidden (items below the child - forbidden items below it == 0), at every level, not just
    the last: a beam never walks into a dead end, so it dies only when no allowed item is left.
    Only the children each beam's prefix actually has are looked at (``max_children`` of the
    level), never the whole catalog.
    """

    def __init__(self, trie: SemanticIdTrie, banned: Tensor | None) -> None:
        self.trie = trie
        depth, device = trie.depth, trie.device
        # path[i, d]: the node of item i's first d codes (d = 0: the root, d = L: its leaf)
        path = torch.empty(trie.n_items, depth + 1, dtype=torch.int64, device=device)
        path[:, depth] = trie.item_leaf
        for d in range(depth, 0, -1):
            path[:, d - 1] = trie.parent[path[:, d]]
        self.path = path
        self.items_below = torch.bincount(path.flatten(), minlength=trie.n_nodes)  # (n_nodes,)
        # per depth: sorted keys user * n_nodes + node of excluded items' prefixes, with counts
        self.excluded: list[tuple[Tensor, Tensor] | None] = [None] * (depth + 1)
        if banned is not None and banned.numel():
            user, item = banned // trie.n_items, banned % trie.n_items  # distinct pairs
            for d in range(1, depth + 1):
                keys, counts = torch.unique(user * trie.n_nodes + path[item, d],
                                            return_counts=True)  # fmt: skip
                self.excluded[d] = (keys, counts)
        self.any_excluded = banned is not None and banned.numel() > 0

    def dead_codes(
        self, nodes: Tensor, level: int, chosen: Tensor, user_of_row: Tensor
    ) -> Tensor:
        """``(N, K_level)`` True where the code leads beam n (at prefix ``nodes[n]``) only to
        forbidden items; ``chosen`` (N, i): the beams' items so far (-1 = none)."""
        trie = self.trie
        k = trie.level_sizes[level]
        v = nodes.clamp(min=0)
        first = trie.child_ptr[v]
        count = torch.where(nodes >= 0, trie.child_ptr[v + 1] - first, 0)
        j = torch.arange(trie.max_children[level], device=nodes.device)
        child = (first.unsqueeze(1) + j).clamp(max=trie.n_nodes - 1)  # (N, width)
        valid = j < count.unsqueeze(1)
        left = self.items_below[child]  # (N, width) items below each child
        if chosen.shape[1]:
            prefix = torch.where(chosen >= 0, self.path[chosen.clamp(min=0), level + 1], -1)
            left = left - (prefix.unsqueeze(1) == child.unsqueeze(2)).sum(dim=2)  # (N, i)
        excluded = self.excluded[level + 1]
        if excluded is not None:
            keys, counts = excluded
            key = user_of_row.unsqueeze(1) * trie.n_nodes + child
            pos = torch.searchsorted(keys, key).clamp(max=keys.numel() - 1)
            left = left - torch.where(keys[pos] == key, counts[pos], 0)
        token = torch.where(valid & (left <= 0), trie.token[child], k)  # k: a spill column
        mask = torch.zeros(nodes.shape[0], k + 1, dtype=torch.bool, device=nodes.device)
        return mask.scatter_(1, token, True)[:, :k]


# --- inputs -------------------------------------------------------------------------------------


class _Prepared(NamedTuple):
    memory: Tensor  # (B, S, d) encoder states
    memory_mask: Tensor  # (B, S) True = a real token
    trie: SemanticIdTrie  # on the model's device
    banned: Tensor | None  # sorted exclusion keys (``_exclusion_keys``)
    history: Tensor  # (B, n) the encoded item ids, right-aligned, -1 = padding


def _prepare(
    model: OneRec,
    history: Ragged | Tensor | np.ndarray,
    user_ids: Any,
    semantic_ids: SemanticIds,
    exclude_items: Ragged | Sequence[Sequence[int]] | None,
    history_features: Tensor | np.ndarray | None = None,
) -> _Prepared:
    """Encoder memory and mask, the trie on the model's device, the exclusion keys, and the
    history as the encoder read it."""
    if list(semantic_ids.level_sizes) != list(model.config.level_sizes):
        raise GenerationError(
            f"the semantic IDs have level sizes {semantic_ids.level_sizes} but the model was "
            f"built for {model.config.level_sizes}: use the tokenizer the model was trained with"
        )
    device = next(model.parameters()).device
    if semantic_ids.codes.device != device:
        semantic_ids.trie  # build once where the IDs live, then copy: cheaper than rebuilding
        semantic_ids = semantic_ids.to(device)
    items = pad_history(history, model.config.max_history).to(device)  # (B, n), -1 = padding
    b = items.shape[0]
    if b == 0:
        raise GenerationError("no users to generate for (the history has 0 rows)")
    users = user_ids if isinstance(user_ids, Tensor) else torch.as_tensor(np.asarray(user_ids))
    users = users.to(device)
    if users.ndim != 1 or users.shape[0] != b or users.dtype.is_floating_point:
        raise GenerationError(
            f"user_ids must be {b} integer ids (one per history row), got shape "
            f"{tuple(users.shape)} of {users.dtype}"
        )
    tokens, mask = model.layout.encode_history(items, semantic_ids.codes)
    features = None
    if history_features is not None:
        features = pad_features(history, history_features, model.config.max_history).to(device)
    memory, memory_mask = model.encode(tokens, mask, users.long(), features)
    banned = _exclusion_keys(exclude_items, b, semantic_ids.n_items, device)
    return _Prepared(memory, memory_mask, semantic_ids.trie, banned, items)


def _exclusion_keys(
    exclude: Ragged | Sequence[Sequence[int]] | None, b: int, n_catalog: int, device: torch.device
) -> Tensor | None:
    """Sorted ``user_row * n_catalog + item`` of every excluded (user, item) pair."""
    if exclude is None:
        return None
    if not isinstance(exclude, Ragged):
        exclude = Ragged.from_lists(exclude)
    if len(exclude) != b:
        raise GenerationError(f"exclude_items has {len(exclude)} rows but there are {b} users")
    values = exclude.values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() >= n_catalog):
        raise GenerationError(
            f"exclude_items holds ids outside the catalog [0, {n_catalog}): "
            f"min {values.min()}, max {values.max()}"
        )
    keys = torch.from_numpy(exclude.row_ids * n_catalog + values).to(device)
    return torch.unique(keys)  # sorted, for searchsorted


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise GenerationError(f"{name} must be an int >= 1, got {value!r}")


@contextmanager
def _inference(model: OneRec) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd for the search; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


@torch.no_grad()
def item_head_log_probs(
    model: OneRec,
    history: Ragged | Tensor | np.ndarray,
    user_ids: Any,
    semantic_ids: SemanticIds,
    history_features: Tensor | np.ndarray | None = None,
) -> Tensor:
    """``(B, N)``: the item head's log-probability of every catalog item after each history.
    Not generative: it is what re-ranking (``rerank_weight``) adds to a beam's score, and
    ranking the whole catalog by it alone measures what the head knows."""
    if model.item_query is None:
        raise GenerationError("the model has no item head: it was trained with item_loss_weight=0")
    prepared = _prepare(model, history, user_ids, semantic_ids, None, history_features)
    return model.item_log_probs(prepared.memory, semantic_ids.codes.to(prepared.memory.device),
                                prepared.history)  # fmt: skip


def rank_examples(
    model: OneRec,
    examples: Examples,
    semantic_ids: SemanticIds,
    beam_size: int,
    top_k_items: int = 10,
    *,
    exclude_seen: bool = False,
    batch_size: int = 256,
    progress: bool = False,
) -> Tensor:
    """Ranked next items ``(rows, top_k_items)`` of every row of ``examples`` (its history and
    user), by beam search in batches of ``batch_size`` users: the ``ranked=`` input of
    :func:`onerec.evaluation.evaluate`. ``exclude_seen`` keeps ``examples.seen`` out. A model
    that reads side features gets ``examples.history_features``."""
    use_features = model.config.history_features > 0 and examples.history_features is not None
    out = []
    for start in tqdm(range(0, len(examples), batch_size), desc="ranking", unit="batch",
                      disable=not progress):  # fmt: skip
        part = examples.take(np.arange(start, min(start + batch_size, len(examples))))
        features = part.history_features.values if use_features else None
        beams = beam_search_items(model, part.history, torch.from_numpy(part.user), semantic_ids,
                                  beam_size, top_k_items,
                                  part.seen if exclude_seen else None,
                                  history_features=features)  # fmt: skip
        out.append(beams.items.cpu())
    return torch.cat(out) if out else torch.zeros(0, top_k_items, dtype=torch.int64)
