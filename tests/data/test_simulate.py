"""Simulated cohorts with planted truth (brainalign.data.simulate)."""

from __future__ import annotations

import filecmp
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from brainalign.data.cohort import Cohort
from brainalign.data.connectivity import pearson_connectivity
from brainalign.data.simulate import (
    YEO7_NETWORKS,
    SimulationConfig,
    blocks_template,
    brainspace_template,
    load_truth,
    schaefer7_networks,
    simulate_cohort,
)
from brainalign.errors import BrainAlignError

SMALL = dict(n_scans=40, n_rois=20, n_timepoints=60)
COLUMNS = ["scan_id", "subject_id", "dx", "sex", "age", "age_group", "srs", "site"]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return simulate_cohort(tmp_path_factory.mktemp("sim") / "cohort", SimulationConfig(**SMALL))


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _edge_t(cohort: Cohort, label: np.ndarray) -> np.ndarray:
    """Two-sample t statistic of every FC edge (upper triangle, Fisher z) between label 1 and 0."""
    z = np.arctanh(np.clip(cohort.fc_upper().astype(float), -0.999, 0.999))
    return stats.ttest_ind(z[label == 1], z[label == 0]).statistic


# ------------------------------------------------------------------------------------------------ the folder
def test_cohort_loads_with_shapes_and_columns(small):
    cohort = Cohort.load(small)
    assert len(cohort) == 40 and cohort.n_rois == 20
    assert cohort.has_timeseries and cohort.has_connectivity
    assert list(cohort.phenotypes.columns) == COLUMNS
    assert cohort.timeseries(0).shape == (60, 20) and cohort.connectivity(0).shape == (20, 20)
    meta = cohort.meta
    assert meta.atlas == "simulated" and meta.tr == 2.0 and len(meta.roi_labels) == 20
    assert set(meta.roi_networks) == set(YEO7_NETWORKS)
    assert set(meta.columns) == set(COLUMNS) - {"scan_id", "subject_id"}
    assert meta.columns["age"] == {"type": "numeric"}
    assert meta.columns["dx"]["values"] == ["control", "autism"]
    ph = cohort.phenotypes
    assert set(ph["dx"]) <= {"control", "autism"} and set(ph["sex"]) <= {"male", "female"}
    assert (ph["age_group"] == np.where(ph["age"] < 18, "child", "adult")).all()
    assert (ph["srs"] == ph["age_group"]).all()


def test_connectivity_is_pearson_of_stored_series(small):
    cohort = Cohort.load(small)
    ts = np.stack([cohort.timeseries(i) for i in range(len(cohort))])
    np.testing.assert_allclose(cohort.connectivity_stack(), pearson_connectivity(ts), atol=1e-6)
    x = ts - ts.mean(axis=1, keepdims=True)
    lag1 = ((x[:, 1:] * x[:, :-1]).sum(axis=1) / (x * x).sum(axis=1)).mean()
    assert 0.3 < lag1 < 0.6  # AR(1) with ar_phi = 0.5 (minus the small-sample bias)


def test_truth_matches_config(small):
    truth = load_truth(small)
    cohort = Cohort.load(small)
    nets = np.asarray(cohort.meta.roi_networks)
    dx, sens = truth["dx_rois"], truth["sensitive_rois"]
    assert dx and sens and not set(dx) & set(sens)
    assert set(nets[dx]) == {"default"} and set(nets[sens]) == {"somatomotor"}
    assert truth["sensitive"] == "sex" and truth["sensitive_group"] == "female"
    assert truth["dx_effect"] == SimulationConfig().dx_effect and truth["confound"] == 0.3
    assert truth["seed"] == 0 and truth["config"]["n_rois"] == 20 and truth["n_scans"] == 40
    assert truth["sensitive_attribute"]["target_network"] == "ventral_attention"
    assert set(cohort.phenotypes["site"]) <= set(truth["sites"])
    assert sum(s["n_scans"] for s in truth["sites"].values()) == 40
    arrays = truth["array_data"]
    mask = arrays["dx_edge_mask"]
    assert mask.shape == (20, 20) and mask[dx].any(axis=1).all() and not mask[np.ix_(sens, sens)].any()
    assert np.abs(arrays["dx_effect_fc"][~mask]).max() == 0 and np.abs(arrays["dx_effect_fc"][mask]).max() > 0.01
    assert np.abs(arrays["sensitive_effect_fc"][~arrays["sensitive_edge_mask"]]).max() == 0
    assert np.linalg.eigvalsh(arrays["template_fc"].astype(float))[0] > 0


