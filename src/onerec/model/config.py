"""The OneRec model's configuration: one dataclass, a few named presets, JSON in and out.

Every size the model has is here, so a run directory's ``config.json`` rebuilds the same model.
``level_sizes`` comes from the tokenizer (``SemanticIds.level_sizes``): it fixes the vocabulary.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import Any, Sequence

from onerec.exceptions import ConfigError, RunFileError
from onerec.runs import read_json

MOE_BALANCE_MODES = ("aux_loss", "bias", "none")

# Sizes of the named presets (everything but level_sizes). Parameter counts (measured with
# OneRec.num_parameters / num_active_parameters; "active" = used by one decoder token) are for
# the paper's vocabulary, level_sizes = [8192] * 3, unless said otherwise.
PRESETS: dict[str, dict[str, Any]] = {
    # unit tests on a CPU: 60k parameters with 3 x 4 codes, milliseconds per step
    "tiny": dict(
        d_model=32, n_heads=2, encoder_layers=1, decoder_layers=2, d_ff=64,
        n_experts=4, top_k=2, max_history=20, n_user_buckets=64,
    ),
    # CPU experiments, and the model the quality benchmark selected on validation
    # (benchmarks/results/onerec_quality.md): 16 experts top-2, dropout 0.1, no user-id
    # embedding, an item head (residual query, loss weight 2) that re-ranks the beam and adds
    # its 20 best items to the beam's, hashed item identities read by the encoder under
    # dropout 0.5, and history dropout 0.5 (history dropout and the head's weight chosen on
    # the selection split: docs/benchmarks.md).
    # 7.0M parameters with 3 x 256 codes (3.6M active: all but the unrouted experts), 2.1M of
    # them the identity tables; 10.1M with 3 x 8192.
    "small": dict(
        d_model=128, n_heads=4, encoder_layers=2, decoder_layers=2, d_ff=640,
        n_experts=16, top_k=2, max_history=50, n_user_buckets=0, dropout=0.1,
        item_loss_weight=2.0, rerank_weight=1.0, item_hash_buckets=8192, item_hash_dropout=0.5,
        item_query_residual=True, head_candidates=20, history_dropout=0.5,
    ),
    # TIGER (Rajput et al. 2023) as a configuration of this model: dense 4 + 4 layers, d_model
    # 128, MLP 1024, dropout 0.1, 2,000 hashed user buckets, 20 history items; next-item targets
    # (m = 1) and RQ-VAE semantic IDs are set by the caller. 4.1M parameters with 3 x 256 codes.
    # Differences: our encoder is block-causal over items (TIGER's is bidirectional), and 4 heads
    # of 32 dimensions instead of 6 of 64.
    "tiger": dict(
        d_model=128, n_heads=4, encoder_layers=4, decoder_layers=4, d_ff=1024,
        n_experts=0, max_history=20, n_user_buckets=2000, dropout=0.1,
    ),
    # sized like the paper's OneRec-0.1B: 24 experts, top-2; 98.8M parameters, 46.9M active
    "base": dict(
        d_model=512, n_heads=8, encoder_layers=4, decoder_layers=4, d_ff=2048,
        n_experts=24, top_k=2, expert_d_ff=384, max_history=256, n_user_buckets=8192,
    ),
    # sized like the paper's OneRec-1B (a GPU): 24 experts, top-2; 0.999B parameters, 0.31B active
    "large": dict(
        d_model=1024, n_heads=16, encoder_layers=8, decoder_layers=8, d_ff=4096,
        n_experts=24, top_k=2, expert_d_ff=1280, max_history=256, n_user_buckets=16384,
    ),
}  # fmt: skip


@dataclass
class OneRecConfig:
    """Sizes of the encoder-decoder and of its sparse MoE decoder feed-forward layers.

    ``d_ff`` is the hidden width of the dense SwiGLU FFN (every encoder layer, and the decoder's
    when ``n_experts`` is 0 or 1). ``expert_d_ff`` is each expert's hidden width; ``None`` means
    ``d_ff // top_k``, so that a token's active FFN width (top_k experts) equals the dense
    FFN's: switching ``n_experts`` between 0 and E then compares dense and MoE decoders at
    equal active parameters (up to the router's d_model * E weights).

    ``moe_balance``: "aux_loss" adds the Switch Transformer load-balancing loss (weight
    ``aux_loss_weight``); "bias" is auxiliary-loss-free balancing (a per-expert bias on the
    router scores, used for selection only, moved by ``bias_update_rate`` after every training
    step by :meth:`OneRec.update_moe_bias`); "none" does neither (for ablations).

    ``max_history``: most history items a target sees (and the encoder's attention window, in
    items); ``max_session_items``: the longest session generation returns by default (the
    paper's m = 5); ``n_user_buckets``: rows of the hashed user-id embedding; 0 = none (every
    user is served as anonymous: the user token is a zero vector, kept as a place to attend).
    ``history_features``: side features per history item (for example the time gap before it,
    its watch time, like or follow), projected to d_model and added to every token of the item;
    0 reads semantic IDs alone.
    ``item_hash_buckets``: when > 0, every history item also gets an identity embedding: its
    code tuple (unique per item) hashed by two independent universal hashes into two tables of
    this many rows, summed, and added to every token of the item. The codes share statistics
    between similar items; this lets the encoder also memorize each item, as an item-ID model
    does. Two hashes make a full collision between two items rare (about N / buckets^2) at the
    memory of 2 x buckets rows; the decoder still generates semantic IDs. 0 (default) = off.
    ``item_hash_dropout``: dropout on the identity embedding where the encoder reads it (as
    SASRec's 0.5 on its item embeddings), so that the encoder cannot lean on memorized items
    alone; the item head's output side reads it whole.
    ``pool_items``: the encoder reads one token per history item, the sum of its code tokens'
    embeddings (with its identity and features), instead of one token per code (False, the
    default). The encoder and the decoder's cross-attention then run over n items instead of
    n x L' codes: SASRec's one position per item, at about 1/L' of the encoder's cost; the
    decoder still generates codes.
    ``input_dropout``: dropout on the encoder's input vectors (every history token's embedding
    with its item's identity and features; SASRec's embedding dropout); None (default) uses
    ``dropout``. The decoder's input and the blocks keep ``dropout``.
    ``history_dropout``: in training, each history item is hidden with this probability from
    every later item in the encoder and from every target after it in cross-attention, except
    the target right after it: a later state reads a thinned history, while the newest item is
    always seen (it is what a test history adds to what training saw). Its own state, its
    target and its identity stay. 0 (default) = off.
    ``item_loss_weight``: when > 0, the model also has an *item head*: the encoder state of each
    history item (its tokens' mean), projected, scores every catalog item by a dot product with
    the item's embedding, the sum of its code tokens' embeddings (so a new item with known codes
    gets a score, and no per-item table grows with the catalog; with ``item_hash_buckets`` its
    identity embedding is added too). It is trained by a full softmax
    over the catalog on the same next-item targets, added to the loss with this weight.
    ``head_dropout``: dropout on the item head's query while training, and
    ``head_identity_dropout`` on the identity part of the catalog's item embeddings on the
    head's output side (which ``item_hash_dropout`` leaves whole); both 0 by default.
    ``item_head_tied``: the head's item embeddings sum rows of the code-token table that the
    encoder reads and the decoder predicts with (True, the default); False gives the head a
    code-embedding table of its own (the identity embedding stays shared).
    ``item_query_residual``: the head's query is the item state plus its projection, so that a
    history item's state scores items like it from the start (SASRec's tied path), instead of
    the projection alone (False, the default).
    ``rerank_weight``: when ranking items (``beam_search_items``), a beam's score becomes its
    log-probability plus this times the item head's log-probability of its item. 0 (default)
    ranks by the beam alone.
    ``head_candidates``: when ranking items, the item head's N best items that the beam did not
    reach join its candidates, each scored like a beam: its exact decoder log-probability
    (teacher-forced) plus ``rerank_weight`` times the head's. 0 (default): the beam alone
    proposes. Needs the item head.
    ``repeat_bias``: the item head adds a learned score to the logit of every item in the
    user's history, per occurrence: one number per recency (1 = the newest item, up to
    ``max_history``) plus a projection of the head's query (how likely this user is to come
    back at all). Users return to items on some catalogs (restaurants, music) and never on
    others (a purchased lipstick); trained by the head's softmax, the bias learns which, where
    an embedding alone must rank a seen item by its similarity to the history. False
    (default) = off. Needs the item head.
    ``decoder_context``: the decoder's first token (BOS) also gets the encoder state of the
    newest history item before its target, projected, so that the first code is predicted
    from the newest item's state directly, as SASRec's last position predicts the next item,
    and not only through cross-attention. False (default): BOS is a token like the others.
    ``rel_buckets`` / ``rel_max_distance``: T5's relative-position buckets of decoder self-
    attention. ``tie_embeddings``: the output head reuses the token embedding (default).
    """

    level_sizes: list[int]  # codes per level, from the tokenizer (L' levels)
    d_model: int = 128
    n_heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 2
    d_ff: int = 512
    n_experts: int = 0  # 0 or 1: dense decoder FFN
    top_k: int = 2
    expert_d_ff: int | None = None  # None: d_ff // top_k
    moe_balance: str = "bias"
    aux_loss_weight: float = 0.01
    bias_update_rate: float = 1e-3
    dropout: float = 0.0
    max_history: int = 50
    history_features: int = 0  # numbers per history item (time gap, feedback); 0 = none
    max_session_items: int = 5
    n_user_buckets: int = 1024
    item_hash_buckets: int = 0  # rows of each of the two hashed item-identity tables; 0 = none
    item_hash_dropout: float = 0.0  # dropout on the identity embedding in the encoder input
    input_dropout: float | None = None  # dropout on the encoder's input; None: ``dropout``
    history_dropout: float = 0.0  # training: hide an item from later items and targets
    item_loss_weight: float = 0.0  # weight of the item head's catalog softmax; 0 = no item head
    rerank_weight: float = 0.0  # ranking: beam log p + this x item head log p; 0 = beam alone
    head_candidates: int = 0  # ranking: the item head's N best items join the beam's
    head_dropout: float = 0.0  # training: dropout on the item head's query
    head_identity_dropout: float = 0.0  # training: dropout on the head's output identities
    item_head_tied: bool = True  # the head's item embeddings reuse the code-token table
    item_query_residual: bool = False  # the head's query: state + projection(state)
    repeat_bias: bool = False  # the head's learned score for the user's seen items, by recency
    decoder_context: bool = False  # BOS + projection(the newest history item's state)
    rel_buckets: int = 32
    rel_max_distance: int = 128
    tie_embeddings: bool = True
    pool_items: bool = False  # one encoder token per history item instead of one per code
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if isinstance(self.level_sizes, (str, bytes)) or not isinstance(
            self.level_sizes, Sequence
        ):
            raise ConfigError(
                f"level_sizes must be a list of ints (SemanticIds.level_sizes), "
                f"got {self.level_sizes!r}"
            )
        self.level_sizes = list(self.level_sizes)
        if not self.level_sizes or not all(_is_int(k) and k >= 1 for k in self.level_sizes):
            raise ConfigError(
                f"level_sizes must be a non-empty list of ints >= 1, got {self.level_sizes!r}"
            )
        for name in ("d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff",
                     "max_history", "max_session_items", "rel_buckets",
                     "rel_max_distance"):  # fmt: skip
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}): "
                f"each head gets d_model / n_heads dimensions"
            )
        if self.rel_max_distance <= self.rel_buckets // 2:
            raise ConfigError(
                f"rel_max_distance ({self.rel_max_distance}) must exceed rel_buckets // 2 "
                f"({self.rel_buckets // 2}): the exact buckets cover that many distances"
            )
        if not _is_int(self.n_user_buckets) or self.n_user_buckets < 0:
            raise ConfigError(
                f"n_user_buckets must be an int >= 0 (0 = no user-id embedding), got "
                f"{self.n_user_buckets!r}"
            )
        if not _is_int(self.item_hash_buckets) or self.item_hash_buckets < 0:
            raise ConfigError(
                f"item_hash_buckets must be an int >= 0 (0 = no item-identity embedding), got "
                f"{self.item_hash_buckets!r}"
            )
        if not _is_int(self.history_features) or self.history_features < 0:
            raise ConfigError(
                f"history_features must be an int >= 0, got {self.history_features!r}"
            )
        if not _is_int(self.n_experts) or self.n_experts < 0:
            raise ConfigError(f"n_experts must be an int >= 0, got {self.n_experts!r}")
        if not _is_int(self.top_k) or self.top_k < 1:
            raise ConfigError(f"top_k must be an int >= 1, got {self.top_k!r}")
        if self.is_moe and self.top_k > self.n_experts:
            raise ConfigError(
                f"top_k ({self.top_k}) must be <= n_experts ({self.n_experts}): a token cannot "
                f"be routed to more experts than there are"
            )
        if self.expert_d_ff is not None and (not _is_int(self.expert_d_ff) or self.expert_d_ff < 1):
            raise ConfigError(f"expert_d_ff must be an int >= 1 or None, got {self.expert_d_ff!r}")
        if self.is_moe and self.expert_width < 1:
            raise ConfigError(
                f"d_ff // top_k = {self.d_ff} // {self.top_k} is 0: set expert_d_ff or a "
                f"larger d_ff"
            )
        if self.moe_balance not in MOE_BALANCE_MODES:
            raise ConfigError(
                f"moe_balance must be one of {MOE_BALANCE_MODES}, got {self.moe_balance!r}"
            )
        for name in ("aux_loss_weight", "bias_update_rate", "item_loss_weight", "rerank_weight"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if not _is_int(self.head_candidates) or self.head_candidates < 0:
            raise ConfigError(
                f"head_candidates must be an int >= 0 (0 = the beam alone proposes), got "
                f"{self.head_candidates!r}"
            )
        if self.head_candidates > 0 and not self.item_loss_weight > 0:
            raise ConfigError(
                f"head_candidates ({self.head_candidates}) needs the item head: set "
                f"item_loss_weight > 0 when training, or head_candidates=0"
            )
        if self.rerank_weight > 0 and not self.item_loss_weight > 0:
            raise ConfigError(
                f"rerank_weight ({self.rerank_weight}) needs the item head: set item_loss_weight "
                f"> 0 when training, or rerank_weight=0"
            )
        if self.repeat_bias is True and not self.item_loss_weight > 0:
            raise ConfigError(
                "repeat_bias adds to the item head's scores: set item_loss_weight > 0 when "
                "training, or repeat_bias=false"
            )
        dropouts = {"dropout": self.dropout, "item_hash_dropout": self.item_hash_dropout,
                    "history_dropout": self.history_dropout, "head_dropout": self.head_dropout,
                    "head_identity_dropout": self.head_identity_dropout}  # fmt: skip
        if self.input_dropout is not None:  # None: follows dropout
            dropouts["input_dropout"] = self.input_dropout
        for name, value in dropouts.items():
            if not _is_number(value) or not 0 <= value < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        if not _is_number(self.norm_eps) or self.norm_eps <= 0:
            raise ConfigError(f"norm_eps must be a number > 0, got {self.norm_eps!r}")
        for name in ("tie_embeddings", "pool_items", "item_head_tied", "item_query_residual",
                     "decoder_context", "repeat_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    # --- derived sizes --------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        """Whether the decoder's FFN layers are sparse MoE layers (n_experts > 1)."""
        return self.n_experts > 1

    @property
    def expert_width(self) -> int:
        """Hidden width of one expert's SwiGLU."""
        return self.expert_d_ff if self.expert_d_ff is not None else self.d_ff // self.top_k

    @property
    def n_levels(self) -> int:
        """Codes per item (L')."""
        return len(self.level_sizes)

    @property
    def vocab_size(self) -> int:
        """PAD, BOS, SEP and every level's codes (see :class:`onerec.model.tokens.TokenLayout`)."""
        return 3 + sum(self.level_sizes)

    # --- presets and files -----------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, level_sizes: Sequence[int], /, **overrides: Any) -> "OneRecConfig":
        """The named preset ("tiny", "small", "base", "large") for a tokenizer's level sizes."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(
                f"unknown config fields {sorted(unknown)}; known: "
                f"{sorted(f.name for f in fields(cls) if f.name != 'level_sizes')}"
            )
        if "level_sizes" in overrides:
            raise ConfigError(
                "level_sizes cannot be overridden: it comes from the semantic IDs (--tokens); "
                "tokenize with other --levels / --codebook-size instead"
            )
        return cls(level_sizes=list(level_sizes), **{**PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> "OneRecConfig":
        """A copy with some fields changed (validated again)."""
        return dataclass_replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OneRecConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(
                f"unknown OneRecConfig fields {sorted(unknown)}; known: {sorted(known)}"
            )
        if "level_sizes" not in d:
            raise ConfigError("OneRecConfig needs level_sizes (from the tokenizer)")
        return cls(**d)

    @classmethod
    def read(cls, path: str | Path) -> "OneRecConfig":
        """The config a run saved in ``path`` (``model_config.json``); any problem (not JSON,
        no ``level_sizes``, a value out of range) is a :class:`RunFileError` naming the file.
        Fields it lacks take their defaults: runs written before a field existed (for example
        ``history_features``) load as they were made; :func:`missing_fields` lists them."""
        hint = "restore the model_config.json written with the weights (OneRec.save)."
        try:
            return cls.from_dict(read_json(path, hint))
        except RunFileError:
            raise
        except (ConfigError, TypeError) as e:
            raise RunFileError(str(e), path=path, hint=hint) from None


def missing_fields(path: str | Path) -> list[str]:
    """The config fields a saved ``model_config.json`` lacks (defaults were used for them)."""
    try:
        saved = read_json(path, "")
    except RunFileError:
        return []
    return [f.name for f in fields(OneRecConfig) if f.name not in saved]


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["n_experts=0", "dropout=0.1"]`` -> ``{"n_experts": 0, "dropout": 0.1}``: the
    command-line form of config overrides. Values are JSON (numbers, true/false, lists)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"a model override is KEY=VALUE (e.g. n_experts=0), got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(
                f"the value of {key} must be JSON (a number, true/false or a list), got {value!r}"
            ) from None
    return overrides


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
