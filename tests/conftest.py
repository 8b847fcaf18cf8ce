"""Shared fixtures. The public datasets live at ../shared/data (override: ONEREC_DATA_DIR).

Tests that need them, or a dev dependency, fail loudly in CI (CI=true) when it is missing, and
skip with a reason elsewhere.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Callable, NoReturn

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# dev dependencies ("pip install -e '.[dev]'") that some test modules skip without, outside CI
DEV_IMPORTS = ("transformers", "hypothesis", "ray")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(message: str, ci_fix: str) -> NoReturn:
    """Fail in CI, where everything a test needs must be there; skip with a reason elsewhere."""
    if in_ci():
        pytest.fail(f"{message}: {ci_fix}", pytrace=False)
    pytest.skip(message)


def pytest_configure(config: pytest.Config) -> None:
    # in CI a dev dependency that does not import stops the run, instead of its tests skipping
    if not in_ci():
        return
    for name in DEV_IMPORTS:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001 - any failure to import is the finding
            raise pytest.UsageError(
                f"CI=true but the dev dependency {name!r} does not import "
                f"({type(error).__name__}: {error}); CI must install it: pip install -e '.[dev]'"
            ) from error


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # conversions are cached per test session, never in the user's home
    os.environ["ONEREC_CACHE_DIR"] = str(tmp_path_factory.mktemp("onerec-cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("ONEREC_DATA_DIR") or ROOT.parent / "shared" / "data")
    if not (path / "s3rec").is_dir():
        _unavailable(f"public datasets not found at {path} (set ONEREC_DATA_DIR)",
                     "CI must have ../shared/data beside the project")  # fmt: skip
    return path


@pytest.fixture(scope="session")
def data_folder(data_dir: Path) -> Callable[[str], Path]:
    """``data_folder("kuairand-pure-features")``: that folder of the public data, or a failure
    in CI (a skip elsewhere) when it is missing."""

    def folder(name: str) -> Path:
        path = data_dir / name
        if not path.is_dir():
            _unavailable(f"{path} not found", f"CI must have {name}/ in the public data folder")
        return path

    return folder


def _same_blob_rate(codes: torch.Tensor, blob: torch.Tensor) -> float:
    """Of the item pairs that share all their ``codes`` (N, L), the fraction from one ``blob``."""
    _, group = torch.unique(codes, dim=0, return_inverse=True)
    same_codes = group[:, None] == group[None, :]
    same_codes.fill_diagonal_(False)
    if not bool(same_codes.any()):
        return 1.0
    return float((blob[:, None] == blob[None, :])[same_codes].float().mean())


@pytest.fixture
def same_blob_rate() -> Callable[[torch.Tensor, torch.Tensor], float]:
    """Tokenizer tests' check that codes follow the data: constant or random codes score about
    1 / number of blobs, codes that recover well-separated blobs score near 1. It is measured
    on the quantizer's own codes, before the disambiguating code makes every ID unique."""
    return _same_blob_rate
