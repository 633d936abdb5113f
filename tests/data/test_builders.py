"""Cohort builders: ROI text files, ABIDE PCP tables, NIfTI images."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainalign.data import builders
from brainalign.data.builders import (
    build_abide_cohort,
    build_from_nifti,
    build_from_roi_files,
    read_roi_file,
)
from brainalign.data.cohort import Cohort
from brainalign.data.validate import validate_cohort
from brainalign.errors import BrainAlignError


def _phen(ids, **cols):
    return pd.DataFrame({"scan_id": ids, "subject_id": [f"p{i}" for i in range(len(ids))], **cols})


def _no_staging_left(tmp_path):
    return not any(p.name.startswith(".") and "staging" in p.name for p in tmp_path.iterdir())


# -- read_roi_file ----------------------------------------------------------------------------------


def test_read_roi_file_header_and_shape(tmp_path, synth):
    data = synth.roi_series(0, T=12, R=4)
    arr, labels = read_roi_file(synth.write_1d(tmp_path / "a.1D", data))
    assert arr.shape == (12, 4)
    assert labels == ["2001", "2002", "2003", "2004"]
    np.testing.assert_allclose(arr, data, atol=1e-6)
    arr, labels = read_roi_file(synth.write_1d(tmp_path / "b.1D", data, header=False))
    assert labels is None and arr.shape == (12, 4)
    (tmp_path / "c.1D").write_text("# written by 3dROIstats\n1 2 3\n4 5 6\n")
    arr, labels = read_roi_file(tmp_path / "c.1D")
    assert labels is None and arr.shape == (2, 3)


@pytest.mark.parametrize(
    "text, match",
    [
        ("#1 #2 #3\n1 2 3\n4 5\n", r"bad\.1D: not a table"),  # ragged
        ("#1 #2\n1 x\n3 4\n", r"bad\.1D: not a table"),  # non-numeric
        ("#1 #2 #3\n1 2\n3 4\n", r"bad\.1D: header names 3 ROIs but the rows have 2"),
        ("#1 #2\n", r"bad\.1D: no data rows"),
        ("#1 #2\n1 nan\n3 4\n", r"bad\.1D: NaN/inf"),
    ],
)
def test_read_roi_file_bad_input(tmp_path, text, match):
    path = tmp_path / "bad.1D"
    path.write_text(text)
    with pytest.raises(BrainAlignError, match=match):
        read_roi_file(path)


def test_read_roi_file_binary_garbage(tmp_path):
    path = tmp_path / "bad.1D"
    path.write_bytes(b"\x89\xff\xfe\x00garbage")
    with pytest.raises(BrainAlignError, match=r"bad\.1D"):
        read_roi_file(path)


# -- build_from_roi_files ---------------------------------------------------------------------------


def test_build_from_roi_files_loads(tmp_path, synth):
    files = [synth.write_1d(tmp_path / f"s{i}.1D", synth.roi_series(i, T=15 + i)) for i in range(3)]
    phen = _phen(["s0", "s1", "s2"], sex=["male", "female", "male"], age=[20.0, 30.5, 41.0])
    out = build_from_roi_files(tmp_path / "c", files, phen, tr=2.0)
    c = Cohort.load(out)
    assert len(c) == 3 and c.n_rois == 5 and c.meta.tr == 2.0
    assert [c.timeseries(i).shape for i in range(3)] == [(15, 5), (16, 5), (17, 5)]
    assert c.meta.roi_labels == ["2001", "2002", "2003", "2004", "2005"]
    assert c.meta.columns["sex"] == {"type": "category", "values": ["female", "male"]}
    assert c.meta.columns["age"] == {"type": "numeric"}
    assert c.meta.exclusions == []
    assert _no_staging_left(tmp_path)


def test_build_from_roi_files_mapping_and_column(tmp_path, synth):
    files = {f"s{i}": synth.write_1d(tmp_path / f"s{i}.1D", synth.roi_series(i)) for i in range(2)}
    phen = _phen(["s1", "s0"])
    c = Cohort.load(build_from_roi_files(tmp_path / "m", files, phen, roi_labels=list("abcde")))
    np.testing.assert_allclose(c.timeseries("s1"), synth.roi_series(1), atol=1e-5)
    assert c.meta.roi_labels == list("abcde")
    phen["roi_path"] = [str(files["s1"]), str(files["s0"])]
    c = Cohort.load(build_from_roi_files(tmp_path / "col", None, phen))
    assert "roi_path" not in c.meta.columns and len(c) == 2


def test_constant_roi_excluded_and_counted(tmp_path, synth):
    bad = synth.roi_series(1)
    bad[:, 2] = 0.0
    files = [synth.write_1d(tmp_path / "s0.1D", synth.roi_series(0)), synth.write_1d(tmp_path / "s1.1D", bad)]
    out = build_from_roi_files(tmp_path / "c", files, _phen(["s0", "s1"]))
    c = Cohort.load(out)
    assert c.scan_ids.tolist() == ["s0"]
    assert c.meta.exclusions[0]["id"] == "s1" and c.meta.exclusions[0]["reason"] == "constant ROI 2"
    assert c.meta.exclusion_counts() == {"constant ROI 2": 1}
    with pytest.raises(BrainAlignError, match=r"scan 's1' .*s1\.1D.*constant .*ROI column\(s\) 2"):
        build_from_roi_files(tmp_path / "e", files, _phen(["s0", "s1"]), constant="error")
    with pytest.raises(BrainAlignError, match="every scan was excluded"):
        build_from_roi_files(tmp_path / "all", files[1:], _phen(["s1"]))
    assert not (tmp_path / "e").exists() and _no_staging_left(tmp_path)


def test_wrong_column_count_names_file(tmp_path, synth):
    files = [synth.write_1d(tmp_path / "s0.1D", synth.roi_series(0, R=5)),
             synth.write_1d(tmp_path / "s1.1D", synth.roi_series(1, R=4))]
    with pytest.raises(BrainAlignError, match=r"s1\.1D: 4 ROI columns, expected 5"):
        build_from_roi_files(tmp_path / "c", files, _phen(["s0", "s1"]))
    with pytest.raises(BrainAlignError, match=r"s0\.1D: 5 ROI columns, expected 3"):
        build_from_roi_files(tmp_path / "c", files, _phen(["s0", "s1"]), roi_labels=["a", "b", "c"])
    assert not (tmp_path / "c").exists() and _no_staging_left(tmp_path)


def test_header_mismatch_names_file(tmp_path, synth):
    files = [synth.write_1d(tmp_path / "s0.1D", synth.roi_series(0, R=2), labels=["a", "b"]),
             synth.write_1d(tmp_path / "s1.1D", synth.roi_series(1, R=2), labels=["a", "c"])]
    with pytest.raises(BrainAlignError, match=r"s1\.1D: header differs .* column 1 \('c' instead of 'b'\)"):
        build_from_roi_files(tmp_path / "c", files, _phen(["s0", "s1"]))


def test_roi_files_bad_arguments(tmp_path, synth):
    f = synth.write_1d(tmp_path / "s0.1D", synth.roi_series(0))
    with pytest.raises(BrainAlignError, match=r"scan 's0': ROI file .*nope\.1D does not exist"):
        build_from_roi_files(tmp_path / "c", [tmp_path / "nope.1D"], _phen(["s0"]))
    with pytest.raises(BrainAlignError, match="got 2 ROI files for 1 rows"):
        build_from_roi_files(tmp_path / "c", [f, f], _phen(["s0"]))
    with pytest.raises(BrainAlignError, match=r"missing required column\(s\) \['subject_id'\]"):
        build_from_roi_files(tmp_path / "c", [f], pd.DataFrame({"scan_id": ["s0"]}))
    with pytest.raises(BrainAlignError, match="no ROI files given and the phenotype table has no 'roi_path'"):
        build_from_roi_files(tmp_path / "c", None, _phen(["s0"]))
    with pytest.raises(BrainAlignError, match="constant must be"):
        build_from_roi_files(tmp_path / "c", [f], _phen(["s0"]), constant="keep")
    with pytest.raises(BrainAlignError, match=r"duplicate scan_id\(s\) \['s0'\]"):
        build_from_roi_files(tmp_path / "c", [f, f], _phen(["s0", "s0"]))
    with pytest.raises(BrainAlignError, match=r"scan_id\(s\) \['bad id'\] are not usable as file names"):
        build_from_roi_files(tmp_path / "c", [f], _phen(["bad id"]))


def test_overwrite(tmp_path, synth):
    f = synth.write_1d(tmp_path / "s0.1D", synth.roi_series(0))
    out = build_from_roi_files(tmp_path / "c", [f], _phen(["s0"]))
    with pytest.raises(BrainAlignError, match="exists and is not empty"):
        build_from_roi_files(out, [f], _phen(["s0"]))
    f2 = synth.write_1d(tmp_path / "s9.1D", synth.roi_series(9))
    build_from_roi_files(out, [f2], _phen(["s9"]), overwrite=True)
    assert Cohort.load(out).scan_ids.tolist() == ["s9"]


# -- ABIDE --------------------------------------------------------------------------------------------


def test_abide_phenotypes_mapping(synth):
    table = synth.abide_table(6, fail_rows=(2,), no_file_rows=(4,))
    phen, excl = builders.abide_phenotypes(table)
    assert phen.columns.tolist() == ["scan_id", "subject_id", "dx", "sex", "age", "site", "srs", "fiq"]
    assert phen["subject_id"].tolist() == ["50000", "50001", "50003", "50005"]
    assert phen["dx"].tolist() == ["autism", "control", "control", "control"]
    assert phen["sex"].tolist() == ["female", "male", "female", "male"]
    assert phen["srs"].tolist() == ["child", "child", "adult", "adult"]
    assert np.isnan(phen["fiq"][1]) and phen["fiq"][0] == 100
    reasons = {e["id"]: e["reason"] for e in excl}
    assert reasons == {"NYU_0050002": "failed quality control", "50004": "no preprocessed data (FILE_ID no_filename)"}
    assert excl[0]["detail"] == "fail in qc_rater_1"
    phen, excl = builders.abide_phenotypes(table, quality_filter=False)
    assert len(phen) == 5 and len(excl) == 1


@pytest.mark.parametrize("column", ["DX_GROUP", "SEX", "FILE_ID", "qc_func_rater_3"])
def test_abide_missing_column(synth, column):
    with pytest.raises(BrainAlignError, match=rf"missing column\(s\) \['{column}'\]"):
        builders.abide_phenotypes(synth.abide_table().drop(columns=[column]))


def test_abide_bad_codes(synth):
    table = synth.abide_table()
    table.loc[3, "DX_GROUP"] = 3
    match = r"'DX_GROUP' must be one of \[1, 2\]; FILE_ID\(s\) \['UCLA_1_0050003'\] have \[3\]"
    with pytest.raises(BrainAlignError, match=match):
        builders.abide_phenotypes(table)


def _abide_files(tmp_path, synth, table, T=12, R=4):
    folder = tmp_path / "rois"
    folder.mkdir(exist_ok=True)
    for i, fid in enumerate(table["FILE_ID"]):
        if fid != "no_filename":
            synth.write_1d(folder / f"{fid}_rois_cc200.1D", synth.roi_series(i, T=T, R=R))
    return folder


def test_build_abide_cohort(tmp_path, synth):
    table = synth.abide_table(6, fail_rows=(2,), no_file_rows=(4,))
    folder = _abide_files(tmp_path, synth, table)
    synth.write_1d(folder / "Other_0099999_rois_cc200.1D", synth.roi_series(99, T=12, R=4))
    table.to_csv(tmp_path / "pheno.csv", index=False)
    c = Cohort.load(build_abide_cohort(tmp_path / "abide", tmp_path / "pheno.csv", folder))
    assert c.scan_ids.tolist() == ["NYU_0050000", "UCLA_1_0050001", "UCLA_1_0050003", "UCLA_1_0050005"]
    assert c.meta.atlas == "cc200" and c.n_rois == 4 and c.timeseries(0).shape == (12, 4)
    assert c.meta.columns["dx"]["values"] == ["autism", "control"]
    assert c.meta.columns["site"]["values"] == ["NYU", "UCLA_1"]
    assert c.meta.exclusion_counts() == {
        "failed quality control": 1, "no preprocessed data (FILE_ID no_filename)": 1, "no phenotype row": 1,
    }
    assert set(c.select(dx="autism").phenotypes["sex"]) <= {"male", "female"}


def test_build_abide_file_id_without_file(tmp_path, synth):
    table = synth.abide_table(4)
    folder = _abide_files(tmp_path, synth, table)
    (folder / "UCLA_1_0050003_rois_cc200.1D").unlink()
    match = r"1 FILE_ID\(s\) .* have no '<FILE_ID>_rois_cc200\.1D' file, e\.g\. \['UCLA_1_0050003'\]"
    with pytest.raises(BrainAlignError, match=match):
        build_abide_cohort(tmp_path / "a", table, folder)
    c = Cohort.load(build_abide_cohort(tmp_path / "a", table, folder, missing="exclude"))
    assert len(c) == 3 and c.meta.exclusion_counts() == {"no ROI file": 1}
    with pytest.raises(BrainAlignError, match=r"do not end in '_rois_cc200\.1D'"):
        build_abide_cohort(tmp_path / "b", table, [tmp_path / "x.txt"])
    with pytest.raises(BrainAlignError, match="ROI folder .* does not exist"):
        build_abide_cohort(tmp_path / "b", table, tmp_path / "nowhere")


def test_build_abide_corrupt_file(tmp_path, synth):
    table = synth.abide_table(3)
    folder = _abide_files(tmp_path, synth, table)
    (folder / "UCLA_1_0050001_rois_cc200.1D").write_text("#1 #2 #3 #4\n1 2 3 4\n1 2 3\n")
    with pytest.raises(BrainAlignError, match=r"UCLA_1_0050001_rois_cc200\.1D: not a table"):
        build_abide_cohort(tmp_path / "a", table, folder)


def test_abide_real_table_counts(abide_phenotypes, tmp_path, synth):
    """The shared ABIDE PCP table: 1112 rows, 873 after the QC filter (405 ASD / 468 controls)."""
    table = builders.read_abide_table(abide_phenotypes)
    assert len(table) == 1112
    phen, excl = builders.abide_phenotypes(table)
    assert len(phen) == 873 and len(excl) == 1112 - 873
    assert phen["dx"].value_counts().to_dict() == {"control": 468, "autism": 405}
    assert phen["sex"].value_counts().to_dict() == {"male": 729, "female": 144}
    assert phen["site"].nunique() == 20
    reasons = pd.Series([e["reason"] for e in excl]).value_counts().to_dict()
    assert reasons == {"failed quality control": 162, "no preprocessed data (FILE_ID no_filename)": 77}
    phen_all, _ = builders.abide_phenotypes(table, quality_filter=False)
    assert len(phen_all) == 1035
    # End to end with tiny stand-in ROI files for all 873 scans.
    folder = tmp_path / "rois"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for fid in phen["scan_id"]:
        np.savetxt(folder / f"{fid}_rois_cc200.1D", rng.standard_normal((10, 3)), fmt="%.4f",
                   header="#2001\t#2002\t#2003", comments="")
    c = Cohort.load(build_abide_cohort(tmp_path / "abide", abide_phenotypes, folder))
    assert len(c) == 873 and c.n_rois == 3 and len(c.meta.exclusions) == 239
    assert validate_cohort(c.root).ok
    assert c.phenotypes["dx"].value_counts().to_dict() == {"control": 468, "autism": 405}


# -- NIfTI --------------------------------------------------------------------------------------------


def _nifti_inputs(tmp_path, synth, n=2, **kw):
    paths = []
    for i in range(n):
        p = tmp_path / f"func{i}.nii.gz"
        synth.func_image(i, **kw).to_filename(p)
        paths.append(p)
    atlas = tmp_path / "atlas.nii.gz"
    synth.label_atlas().to_filename(atlas)
    return paths, atlas, _phen([f"s{i}" for i in range(n)], site=["A", "B"][:n])


def test_build_from_nifti_labels(tmp_path, synth):
    funcs, atlas, phen = _nifti_inputs(tmp_path, synth)
    out = build_from_nifti(tmp_path / "c", funcs, atlas, phen, atlas_name="toy", roi_labels=list("abcd"))
    c = Cohort.load(out)
    assert len(c) == 2 and c.n_rois == 4 and c.timeseries(0).shape == (30, 4)
    assert c.meta.tr == 2.0 and c.meta.roi_labels == list("abcd")
    assert validate_cohort(out).ok
    assert c.meta.atlas_image == str(atlas.resolve()) and c.atlas_image_path() == atlas.resolve()
    coords = np.array(c.meta.roi_coords)
    assert coords.shape == (4, 3) and coords[1, 0] > coords[0, 0] and coords[2, 2] > coords[0, 2]
    ts = np.asarray(c.timeseries(0))
    np.testing.assert_allclose(ts.mean(0), 0, atol=1e-5)  # z-scored by default
    # Each region carries its own simulated signal, so columns are nearly uncorrelated with each other.
    assert np.abs(np.corrcoef(ts.T)[np.triu_indices(4, 1)]).max() < 0.8
    assert _no_staging_left(tmp_path)


def test_build_from_nifti_confounds_and_filters(tmp_path, synth):
    funcs, atlas, phen = _nifti_inputs(tmp_path, synth, T=60)
    conf = tmp_path / "conf.tsv"
    pd.DataFrame({"motion": np.linspace(0, 1, 60), "wm": np.sin(np.arange(60))}).to_csv(conf, sep="\t", index=False)
    c = Cohort.load(build_from_nifti(tmp_path / "c", funcs, atlas, phen, atlas_name="toy",
                                     confounds=[conf, np.ones((60, 1))], high_pass=0.01, low_pass=0.2))
    assert c.timeseries(1).shape == (60, 4) and c.meta.roi_labels == ["1", "2", "3", "4"]
    bad = tmp_path / "short.tsv"
    pd.DataFrame({"m": np.arange(10.0)}).to_csv(bad, sep="\t", index=False)
    with pytest.raises(BrainAlignError, match=r"scan 's0': confounds .*short\.tsv have 10 rows for 60 volumes"):
        build_from_nifti(tmp_path / "d", funcs, atlas, phen, atlas_name="toy", confounds=[bad, None])


def test_build_from_nifti_maps_in_memory_atlas(tmp_path, synth):
    funcs, _, phen = _nifti_inputs(tmp_path, synth)
    phen["func_path"] = [str(f) for f in funcs]
    out = build_from_nifti(tmp_path / "c", None, synth.maps_atlas(), phen, atlas_name="blobs", tr=2.5)
    c = Cohort.load(out)
    assert c.n_rois == 3 and c.timeseries(0).shape == (30, 3) and c.meta.tr == 2.5
    assert c.meta.atlas_image == "atlas.nii.gz" and nib.load(c.atlas_image_path()).shape == (8, 8, 8, 3)
    assert np.array(c.meta.roi_coords).shape == (3, 3)


def test_nifti_not_4d(tmp_path, synth):
    funcs, atlas, phen = _nifti_inputs(tmp_path, synth)
    three_d = tmp_path / "anat.nii.gz"
    nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), synth.AFFINE).to_filename(three_d)
    with pytest.raises(BrainAlignError, match=r"scan 's1': .*anat\.nii\.gz has shape \(8, 8, 8\); a 4-D"):
        build_from_nifti(tmp_path / "c", [funcs[0], three_d], atlas, phen, atlas_name="toy")
    assert not (tmp_path / "c").exists()


def test_nifti_unreadable_and_missing(tmp_path, synth):
    funcs, atlas, phen = _nifti_inputs(tmp_path, synth)
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(BrainAlignError, match=r"scan 's0': cannot read .*junk\.nii\.gz as a NIfTI image"):
        build_from_nifti(tmp_path / "c", [junk, funcs[1]], atlas, phen, atlas_name="toy")
    with pytest.raises(BrainAlignError, match=r"scan 's1': image file .*gone\.nii\.gz does not exist"):
        build_from_nifti(tmp_path / "c", [funcs[0], tmp_path / "gone.nii.gz"], atlas, phen, atlas_name="toy")
    with pytest.raises(BrainAlignError, match=r"atlas .*junk\.nii\.gz: cannot read it as a NIfTI image"):
        build_from_nifti(tmp_path / "c", funcs, junk, phen, atlas_name="toy")


def test_nifti_truncated_data(tmp_path, synth):
    funcs, atlas, phen = _nifti_inputs(tmp_path, synth)
    raw = funcs[1].read_bytes()
    funcs[1].write_bytes(raw[: len(raw) // 2])  # header intact, data cut short
    with pytest.raises(BrainAlignError, match=r"scan 's1'.*func1\.nii\.gz"):
        build_from_nifti(tmp_path / "c", funcs, atlas, phen, atlas_name="toy")


def test_nifti_region_missing_on_image_grid(tmp_path, synth):
    """An image covering only z < 4 loses atlas regions 3 and 4: an error, not a silent column drop."""
    funcs, atlas, phen = _nifti_inputs(tmp_path, synth)
    synth.func_image(5, shape=(8, 8, 4)).to_filename(funcs[1])
    with pytest.raises(BrainAlignError, match=r"scan 's1' .*func1\.nii\.gz.*region\(s\) \['3', '4'\] have no voxel"):
        build_from_nifti(tmp_path / "c", funcs, atlas, phen, atlas_name="toy")


def test_nifti_constant_region(tmp_path, synth):
    funcs, atlas, phen = _nifti_inputs(tmp_path, synth)
    synth.func_image(3, zero_label=2).to_filename(funcs[0])
    with pytest.raises(BrainAlignError, match=r"scan 's0' .*region\(s\) \['2'\] have a constant signal"):
        build_from_nifti(tmp_path / "c", funcs, atlas, phen, atlas_name="toy")


def test_nifti_tr_and_atlas_checks(tmp_path, synth):
    funcs, atlas, phen = _nifti_inputs(tmp_path, synth)
    synth.func_image(1, tr=2.5).to_filename(funcs[1])
    with pytest.raises(BrainAlignError, match="different TRs"):
        build_from_nifti(tmp_path / "c", funcs, atlas, phen, atlas_name="toy")
    c = Cohort.load(build_from_nifti(tmp_path / "c", funcs, atlas, phen, atlas_name="toy", tr=2.0))
    assert c.meta.tr == 2.0
    float_atlas = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), synth.AFFINE)
    with pytest.raises(BrainAlignError, match="not integer-valued"):
        build_from_nifti(tmp_path / "d", funcs, float_atlas, phen, atlas_name="toy", tr=2.0)
    with pytest.raises(BrainAlignError, match="roi_labels has 2 names but the atlas has 4 regions"):
        build_from_nifti(tmp_path / "d", funcs, atlas, phen, atlas_name="toy", roi_labels=["a", "b"])


def test_roi_centres(synth):
    """Centres of mass in world mm: label 1 spans voxels x 0-3, z 0-3 (3 mm voxels) -> (4.5, 10.5, 4.5)."""
    centres = builders.roi_centres(synth.label_atlas(), [1, 2, 3, 4, 9])
    expected = [[4.5, 10.5, 4.5], [16.5, 10.5, 4.5], [4.5, 10.5, 16.5], [16.5, 10.5, 16.5]]
    np.testing.assert_allclose(centres[:4], expected)
    assert np.isnan(centres[4]).all()  # a label absent from the image
