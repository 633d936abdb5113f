"""Metrics: binary classification, group fairness, cross-modal retrieval, and bootstrap intervals.

Conventions
-----------
- ``y_true`` : (n,) labels in {0, 1} (bool, int, or float 0./1.).
- ``y_score`` : (n,) probability of class 1.  AUC-only functions accept any real score.
- ``y_pred`` : (n,) predicted labels in {0, 1}; from scores, ``y_pred = y_score >= threshold`` with
  ``threshold = 0.5`` (``>=``, as in FairCLIP's evaluation code; exact ties at 0.5 go to class 1).
- ``groups`` : (n,) sensitive-attribute values of any hashable type (str, int, ...); no missing values.
- Every metric is a fraction in [0, 1]; :func:`to_percent` converts for tables (the papers report percent).
- Torch tensors are accepted wherever an array is (they are detached and moved to the CPU).

Policies for edge cases
-----------------------
- Bad input (length mismatch, NaN/inf, labels outside {0, 1}, empty input, missing group values, scores
  outside [0, 1] when they are thresholded) raises :class:`~brainalign.errors.BrainAlignError`.
- A metric that is undefined on valid input (AUC with one class only, ES-AUC with a one-class group, a
  fairness metric with fewer than two groups) raises :class:`UndefinedMetricError`, a BrainAlignError,
  naming the class or group.  :func:`evaluate_binary` and :func:`fairness_metrics` with ``strict=False``
  return NaN for such metrics instead and emit an :class:`UndefinedMetricWarning`.
- Demographic parity and equalized odds equal fairlearn's functions (``method="between_groups"``,
  ``agg="worst_case"``), including fairlearn's treatment of a group with no positive (negative) labels:
  its TPR (FPR) counts as 0.  ``equalized_odds_difference(..., undefined_rate="raise" | "skip")`` changes
  that.  Unlike fairlearn (which returns 0), a single group raises: a disparity needs two groups.
- A group with a single member is allowed (fairlearn allows it); ``fairness_metrics`` reports every
  group's ``n`` so that tiny groups are visible.
- AUC is the Mann–Whitney statistic with average ranks for ties, which equals
  ``sklearn.metrics.roc_auc_score`` (tested) and is ~25x faster, which matters under the bootstrap.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from brainalign.errors import BrainAlignError
from brainalign.utils import preview, to_numpy

__all__ = [
    "BootstrapResult",
    "UndefinedMetricError",
    "UndefinedMetricWarning",
    "bootstrap_ci",
    "bootstrap_metrics",
    "classification_metrics",
    "demographic_parity_difference",
    "equalized_odds_difference",
    "es_auc",
    "evaluate_binary",
    "fairness_metrics",
    "predict_labels",
    "recall_at_k",
    "retrieval_ranks",
    "roc_auc",
    "to_percent",
]

CLASSIFICATION_KEYS = ("auc", "acc", "sen", "spc")
FAIRNESS_KEYS = ("dpd", "deodds", "es_auc")
_PROB_TOL = 1e-6  # softmax/sigmoid outputs may overshoot [0, 1] by rounding


class UndefinedMetricError(BrainAlignError):
    """A metric cannot be computed on this (valid) input, e.g. AUC when only one class is present."""


class UndefinedMetricWarning(UserWarning):
    """A metric was undefined and reported as NaN (``strict=False``)."""


# ----------------------------------------------------------------------------------------------------------
# input checks


def _as_1d(x: Any, name: str) -> np.ndarray:
    arr = to_numpy(x)
    if arr.ndim != 1:
        raise BrainAlignError(f"{name} must be 1-D of shape (n,); got shape {arr.shape}")
    if arr.size == 0:
        raise BrainAlignError(f"{name} is empty: metrics need at least one sample")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise BrainAlignError(f"{name} contains {int(bad.sum())} NaN/inf value(s), "
                              f"at positions {preview(np.flatnonzero(bad))}")


def _check_binary(x: Any, name: str) -> np.ndarray:
    """(n,) labels in {0, 1} → int8; errors name the offending values."""
    arr = _as_1d(x, name)
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.dtype.kind == "O" and not any(isinstance(v, str) for v in arr):
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError):
            pass
    if arr.dtype.kind not in "iuf":
        raise BrainAlignError(f"{name} must hold labels 0/1 (bool, int or float); got dtype {arr.dtype} with "
                              f"values {preview(pd.unique(arr))}.  Map labels to 0/1 first, "
                              f"e.g. y = (dx == 'ASD').astype(int)")
    if arr.dtype.kind == "f":
        _check_finite(arr, name)
    ok = (arr == 0) | (arr == 1)
    if not ok.all():
        raise BrainAlignError(f"{name} must hold labels 0/1; found other values {preview(np.unique(arr[~ok]))} "
                              f"({int((~ok).sum())} of {arr.size} samples)")
    return arr.astype(np.int8)


def _check_scores(x: Any, name: str = "y_score") -> np.ndarray:
    arr = _as_1d(x, name)
    if arr.dtype.kind not in "biuf":
        raise BrainAlignError(f"{name} must be numeric scores; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    _check_finite(arr, name)
    return arr


def _check_probabilities(s: np.ndarray, threshold: float) -> None:
    """A threshold in (0, 1) implies probabilities: catch logits passed by mistake."""
    if 0.0 < threshold < 1.0 and (s.min() < -_PROB_TOL or s.max() > 1.0 + _PROB_TOL):
        raise BrainAlignError(f"y_score must be probabilities of class 1 in [0, 1] to be thresholded at "
                              f"{threshold}; got values in [{s.min():.4g}, {s.max():.4g}].  "
                              f"Apply a sigmoid/softmax to logits first")


def _check_lengths(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise BrainAlignError("length mismatch: " + ", ".join(f"{k} has {v}" for k, v in lengths.items()))
    return next(iter(lengths.values()))


def _factorize(x: np.ndarray, name: str) -> tuple[np.ndarray, list[Any]]:
    """Integer codes (n,) and sorted levels of any hashable values; missing values raise."""
    try:
        codes, levels = pd.factorize(x, sort=True)
    except TypeError:  # mixed, unorderable types: keep order of appearance
        codes, levels = pd.factorize(x, sort=False)
    if (codes < 0).any():
        missing = np.flatnonzero(codes < 0)
        raise BrainAlignError(f"{name} contains {missing.size} missing value(s) (None/NaN) at positions "
                              f"{preview(missing)}; fill or drop them first")
    return codes.astype(np.intp), [v.item() if isinstance(v, np.generic) else v for v in levels]


def _group_codes(groups: Any, n: int | None = None, *, min_groups: int = 2) -> tuple[np.ndarray, list[Any]]:
    arr = _as_1d(groups, "groups")
    if n is not None and arr.size != n:
        raise BrainAlignError(f"length mismatch: groups has {arr.size}, y_true has {n}")
    codes, levels = _factorize(arr, "groups")
    if len(levels) < min_groups:
        raise UndefinedMetricError(f"fairness metrics need at least {min_groups} groups; groups has the single "
                                   f"value {levels[0]!r} ({arr.size} samples)")
    return codes, levels


def _prepare(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _check_binary(y_true, "y_true")
    s = _check_scores(y_score)
    _check_lengths(y_true=y, y_score=s)
    return y, s


def predict_labels(y_score: Any, threshold: float = 0.5) -> np.ndarray:
    """Threshold probabilities into labels.

    Parameters
    ----------
    y_score : array-like, shape (n,)
        Probability of class 1.
    threshold : float
        ``y_pred = y_score >= threshold``.

    Returns
    -------
    ndarray of int8, shape (n,)
    """
    s = _check_scores(y_score)
    _check_probabilities(s, threshold)
    return (s >= threshold).astype(np.int8)


# ----------------------------------------------------------------------------------------------------------
# classification


def _auc(y: np.ndarray, s: np.ndarray, where: str = "") -> float:
    """Mann–Whitney AUC with average ranks for ties (= trapezoidal ROC AUC); inputs already checked."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        have, lack = ("0", "1") if n_pos == 0 else ("1", "0")
        raise UndefinedMetricError(f"AUC is undefined{where}: only label {have} among {y.size} sample(s), "
                                   f"no label {lack}")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve; equals ``sklearn.metrics.roc_auc_score`` (ties count one half).

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Labels in {0, 1}; both must be present.
    y_score : array-like, shape (n,)
        Any real score, larger meaning class 1.

    Returns
    -------
    float
        AUC in [0, 1].
    """
    y, s = _prepare(y_true, y_score)
    return _auc(y, s)


def _undefined(strict: bool, fn: Callable[[], float]) -> float:
    """Run ``fn``; outside strict mode an undefined metric becomes NaN with a warning."""
    try:
        return fn()
    except UndefinedMetricError as err:
        if strict:
            raise
        warnings.warn(f"{err}; reported as NaN", UndefinedMetricWarning, stacklevel=3)
        return math.nan


def _ratio(num: int, den: int, what: str) -> float:
    if den == 0:
        raise UndefinedMetricError(f"{what} is undefined: no samples with the required label")
    return num / den


def _classification(y: np.ndarray, s: np.ndarray, threshold: float, strict: bool) -> dict[str, float]:
    pred = s >= threshold
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    tp = int((pred & pos).sum())
    tn = int((~pred & ~pos).sum())
    return {
        "auc": _undefined(strict, lambda: _auc(y, s)),
        "acc": float((pred == pos).mean()),
        "sen": _undefined(strict, lambda: _ratio(tp, n_pos, "sensitivity (no label 1)")),
        "spc": _undefined(strict, lambda: _ratio(tn, n_neg, "specificity (no label 0)")),
    }


def classification_metrics(y_true: Any, y_score: Any, threshold: float = 0.5, *,
                           strict: bool = True) -> dict[str, float]:
    """AUC, accuracy, sensitivity and specificity.

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Labels in {0, 1}.
    y_score : array-like, shape (n,)
        Probability of class 1, in [0, 1].
    threshold : float
        Predictions are ``y_score >= threshold``.
    strict : bool
        If True (default) a one-class ``y_true`` raises :class:`UndefinedMetricError`; if False the
        undefined metrics (auc and sen or spc) are NaN, with an :class:`UndefinedMetricWarning`.

    Returns
    -------
    dict
        ``auc``, ``acc``, ``sen`` (TPR), ``spc`` (TNR), fractions in [0, 1].
    """
    y, s = _prepare(y_true, y_score)
    _check_probabilities(s, threshold)
    return _classification(y, s, threshold, strict)


# ----------------------------------------------------------------------------------------------------------
# fairness


def _group_counts(y: np.ndarray, p: np.ndarray, codes: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Per-group counts (float64, exact integers) from one pass of bincount."""
    def count(w: np.ndarray | None) -> np.ndarray:
        return np.bincount(codes, weights=w, minlength=n_groups)

    yf, pf = y.astype(np.float64), p.astype(np.float64)
    n, n_pos, n_pred, tp = count(None).astype(np.float64), count(yf), count(pf), count(yf * pf)
    return {"n": n, "n_pos": n_pos, "n_neg": n - n_pos, "n_pred": n_pred, "tp": tp, "fp": n_pred - tp}


