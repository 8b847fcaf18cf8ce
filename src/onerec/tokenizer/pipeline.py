"""From item embeddings to saved semantic IDs in one call, for any of the three quantizers.

``tokenize(x, TokenizeConfig(method="balanced"))`` fits balanced residual k-means (OneRec),
``"plain"`` fits unbalanced residual k-means, ``"rqvae"`` fits TIGER's RQ-VAE; each returns
unique semantic IDs and the same quality report, so the three can be compared on one table.
``save_tokenization`` writes a directory that the model stage reads back with
``load_tokenization``: the quantizer, ``semantic_ids.parquet`` (raw item id -> codes), the
report and the config.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from onerec.data.schema import IdMap
from onerec.exceptions import ConfigError, DataError, RunFileError
from onerec.tokenizer.residual import (
    QualityReport,
    ResidualKMeansQuantizer,
    ResidualQuantizerConfig,
    SemanticIds,
    default_codebook_size,
    quality_report,
)
from onerec.tokenizer.trie import as_code_table
from onerec.tokenizer.rqvae import RQVAEConfig, RQVAEQuantizer

METHODS = ("balanced", "plain", "rqvae")


@dataclass(frozen=True)
class TokenizeConfig:
    """Which quantizer and how large. ``codebook_size=None`` picks one from the catalog size."""

    method: str = "balanced"
    levels: int = 3
    codebook_size: int | None = None
    iters: int = 50  # k-means iterations per level
    rqvae_epochs: int = 200
    dedup: str = "suffix"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.levels < 1:
            raise ConfigError(f"levels must be >= 1, got {self.levels}")
        if self.codebook_size is not None and self.codebook_size < 2:
            raise ConfigError(
                f"codebook_size must be >= 2 (one code per level says nothing about an item) or "
                f"None to size it from the catalog, got {self.codebook_size}"
            )


@dataclass
class Tokenization:
    quantizer: ResidualKMeansQuantizer | RQVAEQuantizer
    semantic_ids: SemanticIds
    report: QualityReport
    config: TokenizeConfig
    seconds: float


def make_quantizer(config: TokenizeConfig, n_items: int) -> ResidualKMeansQuantizer | RQVAEQuantizer:
    k = config.codebook_size or default_codebook_size(n_items, config.levels)
    if config.method == "rqvae":
        return RQVAEQuantizer(
            RQVAEConfig(
                levels=config.levels, codebook_size=k, epochs=config.rqvae_epochs,
                seed=config.seed, dedup=config.dedup,
            )
        )  # fmt: skip
    return ResidualKMeansQuantizer(
        ResidualQuantizerConfig(
            levels=config.levels, codebook_size=k, balanced=config.method == "balanced",
            iters=config.iters, seed=config.seed, dedup=config.dedup,
        )
    )  # fmt: skip


def tokenize(
    x: np.ndarray | torch.Tensor, config: TokenizeConfig = TokenizeConfig(), progress: bool = False
) -> Tokenization:
    """Fit the configured quantizer on the catalog ``x`` (N, D) and measure the result;
    ``progress`` shows the RQ-VAE's training bar (off by default, as in every library call:
    the command line turns it on unless ``--quiet``)."""
    quantizer = make_quantizer(config, len(x))
    start = time.perf_counter()
    quantizer.fit(x, progress=progress)
    seconds = time.perf_counter() - start
    assert quantizer.semantic_ids is not None
    report = quality_report(quantizer, x, quantizer.semantic_ids, seed=config.seed)  # type: ignore[arg-type]
    return Tokenization(quantizer, quantizer.semantic_ids, report, config, seconds)


def report_markdown(report: QualityReport) -> str:
    lines = [
        f"items: {report.n_items:,}; collisions before disambiguation: "
        f"{100 * report.collision_rate_before:.2f}% of items, after: "
        f"{100 * report.collision_rate_after:.2f}%",
        f"reconstruction: mse {report.mse:.5g}, relative error {report.relative_error:.4f}",
        f"semantic check: mean distance of items sharing a first code "
        f"{report.same_prefix_distance:.4f} vs random pairs {report.random_pair_distance:.4f}",
        "",
        "| level | K | used | utilization | entropy (bits) | normalized | largest | smallest |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, lv in enumerate(report.levels):
        lines.append(
            f"| {i} | {lv.size} | {lv.used} | {lv.utilization:.3f} | {lv.entropy_bits:.2f} | "
            f"{lv.entropy_normalized:.3f} | {lv.largest} | {lv.smallest} |"
        )
    return "\n".join(lines)


def save_tokenization(
    directory: str | Path, result: Tokenization, items: IdMap, extra: dict[str, Any] | None = None
) -> Path:
    """Write the quantizer, ``semantic_ids.parquet``, ``report.json``/``report.md`` and
    ``config.json`` (the tokenizer config plus ``extra``, e.g. the embedding config)."""
    out = save_semantic_ids(directory, result.semantic_ids, items,
                            {"tokenizer": asdict(result.config), **(extra or {})})  # fmt: skip
    result.quantizer.save(out / "quantizer")
    (out / "report.json").write_text(
        json.dumps({**result.report.to_dict(), "fit_seconds": result.seconds}, indent=2)
    )
    title = f"# tokenization ({result.config.method})"
    (out / "report.md").write_text(f"{title}\n\n{report_markdown(result.report)}\n")
    return out


def save_semantic_ids(
    directory: str | Path, ids: SemanticIds, items: IdMap, config: dict[str, Any]
) -> Path:
    """Write ``semantic_ids.parquet`` (raw item id -> codes) and ``config.json`` (``config``):
    all that training and serving read. For codes that come without a quantizer (a published
    tokenization); :func:`save_tokenization` adds the quantizer and its report."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    codes = ids.codes.cpu().numpy()
    if len(items) != len(codes):
        raise DataError(f"{len(items)} item ids for {len(codes)} code rows")
    table = pa.table(
        {"item_id": pa.array(items.raw), **{f"code_{i}": codes[:, i] for i in range(codes.shape[1])}}
    )
    meta = {"level_sizes": json.dumps(ids.level_sizes), "base_levels": str(ids.base_levels),
            "collision_rate_before": repr(ids.collision_rate_before)}  # fmt: skip
    pq.write_table(table.replace_schema_metadata(meta), out / "semantic_ids.parquet")
    (out / "config.json").write_text(json.dumps(config, indent=2, default=str))
    return out


