"""Report figures and the self-contained HTML report of a run folder."""

from __future__ import annotations

import base64
import json
import re
import warnings
from html.parser import HTMLParser
from importlib import resources

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from brainalign.data.cohort import CohortMeta  # noqa: E402
from brainalign.errors import BrainAlignError  # noqa: E402
from brainalign.evaluation.benchmark import BenchmarkConfig, run_benchmark  # noqa: E402
from brainalign.evaluation.metrics import fairness_metrics  # noqa: E402
from brainalign.explain.token_maps import write_token_maps  # noqa: E402
from brainalign.report.figures import (  # noqa: E402
    brain_map_figure,
    fairness_figure,
    figure_to_base64,
    fold_averaged_scores,
    per_group_metrics,
    read_predictions,
    roc_figure,
)
from brainalign.report.html import write_report  # noqa: E402

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
PNG = b"\x89PNG\r\n\x1a\n"


class StrictParser(HTMLParser):
    """Checks that every non-void element is closed in order."""

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
        else:
            self.stack.pop()


def check_html(text: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert not parser.errors, parser.errors[:5]
    assert not parser.stack, f"unclosed: {parser.stack}"
    assert text.startswith("<!DOCTYPE html>")
    return parser


def images(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def _run(cohort_dir, out, **kw):
    cfg = dict(cohort=str(cohort_dir), methods=["logreg"], target="dx", sensitive="sex", n_folds=3, n_boot=20)
    cfg.update(kw)
    return run_benchmark(BenchmarkConfig(**cfg), out)


@pytest.fixture
def run_dir(toy_cohort_dir, tmp_path):
    """A benchmark run folder with two methods (logreg at two seeds, the second renamed) and token maps."""
    run = tmp_path / "run"
    with warnings.catch_warnings():  # tiny folds: the runner warns about undefined per-group metrics
        warnings.simplefilter("ignore")
        a = _run(toy_cohort_dir, run)
        b = _run(toy_cohort_dir, None, seed=1)
    a["methods"]["logreg_seed1"] = b["methods"]["logreg"]
    a["config"]["methods"].append("logreg_seed1")
    (run / "results.json").write_text(json.dumps(a))
    preds = read_predictions(run / "predictions.csv")
    other = preds.assign(method="logreg_seed1", score=np.clip(preds["score"] * 0.9 + 0.05, 0, 1))
    pd.concat([preds, other]).to_csv(run / "predictions.csv", index=False)
    rng = np.random.default_rng(0)
    maps = pd.DataFrame(rng.random((3, 8)), index=["autism", "control", "<b>male</b>"],
                        columns=[f"ROI_{i + 1:03d}" for i in range(8)])
    maps.loc["autism", ["ROI_001", "ROI_002"]] += 2.0  # the toy cohort's dx effect couples ROIs 0 and 1
    write_token_maps(maps, run, prefix="token_maps_logreg")
    return run


def test_template_is_package_data():
    assert resources.files("brainalign.report").joinpath("templates", "report.html.j2").is_file()


def test_report_from_run_folder(run_dir):
    truth = {"dx_rois": [0, 1], "sensitive_rois": [6, 7], "n_rois": 8}
    path = write_report(run_dir, truth=truth)
    assert path == run_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    check_html(text)
    results = json.loads((run_dir / "results.json").read_text())
    for name, res in results["methods"].items():
        row = re.search(rf'<tr class="method-row"><td class="l">{name}</td>(.*?)</tr>', text)
        assert row, name
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))
        assert len(cells) == 7  # AUC ACC SEN SPC DPD DEOdds ES-AUC
        assert cells[0] == f"{100 * res['mean']['auc']:.2f} ± {100 * res['std']['auc']:.2f}"
    for header in ("AUC", "ACC", "SEN", "SPC", "DPD↓", "DEOdds↓", "ES-AUC"):
        assert f"<th>{header}</th>" in text
    for section in ('id="config"', 'id="task"', 'id="ci"', 'id="folds"', 'id="roc"', 'id="fairness"', 'id="maps"'):
        assert section in text
    pngs = images(text)
    assert len(pngs) == 2 + 3  # ROC, fairness, one map per token
    assert all(p.startswith(PNG) for p in pngs)
    assert "&lt;b&gt;male&lt;/b&gt;" in text and "<b>male</b>" not in text  # autoescaped
    assert re.search(r'<td class="l">autism</td><td>100\.0</td>', text)  # truth AUROC vs planted dx ROIs
    assert not re.search(r'(src|href)="(https?:)?//', text)  # self-contained


def test_report_cross_validation_only_without_sensitive(toy_cohort_dir, tmp_path):
    run = tmp_path / "cv"
    _run(toy_cohort_dir, run, test_size=0.0, sensitive=None, n_boot=0)
    text = write_report(run).read_text(encoding="utf-8")
    check_html(text)
    assert 'id="roc"' in text and "val set" in text
    assert 'id="fairness"' not in text and "Fairness per group: skipped" in text
    assert "DPD" not in text and 'id="ci"' not in text
    assert len(images(text)) == 1