def _rates(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-group selection rate, TPR and FPR; NaN where a denominator is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"positive_rate": c["n_pred"] / c["n"],
                "tpr": np.where(c["n_pos"] > 0, c["tp"] / c["n_pos"], np.nan),
                "fpr": np.where(c["n_neg"] > 0, c["fp"] / c["n_neg"], np.nan)}


def _eod_from_rates(rates: dict[str, np.ndarray], levels: list[Any], undefined_rate: str) -> float:
    gaps = []
    for key, lacking in (("tpr", "positive (1)"), ("fpr", "negative (0)")):
        rate = rates[key]
        bad = np.isnan(rate)
        if bad.any():
            if undefined_rate == "raise":
                names = [levels[i] for i in np.flatnonzero(bad)]
                raise UndefinedMetricError(f"equalized odds: {key.upper()} is undefined for group(s) "
                                           f"{preview(names)}: no {lacking} labels in the group")
            rate = np.where(bad, 0.0, rate) if undefined_rate == "zero" else rate[~bad]
        if rate.size:
            gaps.append(rate.max() - rate.min())
    if not gaps:
        raise UndefinedMetricError("equalized odds is undefined: no group has both labels")
    return float(max(gaps))


def _check_undefined_rate(undefined_rate: str) -> None:
    if undefined_rate not in ("zero", "raise", "skip"):
        raise BrainAlignError(f"undefined_rate must be 'zero', 'raise' or 'skip'; got {undefined_rate!r}")


