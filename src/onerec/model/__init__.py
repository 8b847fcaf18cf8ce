"""The OneRec encoder-decoder: config, token layout, and the model (one file, ``onerec.py``)."""

from onerec.model.config import MOE_BALANCE_MODES, PRESETS, OneRecConfig
from onerec.model.onerec import (
    Attention,
    DecoderCache,
    LossOutput,
    MoE,
    OneRec,
    RMSNorm,
    SwiGLU,
)
from onerec.model.tokens import TokenLayout, pad_features, pad_history

__all__ = [
    "MOE_BALANCE_MODES",
    "PRESETS",
    "Attention",
    "DecoderCache",
    "LossOutput",
    "MoE",
    "OneRec",
    "OneRecConfig",
    "RMSNorm",
    "SwiGLU",
    "TokenLayout",
    "pad_features",
    "pad_history",
]
