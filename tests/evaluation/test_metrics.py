"""Metrics: equality with fairlearn / scikit-learn, hand-computed examples, bootstrap, retrieval, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference as fl_dpd
from fairlearn.metrics import equalized_odds_difference as fl_eod
from sklearn.metrics import accuracy_score, recall_score, roc_auc_score, top_k_accuracy_score

from brainalign.errors import BrainAlignError
from brainalign.evaluation.metrics import (
    BootstrapResult,
    UndefinedMetricError,
    UndefinedMetricWarning,
    bootstrap_ci,
    bootstrap_metrics,
    classification_metrics,
    demographic_parity_difference,
    equalized_odds_difference,
    es_auc,
    evaluate_binary,
    fairness_metrics,
    predict_labels,
    recall_at_k,
    retrieval_ranks,
    roc_auc,
    to_percent,
)


def _random_case(seed: int):
    """Varied sizes, 2-6 unbalanced groups (str or int values), varied prevalence; both labels present."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 250))
    n_groups = int(rng.integers(2, 7))
    probs = rng.dirichlet(np.full(n_groups, 0.7))
    names = [f"g{i}" for i in range(n_groups)] if seed % 2 else list(range(10, 10 + n_groups))
    groups = np.asarray(names, dtype=object)[rng.choice(n_groups, n, p=probs)]
    groups[:2] = names[:2]  # at least two groups
    prevalence = rng.uniform(0.05, 0.95)
    y = (rng.random(n) < prevalence).astype(int)
    y[:2] = [0, 1]
    score = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.3, n), 0, 1)
    if seed % 3 == 0:
        score = np.round(score, 1)  # ties
    return y, score, groups


