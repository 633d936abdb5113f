"""Report figures: ROC curves, per-group fairness bars, brain maps; PNG/base64 export.

Every function builds a :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so figures render with
the Agg canvas whatever the interactive backend, nothing accumulates in pyplot's figure registry, and a
notebook still displays a returned figure.

Predictions tables follow ``RUN/predictions.csv`` (:func:`brainalign.evaluation.benchmark.run_benchmark`):
columns ``method, fold, split, scan_id, y, group, score``; ``group`` is empty without a sensitive attribute.
"""

from __future__ import annotations

import base64
import io
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from brainalign.errors import BrainAlignError

__all__ = [
    "PER_GROUP_COLUMNS",
    "PREDICTION_COLUMNS",
    "brain_map_figure",
    "fairness_figure",
    "figure_to_base64",
    "fold_averaged_scores",
    "per_group_metrics",
    "read_predictions",
    "roc_figure",
]

PREDICTION_COLUMNS = ("method", "fold", "split", "scan_id", "y", "group", "score")
#: Columns of :func:`per_group_metrics` (fractions; NaN where undefined, e.g. TPR of a group without positives).
PER_GROUP_COLUMNS = ("method", "group", "n", "n_pos", "auc", "acc", "tpr", "fpr", "positive_rate")
_FAIRNESS_PANELS = (("auc", "AUC"), ("tpr", "TPR"), ("fpr", "FPR"), ("positive_rate", "Positive rate"))


# ----------------------------------------------------------------------------------------------------------
# tables


