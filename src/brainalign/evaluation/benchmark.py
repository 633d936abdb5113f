"""The benchmark runner: registered methods under the NeuroLIP protocol → ``RUN/results.json`` and tables.

Protocol: a stratified, person-grouped held-out test set plus stratified, person-grouped K-fold
cross-validation on the rest (:func:`~brainalign.evaluation.protocol.make_splits`).  Each fold's model is
trained on the fold's training scans, then scored on its validation scans and on the held-out test set.
The table reports the mean ± std over folds of the test-set metrics (validation metrics when there is no
test set), as the paper does; the fold models' averaged test scores also get bootstrap confidence intervals.
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from brainalign.data.cohort import Cohort
from brainalign.errors import BrainAlignError
from brainalign.evaluation.metrics import UndefinedMetricWarning, bootstrap_metrics, evaluate_binary
from brainalign.evaluation.protocol import Splits, make_splits
from brainalign.explain.token_maps import mean_token_maps, score_token_maps, write_token_maps
from brainalign.models import Task, get_method
from brainalign.report.html import write_report

#: Table columns in the paper's layout: (metric key, header).
TABLE_COLUMNS = [("auc", "AUC"), ("acc", "ACC"), ("sen", "SEN"), ("spc", "SPC"),
                 ("dpd", "DPD↓"), ("deodds", "DEOdds↓"), ("es_auc", "ES-AUC")]


@dataclass
class BenchmarkConfig:
    """Everything that defines a benchmark run (written to ``RUN/config.yaml``).

    Parameters
    ----------
    cohort : str
        Cohort folder.
    methods : list of str
        Registered method names (``brainalign.models.available_methods()``).
    target : str
        Binary phenotype column to predict (e.g. ``dx``).
    sensitive : str, optional
        Categorical column for fairness metrics (e.g. ``sex``).
    positive : str, optional
        Target label counted as positive; by default the label that is not a control label.
    test_size : float
        Fraction of persons held out for testing (0 for cross-validation only).
    n_folds : int
        Cross-validation folds on the remaining persons.
    stratify_site : str, optional
        Column (e.g. ``site``) also stratified on, jointly with the target.
    seed : int
        Seed for splits, methods and bootstrap.
    n_boot : int
        Bootstrap resamples for confidence intervals (0 to skip).
    method_params : dict
        ``{method: {param: value}}`` passed to method constructors.
    """

    cohort: str
    methods: list[str]
    target: str
    sensitive: str | None = None
    positive: str | None = None
    test_size: float = 0.2
    n_folds: int = 5
    stratify_site: str | None = None
    seed: int = 0
    n_boot: int = 1000
    method_params: dict[str, dict[str, Any]] = field(default_factory=dict)


def _metric_summary(per_fold: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    keys = per_fold[0].keys()
    mean = {k: float(np.nanmean([m[k] for m in per_fold])) for k in keys}
    std = {k: float(np.nanstd([m[k] for m in per_fold], ddof=1)) if len(per_fold) > 1 else 0.0 for k in keys}
    return mean, std


def _ci(task: Task, idx: np.ndarray, score: np.ndarray, n_boot: int, seed: int) -> dict[str, dict[str, float]]:
    """Bootstrap 95% intervals of every metric for one set of scores (resampling stratified by label × group)."""
    y = task.y[idx]
    lenient = functools.partial(evaluate_binary, strict=False)  # undefined metrics become NaN, not a crash
    arrays, strata = ((y, score), y) if task.groups is None else \
        ((y, score, task.groups[idx]), np.column_stack([y, task.groups[idx]]))
    with warnings.catch_warnings():  # resamples with an undefined metric are counted in n_failed instead
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        res = bootstrap_metrics(lenient, *arrays, n_boot=n_boot, seed=seed, stratify=strata, undefined="nan")
    return {k: r.to_dict() for k, r in res.items()}


def run_method(name: str, task: Task, splits: Splits, config: BenchmarkConfig,
               on_fold: Callable[[str, int], None] | None = None,
               workdir: str | Path | None = None) -> tuple[dict[str, Any], list[pd.DataFrame], list]:
    """Train and score one method on every fold.

    Returns its results entry, its prediction tables, and its token maps per fold (empty for methods
    without ``token_maps``).  Token maps explain each evaluated scan once: with K folds, fold k's model explains
    test scans k, k + K, k + 2K, ... (the whole test set is covered once, at 1/K of the cost of explaining it with
    every fold's model; occlusion maps run N + 1 forward passes per scan), or, without a test set, its own
    validation scans.
    """
    folds, preds, maps = [], [], []
    test = splits.test
    test_scores = []
    for k, fold in enumerate(splits.folds):
        method = get_method(name, seed=config.seed + k, **config.method_params.get(name, {}))
        if workdir is not None:
            method.workdir = Path(workdir) / name / f"fold{k}"
        t0 = time.perf_counter()
        method.fit(task, fold.train, val=fold.val)
        fit_s = time.perf_counter() - t0
        entry: dict[str, Any] = {"fold": k, "fit_seconds": round(fit_s, 3), "n_train": int(len(fold.train))}
        if getattr(method, "selected_epoch_", None) is not None:
            entry.update(selected_epoch=method.selected_epoch_, val_auc_by_epoch=method.val_auc_by_epoch_)
        for split_name, idx in (("val", fold.val), ("test", test)):
            if len(idx) == 0:
                continue
            score = np.asarray(method.predict_proba(task, idx), dtype=float)
            if score.shape != (len(idx),) or not np.isfinite(score).all():
                raise BrainAlignError(f"method '{name}' returned invalid scores (shape {score.shape}) on fold {k}")
            groups = task.groups[idx] if task.groups is not None else None
            entry[split_name] = evaluate_binary(task.y[idx], score, groups, strict=False)
            if split_name == "test":
                test_scores.append(score)
            preds.append(pd.DataFrame({
                "method": name, "fold": k, "split": split_name, "scan_id": task.cohort.scan_ids[idx],
                "y": task.y[idx], "group": groups if groups is not None else "", "score": score,
            }))
        explained = test[k::len(splits.folds)] if len(test) else fold.val
        if hasattr(method, "token_maps") and len(explained):
            maps.append(method.token_maps(task, explained))
        folds.append(entry)
        if on_fold is not None:
            on_fold(name, k)
    report_split = "test" if len(test) else "val"
    mean, std = _metric_summary([f[report_split] for f in folds])
    result: dict[str, Any] = {"folds": folds, "reported_split": report_split, "mean": mean, "std": std,
                              "params": config.method_params.get(name, {})}
    if len(test) and config.n_boot > 0:
        ensemble = np.mean(test_scores, axis=0)
        result["test_fold_average"] = _ci(task, test, ensemble, config.n_boot, config.seed)
    return result, preds, maps


def run_benchmark(config: BenchmarkConfig, out_dir: str | Path | None = None,
                  on_fold: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Run every method of ``config`` under the protocol; write the run folder if ``out_dir`` is given.

    Writes ``config.yaml``, ``results.json``, ``results.md`` (the table), ``predictions.csv``
    (scan, method, fold, split, label, group, score), ``report.html``, and for methods with token maps
    ``token_maps_<method>.csv`` (rows = tokens, columns = ROIs; NIfTI too when the atlas image is known).

    Returns
    -------
    dict
        The content of ``results.json``.
    """
    for name in config.methods:
        get_method(name, **config.method_params.get(name, {}))  # unknown names, bad options: fail before training
        if config.test_size == 0 and config.method_params.get(name, {}).get("select_epoch"):
            raise BrainAlignError(f"{name}: select_epoch picks each fold's epoch on its validation scans, which "
                                  "are what a run without a test set reports; set test_size > 0")
    cohort = Cohort.load(config.cohort)
    task = Task.from_cohort(cohort, config.target, config.sensitive, config.positive)
    extra = None
    if config.stratify_site:
        extra = task.cohort.column(config.stratify_site).astype(str).to_numpy()
    splits = make_splits(task.y, task.cohort.subject_ids, test_size=config.test_size, n_folds=config.n_folds,
                         stratify_extra=extra, seed=config.seed)
    results: dict[str, Any] = {
        "config": asdict(config),
        "task": {"target": task.target, "positive": task.positive, "negative": task.negative,
                 "sensitive": task.sensitive, "n_scans": len(task), "n_subjects": int(len(set(task.cohort.subject_ids))),
                 "n_positive": int(task.y.sum()), "excluded": task.excluded},
        "splits": splits.to_dict(),
        "methods": {},
    }
    all_preds, all_maps = [], {}
    for name in config.methods:
        workdir = Path(out_dir) / "methods" if out_dir is not None else None
        results["methods"][name], preds, maps = run_method(name, task, splits, config, on_fold, workdir)
        all_preds += preds
        if maps:
            all_maps[name] = maps
    token_frames = {name: _token_map_summary(maps, task, results["methods"][name]) for name, maps in all_maps.items()}
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(asdict(config), sort_keys=False))
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "results.md").write_text(results_table(results) + "\n")
        pd.concat(all_preds).to_csv(out / "predictions.csv", index=False)
        for name, frame in token_frames.items():
            write_token_maps(frame, out, task.cohort.meta.roi_labels, task.cohort.atlas_image_path(),
                             prefix=f"token_maps_{name}")
        write_report(out, results, token_maps=token_frames)
    return results


