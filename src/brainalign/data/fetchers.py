"""Download public datasets (through nilearn) and build cohort folders from them.

Nothing here runs unless the user asks for a fetch.  Downloads are cached under one data directory,
:func:`data_home`: ``$BRAINALIGN_DATA`` when set, else ``~/.cache/brainalign``.  nilearn keeps its usual
layout below it (``ABIDE_pcp/``, ``adhd/``, ``msdl_atlas/``), so a second fetch reuses the files.

- :func:`fetch_abide` — ABIDE Preprocessed Connectomes Project, C-PAC pipeline, band-pass filtered, no
  global signal regression, CC200 ROI time series (``nilearn.datasets.fetch_abide_pcp``).
- :func:`fetch_adhd` — the 40-subject ADHD-200 resting-state subset that nilearn hosts
  (``nilearn.datasets.fetch_adhd``: preprocessed 4-D NIfTI in MNI space, confounds, phenotypes), reduced to
  ROI time series with an atlas.  The full ADHD-200 release (e.g. the Athena pipeline of the Preprocessed
  Connectomes Project) is not available through any package; build it with
  :func:`brainalign.data.builders.build_from_nifti` or ``build_from_roi_files`` after downloading it yourself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from brainalign.data.builders import (
    abide_phenotypes,
    build_abide_cohort,
    build_from_nifti,
    read_abide_table,
)
from brainalign.errors import BrainAlignError

__all__ = ["DATA_ENV_VAR", "DEFAULT_DATA_HOME", "adhd_phenotypes", "data_home", "fetch_abide", "fetch_adhd"]

DATA_ENV_VAR = "BRAINALIGN_DATA"
DEFAULT_DATA_HOME = Path("~/.cache/brainalign")
ABIDE_PHENOTYPE_FILE = "Phenotypic_V1_0b_preprocessed1.csv"
ABIDE_DERIVATIVE = "rois_cc200"
# fetch_abide_pcp options of the NeuroLIP protocol, and the folder nilearn derives from them.
ABIDE_OPTIONS = {"pipeline": "cpac", "band_pass_filtering": True, "global_signal_regression": False}
ABIDE_STRATEGY_DIR = ("cpac", "filt_noglobal")
ADHD_TR = 2.0  # seconds; the value nilearn reports for this subset


def data_home(data_dir: str | Path | None = None) -> Path:
    """The download cache folder, created if needed.

    Parameters
    ----------
    data_dir : path, optional
        Explicit folder; wins over everything else.

    Returns
    -------
    Path
        ``data_dir``, else ``$BRAINALIGN_DATA``, else ``~/.cache/brainalign``.
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_ENV_VAR) or DEFAULT_DATA_HOME
    path = Path(data_dir).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BrainAlignError(
            f"cannot create the data folder {path} ({err}); set {DATA_ENV_VAR} or pass data_dir"
        ) from None
    return path


def _dataset_dir(home: Path, dataset: str) -> Path:
    """nilearn's folder for a dataset under ``home``, created now.

    nilearn looks for an existing dataset folder in several places (``NILEARN_DATA``, ``~/nilearn_data``...)
    before the ``data_dir`` it is given; creating it here makes nilearn use our cache, so we know where the
    files land.
    """
    path = home / dataset
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- ABIDE --------------------------------------------------------------------------------------------


def _abide_table(dataset_dir: Path, bunch: Any) -> pd.DataFrame:
    """The full phenotype CSV that nilearn downloaded (its Bunch drops the ``no_filename`` rows, which we
    want to count as exclusions), or the Bunch's table when the file is not where nilearn puts it."""
    path = dataset_dir / ABIDE_PHENOTYPE_FILE
    if path.is_file():
        return read_abide_table(path)
    table = getattr(bunch, "phenotypic", None) if not isinstance(bunch, dict) else bunch.get("phenotypic")
    if not isinstance(table, pd.DataFrame):
        raise BrainAlignError(f"nilearn returned no ABIDE phenotype table and {path} does not exist")
    return table.reset_index(drop=True)