def test_explicit_rois_and_age_group(tmp_path):
    cfg = SimulationConfig(**SMALL, dx_rois=(1, 2), sensitive_rois=(12, 13), sensitive="age_group")
    truth = load_truth(simulate_cohort(tmp_path / "c", cfg))
    assert truth["dx_rois"] == [1, 2] and truth["sensitive_rois"] == [12, 13]
    assert truth["sensitive"] == "age_group" and truth["sensitive_group"] == "child"
    assert truth["realised"]["confound_group"] == "child"


def test_user_template_with_network_labels(tmp_path):
    fc, labels = blocks_template(12, ("a", "b", "c"), seed=5)
    cfg = SimulationConfig(n_scans=6, n_rois=12, n_timepoints=20, template_fc=fc, network_labels=labels)
    root = simulate_cohort(tmp_path / "c", cfg)
    truth = load_truth(root)
    assert Cohort.load(root).meta.roi_networks == labels
    np.testing.assert_allclose(truth["array_data"]["template_fc"], fc, atol=1e-6)
    assert truth["template"]["name"] == "user" and "user array" in truth["config"]["template_fc"]


# --------------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_files(tmp_path, small):
    again = simulate_cohort(tmp_path / "again", SimulationConfig(**SMALL))
    files = _files(small)
    assert files == _files(again) and len(files) > 80
    _, mismatch, errors = filecmp.cmpfiles(small, again, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []


def test_chunk_size_does_not_change_arrays(tmp_path, small):
    other = simulate_cohort(tmp_path / "chunked", SimulationConfig(**SMALL, chunk_size=7))
    arrays = [str(f) for f in _files(small) if f.suffix == ".npy"]
    _, mismatch, errors = filecmp.cmpfiles(small, other, arrays, shallow=False)
    assert mismatch == [] and errors == []


def test_other_seed_differs(tmp_path, small):
    other = Cohort.load(simulate_cohort(tmp_path / "s1", SimulationConfig(**SMALL, seed=1)))
    assert not np.allclose(Cohort.load(small).timeseries(0), other.timeseries(0))


def test_overwrite(tmp_path):
    root = simulate_cohort(tmp_path / "c", SimulationConfig(n_scans=4, n_rois=10, n_timepoints=20))
    with pytest.raises(BrainAlignError, match="not empty"):
        simulate_cohort(root, SimulationConfig(n_scans=4, n_rois=10, n_timepoints=20))
    simulate_cohort(root, SimulationConfig(n_scans=3, n_rois=10, n_timepoints=20), overwrite=True)
    assert len(Cohort.load(root)) == 3 and load_truth(root)["n_scans"] == 3


# ------------------------------------------------------------------------------------------ persons and scans
def test_scans_of_one_person_share_subject_and_phenotypes(tmp_path):
    cfg = SimulationConfig(n_subjects=10, scans_per_subject=3, n_rois=10, n_timepoints=20)
    ph = Cohort.load(simulate_cohort(tmp_path / "c", cfg)).phenotypes
    assert len(ph) == 30 and ph["subject_id"].nunique() == 10
    assert (ph.groupby("subject_id").size() == 3).all()
    assert (ph.groupby("subject_id")[COLUMNS[2:]].nunique() == 1).all().all()


def test_scan_range_reaches_n_scans(tmp_path):
    cfg = SimulationConfig(n_scans=25, scans_per_subject=(1, 3), n_rois=10, n_timepoints=20)
    ph = Cohort.load(simulate_cohort(tmp_path / "c", cfg)).phenotypes
    sizes = ph.groupby("subject_id").size()
    assert len(ph) == 25 and sizes.max() <= 3 and sizes.nunique() > 1


def test_scans_of_one_person_are_more_alike(tmp_path):
    cfg = SimulationConfig(n_subjects=30, scans_per_subject=2, n_rois=20, n_timepoints=150, dx_effect=0,
                           sensitive_effect=0, n_sites=1)
    cohort = Cohort.load(simulate_cohort(tmp_path / "c", cfg))
    fc = cohort.fc_upper().astype(float)
    fc -= fc.mean(axis=0)
    sim = np.corrcoef(fc)
    same = cohort.subject_ids[:, None] == cohort.subject_ids[None]
    off = ~np.eye(len(fc), dtype=bool)
    assert sim[same & off].mean() > sim[~same].mean() + 0.1


# -------------------------------------------------------------------------------------------------- confounding
def _phi(root: Path) -> float:
    truth = load_truth(root, arrays=False)
    return truth["realised"]["phi_subjects"], truth["realised"]["p_dx_given_sex_subjects"]


def test_confound_controls_dx_sex_association(tmp_path):
    base = dict(n_subjects=800, scans_per_subject=1, n_rois=10, n_timepoints=10, seed=3)
    phi0, _ = _phi(simulate_cohort(tmp_path / "c0", SimulationConfig(**base, confound=0.0)))
    phi8, p8 = _phi(simulate_cohort(tmp_path / "c8", SimulationConfig(**base, confound=0.8)))
    assert abs(phi0) < 0.1  # sd of phi at n = 800 is about 0.035
    assert phi8 > 0.6  # expected 0.8 with dx_rate 0.5 and balanced sex
    assert p8["male"] > 0.8 > 0.2 > p8["female"]  # male is the default confound group


def test_phenotype_table_resamples_real_mix(tmp_path, abide_phenotypes):
    cfg = SimulationConfig(n_scans=60, n_rois=10, n_timepoints=20, phenotype_table=abide_phenotypes)
    root = simulate_cohort(tmp_path / "c", cfg)
    ph = Cohort.load(root).phenotypes
    real = pd.read_csv(abide_phenotypes)
    assert set(ph["site"]) <= set(real["SITE_ID"].astype(str))
    assert (ph["sex"] == "male").mean() > 0.6  # ABIDE is 85 % male
    truth = load_truth(root, arrays=False)
    assert truth["phenotype_source"]["kind"] == "table" and truth["confound"] is None


# ---------------------------------------------------------------------------------------------- planted effects
@pytest.fixture(scope="module")
def effect_cohort(tmp_path_factory) -> Path:
    # Effects twice the defaults: over seeds 1..5 planted/elsewhere mean |t| was >= 2.5 and 9-10 of the top 10 edges
    # were planted, so the thresholds below (2 and 8) leave a wide margin; the seed is fixed anyway.
    cfg = SimulationConfig(n_scans=300, scans_per_subject=1, n_rois=20, n_timepoints=100, confound=0.0, seed=11,
                           dx_effect=-0.3, sensitive_effect=0.3)
    return simulate_cohort(tmp_path_factory.mktemp("effect") / "cohort", cfg)


@pytest.mark.parametrize("which", ["dx", "sensitive"])
def test_planted_effect_is_strongest_in_planted_edges(effect_cohort, which):
    cohort, truth = Cohort.load(effect_cohort), load_truth(effect_cohort)
    ph = cohort.phenotypes
    label = (ph["dx"] == "autism") if which == "dx" else (ph["sex"] == "female")
    t = np.abs(_edge_t(cohort, label.to_numpy().astype(int)))
    iu = np.triu_indices(cohort.n_rois, k=1)
    planted = truth["array_data"][f"{which}_edge_mask"][iu]
    elsewhere = ~(truth["array_data"]["dx_edge_mask"] | truth["array_data"]["sensitive_edge_mask"])[iu]
    assert t[planted].mean() > 2 * t[elsewhere].mean()
    top = np.argsort(-t)[:10]
    assert planted[top].mean() >= 0.8


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(confound=1.5), "confound must be in \\[0, 1\\]"),
        (dict(confound=-0.2), "confound must be in \\[0, 1\\]"),
        (dict(dx_rois=(1, 2, 3), sensitive_rois=(3, 4)), "overlap in ROI\\(s\\) \\[3\\]"),
        (dict(dx_rois=(0, 20)), "dx_rois has index\\(es\\) \\[20\\] outside 0..19"),
        (dict(sensitive_rois=(-1,)), "sensitive_rois has index\\(es\\) \\[-1\\]"),
        (dict(n_rois=5), "n_rois \\(5\\) is smaller than the number of networks \\(7"),
        (dict(sensitive="race"), "unknown sensitive attribute 'race'"),
        (dict(sensitive_group="female", sensitive="age_group"), "not a value of age_group"),
        (dict(n_subjects=5), "give n_scans \\(40\\) or n_subjects \\(5\\), not both"),
        (dict(scans_per_subject=(3, 1)), "scans_per_subject"),
        (dict(n_timepoints=5), "n_timepoints must be an integer >= 10"),
        (dict(dx_labels=("a", "a")), "dx_labels"),
        (dict(template="hcp"), "template must be 'blocks' or 'brainspace'"),
        (dict(template="brainspace"), "template 'brainspace' exists for n_rois in \\[100, 200, 300, 400\\], not 20"),
        (dict(template_fc=np.eye(3)), "template_fc is 3×3 but n_rois is 20"),
    ],
)
def test_invalid_config_is_a_clear_error(kwargs, message):
    with pytest.raises(BrainAlignError, match=message):
        SimulationConfig(**{**SMALL, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dx_network="salience"), "dx_network 'salience' is not a network"),
        (dict(n_dx_rois=5), "network 'default' has 4 ROI\\(s\\), fewer than the 5 requested"),
        (dict(n_dx_rois=4), "target network 'default' .* has no ROI left"),
    ],
)
def test_impossible_roi_sets_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(BrainAlignError, match=message):
        simulate_cohort(tmp_path / "c", SimulationConfig(**{**SMALL, **kwargs}))