def _audit_case(seed: int = 0, n: int = 150):
    """Three groups of unequal size, each with both labels."""
    rng = np.random.default_rng(seed)
    groups = np.array(["child"] * (n // 2) + ["adult"] * (n // 3) + ["senior"] * (n - n // 2 - n // 3))
    y = (rng.random(n) < 0.45).astype(int)
    for g in np.unique(groups):  # both labels in every group
        idx = np.flatnonzero(groups == g)
        y[idx[:2]] = [0, 1]
    score = np.clip(0.5 + 0.25 * (y - 0.5) + rng.normal(0, 0.25, n), 0, 1)
    return y, score, groups


# --------------------------------------------------------------------------- equality with fairlearn / sklearn


@pytest.mark.filterwarnings("ignore::brainalign.evaluation.metrics.UndefinedMetricWarning")
@pytest.mark.parametrize("seed", range(50))
def test_fairness_equals_fairlearn(seed):
    y, score, groups = _random_case(seed)
    pred = (score >= 0.5).astype(int)
    assert demographic_parity_difference(y, pred, groups) == pytest.approx(
        fl_dpd(y, pred, sensitive_features=groups), abs=1e-12)
    assert equalized_odds_difference(y, pred, groups) == pytest.approx(
        fl_eod(y, pred, sensitive_features=groups), abs=1e-12)
    fn = evaluate_binary if seed % 5 else fairness_metrics
    m = fn(y, score, groups, strict=False)
    assert m["dpd"] == pytest.approx(fl_dpd(y, pred, sensitive_features=groups), abs=1e-12)
    assert m["deodds"] == pytest.approx(fl_eod(y, pred, sensitive_features=groups), abs=1e-12)


@pytest.mark.parametrize("seed", range(50))
def test_classification_equals_sklearn(seed):
    y, score, _ = _random_case(seed)
    pred = (score >= 0.5).astype(int)
    m = classification_metrics(y, score)
    assert m["auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert m["acc"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert m["sen"] == pytest.approx(recall_score(y, pred, pos_label=1), abs=1e-12)
    assert m["spc"] == pytest.approx(recall_score(y, pred, pos_label=0), abs=1e-12)


def test_group_without_positives_matches_fairlearn_and_options():
    # group "b" has no positive labels: fairlearn counts its TPR as 0.
    y = np.array([1, 0, 1, 0, 0, 0, 0])
    pred = np.array([1, 0, 1, 1, 1, 0, 0])
    g = np.array(list("aaaabbb"))
    expected = fl_eod(y, pred, sensitive_features=g)
    assert equalized_odds_difference(y, pred, g) == pytest.approx(expected)
    assert expected == pytest.approx(1.0)  # TPR a = 1, TPR b = "0"
    with pytest.raises(UndefinedMetricError, match=r"TPR is undefined for group\(s\) \['b'\]"):
        equalized_odds_difference(y, pred, g, undefined_rate="raise")
    # skip: TPR gap over group a only (0); FPR a = 1/2, b = 1/3
    assert equalized_odds_difference(y, pred, g, undefined_rate="skip") == pytest.approx(1 / 2 - 1 / 3)
    with pytest.raises(BrainAlignError, match="undefined_rate"):
        equalized_odds_difference(y, pred, g, undefined_rate="nan")


def test_no_positives_anywhere_matches_fairlearn():
    y = np.zeros(6, dtype=int)
    pred = np.array([1, 0, 0, 1, 1, 0])
    g = np.array([0, 0, 0, 1, 1, 1])
    assert equalized_odds_difference(y, pred, g) == pytest.approx(fl_eod(y, pred, sensitive_features=g))
    assert demographic_parity_difference(y, pred, g) == pytest.approx(fl_dpd(y, pred, sensitive_features=g))


def test_single_member_group_allowed_like_fairlearn():
    y = np.array([1, 0, 1, 0, 1])
    pred = np.array([1, 0, 0, 0, 1])
    g = np.array(["a", "a", "a", "a", "b"])
    assert demographic_parity_difference(y, pred, g) == pytest.approx(fl_dpd(y, pred, sensitive_features=g))
    assert equalized_odds_difference(y, pred, g) == pytest.approx(fl_eod(y, pred, sensitive_features=g))


# --------------------------------------------------------------------------- hand-computed examples


def test_dpd_hand():
    pred = np.array([1, 1, 1, 0, 0, 0, 1, 0, 1, 0])
    g = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 2)
    y = np.zeros(10, dtype=int)
    # rates: a 3/4, b 1/4, c 1/2
    assert demographic_parity_difference(y, pred, g) == pytest.approx(0.5)


def test_deodds_hand():
    g = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 4)
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0, 1, 0, 0, 0])
    pred = np.array([1, 0, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0])
    # TPR a .5 b 1 c 1 → gap .5; FPR a 0 b .5 c 2/3 → gap 2/3
    assert equalized_odds_difference(y, pred, g) == pytest.approx(2 / 3)


def test_es_auc_hand():
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7, 0.4, 0.6])
    g = np.array(["a"] * 4 + ["b"] * 4)
    # AUC 14/16, AUC_a 1, AUC_b 0.5 → 0.875 / (1 + 0.125 + 0.375)
    assert roc_auc(y, s) == pytest.approx(0.875)
    assert es_auc(y, s, g) == pytest.approx(0.875 / 1.5)
    assert es_auc(y, s, g, alpha=0.0) == pytest.approx(0.875)
    f = fairness_metrics(y, s, g)
    assert f["es_auc"] == pytest.approx(0.875 / 1.5)
    assert f["per_group"]["a"] == {"n": 4, "n_pos": 2, "auc": 1.0, "acc": 1.0, "tpr": 1.0, "fpr": 0.0,
                                   "positive_rate": 0.5}
    assert f["per_group"]["b"]["auc"] == pytest.approx(0.5)
    assert f["per_group"]["b"]["fpr"] == pytest.approx(0.5)  # 0.7 >= 0.5
    assert f["per_group"]["b"]["tpr"] == pytest.approx(0.5)  # 0.6 only


def test_threshold_is_inclusive():
    y = np.array([0, 1])
    s = np.array([0.2, 0.5])
    assert predict_labels(s).tolist() == [0, 1]
    assert classification_metrics(y, s)["sen"] == 1.0


