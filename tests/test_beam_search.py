"""Trie-constrained beam search: validity, exactness against brute force, sessions, exclusions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from onerec.data.ragged import Ragged
from onerec.exceptions import GenerationError
from onerec.generation import beam_search_items, beam_search_sessions
from onerec.model import OneRec, OneRecConfig, pad_features, pad_history
from onerec.tokenizer import SemanticIds

SIZES = [4, 4, 4]


def catalog(n: int, seed: int = 0) -> SemanticIds:
    g = torch.Generator().manual_seed(seed)
    all_codes = torch.cartesian_prod(*(torch.arange(k) for k in SIZES))  # (64, 3)
    return SemanticIds.from_codes(all_codes[torch.randperm(len(all_codes), generator=g)[:n]], SIZES)


def peaky_model(seed: int = 0, **overrides) -> OneRec:
    """A tiny model with large random weights: distinct, well-separated item scores."""
    torch.manual_seed(seed)
    model = OneRec(OneRecConfig.preset("tiny", SIZES, **overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


HISTORY = Ragged.from_lists([[3, 5, 7, 1], [], [11, 2]])
USERS = np.array([4, 17, 9])


def brute_force_scores(model: OneRec, ids: SemanticIds, sessions: torch.Tensor) -> torch.Tensor:
    """Log-probability ``(B, S)`` of every candidate session ``(S, m)`` for every user."""
    b, s = len(HISTORY), sessions.shape[0]
    items = pad_history(HISTORY, model.config.max_history)
    tokens, mask = model.layout.encode_history(items, ids.codes)
    rows = torch.arange(b).repeat_interleave(s)
    codes = ids.codes[sessions].repeat(b, 1, 1)  # (B*S, m, L')
    with torch.no_grad():
        logp = model.code_log_probs(tokens[rows], mask[rows], torch.as_tensor(USERS)[rows], codes)
    return logp.sum(dim=(1, 2)).view(b, s)


def assert_valid(ids: SemanticIds, items: torch.Tensor, codes: torch.Tensor) -> None:
    assert ((items >= 0) & (items < ids.n_items)).all()
    assert torch.equal(ids.codes[items], codes)
    assert (ids.trie.lookup(codes.reshape(-1, codes.shape[-1])) >= 0).all()


# --- ranking mode -------------------------------------------------------------------------------


def test_ranking_is_exact_when_the_beam_holds_the_catalog():
    ids = catalog(20)
    model = peaky_model()
    out = beam_search_items(model, HISTORY, USERS, ids, beam_size=20, top_k_items=20)
    assert out.items.shape == out.log_probs.shape == (3, 20)
    assert_valid(ids, out.items, out.codes)
    brute = brute_force_scores(model, ids, torch.arange(20).unsqueeze(1))  # (B, 20)
    expected = brute.sort(dim=1, descending=True)
    assert torch.equal(out.items, expected.indices)
    torch.testing.assert_close(out.log_probs, expected.values, atol=1e-4, rtol=0)


def test_ranking_returns_distinct_sorted_items_and_respects_exclusion():
    ids = catalog(60)
    model = peaky_model(seed=1)
    out = beam_search_items(
        model, HISTORY, USERS, ids, beam_size=16, top_k_items=10, exclude_items=HISTORY
    )
    assert_valid(ids, out.items, out.codes)
    for row, seen in zip(out.items.tolist(), HISTORY):
        assert len(set(row)) == 10 and not set(row) & set(seen.tolist())
    assert (out.log_probs.diff(dim=1) <= 0).all()
    # exact search with exclusion agrees with brute force over the allowed items
    exact = beam_search_items(model, HISTORY, USERS, ids, 60, 10, exclude_items=HISTORY)
    brute = brute_force_scores(model, ids, torch.arange(60).unsqueeze(1))
    for b, seen in enumerate(HISTORY):
        brute[b, torch.as_tensor(seen, dtype=torch.int64)] = float("-inf")
    expected = brute.topk(10, dim=1)
    assert torch.equal(exact.items, expected.indices)
    torch.testing.assert_close(exact.log_probs, expected.values, atol=1e-4, rtol=0)


def test_constrained_beams_never_leave_the_trie():
    # no item has code 3 at the last level, and the model is pushed hard towards code 3
    all_codes = torch.cartesian_prod(*(torch.arange(k) for k in SIZES))
    ids = SemanticIds.from_codes(all_codes[all_codes[:, 2] < 3][::2], SIZES)  # 24 items
    model = peaky_model()
    plain_logits = model.logits

    def biased(hidden, level=None):
        logits = plain_logits(hidden, level)
        boost = torch.zeros(logits.shape[-1])
        boost[3 if level is not None else model.layout.level_start[2] + 3] = 100.0
        return logits + boost

    model.logits = biased  # type: ignore[method-assign]
    out = beam_search_items(model, HISTORY, USERS, ids, beam_size=8, top_k_items=8)
    assert_valid(ids, out.items, out.codes)
    sessions = beam_search_sessions(model, HISTORY, USERS, ids, beam_size=8, n_items=3)
    assert_valid(ids, sessions.items, sessions.codes)
    assert (sessions.codes[..., 2] != 3).all()


# --- session mode -------------------------------------------------------------------------------


def test_sessions_have_distinct_items_exclusions_and_exact_scores():
    ids = catalog(60)
    model = peaky_model(seed=2)
    out = beam_search_sessions(
        model, HISTORY, USERS, ids, beam_size=12, n_items=4, exclude_items=HISTORY
    )
    assert out.items.shape == (3, 12, 4) and out.log_probs.shape == (3, 12)
    assert out.codes.shape == (3, 12, 4, 3)
    assert_valid(ids, out.items, out.codes)
    for b, seen in enumerate(HISTORY):
        for session in out.items[b].tolist():
            assert len(set(session)) == 4 and not set(session) & set(seen.tolist())
    assert (out.log_probs.diff(dim=1) <= 0).all()
    # each returned score is the model's teacher-forced log-probability of that session
    for b in range(3):
        own = brute_force_scores(model, ids, out.items[b])[b]
        torch.testing.assert_close(out.log_probs[b], own, atol=1e-4, rtol=0)


def test_session_search_is_exact_with_a_wide_beam():
    ids = catalog(12)
    model = peaky_model(seed=3)
    pairs = torch.tensor([p for p in itertools.permutations(range(12), 2)])  # 132 sessions
    # 12 first items x at most 12 second-item prefixes: a beam of 144 never prunes
    out = beam_search_sessions(model, HISTORY, USERS, ids, beam_size=144, n_items=2)
    brute = brute_force_scores(model, ids, pairs)  # (B, 132)
    expected = brute.sort(dim=1, descending=True)
    torch.testing.assert_close(out.log_probs[:, :132], expected.values, atol=1e-4, rtol=0)
    # the same 132 sessions, in the same order up to float ties
    for b in range(3):
        found = {tuple(s) for s in out.items[b, :132].tolist()}
        assert found == {tuple(p) for p in pairs.tolist()}
        own = brute[b, [pairs.tolist().index(list(s)) for s in out.items[b, :132].tolist()]]
        torch.testing.assert_close(own, expected.values[b], atol=1e-4, rtol=0)
    assert (out.items[:, 132:] == -1).all() and torch.isinf(out.log_probs[:, 132:]).all()


def test_beam_128_runs():
    ids = catalog(60)
    model = peaky_model(n_experts=4)
    out = beam_search_sessions(model, HISTORY, USERS, ids, beam_size=128, n_items=3)
    assert out.items.shape == (3, 128, 3)
    assert_valid(ids, out.items, out.codes)
    distinct = torch.tensor([[len(set(s)) for s in user] for user in out.items.tolist()])
    assert (distinct == 3).all()
    top = beam_search_items(model, HISTORY, USERS, ids, beam_size=128, top_k_items=60)
    assert_valid(ids, top.items, top.codes)  # a beam wider than the catalog: every item once
    assert (top.items.sort(dim=1).values == torch.arange(60)).all()


@pytest.mark.parametrize("n_experts", [0, 4])
def test_cached_and_uncached_decoding_agree(n_experts):
    ids = catalog(40)
    model = peaky_model(n_experts=n_experts)
    kwargs = dict(beam_size=10, n_items=3, exclude_items=HISTORY)
    cached = beam_search_sessions(model, HISTORY, USERS, ids, **kwargs)
    plain = beam_search_sessions(model, HISTORY, USERS, ids, **kwargs, use_cache=False)
    assert torch.equal(cached.items, plain.items)
    torch.testing.assert_close(cached.log_probs, plain.log_probs, atol=1e-5, rtol=0)
    a = beam_search_items(model, HISTORY, USERS, ids, 10, 5)
    b = beam_search_items(model, HISTORY, USERS, ids, 10, 5, use_cache=False)
    assert torch.equal(a.items, b.items)
    torch.testing.assert_close(a.log_probs, b.log_probs, atol=1e-5, rtol=0)


def head_log_probs(model: OneRec, ids: SemanticIds) -> torch.Tensor:
    """The item head's log p ``(B, N)`` of every catalog item after each history."""
    items = pad_history(HISTORY, model.config.max_history)
    tokens, mask = model.layout.encode_history(items, ids.codes)
    with torch.no_grad():
        memory, _ = model.encode(tokens, mask, torch.as_tensor(USERS))
        return model.item_log_probs(memory, ids.codes, items)


