"""Task definition (target, positive class, sensitive groups, exclusions), the registry, the logreg baseline."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainalign.data.cohort import Cohort, CohortMeta, write_cohort
from brainalign.errors import BrainAlignError, CohortError
from brainalign.models import Task, available_methods, get_method


def toy_cohort(root, n=40, R=8, signal=1.5, seed=0, extra=None):
    """Connectivity cohort whose edge (0, 1) carries the diagnosis."""
    rng = np.random.default_rng(seed)
    dx = np.array(["control", "adhd"] * (n // 2))
    mats = []
    for d in dx:
        ts = rng.standard_normal((60, R))
        if d == "adhd":
            ts[:, 1] += signal * ts[:, 0]
        mats.append(np.corrcoef(ts.T))
    ph = pd.DataFrame({"scan_id": [f"s{i}" for i in range(n)], "subject_id": [f"p{i}" for i in range(n)],
                       "dx": dx, "sex": rng.choice(["male", "female"], n), "age": rng.uniform(7, 30, n)})
    if extra:
        for k, v in extra.items():
            ph[k] = v
    write_cohort(root, CohortMeta(name="toy", n_rois=R), ph, connectivity=mats)
    return Cohort.load(root)


def test_task_positive_class_and_groups(tmp_path):
    c = toy_cohort(tmp_path / "c")
    task = Task.from_cohort(c, "dx", "sex")
    assert (task.positive, task.negative) == ("adhd", "control")
    assert task.y.sum() == 20 and set(task.groups) <= {"male", "female"}
    assert Task.from_cohort(c, "dx", positive="control").positive == "control"
    assert task.fc_upper.shape == (40, 28)


def test_task_bad_inputs(tmp_path):
    c = toy_cohort(tmp_path / "c", extra={"site": ["a"] * 40, "grade": list(range(40))})
    with pytest.raises(CohortError, match="column 'diagnosis' is missing"):
        Task.from_cohort(c, "diagnosis")
    with pytest.raises(CohortError, match="column 'gender' is missing"):
        Task.from_cohort(c, "dx", "gender")
    with pytest.raises(BrainAlignError, match="exactly 2 classes, found 1"):
        Task.from_cohort(c, "site")
    with pytest.raises(BrainAlignError, match="exactly 2 classes, found 40"):
        Task.from_cohort(c, "grade")
    with pytest.raises(BrainAlignError, match="positive label 'autism' is not a value"):
        Task.from_cohort(c, "dx", positive="autism")
    with pytest.raises(BrainAlignError, match="sensitive column 'age' is continuous"):
        Task.from_cohort(c, "dx", "age")


def test_task_counts_exclusions(tmp_path):
    sex = np.array(["male", "female"] * 20, dtype=object)
    sex[:3] = None
    c = toy_cohort(tmp_path / "c")
    ph = c.phenotypes.copy()
    ph["sex"] = sex
    ph.to_csv(tmp_path / "c" / "phenotypes.csv", index=False)
    task = Task.from_cohort(Cohort.load(tmp_path / "c"), "dx", "sex")
    assert len(task) == 37 and task.excluded == {"missing sex": 3}


def test_registry():
    assert "logreg" in available_methods()
    with pytest.raises(BrainAlignError, match="unknown method 'neurolipp'.*logreg"):
        get_method("neurolipp")
    with pytest.raises(BrainAlignError, match="bad parameters for method 'logreg'"):
        get_method("logreg", depth=3)


def test_logreg_learns_planted_edge(tmp_path):
    c = toy_cohort(tmp_path / "c", n=80)
    task = Task.from_cohort(c, "dx", "sex")
    train, test = np.arange(0, 60), np.arange(60, 80)
    model = get_method("logreg").fit(task, train)
    score = model.predict_proba(task, test)
    assert score.shape == (20,) and ((score > 0.5) == task.y[test]).mean() >= 0.8
    with pytest.raises(BrainAlignError, match="one class only"):
        get_method("logreg").fit(task, np.flatnonzero(task.y == 1))
    with pytest.raises(BrainAlignError, match="before fit"):
        get_method("logreg").predict_proba(task, test)


def test_logreg_fisher_only_for_correlations(tmp_path):
    c = toy_cohort(tmp_path / "c", n=40)
    task = Task.from_cohort(c, "dx")
    assert get_method("logreg").fit(task, np.arange(40)).fisher_ is True
    task.__dict__["fc_upper"] = task.fc_upper * 3.0  # not correlations any more
    assert get_method("logreg").fit(task, np.arange(40)).fisher_ is False
