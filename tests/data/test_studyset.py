"""nimare's packaged studyset as a volume cohort: peak maps, TAL->MNI, exclusions, and the real tables."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from brainalign.data.studyset import TAL2MNI, load_nimare_studyset, peak_maps, studyset_tables
from brainalign.data.volumes import MNI_AFFINE, VolumeCohort
from brainalign.errors import BrainAlignError

needs_pyarrow = pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="pyarrow not installed")


def _has_nimare() -> bool:
    try:
        importlib.metadata.distribution("nimare")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def vox(mm):
    return tuple(np.rint(np.linalg.solve(MNI_AFFINE, [*mm, 1])[:3]).astype(int))


def test_peak_maps_are_unit_gaussians_like_scipy():
    maps = peak_maps(np.array([[0.0, 0, 0], [40, -20, 10], [42, -20, 10]]), np.array([0, 1, 1]), 2, fwhm_mm=10)
    assert maps.shape == (2, 91, 109, 91) and maps.dtype == np.float32
    assert maps[0][vox((0, 0, 0))] == pytest.approx(1.0)
    assert maps[1][vox((40, -20, 10))] == pytest.approx(1.0)  # two close peaks saturate at 1
    assert maps[1][vox((0, 0, 0))] == 0 and maps[0][vox((40, -20, 10))] == 0
    impulse = np.zeros(maps.shape[1:])
    impulse[vox((0, 0, 0))] = 1
    ref = ndimage.gaussian_filter(impulse, 10 / (2 * np.sqrt(2 * np.log(2))) / 2, truncate=3.0)
    np.testing.assert_allclose(maps[0], ref / ref.max(), atol=0.02)
    # FWHM: half height 5 mm (2.5 voxels) from the peak, i.e. between voxels 2 and 3 away
    c = vox((0, 0, 0))
    assert maps[0][c[0] + 2, c[1], c[2]] > 0.5 > maps[0][c[0] + 3, c[1], c[2]]


@needs_pyarrow
def test_synthetic_studyset_tal_exclusions_and_captions(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    pd.DataFrame({"study_id": ["A", "B", "C"], "name": ["Title A.", "Title B", "Title C"],
                  "description": ["Abstract A.", "", "Abstract C."], "authors": ["x", "y", "z"],
                  "publication": ["J1", "J2", "J3"]}).to_parquet(folder / "studies.parquet")
    pd.DataFrame({"study_id": ["A", "A", "B", "C"], "contrast_id": ["a1", "a2", "b1", "c1"],
                  "x": [30.0, -30, 10, 300], "y": [-60.0, 20, 0, 0], "z": [20.0, 20, 30, 0],
                  "space": ["MNI", "TAL", "UNKNOWN", "MNI"]}).to_parquet(folder / "coordinates.parquet")
    pd.DataFrame({"study_id": ["A", "B", "C"], "comparison_task": ["n-back", "flanker", "n-back"]}).to_parquet(
        folder / "metadata.parquet")
    out = load_nimare_studyset(tmp_path / "c", folder=folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # on the grid: no reorientation/resampling warning
        c = VolumeCohort.load(out)
    assert list(c.scan_ids) == ["A", "B"]  # C's only peak is off the grid
    assert c.meta["exclusions"] == [{"id": "C", "reason": "no peak inside the brain mask"}]
    assert any("1 Talairach" in n for n in c.notes) and any("1 peak(s) outside" in n for n in c.notes)
    assert list(c.captions()) == ["Title A. Abstract A.", "Title B"]
    assert c.phenotypes["task"].tolist() == ["n-back", "flanker"]
    assert c.phenotypes["n_contrasts"].tolist() == [2, 1]
    raw = c.raw_volume(0)
    tal_mni = (TAL2MNI @ [-30, 20, 20, 1])[:3]
    assert raw[vox(tal_mni)] == pytest.approx(1.0) and raw[vox((30, -60, 20))] == pytest.approx(1.0)
    assert raw[vox((-30, 20, 20))] < 1.0  # the TAL peak moved
    with pytest.raises(BrainAlignError, match="missing column"):
        pd.DataFrame({"study_id": ["A"]}).to_parquet(folder / "metadata.parquet")
        studyset_tables(folder)


@needs_pyarrow
@pytest.mark.skipif(not _has_nimare(), reason="nimare==0.22.1 not installed (pip install --no-deps nimare==0.22.1)")
def test_real_nimare_studyset(tmp_path):
    t = studyset_tables()
    assert len(t["studies"]) == 320 and len(t["coordinates"]) == 9492
    from brainalign.data.packaged import PACKAGED_DATASETS

    meta = t["metadata"].drop_duplicates("study_id").set_index("study_id")["comparison_task"]
    assert meta.value_counts().to_dict() == {"n-back": 205, "flanker": 115}
    out = PACKAGED_DATASETS["nimare-studyset"](tmp_path / "c", n_studies=12)  # the registered loader, 12 studies
    c = VolumeCohort.load(out)
    first12 = t["studies"]["study_id"].iloc[:12].tolist()
    assert len(c) + len(c.meta["exclusions"]) == 12 and set(c.scan_ids) <= set(first12)
    assert c.phenotypes["task"].tolist() == meta.loc[c.scan_ids].tolist()
    first = t["studies"].iloc[0]
    assert c.captions()[0].startswith(first["name"].rstrip(".")) and len(c.captions()[0]) > 500
    n_peaks = t["coordinates"]["study_id"].value_counts()
    assert (c.phenotypes["n_peaks"].to_numpy() <= n_peaks.loc[c.scan_ids].to_numpy()).all()
    stack = c.masked_stack()
    assert stack.shape == (len(c), c.n_voxels) and np.isfinite(stack).all()


@needs_pyarrow
@pytest.mark.skipif(not _has_nimare(), reason="nimare==0.22.1 not installed (pip install --no-deps nimare==0.22.1)")
def test_cli_fetch_volumes_studyset(tmp_path):
    from typer.testing import CliRunner

    from brainalign.cli import app

    res = CliRunner().invoke(app, ["cohort", "fetch-volumes", "nimare-studyset", str(tmp_path / "c"),
                                   "--n-studies", "3"])
    assert res.exit_code == 0, res.output
    assert "3 / 3 / 3" in res.output and "Talairach" in res.output
    res = CliRunner().invoke(app, ["cohort", "volume-info", str(tmp_path / "c"), "--check"])
    assert res.exit_code == 0 and "all 3 volumes readable" in res.output


def test_missing_nimare_gives_install_command(tmp_path, monkeypatch):
    real = importlib.metadata.distribution

    def absent(name):
        if name == "nimare":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(BrainAlignError, match=r"pip install --no-deps nimare==0\.22\.1"):
        load_nimare_studyset(tmp_path / "c")
    assert not (tmp_path / "c").exists()
