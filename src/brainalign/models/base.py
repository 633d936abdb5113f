"""The task a method learns (cohort + binary target + sensitive attribute) and the method interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from brainalign.data.cohort import Cohort
from brainalign.errors import BrainAlignError

#: Labels read as the negative (reference) class when choosing the positive class automatically.
CONTROL_LABELS = frozenset({"control", "controls", "hc", "healthy", "td", "typical", "tdc", "nc", "cn", "0", "2"})
MAX_SENSITIVE_LEVELS = 10


def label_string(value: Any) -> str:
    """Labels as strings, with integral floats written without '.0' (2.0 -> '2')."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass
class Task:
    """A binary classification task on a cohort, with an optional sensitive attribute.

    Build with :meth:`from_cohort`.  Scans missing the target or sensitive value are left out and
    counted in ``excluded``.

    Attributes
    ----------
    cohort : Cohort
        Only the scans used (rows with target and sensitive values).
    target, sensitive : str
        Column names (``sensitive`` may be None).
    positive, negative : str
        The labels mapped to 1 and 0.
    y : array (n,) of int
        1 for ``positive``.
    groups : array (n,) of str or None
        Sensitive attribute value per scan.
    excluded : dict
        ``{reason: count}`` of scans left out.
    """

    cohort: Cohort
    target: str
    sensitive: str | None
    positive: str
    negative: str
    y: np.ndarray
    groups: np.ndarray | None
    excluded: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_cohort(cls, cohort: Cohort, target: str, sensitive: str | None = None,
                    positive: str | None = None) -> Task:
        """Define the task; the positive class is ``positive`` or, if None, the label that is not a control label.

        Raises
        ------
        BrainAlignError
            Missing column, a target that is not binary, an unknown ``positive`` label, or a continuous
            sensitive column.
        """
        cols = [target] + ([sensitive] if sensitive else [])
        cohort.require_columns(cols)
        ph = cohort.phenotypes
        excluded: dict[str, int] = {}
        keep = np.ones(len(ph), dtype=bool)
        for col in cols:
            missing = ph[col].isna().to_numpy()
            if missing.any():
                excluded[f"missing {col}"] = int((missing & keep).sum())
                keep &= ~missing
        if not keep.any():
            raise BrainAlignError(f"no scan has both '{target}' and '{sensitive}' values")
        used = cohort.subset(np.flatnonzero(keep))
        labels = used.phenotypes[target].map(label_string)
        classes = sorted(labels.unique())
        if len(classes) != 2:
            raise BrainAlignError(
                f"target column '{target}' must have exactly 2 classes, found {len(classes)}: {classes[:10]}"
            )
        positive = cls._positive_class(classes, positive, target)
        negative = classes[0] if classes[1] == positive else classes[1]
        groups = None
        if sensitive:
            values = used.phenotypes[sensitive]
            if pd.api.types.is_float_dtype(values) and values.nunique() > MAX_SENSITIVE_LEVELS:
                raise BrainAlignError(
                    f"sensitive column '{sensitive}' is continuous ({values.nunique()} values); use a categorical "
                    f"column such as age_group (fairness metrics compare groups)"
                )
            groups = values.map(label_string).to_numpy(dtype=str)
        y = (labels == positive).to_numpy(dtype=int)
        return cls(used, target, sensitive, positive, negative, y, groups, excluded)

    @staticmethod
    def _positive_class(classes: list[str], positive: str | None, target: str) -> str:
        if positive is not None:
            if label_string(positive) not in classes:
                raise BrainAlignError(f"positive label '{positive}' is not a value of '{target}' {classes}")
            return label_string(positive)
        controls = [c for c in classes if c.lower() in CONTROL_LABELS]
        if len(controls) == 1:
            return classes[0] if classes[1] == controls[0] else classes[1]
        return classes[1]

    def __len__(self) -> int:
        return len(self.y)

    @cached_property
    def fc(self) -> np.ndarray:
        """(n, R, R) float32 connectivity of all scans, loaded once and shared by all folds and methods."""
        return self.cohort.connectivity_stack()

    @cached_property
    def fc_upper(self) -> np.ndarray:
        """(n, R(R-1)/2) connectivity upper triangles (k=1) of all scans."""
        iu = np.triu_indices(self.cohort.n_rois, k=1)
        return self.fc[:, iu[0], iu[1]]


class Method(ABC):
    """A learner evaluated by the benchmark runner.

    Subclasses set ``name`` through :func:`~brainalign.models.registry.register_method`, take their
    hyper-parameters as keyword arguments (plus ``seed``) and implement :meth:`fit` and :meth:`predict_proba`.
    Positions index ``task.cohort`` / ``task.y``.  The runner sets ``workdir`` (a folder for checkpoints and
    maps of this fold) before ``fit`` when it writes a run folder.
    """

    name: ClassVar[str] = "method"
    workdir: Path | None = None

    @abstractmethod
    def fit(self, task: Task, train: np.ndarray, val: np.ndarray | None = None) -> Method:
        """Learn from the scans at positions ``train``.  ``val`` (optional) are validation positions a method may
        use for model selection (e.g. ``select_epoch``), never to fit weights."""

    @abstractmethod
    def predict_proba(self, task: Task, idx: np.ndarray) -> np.ndarray:
        """(len(idx),) probability of the positive class."""

    def get_params(self) -> dict[str, Any]:
        return dict(vars(self).get("params", {}))