def load_tokenization(directory: str | Path) -> tuple[IdMap, SemanticIds]:
    """The item id map and the semantic IDs saved by :func:`save_tokenization`. A damaged
    ``semantic_ids.parquet`` (not Parquet, no ``item_id`` or ``code_*`` columns, no level sizes
    in its metadata, nulls) is a :class:`RunFileError` naming the file."""
    path = Path(directory) / "semantic_ids.parquet"
    if not path.exists():
        raise DataError(f"{directory} holds no semantic_ids.parquet", hint="run `onerec tokenize`.")
    hint = "write it again with `onerec tokenize` (or copy the run's own)."
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise RunFileError(f"cannot read it as Parquet ({e})", path=path, hint=hint) from None
    meta = table.schema.metadata or {}
    cols = [c for c in table.column_names if c.startswith("code_")]
    try:
        level_sizes = json.loads(meta[b"level_sizes"])
        base_levels, collisions = int(meta[b"base_levels"]), float(meta[b"collision_rate_before"])
    except (KeyError, ValueError) as e:
        raise RunFileError(
            f"its metadata lacks a valid level_sizes, base_levels or collision_rate_before ({e!r})",
            path=path, hint=hint,
        ) from None  # fmt: skip
    if "item_id" not in table.column_names or not cols:
        raise RunFileError(f"expected columns item_id, code_0, code_1, ..., got "
                           f"{table.column_names}", path=path, hint=hint)  # fmt: skip
    nulls = [c for c in ("item_id", *cols) if table.column(c).null_count]
    if nulls:
        raise RunFileError(f"columns {nulls} hold empty values", path=path, hint=hint)
    codes = torch.from_numpy(np.stack([table.column(c).to_numpy() for c in cols], axis=1).astype(np.int64))
    ids = IdMap.from_saved(table.column("item_id").to_numpy(zero_copy_only=False), "item", path)
    sem = SemanticIds(
        as_code_table(codes, level_sizes, str(path)), level_sizes, base_levels, collisions,
    )  # fmt: skip
    if len(torch.unique(sem.codes, dim=0)) != len(sem.codes):
        raise DataError("two items share a code sequence", path=path, hint="tokenize again.")
    return ids, sem
