"""Our decoder as a Hugging Face ``T5ForConditionalGeneration``, and HF ``generate`` over sessions.

Public TIGER-style code generates semantic IDs with ``transformers``' T5 and ``generate(...,
prefix_allowed_tokens_fn=...)``. To compare that loop with ours (``beam_search_sessions``) on
*identical* weights, this module maps a :class:`OneRec` decoder one-to-one onto a T5 v1.1
decoder and reproduces our search with HF's beam search (``benchmarks/generation_speed.py``
times both; ``tests/test_hf_t5.py`` checks that they return the same sessions and scores).

The mapping (:func:`to_hf_t5`):

- **Encoder: not mapped.** Both sides run our ``OneRec.encode`` once; HF gets its output as
  ``encoder_outputs=BaseModelOutput(last_hidden_state=memory)`` with ``attention_mask=memory_mask``.
  HF's own encoder stack exists (as many layers as the decoder, never run: ``generate`` sizes
  its key/value cache from ``num_layers``).
- **Decoder block i**: ``layer[0].SelfAttention.{q,k,v,o}`` from our ``self_attn.{q, kv[:d],
  kv[d:], proj}``, ``layer[1].EncDecAttention`` likewise from ``cross_attn``; the q weight is
  multiplied by ``d_kv ** -0.5`` because T5 does not scale attention scores (we use SDPA's
  1/sqrt(d_kv)). ``layer[0/1/2].layer_norm`` = our ``norm1/2/3`` (both RMSNorm, same eps).
  Feed-forward ``layer[2].DenseReluDense``: a dense decoder maps to T5's gated-SiLU
  (``wi_0`` = gate, ``wi_1`` = up, ``wo`` = down); **a MoE decoder replaces the module with
  :class:`MoEFeedForward`, a thin wrapper around a copy of our ``MoE`` layer** (T5 has no MoE).
- ``block[0].layer[0].SelfAttention.relative_attention_bias`` = our ``dec_rel`` (T5's
  unidirectional buckets are exactly ``causal_bucket``); ``decoder.final_layer_norm`` =
  ``dec_norm``; ``shared`` / ``decoder.embed_tokens`` = ``tok_emb``; ``lm_head`` = ``tok_emb``
  (or our ``lm_head`` when untied). ``tie_word_embeddings=False`` in the T5 config only switches
  off T5's ``d_model ** -0.5`` output scaling (T5 v1.1 has none, neither do we).
- **Cross-attention recency bias.** Our decoder adds ``OneRec.cross_bias(memory_mask)``
  ``(B, H, 1, S)`` (a per-head bias by recency of each history token, -inf on padding) to the
  cross-attention scores. HF's T5 gives cross-attention a zero ``position_bias`` (made in
  block 0's ``EncDecAttention`` when none is passed, then shared by every later block) plus the
  encoder padding mask. The hook is one forward pre-hook on block 0's ``EncDecAttention``: when
  it is called without a ``position_bias`` it passes ours instead, repeated for the beams (HF
  expands the batch user-major with ``repeat_interleave``, as we do). Later blocks reuse it
  through T5's own sharing, so every layer adds exactly our bias. The bias is per batch of
  users: set it with :func:`set_cross_bias` before calling the model (:func:`hf_generate_sessions`
  does).

The search (:func:`hf_generate_sessions`): HF beam search takes ``log_softmax`` over the whole
vocabulary, then runs logits processors. Our scores are each level's log-softmax over its own
slice, so :class:`LevelLogSoftmax` keeps the slice of the level the step predicts and
renormalizes it (and forces SEP, log-prob 0, where an item ends). Then HF's own
``PrefixConstrainedLogitsProcessor`` masks with :class:`SessionPrefixConstraint`, a
``prefix_allowed_tokens_fn`` over a Python dict trie as public TIGER code writes it (with "no
item twice per session" checked against the prefix's earlier items). The two processors are
passed as one ``logits_processor`` list, in that order, rather than as
``prefix_allowed_tokens_fn=``: ``generate`` puts its own prefix processor *before* any custom
processor, and renormalizing after the trie mask would renormalize over the allowed codes only,
a different score. ``length_penalty=0`` makes a finished beam's score the plain sum of its
log-probs. The final SEP is not generated (``max_new_tokens = m * (L'+1) - 1``), as ours does not
decode it either.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from transformers import GenerationConfig, T5Config, T5ForConditionalGeneration
from transformers.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    PrefixConstrainedLogitsProcessor,
)
from transformers.modeling_outputs import BaseModelOutput

from onerec.exceptions import ModelError
from onerec.model.onerec import MoE, OneRec
from onerec.model.tokens import TokenLayout
from onerec.tokenizer.residual import SemanticIds


class MoEFeedForward(nn.Module):
    """Stands in for T5's ``DenseReluDense``: hidden states in, our MoE layer's output out."""

    def __init__(self, moe: MoE) -> None:
        super().__init__()
        self.moe = moe

    def forward(self, hidden_states: Tensor) -> Tensor:
        return self.moe(hidden_states)


class _CrossBias:
    """The recency bias ``(B, H, 1, S)`` of the current batch of users, and the pre-hook that
    hands it to block 0's cross-attention, repeated for the beams (rows user-major)."""

    def __init__(self) -> None:
        self.bias: Tensor | None = None
        self._expanded: Tensor | None = None

    def set(self, bias: Tensor | None) -> None:
        self.bias, self._expanded = bias, None

    def __call__(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if kwargs.get("position_bias") is not None:
            return args, kwargs
        if self.bias is None:
            raise ModelError("no cross-attention bias set: call set_cross_bias(hf, bias) first")
        hidden = args[0] if args else kwargs["hidden_states"]
        rows, users = hidden.shape[0], self.bias.shape[0]
        if rows % users:
            raise ModelError(f"{rows} decoder rows are not a multiple of {users} users")
        if self._expanded is None or self._expanded.shape[0] != rows:
            self._expanded = self.bias.repeat_interleave(rows // users, dim=0).to(hidden.dtype)
        kwargs["position_bias"] = self._expanded
        return args, kwargs


def t5_config(model: OneRec) -> T5Config:
    """The T5 v1.1 configuration of ``model``'s decoder. The encoder stack is never run, but it
    gets the decoder's depth: ``generate`` sizes its key/value cache by ``num_layers``."""
    c = model.config
    return T5Config(
        vocab_size=model.layout.vocab_size,
        d_model=c.d_model,
        d_kv=c.d_model // c.n_heads,
        d_ff=c.d_ff,
        num_layers=c.decoder_layers,
        num_decoder_layers=c.decoder_layers,
        num_heads=c.n_heads,
        relative_attention_num_buckets=c.rel_buckets,
        relative_attention_max_distance=c.rel_max_distance,
        dropout_rate=0.0,
        layer_norm_epsilon=c.norm_eps,
        feed_forward_proj="gated-silu",
        tie_word_embeddings=False,  # in T5Config: no d_model**-0.5 output scaling (T5 v1.1)
        decoder_start_token_id=TokenLayout.BOS,
        pad_token_id=TokenLayout.PAD,
        eos_token_id=None,
        bos_token_id=None,
    )


@torch.no_grad()
def to_hf_t5(model: OneRec) -> T5ForConditionalGeneration:
    """A ``T5ForConditionalGeneration`` whose decoder computes exactly ``model``'s decoder (see the
    module docstring), in eval mode, with the cross-attention bias hook installed."""
    c = model.config
    if c.decoder_context:
        raise ModelError(
            "a model with decoder_context adds the newest item's state to BOS, which T5's "
            "decoder has no place for: compare generation loops on a model without it"
        )
    hf = T5ForConditionalGeneration(t5_config(model)).eval()
    d, hd = c.d_model, c.d_model // c.n_heads

    def attention(target: nn.Module, source: nn.Module) -> None:
        target.q.weight.copy_(source.q.weight * hd**-0.5)
        target.k.weight.copy_(source.kv.weight[:d])
        target.v.weight.copy_(source.kv.weight[d:])
        target.o.weight.copy_(source.proj.weight)

    for ours, block in zip(model.decoder, hf.decoder.block):
        attention(block.layer[0].SelfAttention, ours.self_attn)
        attention(block.layer[1].EncDecAttention, ours.cross_attn)
        block.layer[0].layer_norm.weight.copy_(ours.norm1.weight)
        block.layer[1].layer_norm.weight.copy_(ours.norm2.weight)
        block.layer[2].layer_norm.weight.copy_(ours.norm3.weight)
        if isinstance(ours.ffn, MoE):
            block.layer[2].DenseReluDense = MoEFeedForward(copy.deepcopy(ours.ffn).eval())
        else:
            ffn = block.layer[2].DenseReluDense
            ffn.wi_0.weight.copy_(ours.ffn.gate.weight)
            ffn.wi_1.weight.copy_(ours.ffn.up.weight)
            ffn.wo.weight.copy_(ours.ffn.down.weight)
    hf.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight.copy_(
        model.dec_rel.weight
    )
    hf.decoder.final_layer_norm.weight.copy_(model.dec_norm.weight)
    hf.shared.weight.copy_(model.tok_emb.weight)
    hf.decoder.embed_tokens.weight.copy_(model.tok_emb.weight)
    head = model.tok_emb.weight if model.lm_head is None else model.lm_head.weight
    # T5 ties lm_head to the embedding; an untied model gets a parameter of its own
    hf.lm_head.weight = nn.Parameter(head.detach().clone())
    hook = _CrossBias()
    hf._onerec_cross_bias = hook
    hf.decoder.block[0].layer[1].EncDecAttention.register_forward_pre_hook(hook, with_kwargs=True)
    return hf.to(next(model.parameters()).device)


def set_cross_bias(hf: T5ForConditionalGeneration, bias: Tensor | None) -> None:
    """Use ``bias`` ``(B, H, 1, S)`` (``OneRec.cross_bias(memory_mask)``) for the next calls."""
    hook = getattr(hf, "_onerec_cross_bias", None)
    if hook is None:
        raise ModelError("this T5 model was not made by to_hf_t5: it has no cross-bias hook")
    hook.set(bias)


@torch.no_grad()
def hf_decoder_logits(
    hf: T5ForConditionalGeneration,
    model: OneRec,
    memory: Tensor,
    memory_mask: Tensor,
    decoder_input: Tensor,
) -> Tensor:
    """Teacher-forced logits ``(B, T, vocab)`` of HF's decoder (to check the mapping against
    ``model.logits(model.decode(...))``)."""
    set_cross_bias(hf, model.cross_bias(memory_mask))
    out = hf(
        encoder_outputs=BaseModelOutput(last_hidden_state=memory),
        attention_mask=memory_mask.long(),
        decoder_input_ids=decoder_input,
        use_cache=False,
    )
    return out.logits


class LevelLogSoftmax(LogitsProcessor):
    """At a step that predicts a level-l code, the log-softmax over level l's slice only (-inf
    elsewhere); at a step that predicts SEP, SEP with log-prob 0. Input: HF's full-vocabulary
    log-probs (renormalizing a slice of them equals the slice's own log-softmax)."""

    def __init__(self, layout: TokenLayout) -> None:
        self.layout = layout

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        slot = (input_ids.shape[1] - 1) % self.layout.block  # input_ids starts with BOS
        out = torch.full_like(scores, float("-inf"))
        if slot == self.layout.n_levels:
            out[:, TokenLayout.SEP] = 0.0
        else:
            part = scores[:, self.layout.level_slice(slot)]
            out[:, self.layout.level_slice(slot)] = part - part.logsumexp(dim=-1, keepdim=True)
        return out


class SessionPrefixConstraint:
    """``prefix_allowed_tokens_fn`` for sessions ``[BOS] c.. [SEP] c.. [SEP] ...``, the way
    public TIGER code writes it: a dict from each item prefix (a tuple of tokens) to its
    allowed next tokens, SEP after a full item, and no item twice in a session: a next code is
    dropped when every catalog item below the prefix it makes is already among the session's
    earlier items (the rule ``beam_search_sessions`` applies, at every level)."""

    def __init__(self, semantic_ids: SemanticIds, layout: TokenLayout) -> None:
        self.layout = layout
        start = layout.level_start
        self.children: dict[tuple[int, ...], list[int]] = {}
        self.items_below: dict[tuple[int, ...], int] = {}
        self.item_of: dict[tuple[int, ...], int] = {}
        for item, codes in enumerate(semantic_ids.codes.tolist()):
            tokens = tuple(c + s for c, s in zip(codes, start))
            self.item_of[tokens] = item
            for depth in range(len(tokens)):
                prefix, child = tokens[:depth], tokens[: depth + 1]
                if child not in self.items_below:
                    self.children.setdefault(prefix, []).append(tokens[depth])
                self.items_below[child] = self.items_below.get(child, 0) + 1
        for allowed in self.children.values():
            allowed.sort()

    def __call__(self, batch_id: int, sent: Tensor) -> list[int]:
        generated = sent.tolist()[1:]  # without the decoder start token (BOS)
        block, n_levels = self.layout.block, self.layout.n_levels
        item, slot = divmod(len(generated), block)
        if slot == n_levels:
            return [TokenLayout.SEP]
        prefix = tuple(generated[item * block : item * block + slot])
        allowed = self.children.get(prefix, [])
        if item == 0:
            return allowed
        earlier = [tuple(generated[k * block : k * block + slot + 1]) for k in range(item)]
        return [t for t in allowed
                if self.items_below[prefix + (t,)] > earlier.count(prefix + (t,))]  # fmt: skip


class GeneratedSessions(NamedTuple):
    """As ``onerec.generation.Beams`` in session mode: items ``(B, beam, m)`` (-1 where a beam is
    not a catalog session), session log-probs ``(B, beam)`` best first, codes ``(B, beam, m,
    L')``."""

    items: Tensor
    log_probs: Tensor
    codes: Tensor


def hf_generate_sessions(
    hf: T5ForConditionalGeneration,
    model: OneRec,
    memory: Tensor,
    memory_mask: Tensor,
    constraint: SessionPrefixConstraint,
    beam_size: int,
    n_items: int,
) -> GeneratedSessions:
    """``beam_size`` sessions of ``n_items`` items per user by HF's ``generate`` (beam search,
    ``prefix_allowed_tokens_fn``), from our encoder's ``memory`` / ``memory_mask``."""
    layout = model.layout
    b, block = memory.shape[0], layout.block
    set_cross_bias(hf, model.cross_bias(memory_mask))
    config = GenerationConfig(
        num_beams=beam_size,
        num_return_sequences=beam_size,
        do_sample=False,
        length_penalty=0.0,
        early_stopping=True,
        max_new_tokens=n_items * block - 1,
        decoder_start_token_id=TokenLayout.BOS,
        pad_token_id=TokenLayout.PAD,
        bos_token_id=None,
        eos_token_id=None,
        output_scores=True,
        return_dict_in_generate=True,
        use_cache=True,
    )
    processors = LogitsProcessorList(
        [LevelLogSoftmax(layout), PrefixConstrainedLogitsProcessor(constraint, beam_size)]
    )
    with torch.no_grad():
        out = hf.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=memory),
            attention_mask=memory_mask.long(),
            generation_config=config,
            logits_processor=processors,
        )
    sequences = out.sequences[:, 1:]  # (B*beam, m*(L'+1) - 1)
    sep = sequences.new_full((sequences.shape[0], 1), TokenLayout.SEP)  # the final, ungenerated SEP
    sequences = torch.cat([sequences, sep], dim=1)
    tokens = sequences.view(b, beam_size, n_items, block)[..., : layout.n_levels]
    items = torch.tensor([constraint.item_of.get(tuple(t), -1)
                          for t in tokens.reshape(-1, layout.n_levels).tolist()])  # fmt: skip
    items = items.view(b, beam_size, n_items).to(memory.device)
    scores = out.sequences_scores.view(b, beam_size).float()
    valid = (items >= 0).all(dim=2) & (scores > -1e8)  # HF parks empty beam slots near -1e9
    scores = scores.masked_fill(~valid, float("-inf"))
    codes = tokens - torch.tensor(layout.level_start, device=tokens.device)
    codes = codes.masked_fill(~valid[..., None, None], -1)
    return GeneratedSessions(items.masked_fill(~valid.unsqueeze(2), -1), scores, codes)
