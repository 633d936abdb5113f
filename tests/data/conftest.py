"""Small synthetic sources for the builder, fetcher and packaged-data tests: ROI text files, NIfTI images,
ABIDE-like phenotype tables.  Everything is written under tmp_path; nothing is downloaded."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

AFFINE = np.diag([3.0, 3.0, 3.0, 1.0])


def write_1d(path: Path, data: np.ndarray, header: bool = True, labels: list[str] | None = None) -> Path:
    """An ABIDE PCP style ``.1D`` file: '#'-prefixed ROI names, then T rows of R tab-separated values."""
    lines = []
    if header:
        names = labels or [str(2001 + k) for k in range(data.shape[1])]
        lines.append("\t".join(f"#{n}" for n in names))
    lines += ["\t".join(f"{v:.6f}" for v in row) for row in data]
    path.write_text("\n".join(lines) + "\n")
    return path


def label_atlas() -> nib.Nifti1Image:
    """8x8x8 label image with 4 regions: 1 + (x >= 4) + 2 (z >= 4)."""
    x, _, z = np.indices((8, 8, 8))
    data = (1 + (x >= 4) + 2 * (z >= 4)).astype(np.int16)
    return nib.Nifti1Image(data, AFFINE)


def maps_atlas() -> nib.Nifti1Image:
    """8x8x8x3 probabilistic atlas: three overlapping smooth blobs."""
    grid = np.stack(np.indices((8, 8, 8)), axis=-1).astype(float)
    centres = [(2, 2, 2), (5, 5, 2), (4, 4, 6)]
    maps = np.stack([np.exp(-((grid - c) ** 2).sum(-1) / 4.0) for c in centres], axis=-1)
    return nib.Nifti1Image(maps.astype(np.float32), AFFINE)


def func_image(
    seed: int, shape=(8, 8, 8), T: int = 30, tr: float = 2.0, zero_label: int | None = None
) -> nib.Nifti1Image:
    """A 4-D image whose 4 label regions each carry their own signal, plus voxel noise."""
    rng = np.random.default_rng(seed)
    labels = label_atlas().get_fdata()[: shape[0], : shape[1], : shape[2]]
    signals = rng.standard_normal((5, T))
    data = signals[labels.astype(int)] + 0.3 * rng.standard_normal((*shape, T)) + 100.0
    if zero_label is not None:
        data[labels == zero_label] = 0.0
    img = nib.Nifti1Image(data.astype(np.float32), AFFINE)
    img.header.set_zooms((3.0, 3.0, 3.0, tr))
    img.header.set_xyzt_units("mm", "sec")
    return img


def abide_table(n: int = 6, *, sites=("NYU", "UCLA_1"), fail_rows=(), no_file_rows=()) -> pd.DataFrame:
    """An ABIDE PCP-like phenotype table with the columns the builder reads."""
    rows = []
    for i in range(n):
        site = sites[i % len(sites)]
        sub = 50000 + i
        rows.append({
            "SUB_ID": sub,
            "FILE_ID": "no_filename" if i in no_file_rows else f"{site}_{sub:07d}",
            "SITE_ID": site,
            "DX_GROUP": 1 + i % 2,
            "SEX": 1 + (i % 3 == 0),
            "AGE_AT_SCAN": 10.0 + 3 * i,
            "FIQ": -9999 if i == 1 else 100 + i,
            "qc_rater_1": "fail" if i in fail_rows else "OK",
            "qc_anat_rater_2": "maybe",
            "qc_func_rater_2": "OK",
            "qc_anat_rater_3": np.nan,
            "qc_func_rater_3": "OK",
        })
    return pd.DataFrame(rows)


def roi_series(seed: int, T: int = 20, R: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((T, R))


@pytest.fixture
def require_dist():
    """Skip the test when a PyPI distribution is not installed (checked without importing it)."""

    def check(name: str) -> None:
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed (pip install --no-deps {name})")

    return check


class Synth:
    """The helpers above, handed to tests as the ``synth`` fixture (conftest modules are not importable
    by name when several folders have one)."""

    AFFINE = AFFINE
    write_1d = staticmethod(write_1d)
    label_atlas = staticmethod(label_atlas)
    maps_atlas = staticmethod(maps_atlas)
    func_image = staticmethod(func_image)
    abide_table = staticmethod(abide_table)
    roi_series = staticmethod(roi_series)


@pytest.fixture
def synth() -> type[Synth]:
    return Synth
