"""The reward model (RM): how a user would respond to a whole session, learned from logged feedback.

Read top to bottom: the config, target attention, a self-attention block, the model. For a user
(their watched history, most recent last) and a session of m items:

1. every session item j (its embedding: a projection of fixed side features, i.e. the item's
   smoothed feedback rates on the training log and optionally a content embedding and log
   duration, plus, when ``item_ids``, a learned item-id vector) gets a **target-aware
   representation**: the user representation u_j is target attention from the item's
   embedding e_j over the history's item embeddings (a learned "no history" slot keeps empty
   histories defined), and ``x_j = W [e_j; u_j; e_j * u_j] + p_j``
   (the paper's "item embedding times user representation", with both factors kept beside their
   product, plus a position embedding: order matters, later items are watched less);
2. **self-attention** across the session's items (session effects: fatigue, coherence);
3. **sum pooling** over the session's items;
4. **four towers** (MLPs), each a sigmoid output: swt, vtr, wtr, ltr.

Targets (see :mod:`.logged`): vtr, wtr and ltr are the session's rates (share of its items
viewed through / followed / liked), trained with binary cross-entropy on these soft labels.
**swt** is the session's watch time divided by ``swt_scale`` (fitted on the training log: its
99th percentile session watch time; the few longer sessions are clipped to 1, and the count is
reported), also with binary cross-entropy. Why not log1p with a regression head: cross-entropy
on a target in [0, 1] is minimised by the *conditional mean*, so ``sigmoid * swt_scale``
estimates the expected watch time in seconds (what the oracle's swt is), whereas a log1p fit
estimates the mean of the log, biased downwards by the variance, and one shared loss keeps the
four towers on the same footing.

**Per-item targets** (``targets="item"``, the benchmark's RM v3): the towers read every session
item's representation (after the self-attention, so fatigue and coherence still reach it)
instead of the pooled session and are trained on each exposure's own feedback: its watch time
over ``swt_scale`` (now the 99th percentile of one exposure's watch time) and its 0/1
view-through, follow and like. The session's swt is the sum of its items' predictions and each
rate their mean, the same quantities as with session targets. A deviation from the paper's
pooled towers: a session's rates say how many of its items were liked, an exposure's label says
which one, five labels where the pooled RM gets one.

The **combined score** mirrors the simulator's reward: each prediction relative to its mean on
the training log (swt per item), weighted: ``score = sum_k w_k * pred_k / ref_k / sum_k w_k``.
Weights are configuration (``weights``, default 1, 1, 1, 1: the simulator's default reward, so
an average logged session scores about 1); they are the knob for multi-objective alignment.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from onerec.alignment.logged import SIGNALS
from onerec.data.ragged import Ragged
from onerec.exceptions import AlignmentConfigError, CatalogMismatchError
from onerec.model.tokens import pad_history
from onerec.runs import write_safetensors, write_text

T = TypeVar("T")


def require_ints(config: object, names: tuple[str, ...], low: int = 1) -> None:
    """Raise :class:`AlignmentConfigError` unless every named field of ``config`` is an int >=
    ``low``."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise AlignmentConfigError(
                f"{type(config).__name__}.{name} must be an int >= {low}, got {value!r}"
            )


