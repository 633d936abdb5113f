"""Cohort format: writing, lazy reading, subsets, and every structural or content problem."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainalign.data.cohort import Cohort, CohortMeta, write_cohort
from brainalign.data.validate import validate_cohort
from brainalign.errors import BrainAlignError, CohortError

R, T = 6, 40


def make_cohort(root, n=8, kinds=("timeseries",), seed=0, **meta_kw):
    rng = np.random.default_rng(seed)
    ph = pd.DataFrame({
        "scan_id": [f"scan{i:02d}" for i in range(n)],
        "subject_id": [f"sub{i // 2}" for i in range(n)],
        "dx": ["autism", "control"] * (n // 2),
        "sex": ["male", "male", "female", "female"] * (n // 4),
        "age": np.linspace(8, 40, n),
    })
    ts = [rng.standard_normal((T, R)) for _ in range(n)]
    meta = CohortMeta(name="toy", n_rois=R, tr=2.0, columns={
        "dx": {"type": "category", "values": ["autism", "control"]},
        "sex": {"type": "category", "values": ["male", "female"]},
        "age": {"type": "numeric"}}, **meta_kw)
    fc = [np.corrcoef(x.T) for x in ts] if "connectivity" in kinds else None
    write_cohort(root, meta, ph, timeseries=ts if "timeseries" in kinds else None, connectivity=fc)
    return root, ts


@pytest.fixture
def cohort_dir(tmp_path):
    root, _ = make_cohort(tmp_path / "c")
    return root


def test_roundtrip_and_lazy_arrays(tmp_path):
    root, ts = make_cohort(tmp_path / "c", kinds=("timeseries", "connectivity"))
    c = Cohort.load(root)
    assert len(c) == 8 and c.n_rois == R and c.kinds == ("timeseries", "connectivity")
    x = c.timeseries("scan03")
    assert isinstance(x, np.memmap) and x.shape == (T, R)
    np.testing.assert_allclose(x, ts[3], atol=1e-6)
    assert isinstance(c.connectivity(3), np.memmap)
    assert c.meta.roi_labels[0] == "ROI_001" and c.meta.tr == 2.0


def test_connectivity_from_timeseries_matches_corrcoef(cohort_dir):
    c = Cohort.load(cohort_dir)
    stack = c.connectivity_stack()
    assert stack.shape == (8, R, R)
    for i in range(8):
        np.testing.assert_allclose(stack[i], np.corrcoef(np.asarray(c.timeseries(i)).T), atol=1e-5)
    np.testing.assert_allclose(c.connectivity("scan05"), stack[5], atol=1e-6)
    assert c.fc_upper([0, 1]).shape == (2, R * (R - 1) // 2)


def test_select_subset_and_batches(cohort_dir):
    c = Cohort.load(cohort_dir)
    female = c.select(sex="female")
    assert len(female) == 4 and set(female.phenotypes["sex"]) == {"female"}
    kids = c.select("age < 18", dx=["autism"])
    assert (kids.phenotypes["age"] < 18).all() and set(kids.phenotypes["dx"]) == {"autism"}
    assert list(c.subset([3, 1]).scan_ids) == ["scan03", "scan01"]
    sizes = [len(idx) for idx, _ in c.batches(3)]
    assert sizes == [3, 3, 2]
    _, series = next(c.batches(2, kind="timeseries"))
    assert len(series) == 2 and series[0].shape == (T, R)
    with pytest.raises(BrainAlignError, match="cannot evaluate query"):
        c.select("no_such_column > 3")
    with pytest.raises(CohortError, match="column 'site' is missing"):
        c.select(site="A")
    with pytest.raises(KeyError, match="scan_id 'nope'"):
        c.timeseries("nope")


def test_write_refuses_nonempty_folder_and_count_mismatch(cohort_dir, tmp_path):
    c = Cohort.load(cohort_dir)
    with pytest.raises(BrainAlignError, match="not empty"):
        write_cohort(cohort_dir, c.meta, c.phenotypes, timeseries=[np.zeros((T, R))])
    with pytest.raises(BrainAlignError, match="got 1 arrays for 8 scans"):
        write_cohort(tmp_path / "new", c.meta, c.phenotypes, timeseries=[np.random.rand(T, R)])
    with pytest.raises(CohortError, match="constant"):
        write_cohort(tmp_path / "new2", c.meta, c.phenotypes, timeseries=[np.ones((T, R))] * 8)


# ------------------------------------------------------------------------------------------- bad input
def _corrupt(root, what):
    ph = pd.read_csv(root / "phenotypes.csv", dtype={"scan_id": str, "subject_id": str})
    meta = json.loads((root / "cohort.json").read_text())
    if what == "no_json":
        (root / "cohort.json").unlink()
    elif what == "bad_json":
        (root / "cohort.json").write_text("{not json")
    elif what == "missing_n_rois":
        del meta["n_rois"], meta["roi_labels"]
        (root / "cohort.json").write_text(json.dumps(meta))
    elif what == "alias_clash":
        meta["TR"] = 3.0
        (root / "cohort.json").write_text(json.dumps(meta))
    elif what == "labels_length":
        meta["roi_labels"] = ["a", "b"]
        (root / "cohort.json").write_text(json.dumps(meta))
    elif what == "no_csv":
        (root / "phenotypes.csv").unlink()
    elif what == "no_scan_id":
        ph.drop(columns="scan_id").to_csv(root / "phenotypes.csv", index=False)
    elif what == "duplicate":
        ph.loc[1, "scan_id"] = "scan00"
        ph.to_csv(root / "phenotypes.csv", index=False)
        (root / "timeseries" / "scan01.npy").unlink()
    elif what == "unknown_category":
        ph.loc[2, "sex"] = "M"
        ph.to_csv(root / "phenotypes.csv", index=False)
    elif what == "missing_declared_column":
        ph.drop(columns="age").to_csv(root / "phenotypes.csv", index=False)
    elif what == "non_numeric":
        ph["age"] = ph["age"].astype(object)
        ph.loc[0, "age"] = "ten"
        ph.to_csv(root / "phenotypes.csv", index=False)
    elif what == "missing_file":
        (root / "timeseries" / "scan04.npy").unlink()
    elif what == "orphan_file":
        np.save(root / "timeseries" / "stranger.npy", np.random.rand(T, R))
    elif what == "mismatched_ids":
        ph.loc[0, "scan_id"] = "renamed"
        ph.to_csv(root / "phenotypes.csv", index=False)
    elif what == "no_arrays":
        for f in (root / "timeseries").iterdir():
            f.unlink()
        (root / "timeseries").rmdir()
    return root


@pytest.mark.parametrize("what, pattern", [
    ("no_json", "cohort.json is missing"),
    ("bad_json", "not valid JSON"),
    ("missing_n_rois", "missing required key 'n_rois'"),
    ("alias_clash", "both 'TR' and 'tr' are given with different values"),
    ("labels_length", "'roi_labels' has 2 entries but n_rois is 6"),
    ("no_csv", "phenotypes.csv is missing"),
    ("no_scan_id", "missing required column 'scan_id'"),
    ("duplicate", "duplicate scan_id.*scan00"),
    ("unknown_category", "column 'sex' has unknown category \\['M'\\].*scan02"),
    ("missing_declared_column", "column 'age' declared in cohort.json is missing"),
    ("non_numeric", "column 'age' must be numeric.*scan00"),
    ("missing_file", "no file for 1 scan.*scan04"),
    ("orphan_file", "stranger.npy"),
    ("mismatched_ids", "renamed"),
    ("no_arrays", "neither timeseries/ nor connectivity/"),
])
def test_structural_problems_are_clear(cohort_dir, what, pattern):
    _corrupt(cohort_dir, what)
    with pytest.raises(CohortError, match=pattern):
        Cohort.load(cohort_dir)
    report = validate_cohort(cohort_dir)
    assert not report.ok
    assert any(__import__("re").search(pattern, p) for p in report.problems), report.problems


@pytest.mark.parametrize("content, pattern", [
    (lambda: np.full((T, R), np.nan), "NaN/inf"),
    (lambda: np.hstack([np.random.rand(T, R - 1), np.ones((T, 1))]), "constant .*ROI column\\(s\\) \\[5\\]"),
    (lambda: np.random.rand(T, R + 1), "shape \\(40, 7\\), expected \\(T, 6\\)"),
    (lambda: np.random.rand(5, R), "only 5 time points"),
    (lambda: np.random.rand(T), "shape \\(40,\\)"),
])
def test_array_content_problems_name_the_scan(cohort_dir, content, pattern):
    np.save(cohort_dir / "timeseries" / "scan03.npy", content())
    c = Cohort.load(cohort_dir)  # structure is fine; contents are checked on access
    with pytest.raises(CohortError, match="scan 'scan03'.*" + pattern):
        c.timeseries(3)
    report = validate_cohort(cohort_dir)
    assert len(report.problems) >= 1 and all("scan03" in p for p in report.problems)


def test_corrupt_npy_file(cohort_dir):
    (cohort_dir / "timeseries" / "scan02.npy").write_bytes(b"this is not numpy")
    with pytest.raises(CohortError, match="scan 'scan02'.*corrupt"):
        Cohort.load(cohort_dir).timeseries(2)
    assert any("corrupt" in p for p in validate_cohort(cohort_dir).problems)


def test_connectivity_problems(tmp_path):
    root, _ = make_cohort(tmp_path / "c", kinds=("connectivity",))
    m = np.random.rand(R, R)
    np.save(root / "connectivity" / "scan01.npy", m)  # not symmetric
    np.save(root / "connectivity" / "scan02.npy", np.eye(R + 1))
    report = validate_cohort(root)
    assert any("scan01" in p and "not symmetric" in p for p in report.problems)
    assert any("scan02" in p and "expected (6, 6)" in p for p in report.problems)


def test_validate_reports_all_problems_at_once(cohort_dir):
    np.save(cohort_dir / "timeseries" / "scan01.npy", np.full((T, R), np.nan))
    np.save(cohort_dir / "timeseries" / "scan06.npy", np.ones((T, R)))
    np.save(cohort_dir / "timeseries" / "ghost.npy", np.random.rand(T, R))
    ph = pd.read_csv(cohort_dir / "phenotypes.csv")
    ph.loc[0, "sex"] = "unknown"
    ph.to_csv(cohort_dir / "phenotypes.csv", index=False)
    report = validate_cohort(cohort_dir)
    text = "\n".join(report.problems)
    for needle in ("scan01", "scan06", "ghost.npy", "'sex'"):
        assert needle in text
    assert len(report.problems) == 4
    assert report.n_scans == 8 and report.n_subjects == 4


def test_validate_valid_cohort(cohort_dir):
    report = validate_cohort(cohort_dir)
    assert report.ok and report.timepoints == {"min": T, "max": T}


def test_meta_aliases_and_extra_keys_are_kept(cohort_dir):
    meta = json.loads((cohort_dir / "cohort.json").read_text())
    for key in ("tr", "n_rois", "roi_labels"):
        meta.pop(key)
    meta.update({"TR": 0.8, "atlas_name": "toy6", "roi_names": list("abcdef"), "network_labels": ["x"] * R,
                 "source": "scanner 3"})
    (cohort_dir / "cohort.json").write_text(json.dumps(meta))
    c = Cohort.load(cohort_dir)
    assert (c.meta.tr, c.meta.atlas, c.n_rois, c.meta.roi_labels[0]) == (0.8, "toy6", R, "a")
    assert c.meta.roi_networks == ["x"] * R and c.meta.extra == {"source": "scanner 3"}
    assert c.meta.to_dict()["extra"] == {"source": "scanner 3"}
