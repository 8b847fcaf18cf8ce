"""The OneRec encoder-decoder: token layout, shapes, loss, cached decoding, config, sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from onerec.data.ragged import Ragged
from onerec.exceptions import ConfigError, ModelError
from onerec.model import PRESETS, OneRec, OneRecConfig, TokenLayout, pad_features, pad_history
from onerec.tokenizer import SemanticIds

SIZES = [4, 4, 4]


def catalog(n: int = 60, seed: int = 0) -> SemanticIds:
    """``n`` distinct items with 3 codes of 4 values each."""
    g = torch.Generator().manual_seed(seed)
    all_codes = torch.cartesian_prod(*(torch.arange(k) for k in SIZES))  # (64, 3)
    return SemanticIds.from_codes(all_codes[torch.randperm(len(all_codes), generator=g)[:n]], SIZES)


def tiny(**overrides) -> OneRec:
    torch.manual_seed(0)
    return OneRec(OneRecConfig.preset("tiny", SIZES, **overrides))


def batch(model: OneRec, ids: SemanticIds, b: int = 4, n: int = 6, m: int = 2, seed: int = 1):
    """History tokens and mask (some rows padded, one empty), users and target sessions."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randint(ids.n_items, (b, n), generator=g)
    lengths = torch.randint(0, n + 1, (b,), generator=g)
    lengths[0] = 0
    items[torch.arange(n) < (n - lengths).unsqueeze(1)] = -1  # right-aligned, -1 = padding
    tokens, mask = model.layout.encode_history(items, ids.codes)
    users = torch.randint(1000, (b,), generator=g)
    target = ids.codes[torch.randint(ids.n_items, (b, m), generator=g)]  # (B, m, L')
    return tokens, mask, users, target


# --- token layout -------------------------------------------------------------------------------


def test_token_layout_round_trip_and_session_layout():
    layout = TokenLayout([3, 5])
    assert layout.vocab_size == 3 + 3 + 5
    assert layout.level_start == [3, 6]
    codes = torch.tensor([[[2, 4], [0, 1]]])  # one session of two items
    tokens = layout.encode_items(codes)
    assert tokens.tolist() == [[[5, 10], [3, 7]]]
    assert torch.equal(layout.decode(tokens), codes)
    dec_in, target = layout.session_targets(codes)
    bos, sep = TokenLayout.BOS, TokenLayout.SEP
    assert dec_in.tolist() == [[bos, 5, 10, sep, 3, 7]]
    assert target.tolist() == [[5, 10, sep, 3, 7, sep]]
    assert layout.target_levels(6).tolist() == [0, 1, -1, 0, 1, -1]
    item, slot = layout.decoder_positions(6)
    assert item.tolist() == [0, 0, 0, 1, 1, 1] and slot.tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(ModelError, match="level-1 value"):
        layout.encode_items(torch.tensor([[0, 5]]))
    with pytest.raises(ModelError, match="one per level"):
        layout.encode_items(torch.tensor([[0, 1, 2]]))
    with pytest.raises(ModelError, match="outside"):
        layout.decode(torch.tensor([[1, 7]]))  # BOS is no level-0 code


def test_pad_history_keeps_the_most_recent_items():
    hist = Ragged.from_lists([[1, 2, 3, 4], [], [7]])
    assert pad_history(hist, 3).tolist() == [[2, 3, 4], [-1, -1, -1], [-1, -1, 7]]
    assert pad_history(torch.tensor([[5, 6, 7]]), 2).tolist() == [[6, 7]]
    with pytest.raises(ModelError):
        pad_history(torch.zeros(3), 2)


# --- forward, loss ------------------------------------------------------------------------------


def test_shapes():
    ids = catalog()
    model = tiny()
    tokens, mask, users, target = batch(model, ids, b=4, n=6, m=2)
    dec_in, _ = model.layout.session_targets(target)
    logits = model(tokens, mask, users, dec_in)
    assert logits.shape == (4, 2 * 4, model.layout.vocab_size)
    memory, memory_mask = model.encode(tokens, mask, users)
    assert memory.shape == (4, 1 + 6 * 3, 32) and memory_mask.shape == (4, 1 + 6 * 3)
    assert not memory_mask[0, 1:].any() and memory_mask[:, 0].all()  # empty history, user token
    logp = model.code_log_probs(tokens, mask, users, target)
    assert logp.shape == (4, 2, 3) and (logp <= 0).all()
    assert torch.isfinite(model.loss(tokens, mask, users, target).loss)


