"""Fetchers with the network mocked: nilearn's fetch functions (or its downloader) are replaced by fakes
that write small synthetic files where nilearn would put them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

from brainalign.data import fetchers
from brainalign.data.cohort import Cohort
from brainalign.data.fetchers import adhd_phenotypes, data_home, fetch_abide, fetch_adhd
from brainalign.errors import BrainAlignError

CSV = fetchers.ABIDE_PHENOTYPE_FILE


# -- data_home ----------------------------------------------------------------------------------------


def test_data_home(tmp_path, monkeypatch):
    monkeypatch.setenv("BRAINALIGN_DATA", str(tmp_path / "env"))
    assert data_home() == tmp_path / "env" and (tmp_path / "env").is_dir()
    assert data_home(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("BRAINALIGN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_home() == tmp_path / "home" / ".cache" / "brainalign"


# -- ABIDE: fetch_abide_pcp replaced ------------------------------------------------------------------


def _write_rois(path: Path, seed: int, T: int = 12, R: int = 4) -> np.ndarray:
    data = np.random.default_rng(seed).standard_normal((T, R))
    np.savetxt(path, data, fmt="%.5f", header="\t".join(f"#{2001 + k}" for k in range(R)), comments="")
    return data


def _fake_abide_pcp(table: pd.DataFrame, calls: list, write_files: bool = True):
    """Stands in for nilearn.datasets.fetch_abide_pcp: same folders, same Bunch keys."""

    def fake(data_dir=None, n_subjects=None, pipeline="cpac", band_pass_filtering=False,
             global_signal_regression=False, derivatives=None, quality_checked=True, url=None, verbose=1, **kwargs):
        calls.append({"data_dir": data_dir, "n_subjects": n_subjects, "pipeline": pipeline,
                      "band_pass_filtering": band_pass_filtering, "global_signal_regression": global_signal_regression,
                      "derivatives": derivatives, "quality_checked": quality_checked, **kwargs})
        root = Path(data_dir) / "ABIDE_pcp"
        root.mkdir(parents=True, exist_ok=True)
        table.to_csv(root / CSV, index=False)
        pheno = table[table["FILE_ID"] != "no_filename"]
        if "FILE_ID" in kwargs:
            pheno = pheno[pheno["FILE_ID"].isin(kwargs["FILE_ID"])]
        out = {"phenotypic": pheno, "description": "fake"}
        strategy = ("" if band_pass_filtering else "no") + "filt_"
        strategy += ("" if global_signal_regression else "no") + "global"
        for d in derivatives or []:
            folder = root / pipeline / strategy
            folder.mkdir(parents=True, exist_ok=True)
            out[d] = [_write_rois(folder / f"{fid}_{d}.1D", i) if write_files else np.zeros((12, 4))
                      for i, fid in enumerate(pheno["FILE_ID"])]
        return Bunch(**out)

    return fake


def test_fetch_abide_arguments_and_cohort(tmp_path, monkeypatch, synth):
    from nilearn import datasets

    table = synth.abide_table(8, fail_rows=(2, 5), no_file_rows=(6,))
    calls: list = []
    monkeypatch.setattr(datasets, "fetch_abide_pcp", _fake_abide_pcp(table, calls))
    home = tmp_path / "cache"
    c = Cohort.load(fetch_abide(tmp_path / "abide", data_dir=home, verbose=0))
    # First call: phenotypes only; second: exactly the scans our QC filter keeps.
    assert [k["derivatives"] for k in calls] == [[], ["rois_cc200"]]
    for call in calls:
        assert call["pipeline"] == "cpac" and call["band_pass_filtering"] is True
        assert call["global_signal_regression"] is False and call["quality_checked"] is False
        assert call["data_dir"] == str(home) and call["n_subjects"] is None
    kept = ["NYU_0050000", "UCLA_1_0050001", "UCLA_1_0050003", "NYU_0050004", "UCLA_1_0050007"]
    assert calls[1]["FILE_ID"] == kept
    assert c.scan_ids.tolist() == kept and c.n_rois == 4 and c.timeseries(0).shape == (12, 4)
    assert c.meta.exclusion_counts() == {"failed quality control": 2, "no preprocessed data (FILE_ID no_filename)": 1}
    assert c.meta.atlas == "cc200" and c.meta.roi_labels[0] == "2001"


def test_fetch_abide_n_subjects_and_no_filter(tmp_path, monkeypatch, synth):
    from nilearn import datasets

    table = synth.abide_table(8, fail_rows=(1,), no_file_rows=(6,))
    calls: list = []
    monkeypatch.setattr(datasets, "fetch_abide_pcp", _fake_abide_pcp(table, calls))
    c = Cohort.load(fetch_abide(tmp_path / "a", data_dir=tmp_path / "cache", n_subjects=2, verbose=0))
    assert c.scan_ids.tolist() == ["NYU_0050000", "NYU_0050002"]
    assert [e["id"] for e in c.meta.exclusions] == ["UCLA_1_0050001"]  # only rows before the last kept one
    c = Cohort.load(fetch_abide(tmp_path / "b", data_dir=tmp_path / "cache", quality_filter=False, verbose=0))
    assert len(c) == 7 and calls[-1]["quality_checked"] is False
    with pytest.raises(BrainAlignError, match="n_subjects must be a positive integer"):
        fetch_abide(tmp_path / "c", data_dir=tmp_path / "cache", n_subjects=0)


def test_fetch_abide_files_missing(tmp_path, monkeypatch, synth):
    from nilearn import datasets

    monkeypatch.setattr(datasets, "fetch_abide_pcp", _fake_abide_pcp(synth.abide_table(3), [], write_files=False))
    with pytest.raises(BrainAlignError, match=r"missing from .*cpac/filt_noglobal: \['NYU_0050000_rois_cc200\.1D'"):
        fetch_abide(tmp_path / "a", data_dir=tmp_path / "cache", verbose=0)
    assert not (tmp_path / "a").exists()


# -- ABIDE: nilearn's real fetch_abide_pcp, only its downloader replaced ----------------------------------


def _fake_fetch_files(csv_source: Path, urls: list):
    """Stands in for nilearn.datasets._utils.fetch_files: 'downloads' by writing the requested files."""

    def fake(data_dir, files, resume=True, verbose=1, session=None):
        paths = []
        for fname, url, _opts in files:
            target = Path(data_dir) / fname
            target.parent.mkdir(parents=True, exist_ok=True)
            urls.append(url)
            if target.name == CSV:
                target.write_bytes(csv_source.read_bytes())
            else:
                _write_rois(target, len(urls))
            paths.append(str(target))
        return paths

    return fake


def test_fetch_abide_through_real_nilearn(tmp_path, monkeypatch, synth):
    import nilearn.datasets.func as nilearn_func

    source = tmp_path / "source.csv"
    synth.abide_table(6, fail_rows=(3,), no_file_rows=(4,)).to_csv(source, index=False)
    urls: list = []
    monkeypatch.setattr(nilearn_func, "fetch_files", _fake_fetch_files(source, urls))
    home = tmp_path / "cache"
    c = Cohort.load(fetch_abide(tmp_path / "abide", data_dir=home, verbose=0))
    assert c.scan_ids.tolist() == ["NYU_0050000", "UCLA_1_0050001", "NYU_0050002", "UCLA_1_0050005"]
    assert (home / "ABIDE_pcp" / "cpac" / "filt_noglobal" / "NYU_0050000_rois_cc200.1D").is_file()
    roi_urls = [u for u in urls if u.endswith(".1D")]
    assert len(roi_urls) == 4
    assert all("/Outputs/cpac/filt_noglobal/rois_cc200/" in u for u in roi_urls)
    assert c.meta.exclusion_counts() == {"failed quality control": 1, "no preprocessed data (FILE_ID no_filename)": 1}


def test_fetch_abide_real_table_through_nilearn(tmp_path, monkeypatch, abide_phenotypes):
    """The real phenotype table through nilearn's own reader and filters; 5 scans 'downloaded'."""
    import nilearn.datasets.func as nilearn_func

    urls: list = []
    monkeypatch.setattr(nilearn_func, "fetch_files", _fake_fetch_files(abide_phenotypes, urls))
    c = Cohort.load(fetch_abide(tmp_path / "abide", data_dir=tmp_path / "cache", n_subjects=5, verbose=0))
    assert len(c) == 5 and len([u for u in urls if u.endswith(".1D")]) == 5
    assert set(c.phenotypes["dx"]) <= {"autism", "control"} and c.phenotypes["site"].iloc[0] == "PITT"