def demographic_parity_difference(y_true: Any, y_pred: Any, groups: Any) -> float:
    """Largest gap in selection rate P(ŷ = 1 | g) between groups.

    Equals ``fairlearn.metrics.demographic_parity_difference(y_true, y_pred, sensitive_features=groups)``.

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Labels in {0, 1} (checked, unused by the formula; kept for fairlearn's signature).
    y_pred : array-like, shape (n,)
        Predicted labels in {0, 1}.
    groups : array-like, shape (n,)
        Sensitive attribute, at least two distinct values.

    Returns
    -------
    float
        max_g P(ŷ=1|g) − min_g P(ŷ=1|g), in [0, 1].
    """
    y = _check_binary(y_true, "y_true")
    p = _check_binary(y_pred, "y_pred")
    n = _check_lengths(y_true=y, y_pred=p)
    codes, levels = _group_codes(groups, n)
    rate = _rates(_group_counts(y, p, codes, len(levels)))["positive_rate"]
    return float(rate.max() - rate.min())


def equalized_odds_difference(y_true: Any, y_pred: Any, groups: Any, *,
                              undefined_rate: Literal["zero", "raise", "skip"] = "zero") -> float:
    """Largest between-group gap in TPR or FPR (the worse of the two).

    Equals ``fairlearn.metrics.equalized_odds_difference(y_true, y_pred, sensitive_features=groups)``
    (``method="between_groups"``, ``agg="worst_case"``) with the default ``undefined_rate="zero"``.

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Labels in {0, 1}.
    y_pred : array-like, shape (n,)
        Predicted labels in {0, 1}.
    groups : array-like, shape (n,)
        Sensitive attribute, at least two distinct values.
    undefined_rate : {"zero", "raise", "skip"}
        A group without positive labels has no TPR (without negatives, no FPR).  ``"zero"``: count it as
        0, as fairlearn does (this can create a gap out of nothing); ``"raise"``: raise
        :class:`UndefinedMetricError` naming the groups; ``"skip"``: leave such groups out of that rate's gap.

    Returns
    -------
    float
        max(max_g TPR_g − min_g TPR_g, max_g FPR_g − min_g FPR_g), in [0, 1].
    """
    _check_undefined_rate(undefined_rate)
    y = _check_binary(y_true, "y_true")
    p = _check_binary(y_pred, "y_pred")
    n = _check_lengths(y_true=y, y_pred=p)
    codes, levels = _group_codes(groups, n)
    return _eod_from_rates(_rates(_group_counts(y, p, codes, len(levels))), levels, undefined_rate)


