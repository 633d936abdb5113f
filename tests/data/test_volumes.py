"""Volume cohort format: round trip, grid handling (reorientation, resampling), masked stacks, bad inputs."""

from __future__ import annotations

import gzip
import json
import shutil
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainalign.data.volumes import (
    MNI_AFFINE,
    MNI_SHAPE,
    VolumeCohort,
    check_volume_contents,
    mni_brain_mask,
    write_volume_cohort,
)
from brainalign.errors import BrainAlignError, CohortError

S = 4


def tables(n=S):
    phen = pd.DataFrame({"scan_id": [f"s{i}" for i in range(n)], "subject_id": [f"p{i // 2}" for i in range(n)],
                         "stimulus_id": [f"x{i % 2}" for i in range(n)], "age": np.arange(n) + 20.0})
    stim = pd.DataFrame({"stimulus_id": ["x0", "x1"], "caption": ["a cat on a mat", "a red bus"]})
    return phen, stim


def smooth_volumes(n=S, seed=0):
    """(n, 91, 109, 91) float32 maps that vary smoothly (so resampling preserves them) plus a little noise."""
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.linspace(0, 1, s, dtype=np.float32) for s in MNI_SHAPE), indexing="ij")
    coef = rng.standard_normal((n, 4)).astype(np.float32)
    return coef[:, 0, None, None, None] * i + coef[:, 1, None, None, None] * j + \
        coef[:, 2, None, None, None] * k + coef[:, 3, None, None, None] * i * j


@pytest.fixture(scope="module")
def vols():
    return smooth_volumes()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, vols):
    phen, stim = tables()
    emb = {"text": np.arange(2 * 5, dtype=np.float32).reshape(2, 5), "image": np.ones((2, 3))}
    return write_volume_cohort(tmp_path_factory.mktemp("base") / "c", vols, phen, stim, emb)


@pytest.fixture
def cohort_dir(tmp_path, base_dir):
    """A fresh copy of a written cohort (copying is faster than writing it again)."""
    return shutil.copytree(base_dir, tmp_path / "c")


def test_mni_mask_is_on_the_2mm_grid():
    mask = mni_brain_mask()
    assert mask.shape == MNI_SHAPE
    np.testing.assert_allclose(mask.affine, MNI_AFFINE)
    data = np.asarray(mask.dataobj)
    assert set(np.unique(data)) == {0, 1}
    assert 200_000 < data.sum() < 260_000  # ~228k voxels of 2 mm = ~1.8 l of brain
    # the brain sits in the middle of the box, the corners are outside
    assert data[45, 54, 45] == 1 and data[0, 0, 0] == 0


def test_roundtrip_zscored_and_embeddings(cohort_dir, vols):
    c = VolumeCohort.load(cohort_dir)
    assert len(c) == S and c.notes == []
    assert list(c.scan_ids) == ["s0", "s1", "s2", "s3"] and list(c.stimulus_ids) == ["x0", "x1", "x0", "x1"]
    assert c.mask.shape == MNI_SHAPE and c.mask.dtype == bool
    v = c.volume(2)
    assert v.dtype == np.float32 and v.shape == MNI_SHAPE
    inside = v[c.mask]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4
    assert np.all(v[~c.mask] == 0)
    raw = vols[2][c.mask]
    np.testing.assert_allclose(inside, (raw - raw.mean()) / raw.std(), atol=1e-4)
    emb, ids = c.embeddings("text")
    assert emb.shape == (2, 5) and list(ids) == ["x0", "x1"]
    np.testing.assert_array_equal(c.scan_embeddings("text")[1], emb[1])
    assert list(c.captions()) == ["a cat on a mat", "a red bus"] * 2
    sub = c.subset([3, 0])
    assert list(sub.scan_ids) == ["s3", "s0"]
    np.testing.assert_array_equal(sub.volume(0), c.volume(3))