def fetch_abide(
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    n_subjects: int | None = None,
    quality_filter: bool = True,
    constant: Literal["exclude", "error"] = "exclude",
    overwrite: bool = False,
    verbose: int = 1,
) -> Path:
    """Download ABIDE PCP CC200 ROI time series through nilearn and build the cohort.

    Two calls to ``nilearn.datasets.fetch_abide_pcp`` (C-PAC, band-pass filtered, no global signal
    regression, ``quality_checked=False``): the first, with no derivative, downloads only the phenotype
    table; our quality filter (``fail`` in any QC column, see
    :func:`brainalign.data.builders.abide_phenotypes`) picks the scans; the second downloads exactly those
    scans' ``rois_cc200`` files, passing their ``FILE_ID`` list as a nilearn filter.  (nilearn's own
    ``quality_checked=True`` is a different, stricter filter, and its ``n_subjects`` counts scans before
    our filter, so neither is used.)

    Parameters
    ----------
    out_dir : path
        Cohort folder to write.
    data_dir : path, optional
        Download cache; default :func:`data_home`.  Files land in ``<data_dir>/ABIDE_pcp/``.
    n_subjects : int, optional
        Keep the first n scans that pass the filter, in table order (all 873 by default with the filter,
        1035 without).
    quality_filter : bool
    constant : {"exclude", "error"}
        Policy for scans with a constant ROI (see :func:`brainalign.data.builders.build_from_roi_files`).
    overwrite : bool
    verbose : int
        nilearn's download verbosity.

    Returns
    -------
    Path
        The cohort folder (time series (T_i, 200), TR varying by site).

    Notes
    -----
    nilearn also loads every downloaded ``.1D`` file into memory (about 300 MB for the whole release)
    before we read them again from disk to write the cohort.
    """
    from nilearn import datasets

    if n_subjects is not None and (int(n_subjects) != n_subjects or n_subjects < 1):
        raise BrainAlignError(f"n_subjects must be a positive integer, got {n_subjects!r}")
    home = data_home(data_dir)
    dataset_dir = _dataset_dir(home, "ABIDE_pcp")
    common = dict(data_dir=str(home), quality_checked=False, verbose=verbose, **ABIDE_OPTIONS)
    table = _abide_table(dataset_dir, datasets.fetch_abide_pcp(derivatives=[], **common))
    phen, _ = abide_phenotypes(table, quality_filter=quality_filter, where=str(dataset_dir / ABIDE_PHENOTYPE_FILE))
    file_ids = phen["scan_id"].tolist()
    if n_subjects is not None:
        file_ids = file_ids[: int(n_subjects)]
        # Cut the table after the last kept scan: the rows skipped before it are reported as exclusions,
        # the rows after it were simply not requested.
        last = int(np.flatnonzero(table["FILE_ID"].astype(str).str.strip().to_numpy() == file_ids[-1])[0])
        table = table.iloc[: last + 1]
    bunch = datasets.fetch_abide_pcp(derivatives=[ABIDE_DERIVATIVE], FILE_ID=file_ids, **common)
    n_loaded = len(bunch[ABIDE_DERIVATIVE]) if ABIDE_DERIVATIVE in bunch else 0
    del bunch  # nilearn loaded every file; free that memory before we stream them again
    folder = dataset_dir.joinpath(*ABIDE_STRATEGY_DIR)
    files = [folder / f"{fid}_{ABIDE_DERIVATIVE}.1D" for fid in file_ids]
    absent = [f.name for f in files if not f.is_file()]
    if absent or n_loaded != len(file_ids):
        raise BrainAlignError(
            f"nilearn returned {n_loaded} of {len(file_ids)} ABIDE files; missing from {folder}: {absent[:5]}"
        )
    return build_abide_cohort(out_dir, table, files, quality_filter=quality_filter, constant=constant,
                              name="abide", overwrite=overwrite)


# -- ADHD-200 (nilearn's 40-subject subset) -------------------------------------------------------------