def _group_aucs(y: np.ndarray, s: np.ndarray, codes: np.ndarray, levels: list[Any],
                strict: bool = True) -> np.ndarray:
    out = np.empty(len(levels))
    for g, level in enumerate(levels):
        mask = codes == g
        out[g] = _undefined(strict, lambda m=mask, lv=level: _auc(y[m], s[m], where=f" for group {lv!r}"))
    return out


def _es_auc(y: np.ndarray, s: np.ndarray, codes: np.ndarray, levels: list[Any], alpha: float = 1.0) -> float:
    overall = _auc(y, s)
    try:
        group_auc = _group_aucs(y, s, codes, levels)
    except UndefinedMetricError as err:
        raise UndefinedMetricError(f"ES-AUC needs both labels in every group; {err}") from err
    return float(overall / (1.0 + alpha * np.abs(group_auc - overall).sum()))


def es_auc(y_true: Any, y_score: Any, groups: Any, *, alpha: float = 1.0) -> float:
    """Equity-scaled AUC of FairCLIP: AUC / (1 + alpha · Σ_g |AUC_g − AUC|).

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Labels in {0, 1}; every group must contain both.
    y_score : array-like, shape (n,)
        Any real score, larger meaning class 1.
    groups : array-like, shape (n,)
        Sensitive attribute, at least two distinct values.
    alpha : float
        Weight of the disparity (FairCLIP's default 1).

    Returns
    -------
    float
        ES-AUC in [0, 1]; equals the AUC when every group's AUC equals the overall AUC.

    Raises
    ------
    UndefinedMetricError
        When a group holds only one label (its AUC is undefined); the message names the group.
    """
    y, s = _prepare(y_true, y_score)
    codes, levels = _group_codes(groups, y.size)
    return _es_auc(y, s, codes, levels, alpha)


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _per_group(y: np.ndarray, s: np.ndarray, pred: np.ndarray, codes: np.ndarray, levels: list[Any],
               counts: dict[str, np.ndarray], rates: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    keys = [str(v) for v in levels]
    if len(set(keys)) != len(keys):
        raise BrainAlignError(f"group values {preview(levels)} collide when written as text; recode them")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)  # reported once, by es_auc
        aucs = _group_aucs(y, s, codes, levels, strict=False)
    correct = np.bincount(codes, weights=(pred == y).astype(np.float64), minlength=len(levels))
    return {key: {"n": int(counts["n"][g]), "n_pos": int(counts["n_pos"][g]), "auc": _opt(aucs[g]),
                  "acc": float(correct[g] / counts["n"][g]), "tpr": _opt(rates["tpr"][g]),
                  "fpr": _opt(rates["fpr"][g]), "positive_rate": float(rates["positive_rate"][g])}
            for g, key in enumerate(keys)}