def test_report_token_maps_only_with_cohort_coordinates(tmp_path):
    rng = np.random.default_rng(2)
    meta = CohortMeta(name="c", n_rois=6, roi_coords=rng.uniform(-50, 50, (6, 3)).tolist())
    maps = {"neurolip": pd.DataFrame(rng.random((2, 6)), index=["autism", "female"], columns=meta.roi_labels)}
    text = write_report(tmp_path / "r", token_maps=maps, cohort=meta, max_tokens=1).read_text(encoding="utf-8")
    check_html(text)
    assert len(images(text)) == 1 and "Not drawn (1 more token(s)" in text and "No results.json" in text


def test_report_scores_maps_against_the_simulated_cohorts_truth(tmp_path):
    from brainalign.data.simulate import SimulationConfig, load_truth, simulate_cohort

    root = simulate_cohort(tmp_path / "sim", SimulationConfig(n_scans=6, n_rois=12, n_timepoints=20))
    truth = load_truth(root, arrays=False)
    dx_map = np.zeros(12)
    dx_map[truth["dx_rois"]] = 1.0
    maps = {"neurolip": pd.DataFrame([dx_map], index=["autism"])}
    text = write_report(tmp_path / "r", token_maps=maps, cohort=root).read_text(encoding="utf-8")  # truth.json found
    check_html(text)
    assert "planted dx ROIs" in text and re.search(r'<td class="l">autism</td><td>100\.0</td>', text)


def test_report_needs_something(tmp_path):
    with pytest.raises(BrainAlignError, match="nothing to report"):
        write_report(tmp_path)
    with pytest.raises(BrainAlignError, match="does not exist"):
        write_report(tmp_path, results=tmp_path / "missing.json")


def test_fold_averaged_scores_and_roc_figure(run_dir):
    preds = read_predictions(run_dir / "predictions.csv")
    avg = fold_averaged_scores(preds, "test")
    test = preds[(preds["split"] == "test") & (preds["method"] == "logreg")]
    expected = test.groupby("scan_id")["score"].mean()
    got = avg[avg["method"] == "logreg"].set_index("scan_id")["score"]
    pd.testing.assert_series_equal(got.sort_index(), expected.sort_index(), check_names=False)
    assert (avg["n_folds"] == 3).all()
    fig = roc_figure(preds)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.lines) == 1 + 2  # chance + one per method
    assert "logreg (AUC" in ax.get_legend().get_texts()[1].get_text()
    with pytest.raises(BrainAlignError, match="no rows for split 'train'"):
        roc_figure(preds, "train")


def test_per_group_metrics_and_fairness_figure(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    preds = read_predictions(run_dir / "predictions.csv")
    table = per_group_metrics(results, preds)
    avg = fold_averaged_scores(preds, "test")
    sub = avg[avg["method"] == "logreg"]
    expected = fairness_metrics(sub["y"], sub["score"], sub["group"])["per_group"]
    mine = table[table["method"] == "logreg"].set_index("group")
    for group, m in expected.items():
        assert mine.loc[group, "positive_rate"] == pytest.approx(m["positive_rate"])
        assert mine.loc[group, "n"] == m["n"]
    fig = fairness_figure(results, preds)
    assert [ax.get_title() for ax in fig.axes] == ["AUC", "TPR", "FPR", "Positive rate"]
    # stored per-group metrics take precedence over recomputation
    results["methods"]["logreg"]["per_group"] = {"x": {"n": 1, "n_pos": 1, "auc": None, "acc": 1.0, "tpr": 1.0,
                                                       "fpr": None, "positive_rate": 1.0}}
    stored = per_group_metrics(results, preds)
    assert stored[stored["method"] == "logreg"]["group"].tolist() == ["x"]
    with pytest.raises(BrainAlignError, match="no per-group metrics"):
        fairness_figure(results={"methods": {}})


def test_brain_map_figure_with_and_without_coordinates():
    values = np.linspace(0, 1, 10)
    bars = brain_map_figure(values, None, "autism", top_k=4)
    labels = [t.get_text() for t in bars.axes[0].get_yticklabels()]
    assert labels == ["ROI_010", "ROI_009", "ROI_008", "ROI_007"]
    coords = np.random.default_rng(0).uniform(-50, 50, (10, 3))
    glass = brain_map_figure(values, coords, "autism")
    assert isinstance(glass, Figure) and len(glass.axes) >= 3
    assert base64.b64decode(figure_to_base64(glass)).startswith(PNG)
    with pytest.raises(BrainAlignError, match=r"roi_coords must have shape \(10, 3\)"):
        brain_map_figure(values, coords[:5])
    with pytest.raises(BrainAlignError, match="NaN"):
        brain_map_figure(np.array([1.0, np.nan]))
