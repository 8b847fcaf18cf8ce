"""OneRec: an encoder-decoder over semantic-ID tokens, with a sparse MoE decoder.

Read top to bottom: RMSNorm, SwiGLU, attention, relative positions, the MoE layer, encoder and
decoder blocks, then the model with ``encode`` / ``decode`` / ``sequence_loss`` and the cached
``decode_step`` that beam search (``onerec.generation``) drives.

- The **encoder** reads a user: a user token (hashed user-id embedding, or zeros with
  ``n_user_buckets=0``) followed by every item of the user's sequence as its L' code tokens
  (token + level embedding, plus optional side features and a hashed item identity). Attention is
  *block-causal* over items: a token sees its own item, the ``max_history - 1`` items before it
  and the user token, never a later item. Positions are relative: a learned bias per head and
  item distance. So the encoder state of item i summarizes the sequence up to i, whatever comes
  after, and one encoder pass over a user's whole training sequence serves every next-item
  target in it (``sequence_loss``); at inference the history is simply the sequence.
- The **decoder** generates a session ``[BOS] c1_1..c1_L [SEP] c2_1.. [SEP] ...`` (see
  ``tokens.py``): token embedding only (each level has its own token slice, so a token says
  which level it is), causal self-attention with T5's bucketed relative position bias,
  cross-attention to the encoder and a sparse MoE feed-forward (dense when ``n_experts`` <= 1).
  A target that starts after item j cross-attends to the user token and to items
  ``j - max_history .. j - 1`` only, with a learned bias per head and recency (0 = the most
  recent item): the history the protocol allows, and a cheap way to find the latest item.
- The **output head** is tied to the token embedding by default (``tie_embeddings``).
- The **loss** is next-token cross-entropy in which the softmax at a position predicting a level-l
  code runs over level l's slice of the vocabulary only. Positions predicting SEP are skipped:
  SEP always follows the L'-th code. With ``moe_balance="aux_loss"`` the Switch load-balancing
  loss is added.

The decoder is a T5 v1.1 decoder (RMSNorm, gated-SiLU feed-forward, bucketed relative self-
attention bias, no absolute positions) with a recency bias on cross-attention, so its weights map
one-to-one onto Hugging Face's ``T5ForConditionalGeneration`` (``benchmarks/generation_speed.py``
uses this to compare generation loops on identical weights).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onerec.exceptions import ModelError
from onerec.model.config import OneRecConfig, missing_fields
from onerec.model.tokens import TokenLayout
from onerec.model.softmax import full_softmax_cross_entropy
from onerec.runs import check_shapes, read_safetensors, write_safetensors, write_text

# --- building blocks ----------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Scale by the root mean square (no centring, no bias), in float32 for stability."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), self.weight.shape, self.weight, self.eps).type_as(x)


class SwiGLU(nn.Module):
    """The gated feed-forward of T5 v1.1 / LLaMA: down(silu(gate(x)) * up(x))."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Attention(nn.Module):
    """Multi-head attention. Keys and values are made separately (``keys_values``) so that a
    decoder can cache them: its own past tokens' for self-attention, the encoder memory's once
    for cross-attention."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        d = config.d_model
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)  # (B, H, T, hd)

    def keys_values(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``(B, H, S, hd)`` of the tokens ``source`` (B, S, d)."""
        k, v = self.kv(source).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
        """Queries from ``x`` (N, T, d) attend to ``k``, ``v`` (B, H, S, hd); ``bias`` is added
        to the scaled scores (-inf where attention is not allowed), broadcastable to
        ``(B, H, G*T, S)``.

        N may be a multiple G of B (G beams, or G training targets, per user; rows user-major).
        All G rows' queries attend to the same keys, so they are folded into the query axis
        instead of copying the keys and values G times.
        """
        n, t, d = x.shape
        b = k.shape[0]
        q = self._heads(self.q(x).reshape(b, (n // b) * t, d))  # (B, H, G*T, hd)
        if bias is not None:
            bias = bias.to(q.dtype)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


def causal_bucket(distance: Tensor, num_buckets: int, max_distance: int) -> Tensor:
    """T5's relative-position bucket of a key ``distance`` >= 0 positions back (causal case):
    one bucket per distance below ``num_buckets // 2``, then logarithmically wider buckets up to
    ``max_distance``, the last bucket holding everything farther."""
    exact = num_buckets // 2
    scaled = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = (exact + (scaled * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return torch.where(distance < exact, distance, large)


class MoE(nn.Module):
    """Sparse mixture of SwiGLU experts with top-k routing.

    A linear router scores the E experts for every token; the k best are chosen and their
    outputs mixed with gates = softmax of the chosen experts' router logits (so gates sum to 1).
    Tokens are grouped by expert (one sort), and each expert runs once on its tokens: a loop over
    experts, never over tokens.

    Load balancing (``moe_balance``):
    - "aux_loss": the Switch Transformer loss ``E * sum_e f_e * P_e`` (f_e: share of routed
      slots, P_e: mean router probability), 1 at perfect balance, kept in ``aux_loss``;
    - "bias": auxiliary-loss-free (DeepSeek-V3, used by the OneRec technical report): a
      per-expert ``bias`` is added to the router logits for the *choice* of experts only (not
      for the gates), and ``update_bias`` moves it after each training step:
      ``bias += rate * sign(mean_load - load)``, so overloaded experts become less attractive.
    - "none": neither.

    ``load`` holds the last forward's share of routed slots per expert (sums to 1; perfect
    balance = 1/E), for logging.
    """

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.n_experts, self.top_k = config.n_experts, config.top_k
        self.balance = config.moe_balance
        self.router = nn.Linear(config.d_model, config.n_experts, bias=False)
        self.experts = nn.ModuleList(
            SwiGLU(config.d_model, config.expert_width) for _ in range(config.n_experts)
        )
        self.register_buffer("bias", torch.zeros(config.n_experts))  # saved: it steers routing
        self.register_buffer("load", torch.zeros(config.n_experts), persistent=False)
        # routed slots per expert since the last update_bias (training forwards only)
        self.register_buffer("pending_load", torch.zeros(config.n_experts), persistent=False)
        self.aux_loss: Tensor = torch.zeros(())

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Experts ``(N, k)``, gates ``(N, k)`` and router logits ``(N, E)`` of tokens (N, d)."""
        logits = self.router(x).float()  # (N, E)
        select = logits + self.bias if self.balance == "bias" else logits
        experts = select.topk(self.top_k, dim=-1).indices  # (N, k)
        gates = logits.gather(1, experts).softmax(dim=-1)  # (N, k)
        return experts, gates, logits

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, d)
        experts, gates, logits = self.route(x)
        counts = torch.bincount(experts.flatten(), minlength=self.n_experts)  # (E,)
        with torch.no_grad():
            self.load.copy_(counts / counts.sum().clamp(min=1))
            if self.training:
                self.pending_load += counts
        if self.balance == "aux_loss":
            probs = logits.softmax(dim=-1).mean(dim=0)  # (E,) differentiable
            self.aux_loss = self.n_experts * (self.load * probs).sum()
        else:
            self.aux_loss = logits.new_zeros(())

        # group the N*k (token, expert) slots by expert (one sort, one gather), run each expert
        # once on its contiguous group, then scatter the gated outputs back (one index_add)
        order = torch.argsort(experts.flatten(), stable=True)  # (N*k,)
        token = order // self.top_k
        groups = x.index_select(0, token).split(counts.tolist())
        ys = [expert(g) for expert, g in zip(self.experts, groups) if g.shape[0]]
        out = torch.zeros_like(x)
        if ys:
            y = torch.cat(ys) * gates.flatten()[order].unsqueeze(1)
            out.index_add_(0, token, y.to(out.dtype))
        return out.reshape(shape)

    @torch.no_grad()
    def update_bias(self, rate: float) -> None:
        """One auxiliary-loss-free balancing step on the load seen since the last call."""
        total = self.pending_load.sum()
        if total > 0:
            load = self.pending_load / total
            self.bias += rate * torch.sign(load.mean() - load)
        self.pending_load.zero_()


class EncoderBlock(nn.Module):
    """Pre-norm: x + attention(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.norm1 = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.norm2 = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = SwiGLU(config.d_model, config.d_ff)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, bias: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, *self.attn.keys_values(h), bias=bias))
        return x + self.drop(self.ffn(self.norm2(x)))


class DecoderBlock(nn.Module):
    """Pre-norm: causal self-attention, cross-attention to the encoder, then MoE (or dense) FFN."""

    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = RMSNorm(d, config.norm_eps)
        self.self_attn = Attention(config)
        self.norm2 = RMSNorm(d, config.norm_eps)
        self.cross_attn = Attention(config)
        self.norm3 = RMSNorm(d, config.norm_eps)
        self.ffn: nn.Module = MoE(config) if config.is_moe else SwiGLU(d, config.d_ff)
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        self_bias: Tensor,
        cross_kv: tuple[Tensor, Tensor],
        cross_bias: Tensor,
        cache: tuple[Tensor, Tensor] | None = None,
        start: int = 0,
    ) -> Tensor:
        """New tokens ``x`` (N, T, d) at positions ``start .. start+T-1``.

        ``cache``: key and value buffers ``(N, H, capacity, hd)`` holding the ``start`` earlier
        tokens' keys/values; the new tokens' are written after them (generation). Without it,
        ``x`` is the whole sequence (teacher forcing, ``start`` 0).
        ``self_bias`` (1, H, T, start + T), or ``(1, H, T, capacity)`` with a cache: relative
        position bias, -inf on future tokens (and on the buffer's slots not yet written);
        ``cross_bias``: recency bias over the encoder tokens, -inf where not allowed."""
        h = self.norm1(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            end = start + x.shape[1]
            cache[0][:, :, start:end] = k
            cache[1][:, :, start:end] = v
            # attend over the whole buffer: slots after ``end`` hold finite stale values that
            # the causal bias masks (-inf), and a contiguous key tensor makes CPU SDPA about
            # twice as fast as a sliced one
            k, v = cache
        x = x + self.drop(self.self_attn(h, k, v, bias=self_bias))
        x = x + self.drop(self.cross_attn(self.norm2(x), *cross_kv, bias=cross_bias))
        return x + self.drop(self.ffn(self.norm3(x)))


# --- the model ----------------------------------------------------------------------------------


class LossOutput(NamedTuple):
    loss: Tensor  # what to minimize: ntp + aux_loss_weight * aux + item_loss_weight * item
    ntp: Tensor  # next-token cross-entropy: sum over code positions / normalizer
    aux: Tensor  # MoE load-balancing loss summed over MoE layers (0 unless "aux_loss")
    n_codes: int  # code positions that entered the loss (this process's share)
    item_sum: Tensor | None = None  # the item head's cross-entropy summed over targets
    n_item_targets: int = 0  # targets it was summed over (this process's share)


@dataclass
class DecoderCache:
    """What ``decode_step`` keeps between calls.

    ``cross_kv``: per decoder layer, the encoder memory's keys/values ``(B, H, S, hd)``,
    computed once; ``cross_bias`` ``(B, H, 1, S)``: the recency bias of a target that follows
    the whole history. ``self_kv``: one preallocated, zero-initialized buffer ``(2 * layers, N,
    H, capacity, hd)`` with every layer's self-attention keys (``2l``) and values (``2l + 1``)
    of the ``length`` tokens decoded so far (N = B * beams): new tokens are written in place,
    each layer's keys and values are contiguous, and reordering the beams is a single gather.
    ``self_bias``: the decoder's position bias ``(1, H, capacity, capacity)``, computed once and
    sliced per step.
    """

    cross_kv: list[tuple[Tensor, Tensor]]
    cross_bias: Tensor
    capacity: int = 0
    self_kv: Tensor | None = None
    self_bias: Tensor | None = None
    length: int = 0
    _spare: Tensor | None = None  # the reorder's destination, reused between steps

    def layer(self, i: int) -> tuple[Tensor, Tensor]:
        """Layer ``i``'s key and value buffers ``(N, H, capacity, hd)`` (views)."""
        assert self.self_kv is not None
        return self.self_kv[2 * i], self.self_kv[2 * i + 1]

    def reorder(self, rows: Tensor) -> None:
        """Keep decoder rows ``rows`` (N,), e.g. every surviving beam's parent beam."""
        if self.self_kv is None:
            return
        if self._spare is None or self._spare.shape != self.self_kv.shape:
            self._spare = torch.empty_like(self.self_kv)
        layers, n = self.self_kv.shape[:2]  # gather whole rows into the spare, then swap the two
        torch.index_select(self.self_kv.view(layers, n, -1), 1, rows,
                           out=self._spare.view(layers, n, -1))  # fmt: skip
        self.self_kv, self._spare = self._spare, self.self_kv


_HASH_PRIME = 2_147_483_647  # 2^31 - 1: keys and hash coefficients stay below it
_ITEM_HASHES = ((1_103_515_245, 12_345), (747_796_405, 2_891_336_453 % _HASH_PRIME))


class OneRec(nn.Module):
    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.config = config
        self.layout = TokenLayout(config.level_sizes)
        # encoder tokens per history item: one per code, or one pooled token (pool_items)
        self.item_width = 1 if config.pool_items else config.n_levels
        d, n_levels, heads = config.d_model, config.n_levels, config.n_heads
        self.tok_emb = nn.Embedding(self.layout.vocab_size, d)
        self.user_emb = nn.Embedding(config.n_user_buckets, d) if config.n_user_buckets else None
        self.enc_level = nn.Embedding(n_levels, d)
        f = config.history_features
        self.feature_proj = nn.Linear(f, d, bias=False) if f else None
        h = config.item_hash_buckets
        self.item_hash = nn.ModuleList(nn.Embedding(h, d) for _ in _ITEM_HASHES) if h else None
        self.item_hash_drop = nn.Dropout(config.item_hash_dropout)
        self.head_drop = nn.Dropout(config.head_dropout)
        self.head_identity_drop = nn.Dropout(config.head_identity_dropout)
        p = config.dropout if config.input_dropout is None else config.input_dropout
        self.input_drop = nn.Dropout(p)
        # relative-position biases, one value per head: item distance in the encoder, recency of
        # a history item seen from a target in cross-attention (the last row: the user token),
        # T5's distance buckets in decoder self-attention
        self.enc_rel = nn.Embedding(config.max_history + 1, heads)
        self.cross_rel = nn.Embedding(config.max_history + 1, heads)
        self.dec_rel = nn.Embedding(config.rel_buckets, heads)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.encoder_layers))
        self.enc_norm = RMSNorm(d, config.norm_eps)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_layers))
        self.dec_norm = RMSNorm(d, config.norm_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(d, self.layout.vocab_size,
                                                                     bias=False)  # fmt: skip
        head = config.item_loss_weight > 0
        self.item_query = nn.Linear(d, d, bias=False) if head else None
        self.item_out = (nn.Embedding(self.layout.vocab_size, d)
                         if head and not config.item_head_tied else None)  # fmt: skip
        self.bos_context = nn.Linear(d, d, bias=False) if config.decoder_context else None
        # repeat_bias: a score per recency of a seen item (row 0 unused) and per user
        repeat = config.repeat_bias
        self.repeat_recency = nn.Embedding(config.max_history + 1, 1) if repeat else None
        self.repeat_user = nn.Linear(d, 1) if repeat else None
        self.apply(self._init_weights)
        for table in (self.enc_rel, self.cross_rel, self.dec_rel):
            nn.init.zeros_(table.weight)  # start without positional preferences
        if self.repeat_recency is not None and self.repeat_user is not None:
            for tensor in (self.repeat_recency.weight, *self.repeat_user.parameters()):
                nn.init.zeros_(tensor)  # start as a head without it

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # --- encoder ------------------------------------------------------------------------------
    def encode(
        self,
        history_tokens: Tensor,
        history_mask: Tensor,
        user_ids: Tensor,
        features: Tensor | None = None,
        hide: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Encoder memory ``(B, 1 + n*w, d)`` and its mask (True = a real token); ``w`` is
        ``item_width``: L' tokens per history item, or 1 with ``pool_items``.

        ``history_tokens`` (B, n, L'): every item's code tokens (``TokenLayout.encode_history``),
        oldest first; ``history_mask`` (B, n): True for real items (padding anywhere, usually on
        the left); ``user_ids`` (B,): user indices, hashed into ``n_user_buckets`` rows (id mod
        buckets: collision-free while there are no more users than buckets); -1 for a user the
        model has not seen (the user token is then a zero vector). ``n`` may exceed
        ``max_history``: each item then sees only the ``max_history`` items up to itself.
        ``features`` (B, n, history_features): side features of every history item (zeros on
        padding), required exactly when the config has ``history_features > 0``.
        ``hide`` (B, n): items that no later item may attend to (``history_dropout``, drawn by
        :meth:`hidden_items`); None hides nothing.
        """
        c = self.config
        if history_tokens.ndim != 3 or history_tokens.shape[2] != c.n_levels:
            raise ModelError(
                f"history_tokens must be (B, n, {c.n_levels}), got {tuple(history_tokens.shape)}"
            )
        b, n = history_tokens.shape[:2]
        if tuple(history_mask.shape) != (b, n):
            raise ModelError(
                f"history_mask must be (B, n) = {(b, n)}, got {tuple(history_mask.shape)}"
            )
        if tuple(user_ids.shape) != (b,) or user_ids.dtype.is_floating_point:
            raise ModelError(f"user_ids must be ({b},) integers, got {tuple(user_ids.shape)}")
        x = self.tok_emb(history_tokens) + self.enc_level.weight  # (B, n, L', d)
        if c.pool_items:  # one token per item: the sum of its codes' (as item_embeddings)
            x = x.sum(2, keepdim=True)  # (B, n, 1, d)
        w = self.item_width
        if self.item_hash is not None:
            x = x + self.item_hash_drop(self._item_identity(history_tokens)).unsqueeze(2)
        if self.feature_proj is not None or features is not None:
            x = x + self._feature_embedding(features, b, n).unsqueeze(2)
        if self.user_emb is None:  # no user-id embedding: every user is anonymous
            user = x.new_zeros(b, 1, x.shape[-1])
        else:
            user = self.user_emb(torch.remainder(user_ids.long(), c.n_user_buckets))
            user = (user * (user_ids >= 0).unsqueeze(1)).unsqueeze(1)  # -1: anonymous, zeros
        x = torch.cat([user, x.reshape(b, n * w, -1)], dim=1)  # (B, S = 1 + n*w, d)
        mask = history_mask.bool()
        mask = torch.cat([mask.new_ones(b, 1), mask.repeat_interleave(w, dim=1)], dim=1)
        bias = self._encoder_bias(mask, n, hide)
        x = self.input_drop(x)
        for block in self.encoder:
            x = block(x, bias)
        return self.enc_norm(x), mask

    def _item_identity(self, history_tokens: Tensor) -> Tensor:
        """``(B, n, d)``: the item-identity embedding of every history item: its code tuple,
        reduced mod a prime level by level, then hashed by each universal hash ``(a k + b) mod p
        mod buckets`` into its own table; the rows are summed. Integer arithmetic stays below
        2^62, so CPU and GPU hash alike."""
        key = torch.zeros(history_tokens.shape[:2], dtype=torch.int64, device=history_tokens.device)
        for level in range(history_tokens.shape[2]):
            key = torch.remainder(key * self.layout.vocab_size + history_tokens[..., level],
                                  _HASH_PRIME)  # fmt: skip
        out = 0
        for (a, b), table in zip(_ITEM_HASHES, self.item_hash):  # type: ignore[arg-type]
            out = out + table(torch.remainder(torch.remainder(key * a + b, _HASH_PRIME),
                                              table.num_embeddings))  # fmt: skip
        return out

    def _feature_embedding(self, features: Tensor | None, b: int, n: int) -> Tensor:
        """``(B, n, d)``: the projection of every history item's side features."""
        f = self.config.history_features
        if self.feature_proj is None:
            raise ModelError(
                "features were given but the model reads none: build it with history_features="
                "<numbers per item> to use side features"
            )
        if features is None or tuple(features.shape) != (b, n, f):
            got = None if features is None else tuple(features.shape)
            raise ModelError(
                f"the model reads {f} side features per history item: pass features of shape "
                f"(B, n, {f}) = {(b, n, f)}, got {got}"
            )
        return self.feature_proj(features.to(self.feature_proj.weight.dtype))

    def _token_columns(self, n: int, device: torch.device) -> Tensor:
        """The item column ``(n * w,)`` of every history token after the user token."""
        return torch.arange(n, device=device).repeat_interleave(self.item_width)

    def hidden_items(self, mask: Tensor) -> Tensor | None:
        """``(B, n)``: the history items to hide in this training forward (``history_dropout``;
        ``mask`` (B, n) marks real items), or None in eval mode or when it is 0."""
        p = self.config.history_dropout
        if not self.training or p == 0:
            return None
        return torch.rand(mask.shape, device=mask.device) < p

    def _encoder_bias(self, mask: Tensor, n: int, hide: Tensor | None = None) -> Tensor:
        """``(B, H, S, S)`` self-attention bias: block-causal over items within ``max_history``
        items, everyone sees the user token, the user token only itself; -inf elsewhere, on
        padded keys, and on ``hide`` (B, n) items' keys except for their own tokens."""
        window, s = self.config.max_history, mask.shape[1]
        col = self._token_columns(n, mask.device)
        distance = col[:, None] - col[None, :]  # query item - key item
        index = torch.full((s, s), window, dtype=torch.int64, device=mask.device)
        index[1:, 1:] = distance.clamp(0, window - 1)
        allowed = torch.zeros(s, s, dtype=torch.bool, device=mask.device)
        allowed[1:, 1:] = (distance >= 0) & (distance < window)
        allowed[:, 0] = True
        bias = self.enc_rel(index).permute(2, 0, 1).unsqueeze(0)  # (1, H, S, S)
        allowed = allowed.unsqueeze(0) & mask[:, None, :]  # (B, S, S)
        if hide is not None:
            keys = torch.cat([hide.new_zeros(hide.shape[0], 1),
                              hide.repeat_interleave(self.item_width, dim=1)], dim=1)  # fmt: skip
            own = torch.zeros(s, s, dtype=torch.bool, device=mask.device)
            own[1:, 1:] = distance == 0
            allowed = allowed & (own | ~keys[:, None, :])
        return bias.masked_fill(~allowed.unsqueeze(1), float("-inf"))

    # --- decoder ------------------------------------------------------------------------------
    def cross_bias(
        self, memory_mask: Tensor, targets: Tensor | None = None, hide: Tensor | None = None
    ) -> Tensor:
        """``(B, H, G, S)`` cross-attention bias of G targets per memory row.

        ``targets`` (B, G): the column of each target's first item, i.e. how many sequence
        columns lie before it; the target sees the user token and the ``max_history`` columns
        before it, biased by recency (0 = the column just before). ``None``: one target after
        the whole memory (generation). ``hide`` (B, n): items a target does not see unless
        it is the column just before it (``history_dropout``).
        """
        window = self.config.max_history
        b, s = memory_mask.shape
        n = (s - 1) // self.item_width
        if targets is None:
            targets = torch.full((b, 1), n, dtype=torch.int64, device=memory_mask.device)
        col = self._token_columns(n, memory_mask.device)
        recency = targets.unsqueeze(2) - 1 - col  # (B, G, n*L')
        allowed = (recency >= 0) & (recency < window) & memory_mask[:, None, 1:]
        if hide is not None:
            hide = hide.repeat_interleave(self.item_width, dim=1)[:, None, :]
            allowed = allowed & ((recency == 0) | ~hide)
        user = torch.ones_like(allowed[:, :, :1])
        index = torch.cat([torch.full_like(recency[:, :, :1], window),
                           recency.clamp(0, window - 1)], dim=2)  # fmt: skip
        bias = self.cross_rel(index).permute(0, 3, 1, 2)  # (B, H, G, S)
        allowed = torch.cat([user, allowed], dim=2).unsqueeze(1)
        return bias.masked_fill(~allowed, float("-inf"))

    def self_bias(self, start: int, length: int, device: torch.device) -> Tensor:
        """``(1, H, length, start + length)`` decoder self-attention bias of positions
        ``start .. start+length-1`` over every position so far; -inf on later positions."""
        c = self.config
        query = torch.arange(start, start + length, device=device)
        distance = query[:, None] - torch.arange(start + length, device=device)  # (T, total)
        bucket = causal_bucket(distance.clamp(min=0), c.rel_buckets, c.rel_max_distance)
        bias = self.dec_rel(bucket).permute(2, 0, 1).unsqueeze(0)
        return bias.masked_fill(distance < 0, float("-inf"))

    def _cross_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [block.cross_attn.keys_values(memory) for block in self.decoder]

    def decode(
        self,
        memory: Tensor,
        memory_mask: Tensor,
        decoder_input: Tensor,
        targets: Tensor | None = None,
        hide: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced decoder states ``(N, T, d)`` for decoder input tokens (N, T).

        Without ``targets``, every row's target follows the whole memory and N may be any
        multiple of B (rows user-major). With ``targets`` (B, G) (see :meth:`cross_bias`), row
        ``b * G + g`` decodes user b's target g. ``hide``: see :meth:`cross_bias`.
        """
        b, t = memory.shape[0], decoder_input.shape[1]
        cross = self.cross_bias(memory_mask, targets, hide)  # (B, H, G, S)
        if targets is not None:
            g = targets.shape[1]
            if decoder_input.shape[0] != b * g:
                raise ModelError(
                    f"decoder_input has {decoder_input.shape[0]} rows, expected B * G = {b * g}"
                )
            cross = cross.unsqueeze(3).expand(-1, -1, -1, t, -1)
            cross = cross.reshape(b, cross.shape[1], g * t, -1)  # (B, H, G*T, S)
        x = self._with_context(self.drop(self.tok_emb(decoder_input)), memory, memory_mask,
                               targets)  # fmt: skip
        self_bias = self.self_bias(0, t, x.device)
        for block, kv in zip(self.decoder, self._cross_kv(memory)):
            x = block(x, self_bias, kv, cross)
        return self.dec_norm(x)

    def _with_context(
        self, x: Tensor, memory: Tensor, memory_mask: Tensor, targets: Tensor | None = None
    ) -> Tensor:
        """Decoder input embeddings ``x`` (N, T, d) whose first position (BOS) gets the
        projected state of the newest history item before each row's target
        (``decoder_context``; targets as in :meth:`cross_bias`, None = after the whole memory,
        rows user-major). Zero context where that item is padding or there is none."""
        if self.bos_context is None:
            return x
        b, w = memory.shape[0], self.item_width
        states = self.column_states(memory)  # (B, n, d)
        real = memory_mask[:, 1::w]  # (B, n)
        if targets is None:
            targets = torch.full((b, 1), states.shape[1], dtype=torch.int64, device=x.device)
        column = (targets - 1).clamp(min=0)  # (B, G): the newest item before each target
        rows = torch.arange(b, device=x.device)[:, None]
        keep = (real[rows, column] & (targets >= 1)).unsqueeze(2)
        context = (states[rows, column] * keep).reshape(-1, states.shape[2])  # (B*G, d)
        context = context.repeat_interleave(x.shape[0] // context.shape[0], dim=0)
        return torch.cat([x[:, :1] + self.bos_context(context).unsqueeze(1), x[:, 1:]], dim=1)

    def logits(self, hidden: Tensor, level: int | None = None) -> Tensor:
        """Logits over the whole vocabulary, or over level ``level``'s codes only."""
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        if level is not None:
            weight = weight[self.layout.level_slice(level)]
        return F.linear(hidden, weight)

    def forward(
        self,
        history_tokens: Tensor,
        history_mask: Tensor,
        user_ids: Tensor,
        decoder_input: Tensor,
        features: Tensor | None = None,
    ) -> Tensor:
        """Logits ``(B, T, vocab)`` of every decoder position (teacher forcing)."""
        memory, memory_mask = self.encode(history_tokens, history_mask, user_ids, features)
        return self.logits(self.decode(memory, memory_mask, decoder_input))

    # --- item head ----------------------------------------------------------------------------
    def column_states(self, memory: Tensor) -> Tensor:
        """``(B, n, d)``: every history column's state in encoder ``memory`` (B, 1 + n*w, d),
        the mean of its tokens' states; column j summarizes the history up to item j."""
        b, s, d = memory.shape
        w = self.item_width
        return memory[:, 1:].reshape(b, (s - 1) // w, w, d).mean(2)

    def item_queries(self, memory: Tensor) -> Tensor:
        """``(B, n, d)``: the item head's query after every history column of encoder ``memory``
        (B, 1 + n*w, d): the mean of the column's token states, projected (plus the mean itself
        with ``item_query_residual``)."""
        if self.item_query is None:
            raise ModelError("the model has no item head: build it with item_loss_weight > 0")
        pooled = self.column_states(memory)
        query = self.item_query(pooled)
        return pooled + query if self.config.item_query_residual else query

    def item_embeddings(self, catalog: Tensor) -> Tensor:
        """``(N, d)``: every catalog item's embedding, the sum of its code tokens' embeddings
        (from the head's own table with ``item_head_tied=False``; plus its hashed identity
        embedding when the model has one, ``item_hash_buckets``);
        ``catalog`` (N, L') holds the items' codes (``SemanticIds.codes``)."""
        start = torch.tensor(self.layout.level_start, device=catalog.device)
        tokens = catalog.long() + start
        out = (self.tok_emb if self.item_out is None else self.item_out)(tokens).sum(1)
        if self.item_hash is not None:
            out = out + self.head_identity_drop(self._item_identity(tokens.unsqueeze(0))[0])
        return out

    def item_log_probs(
        self, memory: Tensor, catalog: Tensor, history: Tensor | None = None
    ) -> Tensor:
        """``(B, N)``: the item head's log-probability of every catalog item being next after
        the whole history in ``memory`` (its last column; histories are right-aligned).
        ``history`` (B, n): the item ids ``memory`` was encoded from, right-aligned, -1 on
        padding; needed by a model with ``repeat_bias``, which scores the seen items up."""
        query = self.item_queries(memory)[:, -1]
        logits = F.linear(query, self.item_embeddings(catalog)).float()
        if self.repeat_recency is not None:
            if history is None or history.shape[0] != logits.shape[0]:
                raise ModelError(
                    "the item head has a repeat bias (repeat_bias=true): pass history, the "
                    "(B, n) item ids that memory was encoded from, to item_log_probs"
                )
            seen = history[:, -self.config.max_history :].flip(1).long()  # newest first
            values = self.repeat_scores(query, seen)
            logits = logits.scatter_add(1, seen.clamp(min=0), values.float())
        return logits.log_softmax(-1)

    def repeat_scores(self, query: Tensor, seen: Tensor) -> Tensor:
        """``(T, k)``: what ``repeat_bias`` adds to the head's logit of each seen item: the
        score of its recency plus the user's (a projection of the head's ``query`` (T, d)).
        ``seen`` (T, k): item ids newest first (column j is j + 1 items back, k <=
        ``max_history``), -1 where none (scored 0)."""
        if self.repeat_recency is None or self.repeat_user is None:
            raise ModelError("the model has no repeat bias: build it with repeat_bias=true")
        recency = torch.arange(1, seen.shape[1] + 1, device=seen.device)
        values = self.repeat_recency(recency).squeeze(1) + self.repeat_user(query)  # (T, k)
        return values * (seen >= 0)

    def _seen_before_targets(
        self, items: Tensor, mask: Tensor, rows: Tensor, cols: Tensor, hide: Tensor | None
    ) -> Tensor:
        """``(T, k)``: the items each head target's query at column ``cols`` (T,) of row
        ``rows`` (T,) reads, newest first (``repeat_scores``'s ``seen``): the item at the
        column and the ``max_history - 1`` before it that are real (``mask`` (B, n)) and not
        hidden from it (``hide``; the column's own item always counts), else -1."""
        k = min(self.config.max_history, items.shape[1])
        back = torch.arange(k, device=items.device)
        col = cols[:, None] - back  # (T, k)
        inside = col >= 0
        col = col.clamp(min=0)
        row = rows[:, None].expand_as(col)
        visible = inside & mask[row, col]
        if hide is not None:
            visible &= (back == 0) | ~hide[row, col]
        return torch.where(visible, items[row, col].long(), -1)

    def candidate_log_probs(self, memory: Tensor, memory_mask: Tensor, codes: Tensor) -> Tensor:
        """``(B, K)``: the decoder's log-probability of K candidate next items per user after
        the whole history in ``memory``, teacher-forced; ``codes`` (B, K, L') are the items'
        codes. It is the score a beam ending at the item gets (``onerec.generation``), for items
        the beam did not reach."""
        b, k, n_levels = codes.shape
        codes = codes.reshape(b * k, 1, n_levels).long()
        decoder_input = self.layout.session_input(codes, as_codes=True)
        hidden = self.decode(memory, memory_mask, decoder_input)
        return self._level_log_probs(hidden, codes).sum((1, 2)).view(b, k)

    # --- training objective ---------------------------------------------------------------------
    def _level_log_probs(self, hidden: Tensor, codes: Tensor) -> Tensor:
        """``log p`` ``(..., m, L')`` of ``codes`` (..., m, L') from decoder states (..., m*(L'+1)
        - 1, d) of ``TokenLayout.session_input``: slot j of item k predicts its level-j code."""
        *lead, m, n_levels = codes.shape
        h = F.pad(hidden, (0, 0, 0, 1)).view(*lead, m, n_levels + 1, hidden.shape[-1])
        out = []
        for level in range(n_levels):
            logp = self.logits(h[..., level, :], level).float().log_softmax(dim=-1)
            out.append(logp.gather(-1, codes[..., level : level + 1]).squeeze(-1))
        return torch.stack(out, dim=-1)

    def code_log_probs(
        self,
        history_tokens: Tensor,
        history_mask: Tensor,
        user_ids: Tensor,
        codes: Tensor,
        features: Tensor | None = None,
    ) -> Tensor:
        """``log p(code | history, earlier codes)`` ``(B, m, L')`` of sessions ``codes``.

        Each level's softmax runs over that level's codes only. Summed over a session's codes it
        is the session's log-probability under the model (what beam search scores).
        """
        codes = codes.long()
        hide = self.hidden_items(history_mask)
        memory, memory_mask = self.encode(history_tokens, history_mask, user_ids, features, hide)
        decoder_input = self.layout.session_input(codes, as_codes=True)
        hidden = self.decode(memory, memory_mask, decoder_input, hide=hide)
        return self._level_log_probs(hidden, codes)

    def loss(
        self,
        history_tokens: Tensor,
        history_mask: Tensor,
        user_ids: Tensor,
        codes: Tensor,
        features: Tensor | None = None,
    ) -> LossOutput:
        """Next-token loss of given target sessions ``codes`` (B, m, L') after each history."""
        logp = self.code_log_probs(history_tokens, history_mask, user_ids, codes, features)
        return self._loss_output(-logp.sum(), logp.numel(), None)

    def sequence_loss(
        self,
        tokens: Tensor,
        mask: Tensor,
        user_ids: Tensor,
        session_items: int,
        starts: Tensor | None = None,
        segments: Tensor | None = None,
        normalizer: float | None = None,
        features: Tensor | None = None,
        items: Tensor | None = None,
        catalog: Tensor | None = None,
    ) -> LossOutput:
        """Next-token loss of every target in whole sequences, from one encoder pass.

        ``tokens`` (B, n, L') and ``mask`` (B, n): each row's item sequence, oldest first, real
        items contiguous (``TokenLayout.encode_history`` of right-aligned item ids). Every
        column j >= 1 with an item before it starts a target: the next ``session_items`` items
        j, j+1, ... (fewer at the end of the sequence), decoded with items before j as history.
        ``starts`` (B, n) keeps only some targets (e.g. session starts, or the part of a window
        that is not context); with ``segments`` (B, n), a target ends where the segment (the
        session id) changes. ``normalizer``: divide the summed loss by this instead of the
        number of code positions here (data-parallel training divides by the global number).
        ``features`` (B, n, history_features): side features of every item, as in :meth:`encode`.
        ``items`` (B, n) and ``catalog`` (N, L'): the item ids of ``tokens`` and every catalog
        item's codes; with an item head (``item_loss_weight`` > 0) they are required, and the
        head's softmax over the catalog scores the next item of every target too.
        """
        b, n, n_levels = tokens.shape
        if n < 2:
            raise ModelError(f"sequences need at least 2 columns (a history and a target), got {n}")
        m = session_items
        hide = self.hidden_items(mask)
        memory, memory_mask = self.encode(tokens, mask, user_ids, features, hide)
        mask = mask.bool()
        valid = mask[:, 1:] & mask[:, :-1]  # (B, n - 1) an item, and an item before it
        if starts is not None:
            valid &= starts[:, 1:].bool()
        head_valid = valid
        # decode only the columns where some row has a target (one per row for prefix samples)
        # (nothing to score at all: every column, as zeros in the loss; no host sync for it)
        used = valid.any(0) | ~valid.any()
        cols = torch.arange(1, n, device=tokens.device)[used]  # (G,) target starts
        valid = valid[:, used]  # (B, G)
        index = cols[:, None] + torch.arange(m, device=tokens.device)  # (G, m) target columns
        inside = index < n
        index = index.clamp(max=n - 1)
        keep = mask[:, index] & inside  # (B, G, m)
        if segments is not None:
            keep &= segments[:, index] == segments[:, cols].unsqueeze(2)
        keep = keep.long().cumprod(dim=2).bool() & valid.unsqueeze(2)  # a target stops at a gap
        item_tokens = tokens[:, index]  # (B, G, m, L')
        g = cols.numel()
        decoder_input = self.layout.session_input(item_tokens.reshape(b * g, m, n_levels))
        hidden = self.decode(memory, memory_mask, decoder_input, cols.expand(b, g), hide)
        start = torch.tensor(self.layout.level_start, device=tokens.device)
        codes = (item_tokens - start).clamp(min=0)  # padding (PAD) becomes code 0, unscored
        logp = self._level_log_probs(hidden.view(b, g, *hidden.shape[1:]), codes)
        n_codes = int(keep.sum()) * n_levels
        out = self._loss_output(-(logp * keep.unsqueeze(3)).sum(), n_codes, normalizer)
        if self.item_query is None:
            return out
        if items is None or catalog is None:
            raise ModelError(
                "the model has an item head (item_loss_weight > 0): pass items (the item ids of "
                "tokens) and catalog (SemanticIds.codes) to sequence_loss"
            )
        query = self.head_drop(self.item_queries(memory)[:, :-1][head_valid])  # (T, d): after j-1
        n_targets = int(head_valid.sum())
        targets = items[:, 1:][head_valid].long()
        extra = None
        if self.repeat_recency is not None:
            rows, cols = head_valid.nonzero(as_tuple=True)  # the order of the mask's indexing
            seen = self._seen_before_targets(items, mask, rows, cols, hide)
            extra = (seen.clamp(min=0), self.repeat_scores(query, seen))
        mean = full_softmax_cross_entropy(query, self.item_embeddings(catalog), targets, extra)
        item_sum = mean * n_targets
        weight = self.config.item_loss_weight
        loss = out.loss + weight * item_sum / max(n_targets, 1)
        return out._replace(loss=loss, item_sum=item_sum, n_item_targets=n_targets)

    def _loss_output(self, total: Tensor, n_codes: int, normalizer: float | None) -> LossOutput:
        ntp = total / (normalizer if normalizer is not None else max(n_codes, 1))
        aux = sum((moe.aux_loss for moe in self.moe_layers()), ntp.new_zeros(()))
        return LossOutput(ntp + self.config.aux_loss_weight * aux, ntp, aux, n_codes)

    # --- generation -----------------------------------------------------------------------------
    def start_cache(self, memory: Tensor, memory_mask: Tensor, capacity: int = 32) -> DecoderCache:
        """An empty decoder cache holding the cross-attention keys/values of ``memory``, with
        room for ``capacity`` decoded tokens (it grows when more come)."""
        return DecoderCache(self._cross_kv(memory), self.cross_bias(memory_mask), capacity)

    def _reserve(self, cache: DecoderCache, rows: int, length: int, like: Tensor) -> None:
        """Make ``cache`` hold ``rows`` rows of at least ``length`` tokens, keeping its contents."""
        have = 0 if cache.self_kv is None else cache.self_kv.shape[3]
        if have >= length:
            return
        capacity = max(length, cache.capacity, 2 * have)  # doubling: few regrowths
        c = self.config
        buffer = like.new_zeros(2 * c.decoder_layers, rows, c.n_heads, capacity,
                                c.d_model // c.n_heads)  # fmt: skip
        if cache.self_kv is not None:
            buffer[:, :, :, : cache.length] = cache.self_kv[:, :, :, : cache.length]
        cache.self_kv, cache.capacity = buffer, capacity
        cache.self_bias = self.self_bias(0, capacity, like.device).to(like.dtype)

    def decode_step(
        self,
        memory: Tensor,
        memory_mask: Tensor,
        tokens: Tensor,
        cache: DecoderCache | None = None,
        level: int | None = None,
    ) -> tuple[Tensor, DecoderCache]:
        """Feed ``tokens`` (N, t) after the cache's tokens; return the logits of the last one.

        N = B * G: G beams per encoder row, rows user-major (beam g of user b is row b*G + g);
        the encoder memory stays (B, S, d), never copied per beam. Logits are ``(N, vocab)``, or
        ``(N, level_sizes[level])`` over one level's codes when ``level`` is given. A new cache
        is started when ``cache`` is None; the returned cache is the one to pass next time.
        """
        if memory.shape[0] == 0 or tokens.shape[0] % memory.shape[0]:
            raise ModelError(
                f"decoder rows ({tokens.shape[0]}) must be a multiple of the encoder rows "
                f"({memory.shape[0]})"
            )
        if cache is None:
            cache = self.start_cache(memory, memory_mask, tokens.shape[1])
        x = self.drop(self.tok_emb(tokens))
        if cache.length == 0:  # the first call feeds BOS
            x = self._with_context(x, memory, memory_mask)
        start, end = cache.length, cache.length + tokens.shape[1]
        self._reserve(cache, tokens.shape[0], end, x)
        assert cache.self_bias is not None
        self_bias = cache.self_bias[:, :, start:end]  # (1, H, T, capacity)
        for i, (block, cross_kv) in enumerate(zip(self.decoder, cache.cross_kv)):
            x = block(x, self_bias, cross_kv, cache.cross_bias, cache.layer(i), start)
        cache.length = end
        return self.logits(self.dec_norm(x[:, -1]), level), cache

    # --- files ----------------------------------------------------------------------------------
    def save(self, directory: str | Path, metadata: dict[str, str] | None = None) -> Path:
        """Write ``model_config.json`` and ``model.safetensors`` (weights and routing biases;
        ``metadata`` goes into its header, e.g. what the run was trained from). Each file is
        replaced atomically, so a server watching the folder never reads half a file."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text(directory / "model_config.json", json.dumps(self.config.to_dict(), indent=2))
        write_safetensors(self.state_dict(), directory / "model.safetensors", metadata)
        return directory

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "OneRec":
        """The model :meth:`save` wrote into ``directory``, in eval mode."""
        directory = Path(directory)
        for name in ("model_config.json", "model.safetensors"):
            if not (directory / name).is_file():
                raise ModelError(
                    f"{directory / name} not found: expected a model folder written by "
                    f"OneRec.save or `onerec train` (model_config.json + model.safetensors)"
                )
        config = OneRecConfig.read(directory / "model_config.json")
        model = cls(config)
        path = directory / "model.safetensors"
        tensors, _ = read_safetensors(path, hint="copy the run's model.safetensors again, or "
                                      "train the run again.")  # fmt: skip
        missing = missing_fields(directory / "model_config.json")
        check_shapes(tensors, model.state_dict(), path, "the model_config.json beside them",
                     note=f"model_config.json lacks the fields {missing} (defaults used)"
                     if missing else "")  # fmt: skip
        model.load_state_dict(tensors)
        return model.to(device).eval()

    # --- MoE and parameter bookkeeping ---------------------------------------------------------
    def moe_layers(self) -> list[MoE]:
        return [m for m in self.modules() if isinstance(m, MoE)]

    def update_moe_bias(self) -> None:
        """Call after every optimizer step when ``moe_balance == "bias"`` (no-op otherwise)."""
        if self.config.moe_balance == "bias":
            for moe in self.moe_layers():
                moe.update_bias(self.config.bias_update_rate)

    def moe_load(self) -> Tensor:
        """``(n_moe_layers, E)``: each MoE layer's share of routed slots in the last forward."""
        layers = self.moe_layers()
        return torch.stack([m.load for m in layers]) if layers else torch.zeros(0, 0)

    def num_parameters(self) -> int:
        """All parameters (a tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def num_active_parameters(self) -> int:
        """Parameters one decoder token uses: all but the E - k experts it is not routed to in
        every MoE layer. Embedding tables count whole, as usual for "active" counts."""
        inactive = 0
        for moe in self.moe_layers():
            per_expert = sum(p.numel() for p in moe.experts[0].parameters())
            inactive += (moe.n_experts - moe.top_k) * per_expert
        return self.num_parameters() - inactive

    def describe(self) -> str:
        total, active = self.num_parameters(), self.num_active_parameters()
        return (
            f"OneRec: {total / 1e6:.2f}M parameters, {active / 1e6:.2f}M active per token "
            f"({100 * active / max(total, 1):.0f}%)"
        )
