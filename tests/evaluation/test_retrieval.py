"""Retrieval protocol (stimulus split, repeat averaging, four directions) and the fit volume / retrieve CLI."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from brainalign.errors import BrainAlignError
from brainalign.evaluation.retrieval import average_repeats, retrieval_table, split_by_stimulus, top_k_ids

runner = CliRunner()


def test_split_by_stimulus_keeps_stimuli_disjoint():
    stim = np.repeat([f"s{i}" for i in range(10)], 3)
    train, test = split_by_stimulus(stim, 0.3, seed=1)
    assert len(train) + len(test) == 30 and not set(stim[train]) & set(stim[test])
    assert len(set(stim[test])) == 3
    again = split_by_stimulus(stim, 0.3, seed=1)
    assert np.array_equal(again[1], test)
    with pytest.raises(BrainAlignError, match="at least 4 distinct stimuli"):
        split_by_stimulus(["a", "b", "a"])


def test_average_repeats_per_subject_and_stimulus():
    brain = np.array([[1.0, 0], [0, 1], [3, 0], [0, 2]])
    mean, stim, subj = average_repeats(brain, ["a", "a", "b", "a"], ["x", "x", "x", "y"])
    assert stim.tolist() == ["a", "b", "a"] and subj.tolist() == ["x", "x", "y"]
    np.testing.assert_allclose(mean[0], [2 ** -0.5, 2 ** -0.5])
    np.testing.assert_allclose(mean[1:], [[1, 0], [0, 1]])


def test_retrieval_table_perfect_reversed_and_chance():
    rng = np.random.default_rng(0)
    ids = np.array([f"s{i}" for i in range(20)])
    img = rng.standard_normal((20, 5))
    stim = np.concatenate([ids, ids])
    subj = np.repeat(["a", "b"], 20)
    perfect = retrieval_table({"image": img[np.r_[0:20, 0:20]]}, {"image": (img, ids)}, stim, subj)
    assert set(perfect) == {"brain_to_image", "image_to_brain"}
    assert perfect["brain_to_image"]["R@1"] == 1.0 and perfect["image_to_brain"]["R@1"] == 1.0
    assert perfect["brain_to_image"]["chance@1"] == pytest.approx(0.05)
    assert perfect["brain_to_image"]["chance@10"] == pytest.approx(0.5)
    assert perfect["brain_to_image"]["n_subjects"] == 2
    shuffled = retrieval_table({"image": img[rng.permutation(40) % 20]}, {"image": (img, ids)}, stim, subj)
    assert shuffled["brain_to_image"]["R@1"] < 0.5
    # by hand: brain p = (1, 0), brain q = (0.8, 0.6); text p = (1, 0), text q = (0, 1).
    # brain q scores text p 0.8 > text q 0.6 (miss); brain p hits.  Text p: brain p 1 > 0.8 (hit); text q:
    # brain q 0.6 > brain p 0 (hit).  So brain→text R@1 = 1/2 and text→brain R@1 = 1.
    b = np.array([[1.0, 0.0], [0.8, 0.6]])
    t = np.array([[1.0, 0.0], [0.0, 1.0]])
    res = retrieval_table({"text": b}, {"text": (t, np.array(["p", "q"]))}, ["p", "q"], ["x", "x"], ks=(1,))
    assert res["brain_to_text"]["R@1"] == pytest.approx(0.5)
    assert res["text_to_brain"]["R@1"] == pytest.approx(1.0)


def test_retrieval_errors():
    ids = np.array(["a", "b", "c"])
    emb = np.eye(3)
    with pytest.raises(BrainAlignError, match="no image embedding for 1 stimulus id"):
        retrieval_table({"image": emb}, {"image": (emb[:2], ids[:2])}, ids, ["x"] * 3)
    with pytest.raises(BrainAlignError, match="dimension 3 but the image target embeddings have 2"):
        retrieval_table({"image": emb}, {"image": (emb[:, :2], ids)}, ids, ["x"] * 3)
    with pytest.raises(BrainAlignError, match="at least 2 test stimuli"):
        retrieval_table({"image": emb}, {"image": (emb, ids)}, ids, ["x", "y", "z"])


def test_top_k_ids():
    t = np.eye(4)
    ids = np.array(["a", "b", "c", "d"])
    top = top_k_ids(np.array([[0.1, 0.9, 0.5, 0.0]]), (t, ids), k=3)
    assert top.tolist() == [["b", "c", "a"]]


# ------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def volume_cohort(tmp_path_factory):
    pytest.importorskip("nibabel")
    from brainalign.data.simulate_volumes import VolumeSimulationConfig, simulate_volume_cohort

    import nibabel as nib

    from brainalign.data.volumes import MNI_AFFINE, MNI_SHAPE

    root = tmp_path_factory.mktemp("vol") / "cohort"
    simulate_volume_cohort(root, VolumeSimulationConfig(n_stimuli=10, n_subjects=2, image_dim=16, text_dim=12))
    # crop the cohort to a 28-voxel box around the first informative region: few voxels keep the tests fast
    truth = json.loads((root / "truth.json").read_text())
    regions = truth["regions"]
    box = np.zeros(MNI_SHAPE, dtype=np.uint8)
    lo = [min(max(0, c // 14 * 14 - 7), s - 28) for c, s in zip(regions[0]["centre_voxel"], MNI_SHAPE)]
    box[lo[0]:lo[0] + 28, lo[1]:lo[1] + 28, lo[2]:lo[2] + 28] = 1
    nib.save(nib.Nifti1Image(box, MNI_AFFINE), str(root / "mask.nii.gz"))
    meta = json.loads((root / "cohort.json").read_text())
    meta["mask"] = "mask.nii.gz"
    (root / "cohort.json").write_text(json.dumps(meta))
    return root


FAST = ["--set", "vit.depth=1", "--set", "vit.width=16", "--set", "vit.heads=2", "--set", "vit.epochs=1",
        "--set", "vit.batch_size=10", "--set", "vit.patch_size=14", "--set", "vit.queue_size=16",
        "--set", "vit.test_frac=0.4", "--set", "mlp.hidden=8", "--set", "mlp.epochs=1", "--set", "mlp.batch_size=10"]


@pytest.fixture(scope="module")
def fitted_run(volume_cohort, tmp_path_factory):
    from brainalign.cli import app

    out = tmp_path_factory.mktemp("run") / "run"
    result = runner.invoke(app, ["fit", "volume", "--cohort", str(volume_cohort), "--out", str(out), *FAST,
                                 "--ablations"])
    assert result.exit_code == 0, result.output
    return out


def test_cli_fit_volume_writes_run_folder(fitted_run):
    results = json.loads((fitted_run / "results.json").read_text())
    assert set(results["methods"]) == {"vit", "ridge", "mlp"}
    for name in ("image_only", "text_only", "no_queue", "region_mask", "whole_brain"):
        assert name in results["ablations"], results["notes"]
    assert set(results["ablations"]["image_only"]) == {"brain_to_image", "image_to_brain"}
    row = results["methods"]["vit"]["brain_to_image"]
    assert {"R@1", "R@5", "R@10", "chance@1", "chance@5", "chance@10"} <= set(row)
    assert results["split"]["n_test_stimuli"] == 4 and results["region_mask_voxels"] > 0
    assert set(results["ridge_centred"]) == {"image", "text"}  # the CV's centring choice per target
    config = yaml.safe_load((fitted_run / "config.yaml").read_text())
    assert config["vit"]["depth"] == 1 and config["vit"]["logit_scale"] == 100.0 and config["methods"] == [
        "vit", "ridge", "mlp"]
    assert config["vit"]["queued_brain"] is False and config["vit"]["centre"] is True
    for f in ("vit.pt", "mlp.pt", "ridge.npz", "retrieval.html"):
        assert (fitted_run / f).is_file()
    assert "Ablations" in (fitted_run / "retrieval.html").read_text()


def test_cli_same_config_same_numbers(fitted_run, volume_cohort, tmp_path):
    from brainalign.cli import app

    out = tmp_path / "again"
    result = runner.invoke(app, ["fit", "volume", "--cohort", str(volume_cohort), "--out", str(out),
                                 "--config", str(fitted_run / "config.yaml"), "--methods", "vit"])
    assert result.exit_code == 0, result.output
    first = json.loads((fitted_run / "results.json").read_text())["methods"]
    second = json.loads((out / "results.json").read_text())["methods"]
    assert second["vit"] == first["vit"]


def test_cli_retrieve_on_a_cohort(fitted_run, volume_cohort, tmp_path):
    from brainalign.cli import app

    out = tmp_path / "retrieved.json"
    result = runner.invoke(app, ["retrieve", "--model", str(fitted_run), "--cohort", str(volume_cohort),
                                 "--out", str(out), "--k", "3"])
    assert result.exit_code == 0, result.output
    res = json.loads(out.read_text())
    assert set(res["metrics"]) == {"brain_to_image", "image_to_brain", "brain_to_text", "text_to_brain"}
    assert len(res["scans"]) == 20 and len(res["scans"][0]["top_image"]) == 3
    assert res["metrics"]["brain_to_image"]["n_candidates"] == 10
    result = runner.invoke(app, ["retrieve", "--model", str(fitted_run), "--cohort", str(volume_cohort),
                                 "--out", str(tmp_path / "r.json"), "--method", "ridge"])
    assert result.exit_code == 0, result.output


def test_cli_retrieve_mismatched_embedding_dim(fitted_run, volume_cohort, tmp_path):
    from brainalign.cli import app

    other = tmp_path / "other"
    shutil.copytree(volume_cohort, other)
    emb = np.load(other / "embeddings" / "image.npy")
    np.save(other / "embeddings" / "image.npy", np.concatenate([emb, emb], axis=1))
    result = runner.invoke(app, ["retrieve", "--model", str(fitted_run), "--cohort", str(other)])
    assert result.exit_code == 2
    assert "image.npy has dimension 32" in result.output and "16 dimensions" in result.output


def test_cli_bad_inputs(volume_cohort, tmp_path):
    from brainalign.cli import app

    base = ["fit", "volume", "--cohort", str(volume_cohort), "--out", str(tmp_path / "r")]
    result = runner.invoke(app, [*base, "--methods", "vit,clip"])
    assert result.exit_code == 2 and "unknown method(s) ['clip']" in result.output
    result = runner.invoke(app, [*base, "--set", "vit.depht=2"])
    assert result.exit_code == 2 and "depht" in result.output
    result = runner.invoke(app, [*base, "--set", "nonsense"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("text_provider: clip\n")
    result = runner.invoke(app, [*base, "--config", str(bad_config)])
    assert result.exit_code == 2 and "text_provider must be one of" in result.output
    # a stimulus without target embeddings
    broken = tmp_path / "broken"
    shutil.copytree(volume_cohort, broken)
    ids = (broken / "embeddings" / "ids.txt").read_text().split()
    (broken / "embeddings" / "ids.txt").write_text("\n".join(ids[:-1]) + "\n")
    np.save(broken / "embeddings" / "image.npy", np.load(broken / "embeddings" / "image.npy")[:-1])
    np.save(broken / "embeddings" / "text.npy", np.load(broken / "embeddings" / "text.npy")[:-1])
    result = runner.invoke(app, ["fit", "volume", "--cohort", str(broken), "--out", str(tmp_path / "r2"),
                                 "--methods", "ridge"])
    assert result.exit_code == 2 and ids[-1] in result.output, result.output
    result = runner.invoke(app, ["retrieve", "--model", str(tmp_path / "nowhere"), "--cohort", str(volume_cohort)])
    assert result.exit_code == 2 and "does not exist" in result.output