def test_phenotype_table_missing_columns(tmp_path):
    table = tmp_path / "pheno.csv"
    pd.DataFrame({"SITE_ID": ["A"], "DX_GROUP": [1], "SEX": [2]}).to_csv(table, index=False)
    with pytest.raises(BrainAlignError, match="lacks column\\(s\\) \\['AGE_AT_SCAN'\\]"):
        simulate_cohort(tmp_path / "c", SimulationConfig(**SMALL, phenotype_table=table))
    with pytest.raises(BrainAlignError, match="does not exist"):
        simulate_cohort(tmp_path / "d", SimulationConfig(**SMALL, phenotype_table=tmp_path / "nope.csv"))


def test_from_dict_and_load_truth_errors(tmp_path):
    assert SimulationConfig.from_dict({"n_scans": 5, "scans_per_subject": [1, 2]}).scans_per_subject == (1, 2)
    with pytest.raises(BrainAlignError, match="unknown simulation config key"):
        SimulationConfig.from_dict({"n_scan": 5})
    with pytest.raises(BrainAlignError, match="not a cohort written by simulate_cohort"):
        load_truth(tmp_path)


# ------------------------------------------------------------------------------------------------ brainspace
def test_brainspace_missing_gives_pip_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(BrainAlignError, match="pip install --no-deps brainspace==0.3.0"):
        brainspace_template(100)


def test_schaefer_networks_match_brainspace_blocks():
    if importlib.util.find_spec("brainspace") is None:
        pytest.skip("brainspace is not installed (pip install --no-deps brainspace==0.3.0)")
    fc = brainspace_template(100)
    nets, labels = schaefer7_networks(100)
    assert fc.shape == (100, 100) and len(labels) == 100
    same = np.asarray(nets)[:, None] == np.asarray(nets)[None]
    off = ~np.eye(100, dtype=bool)
    assert fc[same & off].mean() > fc[~same].mean() + 0.1
