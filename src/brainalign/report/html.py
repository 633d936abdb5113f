"""The HTML report of a run folder: ``RUN/report.html``, one self-contained file.

Sections (each shown when its inputs exist; a skipped section is named in the report's notes):
run configuration, task summary, the results table (mean ± std over folds, percent, the paper's layout
AUC ACC SEN SPC DPD↓ DEOdds↓ ES-AUC), per-fold metrics, bootstrap confidence intervals of the fold-averaged
test scores, ROC curves, per-group fairness (table and bars), and brain maps per token with their scores
against planted truth (simulated cohorts).  Images are embedded as base64 PNG; no file or network access is
needed to view the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from brainalign import __version__
from brainalign.errors import BrainAlignError

__all__ = ["render_report", "write_report"]

REPORT_FILE = "report.html"
_TEMPLATE = "report.html.j2"
_PCT_KEYS = {"auc", "acc", "sen", "spc", "dpd", "deodds", "es_auc"}


# ----------------------------------------------------------------------------------------------------------
# formatting


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def _pct(x: Any, digits: int = 2) -> str:
    v = _num(x)
    return "–" if math.isnan(v) else f"{100 * v:.{digits}f}"


def _pct_pm(mean: Any, std: Any) -> str:
    m, s = _num(mean), _num(std)
    if math.isnan(m):
        return "–"
    return f"{100 * m:.2f}" if math.isnan(s) else f"{100 * m:.2f} ± {100 * s:.2f}"


def _count(x: Any) -> str:
    v = _num(x)
    return "–" if math.isnan(v) else str(int(v))


def _plain(x: Any) -> str:
    if isinstance(x, float):
        return "–" if not math.isfinite(x) else f"{x:.4g}"
    if isinstance(x, (dict, list)):
        return json.dumps(x, default=str)
    return "–" if x is None else str(x)


# ----------------------------------------------------------------------------------------------------------
# inputs


def _load_results(run: Path, results: Mapping[str, Any] | str | Path | None) -> dict[str, Any] | None:
    if isinstance(results, Mapping):
        return dict(results)
    path = Path(results) if results is not None else run / "results.json"
    if not path.is_file():
        if results is not None:
            raise BrainAlignError(f"results file {path} does not exist")
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BrainAlignError(f"{path} is not valid JSON: {err}") from None


def _load_predictions(run: Path, predictions: pd.DataFrame | str | Path | None) -> pd.DataFrame | None:
    from brainalign.report.figures import read_predictions

    if predictions is None:
        path = run / "predictions.csv"
        return read_predictions(path) if path.is_file() else None
    return read_predictions(predictions)


def _load_token_maps(run: Path, token_maps: Mapping[str, Any] | None) -> dict[str, pd.DataFrame]:
    from brainalign.explain.token_maps import read_token_maps, token_map_files

    if token_maps is None:
        return {name: read_token_maps(path) for name, path in token_map_files(run).items()}
    out = {}
    for name, value in token_maps.items():
        if isinstance(value, (str, Path)):
            out[str(name)] = read_token_maps(value)
        elif isinstance(value, pd.DataFrame):
            out[str(name)] = value
        else:
            raise BrainAlignError(f"token_maps['{name}'] must be a DataFrame or a CSV path; got {type(value).__name__}")
    return out


def _load_meta(cohort: Any, results: Mapping[str, Any] | None) -> tuple[Any, Path | None, int | None]:
    """(CohortMeta or None, cohort folder or None, number of scans or None)."""
    from brainalign.data.cohort import Cohort, CohortMeta, load_meta

    if isinstance(cohort, Cohort):
        return cohort.meta, cohort.root, len(cohort)
    if isinstance(cohort, CohortMeta):
        return cohort, None, None
    path = cohort
    if path is None and results:
        path = (results.get("config") or {}).get("cohort")
        if not path or not (Path(path) / "cohort.json").is_file():
            return None, None, None  # the run's cohort is not here: report without it
    if path is None:
        return None, None, None
    root = Path(path)
    return load_meta(root), root, None


def _load_truth(truth: Any, cohort_root: Path | None) -> dict[str, Any] | None:
    from brainalign.data.simulate import TRUTH_FILE, load_truth

    if isinstance(truth, Mapping):
        return dict(truth)
    if truth is not None:
        return load_truth(truth, arrays=False)
    if cohort_root is not None and (cohort_root / TRUTH_FILE).is_file():
        return load_truth(cohort_root, arrays=False)
    return None


# ----------------------------------------------------------------------------------------------------------
# sections


def _results_section(results: Mapping[str, Any]) -> dict[str, Any]:
    from brainalign.evaluation.benchmark import table_columns

    methods = results.get("methods") or {}
    cols = table_columns(results)
    split = next(iter(methods.values())).get("reported_split", "test") if methods else "test"
    rows = [{"method": name, "cells": [_pct_pm(res.get("mean", {}).get(k), res.get("std", {}).get(k))
                                       for k, _ in cols]} for name, res in methods.items()]
    n_folds = (results.get("config") or {}).get("n_folds") or max((len(r.get("folds", [])) for r in methods.values()),
                                                                   default=0)
    fold_rows = []
    for name, res in methods.items():
        for fold in res.get("folds", []):
            for split_name in ("val", "test"):
                if split_name in fold:
                    fold_rows.append({"method": name, "fold": fold.get("fold"), "split": split_name,
                                      "n_train": fold.get("n_train", "–"),
                                      "fit_seconds": _plain(fold.get("fit_seconds")),
                                      "cells": [_pct(fold[split_name].get(k)) for k, _ in cols]})
    ci_rows = []
    for name, res in methods.items():
        boot = res.get("test_fold_average")
        if not boot:
            continue
        cells, n_boot, failed = [], None, []
        for k, _ in cols:
            r = boot.get(k)
            if not r:
                cells.append("–")
                continue
            n_boot = r.get("n_boot", n_boot)
            if r.get("n_failed"):
                failed.append(f"{k}: {r['n_failed']}")
            est, lo, hi = _pct(r.get("estimate")), _pct(r.get("low")), _pct(r.get("high"))
            cells.append(est if lo == "–" else f"{est} [{lo}, {hi}]")
        ci_rows.append({"method": name, "cells": cells, "n_boot": n_boot if n_boot is not None else "–",
                        "failed": ", ".join(failed) or "0"})
    return {"headers": [h for _, h in cols], "rows": rows, "split": split, "n_folds": n_folds,
            "fold_rows": fold_rows, "ci_rows": ci_rows}


def _task_section(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    task = dict(results.get("task") or {})
    items = [(k, _plain(v)) for k, v in task.items() if k != "excluded"]
    excluded = task.get("excluded")
    if excluded:
        items.append(("excluded", _plain(excluded)))
    splits = results.get("splits") or {}
    if splits:
        items.append(("test scans", str(len(splits.get("test", [])))))
        folds = splits.get("folds", [])
        items.append(("folds (train / val scans)",
                      ", ".join(f"{len(f.get('train', []))} / {len(f.get('val', []))}" for f in folds) or "–"))
    return items


def _fairness_section(results: Mapping[str, Any] | None, predictions: pd.DataFrame | None, split: str,
                      dpi: int, notes: list[str]) -> dict[str, Any] | None:
    from brainalign.report.figures import fairness_figure, figure_to_base64, per_group_metrics

    table = per_group_metrics(results, predictions, split)
    if table.empty:
        notes.append("Fairness per group: skipped (no sensitive attribute in the run, or no predictions.csv).")
        return None
    rows = [{"method": r.method, "group": r.group, "n": _count(r.n), "n_pos": _count(r.n_pos),
             "cells": [_pct(getattr(r, k)) for k in ("auc", "acc", "tpr", "fpr", "positive_rate")]}
            for r in table.itertuples(index=False)]
    image = figure_to_base64(fairness_figure(per_group=table), dpi=dpi)
    return {"rows": rows, "image": image, "split": split}


def _maps_section(token_maps: Mapping[str, pd.DataFrame], meta: Any, truth: Mapping[str, Any] | None,
                  max_tokens: int, dpi: int, notes: list[str]) -> list[dict[str, Any]]:
    from brainalign.explain.token_maps import check_token_maps, score_against_truth
    from brainalign.report.figures import brain_map_figure, figure_to_base64

    out = []
    for name, df in token_maps.items():
        labels = meta.roi_labels if meta is not None and meta.n_rois == df.shape[1] else None
        if meta is not None and labels is None:
            notes.append(f"Token maps of '{name}' have {df.shape[1]} ROIs but the cohort has {meta.n_rois}; "
                         f"cohort coordinates and labels are not used for them.")
        try:
            frame = check_token_maps(df, labels)
        except BrainAlignError as err:
            if labels is None:
                raise
            notes.append(f"Token maps of '{name}': {err}; their columns are used as they are.")
            frame = check_token_maps(df, None)
        coords = meta.roi_coords if labels is not None and meta.roi_coords is not None else None
        scores, truth_note = [], None
        if truth is not None:
            if not truth.get("dx_rois"):
                truth_note = "the planted truth has no dx_rois; not scored"
            elif int(truth.get("n_rois") or frame.shape[1]) != frame.shape[1]:
                truth_note = f"truth is for {truth.get('n_rois')} ROIs, the maps have {frame.shape[1]}; not scored"
            else:
                other = truth.get("sensitive_rois") or None
                for token in frame.index:
                    s = score_against_truth(frame.loc[token].to_numpy(), truth["dx_rois"], other)
                    scores.append({"token": token, "auroc_dx": _pct(s["auroc"], 1),
                                   "auroc_sensitive": _pct(s.get("auroc_other"), 1),
                                   "top_dx": _pct(s["top_k_fraction"], 0),
                                   "top_sensitive": _pct(s.get("top_k_fraction_other"), 0),
                                   "k": s["k"]})
        shown = list(frame.index[:max_tokens])
        images = [{"token": token,
                   "image": figure_to_base64(brain_map_figure(frame.loc[token].to_numpy(), coords,
                                                              f"{name}: {token}", roi_labels=list(frame.columns)),
                                             dpi=dpi)}
                  for token in shown]
        omitted = [str(t) for t in frame.index[max_tokens:]]
        out.append({"method": name, "n_tokens": frame.shape[0], "n_rois": frame.shape[1], "images": images,
                    "omitted": omitted, "scores": scores, "truth_note": truth_note})
    return out


def render_report(results: Mapping[str, Any] | None = None, predictions: pd.DataFrame | None = None,
                  token_maps: Mapping[str, pd.DataFrame] | None = None, meta: Any = None,
                  truth: Mapping[str, Any] | None = None, *, config: Mapping[str, Any] | None = None,
                  title: str | None = None, n_scans: int | None = None, max_tokens: int = 12, dpi: int = 90) -> str:
    """The report as an HTML string, from already-loaded inputs (see :func:`write_report`)."""
    from brainalign.report.figures import figure_to_base64, roc_figure

    if results is None and not token_maps:
        raise BrainAlignError("nothing to report: no results and no token maps")
    notes: list[str] = []
    ctx: dict[str, Any] = {"title": title or "brainalign report", "notes": notes, "version": __version__}
    config = config if config is not None else (results or {}).get("config")
    ctx["config"] = [(k, _plain(v)) for k, v in (config or {}).items()]
    if meta is not None:
        ctx["cohort"] = [("name", meta.name), ("atlas", meta.atlas), ("ROIs", str(meta.n_rois)),
                         ("scans", str(n_scans) if n_scans is not None else "–"),
                         ("ROI coordinates", "yes" if meta.roi_coords is not None else "no"),
                         ("atlas image", meta.atlas_image or "–")]
    if truth is not None:
        ctx["truth"] = [("dx ROIs", _plain(truth.get("dx_rois"))),
                        ("sensitive ROIs", _plain(truth.get("sensitive_rois"))),
                        ("sensitive attribute", _plain(truth.get("sensitive")))]
    split = "test"
    if results is not None:
        ctx["task"] = _task_section(results)
        ctx["results"] = _results_section(results)
        split = ctx["results"]["split"]
    else:
        notes.append("No results.json: classification and fairness sections skipped.")
    if predictions is not None and not predictions.empty:
        if (predictions["split"] == split).any():
            ctx["roc"] = {"image": figure_to_base64(roc_figure(predictions, split), dpi=dpi), "split": split}
        else:
            notes.append(f"ROC curves: skipped (predictions have no '{split}' rows).")
        ctx["fairness"] = _fairness_section(results, predictions, split, dpi, notes)
    elif results is not None:
        notes.append("No predictions.csv: ROC curves skipped.")
        ctx["fairness"] = _fairness_section(results, None, split, dpi, notes)
    if token_maps:
        ctx["maps"] = _maps_section(token_maps, meta, truth, max_tokens, dpi, notes)
    elif truth is not None:
        notes.append("Planted truth is known but the run has no token maps to score.")
    env = _environment()
    return env.from_string(_template_text()).render(**ctx)


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _template_text() -> str:
    try:
        return resources.files("brainalign.report").joinpath("templates", _TEMPLATE).read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError) as err:
        raise BrainAlignError(f"report template {_TEMPLATE} is missing from the brainalign.report package "
                              f"data ({err}); reinstall brainalign") from None


def write_report(run_dir: str | Path, results: Mapping[str, Any] | str | Path | None = None,
                 predictions: pd.DataFrame | str | Path | None = None,
                 token_maps: Mapping[str, pd.DataFrame | str | Path] | None = None, cohort: Any = None,
                 truth: Mapping[str, Any] | str | Path | None = None, *, path: str | Path | None = None,
                 title: str | None = None, max_tokens: int = 12, dpi: int = 90) -> Path:
    """Write ``RUN/report.html``, a self-contained report (images embedded as base64 PNG).

    Parameters
    ----------
    run_dir : path
        The run folder; missing inputs are read from it: ``results.json``, ``predictions.csv``, and token-map
        CSVs (``token_maps.csv``, ``token_maps_<method>.csv``, ``<method>/token_maps.csv``; see
        :func:`brainalign.explain.token_maps.token_map_files`).
    results : dict or path, optional
        ``results.json`` content (:func:`brainalign.evaluation.benchmark.run_benchmark`).
    predictions : DataFrame or path, optional
        ``predictions.csv`` content (columns ``method, fold, split, scan_id, y, group, score``).
    token_maps : dict of method -> DataFrame (or CSV path), optional
        Token maps, rows = tokens, columns = ROIs in cohort order.
    cohort : Cohort, CohortMeta or path, optional
        For ROI labels and MNI coordinates (markers on a glass brain; without coordinates maps are bar plots
        of the top ROIs).  By default the run's ``config["cohort"]`` folder, when it exists.
    truth : dict or path, optional
        Planted truth (:func:`brainalign.data.simulate.load_truth` or a simulated cohort folder); each token map
        is then scored (AUROC and top-k share vs the dx and the sensitive ROIs).  By default the cohort's
        ``truth.json``, when there is one.
    path : path, optional
        Output file (default ``RUN/report.html``).
    title : str, optional
    max_tokens : int
        Brain-map figures per method (the rest are listed, and scored when truth is known).
    dpi : int
        Resolution of the embedded PNGs.

    Returns
    -------
    Path
        The written report.

    Raises
    ------
    BrainAlignError
        Nothing to report (no results and no token maps), or unreadable inputs.
    """
    run = Path(run_dir)
    res = _load_results(run, results)
    preds = _load_predictions(run, predictions)
    maps = _load_token_maps(run, token_maps)
    meta, cohort_root, n_scans = _load_meta(cohort, res)
    tr = _load_truth(truth, cohort_root)
    config = None
    if res is None and (run / "config.yaml").is_file():
        import yaml

        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    html = render_report(res, preds, maps, meta, tr, config=config, n_scans=n_scans,
                         title=title or f"brainalign report: {run.resolve().name}", max_tokens=max_tokens, dpi=dpi)
    out = Path(path) if path is not None else run / REPORT_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out