def fairness_metrics(y_true: Any, y_score: Any, groups: Any, threshold: float = 0.5, *,
                     strict: bool = True) -> dict[str, Any]:
    """DPD, DEOdds and ES-AUC, plus per-group statistics.

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Labels in {0, 1}.
    y_score : array-like, shape (n,)
        Probability of class 1, in [0, 1].
    groups : array-like, shape (n,)
        Sensitive attribute (hashable values), at least two distinct values.
    threshold : float
        Predictions are ``y_score >= threshold``.
    strict : bool
        If False, an undefined ES-AUC (a one-class group) is NaN with a warning instead of an error.

    Returns
    -------
    dict
        ``dpd``, ``deodds`` (fairlearn semantics: a group without positives has TPR 0), ``es_auc``
        (fractions), and ``per_group``: ``{str(group): {"n", "n_pos", "auc", "acc", "tpr", "fpr",
        "positive_rate"}}``, where an undefined per-group value is None (JSON null).
    """
    y, s = _prepare(y_true, y_score)
    _check_probabilities(s, threshold)
    codes, levels = _group_codes(groups, y.size)
    pred = (s >= threshold).astype(np.int8)
    counts = _group_counts(y, pred, codes, len(levels))
    rates = _rates(counts)
    return {
        "dpd": float(rates["positive_rate"].max() - rates["positive_rate"].min()),
        "deodds": _eod_from_rates(rates, levels, "zero"),
        "es_auc": _undefined(strict, lambda: _es_auc(y, s, codes, levels)),
        "per_group": _per_group(y, s, pred, codes, levels, counts, rates),
    }


def evaluate_binary(y_true: Any, y_score: Any, groups: Any = None, *, threshold: float = 0.5,
                    strict: bool = True) -> dict[str, float]:
    """All scalar metrics of a binary classifier, as one flat dict (fractions).

    Parameters
    ----------
    y_true : array-like, shape (n,)
        Labels in {0, 1}.
    y_score : array-like, shape (n,)
        Probability of class 1, in [0, 1].
    groups : array-like, shape (n,), optional
        Sensitive attribute; when given, the fairness metrics are added.
    threshold : float
        Predictions are ``y_score >= threshold``.
    strict : bool
        If True (default) an undefined metric raises :class:`UndefinedMetricError`; if False it is NaN,
        with an :class:`UndefinedMetricWarning` (useful when one fold must not stop a long benchmark):
        AUC/SEN/SPC when a class is missing, ES-AUC when a group has one class, all three fairness
        metrics when ``groups`` has a single value.  Bad input raises in both modes.

    Returns
    -------
    dict of str to float
        ``auc, acc, sen, spc`` and, with ``groups``, ``dpd, deodds, es_auc``.
    """
    y, s = _prepare(y_true, y_score)
    _check_probabilities(s, threshold)
    out = _classification(y, s, threshold, strict)
    if groups is not None:
        out.update(_fairness_scalars(y, s, groups, threshold, strict))
    return out


def _fairness_scalars(y: np.ndarray, s: np.ndarray, groups: Any, threshold: float,
                      strict: bool) -> dict[str, float]:
    try:
        codes, levels = _group_codes(groups, y.size)
    except UndefinedMetricError as err:  # a single group
        if strict:
            raise
        warnings.warn(f"{err}; fairness metrics reported as NaN", UndefinedMetricWarning, stacklevel=3)
        return dict.fromkeys(FAIRNESS_KEYS, math.nan)
    rates = _rates(_group_counts(y, (s >= threshold).astype(np.int8), codes, len(levels)))
    return {"dpd": float(rates["positive_rate"].max() - rates["positive_rate"].min()),
            "deodds": _eod_from_rates(rates, levels, "zero"),
            "es_auc": _undefined(strict, lambda: _es_auc(y, s, codes, levels))}


def to_percent(metrics: Any, skip: Sequence[str] = ()) -> Any:
    """Multiply fractions by 100 for tables.

    Floats are fractions and get scaled; ints (counts such as ``n``), bools, None and strings are
    kept.  Mappings are converted recursively; a :class:`BootstrapResult` gets its estimate and
    bounds scaled.

    Parameters
    ----------
    metrics : float, Mapping, or BootstrapResult
    skip : sequence of str
        Keys whose values are left as they are.

    Returns
    -------
    Same structure as ``metrics``, in percent.
    """
    if isinstance(metrics, BootstrapResult):
        return dataclasses.replace(metrics, estimate=100 * metrics.estimate, low=100 * metrics.low,
                                   high=100 * metrics.high)
    if isinstance(metrics, Mapping):
        return {k: v if k in skip else to_percent(v, skip) for k, v in metrics.items()}
    if isinstance(metrics, (bool, np.bool_, int, np.integer)) or metrics is None or isinstance(metrics, str):
        return metrics
    if isinstance(metrics, (float, np.floating)):
        return 100.0 * float(metrics)
    raise BrainAlignError(f"to_percent: cannot convert a {type(metrics).__name__}")


# ----------------------------------------------------------------------------------------------------------
# bootstrap


