"""NSD loader: trial -> image mapping, COCO captions and the download code, with the network mocked."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from brainalign.data import nsd
from brainalign.data.volumes import MNI_AFFINE, MNI_SHAPE, VolumeCohort
from brainalign.errors import BrainAlignError

T = 6  # trials per session in the fake design (750 in NSD)
# Subject 2's 12 trials over two sessions, as 1-based indices into its 10k images: image 1 is shown 3 times.
MASTER = np.array([1, 2, 3, 1, 4, 2, 5, 3, 1, 6, 7, 8])
N10K = 8


def nsd_id_of(image10k_1based, subject=2):
    return 1000 * subject + 7 * (image10k_1based - 1)  # 0-based 73k id; subjectim stores it + 1


def pattern(t):
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, s) for s in MNI_SHAPE), indexing="ij")
    return (t + 1) * i + np.sin(3 * j) + 0.5 * k * t


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    """A fake bucket with the NSD layout: design, stimulus table, COCO captions and two LAS int16 sessions."""
    root = tmp_path_factory.mktemp("bucket")
    subjectim = np.zeros((8, N10K), dtype=np.int64)
    for s in range(1, 9):
        subjectim[s - 1] = [nsd_id_of(j, s) + 1 for j in range(1, N10K + 1)]
    (root / nsd.EXPDESIGN).parent.mkdir(parents=True)
    savemat(root / nsd.EXPDESIGN, {"masterordering": MASTER[None], "subjectim": subjectim,
                                   "sharedix": np.array([[nsd_id_of(1) + 1]])})
    ids = [nsd_id_of(j) for j in range(1, N10K + 1)]
    pd.DataFrame({"Unnamed: 0": range(N10K), "cocoId": [500 + j for j in range(N10K)], "nsdId": ids,
                  "cocoSplit": ["train2017", "val2017"] * (N10K // 2)}).to_csv(root / nsd.STIM_INFO, index=False)
    for split, parity in (("train2017", 0), ("val2017", 1)):
        ann = [{"image_id": 500 + j, "id": 10 * j + r, "caption": f"image {j} caption {r} "}
               for j in range(N10K) if j % 2 == parity for r in range(2)]
        path = root / nsd.COCO_CAPTIONS.format(split=split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"annotations": ann}))
    las = MNI_AFFINE.copy()
    las[0, 0], las[0, 3] = -2.0, 90.0
    for session in (1, 2):
        trials = range((session - 1) * T, session * T)
        data = np.stack([np.round(300 * pattern(t))[::-1] for t in trials], axis=-1).astype(np.int16)
        path = root / nsd.BETAS.format(subject=2, session=session)
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.Nifti1Image(data, las).to_filename(str(path))
    return root


@pytest.fixture
def mocked(bucket, monkeypatch):
    """Replace the network: ``_download`` copies from the fake bucket and records what was asked for."""
    asked = []

    def fake_download(relpath, cache, timeout=60.0):
        asked.append(relpath)
        dest = cache / relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bucket / relpath, dest)
        return dest

    monkeypatch.setattr(nsd, "_download", fake_download)
    monkeypatch.setattr(nsd, "TRIALS_PER_SESSION", T)
    return asked


def test_trial_mapping(monkeypatch):
    monkeypatch.setattr(nsd, "TRIALS_PER_SESSION", T)
    subjectim = np.arange(1, 8 * N10K + 1).reshape(8, N10K)
    design = {"masterordering": MASTER[None], "subjectim": subjectim, "sharedix": np.array([[subjectim[1, 0]]])}
    tr = nsd.nsd_trials(design, subject=2, sessions=[2])
    assert tr["trial"].tolist() == list(range(6, 12)) and (tr["session"] == 2).all()
    assert tr["image10k"].tolist() == (MASTER[6:] - 1).tolist()
    assert tr["nsd_id"].tolist() == (subjectim[1, MASTER[6:] - 1] - 1).tolist()
    assert tr.loc[tr["image10k"] == 0, "repeat"].tolist() == [2]  # third showing of image 1
    assert tr["shared"].tolist() == [False, False, True, False, False, False]
    with pytest.raises(BrainAlignError, match="sessions 1..2"):
        nsd.nsd_trials(design, subject=2, sessions=[3])
    with pytest.raises(BrainAlignError, match="subject must be 1..8"):
        nsd.nsd_trials(design, subject=9, sessions=[1])
    with pytest.raises(BrainAlignError, match="'subjectim' is missing"):
        nsd.nsd_trials({"masterordering": MASTER}, subject=1, sessions=[1])


def test_fetch_per_image_averages_repeats(tmp_path, mocked):
    out = nsd.fetch_nsd(tmp_path / "c", subject=2, sessions=[1, 2], data_dir=tmp_path / "cache")
    assert nsd.BETAS.format(subject=2, session=2) in mocked
    assert "nsddata_betas/ppdata/subj02/MNI/betas_fithrf_GLMdenoise_RR/betas_session01.nii.gz" in mocked
    c = VolumeCohort.load(out)
    assert len(c) == N10K and set(c.subject_ids) == {"subj02"}
    row = c.phenotypes.set_index("stimulus_id").loc[f"nsd-{nsd_id_of(1):05d}"]
    assert row["n_repeats"] == 3 and row["sessions"] == "1;2" and bool(row["shared"])
    k = int(np.flatnonzero(c.stimulus_ids == f"nsd-{nsd_id_of(1):05d}")[0])
    want = np.mean([np.round(300 * pattern(t)) / 300 for t in (0, 3, 8)], axis=0)
    np.testing.assert_allclose(c.raw_volume(k)[c.mask], want[c.mask], atol=1e-4)
    assert np.all(c.raw_volume(k)[~c.mask] == 0)
    caps = c.stimuli.set_index("stimulus_id")
    assert caps.loc[f"nsd-{nsd_id_of(2):05d}", "caption"] == "image 1 caption 0"
    assert caps.loc[f"nsd-{nsd_id_of(2):05d}", "coco_split"] == "val2017"
    assert caps.loc[f"nsd-{nsd_id_of(2):05d}", "captions"] == "image 1 caption 0 | image 1 caption 1"


def test_fetch_per_trial(tmp_path, mocked):
    out = nsd.fetch_nsd(tmp_path / "c", subject=2, sessions=[2], per="trial", max_trials=3,
                        data_dir=tmp_path / "cache")
    assert nsd.BETAS.format(subject=2, session=1) not in mocked
    c = VolumeCohort.load(out)
    assert list(c.scan_ids) == ["subj02_ses-02_trial-001", "subj02_ses-02_trial-002", "subj02_ses-02_trial-003"]
    assert c.phenotypes["trial"].tolist() == [6, 7, 8]
    np.testing.assert_allclose(c.raw_volume(1), np.round(300 * pattern(7)) / 300, atol=1e-4)


def test_fetch_bad_requests_and_missing_files(tmp_path, mocked, bucket):
    with pytest.raises(BrainAlignError, match="subject must be one of"):
        nsd.fetch_nsd(tmp_path / "c", subject=0)
    with pytest.raises(BrainAlignError, match="sessions 1..30"):
        nsd.fetch_nsd(tmp_path / "c", subject=4, sessions=[31])
    with pytest.raises(BrainAlignError, match="per must be"):
        nsd.build_nsd_cohort(tmp_path / "c", bucket, subject=2, per="run")
    src = tmp_path / "partial"
    shutil.copytree(bucket, src)
    (src / nsd.BETAS.format(subject=2, session=2)).unlink()
    with pytest.raises(BrainAlignError, match="subj02 session 2 are missing"):
        nsd.build_nsd_cohort(tmp_path / "c", src, subject=2, sessions=[2])
    session1 = src / nsd.BETAS.format(subject=2, session=1)
    session1.write_bytes(session1.read_bytes()[: session1.stat().st_size // 2])
    with pytest.raises(BrainAlignError, match="betas_session01.nii.gz: .*trial .*truncated"):
        nsd.build_nsd_cohort(tmp_path / "c", src, subject=2, sessions=[1], per="trial")


def test_download_writes_file_and_reports_http_errors(tmp_path, monkeypatch):
    import requests

    class Response:
        def __init__(self, status, body=b""):
            self.status_code, self.body = status, body

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def iter_content(self, chunk_size):
            yield self.body

    urls = []

    def fake_get(url, stream, timeout):
        urls.append(url)
        return Response(200, b"data") if url.endswith("ok.txt") else Response(403)

    monkeypatch.setattr(requests, "get", fake_get)
    path = nsd._download("a/ok.txt", tmp_path)
    assert path.read_bytes() == b"data" and urls == [f"{nsd.NSD_URL}/a/ok.txt"]
    nsd._download("a/ok.txt", tmp_path)  # cached: no second request
    assert len(urls) == 1
    with pytest.raises(BrainAlignError, match="HTTP 403"):
        nsd._download("a/secret.txt", tmp_path)
    assert not (tmp_path / "a/secret.txt").exists()


def test_cli_fetch_volumes_nsd(tmp_path, mocked):
    from typer.testing import CliRunner

    from brainalign.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["cohort", "fetch-volumes", "nsd", str(tmp_path / "c"), "--subject", "2",
                              "--sessions", "1-2", "--per", "trial", "--max-trials", "2",
                              "--data-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    assert "2 / 1 / 2" in res.output
    res = runner.invoke(app, ["cohort", "fetch-volumes", "nsd", str(tmp_path / "d"), "--sessions", "one"])
    assert res.exit_code == 2 and "--sessions must look like" in res.output
    res = runner.invoke(app, ["cohort", "fetch-volumes", "hcp", str(tmp_path / "d")])
    assert res.exit_code == 2 and "unknown volume dataset" in res.output
