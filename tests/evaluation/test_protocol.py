"""The person-grouped held-out + K-fold protocol."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainalign.errors import BrainAlignError
from brainalign.evaluation.protocol import Fold, Splits, describe_splits, make_splits


def _cohort(seed: int = 0, n_persons: int = 240, p_pos: float = 0.4):
    """Persons with 1-3 scans; label and site are per person; sites unbalanced."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n_persons) < p_pos).astype(int)
    site = rng.choice(["NYU", "UCLA", "UM", "KKI"], n_persons, p=[0.4, 0.3, 0.2, 0.1])
    n_scans = rng.integers(1, 4, n_persons)
    person = np.repeat([f"sub-{i:04d}" for i in range(n_persons)], n_scans)
    return np.repeat(label, n_scans), person, np.repeat(site, n_scans)


def _eval_sets(splits: Splits) -> list[np.ndarray]:
    return ([splits.test] if splits.has_test else []) + [f.val for f in splits.folds]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("use_site", [False, True])
def test_no_person_in_two_splits_and_every_index_once(seed, use_site):
    y, person, site = _cohort(seed)
    s = make_splits(y, person, stratify_extra=site if use_site else None, seed=seed)
    s.check_no_leakage(person)
    persons_test = set(person[s.test])
    for fold in s.folds:
        tr, va = set(person[fold.train]), set(person[fold.val])
        assert not tr & va and not tr & persons_test and not va & persons_test
        assert np.array_equal(np.sort(np.concatenate([fold.train, fold.val, s.test])), np.arange(len(y)))
    used = np.concatenate(_eval_sets(s))
    assert np.array_equal(np.sort(used), np.arange(len(y)))  # test + val folds: each scan exactly once


def test_stratification_and_sizes():
    y, person, _ = _cohort(1, n_persons=400)
    s = make_splits(y, person, test_size=0.2, n_folds=5, seed=0)
    overall = y.mean()
    for idx in _eval_sets(s):
        assert abs(y[idx].mean() - overall) < 0.04
    n_persons = len(set(person))
    assert len(set(person[s.test])) == pytest.approx(n_persons / 5, rel=0.1)
    assert s.n_folds == 5 and s.params["test_fraction_nominal"] == 0.2
    s8 = make_splits(y, person, test_size=0.125, n_folds=5, seed=0)
    assert len(set(person[s8.test])) == pytest.approx(n_persons / 8, rel=0.15)


def test_deterministic_by_seed():
    y, person, site = _cohort(2)
    a = make_splits(y, person, stratify_extra=site, seed=7)
    b = make_splits(y, person, stratify_extra=site, seed=7)
    c = make_splits(y, person, stratify_extra=site, seed=8)
    assert a == b and a.to_dict() == b.to_dict()
    assert a != c


def _site_imbalance(s: Splits, y, site) -> float:
    """Mean absolute deviation of (label, site) cell shares in each evaluation set from the overall shares."""
    keys = pd.Series([f"{a}|{b}" for a, b in zip(y, site, strict=True)])
    overall = keys.value_counts(normalize=True)
    devs = [(keys.iloc[idx].value_counts(normalize=True).reindex(overall.index, fill_value=0) - overall).abs().mean()
            for idx in _eval_sets(s)]
    return float(np.mean(devs))


def test_site_stratification_balances_sites():
    with_site, without = [], []
    for seed in range(4):
        y, person, site = _cohort(10 + seed, n_persons=300)
        s = make_splits(y, person, stratify_extra=site, seed=seed)
        s.check_no_leakage(person)
        assert s.params["stratified_on"] == "y+extra"
        for idx in _eval_sets(s):
            for name in np.unique(site):  # every site in every evaluation set, share within 5 points
                assert abs((site[idx] == name).mean() - (site == name).mean()) < 0.05
        with_site.append(_site_imbalance(s, y, site))
        without.append(_site_imbalance(make_splits(y, person, seed=seed), y, site))
    assert np.mean(with_site) < 0.6 * np.mean(without)


def test_no_test_set():
    y, person, _ = _cohort(3)
    s = make_splits(y, person, test_size=0, n_folds=4, seed=0)
    assert not s.has_test and s.test.size == 0 and s.test.dtype == np.int64
    assert np.array_equal(np.sort(np.concatenate([f.val for f in s.folds])), np.arange(len(y)))
    s.check_no_leakage(person)


def test_string_labels_and_int_person_ids():
    rng = np.random.default_rng(0)
    person = np.repeat(np.arange(60), 2)
    y = np.where(np.repeat(rng.random(60) < 0.5, 2), "ASD", "TC")
    s = make_splits(y, person, n_folds=3, seed=0)
    s.check_no_leakage(person)


