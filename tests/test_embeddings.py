"""Item embeddings: each source, alignment to the catalog, fusion, caching, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.numpy import load_file, save_file

from onerec.data import IdMap, leave_one_out, read_dataset
from onerec.data.ragged import Ragged
from onerec.embeddings import (
    EmbeddingConfig,
    attribute_embeddings,
    check_embeddings,
    cooccurrence_embeddings,
    embed_texts,
    fuse,
    item_embeddings,
    item_texts,
    load_vectors,
)
from onerec.exceptions import EmbeddingError, UnknownItemError


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_text_embeddings_work_offline_and_capture_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    x = embed_texts(["red lipstick for women", "matte lip color", "cordless power drill"], progress=False)
    assert x.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert cos(x[0], x[1]) > cos(x[0], x[2]) + 0.2


def test_attribute_embeddings_group_shared_attributes() -> None:
    attrs = [[1, 2], [1, 2], [1, 3], [7, 8], [7, 8, 9], []]
    x = attribute_embeddings(attrs, dim=4)
    assert x.shape == (6, 4)
    np.testing.assert_allclose(x[0], x[1], atol=1e-6)
    assert cos(x[0], x[2]) > cos(x[0], x[3])
    np.testing.assert_allclose(x[5], 0, atol=1e-7)
    np.testing.assert_array_equal(x, attribute_embeddings(attrs, dim=4))  # deterministic


def test_cooccurrence_embeddings_follow_sequences() -> None:
    rng = np.random.default_rng(0)
    # items 0-9 are consumed together, items 10-19 together
    seqs = [rng.choice(10, 8) + 10 * (u % 2) for u in range(200)]
    x = cooccurrence_embeddings(Ragged.from_lists(seqs), 20, dim=4, window=3)
    same = np.mean([cos(x[i], x[j]) for i in range(10) for j in range(10) if i != j])
    other = np.mean([cos(x[i], x[j + 10]) for i in range(10) for j in range(10)])
    assert same > other + 0.5
    with pytest.raises(EmbeddingError, match="exceeds"):
        cooccurrence_embeddings(Ragged.from_lists([[0, 30]]), 20)


def test_check_and_load_vectors(tmp_path: Path) -> None:
    items = IdMap(np.array([10, 20, 30]), "item")
    with pytest.raises(EmbeddingError, match="NaN or infinite.*row 1"):
        check_embeddings(np.array([[0.0, 1], [np.nan, 1], [1, 1]]))
    with pytest.raises(EmbeddingError, match="2-D"):
        check_embeddings(np.zeros(3))
    np.save(tmp_path / "v.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    assert load_vectors(tmp_path / "v.npy", items).shape == (3, 2)
    np.save(tmp_path / "short.npy", np.zeros((2, 2)))
    with pytest.raises(EmbeddingError, match="2 rows for a catalog of 3"):
        load_vectors(tmp_path / "short.npy", items)
    vecs = pa.array([[3.0, 3.0], [1.0, 1.0], [2.0, 2.0]])
    pq.write_table(pa.table({"id": [30, 10, 20], "vec": vecs}), tmp_path / "v.parquet")
    np.testing.assert_array_equal(load_vectors(tmp_path / "v.parquet", items)[:, 0], [1, 2, 3])
    pq.write_table(pa.table({"id": [30, 10, 10], "vec": vecs}), tmp_path / "dup.parquet")
    with pytest.raises(EmbeddingError, match="appear twice"):
        load_vectors(tmp_path / "dup.parquet", items)
    pq.write_table(pa.table({"id": [30, 10, 99], "vec": vecs}), tmp_path / "bad.parquet")
    with pytest.raises(UnknownItemError):
        load_vectors(tmp_path / "bad.parquet", items)


def test_fuse_balances_blocks() -> None:
    rng = np.random.default_rng(0)
    big, small = 100 * rng.normal(size=(50, 30)), rng.normal(size=(50, 4))
    fused = fuse({"big": big, "small": small})
    assert fused.shape == (50, 34)
    # per-block normalization: both blocks carry the same mean row norm
    assert np.isclose(np.linalg.norm(fused[:, :30], axis=1).mean(), np.linalg.norm(fused[:, 30:], axis=1).mean())
    assert fuse({"big": big, "small": small}, dim=8).shape == (50, 8)
    with pytest.raises(EmbeddingError, match="different item counts"):
        fuse({"a": big, "b": small[:10]})


def test_item_embeddings_from_a_dataset_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each source is computed once, written to the cache, and read back from it after."""
    import onerec.embeddings.build as build

    cache = tmp_path / "cache"  # this test's own: nothing another test cached counts
    monkeypatch.setenv("ONEREC_CACHE_DIR", str(cache))
    calls = {"attributes": 0, "collaborative": 0}

    def counted(name: str, compute: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        def spy(*args: Any, **kwargs: Any) -> np.ndarray:
            calls[name] += 1
            return compute(*args, **kwargs)

        return spy

    for name, function in (("attributes", "attribute_embeddings"),
                           ("collaborative", "cooccurrence_embeddings")):  # fmt: skip
        monkeypatch.setattr(build, function, counted(name, getattr(build, function)))
    seq = tmp_path / "s.txt"
    seq.write_text("".join(f"{u} " + " ".join(str(1 + (u + k) % 12) for k in range(6)) + "\n" for u in range(1, 40)))
    attrs = tmp_path / "a.json"
    attrs.write_text("{" + ",".join(f'"{i}": [{i % 3}, {10 + i % 2}]' for i in range(1, 13)) + "}")
    ds = read_dataset(seq, item_files=[attrs])
    split = leave_one_out(ds.log)
    cfg = EmbeddingConfig(sources=("attributes", "collaborative"), dim=4)

    def cached() -> dict[str, Path]:
        return {f.name.split("-")[0]: f for f in (cache / "embeddings").glob("*.safetensors")}

    x = item_embeddings(ds, cfg, split=split)
    assert x.shape == (12, 8) and calls == {"attributes": 1, "collaborative": 1}
    files = cached()
    assert sorted(files) == ["attributes", "collaborative"]  # one file per source, written
    written = {name: f.stat().st_mtime_ns for name, f in files.items()}
    # the second call reads the files: nothing is computed, nothing rewritten
    np.testing.assert_array_equal(item_embeddings(ds, cfg, split=split), x)
    assert calls == {"attributes": 1, "collaborative": 1}
    assert {name: f.stat().st_mtime_ns for name, f in cached().items()} == written
    # what it returns is what the file holds
    marked = load_file(files["attributes"])["embeddings"] + 1.0
    save_file({"embeddings": marked}, files["attributes"])
    attributes_only = EmbeddingConfig(sources=("attributes",), dim=4)
    np.testing.assert_array_equal(item_embeddings(ds, attributes_only), marked)
    # other settings are another key: computed and cached beside, never served from the old file
    assert item_embeddings(ds, EmbeddingConfig(sources=("attributes",), dim=3)).shape == (12, 3)
    assert calls["attributes"] == 2 and len(list((cache / "embeddings").glob("attributes-*"))) == 2
    # use_cache=False computes and writes nothing
    item_embeddings(ds, cfg, split=split, use_cache=False)
    assert calls == {"attributes": 3, "collaborative": 2}
    assert len(list((cache / "embeddings").iterdir())) == 3
    with pytest.raises(EmbeddingError, match="training split only"):
        item_embeddings(ds, EmbeddingConfig(sources=("collaborative",)))
    with pytest.raises(EmbeddingError, match="no text fields"):
        item_texts(ds.item_table)
    with pytest.raises(EmbeddingError, match="non-empty subset"):
        EmbeddingConfig(sources=("pixels",))