def read_predictions(predictions: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A predictions table (DataFrame or path to ``predictions.csv``), checked for the expected columns.

    ``scan_id`` and ``group`` are read as strings; an empty ``group`` is missing (NaN).
    """
    if isinstance(predictions, (str, Path)):
        path = Path(predictions)
        try:
            df = pd.read_csv(path, dtype={"scan_id": str, "group": str, "method": str, "split": str})
        except FileNotFoundError:
            raise BrainAlignError(f"predictions file {path} does not exist") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise BrainAlignError(f"{path} cannot be parsed as CSV: {err}") from None
        where = str(path)
    elif isinstance(predictions, pd.DataFrame):
        df, where = predictions, "predictions"
    else:
        raise BrainAlignError(f"predictions must be a DataFrame or a path; got {type(predictions).__name__}")
    missing = [c for c in PREDICTION_COLUMNS if c not in df]
    if missing:
        raise BrainAlignError(f"{where}: missing column(s) {missing} (expected {list(PREDICTION_COLUMNS)})")
    if "group" in df:
        df = df.assign(group=df["group"].where(df["group"].astype(str).str.len() > 0))
    return df


def fold_averaged_scores(predictions: pd.DataFrame | str | Path, split: str = "test") -> pd.DataFrame:
    """One row per (method, scan) on ``split`` with the score averaged over folds.

    On ``test`` every fold model scores every test scan, so this is the fold ensemble the bootstrap
    intervals of ``results.json`` describe; on ``val`` each scan has one out-of-fold score (pooled CV).

    Returns
    -------
    DataFrame
        Columns ``method, scan_id, y, group, score, n_folds``; methods in order of first appearance.
    """
    df = read_predictions(predictions)
    sub = df[df["split"] == split]
    if sub.empty:
        raise BrainAlignError(f"predictions have no rows for split '{split}' "
                              f"(splits present: {sorted(df['split'].dropna().unique().tolist())})")
    out = (sub.groupby(["method", "scan_id"], sort=False, dropna=False)
           .agg(y=("y", "first"), group=("group", "first"), score=("score", "mean"), n_folds=("fold", "nunique"))
           .reset_index())
    return out


def _default_split(results: Mapping[str, Any] | None, predictions: pd.DataFrame | None) -> str:
    if results and results.get("methods"):
        return next(iter(results["methods"].values())).get("reported_split", "test")
    if predictions is not None and (predictions["split"] == "test").any():
        return "test"
    return "val"


def per_group_metrics(results: Mapping[str, Any] | None = None,
                      predictions: pd.DataFrame | str | Path | None = None,
                      split: str | None = None) -> pd.DataFrame:
    """Per-method, per-group metrics (long format, :data:`PER_GROUP_COLUMNS`).

    Uses ``results["methods"][m]["per_group"]`` (``{group: {"n", "n_pos", "auc", ...}}``) where a method has
    it; otherwise computes :func:`brainalign.evaluation.metrics.fairness_metrics` ``["per_group"]`` on the
    fold-averaged scores of ``split`` (default: the results' reported split).  Methods without a sensitive
    attribute (empty ``group``) or with a single group are left out; the table is empty when none has one.
    """
    from brainalign.evaluation.metrics import UndefinedMetricError, UndefinedMetricWarning, fairness_metrics

    preds = read_predictions(predictions) if predictions is not None else None
    split = split or _default_split(results, preds)
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    for name, res in ((results or {}).get("methods") or {}).items():
        per_group = res.get("per_group") if isinstance(res, Mapping) else None
        if isinstance(per_group, Mapping) and per_group:
            rows += [{"method": name, "group": str(g), **dict(m)} for g, m in per_group.items()]
            done.add(name)
    if preds is not None and not preds.empty and (preds["split"] == split).any():
        scores = fold_averaged_scores(preds, split)
        for name, sub in scores.groupby("method", sort=False):
            if name in done or sub["group"].isna().any():
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UndefinedMetricWarning)
                    fm = fairness_metrics(sub["y"].to_numpy(), sub["score"].to_numpy(),
                                          sub["group"].astype(str).to_numpy(), strict=False)
            except UndefinedMetricError:  # one group only
                continue
            rows += [{"method": name, "group": g, **m} for g, m in fm["per_group"].items()]
    table = pd.DataFrame(rows or None, columns=list(PER_GROUP_COLUMNS))
    for col in PER_GROUP_COLUMNS[4:]:
        table[col] = pd.to_numeric(table[col], errors="coerce")  # None (undefined) -> NaN
    return table


# ----------------------------------------------------------------------------------------------------------
# figures


def roc_figure(predictions_df: pd.DataFrame | str | Path, split: str = "test", *,
               figsize: tuple[float, float] = (5.2, 4.6)) -> Figure:
    """ROC curve per method on ``split``, from fold-averaged scores (:func:`fold_averaged_scores`).

    A method whose scans hold a single class gets a legend entry saying its AUC is undefined.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    scores = fold_averaged_scores(predictions_df, split)
    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    for name, sub in scores.groupby("method", sort=False):
        y = sub["y"].to_numpy().astype(int)
        s = sub["score"].to_numpy(dtype=float)
        if np.unique(y).size < 2:
            ax.plot([], [], label=f"{name} (AUC undefined: one class, n={len(y)})")
            continue
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, linewidth=1.8, label=f"{name} (AUC {100 * roc_auc_score(y, s):.1f}%, n={len(y)})")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate",
           title=f"ROC on the {split} set" + (" (scores averaged over folds)" if split == "test" else ""))
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def fairness_figure(results: Mapping[str, Any] | None = None,
                    predictions_df: pd.DataFrame | str | Path | None = None, split: str | None = None, *,
                    per_group: pd.DataFrame | None = None) -> Figure:
    """Per-method bars of AUC, TPR, FPR and positive rate for each sensitive group.

    Parameters
    ----------
    results : dict, optional
        ``results.json`` content; its methods' ``per_group`` entries are used where present.
    predictions_df : DataFrame or path, optional
        Predictions, from which per-group metrics are computed otherwise (:func:`per_group_metrics`).
    split : str, optional
        Split to use (default: the results' reported split).
    per_group : DataFrame, optional
        A precomputed :func:`per_group_metrics` table (the other arguments are then ignored).

    Raises
    ------
    BrainAlignError
        No per-group metrics (no sensitive attribute in the run, or neither input given).
    """
    table = per_group if per_group is not None else per_group_metrics(results, predictions_df, split)
    if table.empty:
        raise BrainAlignError("no per-group metrics to plot: the run has no sensitive attribute, or pass "
                              "predictions_df (predictions.csv) with a 'group' column")
    methods = list(dict.fromkeys(table["method"]))
    groups = list(dict.fromkeys(table["group"]))
    n_by_group = table.drop_duplicates("group").set_index("group")["n"]
    width = 0.8 / len(groups)
    x = np.arange(len(methods))
    fig = Figure(figsize=(max(8.0, 1.6 * len(methods) * len(_FAIRNESS_PANELS) / 2), 3.4), layout="constrained")
    axes = fig.subplots(1, len(_FAIRNESS_PANELS), sharey=True)
    cmap = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
    for ax, (key, label) in zip(axes, _FAIRNESS_PANELS):
        pivot = table.pivot_table(index="method", columns="group", values=key, aggfunc="first", dropna=False)
        pivot = pivot.reindex(index=methods, columns=groups)
        for j, g in enumerate(groups):
            ax.bar(x + (j - (len(groups) - 1) / 2) * width, pivot[g].to_numpy(dtype=float), width,
                   color=cmap[j % len(cmap)], label=f"{g} (n={n_by_group[g]:.0f})")
        ax.set_xticks(x, methods, rotation=30 if len(methods) > 3 else 0, ha="right" if len(methods) > 3 else "center")
        ax.set_title(label)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("fraction")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(groups), 6), fontsize=8,
               title="sensitive group", title_fontsize=8)
    return fig