def test_evaluate_binary_keys_and_percent():
    y, s, g = _audit_case(7)
    assert list(evaluate_binary(y, s)) == ["auc", "acc", "sen", "spc"]
    m = evaluate_binary(y, s, g)
    assert list(m) == ["auc", "acc", "sen", "spc", "dpd", "deodds", "es_auc"]
    p = to_percent(m)
    assert p["auc"] == pytest.approx(100 * m["auc"])
    f = to_percent({"per_group": {"a": {"n": 3, "auc": 0.5, "tpr": None}}, "name": "x"})
    assert f == {"per_group": {"a": {"n": 3, "auc": 50.0, "tpr": None}}, "name": "x"}
    r = to_percent(BootstrapResult(0.5, 0.4, 0.6, 100, 2))
    assert (r.estimate, r.low, r.high, r.n_boot, r.n_failed) == (50.0, 40.0, 60.0, 100, 2)
    assert to_percent({"a": 0.5, "b": 0.25}, skip=("b",)) == {"a": 50.0, "b": 0.25}


def test_non_strict_gives_nan_with_warning():
    y = np.array([0, 1, 0, 1, 0, 0])
    s = np.array([0.1, 0.9, 0.2, 0.7, 0.3, 0.6])
    g = np.array(["a", "a", "a", "a", "b", "b"])  # group b has one class only
    with pytest.raises(UndefinedMetricError, match="group 'b'"):
        es_auc(y, s, g)
    with pytest.warns(UndefinedMetricWarning, match="group 'b'"):
        m = evaluate_binary(y, s, g, strict=False)
    assert math.isnan(m["es_auc"]) and not math.isnan(m["auc"])
    with pytest.warns(UndefinedMetricWarning):
        f = fairness_metrics(y, s, g, strict=False)
    assert f["per_group"]["b"]["auc"] is None and f["per_group"]["b"]["tpr"] is None
    with pytest.warns(UndefinedMetricWarning, match="single value 'a'"):
        one = evaluate_binary(y, s, ["a"] * 6, strict=False)
    assert all(math.isnan(one[k]) for k in ("dpd", "deodds", "es_auc")) and not math.isnan(one["auc"])
    with pytest.warns(UndefinedMetricWarning):
        c = classification_metrics(np.zeros(3, int), [0.1, 0.6, 0.3], strict=False)
    assert math.isnan(c["auc"]) and math.isnan(c["sen"]) and c["spc"] == pytest.approx(2 / 3)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_covers_estimate_and_is_deterministic():
    y, s, _ = _audit_case(11)
    a = bootstrap_ci(roc_auc, y, s, n_boot=300, seed=3, stratify=y)
    b = bootstrap_ci(roc_auc, y, s, n_boot=300, seed=3, stratify=y)
    c = bootstrap_ci(roc_auc, y, s, n_boot=300, seed=4, stratify=y)
    assert a == b and a != c
    assert a.low <= a.estimate <= a.high and a.low < a.high
    assert a.estimate == pytest.approx(roc_auc_score(y, s))
    assert a.n_boot == 300 and a.n_failed == 0 and a.n_valid == 300
    assert a.as_tuple() == (a.low, a.high, a.estimate)
    assert set(a.to_dict()) == {"estimate", "low", "high", "n_boot", "n_failed", "alpha"}
    wide = bootstrap_ci(roc_auc, y, s, n_boot=300, seed=3, stratify=y, alpha=0.01)
    assert wide.low <= a.low and wide.high >= a.high


def test_bootstrap_counts_failed_resamples():
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    s = np.linspace(0.9, 0.1, 8)
    r = bootstrap_ci(roc_auc, y, s, n_boot=200, seed=0, max_failed_frac=0.9)
    # P(no positive in a resample) = (7/8)^8 ≈ 0.34
    assert 30 < r.n_failed < 110
    with pytest.raises(BrainAlignError, match="resamples failed.*AUC is undefined"):
        bootstrap_ci(roc_auc, y, s, n_boot=200, seed=0, max_failed_frac=0.1)
    assert bootstrap_ci(roc_auc, y, s, n_boot=200, seed=0, stratify=y).n_failed == 0