# -- ADHD -----------------------------------------------------------------------------------------------

ADHD_IDS = ["0010042", "0010064", "0021019"]


def _fake_fetch_adhd(synth, calls: list, T: int = 40):
    def fake(n_subjects=30, data_dir=None, url=None, resume=True, verbose=1):
        calls.append({"n_subjects": n_subjects, "data_dir": data_dir})
        ids = ADHD_IDS[: n_subjects or len(ADHD_IDS)]
        funcs, confs = [], []
        for k, sid in enumerate(ids):
            folder = Path(data_dir) / "adhd" / "data" / sid
            folder.mkdir(parents=True, exist_ok=True)
            func = folder / f"{sid}_rest_tshift_RPI_voreg_mni.nii.gz"
            synth.func_image(k, T=T).to_filename(func)
            conf = folder / f"{sid}_regressors.csv"
            rng = np.random.default_rng(k)
            regressors = pd.DataFrame(rng.standard_normal((T, 3)), columns=["csf", "wm", "motion"])
            regressors.to_csv(conf, sep="\t", index=False)
            funcs.append(str(func))
            confs.append(str(conf))
        # The table comes in a different order than the images, as nilearn's does.
        pheno = pd.DataFrame({"Subject": [21019, 10064, 10042], "adhd": [1, 0, 1], "sex": [1, 0, 1],
                              "age": [9.5, 11.2, 14.0], "site": ['"NYU"', "Peking", "NYU"]})
        pheno = pheno[pheno["Subject"].map(lambda x: f"{x:07d}").isin(ids)]
        return Bunch(func=funcs, confounds=confs, phenotypic=pheno, description="fake", t_r=2.0)

    return fake


