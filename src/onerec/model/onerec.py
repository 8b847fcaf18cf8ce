"""OneRec: an encoder-decoder over semantic-ID tokens, with a sparse MoE decoder.

Read top to bottom: RMSNorm, SwiGLU, attention, the MoE layer, encoder and decoder blocks, then
the model with ``encode`` / ``decode`` / ``forward`` / ``loss`` and the cached ``decode_step``
that beam search (``onerec.generation``) drives.

- The **encoder** reads the user: a user token (hashed user-id embedding) followed by every
  history item as its L' code tokens. Each history token's input is token embedding + item
  recency embedding (0 = most recent item) + level embedding. Pre-norm blocks, dense SwiGLU.
- The **decoder** generates a session ``[BOS] c1_1..c1_L [SEP] c2_1.. [SEP] ...`` (see
  ``tokens.py``): token embedding + item-in-session embedding + slot embedding, causal self-
  attention, cross-attention to the encoder, and a sparse MoE feed-forward (dense when
  ``n_experts`` <= 1).
- The **output head** is tied to the token embedding by default (``tie_embeddings``): encoder
  and decoder read and write the same code vocabulary, so one table serves all three and a
  code's output vector is the vector the encoder sees for it; a separate head is one flag away.
- The **loss** is next-token cross-entropy in which the softmax at a position predicting a level-l
  code runs over level l's slice of the vocabulary only (a code of another level, or a special
  token, is never a legal answer there). Positions predicting SEP are skipped: SEP always
  follows the L'-th code, so there is nothing to learn. With ``moe_balance="aux_loss"`` the
  Switch load-balancing loss is added.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from onerec.exceptions import ModelError
from onerec.model.config import OneRecConfig
from onerec.model.tokens import TokenLayout

# --- building blocks ----------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Scale by the root mean square (no centring, no bias), in float32 for stability."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight).type_as(x)


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

    def forward(
        self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, causal: bool = False
    ) -> Tensor:
        """Queries from ``x`` (N, T, d) attend to ``k``, ``v`` (B, H, S, hd); ``mask`` is True
        where attention is allowed.

        N may be a multiple G of B (beam search: G beams per user, rows user-major). All G
        beams' queries attend to the same keys, so they are folded into the query axis instead
        of copying the keys and values G times.
        """
        n, t, d = x.shape
        b = k.shape[0]
        q = self._heads(self.q(x).reshape(b, (n // b) * t, d))  # (B, H, G*T, hd)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        return self.proj(y.transpose(1, 2).reshape(n, t, d))


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

        # group the N*k (token, expert) slots by expert, then run each expert once
        order = torch.argsort(experts.flatten(), stable=True)  # (N*k,)
        token = order // self.top_k
        gate = gates.flatten()[order]
        sizes = counts.tolist()
        out = torch.zeros_like(x)
        for expert, tok, g in zip(self.experts, token.split(sizes), gate.split(sizes)):
            if tok.numel():
                y = expert(x.index_select(0, tok)) * g.unsqueeze(1)
                out.index_add_(0, tok, y.to(out.dtype))
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

    def forward(self, x: Tensor, key_mask: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, *self.attn.keys_values(h), mask=key_mask))
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
        cross_kv: tuple[Tensor, Tensor],
        cross_mask: Tensor,
        past_kv: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """New tokens ``x`` (N, T, d) after ``past_kv``'s tokens; returns x and the self-
        attention keys/values of all tokens so far (the next step's ``past_kv``).
        ``cross_mask`` (B, 1, 1, S): which encoder tokens are real."""
        h = self.norm1(x)
        k, v = self.self_attn.keys_values(h)
        if past_kv is None:
            y = self.self_attn(h, k, v, causal=True)
        else:
            k, v = torch.cat([past_kv[0], k], dim=2), torch.cat([past_kv[1], v], dim=2)
            t, total = x.shape[1], k.shape[2]
            # a new token sees every cached token and the new tokens up to itself
            causal = torch.ones(t, total, dtype=torch.bool, device=x.device).tril(total - t)
            y = self.self_attn(h, k, v, mask=None if t == 1 else causal)
        x = x + self.drop(y)
        x = x + self.drop(self.cross_attn(self.norm2(x), *cross_kv, mask=cross_mask))
        return x + self.drop(self.ffn(self.norm3(x))), (k, v)


# --- the model ----------------------------------------------------------------------------------


class LossOutput(NamedTuple):
    loss: Tensor  # what to minimize: ntp + aux_loss_weight * aux
    ntp: Tensor  # mean next-token cross-entropy over the code positions
    aux: Tensor  # MoE load-balancing loss summed over MoE layers (0 unless "aux_loss")


@dataclass
class DecoderCache:
    """What ``decode_step`` keeps between calls.

    ``cross_kv``: per decoder layer, the encoder memory's keys/values ``(B, H, S, hd)``,
    computed once. ``self_kv``: per layer, the keys/values ``(N, H, t, hd)`` of the t tokens
    decoded so far (N = B * beams). ``length``: t.
    """

    cross_kv: list[tuple[Tensor, Tensor]]
    self_kv: list[tuple[Tensor, Tensor]] | None = None
    length: int = 0

    def reorder(self, rows: Tensor) -> None:
        """Keep decoder rows ``rows`` (N,), e.g. every surviving beam's parent beam."""
        if self.self_kv is not None:
            self.self_kv = [(k.index_select(0, rows), v.index_select(0, rows))
                            for k, v in self.self_kv]  # fmt: skip


class OneRec(nn.Module):
    def __init__(self, config: OneRecConfig) -> None:
        super().__init__()
        self.config = config
        self.layout = TokenLayout(config.level_sizes)
        d, n_levels = config.d_model, config.n_levels
        self.tok_emb = nn.Embedding(self.layout.vocab_size, d)
        self.user_emb = nn.Embedding(config.n_user_buckets, d)
        self.enc_pos = nn.Embedding(config.max_history, d)  # recency: 0 = most recent item
        self.enc_level = nn.Embedding(n_levels, d)
        self.dec_pos = nn.Embedding(config.max_session_items, d)  # item index in the session
        self.dec_slot = nn.Embedding(n_levels + 1, d)  # 0: BOS/SEP, j: the level-(j-1) code
        self.drop = nn.Dropout(config.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.encoder_layers))
        self.enc_norm = RMSNorm(d, config.norm_eps)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_layers))
        self.dec_norm = RMSNorm(d, config.norm_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(d, self.layout.vocab_size,
                                                                     bias=False)  # fmt: skip
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # --- encoder ------------------------------------------------------------------------------
    def encode(
        self, history_tokens: Tensor, history_mask: Tensor, user_ids: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Encoder memory ``(B, 1 + n*L', d)`` and its mask (True = a real token).

        ``history_tokens`` (B, n, L'): every history item's code tokens (``TokenLayout.
        encode_history``); ``history_mask`` (B, n): True for real items, padding anywhere;
        ``user_ids`` (B,): user indices, hashed into ``n_user_buckets`` rows (id mod buckets:
        collision-free while there are no more users than buckets).
        """
        c = self.config
        if history_tokens.ndim != 3 or history_tokens.shape[2] != c.n_levels:
            raise ModelError(
                f"history_tokens must be (B, n, {c.n_levels}), got {tuple(history_tokens.shape)}"
            )
        b, n, n_levels = history_tokens.shape
        if tuple(history_mask.shape) != (b, n):
            raise ModelError(
                f"history_mask must be (B, n) = {(b, n)}, got {tuple(history_mask.shape)}"
            )
        if tuple(user_ids.shape) != (b,) or user_ids.dtype.is_floating_point:
            raise ModelError(f"user_ids must be ({b},) integers, got {tuple(user_ids.shape)}")
        if n > c.max_history:
            raise ModelError(
                f"history has {n} items but max_history = {c.max_history}; keep the last "
                f"{c.max_history} (onerec.model.tokens.pad_history does)"
            )
        mask = history_mask.bool()
        recency = (mask.flip(1).cumsum(1).flip(1) - 1).clamp(min=0)  # (B, n): 0 = most recent
        x = self.tok_emb(history_tokens)  # (B, n, L', d)
        x = x + self.enc_pos(recency).unsqueeze(2) + self.enc_level.weight
        user = self.user_emb(torch.remainder(user_ids.long(), c.n_user_buckets)).unsqueeze(1)
        x = torch.cat([user, x.reshape(b, n * n_levels, -1)], dim=1)  # (B, S = 1 + n*L', d)
        mask = torch.cat([mask.new_ones(b, 1), mask.repeat_interleave(n_levels, dim=1)], dim=1)
        key_mask = mask[:, None, None, :]  # (B, 1, 1, S); the user token keeps every row live
        x = self.drop(x)
        for block in self.encoder:
            x = block(x, key_mask)
        return self.enc_norm(x), mask

    # --- decoder ------------------------------------------------------------------------------
    def _embed_decoder(self, tokens: Tensor, start: int) -> Tensor:
        """Inputs of decoder positions ``start .. start + T - 1`` for tokens (N, T)."""
        length = tokens.shape[1]
        limit = self.config.max_session_items * self.layout.block
        if start + length > limit:
            raise ModelError(
                f"decoder positions up to {start + length} exceed max_session_items = "
                f"{self.config.max_session_items} items ({limit} positions)"
            )
        item, slot = self.layout.decoder_positions(length, start, tokens.device)
        return self.drop(self.tok_emb(tokens) + self.dec_pos(item) + self.dec_slot(slot))

    def _cross_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        return [block.cross_attn.keys_values(memory) for block in self.decoder]

    def decode(self, memory: Tensor, memory_mask: Tensor, decoder_input: Tensor) -> Tensor:
        """Teacher-forced decoder states ``(B, T, d)`` for decoder input tokens (B, T)."""
        x = self._embed_decoder(decoder_input, 0)
        cross_kv, key_mask = self._cross_kv(memory), memory_mask[:, None, None, :]
        for block, kv in zip(self.decoder, cross_kv):
            x, _ = block(x, kv, key_mask)
        return self.dec_norm(x)

    def logits(self, hidden: Tensor, level: int | None = None) -> Tensor:
        """Logits over the whole vocabulary, or over level ``level``'s codes only."""
        weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
        if level is not None:
            weight = weight[self.layout.level_slice(level)]
        return F.linear(hidden, weight)

    def forward(
        self, history_tokens: Tensor, history_mask: Tensor, user_ids: Tensor, decoder_input: Tensor
    ) -> Tensor:
        """Logits ``(B, T, vocab)`` of every decoder position (teacher forcing)."""
        memory, memory_mask = self.encode(history_tokens, history_mask, user_ids)
        return self.logits(self.decode(memory, memory_mask, decoder_input))

    # --- training objective ---------------------------------------------------------------------
    def code_log_probs(
        self, history_tokens: Tensor, history_mask: Tensor, user_ids: Tensor, codes: Tensor
    ) -> Tensor:
        """``log p(code | history, earlier codes)`` ``(B, m, L')`` of sessions ``codes``.

        Each level's softmax runs over that level's codes only. Summed over a session's codes it
        is the session's log-probability under the model (what beam search scores).
        """
        codes = codes.long()
        decoder_input, _ = self.layout.session_targets(codes)  # (B, T = m * (L'+1))
        memory, memory_mask = self.encode(history_tokens, history_mask, user_ids)
        b, m, n_levels = codes.shape
        h = self.decode(memory, memory_mask, decoder_input)  # (B, T, d)
        h = h.view(b, m, self.layout.block, -1)  # (B, m, L'+1, d): slot j predicts level j
        out = []
        for level in range(n_levels):
            logp = self.logits(h[:, :, level], level).float().log_softmax(dim=-1)  # (B, m, K_l)
            out.append(logp.gather(-1, codes[:, :, level : level + 1]).squeeze(-1))
        return torch.stack(out, dim=-1)  # (B, m, L')

    def loss(
        self, history_tokens: Tensor, history_mask: Tensor, user_ids: Tensor, codes: Tensor
    ) -> LossOutput:
        """Next-token loss of target sessions ``codes`` (B, m, L'), plus the MoE aux loss."""
        ntp = -self.code_log_probs(history_tokens, history_mask, user_ids, codes).mean()
        aux = sum((moe.aux_loss for moe in self.moe_layers()), ntp.new_zeros(()))
        return LossOutput(ntp + self.config.aux_loss_weight * aux, ntp, aux)

    # --- generation -----------------------------------------------------------------------------
    def start_cache(self, memory: Tensor) -> DecoderCache:
        """An empty decoder cache holding the cross-attention keys/values of ``memory``."""
        return DecoderCache(cross_kv=self._cross_kv(memory))

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
            cache = self.start_cache(memory)
        x = self._embed_decoder(tokens, cache.length)
        key_mask = memory_mask[:, None, None, :]
        past = cache.self_kv or [None] * len(self.decoder)
        new_kv = []
        for block, cross_kv, past_kv in zip(self.decoder, cache.cross_kv, past):
            x, kv = block(x, cross_kv, key_mask, past_kv)
            new_kv.append(kv)
        cache.self_kv, cache.length = new_kv, cache.length + tokens.shape[1]
        return self.logits(self.dec_norm(x[:, -1]), level), cache

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