def test_masked_stack_matches_volumes_and_is_memory_mapped(cohort_dir):
    c = VolumeCohort.load(cohort_dir)
    stack = c.masked_stack()
    assert isinstance(stack, np.memmap) and stack.shape == (S, c.n_voxels) and stack.dtype == np.float32
    for i in range(S):
        np.testing.assert_allclose(stack[i], c.volume(i)[c.mask], atol=1e-6)
    caches = list((cohort_dir / ".cache").glob("masked_*.npy"))
    assert len(caches) == 1
    sub = c.subset([2, 1])
    np.testing.assert_allclose(sub.masked_stack(), stack[[2, 1]])
    assert isinstance(c.subset([1, 2]).masked_stack(), np.memmap)  # contiguous rows stay mapped
    # changing a volume file invalidates the cache
    img = nib.Nifti1Image(smooth_volumes(1, seed=9)[0], MNI_AFFINE)
    img.to_filename(str(cohort_dir / "volumes" / "s1.nii.gz"))
    new = VolumeCohort.load(cohort_dir).masked_stack()
    assert not np.allclose(new[1], stack[1])
    np.testing.assert_allclose(new[1], VolumeCohort.load(cohort_dir).volume(1)[c.mask], atol=1e-6)
    assert len(list((cohort_dir / ".cache").glob("masked_*.npy"))) == 1


def test_off_grid_volume_is_resampled_with_a_note(tmp_path, vols):
    phen, stim = tables()
    from nilearn.image import resample_img

    src = nib.Nifti1Image(vols[1], MNI_AFFINE)
    aff3 = np.array([[3.0, 0, 0, -90], [0, 3, 0, -126], [0, 0, 3, -72], [0, 0, 0, 1]])
    coarse = resample_img(src, target_affine=aff3, target_shape=(61, 73, 61), interpolation="continuous",
                          force_resample=True, copy_header=True)
    volumes = {"s0": vols[0], "s1": coarse, "s2": vols[2], "s3": vols[3]}
    root = write_volume_cohort(tmp_path / "c", volumes, phen, stim)
    with pytest.warns(UserWarning, match="resampled"):
        c = VolumeCohort.load(root)
    assert any("resampled" in n and "s1" in n for n in c.notes)
    got = c.volume(1)[c.mask]
    want = vols[1][c.mask]
    want = (want - want.mean()) / want.std()
    assert np.corrcoef(got, want)[0, 1] > 0.99  # smooth map survives 2 -> 3 -> 2 mm


def test_flipped_orientation_is_reoriented_exactly(tmp_path, vols):
    phen, stim = tables()
    las_affine = MNI_AFFINE.copy()
    las_affine[0, 0], las_affine[0, 3] = -2.0, 90.0  # FSL radiological layout: same grid, x reversed
    flipped = nib.Nifti1Image(vols[2][::-1].copy(), las_affine)
    root = write_volume_cohort(tmp_path / "c", {"s0": vols[0], "s1": vols[1], "s2": flipped, "s3": vols[3]},
                               phen, stim)
    with pytest.warns(UserWarning, match="reoriented"):
        c = VolumeCohort.load(root)
    assert any("reoriented" in n and "s2" in n for n in c.notes)
    np.testing.assert_array_equal(c.raw_volume(2), vols[2])


def test_cohort_mask_intersects_mni_mask(tmp_path, vols):
    phen, stim = tables()
    half = np.zeros(MNI_SHAPE, dtype=bool)
    half[:45] = True
    root = write_volume_cohort(tmp_path / "c", vols, phen, stim, mask=half)
    c = VolumeCohort.load(root)
    full = np.asarray(mni_brain_mask().dataobj) > 0
    np.testing.assert_array_equal(c.mask, full & half)
    assert c.masked_stack().shape == (S, int((full & half).sum()))


