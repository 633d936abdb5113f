"""Logistic regression on the connectivity upper triangle: a strong linear baseline on ABIDE."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from brainalign.errors import BrainAlignError
from brainalign.models.base import Method, Task
from brainalign.models.registry import register_method


def fisher_z(x: np.ndarray) -> np.ndarray:
    """arctanh of correlations, clipped away from ±1 so it stays finite."""
    return np.arctanh(np.clip(x, -0.999999, 0.999999))


@register_method("logreg")
class FCLogisticRegression(Method):
    """L2 logistic regression on the Fisher-z FC upper triangle (features standardised on training scans).

    Parameters
    ----------
    C : float
        Inverse regularisation strength.
    fisher : bool or None
        Apply the Fisher z-transform (arctanh) first.  None (default): only when every training value lies in
        [-1, 1], i.e. the features are correlations (some shipped FC sets are not).
    max_iter : int
    seed : int
    """

    def __init__(self, C: float = 0.05, fisher: bool | None = None, max_iter: int = 2000, seed: int = 0):
        self.params: dict[str, Any] = {"C": C, "fisher": fisher, "max_iter": max_iter, "seed": seed}
        self.model_ = None

    def fit(self, task: Task, train: np.ndarray, val: np.ndarray | None = None) -> FCLogisticRegression:
        y = task.y[train]
        if np.unique(y).size < 2:
            raise BrainAlignError(f"logreg: the training split has one class only ({task.target}={y[0]})")
        p = self.params
        X = task.fc_upper[train]
        self.fisher_ = p["fisher"] if p["fisher"] is not None else bool(np.abs(X).max() <= 1.0)
        steps = [FunctionTransformer(fisher_z)] if self.fisher_ else []
        steps += [StandardScaler(), LogisticRegression(C=p["C"], max_iter=p["max_iter"], random_state=p["seed"])]
        self.model_ = make_pipeline(*steps).fit(X, y)
        return self

    def predict_proba(self, task: Task, idx: np.ndarray) -> np.ndarray:
        if self.model_ is None:
            raise BrainAlignError("logreg: predict_proba called before fit")
        return self.model_.predict_proba(task.fc_upper[idx])[:, 1]
