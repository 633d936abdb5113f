"""The benchmark runner: structure of results.json, determinism, protocol options."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.evaluation.benchmark import BenchmarkConfig, results_table, run_benchmark
from brainalign.evaluation.protocol import Splits
from brainalign.errors import BrainAlignError


def config(cohort_dir, **kw):
    base = dict(cohort=str(cohort_dir), methods=["logreg"], target="dx", sensitive="sex", n_folds=3, n_boot=30)
    base.update(kw)
    return BenchmarkConfig(**base)


def test_results_structure_and_determinism(toy_cohort_dir):
    a = run_benchmark(config(toy_cohort_dir))
    b = run_benchmark(config(toy_cohort_dir))
    res = a["methods"]["logreg"]
    assert res["reported_split"] == "test" and len(res["folds"]) == 3
    for fold in res["folds"]:
        assert set(fold) >= {"fold", "val", "test", "fit_seconds", "n_train"}
    assert set(res["test_fold_average"]["auc"]) >= {"estimate", "low", "high"}
    assert res["mean"] == b["methods"]["logreg"]["mean"]
    splits = Splits.from_dict(a["splits"])
    subjects = np.array([f"p{i // 2:03d}" for i in range(len(splits.test) + len(splits.folds[0].train)
                                                        + len(splits.folds[0].val))])
    splits.check_no_leakage(subjects)
    assert "| logreg |" in results_table(a) and "DEOdds" in results_table(a)


def test_cross_validation_only_and_no_sensitive(toy_cohort_dir):
    res = run_benchmark(config(toy_cohort_dir, test_size=0.0, sensitive=None, n_boot=0))
    entry = res["methods"]["logreg"]
    assert entry["reported_split"] == "val" and "test_fold_average" not in entry
    assert "dpd" not in entry["mean"] and "DPD" not in results_table(res)


def test_unknown_method_fails_before_training(toy_cohort_dir):
    with pytest.raises(BrainAlignError, match="unknown method 'nope'"):
        run_benchmark(config(toy_cohort_dir, methods=["logreg", "nope"]))


def test_bad_method_option_fails_before_training(toy_cohort_dir, tmp_path):
    bad = config(toy_cohort_dir, methods=["logreg", "neurolip"], method_params={"neurolip": {"token_map": "gradcam"}})
    with pytest.raises(BrainAlignError, match="neurolip: token_map must be one of"):
        run_benchmark(bad, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # nothing trained or written


def test_select_epoch_in_the_benchmark(toy_cohort_dir):
    params = {"brainnettf": {"epochs": 3, "batch_size": 8, "ff_dim": 32, "n_clusters": 8, "select_epoch": True}}
    res = run_benchmark(config(toy_cohort_dir, methods=["brainnettf"], n_folds=2, n_boot=0, method_params=params))
    for fold in res["methods"]["brainnettf"]["folds"]:
        assert 1 <= fold["selected_epoch"] <= 3 and len(fold["val_auc_by_epoch"]) == 3
    with pytest.raises(BrainAlignError, match="select_epoch picks each fold's epoch on its validation scans"):
        run_benchmark(config(toy_cohort_dir, methods=["brainnettf"], test_size=0.0, method_params=params))
