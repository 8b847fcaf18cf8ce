"""Shared fixtures. The public datasets live at ../shared/data (override: ONEREC_DATA_DIR).

Tests that need them fail loudly in CI (CI=true) when the folder is missing, and skip with a
reason elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