def test_bootstrap_metrics_matches_bootstrap_ci_and_stratifies_groups():
    y, s, g = _audit_case(21)
    strat = np.column_stack([y, g])
    many = bootstrap_metrics(evaluate_binary, y, s, g, n_boot=200, seed=5, stratify=strat)
    assert set(many) == {"auc", "acc", "sen", "spc", "dpd", "deodds", "es_auc"}
    one = bootstrap_ci(lambda yy, ss, gg: evaluate_binary(yy, ss, gg)["dpd"], y, s, g,
                       n_boot=200, seed=5, stratify=strat)
    assert many["dpd"] == one
    for key in ("auc", "acc", "sen", "spc"):
        assert many[key].low <= many[key].estimate <= many[key].high
    # gaps over groups are biased under resampling: the interval need not contain the estimate
    for key in ("dpd", "deodds", "es_auc"):
        assert 0.0 <= many[key].low <= many[key].high <= 1.0


def test_bootstrap_bad_arguments():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(BrainAlignError, match="length mismatch"):
        bootstrap_ci(roc_auc, y, np.ones(3))
    with pytest.raises(BrainAlignError, match="n_boot"):
        bootstrap_ci(roc_auc, y, y, n_boot=0)
    with pytest.raises(BrainAlignError, match="alpha"):
        bootstrap_ci(roc_auc, y, y, alpha=1.5)
    with pytest.raises(BrainAlignError, match="stratify"):
        bootstrap_ci(roc_auc, y, y, stratify=[0, 1])
    with pytest.raises(BrainAlignError, match="dict"):
        bootstrap_metrics(roc_auc, y, y)
    with pytest.raises(UndefinedMetricError):  # the full-data estimate fails: not counted, raised
        bootstrap_ci(roc_auc, np.zeros(4, int), y)


# --------------------------------------------------------------------------- retrieval


def test_recall_at_k_hand():
    sim = np.array([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.3, 0.3, 0.2]])
    assert retrieval_ranks(sim).tolist() == [1, 2, 3]
    assert recall_at_k(sim, ks=(1, 2, 3)) == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@3": 1.0}
    assert retrieval_ranks(sim, targets=np.array([0, 0, 1])).tolist() == [1, 1, 2]  # q2: tie with item 0 loses


def test_recall_ties_pessimistic_and_multi_target():
    assert retrieval_ranks(np.full((2, 2), 0.5)).tolist() == [2, 2]
    sim = np.array([[0.1, 0.5, 0.9, 0.3], [0.4, 0.4, 0.2, 0.1]])
    targets = np.array([[True, True, False, False], [False, True, True, False]])
    # q0: best correct 0.5 → one higher (0.9) → rank 2; q1: best correct 0.4 ties with wrong item 0 → rank 2
    assert retrieval_ranks(sim, targets).tolist() == [2, 2]
    targets[1, 0] = True  # the tie is now with a correct item
    assert retrieval_ranks(sim, targets).tolist() == [2, 1]
    assert recall_at_k(sim, targets, ks=(1, 2)) == {"R@1": 0.5, "R@2": 1.0}


