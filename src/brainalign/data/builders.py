"""Build cohort folders from raw sources: 4-D NIfTI images, ROI time-series text files, the ABIDE PCP release.

Every builder ends in :func:`brainalign.data.cohort.write_cohort`, so the on-disk format is always the same.
Scans are parsed once, parked as ``.npy`` in a staging folder next to the output (same disk, removed as the
cohort is written), and written only when every scan has been read: a failed build leaves no half-written cohort.

Policies (all documented on the functions):

- Bad input (unreadable file, ragged or non-numeric table, wrong number of ROIs, non-4-D image, empty atlas
  region, missing phenotype column) raises :class:`~brainalign.errors.BrainAlignError` naming the file, scan
  or column.
- Scans left out on purpose (failed quality control, no preprocessed data, a constant ROI) are recorded in
  ``CohortMeta.exclusions`` as ``{"id": ..., "reason": ...}``; nothing is dropped silently.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from brainalign.data.cohort import CohortMeta, phenotype_problems, write_cohort
from brainalign.errors import BrainAlignError, CohortError

__all__ = [
    "ABIDE_QC_COLUMNS",
    "abide_columns",
    "abide_phenotypes",
    "build_abide_cohort",
    "build_from_nifti",
    "build_from_roi_files",
    "infer_column_schema",
    "read_abide_table",
    "read_roi_file",
    "roi_centres",
]

ABIDE_QC_COLUMNS = ("qc_rater_1", "qc_anat_rater_2", "qc_func_rater_2", "qc_anat_rater_3", "qc_func_rater_3")
ABIDE_MISSING = -9999  # ABIDE's code for a missing value in numeric phenotype columns
ADULT_AGE = 18.0
ConstantPolicy = Literal["exclude", "error"]


# -- shared helpers ----------------------------------------------------------------------------------


class _Staging:
    """Scan arrays parsed once and parked as ``.npy`` until the cohort is written.

    The folder sits next to the output folder (same disk, chosen by the user) rather than in the system
    temporary folder, which is often a small RAM disk.  :meth:`drain` deletes each file as it is consumed,
    so the peak disk use stays close to the size of the final cohort.
    """

    def __init__(self, out_dir: Path):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
        self._n = 0

    def put(self, arr: np.ndarray) -> Path:
        path = self.dir / f"{self._n:07d}.npy"
        self._n += 1
        np.save(path, np.asarray(arr, dtype=np.float32))
        return path

    @staticmethod
    def drain(paths: Iterable[Path]) -> Iterator[np.ndarray]:
        for path in paths:
            arr = np.load(path)
            path.unlink()
            yield arr

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _check_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuse a non-empty output folder before any expensive work (``write_cohort`` checks again)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BrainAlignError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise BrainAlignError(f"output folder {out} exists and is not empty (pass overwrite=True / --overwrite)")
    return out


def _check_phenotypes(phenotypes: pd.DataFrame, what: str = "phenotypes") -> pd.DataFrame:
    """Copy of the table with ``scan_id`` and ``subject_id`` first, as strings, and a fresh 0..n-1 index."""
    if not isinstance(phenotypes, pd.DataFrame):
        raise BrainAlignError(f"{what} must be a pandas DataFrame, got {type(phenotypes).__name__}")
    missing = [c for c in ("scan_id", "subject_id") if c not in phenotypes]
    if missing:
        raise BrainAlignError(
            f"{what}: missing required column(s) {missing}; columns are {list(phenotypes.columns)}"
        )
    if len(phenotypes) == 0:
        raise BrainAlignError(f"{what}: the table has no rows")
    df = phenotypes.reset_index(drop=True).copy()
    for col in ("scan_id", "subject_id"):
        empty = df.index[df[col].isna()].tolist()
        if empty:
            raise BrainAlignError(f"{what}: column '{col}' is empty in row(s) {empty[:10]}")
        df[col] = df[col].astype(str)
    problems = phenotype_problems(df)  # unusable or duplicate scan IDs: fail before reading any scan
    if problems:
        raise CohortError(problems, where=what)
    rest = [c for c in df.columns if c not in ("scan_id", "subject_id")]
    return df[["scan_id", "subject_id", *rest]]


def infer_column_schema(df: pd.DataFrame, max_categories: int = 50) -> dict[str, dict[str, Any]]:
    """Column schemas for :class:`CohortMeta` guessed from a phenotype table.

    Numeric columns are declared ``numeric``; text or boolean columns with at most ``max_categories``
    distinct values are declared ``category`` with their observed values.  ``scan_id``, ``subject_id``
    and file-path columns (names ending in ``_path``) are left undeclared.

    Parameters
    ----------
    df : DataFrame
    max_categories : int

    Returns
    -------
    dict
        ``{column: {"type": "numeric"}}`` or ``{column: {"type": "category", "values": [...]}}``.
    """
    schema: dict[str, dict[str, Any]] = {}
    for col in df.columns:
        if col in ("scan_id", "subject_id") or str(col).endswith("_path"):
            continue
        values = df[col].dropna()
        if values.empty:
            continue
        if pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            schema[col] = {"type": "numeric"}
        elif values.nunique() <= max_categories:
            schema[col] = {"type": "category", "values": sorted({str(v) for v in values})}
    return schema


def _columns(df: pd.DataFrame, explicit: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    schema = infer_column_schema(df)
    schema.update({k: dict(v) for k, v in (explicit or {}).items()})
    return schema


def _aligned(values: Any, df: pd.DataFrame, column: str, what: str) -> list[Any]:
    """Per-row inputs: a sequence aligned with the rows, a mapping scan_id -> value, or a table column."""
    if values is None:
        if column not in df:
            raise BrainAlignError(f"no {what} given and the phenotype table has no '{column}' column")
        return df[column].tolist()
    if isinstance(values, Mapping):
        missing = [s for s in df["scan_id"] if s not in values]
        if missing:
            raise BrainAlignError(f"{what}: no entry for scan(s) {missing[:10]}")
        return [values[s] for s in df["scan_id"]]
    if isinstance(values, (str, Path)):
        raise BrainAlignError(f"{what} must be a sequence with one entry per phenotype row, got a single path")
    values = list(values)
    if len(values) != len(df):
        raise BrainAlignError(f"got {len(values)} {what} for {len(df)} rows of the phenotype table")
    return values


def _constant_columns(arr: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.ptp(arr, axis=0) == 0)


# -- ROI time-series text files ---------------------------------------------------------------------


def read_roi_file(path: str | Path) -> tuple[np.ndarray, list[str] | None]:
    """Read one ROI time-series text file as ABIDE PCP ships them (``*_rois_cc200.1D``).

    The file is a whitespace-separated table of T rows (time points) and R columns (ROIs).  A first line
    whose every token starts with ``#`` names the ROIs (``#2001 #2002 ...``, the ABIDE PCP header); any
    other line starting with ``#`` (``# comment``) is a comment.

    Parameters
    ----------
    path : path

    Returns
    -------
    data : array (T, R), float64
    labels : list of R str, or None
        ROI names from the header, without the ``#``.

    Raises
    ------
    BrainAlignError
        Unreadable, empty, ragged or non-numeric file, NaN/inf values, or a header whose length differs
        from the number of columns; the message names the file.
    """
    path = Path(path)
    try:
        with path.open() as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as err:
        raise BrainAlignError(f"ROI file {path}: cannot be read ({err})") from None
    tokens = first.split()
    is_header = bool(tokens) and all(t.startswith("#") and len(t) > 1 for t in tokens)
    labels = [t[1:] for t in tokens] if is_header else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy only warns on an empty file
            data = np.loadtxt(path, comments="#", ndmin=2, dtype=np.float64)
    except UserWarning:
        raise BrainAlignError(f"ROI file {path}: no data rows") from None
    except ValueError as err:
        raise BrainAlignError(
            f"ROI file {path}: not a table of numbers with the same number of columns on every line ({err})"
        ) from None
    if data.size == 0:
        raise BrainAlignError(f"ROI file {path}: no data rows")
    if not np.isfinite(data).all():
        rows, cols = np.nonzero(~np.isfinite(data))
        raise BrainAlignError(
            f"ROI file {path}: NaN/inf value(s) in column(s) {sorted(set(cols.tolist()))[:10]}, "
            f"first at data row {rows[0] + 1}"
        )
    if labels is not None and len(labels) != data.shape[1]:
        raise BrainAlignError(
            f"ROI file {path}: header names {len(labels)} ROIs but the rows have {data.shape[1]} columns"
        )
    return data, labels


def _check_roi_file(path: Path, data: np.ndarray, labels: list[str] | None, ref: list[str] | None,
                    n_rois: int | None) -> None:
    if n_rois is not None and data.shape[1] != n_rois:
        raise BrainAlignError(f"ROI file {path}: {data.shape[1]} ROI columns, expected {n_rois}")
    if ref is not None and labels is not None and labels != ref:
        diff = next(i for i, (a, b) in enumerate(zip(labels, ref, strict=True)) if a != b)
        raise BrainAlignError(
            f"ROI file {path}: header differs from the other files at column {diff} "
            f"('{labels[diff]}' instead of '{ref[diff]}')"
        )
    if data.shape[0] < 2:
        raise BrainAlignError(f"ROI file {path}: only {data.shape[0]} time point(s)")


def build_from_roi_files(
    out_dir: str | Path,
    files: Sequence[str | Path] | Mapping[str, str | Path] | None,
    phenotypes: pd.DataFrame,
    *,
    atlas_name: str = "cc200",
    roi_labels: Sequence[str] | None = None,
    tr: float | None = None,
    constant: ConstantPolicy = "exclude",
    atlas_image: str | Path | None = None,
    name: str | None = None,
    description: str = "",
    columns: Mapping[str, Mapping[str, Any]] | None = None,
    exclusions: Sequence[Mapping[str, Any]] = (),
    overwrite: bool = False,
) -> Path:
    """Build a cohort from ROI time-series text files (one per scan, ABIDE PCP ``.1D`` layout).

    Parameters
    ----------
    out_dir : path
        Cohort folder to write.
    files : sequence of paths aligned with the phenotype rows, mapping scan_id -> path, or None
        One (T, R) text file per scan (see :func:`read_roi_file`).  None reads the column ``roi_path``.
    phenotypes : DataFrame
        One row per scan with ``scan_id`` and ``subject_id``, then free columns.
    atlas_name : str
    roi_labels : sequence of R str, optional
        Region names.  Default: the names in the files' ``#`` header, else ``ROI_001`` ...
    tr : float, optional
        Repetition time in seconds (ROI text files do not record it).
    constant : {"exclude", "error"}
        Policy for a scan with a constant (zero-variance) ROI, which has no defined correlation.
        ABIDE PCP ships a few scans whose ROI lies outside the subject's brain mask and is all zeros.
        ``"exclude"`` (default) leaves the scan out and records ``{"id": scan_id, "reason": "constant ROI k"}``
        (k the 0-based column, several separated by commas); ``"error"`` raises.
    atlas_image : path, optional
        Label image of the atlas, stored (absolute) in ``cohort.json`` for brain maps.
    name, description : str
        Cohort name (default: the folder name) and free text.
    columns : dict, optional
        Column schemas; merged over those inferred by :func:`infer_column_schema`.
    exclusions : sequence of dict
        Exclusions made before this call (e.g. quality control), kept in ``cohort.json``.
    overwrite : bool

    Returns
    -------
    Path
        The cohort folder; arrays are ``timeseries/<scan_id>.npy`` of shape (T_i, R).

    Raises
    ------
    BrainAlignError
        Corrupt, ragged or non-numeric file, a column count that differs between files or from
        ``roi_labels``, a missing file, or every scan excluded; messages name the file and scan.
    """
    if constant not in ("exclude", "error"):
        raise BrainAlignError(f"constant must be 'exclude' or 'error', got {constant!r}")
    out = _check_out_dir(out_dir, overwrite)
    df = _check_phenotypes(phenotypes)
    paths = [Path(p) for p in _aligned(files, df, "roi_path", "ROI files")]
    n_rois = len(roi_labels) if roi_labels is not None else None
    header: list[str] | None = None
    excluded = [dict(e) for e in exclusions]
    keep_rows, staged = [], []
    with _Staging(out) as stage:
        for i, (sid, path) in enumerate(zip(df["scan_id"], paths)):
            if not path.is_file():
                raise BrainAlignError(f"scan '{sid}': ROI file {path} does not exist")
            data, labels = read_roi_file(path)
            _check_roi_file(path, data, labels, header, n_rois)
            n_rois = data.shape[1]
            header = header or labels
            const = _constant_columns(data)
            if const.size:
                ks = ", ".join(str(k) for k in const.tolist())
                if constant == "error":
                    raise BrainAlignError(
                        f"scan '{sid}' ({path}): constant (zero-variance) ROI column(s) {ks}; "
                        "pass constant='exclude' to leave such scans out"
                    )
                excluded.append({"id": sid, "reason": f"constant ROI {ks}", "file": str(path)})
                continue
            keep_rows.append(i)
            staged.append(stage.put(data))
        if not keep_rows:
            raise BrainAlignError(f"every scan was excluded ({len(excluded)} exclusions); nothing to write")
        kept = df.iloc[keep_rows].reset_index(drop=True)
        labels_out = list(roi_labels) if roi_labels is not None else header
        meta = CohortMeta(
            name=name or out.name,
            n_rois=int(n_rois),
            atlas=atlas_name,
            roi_labels=[str(x) for x in labels_out] if labels_out is not None else None,
            tr=tr,
            atlas_image=str(Path(atlas_image).resolve()) if atlas_image is not None else None,
            columns=_columns(kept, columns),
            exclusions=excluded,
            description=description,
        )
        return write_cohort(out, meta, kept, timeseries=stage.drain(staged), overwrite=overwrite)


# -- ABIDE PCP ----------------------------------------------------------------------------------------


def read_abide_table(path: str | Path) -> pd.DataFrame:
    """Read the ABIDE PCP phenotype CSV (``Phenotypic_V1_0b_preprocessed1.csv``), with a clear error."""
    path = Path(path)
    try:
        return pd.read_csv(path, low_memory=False)
    except FileNotFoundError:
        raise BrainAlignError(f"ABIDE phenotype file {path} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise BrainAlignError(f"ABIDE phenotype file {path} cannot be parsed as CSV: {err}") from None


def _abide_code(table: pd.DataFrame, col: str, codes: Mapping[int, str], where: str) -> pd.Series:
    """Map a 1/2-coded ABIDE column to names, naming the files with other values."""
    raw = pd.to_numeric(table[col], errors="coerce")
    mapped = raw.map(codes)
    bad = mapped.isna()
    if bad.any():
        ids = table.loc[bad, "FILE_ID"].astype(str).tolist()
        vals = table.loc[bad, col].tolist()
        raise BrainAlignError(
            f"{where}: column '{col}' must be one of {sorted(codes)}; FILE_ID(s) {ids[:5]} have {vals[:5]}"
        )
    return mapped


def abide_phenotypes(
    table: pd.DataFrame, *, quality_filter: bool = True, where: str = "ABIDE phenotype table"
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Map the ABIDE PCP phenotype table to cohort columns and apply the exclusions.

    Rows are left out, and recorded, when ``FILE_ID`` is ``"no_filename"`` (no preprocessed data;
    reason ``"no preprocessed data (FILE_ID no_filename)"``) or, with ``quality_filter``, when any of
    :data:`ABIDE_QC_COLUMNS` says ``fail`` (reason ``"failed quality control"``; the failing columns are in
    ``"detail"``).  This is the NeuroLIP filter; nilearn's ``quality_checked=True`` is stricter (it also drops
    missing ratings and ``maybe`` from rater 1 and 3).  On the full table it keeps 873 of 1112 subjects.

    Parameters
    ----------
    table : DataFrame
        Needs ``SUB_ID``, ``FILE_ID``, ``SITE_ID``, ``DX_GROUP`` (1 = ASD, 2 = control), ``SEX``
        (1 = male, 2 = female), ``AGE_AT_SCAN``; the QC columns when ``quality_filter``; ``FIQ`` is kept
        when present (ABIDE's -9999 becomes missing).
    quality_filter : bool
    where : str
        Name used in error messages.

    Returns
    -------
    phenotypes : DataFrame
        Columns ``scan_id`` (FILE_ID), ``subject_id`` (SUB_ID), ``dx`` ("autism"/"control"),
        ``sex`` ("male"/"female"), ``age`` (years), ``site``, ``srs`` ("child" under 18, else "adult"),
        and ``fiq`` when present.
    exclusions : list of dict
        ``{"id", "subject_id", "reason"[, "detail"]}`` per excluded row.
    """
    required = ["SUB_ID", "FILE_ID", "SITE_ID", "DX_GROUP", "SEX", "AGE_AT_SCAN"]
    if quality_filter:
        required += list(ABIDE_QC_COLUMNS)
    missing = [c for c in required if c not in table]
    if missing:
        hint = " (or pass quality_filter=False)" if set(missing) & set(ABIDE_QC_COLUMNS) else ""
        raise BrainAlignError(f"{where}: missing column(s) {missing}{hint}")
    table = table.reset_index(drop=True)
    file_id = table["FILE_ID"].astype(str).str.strip()
    no_file = file_id.eq("no_filename") | table["FILE_ID"].isna()
    fails = pd.DataFrame(False, index=table.index, columns=list(ABIDE_QC_COLUMNS))
    if quality_filter:
        for col in ABIDE_QC_COLUMNS:
            fails[col] = table[col].astype(str).str.strip().str.lower().eq("fail")
    exclusions = []
    for i in np.flatnonzero(no_file | fails.any(axis=1)):
        sub = str(table["SUB_ID"][i]).strip()
        ex = {"id": sub if no_file[i] else file_id[i], "subject_id": sub}
        if no_file[i]:
            ex["reason"] = "no preprocessed data (FILE_ID no_filename)"
        else:
            ex["reason"] = "failed quality control"
            ex["detail"] = "fail in " + ", ".join(c for c in ABIDE_QC_COLUMNS if fails.at[i, c])
        exclusions.append(ex)
    kept = table[~(no_file | fails.any(axis=1))].reset_index(drop=True)
    age = pd.to_numeric(kept["AGE_AT_SCAN"], errors="coerce").astype(float)
    if age.isna().any():
        raise BrainAlignError(
            f"{where}: column 'AGE_AT_SCAN' is missing or not numeric for FILE_ID(s) "
            f"{kept.loc[age.isna(), 'FILE_ID'].tolist()[:5]}"
        )
    out = pd.DataFrame({
        "scan_id": kept["FILE_ID"].astype(str).str.strip(),
        "subject_id": kept["SUB_ID"].astype(str).str.strip(),
        "dx": _abide_code(kept, "DX_GROUP", {1: "autism", 2: "control"}, where),
        "sex": _abide_code(kept, "SEX", {1: "male", 2: "female"}, where),
        "age": age,
        "site": kept["SITE_ID"].astype(str).str.strip(),
        "srs": np.where(age < ADULT_AGE, "child", "adult"),
    })
    if "FIQ" in kept:
        fiq = pd.to_numeric(kept["FIQ"], errors="coerce").astype(float)
        out["fiq"] = fiq.where(fiq != ABIDE_MISSING)
    return out, exclusions


