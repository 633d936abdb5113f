"""The NeuroLIP evaluation protocol: a held-out test set plus K-fold cross-validation, grouped by person.

:func:`make_splits` draws

1. the **test set**: the first fold of ``StratifiedGroupKFold(n_splits=round(1 / test_size))``, so its size is
   about ``1 / round(1 / test_size)`` of the persons (0.2 → exactly one fifth; 0.3 → one third);
2. **K folds** on the remaining scans: ``StratifiedGroupKFold(n_folds)``; fold k validates on its part and
   trains on the other K − 1.

Both splitters shuffle with ``random_state=seed``, stratify on the label (or on the label × ``stratify_extra``
combination, e.g. label × site) and keep every person's scans in one part, so no person appears in two of
{test, train, val}.  With ``test_size=0`` there is no held-out set: ``Splits.test`` is empty and the folds'
validation sets are the evaluation sets (each scan is validated exactly once).

All indices are positions into the arrays given to :func:`make_splits`, sorted ascending.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from brainalign.errors import BrainAlignError

__all__ = ["Fold", "Splits", "describe_splits", "make_splits"]


# ----------------------------------------------------------------------------------------------------------
# containers


def _index_array(x: Any, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise BrainAlignError(f"{what} must be a 1-D array of integer positions; got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)


@dataclass(eq=False)
class Fold:
    """One cross-validation fold.

    Attributes
    ----------
    train : ndarray of int64, shape (n_train,)
        Positions of the training scans.
    val : ndarray of int64, shape (n_val,)
        Positions of the validation scans.
    """

    train: np.ndarray
    val: np.ndarray

    def __post_init__(self) -> None:
        self.train = _index_array(self.train, "Fold.train")
        self.val = _index_array(self.val, "Fold.val")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Fold) and np.array_equal(self.train, other.train)
                and np.array_equal(self.val, other.val))


@dataclass(eq=False)
class Splits:
    """A held-out test set and K folds over the remaining scans.

    Attributes
    ----------
    test : ndarray of int64, shape (n_test,)
        Positions of the held-out test scans; empty when ``test_size=0``.
    folds : list of Fold
        The K folds; their ``val`` sets partition all non-test scans.
    params : dict
        How the splits were made (``test_size``, ``n_folds``, ``seed``, ``n_samples``, ...), for the record.
    """

    test: np.ndarray
    folds: list[Fold]
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.test = _index_array(self.test, "Splits.test")

    @property
    def n_folds(self) -> int:
        """Number of cross-validation folds."""
        return len(self.folds)

    @property
    def has_test(self) -> bool:
        """Whether there is a held-out test set (False when made with ``test_size=0``)."""
        return self.test.size > 0

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Splits) or len(self.folds) != len(other.folds):
            return False
        return np.array_equal(self.test, other.test) and all(
            a == b for a, b in zip(self.folds, other.folds, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``{"test": [...], "folds": [{"train": [...], "val": [...]}, ...], "params": {...}}``."""
        return {"test": self.test.tolist(),
                "folds": [{"train": f.train.tolist(), "val": f.val.tolist()} for f in self.folds],
                "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Splits:
        """Inverse of :meth:`to_dict`."""
        try:
            folds = [Fold(np.asarray(f["train"], dtype=np.int64), np.asarray(f["val"], dtype=np.int64))
                     for f in d["folds"]]
            return cls(np.asarray(d["test"], dtype=np.int64), folds, dict(d.get("params", {})))
        except (KeyError, TypeError) as err:
            raise BrainAlignError(f"splits dict must have 'test' and 'folds' with 'train'/'val' lists: {err}") from err

    def _parts(self) -> list[tuple[str, np.ndarray]]:
        parts = [("test", self.test)] if self.has_test else []
        for k, fold in enumerate(self.folds):
            parts += [(f"fold {k} train", fold.train), (f"fold {k} val", fold.val)]
        return parts

    def check_no_leakage(self, groups_person: Any) -> None:
        """Raise if a scan or a person is in two parts that must be disjoint.

        Checks: indices lie in ``[0, n)`` and are unique within each part; the test set shares no scan and no
        person with any fold; within each fold, train and val share no scan and no person.

        Parameters
        ----------
        groups_person : array-like, shape (n,)
            Subject id of every scan, as given to :func:`make_splits`.

        Raises
        ------
        BrainAlignError
            Naming the parts and up to five of the persons they share.
        """
        person, _ = _codes(groups_person, "groups_person")
        n = person.size
        for name, idx in self._parts():
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise BrainAlignError(f"{name} holds positions outside [0, {n}): the splits do not fit these data")
            if np.unique(idx).size != idx.size:
                raise BrainAlignError(f"{name} holds a position more than once")
        pairs = [(("test", self.test), (f"fold {k} {part}", getattr(f, part)))
                 for k, f in enumerate(self.folds) for part in ("train", "val")] if self.has_test else []
        pairs += [((f"fold {k} train", f.train), (f"fold {k} val", f.val)) for k, f in enumerate(self.folds)]
        labels = np.asarray(groups_person, dtype=object)
        for (name_a, a), (name_b, b) in pairs:
            if np.intersect1d(a, b).size:
                raise BrainAlignError(f"{name_a} and {name_b} share {np.intersect1d(a, b).size} scan position(s)")
            shared = np.intersect1d(person[a], person[b])
            if shared.size:
                examples = sorted({str(labels[np.flatnonzero(person == c)[0]]) for c in shared[:5]})
                raise BrainAlignError(f"{name_a} and {name_b} share {shared.size} person(s), e.g. {examples}")


# ----------------------------------------------------------------------------------------------------------
# checks


def _codes(x: Any, name: str) -> tuple[np.ndarray, list[Any]]:
    """Integer codes (n,) and sorted levels of 1-D hashable values; missing values raise."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise BrainAlignError(f"{name} must be 1-D, one value per scan; got shape {arr.shape}")
    if arr.size == 0:
        raise BrainAlignError(f"{name} is empty")
    try:
        codes, levels = pd.factorize(arr, sort=True)
    except TypeError:  # unorderable mixed types
        codes, levels = pd.factorize(arr, sort=False)
    missing = np.flatnonzero(codes < 0)
    if missing.size:
        raise BrainAlignError(f"{name} contains {missing.size} missing value(s) (NaN/None), at positions "
                              f"{missing[:5].tolist()}{' ...' if missing.size > 5 else ''}; drop those scans first")
    return codes.astype(np.int64), [v.item() if isinstance(v, np.generic) else v for v in levels]


def _n_test_splits(test_size: Any) -> int:
    """0 for no test set, else the number of StratifiedGroupKFold splits whose first fold is the test set."""
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real) or not np.isfinite(test_size):
        raise BrainAlignError(f"test_size must be a number, 0 or in (0, 1); got {test_size!r}")
    if test_size == 0:
        return 0
    if not 0 < test_size < 1:
        raise BrainAlignError(f"test_size must be 0 (no held-out set) or in (0, 1); got {test_size}")
    k = round(1 / test_size)
    if k < 2:
        raise BrainAlignError(f"test_size={test_size} is too large: the test set is one of round(1/test_size) = {k} "
                              f"folds, which must be at least 2 (test_size <= 2/3)")
    return k


def _combine(*codes: np.ndarray) -> np.ndarray:
    combined = np.zeros_like(codes[0])
    for c in codes:
        combined = combined * (int(c.max()) + 1) + c
    return pd.factorize(combined)[0].astype(np.int64)


def _check_counts(y: np.ndarray, levels: list[Any], person: np.ndarray, n_folds: int, n_test: int) -> None:
    n_persons = np.unique(person).size
    need = n_folds + (1 if n_test else 0)
    where = f"a held-out test set plus {n_folds} folds" if n_test else f"{n_folds} folds"
    if n_persons < max(need, n_test):
        raise BrainAlignError(f"only {n_persons} persons: {where} need at least {max(need, n_test)} persons "
                              f"(a person's scans never straddle two splits)")
    for c, level in enumerate(levels):
        k = np.unique(person[y == c]).size
        if k < need:
            raise BrainAlignError(f"class {level!r} has only {k} person(s); stratified splitting into {where} "
                                  f"needs at least {need} persons per class (one in each split)")


def _check_classes_present(parts: list[tuple[str, np.ndarray]], y: np.ndarray, levels: list[Any],
                           person: np.ndarray) -> None:
    for name, idx in parts:
        missing = [levels[c] for c in range(len(levels)) if not np.any(y[idx] == c)]
        if missing:
            counts = {levels[c]: int(np.unique(person[y == c]).size) for c in range(len(levels))}
            raise BrainAlignError(f"the {name} set has no scans of class(es) {missing} (persons per class: {counts}); "
                                  f"use fewer folds or a different test_size")


def _split_once(strat: np.ndarray, person: np.ndarray, n_splits: int, seed: int) -> list[np.ndarray]:
    """Validation parts (local positions, sorted) of one StratifiedGroupKFold."""
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Rare label x site combinations are expected; class counts are checked by _check_counts.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return [np.sort(val).astype(np.int64) for _, val in cv.split(np.zeros(strat.size), strat, person)]


# ----------------------------------------------------------------------------------------------------------
# the protocol


def make_splits(y: Any, groups_person: Any, *, test_size: float = 0.2, n_folds: int = 5,
                stratify_extra: Any = None, seed: int = 0) -> Splits:
    """Held-out test set plus stratified K-fold, grouped by person (the NeuroLIP protocol).

    Parameters
    ----------
    y : array-like, shape (n,)
        Class label of every scan (any hashable values, e.g. 0/1 or "ASD"/"TC"; no NaN).  A continuous
        target must be binned first.
    groups_person : array-like, shape (n,)
        Subject id of every scan; all scans of a person land in the same part.
    test_size : float
        Fraction of persons held out: the test set is one of ``round(1 / test_size)`` folds (so 0.2 → 1/5,
        0.125 → 1/8, 0.3 → 1/3).  ``0`` means no held-out set: ``test`` is empty and the validation sets of
        the folds are the evaluation sets.
    n_folds : int
        Number of cross-validation folds on the non-test scans (>= 2).
    stratify_extra : array-like, shape (n,), optional
        A second variable (e.g. site) to stratify on, together with ``y``: the splitter balances the
        label × extra combinations.  Rare combinations are spread as well as their persons allow.
    seed : int
        ``random_state`` of both splitters; the same inputs and seed give the same splits.

    Returns
    -------
    Splits
        ``test`` and ``folds`` as sorted int64 position arrays; ``params`` records the arguments.

    Raises
    ------
    BrainAlignError
        Mismatched lengths, NaN labels or ids, ``test_size`` outside ``{0} ∪ (0, 2/3]``, ``n_folds < 2``,
        fewer persons than splits, a class with fewer persons than splits (naming the class and its count),
        or a split left without a class.
    """
    if isinstance(n_folds, bool) or not isinstance(n_folds, numbers.Integral) or n_folds < 2:
        raise BrainAlignError(f"n_folds must be an integer >= 2; got {n_folds!r}")
    n_test = _n_test_splits(test_size)
    y_codes, levels = _codes(y, "y")
    person, _ = _codes(groups_person, "groups_person")
    arrays = {"y": y_codes, "groups_person": person}
    strat = y_codes
    if stratify_extra is not None:
        extra, _ = _codes(stratify_extra, "stratify_extra")
        arrays["stratify_extra"] = extra
    lengths = {k: v.size for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise BrainAlignError("length mismatch: " + ", ".join(f"{k} has {v}" for k, v in lengths.items()))
    if stratify_extra is not None:
        strat = _combine(y_codes, arrays["stratify_extra"])
    _check_counts(y_codes, levels, person, int(n_folds), n_test)

    n = y_codes.size
    test = _split_once(strat, person, n_test, seed)[0] if n_test else np.zeros(0, dtype=np.int64)
    rest = np.setdiff1d(np.arange(n), test)
    if np.unique(person[rest]).size < n_folds:
        raise BrainAlignError(f"only {np.unique(person[rest]).size} persons remain after the test set; "
                              f"{n_folds} folds need at least {n_folds}")
    vals = [rest[v] for v in _split_once(strat[rest], person[rest], int(n_folds), seed)]
    folds = [Fold(np.setdiff1d(rest, v), v) for v in vals]
    parts = ([("test", test)] if n_test else []) + [(f"fold {k} validation", f.val) for k, f in enumerate(folds)]
    _check_classes_present(parts, y_codes, levels, person)
    params = {"test_size": float(test_size), "n_folds": int(n_folds), "seed": int(seed), "n_samples": int(n),
              "n_persons": int(np.unique(person).size), "stratified_on": "y" if stratify_extra is None else "y+extra",
              "test_fraction_nominal": (1.0 / n_test) if n_test else 0.0}
    return Splits(test, folds, params)


def describe_splits(splits: Splits, y: Any, groups_person: Any, extra: Any = None) -> pd.DataFrame:
    """Scan and person counts per split and class (and extra value), for reports.

    Parameters
    ----------
    splits : Splits
    y : array-like, shape (n,)
        Class labels.
    groups_person : array-like, shape (n,)
        Subject ids.
    extra : array-like, shape (n,), optional
        A second variable (e.g. site or sex) to break the counts down by.

    Returns
    -------
    pandas.DataFrame
        Long format, one row per split × label (× extra) with every combination seen in the data (zero
        counts included).  Columns: ``split`` ("all", "test", "fold0/train", "fold0/val", ...), ``fold``
        (nullable Int64, NA for "all" and "test"), ``part`` ("all", "test", "train", "val"), ``label``,
        [``extra``], ``n_scans``, ``n_persons``, ``frac_scans`` (share of the split's scans).
    """
    _codes(y, "y")
    _codes(groups_person, "groups_person")
    df = pd.DataFrame({"label": np.asarray(y), "person": np.asarray(groups_person)})
    keys = ["label"]
    if extra is not None:
        _codes(extra, "extra")
        df["extra"] = np.asarray(extra)
        keys.append("extra")
    if len(df) != len(np.asarray(groups_person)) or (extra is not None and len(df) != len(np.asarray(extra))):
        raise BrainAlignError("y, groups_person and extra must have the same length")
    full = pd.MultiIndex.from_frame(df[keys].drop_duplicates().sort_values(keys))
    parts: list[tuple[str, Any, str, np.ndarray]] = [("all", pd.NA, "all", np.arange(len(df)))]
    if splits.has_test:
        parts.append(("test", pd.NA, "test", splits.test))
    for k, fold in enumerate(splits.folds):
        parts += [(f"fold{k}/train", k, "train", fold.train), (f"fold{k}/val", k, "val", fold.val)]
    frames = []
    for name, fold, part, idx in parts:
        sub = df.iloc[idx]
        counts = sub.groupby(keys).agg(n_scans=("person", "size"), n_persons=("person", "nunique"))
        if isinstance(counts.index, pd.MultiIndex):
            counts = counts.reindex(full, fill_value=0)
        else:
            counts = counts.reindex(full.get_level_values(0), fill_value=0)
        counts = counts.reset_index()
        counts["frac_scans"] = counts["n_scans"] / max(len(idx), 1)
        counts.insert(0, "part", part)
        counts.insert(0, "fold", fold)
        counts.insert(0, "split", name)
        frames.append(counts)
    out = pd.concat(frames, ignore_index=True)
    out["fold"] = out["fold"].astype("Int64")
    return out