def _token_map_summary(maps: list, task: Task, result: dict[str, Any]) -> pd.DataFrame:
    """Mean map per attribute-value token over the explained scans of every fold (their number goes into
    ``result["token_map_n_scans"]``); on a simulated cohort, each token's map is scored against the planted
    ROIs (AUROC) into ``result["token_map_scores"]``."""
    stacked = np.concatenate([m.maps for m in maps])
    result["token_map_n_scans"] = len(stacked)
    words = [w for m in maps for w in m.words]
    frame = mean_token_maps(stacked, words, task.cohort.meta.roi_labels)
    truth_path = task.cohort.root / "truth.json"
    if truth_path.exists():
        truth = json.loads(truth_path.read_text())
        result["token_map_scores"] = score_token_maps(frame, truth, maps[0].tokens_with_role("disease"),
                                                      maps[0].tokens_with_role("sensitive"))
    return frame


def table_columns(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(metric key, header) pairs of the results table; fairness columns only when the task has a sensitive column."""
    has_fairness = (results.get("task") or {}).get("sensitive") is not None
    return [c for c in TABLE_COLUMNS if has_fairness or c[0] in ("auc", "acc", "sen", "spc")]


def results_table(results: dict[str, Any]) -> str:
    """Markdown table, percent, mean ± std over folds, in the paper's layout (fairness columns need a sensitive attribute)."""
    cols = table_columns(results)
    split = next(iter(results["methods"].values()))["reported_split"] if results["methods"] else "test"
    lines = [f"| Method ({split}, mean ± std over {results['config']['n_folds']} folds, %) | "
             + " | ".join(h for _, h in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for name, res in results["methods"].items():
        cells = [f"{100 * res['mean'][k]:.2f} ± {100 * res['std'][k]:.2f}" for k, _ in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
