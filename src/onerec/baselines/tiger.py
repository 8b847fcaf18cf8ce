"""TIGER (Rajput et al., 2023) in our harness: OneRec's own code with TIGER's configuration.

TIGER is the generative-retrieval baseline the OneRec design grows out of, so it is built from
the same parts and differs only in settings (the point of the comparison):

1. semantic IDs from item *content* only, no collaborative signal: an RQ-VAE, 3 levels x 256
   codes plus a collision code (``onerec.tokenizer``, ``method="rqvae"``; OneRec's default is
   balanced residual k-means) on item text embeddings, as TIGER (Sentence-T5 there, MiniLM
   here). Beauty's item text is not available on these machines and its attribute lists are
   too coarse (the RQ-VAE gave 96% of items the same codes as another item), so for Beauty the
   runner reads a published TIGER-style RQ-VAE tokenization made from its text
   (``PUBLISHED_CODES``: its first 3 levels, then our collision code);
3. the ``tiger`` model preset: a *dense* encoder-decoder, 4 + 4 layers, d_model 128, MLP 1024,
   dropout 0.1, hashed user tokens (see :mod:`onerec.model.config`);
4. next-item training (``session_items=1``) on the last 20 items (TIGER's history length), and
   ranking by constrained beam search (:func:`onerec.generation.beam_search.rank_examples`).

:func:`run_tiger` returns the same record as the other baselines (``run_model``), so the
comparison table treats it like any of them. Its evaluation differs in one way that follows
from what it is: a generative model ranks by beam search (the top ``beam`` items), not by
scoring every item, and the metrics are computed from those ranked lists by the same
:func:`onerec.evaluation.evaluate`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from onerec.baselines.train import BaselineTrainConfig
from onerec.data.schema import Dataset
from onerec.data.splits import leave_one_out
from onerec.embeddings import EmbeddingConfig, content_source, item_embeddings
from onerec.exceptions import ConfigError
from onerec.tokenizer.pipeline import (
    TokenizeConfig,
    load_tokenization,
    save_semantic_ids,
    save_tokenization,
    tokenize,
)
from onerec.tokenizer.published import PUBLISHED_CODES, published_ids
from onerec.training import TrainConfig
from onerec.training.pipeline import split_metrics, train_on_dataset

PUBLISHED = {
    "beauty": {"source": "TIGER paper", "values": [0.0454, 0.0321, 0.0648, 0.0384]},
    "sports": {"source": "TIGER paper", "values": [0.0264, 0.0181, 0.0400, 0.0225]},
    "toys": {"source": "TIGER paper", "values": [0.0521, 0.0371, 0.0712, 0.0432]},
}

@dataclass(frozen=True)
class TigerSettings:
    """What makes the OneRec code TIGER. ``epochs`` sets the learning-rate schedule's length;
    the runner's ``max_seconds`` may stop training earlier (the best epoch is kept)."""

    history_length: int = 20
    codebook_size: int = 256
    levels: int = 3
    rqvae_epochs: int = 200
    epochs: int = 4  # about 16 minutes of training on Beauty on an idle 2-core CPU
    patience: int = 3
    lr: float = 1e-3
    batch_size: int = 256
    eval_beam: int = 20
    eval_users: int | None = 4096  # per-epoch validation subset (beam search is the cost)
    # "auto": a PUBLISHED_CODES table where the dataset has one, else our RQ-VAE on content;
    # "rqvae": always ours; "published": the table, or an error
    codes: str = "auto"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the tiger preset


