"""Published tokenizations (LETTER's and CollisionGenRec's semantic IDs for Beauty) read as code
tables, so that our tokenizers can be compared with them on utilization and collisions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from onerec.data.schema import canonical_ids
from onerec.exceptions import DataError

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
