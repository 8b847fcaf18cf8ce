"""FDSA (Zhang et al., IJCAI 2019): item-level and feature-level self-attention, side by side.

Two causal self-attention encoders read the same history: one over item embeddings (as SASRec),
one over *feature* vectors, each item's attribute embeddings pooled by vanilla attention
(``softmax(w . tanh(W a))`` over its attributes). Their outputs at the last position are
concatenated and projected back to the item space, and the catalog is scored against the item
embeddings. Trained with full-softmax cross-entropy at every position (as SASRec-CE), hidden 64,
2 blocks, 2 heads, dropout 0.5, maximum length 50.

Attributes come from the dataset's item table: Beauty and Yelp ship attribute-id lists
(column ``attributes``), Scientific has ``brand`` and comma-separated ``categories``; a dataset
with neither raises :class:`MissingItemAttributesError`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from onerec.baselines.base import PAD, SequenceBatch, SequentialRecommender
from onerec.baselines.sasrec import SequenceEncoder, next_item_loss
from onerec.data.ragged import Ragged
from onerec.data.schema import Dataset
from onerec.exceptions import BaselineError, MissingItemAttributesError

# item-table columns read as attributes: list columns as they are; string columns as one value
# each (``brand``) or split at commas (``categories``)
ATTRIBUTE_COLUMNS: dict[str, str | None] = {"attributes": None, "brand": None, "categories": ","}
MAX_ATTRIBUTES = 32  # per item; Beauty has at most 10, Scientific's category paths are shorter


def item_attributes(dataset: Dataset) -> tuple[Ragged, int]:
    """Each item's attribute ids (row ``i`` = item index ``i``) and how many distinct ids.

    Attribute values are named by column (``brand=Stanley`` and ``categories=Stanley`` differ)
    and numbered from 0 in order of first appearance.
    """
    table = dataset.item_table
    columns = [c for c in ATTRIBUTE_COLUMNS if c in table.columns]
    if not columns:
        raise MissingItemAttributesError(
            f"FDSA needs item attributes, but the item table of {dataset.name!r} has only "
            f"{table.columns or 'no'} columns; expected one of {sorted(ATTRIBUTE_COLUMNS)}. "
            "Fix: add an attribute file (a JSON item -> attribute list, `--item-file`) or drop "
            "fdsa from the models"
        )
    if len(table) != dataset.num_items:
        raise BaselineError(
            f"the item table has {len(table)} rows but the dataset has {dataset.num_items} items"
        )
    vocab: dict[tuple[str, object], int] = {}
    rows: list[list[int]] = []
    values = {c: table.table.column(c).to_pylist() for c in columns}
    for i in range(len(table)):
        ids: list[int] = []
        for c in columns:
            v = values[c][i]
            if v is None:
                continue
            if isinstance(v, str):
                sep = ATTRIBUTE_COLUMNS[c]
                parts = [p.strip() for p in v.split(sep)] if sep else [v.strip()]
                v = [p for p in parts if p]
            for a in v:
                ids.append(vocab.setdefault((c, a), len(vocab)))
        rows.append(list(dict.fromkeys(ids))[:MAX_ATTRIBUTES])
    if not vocab:
        raise MissingItemAttributesError(
            f"FDSA needs item attributes, but every item of {dataset.name!r} has an empty "
            f"{columns} value"
        )
    return Ragged.from_lists(rows), len(vocab)


class FDSA(SequentialRecommender):
    name = "fdsa"

    def __init__(
        self,
        num_items: int,
        attributes: Ragged,
        num_attributes: int,
        max_length: int = 50,
        hidden: int = 64,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(num_items, max_length)
        if len(attributes) != num_items:
            raise BaselineError(
                f"attributes have {len(attributes)} rows, expected one per item ({num_items})"
            )
        if len(attributes.values) and (
            attributes.values.min() < 0 or attributes.values.max() >= num_attributes
        ):
            raise BaselineError(f"attribute ids must be in [0, {num_attributes})")
        # (num_items + 1, A) attribute tokens: 0 = none; an item without attributes gets the
        # extra token num_attributes + 1 ("no attribute"), so its pooling is never empty
        table = attributes.to_padded(max(1, int(attributes.lengths.max(initial=0))), pad=-1) + 1
        table[attributes.lengths == 0, 0] = num_attributes + 1
        table = np.concatenate([np.zeros((1, table.shape[1]), dtype=np.int64), table])
        self.register_buffer("item_attributes", torch.from_numpy(table), persistent=False)
        self.attribute_embeddings = nn.Embedding(num_attributes + 2, hidden, padding_idx=0)
        nn.init.normal_(self.attribute_embeddings.weight, std=0.02)
        self.pool_proj = nn.Linear(hidden, hidden)
        self.pool_query = nn.Linear(hidden, 1, bias=False)
        self.items = SequenceEncoder(num_items + 1, max_length, hidden, layers, heads, dropout,
                                     causal=True)  # fmt: skip
        self.features = SequenceEncoder(1, max_length, hidden, layers, heads, dropout, causal=True)
        self.project = nn.Linear(2 * hidden, hidden)

    def feature_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, L, D)``: each item's attribute embeddings pooled by vanilla attention."""
        attrs = self.item_attributes[tokens]  # (B, L, A)
        a = self.attribute_embeddings(attrs)  # (B, L, A, D)
        w = self.pool_query(torch.tanh(self.pool_proj(a))).squeeze(-1)  # (B, L, A)
        w = w.masked_fill(attrs == 0, float("-inf"))
        w = torch.where(tokens[..., None] == PAD, 0.0, w)  # padding: a harmless uniform weight
        return (torch.softmax(w, dim=-1)[..., None] * a).sum(-2)

    def _hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        h_item = self.items(tokens)
        h_feat = self.features(tokens, embedded=self.feature_vectors(tokens))
        return self.project(torch.cat([h_item, h_feat], dim=-1))

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        h = self._hidden(batch.tokens[:, :-1])
        return next_item_loss(h, batch.tokens[:, 1:], self.items.items.weight, "ce")

    def forward_scores(self, tokens: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return self._hidden(tokens)[:, -1] @ self.items.items.weight[1:].T
