"""Token maps: per-token means, CSV/NIfTI run-folder files, scoring against planted truth."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainalign.errors import BrainAlignError
from brainalign.explain.token_maps import (
    TOKEN_COLUMN,
    mean_token_maps,
    read_token_maps,
    roi_values_to_nifti,
    score_against_truth,
    score_token_maps,
    token_map_files,
    write_token_maps,
)

ROIS = ["precuneus", "insula_L", "insula_R", "amygdala", "V1"]


def _maps_and_labels(n_scans=9, seed=0):
    rng = np.random.default_rng(seed)
    maps = rng.random((n_scans, 3, len(ROIS)))
    dx = rng.choice(["autism", "control"], n_scans)
    sex = rng.choice(["male", "female"], n_scans)
    age = [None if i % 4 == 0 else "adult" for i in range(n_scans)]  # some texts lack the attribute
    return maps, [[d, s, a] for d, s, a in zip(dx, sex, age)]


def test_mean_token_maps_equals_naive_loop():
    maps, labels = _maps_and_labels()
    df, counts = mean_token_maps(maps, labels, ROIS, return_counts=True)
    sums, n = {}, {}
    for i, row_labels in enumerate(labels):
        for r, token in enumerate(row_labels):
            if token is None:
                continue
            sums[token] = sums.get(token, 0) + maps[i, r]
            n[token] = n.get(token, 0) + 1
    assert set(df.index) == set(sums) and df.index.name == TOKEN_COLUMN
    assert list(df.columns) == ROIS
    for token in sums:
        np.testing.assert_allclose(df.loc[token].to_numpy(), sums[token] / n[token], rtol=1e-12)
        assert counts[token] == n[token]
    assert list(df.index)[0] == labels[0][0]  # order of first appearance


def test_mean_token_maps_accepts_2d_maps_float32_and_default_labels():
    rng = np.random.default_rng(1)
    maps = rng.random((6, 4)).astype(np.float32)
    labels = ["a", "b", "a", "a", "b", ""]  # "" = left out
    df = mean_token_maps(maps, labels)
    assert list(df.columns) == ["ROI_001", "ROI_002", "ROI_003", "ROI_004"]
    np.testing.assert_allclose(df.loc["a"], maps[[0, 2, 3]].mean(0), rtol=1e-6)
    np.testing.assert_allclose(df.loc["b"], maps[[1, 4]].mean(0), rtol=1e-6)


@pytest.mark.parametrize("maps, labels, match", [
    (np.ones((3, 2, 4)), [["a", "b"]] * 2, "token_labels has 2 entries but maps has 3 scans"),
    (np.ones((3, 2, 4)), [["a", "b"], ["a"], ["a", "b"]], r"token_labels\[1\] has 1 label"),
    (np.ones((2, 2, 2, 4)), [["a", "b"]] * 2, "shape"),
    (np.ones((3, 2, 4)), [[None, None]] * 3, "no label"),
    (np.zeros((0, 2, 4)), [], "empty"),
])
def test_mean_token_maps_bad_input(maps, labels, match):
    with pytest.raises(BrainAlignError, match=match):
        mean_token_maps(maps, labels)


def test_mean_token_maps_nan_names_scan():
    maps = np.ones((4, 2, 3))
    maps[2, 1, 0] = np.nan
    with pytest.raises(BrainAlignError, match=r"NaN.*scan\(s\) \[2\]"):
        mean_token_maps(maps, [["a", "b"]] * 4)
    with pytest.raises(BrainAlignError, match="roi_labels has 2 entries"):
        mean_token_maps(np.ones((4, 2, 3)), [["a", "b"]] * 4, ["x", "y"])


def test_csv_layout_follows_roi_order(tmp_path):
    df = pd.DataFrame(np.arange(10.0).reshape(2, 5) + 0.25, index=["autism", "female"], columns=ROIS)
    shuffled = df[ROIS[::-1]]  # columns out of cohort order: written back in ROI order
    out = write_token_maps(shuffled, tmp_path / "run", ROIS)
    lines = out["csv"].read_text().splitlines()
    assert lines[0].split(",") == ["token", *ROIS]
    assert [line.split(",")[0] for line in lines[1:]] == ["autism", "female"]
    np.testing.assert_array_equal(np.array(lines[1].split(",")[1:], dtype=float), df.loc["autism"].to_numpy())
    assert out["nifti"] == {} and out["nifti_4d"] is None
    back = read_token_maps(out["csv"])
    pd.testing.assert_frame_equal(back, df, check_names=False)
    assert token_map_files(tmp_path / "run") == {"model": out["csv"]}


def test_write_token_maps_checks_columns(tmp_path):
    df = pd.DataFrame(np.ones((1, 3)), index=["a"], columns=["x", "y", "z"])
    with pytest.raises(BrainAlignError, match="missing from the maps"):
        write_token_maps(df, tmp_path, ["x", "y", "w"])
    with pytest.raises(BrainAlignError, match="NaN"):
        write_token_maps(df.assign(y=np.nan), tmp_path)
    with pytest.raises(BrainAlignError, match="unique"):
        write_token_maps(pd.concat([df, df]), tmp_path)
    with pytest.raises(BrainAlignError, match="prefix"):
        write_token_maps(df, tmp_path, prefix="a/b")


def _atlas(labels=(0, 3, 7, 12)):
    """A 6x5x4 label image using the given label values in slabs along x; affine with 2 mm voxels."""
    data = np.zeros((6, 5, 4), dtype=np.int16)
    for k, value in enumerate(labels):
        data[k:k + 1 if k < len(labels) - 1 else None] = value
    data[:, 0, 0] = 0  # some background inside every slab
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10, -8, -6]
    return nib.Nifti1Image(data, affine)


def test_nifti_maps_paint_each_roi(tmp_path):
    atlas = _atlas()
    nib.save(atlas, tmp_path / "atlas.nii.gz")
    rois = ["r3", "r7", "r12"]
    df = pd.DataFrame([[1.5, -2.0, 3.25], [0.1, 0.2, 0.3]], index=["autism", "age 12/13"], columns=rois)
    out = write_token_maps(df, tmp_path / "run", rois, atlas_image=tmp_path / "atlas.nii.gz")
    assert set(out["nifti"]) == {"autism", "age 12/13"}
    assert out["nifti"]["age 12/13"].name == "token_maps_age_12_13.nii.gz"
    labels = np.asarray(atlas.dataobj)
    for token, path in out["nifti"].items():
        img = nib.load(path)
        data = img.get_fdata()
        np.testing.assert_allclose(img.affine, atlas.affine)
        assert data.shape == labels.shape
        for i, value in enumerate((3, 7, 12)):  # sorted label values <-> ROI order
            np.testing.assert_allclose(data[labels == value], df.loc[token].iloc[i], rtol=1e-6)
        assert (data[labels == 0] == 0).all()
    four_d = nib.load(out["nifti_4d"]).get_fdata()
    assert four_d.shape == (*labels.shape, 2)
    np.testing.assert_allclose(four_d[..., 0], nib.load(out["nifti"]["autism"]).get_fdata())


def test_explicit_label_values_and_atlas_errors():
    atlas = _atlas()
    img = roi_values_to_nifti([1.0, 2.0, 3.0], atlas, label_values=[12, 3, 7])
    labels, data = np.asarray(atlas.dataobj), img.get_fdata()
    assert (data[labels == 12] == 1).all() and (data[labels == 3] == 2).all() and (data[labels == 7] == 3).all()
    with pytest.raises(BrainAlignError, match="3 non-zero labels but the maps have 4 ROIs"):
        roi_values_to_nifti(np.ones(4), atlas)
    with pytest.raises(BrainAlignError, match="label_values has shape"):
        roi_values_to_nifti(np.ones(3), atlas, label_values=[3, 7])
    with pytest.raises(BrainAlignError, match="non-integer"):
        roi_values_to_nifti(np.ones(3), nib.Nifti1Image(np.full((2, 2, 2), 0.5, dtype=np.float32), np.eye(4)))
    with pytest.raises(BrainAlignError, match="3-D label image"):
        roi_values_to_nifti(np.ones(3), nib.Nifti1Image(np.ones((2, 2, 2, 3), dtype=np.int16), np.eye(4)))
    with pytest.raises(BrainAlignError, match="NaN"):
        roi_values_to_nifti([1.0, np.nan, 3.0], atlas)
    with pytest.warns(UserWarning, match="no voxel"):
        roi_values_to_nifti(np.ones(3), atlas, label_values=[3, 7, 99])


def test_write_token_maps_atlas_mismatch_writes_nothing(tmp_path):
    df = pd.DataFrame(np.ones((2, 4)), index=["a", "b"])
    with pytest.raises(BrainAlignError, match="3 non-zero labels but the maps have 4 ROIs"):
        write_token_maps(df, tmp_path / "run", atlas_image=_atlas())
    assert not (tmp_path / "run").exists()
    clash = pd.DataFrame(np.ones((2, 3)), index=["a b", "a/b"])
    with pytest.raises(BrainAlignError, match="same file name"):
        write_token_maps(clash, tmp_path / "run2", atlas_image=_atlas())


def test_score_against_truth_perfect_and_reversed():
    planted = [1, 4]
    indicator = np.zeros(8)
    indicator[planted] = 1.0
    s = score_against_truth(indicator, planted)
    assert s["auroc"] == 1.0 and s["top_k_fraction"] == 1.0 and s["k"] == 2 and sorted(s["top_k_rois"]) == planted
    assert score_against_truth(-indicator, planted)["auroc"] == 0.0
    assert score_against_truth(-indicator, planted, absolute=True)["auroc"] == 1.0
    both = score_against_truth(indicator + 0.5 * (np.arange(8) == 6), planted, other_rois=[6, 7])
    assert both["auroc"] == 1.0 and both["top_k_fraction_other"] == 0.0
    # ROI 6 (0.5) beats 4 of the 6 other ROIs; ROI 7 (0) ties with 4 of them: (4/6 + 0.5 * 4/6) / 2
    assert both["auroc_other"] == pytest.approx(0.5)
    series = pd.Series(indicator, index=[f"R{i}" for i in range(8)])
    assert score_against_truth(series, ["R1", "R4"])["auroc"] == 1.0
    assert score_against_truth(pd.DataFrame([indicator]), planted)["auroc"] == 1.0


@pytest.mark.parametrize("values, planted, match", [
    (np.ones(5), [5], "out of range"),
    (np.ones(5), [-1], "out of range"),
    (np.ones(5), [], "non-empty"),
    (np.ones(5), range(5), "covers all 5 ROIs"),
    (np.array([1.0, np.nan, 0, 0, 0]), [0], "NaN"),
    (np.ones((2, 5)), [0], "shape"),
    (np.ones(5), [0.5], "integer"),
    (np.ones(5), ["ROI_001"], "Series"),
    (pd.DataFrame(np.ones((2, 5))), [0], "2 rows"),
])
def test_score_against_truth_errors(values, planted, match):
    with pytest.raises(BrainAlignError, match=match):
        score_against_truth(values, planted)


def test_score_token_maps_on_simulated_truth(tmp_path):
    from brainalign.data.simulate import SimulationConfig, load_truth, simulate_cohort

    root = simulate_cohort(tmp_path / "sim", SimulationConfig(n_scans=6, n_rois=12, n_timepoints=20))
    truth = load_truth(root, arrays=False)
    n = truth["n_rois"]
    dx_map, sens_map = np.zeros(n), np.zeros(n)
    dx_map[truth["dx_rois"]] = 1.0
    sens_map[truth["sensitive_rois"]] = 1.0
    df = pd.DataFrame([dx_map, sens_map], index=["autism", "female"])
    scores = score_token_maps(df, truth, ["autism"], ["female"])
    assert scores["autism"]["role"] == "dx" and scores["autism"]["auroc_dx"] == 1.0
    assert scores["autism"]["auroc_sensitive"] < 0.85 and scores["female"]["auroc_sensitive"] == 1.0
    with pytest.raises(BrainAlignError, match="have no map"):
        score_token_maps(df, truth, ["control"], [])
    with pytest.raises(BrainAlignError, match="truth is for 12 ROIs"):
        score_token_maps(df.iloc[:, :5], truth, ["autism"])
    with pytest.raises(BrainAlignError, match="both dx and sensitive"):
        score_token_maps(df, truth, ["autism"], ["autism"])
