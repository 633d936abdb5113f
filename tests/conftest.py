"""Shared fixtures.  Reference data live in ../shared/data beside the repository (absent on a user's clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("BRAINALIGN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (override with BRAINALIGN_SHARED_DATA); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def abide_phenotypes(shared_data: Path) -> Path:
    path = shared_data / "abide" / "Phenotypic_V1_0b_preprocessed1.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path