def _fake_msdl(synth):
    def fake(data_dir=None, url=None, resume=True, verbose=1):
        folder = Path(data_dir) / "msdl_atlas" / "MSDL_rois"
        folder.mkdir(parents=True, exist_ok=True)
        maps = folder / "msdl_rois.nii"
        synth.maps_atlas().to_filename(maps)
        return Bunch(maps=str(maps), labels=["L Aud", "R Aud", "Med DMN"],
                     region_coords=[(-50.0, -20.0, 8.0), (50.0, -20.0, 8.0), (0.0, -50.0, 30.0)],
                     networks=["Aud", "Aud", "DMN"], description="fake")

    return fake


def test_fetch_adhd_msdl(tmp_path, monkeypatch, synth):
    from nilearn import datasets

    calls: list = []
    monkeypatch.setattr(datasets, "fetch_adhd", _fake_fetch_adhd(synth, calls))
    monkeypatch.setattr(datasets, "fetch_atlas_msdl", _fake_msdl(synth))
    c = Cohort.load(fetch_adhd(tmp_path / "adhd", data_dir=tmp_path / "cache", verbose=0))
    assert calls == [{"n_subjects": None, "data_dir": str(tmp_path / "cache")}]
    assert c.scan_ids.tolist() == ADHD_IDS and c.subject_ids.tolist() == ADHD_IDS
    assert c.phenotypes["dx"].tolist() == ["adhd", "control", "adhd"]  # matched by subject, not by row
    assert c.phenotypes["sex"].tolist() == ["male", "female", "male"]
    assert c.phenotypes["site"].tolist() == ["NYU", "Peking", "NYU"]
    assert c.n_rois == 3 and c.timeseries(0).shape == (40, 3) and c.meta.tr == 2.0
    assert c.meta.atlas == "msdl" and c.meta.roi_labels == ["L Aud", "R Aud", "Med DMN"]
    assert c.meta.roi_networks == ["Aud", "Aud", "DMN"] and c.meta.roi_coords[2] == [0.0, -50.0, 30.0]
    assert c.meta.atlas_image.endswith("msdl_rois.nii")
    assert c.meta.columns["dx"] == {"type": "category", "values": ["adhd", "control"]}


def test_fetch_adhd_label_atlas_and_n_subjects(tmp_path, monkeypatch, synth):
    from nilearn import datasets

    calls: list = []
    monkeypatch.setattr(datasets, "fetch_adhd", _fake_fetch_adhd(synth, calls))
    atlas = tmp_path / "toy_atlas.nii.gz"
    synth.label_atlas().to_filename(atlas)
    c = Cohort.load(fetch_adhd(tmp_path / "adhd", data_dir=tmp_path / "cache", n_subjects=2, atlas=atlas,
                               roi_labels=["a", "b", "c", "d"], confounds=False, verbose=0))
    assert calls[0]["n_subjects"] == 2 and len(c) == 2
    assert c.n_rois == 4 and c.meta.atlas == "toy_atlas" and c.meta.roi_labels == ["a", "b", "c", "d"]
    assert np.array(c.meta.roi_coords).shape == (4, 3)


def test_adhd_phenotypes_errors():
    table = pd.DataFrame({"Subject": [10042, 10064], "adhd": [1, 0], "sex": ["M", "F"], "age": [9.0, 10.0],
                          "site": ["NYU", "NYU"]})
    assert adhd_phenotypes(table, ["0010064"])["sex"].tolist() == ["female"]
    with pytest.raises(BrainAlignError, match=r"missing column\(s\) \['adhd'\]"):
        adhd_phenotypes(table.drop(columns=["adhd"]), ["0010042"])
    with pytest.raises(BrainAlignError, match=r"no row for subject\(s\) \['0099999'\]"):
        adhd_phenotypes(table, ["0099999"])
    bad = table.assign(adhd=[1, 3])
    with pytest.raises(BrainAlignError, match=r"'adhd' must be 1 or 0; subject\(s\) \['0010064'\] have \[3\]"):
        adhd_phenotypes(bad, ["0010042", "0010064"])
    with pytest.raises(BrainAlignError, match=r"'sex' has unknown value\(s\) \['X'\] for subject\(s\) \['0010064'\]"):
        adhd_phenotypes(table.assign(sex=["M", "X"]), ["0010042", "0010064"])
    abide_coded = adhd_phenotypes(table.assign(sex=[1, 2]), ["0010042", "0010064"])
    assert abide_coded["sex"].tolist() == ["male", "female"]