def test_restricted_loss_equals_cross_entropy_on_masked_logits():
    ids = catalog()
    model = tiny(moe_balance="aux_loss")
    tokens, mask, users, target = batch(model, ids, m=3)
    dec_in, dec_target = model.layout.session_targets(target)
    out = model.loss(tokens, mask, users, target)
    logits = model(tokens, mask, users, dec_in)  # (B, T, V)
    levels = model.layout.target_levels(dec_in.shape[1])  # (T,)
    allowed = torch.zeros(len(levels), model.layout.vocab_size, dtype=torch.bool)
    for t, level in enumerate(levels.tolist()):
        if level >= 0:
            allowed[t, model.layout.level_slice(level)] = True
    masked = logits.masked_fill(~allowed, float("-inf"))
    keep = levels >= 0  # SEP positions are skipped
    reference = F.cross_entropy(masked[:, keep].flatten(0, 1), dec_target[:, keep].flatten())
    torch.testing.assert_close(out.ntp, reference, atol=1e-5, rtol=1e-5)
    assert out.aux > 0
    torch.testing.assert_close(out.loss, out.ntp + model.config.aux_loss_weight * out.aux)


def test_tiny_model_memorizes_a_batch():
    ids = catalog()
    model = tiny()
    tokens, mask, users, target = batch(model, ids, b=8, m=2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model.loss(tokens, mask, users, target).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.update_moe_bias()
        losses.append(loss.item())
    assert losses[0] > 1.2  # about log(4): uniform over a level's 4 codes
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("n_experts, decoder_context", [(0, False), (4, False), (4, True)])
def test_cached_decoding_matches_teacher_forcing(n_experts, decoder_context):
    ids = catalog()
    model = tiny(n_experts=n_experts, decoder_context=decoder_context).eval()
    tokens, mask, users, target = batch(model, ids, b=3, m=3)
    dec_in, _ = model.layout.session_targets(target)
    with torch.no_grad():
        full = model(tokens, mask, users, dec_in)  # (B, T, V)
        memory, memory_mask = model.encode(tokens, mask, users)
        cache = None
        for t in range(dec_in.shape[1]):
            step, cache = model.decode_step(memory, memory_mask, dec_in[:, t : t + 1], cache)
            torch.testing.assert_close(step, full[:, t], atol=1e-5, rtol=0)
        # several tokens at once after a cached prefix, and G = 2 beams per user
        rows = torch.arange(3).repeat_interleave(2)
        _, cache = model.decode_step(memory, memory_mask, dec_in[rows, :3])
        level = 1
        step, _ = model.decode_step(memory, memory_mask, dec_in[rows, 3:6], cache, level=level)
        torch.testing.assert_close(
            step, full[rows, 5, model.layout.level_slice(level)], atol=1e-5, rtol=0
        )


def test_model_input_errors():
    ids = catalog()
    model = tiny()
    tokens, mask, users, target = batch(model, ids, n=6)
    with pytest.raises(ModelError, match="history_mask"):
        model.encode(tokens, mask[:, :2], users)
    with pytest.raises(ModelError, match="user_ids"):
        model.encode(tokens, mask, users[:2])
    with pytest.raises(ModelError, match="history item id"):
        model.layout.encode_history(torch.tensor([[70]]), ids.codes)
    with pytest.raises(ModelError, match="at least 2 columns"):
        model.sequence_loss(tokens[:, :1], mask[:, :1], users, session_items=1)


@pytest.mark.parametrize("pool_items, decoder_context", [(False, False), (True, False),
                                                         (False, True), (True, True)])
def test_one_encoder_pass_equals_one_example_per_target(pool_items: bool, decoder_context: bool):
    """sequence_loss over whole sequences == the loss of every (history, next m items) example
    taken separately, partial sessions at the end included; with one encoder token per item
    (pool_items) as with one per code, and with the newest item's state at BOS."""
    ids = catalog()
    model = tiny(n_experts=4, pool_items=pool_items, decoder_context=decoder_context).eval()
    items = torch.tensor([[-1, -1, 5, 9, 2, 7], [1, 2, 3, 4, 5, 6]])  # right-aligned
    users = torch.tensor([3, 8])
    tokens, mask = model.layout.encode_history(items, ids.codes)
    m = 2
    with torch.no_grad():
        out = model.sequence_loss(tokens, mask, users, session_items=m)
        total, n_codes = 0.0, 0
        for row in range(2):
            seq = items[row][items[row] >= 0]
            for j in range(1, len(seq)):
                hist = seq[:j].unsqueeze(0)
                h_tokens, h_mask = model.layout.encode_history(hist, ids.codes)
                target = ids.codes[seq[j : j + m]].unsqueeze(0)  # (1, m or fewer, L')
                logp = model.code_log_probs(h_tokens, h_mask, users[row : row + 1], target)
                total -= float(logp.sum())
                n_codes += logp.numel()
    assert out.n_codes == n_codes == (3 * 2 - 1 + 5 * 2 - 1) * 3  # 3 + 5 targets, 2 partial
    torch.testing.assert_close(out.ntp.item() * out.n_codes, total, atol=1e-3, rtol=1e-5)
    # only some targets: starts and segments
    starts = torch.zeros_like(mask)
    starts[1, 3] = True
    segments = torch.tensor([[0] * 6, [0, 0, 0, 0, 1, 1]])
    with torch.no_grad():
        part = model.sequence_loss(tokens, mask, users, m, starts=starts, segments=segments)
        hist_tokens, hist_mask = model.layout.encode_history(items[1:, :3], ids.codes)
        own = model.code_log_probs(hist_tokens, hist_mask, users[1:], ids.codes[torch.tensor([[4]])])
    assert part.n_codes == 3  # item 4 only: item 5 is in the next session
    torch.testing.assert_close(part.ntp, -own.mean(), atol=1e-5, rtol=1e-5)


def column3_loss(model: OneRec, ids: SemanticIds, items: list[int]) -> float:
    """The loss of the one target at column 3 of the sequence ``items`` (user 2)."""
    starts = torch.zeros(1, len(items), dtype=torch.bool)
    starts[0, 3] = True
    tokens, mask = model.layout.encode_history(torch.tensor([items]), ids.codes)
    with torch.no_grad():
        return model.sequence_loss(tokens, mask, torch.tensor([2]), 1, starts=starts).ntp.item()


@pytest.mark.parametrize("decoder_context", [False, True])
def test_a_target_never_sees_later_items(decoder_context: bool):
    """One pass serves every target without leaking the future: changing the items after a
    target leaves that target's loss unchanged (and changing an earlier one does not)."""
    ids = catalog()
    model = tiny(n_experts=4, decoder_context=decoder_context).eval()
    base = column3_loss(model, ids, [10, 20, 25, 30, 40, 50])  # the target is item 30
    assert column3_loss(model, ids, [10, 20, 25, 30, 41, 3]) == pytest.approx(base, abs=1e-6)
    assert column3_loss(model, ids, [11, 20, 25, 30, 40, 50]) != pytest.approx(base, abs=1e-6)


def test_side_features_change_the_encoding_without_leaking_the_future():
    """Per-item side features reach the model; a target still sees none of its own item's."""
    ids = catalog()
    model = tiny(history_features=2).eval()
    users = torch.tensor([2])
    starts = torch.zeros(1, 6, dtype=torch.bool)
    starts[0, 3] = True
    tokens, mask = model.layout.encode_history(torch.tensor([[10, 20, 25, 30, 40, 50]]), ids.codes)
    feats = torch.randn(1, 6, 2, generator=torch.Generator().manual_seed(0))

    def target_loss(f: torch.Tensor) -> float:
        with torch.no_grad():
            return model.sequence_loss(tokens, mask, users, 1, starts=starts, features=f).ntp.item()

    base = target_loss(feats)
    later = feats.clone()
    later[0, 3:] += 5.0  # the target's own item and after: its watch time is not known yet
    assert target_loss(later) == pytest.approx(base, abs=1e-6)
    earlier = feats.clone()
    earlier[0, 1] += 5.0
    assert target_loss(earlier) != pytest.approx(base, abs=1e-6)


def test_item_identity_embedding_separates_items_and_keeps_the_future_out():
    """Hashed item identities: one vector per code tuple (equal tuples, equal vectors; 60
    distinct items, 60 distinct vectors), and the one-pass encoder still hides later items."""
    ids = catalog()
    model = tiny(item_hash_buckets=256).eval()
    tokens, _ = model.layout.encode_history(torch.arange(60).unsqueeze(0), ids.codes)
    with torch.no_grad():
        vectors = model._item_identity(tokens)[0]  # (60, d)
        again = model._item_identity(tokens.flip(1))[0].flip(0)
    assert torch.equal(vectors, again)
    # 256 rows per table: 1770 item pairs, about 0.03 expected full collisions
    assert len(torch.unique(vectors, dim=0)) == 60
    base = column3_loss(model, ids, [10, 20, 25, 30, 40, 50])
    assert column3_loss(model, ids, [10, 20, 25, 30, 41, 3]) == pytest.approx(base, abs=1e-6)
    assert column3_loss(tiny(), ids, [10, 20, 25, 30, 40, 50]) != pytest.approx(base, abs=1e-4)
    assert model.num_parameters() - tiny().num_parameters() == 2 * 256 * model.config.d_model


def test_item_identity_dropout_acts_in_training_on_the_encoder_input_only():
    """``item_hash_dropout`` drops parts of the identity vector that the encoder reads while
    training; in eval mode, and on the item head's output side, the identity is whole."""
    ids = catalog()
    tokens, mask, users, _ = batch(tiny(), ids)
    plain = tiny(item_hash_buckets=256, item_loss_weight=1.0)
    dropped = tiny(item_hash_buckets=256, item_loss_weight=1.0, item_hash_dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    plain.eval(), dropped.eval()
    with torch.no_grad():
        whole = plain.encode(tokens, mask, users)[0]
        assert torch.equal(whole, dropped.encode(tokens, mask, users)[0])
        dropped.train()
        assert torch.equal(plain.item_embeddings(ids.codes), dropped.item_embeddings(ids.codes))
        torch.manual_seed(0)
        a = dropped.encode(tokens, mask, users)[0]
        torch.manual_seed(1)
        b = dropped.encode(tokens, mask, users)[0]
    assert not torch.equal(a, b)  # dropout on (config dropout is 0 in the tiny preset)


def test_input_dropout_sets_the_encoder_input_dropout_alone():
    """``input_dropout`` is the dropout of the encoder's input vectors: in eval mode the encoder
    is unchanged; in training it draws masks even where the blocks' dropout is 0 (the tiny
    preset); left at None it follows ``dropout``."""
    ids = catalog()
    tokens, mask, users, _ = batch(tiny(), ids)
    plain, dropped = tiny(), tiny(input_dropout=0.5)
    assert dropped.config.dropout == 0
    plain.eval(), dropped.eval()
    with torch.no_grad():
        assert torch.equal(plain.encode(tokens, mask, users)[0],
                           dropped.encode(tokens, mask, users)[0])  # fmt: skip
        dropped.train()
        torch.manual_seed(0)
        a = dropped.encode(tokens, mask, users)[0]
        torch.manual_seed(1)
        b = dropped.encode(tokens, mask, users)[0]
    assert not torch.equal(a, b)
    assert tiny(dropout=0.5).input_drop.p == 0.5
    assert tiny(dropout=0.5, input_dropout=0.0).input_drop.p == 0.0


@pytest.mark.parametrize("pool_items", [False, True])
def test_history_dropout_hides_an_item_from_all_but_its_next_target(pool_items: bool):
    """A hidden item (``history_dropout``) still has its own state and is still seen by the
    target right after it, but no later item or target sees it: changing its codes moves its
    own column and the next target's logits, nothing after. Eval mode hides nothing."""
    ids = catalog()
    model = tiny(pool_items=pool_items, history_dropout=0.5).eval()
    users = torch.tensor([2])
    hide = torch.tensor([[False, False, True, False, False, False]])  # item 25 at column 2

    def run(items: list[int], hidden: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = model.layout.encode_history(torch.tensor([items]), ids.codes)
        targets = torch.tensor([[3, 4]])  # the targets after columns 2 and 3
        decoder_input = model.layout.session_input(tokens[:, 3:5].reshape(2, 1, 3))
        with torch.no_grad():
            memory, memory_mask = model.encode(tokens, mask, users, hide=hidden)
            states = model.decode(memory, memory_mask, decoder_input, targets, hidden)
        w = model.item_width
        return memory[0, 1:].reshape(6, w, -1), states

    base, base_states = run([10, 20, 25, 30, 40, 50], hide)
    moved, moved_states = run([10, 20, 26, 30, 40, 50], hide)
    assert not torch.allclose(base[2], moved[2])  # its own state
    assert torch.allclose(base[3:], moved[3:], atol=1e-6)  # later items do not read it
    assert not torch.allclose(base_states[0], moved_states[0])  # the next target reads it
    assert torch.allclose(base_states[1], moved_states[1], atol=1e-6)  # a later one does not
    shown, _ = run([10, 20, 26, 30, 40, 50], None)
    assert not torch.allclose(base[3:], shown[3:])
    mask = torch.ones(64, 50, dtype=torch.bool)
    assert model.hidden_items(mask) is None  # eval mode
    model.train()
    share = model.hidden_items(mask).float().mean().item()
    assert 0.45 < share < 0.55
    assert tiny().train().hidden_items(mask) is None


@pytest.mark.parametrize("pool_items", [False, True])
def test_item_head_is_a_catalog_softmax_on_each_history_state(pool_items: bool):
    """The item head's loss in sequence_loss is the cross-entropy of every target's next item
    over the whole catalog, from the encoder state after the items before it, and it never sees
    later items; its scores are the item head's log-probabilities after a whole history."""
    ids = catalog()
    model = tiny(item_loss_weight=0.5, pool_items=pool_items).eval()
    items = torch.tensor([[-1, -1, 5, 9, 2, 7], [1, 2, 3, 4, 5, 6]])  # right-aligned
    users = torch.tensor([3, 8])
    tokens, mask = model.layout.encode_history(items, ids.codes)
    with pytest.raises(ModelError, match="pass items"):
        model.sequence_loss(tokens, mask, users, 1)
    with torch.no_grad():
        out = model.sequence_loss(tokens, mask, users, 1, items=items, catalog=ids.codes)
        expected, n = 0.0, 0
        for row in range(2):
            seq = items[row][items[row] >= 0]
            for j in range(1, len(seq)):
                h_tokens, h_mask = model.layout.encode_history(seq[:j].unsqueeze(0), ids.codes)
                memory, _ = model.encode(h_tokens, h_mask, users[row : row + 1])
                expected -= float(model.item_log_probs(memory, ids.codes)[0, seq[j]])
                n += 1
    assert out.n_item_targets == n == 3 + 5
    torch.testing.assert_close(out.item_sum.item(), expected, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(out.loss, out.ntp + 0.5 * out.item_sum / n)
    # a new item with known codes gets an embedding: the sum of its code tokens'
    emb = model.item_embeddings(ids.codes[:2])
    torch.testing.assert_close(emb[1], model.tok_emb(model.layout.encode_history(
        torch.tensor([[1]]), ids.codes)[0][0, 0]).sum(0))  # fmt: skip
    hashed = tiny(item_loss_weight=0.5, item_hash_buckets=256)
    tokens1 = hashed.layout.encode_history(torch.tensor([[1]]), ids.codes)[0]
    torch.testing.assert_close(hashed.item_embeddings(ids.codes[:2])[1], (
        hashed.tok_emb(tokens1).sum(2) + hashed._item_identity(tokens1))[0, 0])  # fmt: skip
    assert tiny().item_query is None
    with pytest.raises(ModelError, match="no item head"):
        tiny().item_queries(memory)


@pytest.mark.parametrize("pool_items", [False, True])
def test_item_head_trains_to_rank_the_next_item(pool_items: bool):
    """Trained on a deterministic successor, the item head alone ranks the true next item first
    (almost always), and so does the beam re-ranked by it (rerank_weight); with one encoder
    token per item (pool_items) too."""
    from onerec.generation.beam_search import beam_search_items

    ids = catalog(20)
    model = tiny(item_loss_weight=1.0, rerank_weight=1.0, pool_items=pool_items)
    seqs = torch.stack([(torch.arange(6) * 3 + s) % 20 for s in range(20)])  # next = +3 mod 20
    tokens, mask = model.layout.encode_history(seqs, ids.codes)
    users = torch.zeros(20, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        model.sequence_loss(tokens, mask, users, 1, items=seqs, catalog=ids.codes).loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        memory, _ = model.encode(tokens, mask, users)
        head = model.item_log_probs(memory, ids.codes)
    truth = (seqs[:, -1] + 3) % 20
    assert (head.argmax(1) == truth).float().mean() >= 0.9
    beams = beam_search_items(model, seqs, users, ids, beam_size=8, top_k_items=3)
    assert (beams.items[:, 0] == truth).float().mean() >= 0.9
    assert bool((beams.log_probs[:, :-1] >= beams.log_probs[:, 1:]).all())


def _with_random_repeat_scores(model: OneRec) -> OneRec:
    """``model`` with its (zero-initialized) repeat bias set to random numbers."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in (model.repeat_recency.weight, *model.repeat_user.parameters()):
            p.copy_(torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("max_history", [20, 3])
def test_repeat_bias_in_training_is_the_bias_ranking_adds(max_history: int):
    """With ``repeat_bias`` the head's training loss is still the sum of its ranking log-probs
    after every prefix: each seen item's logit gets its recency's and the user's score once per
    occurrence, within the ``max_history`` items the query reads (3: fewer than a row holds)."""
    ids = catalog()
    model = _with_random_repeat_scores(
        tiny(item_loss_weight=0.5, repeat_bias=True, max_history=max_history)
    ).eval()
    items = torch.tensor([[-1, 5, 9, 5, 2, 9, 5], [1, 2, 3, 1, 1, 6, 2]])  # returns, twice
    users = torch.tensor([3, 8])
    tokens, mask = model.layout.encode_history(items, ids.codes)
    with torch.no_grad():
        out = model.sequence_loss(tokens, mask, users, 1, items=items, catalog=ids.codes)
        expected = 0.0
        for row in range(2):
            seq = items[row][items[row] >= 0]
            for j in range(1, len(seq)):
                history = seq[:j].unsqueeze(0)
                h_tokens, h_mask = model.layout.encode_history(history, ids.codes)
                memory, _ = model.encode(h_tokens, h_mask, users[row : row + 1])
                expected -= float(model.item_log_probs(memory, ids.codes, history)[0, seq[j]])
        plain = model.item_log_probs(memory, ids.codes, torch.full_like(history, -1))
        # the last prefix's seen items (the newest max_history) differ from a history-free head's
        scored = model.item_log_probs(memory, ids.codes, history)[0] - plain[0]
        with pytest.raises(ModelError, match="pass history"):
            model.item_log_probs(memory, ids.codes)
    torch.testing.assert_close(out.item_sum.item(), expected, atol=1e-3, rtol=1e-5)
    newest = set(history[0, -max_history:].tolist())
    shift = scored[[i for i in range(ids.n_items) if i not in newest]]
    assert torch.allclose(shift, shift[0].expand_as(shift), atol=1e-5)  # the normalizer only
    assert all(abs(float(scored[i] - shift[0])) > 1e-4 for i in newest)


def test_repeat_bias_reads_what_the_query_reads_under_history_dropout():
    """The seen items of a head target are those its query reads: the newest item always, the
    older ones unless history dropout hid them, none outside the row or the window."""
    model = tiny(item_loss_weight=1.0, repeat_bias=True, max_history=3)
    items = torch.tensor([[-1, 4, 5, 6, 7]])
    mask = items >= 0
    hide = torch.tensor([[False, False, True, True, False]])
    rows, cols = torch.tensor([0, 0, 0]), torch.tensor([1, 3, 4])
    seen = model._seen_before_targets(items, mask, rows, cols, None)
    assert seen.tolist() == [[4, -1, -1], [6, 5, 4], [7, 6, 5]]
    seen = model._seen_before_targets(items, mask, rows, cols, hide)
    assert seen.tolist() == [[4, -1, -1], [6, -1, 4], [7, -1, -1]]


def test_repeat_bias_learns_whether_users_return():
    """Trained where every target is the item three back (random items: no embedding can tell
    which), the head learns recency 3 above every other and ranks the return first; trained
    where targets are never seen before, it learns to score seen items down."""
    ids = catalog(40)
    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(32):
        start = torch.randperm(40, generator=g)[:3]
        rows.append(start.repeat(3))  # a b c a b c a b c: the next item is the one 3 back
    returns = torch.stack(rows)
    fresh = torch.stack([torch.randperm(40, generator=g)[:9] for _ in range(32)])
    learned = {}
    for name, seqs in (("returns", returns), ("fresh", fresh)):
        model = tiny(item_loss_weight=1.0, repeat_bias=True)
        tokens, mask = model.layout.encode_history(seqs, ids.codes)
        users = torch.zeros(len(seqs), dtype=torch.long)
        opt = torch.optim.Adam(model.parameters(), lr=3e-2)
        for _ in range(60):
            opt.zero_grad()
            model.sequence_loss(tokens, mask, users, 1, items=seqs,
                                catalog=ids.codes).loss.backward()  # fmt: skip
            opt.step()
        learned[name] = model.eval()
    model = learned["returns"]
    recency = model.repeat_recency.weight[1:6, 0]
    assert int(recency.argmax()) == 2  # recency 3
    tokens, mask = model.layout.encode_history(returns[:, :8], ids.codes)
    with torch.no_grad():
        memory, _ = model.encode(tokens, mask, torch.zeros(32, dtype=torch.long))
        head = model.item_log_probs(memory, ids.codes, returns[:, :8])
    assert (head.argmax(1) == returns[:, 8]).float().mean() >= 0.9
    fresh_model = learned["fresh"]
    with torch.no_grad():
        bias = fresh_model.repeat_scores(torch.zeros(1, 32), torch.arange(20)[None])
    assert bool((bias < 0).all())


def test_repeat_bias_needs_the_item_head_and_a_bool():
    with pytest.raises(ConfigError, match="repeat_bias adds to the item head"):
        OneRecConfig.preset("tiny", SIZES, repeat_bias=True)
    with pytest.raises(ConfigError, match="repeat_bias must be true or false"):
        OneRecConfig.preset("tiny", SIZES, item_loss_weight=1.0, repeat_bias=1)
    with pytest.raises(ModelError, match="no repeat bias"):
        tiny(item_loss_weight=1.0).repeat_scores(torch.zeros(1, 32), torch.zeros(1, 2))


def test_without_user_buckets_every_user_is_anonymous():
    ids = catalog()
    model = tiny(n_user_buckets=0).eval()
    tokens, mask, users, _ = batch(model, ids)
    with torch.no_grad():
        known, _ = model.encode(tokens, mask, users)
        anonymous, _ = model.encode(tokens, mask, torch.full_like(users, -1))
    assert torch.equal(known, anonymous) and model.user_emb is None
    assert tiny().num_parameters() - model.num_parameters() == 64 * model.config.d_model


def test_side_features_are_required_exactly_when_configured():
    ids = catalog()
    plain, with_features = tiny(), tiny(history_features=3)
    tokens, mask, users, _ = batch(plain, ids)
    b, n = mask.shape
    with pytest.raises(ModelError, match="reads none"):
        plain.encode(tokens, mask, users, torch.zeros(b, n, 3))
    with pytest.raises(ModelError, match="3 side features"):
        with_features.encode(tokens, mask, users)
    with pytest.raises(ModelError, match="3 side features"):
        with_features.encode(tokens, mask, users, torch.zeros(b, n, 2))
    memory, _ = with_features.encode(tokens, mask, users, torch.zeros(b, n, 3))
    assert memory.shape[:2] == (b, 1 + n * len(SIZES))


def test_pad_features_follows_pad_history():
    history = Ragged.from_lists([[1, 2, 3], [], [7]])
    feats = np.arange(8, dtype=np.float32).reshape(4, 2)  # one row per history item
    padded = pad_features(history, feats, max_len=2)
    assert pad_history(history, 2).tolist() == [[2, 3], [-1, -1], [-1, 7]]
    assert padded.tolist() == [[[2, 3], [4, 5]], [[0, 0], [0, 0]], [[0, 0], [6, 7]]]
    with pytest.raises(ModelError, match="Ragged history"):
        pad_features(history, feats[:3], max_len=2)


# --- config and sizes ---------------------------------------------------------------------------


def test_parameter_counts():
    dense = tiny(n_experts=0)
    assert dense.num_active_parameters() == dense.num_parameters()
    moe = tiny(n_experts=4, top_k=2)
    c = moe.config
    per_expert = 3 * c.d_model * c.expert_width
    assert moe.num_parameters() - moe.num_active_parameters() == c.decoder_layers * 2 * per_expert
    # a tied head adds nothing, an untied one a vocab x d_model matrix
    untied = tiny(n_experts=4, tie_embeddings=False)
    assert untied.num_parameters() - moe.num_parameters() == moe.layout.vocab_size * c.d_model
    assert "active per token" in moe.describe()


def test_presets_have_their_advertised_sizes():
    paper = [8192] * 3

    def size(name: str, level_sizes: list[int]) -> tuple[int, int]:
        with torch.device("meta"):  # no memory, no time: shapes only
            model = OneRec(OneRecConfig.preset(name, level_sizes))
        return model.num_parameters(), model.num_active_parameters()

    small, small_active = size("small", [256] * 3)
    assert 6.5e6 < small < 7.5e6  # 16 experts and 2 x 8,192 identity rows: the selected model
    assert 3e6 < small_active < 4e6
    base, base_active = size("base", paper)
    assert 0.08e9 < base < 0.13e9 and base_active < 0.6 * base
    large, large_active = size("large", paper)
    assert 0.85e9 < large < 1.2e9 and large_active < 0.4 * large
    tiger, tiger_active = size("tiger", [256] * 3 + [16])
    assert 3.5e6 < tiger < 4.5e6 and tiger_active == tiger  # dense
    assert set(PRESETS) == {"tiny", "small", "tiger", "base", "large"}


def test_config_json_round_trip():
    config = OneRecConfig.preset("small", [8, 8, 3], moe_balance="aux_loss", dropout=0.1)
    back = OneRecConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back == config
    assert config.expert_width == config.d_ff // config.top_k
    assert config.vocab_size == 3 + 8 + 8 + 3


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(d_model=30, n_heads=4), "divisible by n_heads"),
        (dict(n_experts=2, top_k=3), "top_k"),
        (dict(moe_balance="loss"), "moe_balance"),
        (dict(dropout=1.0), "dropout"),
        (dict(item_hash_dropout=-0.1), "item_hash_dropout"),
        (dict(input_dropout=1.0), "input_dropout"),
        (dict(history_dropout=1.0), "history_dropout"),
        (dict(level_sizes=[]), "level_sizes"),
        (dict(level_sizes=[4, 0]), "level_sizes"),
        (dict(max_history=0), "max_history"),
        (dict(d_ff=1, top_k=2, n_experts=4), "expert_d_ff"),
        (dict(encoder_layers=True), "encoder_layers"),
        (dict(aux_loss_weight=-1.0), "aux_loss_weight"),
        (dict(item_hash_buckets=-1), "item_hash_buckets"),
        (dict(n_user_buckets=-1), "n_user_buckets"),
        (dict(item_loss_weight=-0.5), "item_loss_weight"),
        (dict(rerank_weight=1.0), "needs the item head"),
        (dict(head_candidates=5), "needs the item head"),
        (dict(head_candidates=-1, item_loss_weight=1.0), "head_candidates"),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ConfigError, match=message):
        OneRecConfig(**{"level_sizes": SIZES, **changes})


def test_config_rejects_unknown_fields_and_presets():
    with pytest.raises(ConfigError, match="unknown"):
        OneRecConfig.from_dict({"level_sizes": SIZES, "d_modle": 8})
    with pytest.raises(ConfigError, match="unknown preset"):
        OneRecConfig.preset("huge", SIZES)
    with pytest.raises(ConfigError, match="unknown config fields"):
        OneRecConfig.preset("tiny", SIZES, heads=2)


def test_pooled_items_give_one_encoder_token_per_item():
    """With pool_items the encoder reads one token per history item, the sum of its code
    tokens' embeddings with the level embeddings (and its identity)."""
    ids = catalog()
    model = tiny(pool_items=True, item_hash_buckets=64, n_user_buckets=0).eval()
    tokens, mask, users, target = batch(model, ids, n=6)
    memory, memory_mask = model.encode(tokens, mask, users)
    assert memory.shape[1] == 1 + 6 and memory_mask.shape == (tokens.shape[0], 7)
    assert torch.equal(memory_mask[:, 1:], mask.bool())
    captured = {}
    handle = model.encoder[0].register_forward_pre_hook(lambda m, a: captured.update(x=a[0]))
    with torch.no_grad():
        model.encode(tokens, mask, users)
    handle.remove()
    expected = (model.tok_emb(tokens) + model.enc_level.weight).sum(2)
    expected = expected + model._item_identity(tokens)
    torch.testing.assert_close(captured["x"][:, 1:], expected)
    unpooled = tiny(item_hash_buckets=64, n_user_buckets=0)
    assert unpooled.encode(tokens, mask, users)[0].shape[1] == 1 + 6 * 3
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in unpooled.parameters())  # the same weights, read differently
    with pytest.raises(ConfigError, match="pool_items"):
        tiny(pool_items=1)


def test_item_head_options_own_table_and_residual_query():
    """item_head_tied=False scores items with a code table of the head's own, trained by the
    head's loss; item_query_residual adds the item state to its projection."""
    ids = catalog()
    items = torch.tensor([[-1, -1, 5, 9, 2, 7], [1, 2, 3, 4, 5, 6]])
    users = torch.tensor([3, 8])
    own = tiny(item_loss_weight=1.0, item_head_tied=False)
    assert tiny(item_loss_weight=1.0).item_out is None and own.item_out is not None
    tokens, mask = own.layout.encode_history(items, ids.codes)
    emb = own.item_embeddings(ids.codes[:2])
    torch.testing.assert_close(emb[1], own.item_out(tokens[1, 0]).sum(0))
    own.zero_grad()
    out = own.sequence_loss(tokens, mask, users, 1, items=items, catalog=ids.codes)
    out.item_sum.backward()  # the head's loss alone
    assert own.item_out.weight.grad.abs().sum() > 0
    residual = tiny(item_loss_weight=1.0, item_query_residual=True).eval()
    with torch.no_grad():
        memory, _ = residual.encode(tokens, mask, users)
        pooled = memory[:, 1:].reshape(2, 6, 3, -1).mean(2)
        torch.testing.assert_close(residual.item_queries(memory),
                                   pooled + residual.item_query(pooled))  # fmt: skip
    with pytest.raises(ConfigError, match="item_head_tied"):
        tiny(item_head_tied=0)


def test_decoder_context_adds_the_newest_items_state_at_bos():
    """decoder_context: BOS's input gains the projected state of the newest history item, and
    nothing else changes: a user without history, and every position after BOS's own input,
    decode as without it (same weights otherwise)."""
    ids = catalog()
    plain = tiny(n_experts=4).eval()
    context = tiny(n_experts=4, decoder_context=True).eval()
    context.load_state_dict(plain.state_dict(), strict=False)  # all but bos_context
    tokens, mask, users, target = batch(context, ids, b=4, m=1)
    dec_in, _ = context.layout.session_targets(target)
    with torch.no_grad():
        memory, memory_mask = context.encode(tokens, mask, users)
        x = context.tok_emb(dec_in)
        newest = context.column_states(memory)[:, -1]
        real = mask[:, -1].unsqueeze(1)  # row 0 has no history: no context
        got = context._with_context(x, memory, memory_mask)
        torch.testing.assert_close(got[:, 0], x[:, 0] + context.bos_context(newest) * real)
        assert torch.equal(got[:, 1:], x[:, 1:])
        ours = context(tokens, mask, users, dec_in)
        base = plain(tokens, mask, users, dec_in)
    torch.testing.assert_close(ours[0], base[0])  # the empty history
    assert not torch.allclose(ours[1:, 0], base[1:, 0], atol=1e-4)
    with pytest.raises(ConfigError, match="decoder_context"):
        tiny(decoder_context=1)


def test_head_dropouts_act_in_training_on_the_query_and_the_output_identities():
    """head_dropout thins the head's query and head_identity_dropout the identity part of the
    catalog's embeddings, in training only: in eval mode the head scores as without them."""
    ids = catalog()
    items = torch.tensor([[-1, -1, 5, 9, 2, 7], [1, 2, 3, 4, 5, 6]])
    users = torch.tensor([3, 8])
    head = dict(item_loss_weight=1.0, item_hash_buckets=16)
    plain = tiny(**head)
    tokens, mask = plain.layout.encode_history(items, ids.codes)

    def item_sum(model: OneRec) -> float:
        with torch.no_grad():
            return model.sequence_loss(tokens, mask, users, 1, items=items,
                                       catalog=ids.codes).item_sum.item()  # fmt: skip

    for option in ("head_dropout", "head_identity_dropout"):
        model = tiny(**head, **{option: 0.5})
        model.load_state_dict(plain.state_dict())
        model.train(), plain.train()
        torch.manual_seed(1)
        first = item_sum(model)
        torch.manual_seed(2)
        assert item_sum(model) != pytest.approx(first, abs=1e-6), option
        plain.eval(), model.eval()
        assert item_sum(model) == pytest.approx(item_sum(plain), abs=1e-6), option
    with torch.no_grad():
        tokens3 = ids.codes[:3].long() + torch.tensor(plain.layout.level_start)
        identity = plain._item_identity(tokens3.unsqueeze(0))[0]
        code_part = plain.item_embeddings(ids.codes[:3]) - identity
        dropped = tiny(**head, head_identity_dropout=0.5)
        dropped.load_state_dict(plain.state_dict())
        dropped.train()
        out = dropped.item_embeddings(ids.codes[:3]) - code_part  # the identity part alone
    kept = out.abs() > 1e-5  # dropped entries are 0 up to rounding, kept ones doubled
    assert (~kept).any() and torch.allclose(out[kept], 2 * identity[kept], atol=1e-5)
    with pytest.raises(ConfigError, match="head_dropout"):
        tiny(head_dropout=1.0)