@pytest.mark.parametrize("repeat_bias", [False, True])
def test_head_candidates_join_the_beam_with_exact_scores(repeat_bias: bool):
    """With ``head_candidates`` as large as the catalog, a beam of 4 ranks every allowed item
    exactly by decoder log p + rerank_weight x head log p (with the head's repeat bias, if it
    has one); with a few, every returned item still carries that exact score, and excluded
    items never return."""
    ids = catalog(60)
    model = peaky_model(seed=2, item_loss_weight=1.0, rerank_weight=0.5, head_candidates=60,
                        repeat_bias=repeat_bias)  # fmt: skip
    combined = (brute_force_scores(model, ids, torch.arange(60).unsqueeze(1))
                + 0.5 * head_log_probs(model, ids))  # fmt: skip
    for b, seen in enumerate(HISTORY):
        combined[b, torch.as_tensor(seen, dtype=torch.int64)] = float("-inf")
    expected = combined.topk(10, dim=1)
    out = beam_search_items(model, HISTORY, USERS, ids, 10, 10, exclude_items=HISTORY)
    assert torch.equal(out.items, expected.indices)
    torch.testing.assert_close(out.log_probs, expected.values, atol=1e-4, rtol=0)
    assert_valid(ids, out.items, out.codes)

    model.config.head_candidates = 3
    narrow = beam_search_items(model, HISTORY, USERS, ids, 4, 4, exclude_items=HISTORY)
    torch.testing.assert_close(narrow.log_probs, combined.gather(1, narrow.items), atol=1e-4,
                               rtol=0)  # fmt: skip
    assert_valid(ids, narrow.items, narrow.codes)
    head = head_log_probs(model, ids)
    model.config.head_candidates = 0
    plain = beam_search_items(model, HISTORY, USERS, ids, 4, 4, exclude_items=HISTORY)
    for b, seen in enumerate(HISTORY):  # the beam's 4 items and the head's 3 best others
        others = head[b].clone()
        others[torch.as_tensor(seen.tolist() + plain.items[b].tolist(), dtype=torch.int64)] = (
            float("-inf"))  # fmt: skip
        candidates = torch.cat([plain.items[b], others.topk(3).indices])
        best = combined[b, candidates].topk(4).indices
        assert narrow.items[b].tolist() == candidates[best].tolist()
    assert not torch.equal(narrow.items, plain.items)  # the head's items made a difference


