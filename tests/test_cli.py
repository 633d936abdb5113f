"""The `brainalign` command end to end on small cohorts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from brainalign.cli import app

runner = CliRunner()


@pytest.fixture
def cohort_dir(toy_cohort_dir):
    return toy_cohort_dir


def test_help_lists_verbs():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in ("cohort", "benchmark", "demo"):
        assert verb in result.output


def test_validate_and_info(cohort_dir):
    result = runner.invoke(app, ["cohort", "validate", str(cohort_dir)])
    assert result.exit_code == 0 and "valid" in result.output and "60 scans" in result.output
    result = runner.invoke(app, ["cohort", "info", str(cohort_dir)])
    assert result.exit_code == 0 and "autism: 30" in result.output


def test_validate_lists_every_problem(cohort_dir):
    np.save(cohort_dir / "timeseries" / "s003.npy", np.ones((50, 8)))
    (cohort_dir / "timeseries" / "s007.npy").unlink()
    result = runner.invoke(app, ["cohort", "validate", str(cohort_dir)])
    assert result.exit_code == 1
    assert "2 problem(s)" in result.output and "s003" in result.output and "s007" in result.output


def test_info_on_broken_cohort_is_a_clear_error(tmp_path):
    result = runner.invoke(app, ["cohort", "info", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_benchmark_writes_run_folder(cohort_dir, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["benchmark", "--cohort", str(cohort_dir), "--methods", "logreg", "--target", "dx",
                                 "--sensitive", "sex", "--out", str(out), "--n-folds", "3", "--n-boot", "50",
                                 "--stratify-site", "site"])
    assert result.exit_code == 0, result.output
    res = json.loads((out / "results.json").read_text())
    logreg = res["methods"]["logreg"]
    assert len(logreg["folds"]) == 3 and logreg["mean"]["auc"] > 0.7
    assert {"auc", "acc", "sen", "spc", "dpd", "deodds", "es_auc"} <= set(logreg["mean"])
    assert res["task"]["positive"] == "autism"
    assert "| logreg |" in (out / "results.md").read_text()
    assert (out / "config.yaml").exists() and (out / "predictions.csv").exists()


@pytest.mark.parametrize("args, pattern", [
    (["--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--target", "diagnosis"], "column 'diagnosis' is missing"),
    (["--sensitive", "gender"], "column 'gender' is missing"),
    (["--target", "site"], "exactly 2 classes"),
])
def test_benchmark_bad_input(cohort_dir, tmp_path, args, pattern):
    base = {"--cohort": str(cohort_dir), "--methods": "logreg", "--target": "dx", "--out": str(tmp_path / "r")}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    result = runner.invoke(app, ["benchmark", *[x for kv in base.items() for x in kv]])
    assert result.exit_code == 2 and "error" in result.output
    assert pattern in " ".join(result.output.split())


def test_simulate_validate_benchmark_chain(tmp_path):
    sim = tmp_path / "sim"
    result = runner.invoke(app, ["cohort", "simulate", str(sim), "--n-subjects", "60", "--n-rois", "24",
                                 "--n-timepoints", "60", "--confound", "0.5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    truth = json.loads((sim / "truth.json").read_text())
    assert truth["confound"] == 0.5 and truth["sensitive"] == "sex"
    assert runner.invoke(app, ["cohort", "validate", str(sim)]).exit_code == 0
    result = runner.invoke(app, ["cohort", "simulate", str(sim), "--confound", "1.5"])
    assert result.exit_code == 2 and "confound" in result.output


def test_simulate_from_yaml_config(tmp_path):
    (tmp_path / "sim.yaml").write_text("n_scans: 30\nn_rois: 21\nn_timepoints: 40\nsensitive: age_group\n")
    result = runner.invoke(app, ["cohort", "simulate", str(tmp_path / "s"), "--config", str(tmp_path / "sim.yaml")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / "truth.json").read_text())["sensitive"] == "age_group"
    (tmp_path / "bad.yaml").write_text("n_scans: 30\nwarp_speed: 9\n")
    result = runner.invoke(app, ["cohort", "simulate", str(tmp_path / "b"), "--config", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2 and "warp_speed" in result.output


def test_demo_runs_and_prints_fairness_table(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--n-subjects", "80", "--methods", "logreg"])
    assert result.exit_code == 0, result.output
    assert "DEOdds" in result.output and "logreg" in result.output
    res = json.loads((tmp_path / "demo" / "run" / "results.json").read_text())
    assert res["task"]["sensitive"] == "sex" and "dpd" in res["methods"]["logreg"]["mean"]
    bad = runner.invoke(app, ["demo", "--out", str(tmp_path / "bad"), "--sensitive-loss", "ignore"])
    assert bad.exit_code == 2 and "sensitive_loss must be one of" in bad.output
    assert not (tmp_path / "bad").exists()  # refused before simulating


def test_benchmark_config_file_and_set(toy_cohort_dir, tmp_path):
    (tmp_path / "b.yaml").write_text(f"cohort: {toy_cohort_dir}\nmethods: [logreg]\nsensitive: sex\nn_folds: 3\n"
                                     "n_boot: 0\n")
    result = runner.invoke(app, ["benchmark", "--config", str(tmp_path / "b.yaml"), "--out", str(tmp_path / "r"),
                                 "--set", "logreg.C=0.5", "--n-folds", "2"])
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["config"]["n_folds"] == 2 and res["config"]["method_params"] == {"logreg": {"C": 0.5}}
    assert (tmp_path / "r" / "report.html").exists()
    for bad, pattern in ((["--set", "C=0.5"], "METHOD.PARAM=VALUE"), (["--set", "logreg.depth=2"], "depth")):
        result = runner.invoke(app, ["benchmark", "--config", str(tmp_path / "b.yaml"), "--out",
                                     str(tmp_path / "r2"), *bad])
        assert result.exit_code == 2 and pattern in result.output
    result = runner.invoke(app, ["benchmark", "--out", str(tmp_path / "r3")])
    assert result.exit_code == 2 and "no cohort" in result.output


def test_config_that_is_not_a_mapping_is_a_clear_error(tmp_path):
    (tmp_path / "list.yaml").write_text("- logreg\n- neurolip\n")
    result = runner.invoke(app, ["benchmark", "--config", str(tmp_path / "list.yaml"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "must hold a mapping" in result.output