def abide_columns(phenotypes: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Column schemas of an ABIDE cohort made by :func:`abide_phenotypes`."""
    cols: dict[str, dict[str, Any]] = {
        "dx": {"type": "category", "values": ["autism", "control"]},
        "sex": {"type": "category", "values": ["male", "female"]},
        "age": {"type": "numeric"},
        "site": {"type": "category", "values": sorted(phenotypes["site"].unique().tolist())},
        "srs": {"type": "category", "values": ["child", "adult"]},
    }
    if "fiq" in phenotypes:
        cols["fiq"] = {"type": "numeric"}
    return cols


def _abide_files(roi_dir_or_files: str | Path | Iterable[str | Path], derivative: str) -> dict[str, Path]:
    """Map FILE_ID -> ROI file from a folder or a list of files named ``<FILE_ID>_<derivative>.1D``."""
    suffix = f"_{derivative}.1D"
    if isinstance(roi_dir_or_files, (str, Path)):
        folder = Path(roi_dir_or_files)
        if not folder.is_dir():
            raise BrainAlignError(f"ROI folder {folder} does not exist")
        paths = sorted(folder.glob(f"*{suffix}"))
        if not paths:
            raise BrainAlignError(f"ROI folder {folder} holds no '*{suffix}' file")
    else:
        paths = [Path(p) for p in roi_dir_or_files]
        bad = [p.name for p in paths if not p.name.endswith(suffix)]
        if bad:
            raise BrainAlignError(f"ROI file name(s) {bad[:5]} do not end in '{suffix}' (expected <FILE_ID>{suffix})")
    return {p.name[: -len(suffix)]: p for p in paths}


def build_abide_cohort(
    out_dir: str | Path,
    pheno_csv: str | Path | pd.DataFrame,
    roi_dir_or_files: str | Path | Iterable[str | Path],
    *,
    quality_filter: bool = True,
    derivative: str = "rois_cc200",
    constant: ConstantPolicy = "exclude",
    missing: Literal["error", "exclude"] = "error",
    atlas_image: str | Path | None = None,
    name: str = "abide",
    overwrite: bool = False,
) -> Path:
    """Build an ABIDE cohort from the PCP phenotype table and ROI time-series files.

    Parameters
    ----------
    out_dir : path
    pheno_csv : path or DataFrame
        ``Phenotypic_V1_0b_preprocessed1.csv`` (the file ``nilearn.datasets.fetch_abide_pcp`` downloads).
    roi_dir_or_files : path or iterable of paths
        A folder, or files, named ``<FILE_ID>_<derivative>.1D`` (each (T, R), see :func:`read_roi_file`).
    quality_filter : bool
        Leave out subjects with ``fail`` in any of :data:`ABIDE_QC_COLUMNS` (see :func:`abide_phenotypes`).
    derivative : str
        PCP derivative, e.g. ``"rois_cc200"``; the atlas name is the part after ``rois_``.
    constant : {"exclude", "error"}
        Policy for scans with a constant ROI (see :func:`build_from_roi_files`).
    missing : {"error", "exclude"}
        A kept row whose FILE_ID has no file is an error (default), or is excluded with reason
        ``"no ROI file"`` (useful with a partial download).
    atlas_image : path, optional
        Atlas label image to record (e.g. CC200); not shipped with brainalign.
    name : str
    overwrite : bool

    Returns
    -------
    Path
        Cohort folder: ``scan_id`` = FILE_ID, ``subject_id`` = SUB_ID, columns as in :func:`abide_phenotypes`;
        time series (T_i, R) with T_i varying by site.  Files without a phenotype row are recorded as
        exclusions (reason ``"no phenotype row"``).
    """
    if missing not in ("error", "exclude"):
        raise BrainAlignError(f"missing must be 'error' or 'exclude', got {missing!r}")
    where = str(pheno_csv) if isinstance(pheno_csv, (str, Path)) else "ABIDE phenotype table"
    table = pheno_csv if isinstance(pheno_csv, pd.DataFrame) else read_abide_table(pheno_csv)
    phen, exclusions = abide_phenotypes(table, quality_filter=quality_filter, where=where)
    files = _abide_files(roi_dir_or_files, derivative)
    has_file = phen["scan_id"].isin(list(files))
    if not has_file.all():
        absent = phen.loc[~has_file, "scan_id"].tolist()
        if missing == "error":
            raise BrainAlignError(
                f"{len(absent)} FILE_ID(s) in {where} have no '<FILE_ID>_{derivative}.1D' file, e.g. {absent[:5]} "
                "(pass missing='exclude' to leave them out)"
            )
        exclusions += [{"id": s, "reason": "no ROI file"} for s in absent]
    all_ids = set(table["FILE_ID"].astype(str).str.strip())
    exclusions += [{"id": f, "reason": "no phenotype row", "file": str(p)}
                   for f, p in files.items() if f not in all_ids]
    phen = phen[has_file].reset_index(drop=True)
    if phen.empty:
        raise BrainAlignError(f"no scan of {where} is left after exclusions ({len(exclusions)} excluded)")
    atlas = derivative.removeprefix("rois_")
    return build_from_roi_files(
        out_dir, [files[s] for s in phen["scan_id"]], phen,
        atlas_name=atlas, constant=constant, atlas_image=atlas_image, name=name,
        description=(f"ABIDE Preprocessed Connectomes Project, {derivative} ROI time series; "
                     f"quality filter {'on' if quality_filter else 'off'} (fail in any of "
                     f"{', '.join(ABIDE_QC_COLUMNS)}). TR varies by site and is not recorded."),
        columns=abide_columns(phen), exclusions=exclusions, overwrite=overwrite,
    )


# -- NIfTI -------------------------------------------------------------------------------------------


def _img_name(img: Any, i: int) -> str:
    return str(img) if isinstance(img, (str, Path)) else f"in-memory image #{i}"


def _load_header(img: Any, name: str, sid: str):
    """nibabel image (header read, data left on disk), with a clear error for unreadable files."""
    import nibabel as nib

    if not isinstance(img, (str, Path)):
        return img
    try:
        return nib.load(str(img))
    except FileNotFoundError:
        raise BrainAlignError(f"scan '{sid}': image file {name} does not exist") from None
    except Exception as err:  # nibabel raises ImageFileError, OSError, EOFError... for a bad file
        raise BrainAlignError(
            f"scan '{sid}': cannot read {name} as a NIfTI image ({type(err).__name__}: {err})"
        ) from None


def _header_tr(img: Any) -> float | None:
    zooms = img.header.get_zooms()
    if len(zooms) < 4 or not zooms[3] or zooms[3] <= 0:
        return None
    unit = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "sec"
    scale = {"msec": 1e-3, "usec": 1e-6}.get(unit, 1.0)
    return float(zooms[3]) * scale


def _check_func_images(images: list[Any], scan_ids: list[str], tr: float | None) -> tuple[list[Any], float | None]:
    """Open every header up front (cheap) so a bad file fails before hours of extraction."""
    headers, trs = [], {}
    for i, (img, sid) in enumerate(zip(images, scan_ids)):
        name = _img_name(img, i)
        h = _load_header(img, name, sid)
        if len(h.shape) != 4:
            raise BrainAlignError(
                f"scan '{sid}': {name} has shape {tuple(h.shape)}; a 4-D (x, y, z, time) image is needed"
            )
        if h.shape[3] < 2:
            raise BrainAlignError(f"scan '{sid}': {name} has {h.shape[3]} volume(s); a time series needs at least 2")
        headers.append(h)
        trs[sid] = _header_tr(h)
    if tr is None:
        known = {round(v, 4) for v in trs.values() if v is not None}
        if len(known) > 1:
            raise BrainAlignError(
                f"images have different TRs in their headers ({sorted(known)} s); pass tr= explicitly"
            )
        tr = known.pop() if known else None
    return headers, tr


def _load_atlas(atlas_image: Any):
    import nibabel as nib

    if not isinstance(atlas_image, (str, Path)):
        return atlas_image
    try:
        return nib.load(str(atlas_image))
    except FileNotFoundError:
        raise BrainAlignError(f"atlas image {atlas_image} does not exist") from None
    except Exception as err:  # nibabel raises ImageFileError, OSError... for a bad file
        raise BrainAlignError(
            f"atlas {atlas_image}: cannot read it as a NIfTI image ({type(err).__name__}: {err})"
        ) from None


def _atlas(atlas_image: Any):
    """Load the atlas: ("labels", image, label values) for a 3-D label image, ("maps", image, None) for 4-D."""
    img = _load_atlas(atlas_image)
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
        from nilearn.image import index_img

        img = index_img(img, 0)
    if len(shape) == 4:
        return "maps", img, None
    if len(shape) != 3:
        raise BrainAlignError(
            f"atlas {_img_name(atlas_image, 0)} has shape {tuple(img.shape)}; expected 3-D labels or 4-D maps"
        )
    data = np.asanyarray(img.dataobj)
    if not np.allclose(data, np.round(data)):
        raise BrainAlignError(
            f"atlas {_img_name(atlas_image, 0)} is 3-D but not integer-valued; a label image is needed "
            "(a probabilistic atlas must be 4-D, one map per region)"
        )
    values = np.unique(np.round(data).astype(np.int64))
    values = values[values != 0]
    if values.size < 2:
        raise BrainAlignError(f"atlas {_img_name(atlas_image, 0)} has {values.size} region(s); at least 2 are needed")
    return "labels", img, values


def roi_centres(labels_img: Any, label_values: Sequence[int]) -> np.ndarray:
    """(R, 3) region centres of mass in world (MNI) mm for a 3-D label image.

    One pass over the voxels (``np.bincount``), so a 1 mm atlas takes well under a second.  We do not use
    ``nilearn.plotting.find_parcellation_cut_coords``: it takes ~0.1 s per region at 1 mm (16 s for
    MIST-122), it reports only the left half of a bilateral label, and it drops the first label of an atlas
    that has no background voxel.  For a non-convex region the centre of mass may fall outside the region.

    Parameters
    ----------
    labels_img : path or nibabel image
    label_values : sequence of R int
        Label values in ROI order.

    Returns
    -------
    array (R, 3)
        Labels absent from the image get NaN.
    """
    import nibabel as nib

    img = nib.load(str(labels_img)) if isinstance(labels_img, (str, Path)) else labels_img
    data = np.round(np.asanyarray(img.dataobj)).astype(np.int64)
    wanted = np.asarray(label_values, dtype=np.int64)
    inside = data > 0
    ids = data[inside]
    n = int(max(ids.max(initial=0), wanted.max(initial=0))) + 1
    counts = np.bincount(ids, minlength=n).astype(float)
    centre_vox = np.stack([np.bincount(ids, weights=ax, minlength=n) for ax in np.nonzero(inside)], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre_vox /= counts[:, None]
    return np.asarray(nib.affines.apply_affine(img.affine, centre_vox[wanted]), dtype=float)


def _same_grid(a: Any, b: Any) -> bool:
    return tuple(a.shape[:3]) == tuple(b.shape[:3]) and np.allclose(a.affine, b.affine, atol=1e-4)


def _read_confounds(conf: Any, n_timepoints: int, sid: str) -> np.ndarray | None:
    """(T, k) confound array from None, an array/DataFrame, or a CSV/TSV file (header optional)."""
    if conf is None:
        return None
    name = str(conf) if isinstance(conf, (str, Path)) else "confounds array"
    if isinstance(conf, (str, Path)):
        try:
            table = pd.read_csv(conf, sep=None, engine="python")
            if all(_is_number(c) for c in table.columns):  # no header line: the first row is data
                table = pd.read_csv(conf, sep=None, engine="python", header=None)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise BrainAlignError(f"scan '{sid}': cannot read confounds file {name} ({err})") from None
    else:
        table = pd.DataFrame(np.asarray(conf) if not isinstance(conf, pd.DataFrame) else conf)
    for col in table.columns:
        if not pd.api.types.is_numeric_dtype(table[col]):
            raise BrainAlignError(f"scan '{sid}': confounds {name}: column '{col}' is not numeric")
    arr = table.to_numpy(dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.shape[0] != n_timepoints:
        raise BrainAlignError(f"scan '{sid}': confounds {name} have {arr.shape[0]} rows for {n_timepoints} volumes")
    if not np.isfinite(arr).all():
        col = table.columns[np.flatnonzero(~np.isfinite(arr).all(axis=0))[0]]
        raise BrainAlignError(f"scan '{sid}': confounds {name}: NaN/inf in column '{col}' (fill them, e.g. with 0)")
    return arr


def _is_number(x: Any) -> bool:
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


class _Extractor:
    """ROI signals of one 4-D image with a nilearn masker, every atlas region kept in atlas order."""

    def __init__(self, kind: str, atlas_img: Any, values: np.ndarray | None, labels: list[str], clean: dict):
        self.kind, self.atlas_img, self.values, self.labels, self.clean = kind, atlas_img, values, labels, clean
        self._grids: list[tuple[Any, Any]] = []  # (reference image, atlas resampled to its grid)

    def _labels_on_grid(self, img: Any) -> Any:
        """The atlas on the image grid (nearest neighbour), cached per grid: resampling once per grid
        lets us see which regions vanish before nilearn silently drops their columns."""
        if _same_grid(self.atlas_img, img):
            return self.atlas_img
        for ref, res in self._grids:
            if _same_grid(ref, img):
                return res
        from nilearn.image import resample_to_img

        res = resample_to_img(self.atlas_img, img, interpolation="nearest", force_resample=True, copy_header=True)
        self._grids.append((img, res))
        return res

    def __call__(self, img: Any, header: Any, confounds: np.ndarray | None, sid: str, name: str) -> np.ndarray:
        from nilearn.maskers import NiftiLabelsMasker, NiftiMapsMasker

        if self.kind == "labels":
            atlas = self._labels_on_grid(header)
            present = np.unique(np.round(np.asanyarray(atlas.dataobj)).astype(np.int64))
            lost = [self.labels[k] for k, v in enumerate(self.values) if v not in present]
            if lost:
                raise BrainAlignError(
                    f"scan '{sid}' ({name}): atlas region(s) {lost[:10]} have no voxel on the image grid "
                    f"({len(lost)} of {len(self.values)}); use an atlas matching the image's resolution and "
                    "field of view"
                )
            masker = NiftiLabelsMasker(labels_img=atlas, resampling_target="data", reports=False, **self.clean)
        else:
            masker = NiftiMapsMasker(maps_img=self.atlas_img, resampling_target="data", reports=False, **self.clean)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                signals = masker.fit_transform(img, confounds=confounds)
        except (OSError, EOFError, zlib.error) as err:
            raise BrainAlignError(
                f"scan '{sid}': cannot read the data of {name} ({type(err).__name__}: {err})"
            ) from None
        except ValueError as err:
            raise BrainAlignError(f"scan '{sid}': nilearn could not extract ROI signals from {name}: {err}") from None
        return self._checked(np.asarray(signals, dtype=np.float64), sid, name)

    def _checked(self, signals: np.ndarray, sid: str, name: str) -> np.ndarray:
        R = len(self.labels)
        if signals.ndim != 2 or signals.shape[1] != R:
            raise BrainAlignError(
                f"scan '{sid}' ({name}): nilearn returned {signals.shape[-1]} region signals for {R} atlas regions "
                "(some regions are empty on this image)"
            )
        if not np.isfinite(signals).all():
            rois = np.flatnonzero(~np.isfinite(signals).all(axis=0))
            names = [self.labels[k] for k in rois[:10]]
            raise BrainAlignError(f"scan '{sid}' ({name}): NaN/inf signal in region(s) {names}")
        const = _constant_columns(signals)
        if const.size:
            raise BrainAlignError(
                f"scan '{sid}' ({name}): region(s) {[self.labels[k] for k in const[:10]]} have a constant signal "
                "(outside the image's brain coverage?)"
            )
        return signals


def _atlas_coords(kind: str, atlas_img: Any, values: np.ndarray | None) -> list[list[float]] | None:
    """ROI coordinates, or None when nilearn cannot find them (coordinates are optional metadata)."""
    try:
        if kind == "labels":
            coords = roi_centres(atlas_img, values)
        else:
            from nilearn.plotting import find_probabilistic_atlas_cut_coords

            coords = find_probabilistic_atlas_cut_coords(atlas_img)
    except Exception as err:  # coordinates only decorate plots; a failure must not stop the build
        warnings.warn(f"could not compute ROI coordinates from the atlas ({err}); leaving them out", stacklevel=3)
        return None
    coords = np.asarray(coords, dtype=float)
    return coords.tolist() if np.isfinite(coords).all() else None


def build_from_nifti(
    out_dir: str | Path,
    func_images: Sequence[Any] | Mapping[str, Any] | None,
    atlas_image: Any,
    phenotypes: pd.DataFrame,
    *,
    atlas_name: str,
    roi_labels: Sequence[str] | None = None,
    tr: float | None = None,
    confounds: Sequence[Any] | Mapping[str, Any] | None = None,
    standardize: str | bool = "zscore_sample",
    detrend: bool = True,
    low_pass: float | None = None,
    high_pass: float | None = None,
    roi_coords: Sequence[Sequence[float]] | None = None,
    roi_networks: Sequence[str] | None = None,
    name: str | None = None,
    description: str = "",
    columns: Mapping[str, Mapping[str, Any]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Build a cohort from 4-D functional NIfTI images and an atlas, with nilearn maskers.

    A 3-D integer atlas is a label image (``NiftiLabelsMasker``, mean signal per region); a 4-D atlas is
    probabilistic (``NiftiMapsMasker``, one map per region).  Every atlas region is kept, in atlas order
    (label value order, or map order): a region with no voxel on an image's grid, or with a constant signal,
    is an error naming the scan and region, instead of nilearn's silent column drop.

    Parameters
    ----------
    out_dir : path
    func_images : sequence aligned with phenotype rows, mapping scan_id -> image, or None
        4-D images (paths or nibabel images), each (X, Y, Z, T).  None reads the column ``func_path``.
    atlas_image : path or nibabel image
        (X, Y, Z) labels (0 = background) or (X, Y, Z, R) maps.  A path is recorded (absolute) in
        ``cohort.json``; an in-memory image is saved into the cohort as ``atlas.nii.gz``.
    phenotypes : DataFrame
        One row per scan: ``scan_id``, ``subject_id``, free columns.
    atlas_name : str
    roi_labels : sequence of R str, optional
        Default: the label values (``"1"``, ``"2"``...) or ``ROI_001``... for maps.
    tr : float, optional
        Repetition time (s).  Default: from the image headers (all must agree).
    confounds : sequence aligned with rows (or mapping scan_id -> ...), optional
        Per scan: None, a (T, k) array/DataFrame, or a CSV/TSV file (header optional), regressed out.
    standardize, detrend, low_pass, high_pass
        Signal cleaning, as in ``nilearn.signal.clean`` (filters need ``tr``).
    roi_coords : (R, 3) MNI mm, optional
        Default: computed from the atlas (:func:`roi_centres` for labels, nilearn's
        ``find_probabilistic_atlas_cut_coords`` for maps).
    roi_networks : sequence of R str, optional
    name, description : str
    columns : dict, optional
        Column schemas merged over the inferred ones.
    overwrite : bool

    Returns
    -------
    Path
        Cohort folder with ``timeseries/<scan_id>.npy`` of shape (T_i, R), float32.

    Raises
    ------
    BrainAlignError
        Unreadable or non-4-D image, bad atlas, empty region, bad confounds; messages name the scan and file.
    """
    out = _check_out_dir(out_dir, overwrite)
    df = _check_phenotypes(phenotypes)
    images = _aligned(func_images, df, "func_path", "functional images")
    conf_list = _aligned(confounds, df, "", "confounds") if confounds is not None else [None] * len(df)
    kind, atlas_img, values = _atlas(atlas_image)
    R = len(values) if kind == "labels" else atlas_img.shape[3]
    default_labels = [str(int(v)) for v in values] if kind == "labels" else [f"ROI_{k + 1:03d}" for k in range(R)]
    labels = [str(x) for x in roi_labels] if roi_labels is not None else default_labels
    if len(labels) != R:
        raise BrainAlignError(f"roi_labels has {len(labels)} names but the atlas has {R} regions")
    headers, tr = _check_func_images(images, df["scan_id"].tolist(), tr)
    if (low_pass or high_pass) and tr is None:
        raise BrainAlignError("temporal filtering (low_pass/high_pass) needs the TR; pass tr=")
    clean = {"standardize": standardize, "detrend": detrend, "low_pass": low_pass, "high_pass": high_pass, "t_r": tr}
    extract = _Extractor(kind, atlas_img, values, labels, clean)
    with _Staging(out) as stage:
        staged = []
        for i, (sid, img, h, conf) in enumerate(zip(df["scan_id"], images, headers, conf_list)):
            name_i = _img_name(img, i)
            conf_arr = _read_confounds(conf, h.shape[3], sid)
            staged.append(stage.put(extract(img if isinstance(img, (str, Path)) else h, h, conf_arr, sid, name_i)))
        coords = roi_coords if roi_coords is not None else _atlas_coords(kind, atlas_img, values)
        in_memory = not isinstance(atlas_image, (str, Path))
        meta = CohortMeta(
            name=name or out.name,
            n_rois=R,
            atlas=atlas_name,
            roi_labels=labels,
            roi_coords=[list(map(float, c)) for c in coords] if coords is not None else None,
            roi_networks=[str(n) for n in roi_networks] if roi_networks is not None else None,
            tr=float(tr) if tr is not None else None,
            atlas_image="atlas.nii.gz" if in_memory else str(Path(atlas_image).resolve()),
            columns=_columns(df, columns),
            description=description,
        )
        written = write_cohort(out, meta, df, timeseries=stage.drain(staged), overwrite=overwrite)
    if in_memory:
        atlas_img.to_filename(str(written / "atlas.nii.gz"))
    return written