@dataclass(frozen=True)
class BootstrapResult:
    """A percentile-bootstrap interval.

    Attributes
    ----------
    estimate : float
        The metric on the original data (not the bootstrap mean).
    low, high : float
        The ``alpha/2`` and ``1 - alpha/2`` quantiles of the metric over the valid resamples.
    n_boot : int
        Resamples drawn.
    n_failed : int
        Resamples skipped because the metric was undefined there (e.g. one class only) or not finite.
    alpha : float
        1 − confidence level.
    """

    estimate: float
    low: float
    high: float
    n_boot: int
    n_failed: int
    alpha: float = 0.05

    @property
    def n_valid(self) -> int:
        """Resamples that entered the interval."""
        return self.n_boot - self.n_failed

    def as_tuple(self) -> tuple[float, float, float]:
        """``(low, high, estimate)``."""
        return self.low, self.high, self.estimate

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict for ``results.json``."""
        return dataclasses.asdict(self)


def _strata_codes(stratify: Any, n: int) -> np.ndarray | None:
    if stratify is None:
        return None
    arr = to_numpy(stratify)
    if arr.ndim not in (1, 2) or arr.shape[0] != n:
        raise BrainAlignError(f"stratify must have shape (n,) or (n, k) with n = {n}; got {arr.shape}")
    cols = [arr] if arr.ndim == 1 else [arr[:, j] for j in range(arr.shape[1])]
    combined = np.zeros(n, dtype=np.int64)
    for col in cols:  # mixed-radix code of the combination
        codes, levels = _factorize(col, "stratify")
        combined = combined * len(levels) + codes
    return pd.factorize(combined)[0]


def _index_blocks(n: int, n_boot: int, rng: np.random.Generator,
                  strata: np.ndarray | None) -> Iterator[np.ndarray]:
    """(b, n) resample indices, b rows at a time to bound memory; strata keep their sizes."""
    block = max(1, min(n_boot, (1 << 22) // max(n, 1)))
    members = None if strata is None else [np.flatnonzero(strata == k) for k in range(strata.max() + 1)]
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        if members is None:
            yield rng.integers(0, n, size=(b, n))
        else:
            yield np.concatenate([m[rng.integers(0, m.size, size=(b, m.size))] for m in members], axis=1)


def _resample_outputs(metric_fn: Callable[..., Any], arrays: list[np.ndarray], n_boot: int, seed: int,
                      strata: np.ndarray | None) -> tuple[list[Any], str | None]:
    """Metric on each resample; None where it raised ValueError (BrainAlignError included)."""
    rng = np.random.default_rng(seed)
    outputs: list[Any] = []
    first_error = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for block in _index_blocks(len(arrays[0]), n_boot, rng, strata):
            for idx in block:
                try:
                    outputs.append(metric_fn(*(a[idx] for a in arrays)))
                except ValueError as err:
                    outputs.append(None)
                    first_error = first_error or str(err)
    return outputs, first_error


def _prepare_bootstrap(arrays: tuple[Any, ...], n_boot: int, alpha: float, stratify: Any,
                       max_failed_frac: float) -> tuple[list[np.ndarray], np.ndarray | None]:
    if not arrays:
        raise BrainAlignError("bootstrap needs at least one array to resample")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise BrainAlignError(f"n_boot must be a positive integer; got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise BrainAlignError(f"alpha must be in (0, 1); got {alpha}")
    if not 0.0 <= max_failed_frac < 1.0:
        raise BrainAlignError(f"max_failed_frac must be in [0, 1); got {max_failed_frac}")
    arrs = [to_numpy(a) for a in arrays]
    if any(a.ndim == 0 for a in arrs):
        raise BrainAlignError("bootstrap arrays must be indexable along a first axis of length n; got a scalar")
    n = _check_lengths(**{f"array {i}": a for i, a in enumerate(arrs)})
    if n == 0:
        raise BrainAlignError("bootstrap arrays are empty")
    return arrs, _strata_codes(stratify, n)


def _as_scalar(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise BrainAlignError(f"metric_fn must return a number; got {type(value).__name__}") from None


def _interval(estimate: float, values: list[float], n_boot: int, alpha: float, max_failed_frac: float,
              first_error: str | None, what: str) -> BootstrapResult:
    vals = np.asarray(values, dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    n_failed = n_boot - vals.size
    if vals.size < 2 or n_failed > max_failed_frac * n_boot:
        reason = f"; first failure: {first_error}" if first_error else ""
        raise BrainAlignError(f"bootstrap of {what}: {n_failed} of {n_boot} resamples failed or were not finite "
                              f"(max_failed_frac={max_failed_frac}){reason}.  Stratify the resampling "
                              f"(stratify=y, or np.column_stack([y, groups])) to keep every class and group")
    low, high = np.quantile(vals, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapResult(float(estimate), float(low), float(high), int(n_boot), int(n_failed), float(alpha))


def bootstrap_ci(metric_fn: Callable[..., float], *arrays: Any, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0, stratify: Any = None, max_failed_frac: float = 0.5) -> BootstrapResult:
    """Percentile-bootstrap confidence interval of a scalar metric.

    Samples are resampled with replacement (the same indices for every array).  Resamples on which
    ``metric_fn`` raises ``ValueError`` (any :class:`~brainalign.errors.BrainAlignError`, e.g. AUC with one
    class only) or returns a non-finite value are skipped and counted in ``n_failed``.  The metric is first
    computed on the original data, where errors propagate.

    Parameters
    ----------
    metric_fn : callable
        ``metric_fn(*arrays_resampled) -> float``, e.g. ``roc_auc`` or
        ``lambda y, s, g: evaluate_binary(y, s, g)["dpd"]``.
    *arrays : array-like, each of shape (n, ...)
        Arrays resampled together along their first axis.
    n_boot : int
        Number of resamples.
    alpha : float
        The interval is the ``[alpha/2, 1 - alpha/2]`` quantile range (0.05 → 95 %).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same interval.
    stratify : array-like of shape (n,) or (n, k), optional
        Resample within each stratum (each distinct value, or row combination for 2-D) so that stratum
        sizes stay fixed; ``stratify=y`` keeps both classes in every resample.
    max_failed_frac : float
        Raise :class:`~brainalign.errors.BrainAlignError` when more than this fraction of resamples fail.

    Returns
    -------
    BootstrapResult
        ``estimate, low, high, n_boot, n_failed, alpha``; ``.as_tuple()`` gives ``(low, high, estimate)``.

    Notes
    -----
    Between-group gaps (DPD, DEOdds: a maximum of differences; ES-AUC: a sum of absolute differences) are
    biased under resampling, since sampling noise only widens gaps; their percentile interval can lie
    entirely above (ES-AUC: below) the estimate on small or nearly fair data.  Report the estimate with
    the interval, and read the interval as the uncertainty of the gap rather than a test of zero gap.
    """
    arrs, strata = _prepare_bootstrap(arrays, n_boot, alpha, stratify, max_failed_frac)
    estimate = _as_scalar(metric_fn(*arrs))
    outputs, first_error = _resample_outputs(metric_fn, arrs, n_boot, seed, strata)
    values = [math.nan if o is None else _as_scalar(o) for o in outputs]
    name = getattr(metric_fn, "__name__", "metric")
    return _interval(estimate, values, n_boot, alpha, max_failed_frac, first_error, name)


def bootstrap_metrics(metric_fn: Callable[..., Mapping[str, float]], *arrays: Any, n_boot: int = 1000,
                      alpha: float = 0.05, seed: int = 0, stratify: Any = None,
                      max_failed_frac: float = 0.5, undefined: str = "raise") -> dict[str, BootstrapResult]:
    """Bootstrap intervals of several metrics from one pass over the resamples.

    Like :func:`bootstrap_ci`, for a ``metric_fn`` that returns a dict of scalars, e.g.
    ``bootstrap_metrics(evaluate_binary, y, score, groups, stratify=y)`` — one resampling loop instead of
    one per metric.  Non-scalar entries (such as ``per_group``) are ignored.  A resample on which
    ``metric_fn`` raises fails for every key; a non-finite value fails for its key only.
    With ``undefined="nan"``, a key whose interval cannot be formed (too many failed resamples, e.g. a
    metric undefined on small groups) gets NaN bounds instead of raising; ``n_failed`` says why.

    Returns
    -------
    dict of str to BootstrapResult
        One interval per scalar key of ``metric_fn(*arrays)``.
    """
    arrs, strata = _prepare_bootstrap(arrays, n_boot, alpha, stratify, max_failed_frac)
    full = metric_fn(*arrs)
    if not isinstance(full, Mapping):
        raise BrainAlignError(f"metric_fn must return a dict of numbers; got {type(full).__name__} "
                              f"(use bootstrap_ci for a scalar metric)")
    keys = [k for k, v in full.items() if isinstance(v, (int, float, np.integer, np.floating))
            and not isinstance(v, bool)]
    outputs, first_error = _resample_outputs(metric_fn, arrs, n_boot, seed, strata)
    out = {}
    for key in keys:
        values = [math.nan if o is None else _as_scalar(o.get(key, math.nan)) for o in outputs]
        try:
            out[key] = _interval(full[key], values, n_boot, alpha, max_failed_frac, first_error, repr(key))
        except BrainAlignError:
            if undefined != "nan":
                raise
            n_failed = n_boot - int(np.isfinite(np.asarray(values, dtype=np.float64)).sum())
            out[key] = BootstrapResult(float(full[key]), math.nan, math.nan, int(n_boot), n_failed, float(alpha))
    return out


# ----------------------------------------------------------------------------------------------------------
# retrieval


def _target_matrix_or_index(targets: Any, n_query: int, n_item: int) -> np.ndarray:
    """Targets as (n_query,) item indices or a (n_query, n_item) boolean matrix, checked."""
    if targets is None:
        if n_query > n_item:
            raise BrainAlignError(f"the default targets are the diagonal (query i ↔ item i), which needs "
                                  f"n_query <= n_item; got {n_query} queries and {n_item} items")
        return np.arange(n_query)
    t = to_numpy(targets)
    if t.ndim == 1:
        if t.shape[0] != n_query or t.dtype.kind not in "iu":
            raise BrainAlignError(f"targets as indices must be integers of shape ({n_query},); "
                                  f"got {t.dtype} of shape {t.shape}")
        bad = (t < 0) | (t >= n_item)
        if bad.any():
            raise BrainAlignError(f"targets index items outside [0, {n_item}) for queries "
                                  f"{preview(np.flatnonzero(bad))}")
        return t.astype(np.intp)
    if t.shape != (n_query, n_item) or t.dtype != bool:
        raise BrainAlignError(f"targets must be None, (n_query,) item indices, or a boolean matrix of shape "
                              f"({n_query}, {n_item}); got {t.dtype} of shape {t.shape}")
    empty = ~t.any(axis=1)
    if empty.any():
        raise BrainAlignError(f"{int(empty.sum())} queries have no correct item in targets, e.g. queries "
                              f"{preview(np.flatnonzero(empty))}")
    return t


def retrieval_ranks(similarity: Any, targets: Any = None) -> np.ndarray:
    """1-based rank of the best-ranked correct item of each query, ties counted pessimistically.

    Parameters
    ----------
    similarity : array-like, shape (n_query, n_item)
        Higher means more similar.  NaN is an error; ±inf is allowed.
    targets : None, array-like of int (n_query,), or bool array (n_query, n_item)
        None: query i's correct item is item i (the diagonal; needs n_query <= n_item).
        Integers: the index of each query's correct item.  Boolean matrix: ``targets[q, j]`` marks item j as
        correct for query q (several per query allowed; each query needs at least one).

    Returns
    -------
    ndarray of int64, shape (n_query,)
        ``1 + #{items scoring higher than the best correct item} + #{incorrect items tying with it}``:
        a tie with an incorrect item counts as a loss, so constant similarities give the worst rank.
    """
    sim = to_numpy(similarity)
    if sim.ndim != 2 or 0 in sim.shape:
        raise BrainAlignError(f"similarity must be a non-empty (n_query, n_item) matrix; got shape {sim.shape}")
    if sim.dtype.kind not in "biuf":
        raise BrainAlignError(f"similarity must be numeric; got dtype {sim.dtype}")
    if np.isnan(sim).any():
        raise BrainAlignError(f"similarity contains {int(np.isnan(sim).sum())} NaN value(s)")
    n_query, n_item = sim.shape
    t = _target_matrix_or_index(targets, n_query, n_item)
    ranks = np.empty(n_query, dtype=np.int64)
    block = max(1, (1 << 24) // n_item)  # rows per block, to bound temporaries
    for start in range(0, n_query, block):
        rows = slice(start, min(start + block, n_query))
        s = sim[rows]
        if t.ndim == 1:
            best = s[np.arange(s.shape[0]), t[rows]][:, None]
            tied_wrong = (s == best).sum(axis=1) - 1  # minus the correct item itself
        else:
            correct = t[rows]
            best = np.where(correct, s, -np.inf).max(axis=1)[:, None]
            tied_wrong = ((s == best) & ~correct).sum(axis=1)
        ranks[rows] = 1 + (s > best).sum(axis=1) + tied_wrong
    return ranks


def recall_at_k(similarity: Any, targets: Any = None, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval recall at k: the fraction of queries with a correct item among the top k.

    Parameters
    ----------
    similarity : array-like, shape (n_query, n_item)
        Higher means more similar (e.g. cosine similarity of brain and text embeddings).
    targets : None, array-like of int (n_query,), or bool array (n_query, n_item)
        See :func:`retrieval_ranks`; default: the diagonal.
    ks : sequence of int
        Cut-offs (positive).  k >= n_item gives 1.0.

    Returns
    -------
    dict of str to float
        ``{"R@1": ..., "R@5": ..., "R@10": ...}`` as fractions; ties with incorrect items count as misses.
    """
    ks = list(ks)
    if not ks or any(not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise BrainAlignError(f"ks must be positive integers; got {ks!r}")
    ranks = retrieval_ranks(similarity, targets)
    return {f"R@{int(k)}": float((ranks <= k).mean()) for k in ks}
