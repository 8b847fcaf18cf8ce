"""Published tokenizations (LETTER's and CollisionGenRec's semantic IDs for Beauty) read as code
tables: to compare our tokenizers with them on utilization and collisions, and to give a model
semantic IDs made from item text where the text itself is not on this machine (Beauty)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from onerec.data.registry import resolve_data_dir
from onerec.data.schema import Dataset, canonical_ids
from onerec.exceptions import ConfigError, DataError
from onerec.tokenizer.residual import SemanticIds

# Published RQ-VAE tokenizations from item text, for catalogs whose text is not here: file (in
# the data directory) and the shift from its keys to the dataset's raw item ids. CollisionGenRec's
# Beauty codes are keyed 0..12100 = S3-Rec item k + 1: with that shift, items sharing a first
# code share attributes (mean Jaccard .38 vs .06 for random pairs; .07 without the shift).
PUBLISHED_CODES: dict[str, tuple[str, int]] = {"beauty": ("cgr/Beauty.rqvae_native.index.json", 1)}

_TOKEN = re.compile(r"<([a-z])_(\d+)>")


def read_index_json(path: str | Path) -> tuple[np.ndarray, torch.Tensor]:
    """``{item: ["<a_183>", "<b_70>", ...]}`` -> (raw item ids, codes (N, L) int64).

    The letter names the level (a = first); the number is the code within that level.
    """
    p = Path(path)
    data = json.loads(p.read_text())
    if not isinstance(data, dict) or not data:
        raise DataError("expected a non-empty JSON object of item -> token list", path=p)
    keys = list(data)
    rows = []
    for k in keys:
        tokens = data[k]
        parsed = [_TOKEN.fullmatch(t) for t in tokens] if isinstance(tokens, list) else [None]
        if not parsed or any(m is None for m in parsed):
            raise DataError(f"item {k!r}: expected tokens like '<a_12>', got {tokens!r}", path=p)
        levels = [ord(m.group(1)) - ord("a") for m in parsed]  # type: ignore[union-attr]
        if levels != list(range(len(levels))):
            raise DataError(f"item {k!r}: levels {levels} are not a, b, c, ... in order", path=p)
        rows.append([int(m.group(2)) for m in parsed])  # type: ignore[union-attr]
    width = {len(r) for r in rows}
    if len(width) != 1:
        raise DataError(f"items have different code lengths {sorted(width)}", path=p)
    return canonical_ids(keys), torch.tensor(np.array(rows, dtype=np.int64))


def published_ids(dataset: Dataset, data_dir: str | Path | None, levels: int = 3) -> SemanticIds:
    """The dataset's ``PUBLISHED_CODES`` table, first ``levels`` levels, in the dataset's item
    order, plus our collision code where items share them."""
    if dataset.name not in PUBLISHED_CODES:
        raise ConfigError(
            f"no published tokenization for {dataset.name!r} (there is for "
            f"{sorted(PUBLISHED_CODES)}); tokenize its content with onerec.tokenizer instead"
        )
    name, shift = PUBLISHED_CODES[dataset.name]
    keys, codes = read_index_json(resolve_data_dir(data_dir) / name)
    if codes.shape[1] < levels or len(keys) != dataset.num_items:
        raise ConfigError(
            f"{name} has {len(keys)} items x {codes.shape[1]} levels; {levels} levels for all "
            f"{dataset.num_items} items of {dataset.name} are needed"
        )
    rows = dataset.log.items.index(keys + shift)  # an unknown item raises, naming it
    ordered = codes.new_empty(len(keys), levels)
    ordered[rows] = codes[:, :levels]
    return SemanticIds.from_codes(ordered, [int(codes[:, :levels].max()) + 1] * levels)
