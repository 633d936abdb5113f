"""Check a whole cohort folder and report every problem at once (``brainalign cohort validate DIR``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.data.cohort import (
    ARRAY_KINDS,
    META_FILE,
    PHENOTYPES_FILE,
    CohortMeta,
    array_path,
    array_problems,
    file_problems,
    load_meta,
    open_array,
    phenotype_problems,
    read_phenotypes,
)
from brainalign.errors import CohortError


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_cohort`.

    Attributes
    ----------
    root : Path
    problems : list of str
        Every problem found; empty means the cohort is valid.
    n_scans, n_subjects : int
    kinds : list of str
        Array folders present (``timeseries``, ``connectivity``).
    timepoints : dict
        ``{"min": .., "max": ..}`` over time series, when present.
    """

    root: Path
    problems: list[str] = field(default_factory=list)
    n_scans: int = 0
    n_subjects: int = 0
    kinds: list[str] = field(default_factory=list)
    timepoints: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def validate_cohort(root: str | Path, min_timepoints: int = 10) -> ValidationReport:
    """Read every file of a cohort folder and collect all problems.

    Checks ``cohort.json`` (keys, types, lengths of ROI labels/coordinates/networks), ``phenotypes.csv``
    (required columns, empty or duplicate IDs, declared columns and categories), that every scan has its
    array files and every file a scan, and each array's shape, values (NaN/inf), constant ROIs, length
    (``min_timepoints``) and symmetry.

    Parameters
    ----------
    root : path
    min_timepoints : int
        Time series shorter than this are reported.

    Returns
    -------
    ValidationReport
    """
    root = Path(root)
    report = ValidationReport(root=root)
    if not root.is_dir():
        report.problems.append(f"folder {root} does not exist")
        return report
    meta: CohortMeta | None = None
    try:
        meta = load_meta(root)
    except CohortError as err:
        report.problems += [f"{META_FILE}: {p}" if not p.startswith(META_FILE) else p for p in err.problems]
    try:
        df = read_phenotypes(root / PHENOTYPES_FILE)
    except CohortError as err:
        report.problems += err.problems
        return report
    report.problems += phenotype_problems(df, meta)
    if "scan_id" not in df or "subject_id" not in df:
        return report
    report.n_scans = len(df)
    report.n_subjects = int(df["subject_id"].nunique())
    report.kinds = [k for k in ARRAY_KINDS if (root / k).is_dir()]
    if not report.kinds:
        report.problems.append("neither timeseries/ nor connectivity/ exists")
        return report
    scan_ids = df["scan_id"].dropna().astype(str).drop_duplicates().tolist()
    report.problems += file_problems(root, scan_ids, report.kinds)
    if meta is None:
        return report
    lengths = []
    for kind in report.kinds:
        for sid in scan_ids:
            path = array_path(root, kind, sid)
            if not path.exists():
                continue  # already reported by file_problems
            try:
                arr = open_array(path, sid)
            except CohortError as err:
                report.problems += err.problems
                continue
            report.problems += array_problems(arr, kind, sid, meta.n_rois, min_timepoints)
            if kind == "timeseries" and arr.ndim == 2:
                lengths.append(arr.shape[0])
    if lengths:
        report.timepoints = {"min": int(np.min(lengths)), "max": int(np.max(lengths))}
    return report


def describe_columns(df: pd.DataFrame, max_levels: int = 8) -> dict[str, str]:
    """One-line summary per phenotype column (levels with counts, or numeric range)."""
    out = {}
    for col in df.columns:
        if col in ("scan_id", "subject_id"):
            continue
        s = df[col]
        numeric = pd.to_numeric(s, errors="coerce")
        n_missing = int(s.isna().sum())
        if numeric.notna().sum() == s.notna().sum() and s.nunique() > max_levels:
            text = f"numeric {numeric.min():.4g}..{numeric.max():.4g} (mean {numeric.mean():.4g})"
        else:
            counts = s.value_counts().head(max_levels)
            text = ", ".join(f"{k}: {v}" for k, v in counts.items())
            if s.nunique() > max_levels:
                text += f", ... ({s.nunique()} levels)"
        if n_missing:
            text += f"; {n_missing} missing"
        out[col] = text
    return out