def test_a_head_repeat_bias_brings_seen_items_back_unless_they_are_excluded():
    """A strong learned preference for the newest item (``repeat_bias``) puts it first through
    the head's candidates when seen items are kept; excluded, it never returns."""
    ids = catalog(60)
    model = peaky_model(seed=2, item_loss_weight=1.0, rerank_weight=1.0, head_candidates=5,
                        repeat_bias=True)  # fmt: skip
    with torch.no_grad():
        model.repeat_recency.weight.zero_()
        model.repeat_recency.weight[1] = 100.0
    kept = beam_search_items(model, HISTORY, USERS, ids, 4, 4)
    assert kept.items[0, 0] == 1 and kept.items[2, 0] == 2  # the newest items
    excluded = beam_search_items(model, HISTORY, USERS, ids, 4, 4, exclude_items=HISTORY)
    for b, seen in enumerate(HISTORY):
        assert not set(excluded.items[b].tolist()) & set(seen.tolist())


def test_too_few_items_left_gives_minus_one_not_garbage():
    ids = catalog(6)
    model = peaky_model().train()
    exclude = Ragged.from_lists([[0, 1, 2, 3], [], [5]])
    out = beam_search_items(model, HISTORY.take(np.array([1, 1, 1])), USERS, ids, 6, 4,
                            exclude_items=exclude)  # fmt: skip
    assert out.items[0, :2].sort().values.tolist() == [4, 5]
    assert out.items[0, 2:].tolist() == [-1, -1]
    assert torch.isinf(out.log_probs[0, 2:]).all()
    assert (out.items[1] >= 0).all() and 5 not in out.items[2].tolist()
    assert model.training  # the search ran in eval mode and gave the mode back


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, ids: beam_search_items(m, HISTORY, USERS, ids, 4, 5), "top_k_items"),
        (lambda m, ids: beam_search_items(m, HISTORY, USERS, ids, 0, 1), "beam_size"),
        (lambda m, ids: beam_search_items(m, HISTORY, USERS, ids, 99, 99), "catalog"),
        (lambda m, ids: beam_search_sessions(m, HISTORY, USERS, ids, 4, 6), "max_session_items"),
        (lambda m, ids: beam_search_sessions(m, HISTORY, USERS, ids, 4, 0), "n_items"),
        (lambda m, ids: beam_search_items(m, HISTORY, USERS[:2], ids, 4, 2), "user_ids"),
        (lambda m, ids: beam_search_items(m, HISTORY, USERS, ids, 4, 2, [[1]]), "rows"),
        (lambda m, ids: beam_search_items(m, HISTORY, USERS, ids, 4, 2, [[1], [], [99]]),
         "outside the catalog"),
        (lambda m, ids: beam_search_items(
            m, HISTORY, USERS, SemanticIds.from_codes(ids.codes, [4, 4, 5]), 4, 2),
         "level sizes"),
    ],
)  # fmt: skip
def test_bad_arguments_raise_generation_error(call, message):
    ids = catalog(60)
    model = peaky_model()
    with pytest.raises(GenerationError, match=message):
        call(model, ids)


def test_small_catalog_sessions_need_enough_items():
    ids = catalog(3)
    model = peaky_model()
    with pytest.raises(GenerationError, match="distinct items"):
        beam_search_sessions(model, HISTORY.take(np.array([1])), [0], ids, 4, 4)


def test_side_features_reach_generation():
    """A model with side features ranks from them: changing a history item's features changes
    the scores, and a Ragged history with per-item features equals the padded layout."""
    ids = catalog(40)
    model = peaky_model(history_features=2)
    history = Ragged.from_lists([[1, 2, 3], [5]])
    feats = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    users = np.array([0, 1])
    a = beam_search_items(model, history, users, ids, 8, 5, history_features=feats)
    padded = pad_history(history, model.config.max_history)
    b = beam_search_items(model, padded, users, ids, 8, 5,
                          history_features=pad_features(history, feats, 20))  # fmt: skip
    assert torch.equal(a.items, b.items)
    assert torch.allclose(a.log_probs, b.log_probs, atol=1e-5)
    c = beam_search_items(model, history, users, ids, 8, 5, history_features=feats + 3.0)
    assert not torch.allclose(a.log_probs, c.log_probs, atol=1e-3)