def tiger_tokens(
    dataset: Dataset, out: Path, settings: TigerSettings, seed: int,
    data_dir: str | Path | None = None, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Semantic IDs saved in ``out`` (kept when a previous run saved them there: a resumed run
    must keep its item codes): a published table or our RQ-VAE (``settings.codes``); what was
    done, for the record."""
    if settings.codes not in ("auto", "rqvae", "published"):
        raise ConfigError(f"TIGER codes must be auto, rqvae or published, got {settings.codes!r}")
    if settings.codes == "published" and dataset.name not in PUBLISHED_CODES:
        raise ConfigError(
            f"no published tokenization for {dataset.name!r} (there is for "
            f"{sorted(PUBLISHED_CODES)}); use codes='rqvae'"
        )
    if settings.codes != "rqvae" and dataset.name in PUBLISHED_CODES:
        source = {"published": PUBLISHED_CODES[dataset.name][0], "levels": settings.levels}
        if not (out / "semantic_ids.parquet").exists():
            ids = published_ids(dataset, data_dir, settings.levels)
            save_semantic_ids(out, ids, dataset.log.items, {"tokenizer": source})
        ids = load_tokenization(out)[1]
        return {**source, "seconds": 0.0, "collision_rate_before": ids.collision_rate_before,
                "codes_per_item": ids.n_levels}  # fmt: skip
    emb = EmbeddingConfig(sources=(content_source(dataset),), seed=seed)
    tok = TokenizeConfig(method="rqvae", levels=settings.levels,
                         codebook_size=settings.codebook_size,
                         rqvae_epochs=settings.rqvae_epochs, seed=seed)  # fmt: skip
    if (out / "semantic_ids.parquet").exists():
        ids = load_tokenization(out)[1]
        return {"embeddings": asdict(emb), "tokenizer": asdict(tok), "seconds": 0.0,
                "reused": str(out), "codes_per_item": ids.n_levels}  # fmt: skip
    result = tokenize(item_embeddings(dataset, emb), tok, progress=progress)
    save_tokenization(out, result, dataset.log.items,
                      {"dataset": dataset.name, "embeddings": asdict(emb)})  # fmt: skip
    return {"embeddings": asdict(emb), "tokenizer": asdict(tok), "seconds": result.seconds,
            "collision_rate_before": result.semantic_ids.collision_rate_before,
            "codes_per_item": result.semantic_ids.n_levels}  # fmt: skip


def run_tiger(
    dataset: Dataset,
    config: BaselineTrainConfig,
    work_dir: str | Path,
    settings: TigerSettings = TigerSettings(),
    progress: bool = True,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Tokenize, train (select on validation Recall@10) and test TIGER; its JSON record, in the
    shape of the other baselines'. ``work_dir`` keeps the tokens and the run (resumable)."""
    start = time.perf_counter()
    work = Path(work_dir)
    tokens_info = tiger_tokens(dataset, work / "tokens", settings, config.seed, data_dir,
                               progress)
    train_config = TrainConfig(
        session_items=1, history_length=settings.history_length, batch_size=settings.batch_size,
        epochs=settings.epochs, lr=settings.lr, patience=settings.patience,
        eval_beam=settings.eval_beam, eval_users=settings.eval_users, seed=config.seed,
        max_seconds=config.max_seconds, device=config.device,
        ema_decay=None,  # TIGER keeps its raw weights (OneRec's default averages them)
    )  # fmt: skip
    t = time.perf_counter()
    trained = train_on_dataset(dataset, work / "tokens", work / "model", train_config,
                               preset="tiger", model_overrides=settings.model,
                               progress=progress)  # fmt: skip
    train_seconds = time.perf_counter() - t
    t = time.perf_counter()
    # TIGER reads the last 20 items; the targets are the same as every baseline's split
    split = leave_one_out(dataset.log, history_length=settings.history_length)
    results = split_metrics(trained.model, split, trained.semantic_ids, settings.eval_beam)
    evaluate_seconds = time.perf_counter() - t
    lines = (work / "model" / "metrics.jsonl").read_text().splitlines()
    log = [json.loads(x) for x in lines if "valid_recall@10" in json.loads(x)]
    best = max(range(len(log)), key=lambda i: log[i]["valid_recall@10"]) if log else -1
    model = trained.model
    return {
        "model": "tiger",
        "class": "OneRec (tiger preset)",
        "parameters": model.num_parameters(),
        "hyperparameters": {"model": model.config.to_dict(), "settings": asdict(settings),
                            "tokens": tokens_info},  # fmt: skip
        "train_config": asdict(train_config),
        "training": {
            "best_epoch": best,
            "epochs": trained.state["epochs"],
            "stopped": trained.state.get("stopped", "epochs"),
            "log": log,
        },
        "seconds": {"tokenize": tokens_info["seconds"], "train": train_seconds,
                    "evaluate": evaluate_seconds,
                    "total": time.perf_counter() - start},  # fmt: skip
        "results": results,
        "published": PUBLISHED.get(dataset.name),
    }