def brain_map_figure(values: Any, roi_coords: Any = None, title: str = "", *,
                     roi_labels: Sequence[str] | None = None, top_k: int = 20, cmap: str = "viridis",
                     figsize: tuple[float, float] | None = None) -> Figure:
    """One ROI map: markers on a glass brain when coordinates are known, else a bar plot of the top ROIs.

    Parameters
    ----------
    values : array-like, shape (N,)
        One value per ROI.
    roi_coords : array-like, shape (N, 3), optional
        ROI centres in MNI mm (``cohort.meta.roi_coords``); drawn with ``nilearn.plotting.plot_markers``.
    title : str
    roi_labels : sequence of str, optional
        N ROI names for the bar plot (``ROI_001``... by default).
    top_k : int
        ROIs shown in the bar plot (largest values).
    cmap : str
        Colour map.
    """
    vals = np.asarray(values.detach().cpu().numpy() if hasattr(values, "detach") else values, dtype=float)
    if vals.ndim != 1 or vals.size == 0:
        raise BrainAlignError(f"values must have shape (N,); got {vals.shape}")
    if not np.isfinite(vals).all():
        raise BrainAlignError(f"values contain NaN/inf at ROI(s) {np.flatnonzero(~np.isfinite(vals))[:5].tolist()}")
    n = vals.size
    if roi_coords is not None:
        coords = np.asarray(roi_coords, dtype=float)
        if coords.shape != (n, 3):
            raise BrainAlignError(f"roi_coords must have shape ({n}, 3); got {coords.shape}")
        from nilearn import plotting

        fig = Figure(figsize=figsize or (9.0, 3.3))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nilearn's layout/colour-bar chatter is not the user's concern
            plotting.plot_markers(vals, coords, figure=fig, title=title or None, node_cmap=cmap,
                                  node_size=max(8.0, 2000.0 / n), colorbar=True)
        return fig
    labels = [str(v) for v in roi_labels] if roi_labels is not None else [f"ROI_{i + 1:03d}" for i in range(n)]
    if len(labels) != n:
        raise BrainAlignError(f"roi_labels has {len(labels)} entries but values has {n}")
    k = max(1, min(int(top_k), n))
    top = np.argsort(-vals, kind="stable")[:k]
    fig = Figure(figsize=figsize or (6.0, 0.25 * k + 1.2), layout="constrained")
    ax = fig.add_subplot()
    ax.barh(np.arange(k), vals[top], color="#4C72B0")
    ax.set_yticks(np.arange(k), [labels[i] for i in top], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("value")
    ax.set_title(title + (f" (top {k} of {n} ROIs)" if title else f"top {k} of {n} ROIs"), fontsize=10)
    return fig


def figure_to_base64(fig: Figure, *, dpi: int = 100, close: bool = True) -> str:
    """PNG of ``fig`` as a base64 string (for ``<img src="data:image/png;base64,...">``).

    ``close`` releases the figure from pyplot if pyplot created it (figures from this module are not tracked).
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    if close and "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")