def config_from_dict(
    cls: type[T], d: dict[str, Any], error: type[Exception] = AlignmentConfigError
) -> T:
    """``cls(**d)`` for a config dataclass, with a named ``error`` for fields it does not have."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise error(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return cls(**d)


def catalog_fingerprint(raw_item_ids: np.ndarray) -> str:
    """A short hash of the catalog's raw item ids, in index order: two runs agree on what item
    index i is exactly when their fingerprints match."""
    text = "\n".join(str(x) for x in np.asarray(raw_item_ids).tolist())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RewardModelConfig:
    """Sizes, the swt scale, the reward references and the combination weights.

    ``swt_scale`` (seconds of a session, or of one exposure with ``targets="item"``) and
    ``references`` (per-item means of watch time, view-through,
    follow and like on the training log) are fitted by :func:`onerec.alignment.train_reward_model`.
    """

    num_items: int
    catalog: str = ""  # catalog_fingerprint of the raw item ids ("" = unknown)
    d_model: int = 32
    n_heads: int = 2
    layers: int = 1
    history_length: int = 20
    session_items: int = 5
    # "session": the paper's towers on the sum-pooled session, trained on session values;
    # "item": the same towers on every session item, trained on each exposure's own feedback
    # (five labels per session instead of one: the RM learns which item earned the like),
    # the session's value summed (swt) or averaged (rates) from its items' predictions
    targets: str = "session"
    item_features: int = 0  # width of fixed per-item side features (content, rates); 0: none
    item_ids: bool = True  # a learned vector per item id beside the side features
    dropout: float = 0.1
    swt_scale: float = 1.0
    references: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        require_ints(self, ("num_items", "d_model", "n_heads", "layers", "history_length",
                            "session_items"))  # fmt: skip
        require_ints(self, ("item_features",), low=0)
        if not self.item_ids and not self.item_features:
            raise AlignmentConfigError(
                "a reward model without item-id embeddings (item_ids=False) needs side features "
                "(item_features > 0) to tell items apart"
            )
        if self.d_model % self.n_heads:
            raise AlignmentConfigError(
                f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})"
            )
        if self.targets not in ("session", "item"):
            raise AlignmentConfigError(
                f"targets must be 'session' (towers on the pooled session) or 'item' (towers "
                f"on every item, trained per exposure), got {self.targets!r}"
            )
        if not 0 <= self.dropout < 1 or not self.swt_scale > 0:
            raise AlignmentConfigError("dropout must be in [0, 1) and swt_scale > 0")
        for name in ("references", "weights"):
            value = tuple(float(x) for x in getattr(self, name))
            if len(value) != len(SIGNALS):
                raise AlignmentConfigError(
                    f"{name} needs one value per signal {SIGNALS}, got {list(value)}"
                )
            object.__setattr__(self, name, value)  # JSON gives lists
        if any(r <= 0 for r in self.references):
            raise AlignmentConfigError(f"references must be > 0, got {list(self.references)}")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise AlignmentConfigError(
                f"weights (swt, vtr, wtr, ltr) must be >= 0 with a positive sum, got "
                f"{list(self.weights)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RewardModelConfig":
        return config_from_dict(cls, d)


class TargetAttention(nn.Module):
    """Each session item's own view of the user: attention from the item to the history."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.kv = nn.Linear(d_model, 2 * d_model, bias=False)
        self.empty = nn.Parameter(torch.zeros(1, 1, d_model))  # the always-present "no history"
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, items: Tensor, history: Tensor, mask: Tensor) -> Tensor:
        """``items`` (B, m, d) attend to ``history`` (B, n, d) where ``mask`` (B, n); (B, m, d)."""
        b, m, d = items.shape
        history = torch.cat([self.empty.expand(b, 1, d), history], dim=1)  # (B, 1 + n, d)
        mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        h = self.n_heads
        q = self.q(items).view(b, m, h, d // h).transpose(1, 2)  # (B, H, m, hd)
        k, v = (t.view(b, -1, h, d // h).transpose(1, 2) for t in self.kv(history).chunk(2, -1))
        bias = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, -1e9)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias[:, None, None, :])
        return self.proj(y.transpose(1, 2).reshape(b, m, d))


class Block(nn.Module):
    """Pre-norm self-attention across the session's items, then an MLP."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model), nn.Dropout(dropout))  # fmt: skip

    def forward(self, x: Tensor, padding: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, key_padding_mask=padding, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class RewardModel(nn.Module):
    def __init__(self, config: RewardModelConfig) -> None:
        super().__init__()
        self.config = c = config
        d = c.d_model
        # row num_items: padding. Few sessions per item make id vectors overfit; the side
        # features (the same for every item with the same evidence) generalize
        self.item_emb = nn.Embedding(c.num_items + 1, d) if c.item_ids else None
        # fixed side features of every item (row num_items: padding), set by the trainer: they
        # let the RM generalize to items the logging policy rarely showed
        self.register_buffer("features", torch.zeros(c.num_items + 1, c.item_features))
        self.feature_proj = nn.Linear(c.item_features, d, bias=False) if c.item_features else None
        self.pos_emb = nn.Embedding(c.session_items, d)
        self.target_attention = TargetAttention(d, c.n_heads)
        self.combine = nn.Linear(3 * d, d)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(d, c.n_heads, c.dropout) for _ in range(c.layers))
        self.norm = nn.LayerNorm(d)
        self.towers = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1)) for _ in SIGNALS
        )
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def _embed(self, items: Tensor) -> Tensor:
        """``(..., d)``: an item's learned id embedding (when ``item_ids``) plus its projected
        side features."""
        rows = torch.where(items >= 0, items, self.config.num_items)
        parts = [] if self.item_emb is None else [self.item_emb(rows)]
        if self.feature_proj is not None:
            parts.append(self.feature_proj(self.features[rows]))
        return torch.stack(parts).sum(0)

    def forward(self, history: Tensor, sessions: Tensor) -> Tensor:
        """Logits of swt, vtr, wtr, ltr for ``sessions`` (B, m) after ``history`` (B, n), both
        holding item indices with -1 as padding (sessions: at the end): ``(B, 4)`` for the
        pooled session (``targets="session"``), ``(B, m, 4)`` per item (``targets="item"``)."""
        m = sessions.shape[1]
        if m > self.config.session_items:
            raise AlignmentConfigError(
                f"sessions have {m} items but the reward model was built for at most "
                f"{self.config.session_items} (RewardModelConfig.session_items)"
            )
        valid = sessions >= 0  # (B, m)
        e = self._embed(sessions)  # (B, m, d)
        u = self.target_attention(e, self._embed(history), history >= 0)  # (B, m, d)
        x = self.combine(torch.cat([e, u, e * u], dim=-1)) + self.pos_emb.weight[:m]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, ~valid)
        x = self.norm(x) * valid.unsqueeze(-1)
        if self.config.targets == "session":
            x = x.sum(1)  # (B, d) sum pooling
        return torch.cat([tower(x) for tower in self.towers], dim=-1)

    # --- predictions in the oracle's units ----------------------------------------------------
    def values(self, logits: Tensor, valid: Tensor) -> Tensor:
        """``(B, 4)``: expected session swt (seconds) and vtr, wtr, ltr rates, from
        :meth:`forward`'s logits for sessions whose items are ``valid`` (B, m)."""
        p = torch.sigmoid(logits)
        if self.config.targets == "item":  # items' expectations: summed swt, mean rates
            p = p * valid.unsqueeze(-1)
            p = torch.cat([p[..., :1].sum(1), p[..., 1:].sum(1) / valid.sum(1, keepdim=True)], 1)
        return torch.cat([p[:, :1] * self.config.swt_scale, p[:, 1:]], dim=1)

    def combined(self, values: Tensor, lengths: Tensor) -> Tensor:
        """The combined score ``(B,)`` (module doc) of :meth:`values` for sessions of
        ``lengths`` items."""
        c = self.config
        w = torch.tensor(c.weights, dtype=values.dtype, device=values.device)
        ref = torch.tensor(c.references, dtype=values.dtype, device=values.device)
        per_item = torch.cat([values[:, :1] / lengths.unsqueeze(1), values[:, 1:]], dim=1)
        return (per_item / ref * w).sum(1) / w.sum()

    @torch.no_grad()
    def score(
        self, history: Ragged | np.ndarray, sessions: np.ndarray, batch_size: int = 1024
    ) -> dict[str, np.ndarray]:
        """Predicted ``swt`` (seconds), ``vtr``, ``wtr``, ``ltr`` and combined ``reward`` of every
        session ``(B, m)`` (-1 pads at the end) after each history row, in eval mode."""
        was_training = self.training
        self.eval()
        sessions = np.asarray(sessions, dtype=np.int64)
        padded = pad_history(history, self.config.history_length)
        device = self.features.device
        out = []
        try:
            for start in range(0, len(sessions), batch_size):
                rows = slice(start, start + batch_size)
                s = torch.from_numpy(sessions[rows]).to(device)
                v = self.values(self(padded[rows].to(device), s), s >= 0)
                out.append(torch.cat([v, self.combined(v, (s >= 0).sum(1)).unsqueeze(1)], 1))
        finally:
            self.train(was_training)
        values = torch.cat(out).double().cpu().numpy() if out else np.zeros((0, 5))
        return {name: values[:, k] for k, name in enumerate((*SIGNALS, "reward"))}

    def reward(self, users: np.ndarray, history: Ragged, sessions: np.ndarray) -> np.ndarray:
        """The combined score ``(B,)`` of each session after its history row (``users`` is
        unused: the RM reads histories, not user ids; the argument matches the oracle's)."""
        return self.score(history, sessions)["reward"]

    def check_catalog(self, n_items: int, fingerprint: str = "") -> None:
        """Raise :class:`CatalogMismatchError` unless the RM was trained on this catalog."""
        c = self.config
        if n_items != c.num_items or (fingerprint and c.catalog and fingerprint != c.catalog):
            raise CatalogMismatchError(
                f"the reward model was trained on a catalog of {c.num_items} items (fingerprint "
                f"{c.catalog or 'unknown'}) but the generator's semantic IDs cover {n_items} "
                f"items (fingerprint {fingerprint or 'unknown'}): train the RM on the log of the "
                "dataset the generator was tokenized and trained on"
            )

    # --- files --------------------------------------------------------------------------------
    def save(self, directory: str | Path, name: str = "reward_model") -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_text(directory / "reward_config.json", json.dumps(self.config.to_dict(), indent=2))
        path = directory / f"{name}.safetensors"
        write_safetensors(self.state_dict(), path)
        return path

    @classmethod
    def load(cls, directory: str | Path, device: str = "cpu") -> "RewardModel":
        directory = Path(directory)
        saved = json.loads((directory / "reward_config.json").read_text())
        config = RewardModelConfig.from_dict(saved)
        model = cls(config)
        model.load_state_dict(load_file(str(directory / "reward_model.safetensors"), device=device))
        return model.to(device).eval()