def test_round_trip_json():
    y, person, site = _cohort(4)
    s = make_splits(y, person, stratify_extra=site, seed=1)
    d = json.loads(json.dumps(s.to_dict()))
    back = Splits.from_dict(d)
    assert back == s and back.params == s.params
    with pytest.raises(BrainAlignError, match="'test' and 'folds'"):
        Splits.from_dict({"folds": []})


def test_check_no_leakage_detects_shared_person():
    person = np.array(["a", "a", "b", "b", "c", "c", "d", "d"])
    ok = Splits(np.array([0, 1]), [Fold([2, 3], [4, 5, 6, 7]), Fold([4, 5, 6, 7], [2, 3])])
    ok.check_no_leakage(person)
    leaky = Splits(np.array([0]), [Fold([1, 2, 3], [4, 5, 6, 7])])  # person "a" in test and train
    with pytest.raises(BrainAlignError, match=r"test and fold 0 train share 1 person\(s\), e.g. \['a'\]"):
        leaky.check_no_leakage(person)
    in_fold = Splits(np.zeros(0, int), [Fold([0, 2, 3], [1, 4, 5, 6, 7])])
    with pytest.raises(BrainAlignError, match="fold 0 train and fold 0 val share 1 person"):
        in_fold.check_no_leakage(person)
    with pytest.raises(BrainAlignError, match="outside"):
        Splits(np.array([9]), []).check_no_leakage(person)
    with pytest.raises(BrainAlignError, match="share 1 scan"):
        Splits(np.array([0]), [Fold([0], [2])]).check_no_leakage(person)


def test_describe_splits():
    y, person, site = _cohort(5)
    s = make_splits(y, person, seed=0)
    d = describe_splits(s, y, person)
    assert list(d.columns) == ["split", "fold", "part", "label", "n_scans", "n_persons", "frac_scans"]
    assert d.loc[d.split == "all", "n_scans"].sum() == len(y)
    assert d.loc[d.split == "test", "n_scans"].sum() == len(s.test)
    assert d.loc[d.part == "val", "n_scans"].sum() + len(s.test) == len(y)
    assert d.groupby("split")["frac_scans"].sum().round(12).eq(1).all()
    assert d.loc[d.split == "fold2/val", "fold"].eq(2).all() and d.loc[d.split == "test", "fold"].isna().all()
    e = describe_splits(s, y, person, extra=site)
    assert "extra" in e.columns and len(e) == len(d) * 4  # 4 sites, every label has every site here
    assert e.loc[e.split == "all", "n_persons"].sum() == len(set(person))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_folds": 5, "n_persons": 4}, "only 4 persons"),
        ({"n_folds": 5, "n_pos": 5}, r"class 1 has only 5 person\(s\).*at least 6 persons per class"),
        ({"n_folds": 5, "n_pos": 5, "test_size": 0}, None),
        ({"test_size": 1.0}, r"test_size must be 0 \(no held-out set\) or in \(0, 1\)"),
        ({"test_size": -0.1}, "test_size must be 0"),
        ({"test_size": 0.8}, "too large"),
        ({"test_size": "0.2"}, "must be a number"),
        ({"n_folds": 1}, "n_folds must be an integer >= 2"),
    ],
)
def test_bad_arguments(kwargs, match):
    n_persons = kwargs.pop("n_persons", 40)
    n_pos = kwargs.pop("n_pos", n_persons // 2)
    person = np.arange(n_persons)
    y = (np.arange(n_persons) < n_pos).astype(int)
    if match is None:  # control: enough persons without a test set
        make_splits(y, person, **kwargs).check_no_leakage(person)
        return
    with pytest.raises(BrainAlignError, match=match):
        make_splits(y, person, **kwargs)


def test_bad_inputs():
    y = np.array([0, 1] * 20)
    person = np.arange(40)
    with pytest.raises(BrainAlignError, match="length mismatch: y has 40, groups_person has 39"):
        make_splits(y, person[:-1])
    with pytest.raises(BrainAlignError, match="length mismatch.*stratify_extra has 3"):
        make_splits(y, person, stratify_extra=["a", "b", "c"])
    y_nan = y.astype(float)
    y_nan[[3, 7]] = np.nan
    with pytest.raises(BrainAlignError, match=r"y contains 2 missing value\(s\).*\[3, 7\]"):
        make_splits(y_nan, person)
    ids = person.astype(object)
    ids[0] = None
    with pytest.raises(BrainAlignError, match="groups_person contains 1 missing"):
        make_splits(y, ids)
    with pytest.raises(BrainAlignError, match="1-D"):
        make_splits(y.reshape(20, 2), person.reshape(20, 2))
    with pytest.raises(BrainAlignError, match="empty"):
        make_splits([], [])
