"""The tokenize pipeline for all three quantizers, RQ-VAE on its own, published tokenizations,
saving and loading, and the `onerec tokenize` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from onerec.cli import main
from onerec.data.schema import IdMap
from onerec.exceptions import ConfigError, DataError, NotFittedError
from onerec.tokenizer.pipeline import TokenizeConfig, load_tokenization, save_tokenization, tokenize
from onerec.tokenizer.published import read_index_json
from onerec.tokenizer.rqvae import RQVAEConfig, RQVAEQuantizer


def blobs(n: int = 600, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points in 12 tight, well-separated blobs, and the blob of every point."""
    g = torch.Generator().manual_seed(seed)
    centers = 4 * torch.randn(12, dim, generator=g)
    blob = torch.randint(12, (n,), generator=g)
    return centers[blob] + 0.3 * torch.randn(n, dim, generator=g), blob


def clustered(n: int = 600, dim: int = 16, seed: int = 0) -> torch.Tensor:
    return blobs(n, dim, seed)[0]


# pairs of items sharing both codes that come from one blob (constant or random codes: ~1/12),
# measured on seeds 0-3: balanced >= .987, plain 1.0, RQ-VAE after 5 epochs .59-.70
SAME_BLOB = {"balanced": 0.95, "plain": 0.95, "rqvae": 0.5}


@pytest.mark.parametrize("method", ["balanced", "plain", "rqvae"])
def test_every_method_gives_unique_ids_and_a_report(
    method: str, tmp_path: Path, same_blob_rate
) -> None:
    x, blob = blobs()
    result = tokenize(x, TokenizeConfig(method=method, levels=2, codebook_size=8, iters=10, rqvae_epochs=5))
    ids = result.semantic_ids
    assert ids.n_items == 600 and ids.collision_rate_after == 0.0
    assert len({tuple(r) for r in ids.codes.tolist()}) == 600
    assert result.report.n_items == 600 and len(result.report.levels) == 2
    # the quantizer's own codes, before the disambiguating code: they use the codebooks (5+ of 8
    # codes per level; seeds 0-3 use 5-8) and items that share them are alike
    base = ids.codes[:, : ids.base_levels]
    assert ids.base_levels == 2
    for level, quality in enumerate(result.report.levels):
        assert len(torch.unique(base[:, level])) == quality.used >= 5
    assert same_blob_rate(base, blob) > SAME_BLOB[method]
    if method == "balanced":
        assert all(lv.largest - lv.smallest <= 1 for lv in result.report.levels)
    items = IdMap(np.arange(100, 700), "item")
    save_tokenization(tmp_path / "tok", result, items, {"note": "test"})
    loaded_items, loaded = load_tokenization(tmp_path / "tok")
    assert torch.equal(loaded.codes, ids.codes) and loaded.level_sizes == ids.level_sizes
    assert loaded_items.raw.tolist() == items.raw.tolist()
    assert json.loads((tmp_path / "tok" / "config.json").read_text())["tokenizer"]["method"] == method


def test_progress_false_prints_no_bar(capsys: pytest.CaptureFixture) -> None:
    config = TokenizeConfig(method="rqvae", levels=2, codebook_size=8, rqvae_epochs=3)
    tokenize(clustered(200), config, progress=False)
    assert "RQ-VAE" not in capsys.readouterr().err
    tokenize(clustered(200), config)  # a library call is quiet by default
    assert "RQ-VAE" not in capsys.readouterr().err
    tokenize(clustered(200), config, progress=True)
    assert "training RQ-VAE" in capsys.readouterr().err


def test_rqvae_round_trip_and_errors(tmp_path: Path, same_blob_rate) -> None:
    x, blob = blobs(300, 8)
    q = RQVAEQuantizer(RQVAEConfig(levels=2, codebook_size=8, epochs=10, hidden=(32,), latent_dim=4))
    with pytest.raises(NotFittedError):
        q.encode(x)
    q.fit(x, progress=False)
    assert q.history[-1] < q.history[0]  # it learns
    codes = q.encode(x)
    assert codes.shape == (300, 2) and int(codes.max()) < 8
    # codes that follow the data (seeds 0-3: 7-8 codes per level, same-blob rate .88-1.0)
    assert all(len(torch.unique(codes[:, level])) >= 6 for level in range(2))
    assert same_blob_rate(codes, blob) > 0.75
    assert torch.equal(q.semantic_ids.codes[:, :2], codes)
    assert q.decode(codes).shape == (300, 8)
    back = RQVAEQuantizer.load(q.save(tmp_path / "rq"))
    assert torch.equal(back.encode(x), codes)
    assert torch.equal(back.semantic_ids.codes, q.semantic_ids.codes)
    with pytest.raises(ConfigError):
        RQVAEConfig(levels=0)
    with pytest.raises(ConfigError):
        TokenizeConfig(method="lsh")


def test_published_index_files(tmp_path: Path, data_dir: Path) -> None:
    ids, codes = read_index_json(data_dir / "letter/Beauty.index.json")
    assert codes.shape == (12_101, 4) and ids[:2].tolist() == [0, 1]
    assert codes[0].tolist() == [183, 70, 232, 6]  # "<a_183>", "<b_70>", "<c_232>", "<d_6>"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"0": ["<a_1>", "<c_2>"]}))
    with pytest.raises(DataError, match="not a, b, c"):
        read_index_json(bad)


def test_tokenize_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    seq = tmp_path / "s.txt"
    rng = np.random.default_rng(0)
    seq.write_text("".join(f"{u} " + " ".join(map(str, rng.integers(1, 61, 6))) + "\n" for u in range(1, 80)))
    attrs = tmp_path / "attrs.json"
    attrs.write_text(json.dumps({str(i): [i % 7, 10 + i % 5, 20 + i % 3] for i in range(1, 61)}))
    out = tmp_path / "tok"
    code = main(["tokenize", str(seq), "--item-file", str(attrs), "--embeddings", "attributes,collaborative",
                 "--levels", "2", "--codebook-size", "4", "--iters", "5", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "utilization" in printed and "wrote" in printed
    items, ids = load_tokenization(out)
    assert ids.n_items == len(items) and ids.collision_rate_after == 0.0
    assert (out / "quantizer" / "codebooks.safetensors").exists()
