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


def make_toy_cohort(root: Path, n: int = 60, n_rois: int = 8, scans_per_subject: int = 2, seed: int = 1) -> Path:
    """Time-series cohort where ROI 1 follows ROI 0 in patients; ``scans_per_subject`` scans per person."""
    import numpy as np
    import pandas as pd

    from brainalign.data.cohort import CohortMeta, write_cohort

    rng = np.random.default_rng(seed)
    person = np.arange(n) // scans_per_subject
    dx = np.where(person % 2 == 0, "autism", "control")
    series = []
    for d in dx:
        ts = rng.standard_normal((50, n_rois))
        if d == "autism":
            ts[:, 1] += 1.2 * ts[:, 0]
        series.append(ts)
    ph = pd.DataFrame({"scan_id": [f"s{i:03d}" for i in range(n)], "subject_id": [f"p{p:03d}" for p in person],
                       "dx": dx, "sex": np.where(person % 4 < 2, "male", "female"),
                       "site": np.array(["A", "B", "C"])[person % 3]})
    write_cohort(root, CohortMeta(name="toy", n_rois=n_rois, tr=2.0), ph, timeseries=series)
    return root


@pytest.fixture
def toy_cohort_dir(tmp_path) -> Path:
    return make_toy_cohort(tmp_path / "toy")