def _adhd_subject(path: str | Path) -> str:
    """Subject id from nilearn's file name ``<id>_rest_tshift_RPI_voreg_mni.nii.gz``."""
    return Path(path).name.split("_")[0]


def _adhd_sex(values: pd.Series, subjects: Sequence[str]) -> pd.Series:
    """Sex as "male"/"female" from letters (M/F, male/female) or numeric codes.

    Numeric codes follow ADHD-200 (1 = male, 0 = female); a column of 1 and 2 only is read the ABIDE way
    (1 = male, 2 = female).  Anything else is an error naming the subjects.
    """
    text = values.astype(str).str.strip().str.strip('"').str.lower()
    mapped = text.map({"m": "male", "male": "male", "f": "female", "female": "female"})
    numeric = pd.to_numeric(values, errors="coerce")
    codes = set(numeric.dropna().astype(int).tolist())
    table = {1: "male", 2: "female"} if codes and codes <= {1, 2} and 2 in codes else {1: "male", 0: "female"}
    mapped = mapped.fillna(numeric.map(table))
    bad = mapped.isna().to_numpy()
    if bad.any():
        raise BrainAlignError(
            f"ADHD phenotypes: column 'sex' has unknown value(s) {values[bad].tolist()[:5]} for subject(s) "
            f"{[s for s, b in zip(subjects, bad) if b][:5]}"
        )
    return mapped


def adhd_phenotypes(table: pd.DataFrame, subject_ids: Sequence[str]) -> pd.DataFrame:
    """Map nilearn's ADHD phenotype table to cohort columns, one row per subject in ``subject_ids`` order.

    Parameters
    ----------
    table : DataFrame
        ``fetch_adhd(...).phenotypic``: needs ``Subject``, ``adhd`` (1 = ADHD, 0 = control), ``sex``,
        ``age``, ``site``.
    subject_ids : sequence of str
        Subjects in the order of the functional images (7-digit ids).

    Returns
    -------
    DataFrame
        ``scan_id`` = ``subject_id`` = the subject id, ``dx`` ("adhd"/"control"), ``sex``, ``age`` (years),
        ``site``.
    """
    missing = [c for c in ("Subject", "adhd", "sex", "age", "site") if c not in table]
    if missing:
        raise BrainAlignError(f"ADHD phenotypes: missing column(s) {missing}; columns are {list(table.columns)}")
    subj = table["Subject"].map(lambda x: f"{int(x):07d}" if _is_int(x) else str(x).strip())
    rows = pd.Series(np.arange(len(table)), index=subj.to_numpy())
    rows = rows[~rows.index.duplicated()]
    absent = [s for s in subject_ids if s not in rows.index]
    if absent:
        raise BrainAlignError(f"ADHD phenotypes: no row for subject(s) {absent[:10]}")
    t = table.iloc[rows[list(subject_ids)].to_numpy()].reset_index(drop=True)
    adhd = pd.to_numeric(t["adhd"], errors="coerce").map({1: "adhd", 0: "control"})
    if adhd.isna().any():
        raise BrainAlignError(
            f"ADHD phenotypes: column 'adhd' must be 1 or 0; subject(s) "
            f"{[s for s, b in zip(subject_ids, adhd.isna()) if b][:5]} have {t.loc[adhd.isna(), 'adhd'].tolist()[:5]}"
        )
    ids = [str(s) for s in subject_ids]
    return pd.DataFrame({
        "scan_id": ids,
        "subject_id": ids,
        "dx": adhd,
        "sex": _adhd_sex(t["sex"], ids),
        "age": pd.to_numeric(t["age"], errors="coerce").astype(float),
        "site": t["site"].astype(str).str.strip().str.strip('"'),
    })


def _is_int(x: Any) -> bool:
    try:
        return float(x) == int(float(x))
    except (TypeError, ValueError):
        return False