def test_write_refuses_nonempty_folder_and_bad_tables(tmp_path, vols):
    phen, stim = tables()
    root = write_volume_cohort(tmp_path / "c", vols, phen, stim)
    with pytest.raises(BrainAlignError, match="not empty"):
        write_volume_cohort(root, vols, phen, stim)
    with pytest.raises(CohortError, match="stimulus_id"):
        write_volume_cohort(tmp_path / "d", vols, phen.drop(columns="stimulus_id"), stim)
    with pytest.raises(BrainAlignError, match=r"scan 's1'.*shape \(5, 5, 5\)"):
        write_volume_cohort(tmp_path / "e", [vols[0], np.zeros((5, 5, 5))] + [vols[0]] * 2, phen, stim)
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # nothing half-written, no staging folder left
    with pytest.raises(BrainAlignError, match="4, 4, 4, 2"):
        write_volume_cohort(tmp_path / "f", {"s0": nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), MNI_AFFINE)},
                            phen.iloc[:1], stim)
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "notes.txt").write_text("mine")
    with pytest.raises(BrainAlignError, match="not a cohort"):
        write_volume_cohort(tmp_path / "g", vols, phen, stim, overwrite=True)
    assert (tmp_path / "g" / "notes.txt").read_text() == "mine"
    again = write_volume_cohort(root, vols[::-1], phen, stim, overwrite=True)
    np.testing.assert_array_equal(VolumeCohort.load(again).raw_volume(0), vols[-1])


# -- bad folders: every problem named ------------------------------------------------------------------


def _edit(root, fn):
    fn(root)
    return root


def test_four_d_volume_is_rejected(cohort_dir):
    nib.Nifti1Image(np.zeros((4, 4, 4, 3), np.float32), MNI_AFFINE).to_filename(str(cohort_dir / "volumes/s2.nii.gz"))
    with pytest.raises(CohortError, match=r"scan 's2'.*\(4, 4, 4, 3\).*3-D"):
        VolumeCohort.load(cohort_dir)


def test_nan_inside_mask_is_an_error_naming_the_scan(cohort_dir, vols):
    bad = vols[3].copy()
    bad[45, 54, 45] = np.nan
    bad[0, 0, 0] = np.nan  # outside the mask: ignored
    nib.Nifti1Image(bad, MNI_AFFINE).to_filename(str(cohort_dir / "volumes/s3.nii.gz"))
    c = VolumeCohort.load(cohort_dir)
    c.volume(2)
    with pytest.raises(CohortError, match=r"scan 's3': 1 NaN/inf voxel"):
        c.volume(3)
    assert any("s3" in p for p in check_volume_contents(cohort_dir))
    with pytest.raises(CohortError, match="s3"):
        c.masked_stack()
    from typer.testing import CliRunner

    from brainalign.cli import app

    res = CliRunner().invoke(app, ["cohort", "volume-info", str(cohort_dir), "--check"])
    assert res.exit_code == 1 and "1 problem(s)" in res.output and "scan 's3'" in res.output


def test_wrong_mask_shape_is_an_error(cohort_dir):
    nib.Nifti1Image(np.ones((10, 10, 10), np.uint8), MNI_AFFINE).to_filename(str(cohort_dir / "mask.nii.gz"))
    meta = json.loads((cohort_dir / "cohort.json").read_text())
    meta["mask"] = "mask.nii.gz"
    (cohort_dir / "cohort.json").write_text(json.dumps(meta))
    with pytest.raises(CohortError, match=r"cohort mask mask.nii.gz has shape \(10, 10, 10\)"):
        VolumeCohort.load(cohort_dir)


def test_missing_stimulus_and_missing_embeddings_are_errors(cohort_dir):
    stim = pd.read_csv(cohort_dir / "stimuli.csv")
    stim.iloc[:1].to_csv(cohort_dir / "stimuli.csv", index=False)
    with pytest.raises(CohortError, match=r"stimulus_id\(s\) not in stimuli.csv.*'x1'.*s1"):
        VolumeCohort.load(cohort_dir)


def test_required_embeddings_absent(tmp_path, vols):
    phen, stim = tables()
    root = write_volume_cohort(tmp_path / "c", vols, phen, stim)
    assert VolumeCohort.load(root).embeddings("image") is None
    with pytest.raises(CohortError, match="embeddings required but embeddings/image.npy is missing"):
        VolumeCohort.load(root, require_embeddings=["image"])
    with pytest.raises(BrainAlignError, match="no embeddings/text.npy"):
        VolumeCohort.load(root).scan_embeddings("text")