@pytest.mark.parametrize("seed", range(5))
def test_recall_equals_sklearn_top_k(seed):
    rng = np.random.default_rng(seed)
    n_query, n_item = 40, 60
    sim = rng.normal(size=(n_query, n_item))
    target = rng.integers(0, n_item, n_query)
    got = recall_at_k(sim, target, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert got[f"R@{k}"] == pytest.approx(
            top_k_accuracy_score(target, sim, k=k, labels=np.arange(n_item)), abs=1e-12)
    diag = recall_at_k(sim[:, :n_query])
    assert diag["R@5"] == pytest.approx(top_k_accuracy_score(np.arange(n_query), sim[:, :n_query], k=5), abs=1e-12)
    as_matrix = np.zeros((n_query, n_item), dtype=bool)
    as_matrix[np.arange(n_query), target] = True
    assert recall_at_k(sim, as_matrix) == got


def test_retrieval_bad_input():
    with pytest.raises(BrainAlignError, match="NaN"):
        recall_at_k(np.array([[np.nan, 1.0], [0.0, 1.0]]))
    with pytest.raises(BrainAlignError, match="n_query <= n_item"):
        recall_at_k(np.zeros((3, 2)))
    with pytest.raises(BrainAlignError, match="no correct item"):
        recall_at_k(np.zeros((2, 2)), np.array([[True, False], [False, False]]))
    with pytest.raises(BrainAlignError, match="outside"):
        recall_at_k(np.zeros((2, 2)), np.array([0, 2]))
    with pytest.raises(BrainAlignError, match="ks must be positive"):
        recall_at_k(np.zeros((2, 2)), ks=(0,))
    with pytest.raises(BrainAlignError, match=r"\(n_query, n_item\)"):
        recall_at_k(np.zeros(3))


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: classification_metrics([0, 1, 1], [0.1, 0.2]), "length mismatch: y_true has 3, y_score has 2"),
        (lambda: classification_metrics([0, 1], [0.1, np.nan]), r"y_score contains 1 NaN/inf.*\[1\]"),
        (lambda: classification_metrics([0, 1, 2], [0.1, 0.2, 0.3]), r"labels 0/1; found other values \[2\]"),
        (lambda: classification_metrics(["ASD", "TC"], [0.1, 0.2]), r"labels 0/1.*'ASD'"),
        (lambda: classification_metrics([0, 0], [0.1, 0.2]), "AUC is undefined: only label 0"),
        (lambda: classification_metrics([], []), "y_true is empty"),
        (lambda: classification_metrics([0, 1], [-2.0, 3.0]), "probabilities of class 1 in \\[0, 1\\]"),
        (lambda: classification_metrics([[0, 1]], [[0.1, 0.2]]), "must be 1-D"),
        (lambda: roc_auc([1, 1, 1], [0.1, 0.2, 0.3]), "only label 1 among 3"),
        (lambda: demographic_parity_difference([0, 1], [0, 1], ["a", "a"]), "single value 'a'"),
        (lambda: equalized_odds_difference([0, 1, 1], [0, 1, 1], ["a", "b"]), "groups has 2, y_true has 3"),
        (lambda: demographic_parity_difference([0, 1], [0, 0.5], ["a", "b"]), "y_pred must hold labels 0/1"),
        (lambda: es_auc([0, 1, 0], [0.1, 0.2, 0.3], ["a", None, "b"]), "groups contains 1 missing"),
        (lambda: es_auc([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.1], ["a", "a", "b", "b"]), None),
        (lambda: es_auc([0, 1, 0, 0], [0.1, 0.2, 0.3, 0.1], ["a", "a", "b", "b"]),
         "ES-AUC needs both labels in every group; AUC is undefined for group 'b': only label 0"),
        (lambda: fairness_metrics([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], [1, 1, 1, 1]), "at least 2 groups"),
    ],
)
def test_bad_input_errors(call, match):
    if match is None:  # a valid call, as a control
        call()
        return
    with pytest.raises(BrainAlignError, match=match):
        call()


def test_errors_are_brainalign_and_value_errors():
    with pytest.raises(ValueError):
        roc_auc([0, 0], [0.1, 0.2])
    assert issubclass(UndefinedMetricError, BrainAlignError)


def test_bootstrap_metrics_undefined_nan_keeps_other_keys():
    from brainalign.evaluation.metrics import bootstrap_metrics, evaluate_binary
    import functools
    import warnings

    rng = np.random.default_rng(3)
    y = np.array([0, 1] * 10)
    score = np.clip(y * 0.3 + rng.uniform(0, 0.7, 20), 0, 1)
    groups = np.array(["a"] * 18 + ["b"] * 2)  # group b has one label only: ES-AUC undefined
    groups[18:] = "b"
    y[18:] = 0
    lenient = functools.partial(evaluate_binary, strict=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BrainAlignError, match="es_auc"):
            bootstrap_metrics(lenient, y, score, groups, n_boot=40, stratify=y)
        res = bootstrap_metrics(lenient, y, score, groups, n_boot=40, stratify=y, undefined="nan")
    assert np.isnan(res["es_auc"].low) and res["es_auc"].n_failed == 40
    assert np.isfinite(res["auc"].low) and res["auc"].low <= res["auc"].estimate <= res["auc"].high