def _msdl(home: Path, verbose: int) -> dict[str, Any]:
    from nilearn import datasets

    _dataset_dir(home, "msdl_atlas")
    atlas = datasets.fetch_atlas_msdl(data_dir=str(home), verbose=verbose)
    return {
        "atlas_image": atlas["maps"],
        "atlas_name": "msdl",
        "roi_labels": [str(x) for x in atlas["labels"]],
        "roi_coords": [list(map(float, c)) for c in atlas["region_coords"]],
        "roi_networks": [str(x) for x in atlas["networks"]],
    }


def fetch_adhd(
    out_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    n_subjects: int | None = None,
    atlas: str | Path = "msdl",
    atlas_name: str | None = None,
    roi_labels: Sequence[str] | None = None,
    confounds: bool = True,
    standardize: str | bool = "zscore_sample",
    detrend: bool = True,
    low_pass: float | None = 0.1,
    high_pass: float | None = 0.01,
    overwrite: bool = False,
    verbose: int = 1,
) -> Path:
    """Download nilearn's ADHD-200 resting-state subset and build an ROI time-series cohort.

    The source is ``nilearn.datasets.fetch_adhd``: 40 subjects (ADHD and controls, several sites) from the
    ADHD-200 sample, preprocessed (slice timing, realignment, MNI normalisation) 4-D images with nuisance
    regressors and phenotypes, TR 2 s.  The full ADHD-200 release is not available through a package.

    Parameters
    ----------
    out_dir : path
    data_dir : path, optional
        Download cache; default :func:`data_home`.
    n_subjects : int, optional
        First n of the 40 subjects (all by default).
    atlas : "msdl" or path
        ``"msdl"``: nilearn's probabilistic MSDL atlas (39 regions, with names, coordinates and networks),
        read with ``NiftiMapsMasker``.  A path: a 3-D label image (``NiftiLabelsMasker``) or a 4-D
        probabilistic atlas.
    atlas_name : str, optional
        Recorded name (default ``"msdl"`` or the file name).
    roi_labels : sequence of str, optional
        Region names for a user atlas.
    confounds : bool
        Regress out nilearn's per-subject nuisance regressors.
    standardize, detrend, low_pass, high_pass
        Signal cleaning (see :func:`brainalign.data.builders.build_from_nifti`); defaults band-pass
        0.01-0.1 Hz.
    overwrite : bool
    verbose : int

    Returns
    -------
    Path
        Cohort folder: ``scan_id`` = ``subject_id`` = the ADHD-200 id; ``dx`` ("adhd"/"control"), ``sex``,
        ``age``, ``site``; time series (T, R).
    """
    from nilearn import datasets

    home = data_home(data_dir)
    _dataset_dir(home, "adhd")
    ds = datasets.fetch_adhd(n_subjects=n_subjects, data_dir=str(home), verbose=verbose)
    funcs = [str(f) for f in ds["func"]]
    subjects = [_adhd_subject(f) for f in funcs]
    phen = adhd_phenotypes(ds["phenotypic"], subjects)
    if isinstance(atlas, str) and atlas == "msdl":
        spec = _msdl(home, verbose)
    else:
        spec = {"atlas_image": str(atlas), "atlas_name": atlas_name or Path(atlas).name.split(".")[0],
                "roi_labels": roi_labels}
    if atlas_name:
        spec["atlas_name"] = atlas_name
    tr = float(ds.get("t_r", ADHD_TR) or ADHD_TR)
    return build_from_nifti(
        out_dir, funcs, phenotypes=phen, tr=tr,
        confounds=[str(c) for c in ds["confounds"]] if confounds else None,
        standardize=standardize, detrend=detrend, low_pass=low_pass, high_pass=high_pass,
        name="adhd", columns={"dx": {"type": "category", "values": ["adhd", "control"]},
                              "sex": {"type": "category", "values": ["male", "female"]},
                              "age": {"type": "numeric"}},
        description=("ADHD-200 resting-state subset hosted by nilearn (nilearn.datasets.fetch_adhd), "
                     f"{len(funcs)} subjects, atlas {spec['atlas_name']}; confounds "
                     f"{'regressed out' if confounds else 'not used'}, band-pass {high_pass}-{low_pass} Hz."),
        overwrite=overwrite, **spec,
    )