def test_ids_txt_mismatch_is_an_error(cohort_dir):
    (cohort_dir / "embeddings/ids.txt").write_text("x0\n")
    with pytest.raises(CohortError) as info:
        VolumeCohort.load(cohort_dir)
    text = str(info.value)
    assert "embeddings/text.npy has shape (2, 5); expected (1, D)" in text
    assert "embeddings/image.npy" in text and "'x1'" in text  # every problem listed at once
    (cohort_dir / "embeddings/ids.txt").unlink()
    with pytest.raises(CohortError, match="ids.txt is missing"):
        VolumeCohort.load(cohort_dir)


def test_corrupt_and_missing_volume_files(cohort_dir):
    (cohort_dir / "volumes/s1.nii.gz").write_bytes(gzip.compress(b"not a nifti file at all"))
    (cohort_dir / "volumes/s3.nii.gz").unlink()
    shutil.copy(cohort_dir / "volumes/s0.nii.gz", cohort_dir / "volumes/extra.nii.gz")
    with pytest.raises(CohortError) as info:
        VolumeCohort.load(cohort_dir)
    text = str(info.value)
    assert "scan 's1' (volumes/s1.nii.gz): not a readable NIfTI image" in text
    assert "no file for 1 scan(s)" in text and "s3.nii.gz" in text
    assert "extra.nii.gz" in text


def test_truncated_volume_fails_when_read(cohort_dir):
    path = cohort_dir / "volumes/s2.nii.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = VolumeCohort.load(cohort_dir)  # the header is intact
    with pytest.raises(CohortError, match=r"scan 's2'.*cannot be read"):
        c.volume(2)


def test_missing_files_and_columns(tmp_path, cohort_dir):
    with pytest.raises(CohortError, match="does not exist"):
        VolumeCohort.load(tmp_path / "nowhere")
    phen = pd.read_csv(cohort_dir / "phenotypes.csv")
    phen.drop(columns="subject_id").to_csv(cohort_dir / "phenotypes.csv", index=False)
    (cohort_dir / "stimuli.csv").write_text("stimulus_id,text\nx0,a\n")
    with pytest.raises(CohortError) as info:
        VolumeCohort.load(cohort_dir)
    assert "missing required column 'subject_id'" in str(info.value)
    assert "stimuli.csv: missing required column 'caption'" in str(info.value)


def test_mask_falls_back_to_nilearn_when_nimare_is_absent(monkeypatch):
    from brainalign.data import volumes

    packaged = np.asarray(mni_brain_mask().dataobj) > 0
    monkeypatch.setattr(volumes, "MASK_SOURCES", (("no-such-dist-xyz", "x.nii.gz"),))
    volumes._mni_mask_array.cache_clear()
    try:
        with pytest.warns(UserWarning, match="nimare"):
            fallback = volumes.mni_brain_mask()
        assert "nilearn" in volumes.mni_mask_source()
        data = np.asarray(fallback.dataobj) > 0
        assert fallback.shape == MNI_SHAPE
        dice = 2 * (data & packaged).sum() / (data.sum() + packaged.sum())
        assert dice > 0.85
    finally:
        volumes._mni_mask_array.cache_clear()


def test_write_embeddings_aligns_to_existing_ids(cohort_dir):
    from brainalign.data.volumes import write_embeddings

    # cohort_dir has text/image rows for ids x0, x1; a new image array given in the other order is reordered
    write_embeddings(cohort_dir, "image", np.array([[1.0, 1], [0, 0]]), ["x1", "x0"])
    c = VolumeCohort.load(cohort_dir, require_embeddings=["image", "text"])
    emb, ids = c.embeddings("image")
    assert list(ids) == ["x0", "x1"]
    np.testing.assert_array_equal(emb, [[0, 0], [1, 1]])
    with pytest.raises(BrainAlignError, match=r"lack 1 stimulus id\(s\).*x1"):
        write_embeddings(cohort_dir, "image", np.ones((1, 2)), ["x0"])
    with pytest.raises(BrainAlignError, match=r"shape \(2, 2\); expected \(3, D\)"):
        write_embeddings(cohort_dir, "text", np.ones((2, 2)), ["x0", "x1", "x2"])
    with pytest.raises(BrainAlignError, match="unknown embedding kind"):
        write_embeddings(cohort_dir, "audio", np.ones((2, 2)), ["x0", "x1"])
