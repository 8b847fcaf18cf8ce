"""Shared fixtures. The public datasets live at ../shared/data (override: ONEREC_DATA_DIR).

Tests that need them fail loudly in CI (CI=true) when the folder is missing, and skip with a
reason elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # conversions are cached per test session, never in the user's home
    os.environ["ONEREC_CACHE_DIR"] = str(tmp_path_factory.mktemp("onerec-cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("ONEREC_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not (path / "s3rec").is_dir():
        message = f"public datasets not found at {path} (set ONEREC_DATA_DIR)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + ": CI must have ../shared/data beside the project")
        pytest.skip(message)
    return path


def _same_blob_rate(codes: torch.Tensor, blob: torch.Tensor) -> float:
    """Of the item pairs that share all their ``codes`` (N, L), the fraction from one ``blob``."""
    _, group = torch.unique(codes, dim=0, return_inverse=True)
    same_codes = group[:, None] == group[None, :]
    same_codes.fill_diagonal_(False)
    if not bool(same_codes.any()):
        return 1.0
    return float((blob[:, None] == blob[None, :])[same_codes].float().mean())


@pytest.fixture
def same_blob_rate():
    """Tokenizer tests' check that codes follow the data: constant or random codes score about
    1 / number of blobs, codes that recover well-separated blobs score near 1. It is measured
    on the quantizer's own codes, before the disambiguating code makes every ID unique."""
    return _same_blob_rate
