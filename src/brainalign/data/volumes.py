"""Whole-brain volume cohorts on the MNI152 2 mm grid (METHODS §4): on-disk format, lazy reading, masked stacks.

A volume cohort folder holds::

    cohort.json                 {"kind": "volume", "name", "description", "mask" (optional file), "notes": [...]}
    phenotypes.csv              one row per scan: scan_id, subject_id, stimulus_id, then free columns
    stimuli.csv                 one row per stimulus: stimulus_id, caption, optional image_path
    volumes/<scan_id>.nii.gz    one 3-D map per scan (any grid; see below)
    mask.nii.gz                 optional cohort mask, 91x109x91 (intersected with the MNI brain mask)
    embeddings/{image,text}.npy optional precomputed stimulus embeddings, (n_stim, D) float
    embeddings/ids.txt          one stimulus_id per line: row k of every embeddings file belongs to line k
    .cache/                     memory-mapped masked stacks (written by :meth:`VolumeCohort.masked_stack`)

Grid and orientation
--------------------
Every volume is served on the MNI152 2 mm grid, shape :data:`MNI_SHAPE` (91, 109, 91), RAS affine
:data:`MNI_AFFINE` (x from -90 mm, y from -126 mm, z from -72 mm).  A volume in another axis orientation (for
example FSL's radiological LAS layout, the same grid with the x axis flipped) is reoriented exactly with
``nibabel.as_closest_canonical`` (a flip/permutation, no interpolation).  A volume that is still off the grid
afterwards (other voxel size, field of view or origin) is resampled with nilearn's ``resample_img``
(continuous interpolation, 0 outside the source field of view).  Both are decided from the headers when the
cohort is loaded and recorded in :attr:`VolumeCohort.notes` (and a warning).

Values
------
:meth:`VolumeCohort.volume` z-scores each volume over the in-mask voxels and sets voxels outside the mask to 0.
NaN or infinite voxels outside the mask are set to 0; inside the mask they are an error naming the scan (masks
are what decides which voxels count: pass a cohort mask that excludes them).  Headers are checked at
:meth:`VolumeCohort.load`; voxel contents when a volume is read, and all at once by
:func:`check_volume_contents`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from brainalign.errors import BrainAlignError, CohortError

__all__ = [
    "EMBEDDING_KINDS",
    "MNI_AFFINE",
    "MNI_SHAPE",
    "VolumeCohort",
    "check_volume_contents",
    "mni_brain_mask",
    "to_mni_grid",
    "write_embeddings",
    "write_volume_cohort",
]

MNI_SHAPE = (91, 109, 91)
#: RAS affine of the MNI152 2 mm grid (FSL's MNI152_T1_2mm / templateflow MNI152NLin6Asym res-02, x flipped to RAS).
MNI_AFFINE = np.array([[2.0, 0, 0, -90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])
META_FILE = "cohort.json"
PHENOTYPES_FILE = "phenotypes.csv"
STIMULI_FILE = "stimuli.csv"
VOLUMES_DIR = "volumes"
EMBEDDINGS_DIR = "embeddings"
EMBEDDING_IDS_FILE = "ids.txt"
CACHE_DIR = ".cache"
EMBEDDING_KINDS = ("image", "text")
REQUIRED_COLUMNS = ("scan_id", "subject_id", "stimulus_id")
FORMAT_VERSION = 1
VOLUME_SUFFIX = ".nii.gz"
#: Packages that ship the MNI152 2 mm brain mask on 91x109x91, tried in order (file located, never imported).
MASK_SOURCES = (
    ("nimare", "nimare/resources/templates/tpl-MNI152NLin6Asym_res-02_desc-brain_mask.nii.gz"),
    ("nimare", "nimare/resources/templates/MNI152_2x2x2_brainmask.nii.gz"),
)


# -- the MNI grid and mask -----------------------------------------------------------------------------


def _package_file(dist: str, relpath: str) -> Path | None:
    import importlib.metadata

    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(relpath)))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


@functools.lru_cache(maxsize=1)
def _mni_mask_array() -> tuple[np.ndarray, str]:
    for dist, rel in MASK_SOURCES:
        path = _package_file(dist, rel)
        if path is None:
            continue
        img = nib.as_closest_canonical(nib.load(str(path)))
        if img.shape == MNI_SHAPE and np.allclose(img.affine, MNI_AFFINE):
            return np.asarray(img.dataobj) > 0, f"{dist}: {rel}"
    from nilearn.datasets import load_mni152_brain_mask
    from nilearn.image import resample_img

    warnings.warn(
        "the MNI152 2 mm brain mask on 91x109x91 comes from the package nimare, which is not installed "
        "(pip install --no-deps nimare==0.22.1); using nilearn's MNI152 mask resampled onto the grid instead",
        stacklevel=3,
    )
    src = load_mni152_brain_mask(resolution=2)
    img = resample_img(src, target_affine=MNI_AFFINE, target_shape=MNI_SHAPE, interpolation="nearest",
                       force_resample=True, copy_header=True)
    return np.asarray(img.dataobj) > 0, "nilearn load_mni152_brain_mask(resolution=2), resampled (nearest)"


def mni_brain_mask() -> nib.Nifti1Image:
    """The MNI152 2 mm brain mask on the 91x109x91 grid (uint8, 1 in the brain), RAS affine :data:`MNI_AFFINE`.

    Source, in order: the FSL/templateflow ``MNI152NLin6Asym`` 2 mm brain mask shipped by ``nimare==0.22.1``
    (located through ``importlib.metadata``, not imported; 228,483 voxels); without it, nilearn's
    ``load_mni152_brain_mask(resolution=2)`` (a 99x117x95 grid in current nilearn) resampled onto the grid with
    nearest-neighbour interpolation, with a warning.  ``mni_mask_source()`` tells which was used.
    """
    data, _ = _mni_mask_array()
    img = nib.Nifti1Image(data.astype(np.uint8), MNI_AFFINE)
    img.set_data_dtype(np.uint8)
    return img


def mni_mask_source() -> str:
    """Where :func:`mni_brain_mask` came from (package file or nilearn fallback)."""
    return _mni_mask_array()[1]


def _grid_action(shape: tuple[int, ...], affine: np.ndarray) -> str:
    """``"ok"``, ``"reorient"`` (exact flip/permutation onto the grid) or ``"resample"``, from a header."""
    shape3 = tuple(int(s) for s in shape[:3])
    if shape3 == MNI_SHAPE and np.allclose(affine, MNI_AFFINE, atol=1e-3):
        return "ok"
    ornt = nib.orientations.io_orientation(affine)
    canon = affine @ nib.orientations.inv_ornt_aff(ornt, shape3)
    canon_shape = tuple(shape3[int(i)] for i in ornt[:, 0])
    if canon_shape == MNI_SHAPE and np.allclose(canon, MNI_AFFINE, atol=1e-3):
        return "reorient"
    return "resample"


def to_mni_grid(img: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, str]:
    """A 3-D image's data on the MNI 2 mm grid.

    Parameters
    ----------
    img : nibabel image
        3-D, or 4-D with a single volume.

    Returns
    -------
    data : array (91, 109, 91), float32
        Reoriented exactly (``as_closest_canonical``) and, if still off the grid, resampled with continuous
        interpolation (0 outside the source field of view).
    action : {"ok", "reorient", "resample"}
    """
    if len(img.shape) == 4 and img.shape[3] == 1:
        img = nib.Nifti1Image(np.asanyarray(img.dataobj)[..., 0], img.affine, img.header)
    action = _grid_action(img.shape, img.affine)
    if action == "ok":
        return np.asarray(img.dataobj, dtype=np.float32), action
    img = nib.as_closest_canonical(img)
    if action == "reorient":
        return np.asarray(img.dataobj, dtype=np.float32), action
    from nilearn.image import resample_img

    data = np.asarray(img.dataobj, dtype=np.float32)
    # NaNs would spread through the interpolation; they are zeroed here and the mask decides what counts.
    img = nib.Nifti1Image(np.nan_to_num(data, nan=0.0, posinf=0.0, neginf=0.0), img.affine)
    out = resample_img(img, target_affine=MNI_AFFINE, target_shape=MNI_SHAPE, interpolation="continuous",
                       force_resample=True, copy_header=True)
    return np.asarray(out.dataobj, dtype=np.float32), action


# -- reading and checking -------------------------------------------------------------------------------


def _read_csv(path: Path, id_cols: Sequence[str]) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype={c: str for c in id_cols}, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise CohortError([f"{path.name} is missing"], where=str(path.parent)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CohortError([f"{path.name} cannot be parsed as CSV: {err}"], where=str(path.parent)) from None


def _table_problems(df: pd.DataFrame, required: Sequence[str], unique: str, file: str) -> list[str]:
    from brainalign.data.cohort import _SAFE_ID

    problems = [f"{file}: missing required column '{c}'" for c in required if c not in df]
    if problems:
        return problems
    for col in required:
        empty = df.index[df[col].isna()].tolist()
        if empty:
            problems.append(f"{file}: column '{col}' is empty in row(s) {[i + 2 for i in empty][:10]}")
    ids = df[unique].dropna().astype(str)
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        problems.append(f"{file}: duplicate {unique}(s) {dup[:10]}")
    if unique == "scan_id":
        bad = [s for s in ids if not _SAFE_ID.match(s)]
        if bad:
            problems.append(f"{file}: scan_id(s) {bad[:5]} are not usable as file names (letters, digits, . _ - only)")
    return problems


def _header_problem(path: Path, scan_id: str) -> tuple[str | None, str | None]:
    """(problem, grid action) for one volume file, from its header only."""
    where = f"scan '{scan_id}' ({VOLUMES_DIR}/{path.name})"
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        return f"{where}: file is missing", None
    except Exception as err:  # nibabel raises many types (ImageFileError, gzip/EOF errors) for a bad file
        return f"{where}: not a readable NIfTI image ({type(err).__name__}: {err})", None
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        return (f"{where}: image has shape {tuple(img.shape)}; one 3-D map per scan is expected (split 4-D series "
                "into one file per trial or average them)"), None
    if not np.issubdtype(img.get_data_dtype(), np.number):
        return f"{where}: data type {img.get_data_dtype()} is not numeric", None
    return None, _grid_action(shape, img.affine)


def _embedding_problems(root: Path, stimulus_ids: Iterable[str], require: Sequence[str]) -> list[str]:
    folder = root / EMBEDDINGS_DIR
    present = [k for k in EMBEDDING_KINDS if (folder / f"{k}.npy").is_file()]
    problems = [f"embeddings required but {EMBEDDINGS_DIR}/{k}.npy is missing" for k in require if k not in present]
    if not present:
        return problems
    ids_path = folder / EMBEDDING_IDS_FILE
    if not ids_path.is_file():
        return problems + [f"{EMBEDDINGS_DIR}/{EMBEDDING_IDS_FILE} is missing (one stimulus_id per embeddings row)"]
    ids = [line.strip() for line in ids_path.read_text().splitlines() if line.strip()]
    dup = pd.Series(ids)[pd.Series(ids).duplicated()].unique().tolist()
    if dup:
        problems.append(f"{EMBEDDINGS_DIR}/{EMBEDDING_IDS_FILE}: duplicate stimulus id(s) {dup[:10]}")
    for kind in present:
        try:
            arr = np.load(folder / f"{kind}.npy", mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            problems.append(f"{EMBEDDINGS_DIR}/{kind}.npy is corrupt or not a .npy array ({err})")
            continue
        if arr.ndim != 2 or arr.shape[0] != len(ids):
            problems.append(f"{EMBEDDINGS_DIR}/{kind}.npy has shape {arr.shape}; expected ({len(ids)}, D), one row "
                            f"per line of {EMBEDDING_IDS_FILE}")
        elif not np.isfinite(arr).all():
            rows = np.flatnonzero(~np.isfinite(arr).all(axis=1))
            problems.append(f"{EMBEDDINGS_DIR}/{kind}.npy: NaN/inf in rows of stimuli {[ids[r] for r in rows[:5]]}")
    missing = sorted(set(stimulus_ids) - set(ids))
    if missing:
        problems.append(f"{len(missing)} stimulus id(s) used in {PHENOTYPES_FILE} have no row in "
                        f"{EMBEDDINGS_DIR}/{EMBEDDING_IDS_FILE}, e.g. {missing[:5]}")
    return problems


def _mask_problems(root: Path, meta: Mapping[str, Any]) -> tuple[list[str], np.ndarray | None]:
    name = meta.get("mask")
    if not name:
        return [], None
    path = root / str(name)
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        return [f"cohort mask {name} (from {META_FILE}) is missing"], None
    except Exception as err:  # nibabel's varied read errors
        return [f"cohort mask {name} is not a readable NIfTI image ({err})"], None
    action = _grid_action(img.shape, img.affine) if data.ndim == 3 else "bad"
    if action == "resample" or action == "bad":
        return [f"cohort mask {name} has shape {tuple(img.shape)} and affine diagonal "
                f"{np.round(np.diag(img.affine)[:3], 3).tolist()}; it must be a 3-D mask on the MNI 2 mm grid "
                f"{MNI_SHAPE}"], None
    if action == "reorient":
        data = np.asanyarray(nib.as_closest_canonical(img).dataobj)
    return [], np.asarray(data) > 0


class VolumeCohort:
    """A volume cohort folder opened for reading (see the module docstring for the format).

    Use :meth:`load`.  Volumes are read from disk when asked for; :meth:`masked_stack` builds a memory-mapped
    cache once.  Subsets share the folder and its cache.

    Attributes
    ----------
    root : Path
    meta : dict
        Contents of ``cohort.json``.
    phenotypes : DataFrame
        One row per scan in cohort order, index 0..S-1.
    stimuli : DataFrame
        ``stimulus_id``, ``caption``, optional ``image_path`` (and free columns), one row per stimulus.
    mask : array (91, 109, 91) bool
        MNI brain mask intersected with the optional cohort mask.
    affine : array (4, 4)
        :data:`MNI_AFFINE`.
    notes : list of str
        What was done to fit the files to the grid (reorientation, resampling).
    """

    def __init__(self, root: Path, meta: dict, phenotypes: pd.DataFrame, stimuli: pd.DataFrame, mask: np.ndarray,
                 actions: np.ndarray, positions: np.ndarray, notes: list[str]):
        self.root = Path(root)
        self.meta = meta
        self.phenotypes = phenotypes.reset_index(drop=True)
        self.stimuli = stimuli.reset_index(drop=True)
        self.mask = mask
        self.affine = MNI_AFFINE.copy()
        self.notes = notes
        self._actions = actions
        self._positions = positions  # rows of the folder's phenotypes.csv, for the shared cache

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path, require_embeddings: Sequence[str] = ()) -> VolumeCohort:
        """Open a volume cohort folder, checking everything that headers tell, and list every problem at once.

        Parameters
        ----------
        root : path
        require_embeddings : sequence of {"image", "text"}
            Embedding kinds that must be present for every stimulus used by a scan.

        Raises
        ------
        CohortError
            Missing or malformed files, columns, ids; stimulus ids of scans missing from ``stimuli.csv``;
            4-D or unreadable volumes; a cohort mask off the grid; embedding rows not matching ``ids.txt``.
        """
        root = Path(root)
        if not root.is_dir():
            raise CohortError([f"folder {root} does not exist"], where=str(root))
        bad_kinds = [k for k in require_embeddings if k not in EMBEDDING_KINDS]
        if bad_kinds:
            raise BrainAlignError(f"unknown embedding kind(s) {bad_kinds}; use {list(EMBEDDING_KINDS)}")
        try:
            meta = json.loads((root / META_FILE).read_text())
        except FileNotFoundError:
            raise CohortError([f"{META_FILE} is missing"], where=str(root)) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CohortError([f"{META_FILE} is not valid JSON: {err}"], where=str(root)) from None
        if not isinstance(meta, dict):
            raise CohortError([f"{META_FILE} must hold a JSON object"], where=str(root))
        problems: list[str] = []
        if meta.get("kind", "volume") != "volume":
            problems.append(f"{META_FILE}: 'kind' is {meta.get('kind')!r}, not 'volume'")
        phen = _read_csv(root / PHENOTYPES_FILE, REQUIRED_COLUMNS)
        stim = _read_csv(root / STIMULI_FILE, ("stimulus_id", "caption"))
        problems += _table_problems(phen, REQUIRED_COLUMNS, "scan_id", PHENOTYPES_FILE)
        problems += _table_problems(stim, ("stimulus_id", "caption"), "stimulus_id", STIMULI_FILE)
        mask_problems, cohort_mask = _mask_problems(root, meta)
        problems += mask_problems
        actions = np.array([], dtype=object)
        if not problems:
            unknown = sorted(set(phen["stimulus_id"]) - set(stim["stimulus_id"]))
            if unknown:
                rows = phen.loc[phen["stimulus_id"].isin(unknown[:5]), "scan_id"].tolist()
                problems.append(f"{PHENOTYPES_FILE}: {len(unknown)} stimulus_id(s) not in {STIMULI_FILE}, e.g. "
                                f"{unknown[:5]} (scan(s) {rows[:5]})")
            problems += _embedding_problems(root, phen["stimulus_id"].unique(), require_embeddings)
            file_problems, actions = _volume_file_problems(root, phen["scan_id"].tolist())
            problems += file_problems
        if problems:
            raise CohortError(problems, where=str(root))
        notes = list(meta.get("notes", []))
        notes += _grid_notes(phen["scan_id"].to_numpy(dtype=str), actions)
        if len(notes) > len(meta.get("notes", [])):
            warnings.warn(f"{root}: " + "; ".join(notes[len(meta.get('notes', [])):]), stacklevel=2)
        mask = _mni_mask_array()[0] & (cohort_mask if cohort_mask is not None else True)
        return cls(root, meta, phen, stim, mask, actions, np.arange(len(phen)), notes)

    # -- basic facts -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.phenotypes)

    def __repr__(self) -> str:
        return (f"VolumeCohort({self.meta.get('name', self.root.name)!r}, scans={len(self)}, "
                f"stimuli={len(self.stimuli)}, voxels={self.n_voxels})")

    @property
    def scan_ids(self) -> np.ndarray:
        """(S,) str."""
        return self.phenotypes["scan_id"].to_numpy(dtype=str)

    @property
    def subject_ids(self) -> np.ndarray:
        """(S,) str."""
        return self.phenotypes["subject_id"].to_numpy(dtype=str)

    @property
    def stimulus_ids(self) -> np.ndarray:
        """(S,) str: the stimulus each scan responds to."""
        return self.phenotypes["stimulus_id"].to_numpy(dtype=str)

    @property
    def n_voxels(self) -> int:
        """V, the number of in-mask voxels."""
        return int(self.mask.sum())

    def captions(self) -> np.ndarray:
        """(S,) str: the caption of each scan's stimulus."""
        table = self.stimuli.set_index("stimulus_id")["caption"].astype(str)
        return table.loc[self.stimulus_ids].to_numpy(dtype=str)

    def subset(self, indices: Sequence[int] | np.ndarray) -> VolumeCohort:
        """Scans at the given positions, in that order (stimuli and the cache are shared)."""
        idx = np.asarray(indices, dtype=int)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset indices out of range for {len(self)} scans")
        return VolumeCohort(self.root, self.meta, self.phenotypes.iloc[idx], self.stimuli, self.mask,
                            self._actions[idx], self._positions[idx], self.notes)

    # -- volumes -----------------------------------------------------------------------------------
    def _scan(self, i: int | str) -> tuple[int, str]:
        if isinstance(i, (int, np.integer)):
            if not -len(self) <= i < len(self):
                raise IndexError(f"scan index {i} out of range for {len(self)} scans")
            return int(i) % len(self), str(self.phenotypes["scan_id"].iat[int(i)])
        hits = np.flatnonzero(self.scan_ids == str(i))
        if hits.size == 0:
            raise KeyError(f"scan_id '{i}' is not in this cohort")
        return int(hits[0]), str(i)

    def raw_volume(self, i: int | str) -> np.ndarray:
        """(91, 109, 91) float32 volume on the grid (reoriented/resampled as needed), not normalised."""
        _, sid = self._scan(i)
        path = self.root / VOLUMES_DIR / f"{sid}{VOLUME_SUFFIX}"
        try:
            img = nib.load(str(path))
            data, _ = to_mni_grid(img)
        except FileNotFoundError:
            raise CohortError([f"scan '{sid}': file {path} is missing"], where=str(self.root)) from None
        except Exception as err:  # truncated gzip, bad header, ...
            raise CohortError([f"scan '{sid}': {path} cannot be read ({type(err).__name__}: {err})"],
                              where=str(self.root)) from None
        return data

    def volume(self, i: int | str) -> np.ndarray:
        """One scan's volume, (91, 109, 91) float32: z-scored over in-mask voxels, 0 outside the mask.

        Raises
        ------
        CohortError
            NaN/inf inside the mask, or a constant map inside the mask, naming the scan.
        """
        _, sid = self._scan(i)
        data = self.raw_volume(i)
        values = _normalise(data[self.mask], sid, str(self.root))
        out = np.zeros(MNI_SHAPE, dtype=np.float32)
        out[self.mask] = values
        return out

    def _cache_key(self) -> str:
        """Hash of the folder's scan list, each volume file's size and mtime, and the mask."""
        ids = _read_csv(self.root / PHENOTYPES_FILE, REQUIRED_COLUMNS)["scan_id"].astype(str).tolist()
        h = hashlib.sha1()
        h.update(f"v{FORMAT_VERSION}".encode())
        for sid in ids:
            st = os.stat(self.root / VOLUMES_DIR / f"{sid}{VOLUME_SUFFIX}")
            h.update(f"{sid}:{st.st_size}:{st.st_mtime_ns};".encode())
        h.update(np.packbits(self.mask).tobytes())
        return h.hexdigest()[:16]

    def masked_stack(self, indices: Sequence[int] | np.ndarray | None = None, progress: bool = False) -> np.ndarray:
        """In-mask voxels of the scans, (S, V) float32, z-scored per scan (the values of :meth:`volume`).

        The first call writes ``<root>/.cache/masked_<key>.npy`` for every scan of the folder (one volume in
        memory at a time); later calls memory-map it.  ``key`` hashes the scan list, each volume file's size
        and modification time and the mask, so a changed file means a new cache (older caches are removed).

        Parameters
        ----------
        indices : sequence of int, optional
            Positions in this cohort (all scans by default).
        progress : bool
            Show a progress bar while the cache is built.

        Returns
        -------
        array (S, V) float32
            A read-only ``numpy.memmap`` when the rows are a contiguous ascending range of the folder's scans
            (the whole cohort, typically); otherwise an in-memory copy of the selected rows.
        """
        key = self._cache_key()
        cache_dir = self.root / CACHE_DIR
        path = cache_dir / f"masked_{key}.npy"
        if not path.is_file():
            self._build_cache(path, progress)
        stack = np.load(path, mmap_mode="r")
        if stack.shape[1] != self.n_voxels:
            path.unlink()
            return self.masked_stack(indices, progress)
        rows = self._positions if indices is None else self._positions[np.asarray(indices, dtype=int)]
        if rows.size and np.array_equal(rows, np.arange(rows[0], rows[0] + rows.size)):
            return stack[rows[0] : rows[0] + rows.size]
        return np.asarray(stack[rows])

    def _build_cache(self, path: Path, progress: bool) -> None:
        full = VolumeCohort.load(self.root) if len(self._positions) != _n_rows(self.root) else self
        full.mask = self.mask
        path.parent.mkdir(exist_ok=True)
        for old in path.parent.glob("masked_*.npy"):  # stale caches of earlier file versions
            if old != path:
                old.unlink(missing_ok=True)
        tmp = path.with_name(f".building-{os.getpid()}-{path.name}")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(full), self.n_voxels))
        order = np.argsort(full._positions)
        steps = range(len(full))
        if progress:
            from rich.progress import track

            steps = track(steps, description="caching masked volumes")
        for k in steps:
            j = int(order[k])
            out[full._positions[j]] = full.volume(j)[self.mask]
        out.flush()
        del out
        os.replace(tmp, path)

    # -- embeddings --------------------------------------------------------------------------------
    def embeddings(self, kind: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Precomputed stimulus embeddings of one kind.

        Parameters
        ----------
        kind : {"image", "text"}

        Returns
        -------
        (array (n_stim, D) float32, array (n_stim,) str) or None
            Rows and the stimulus id of each row (``embeddings/ids.txt`` order); None if the file is absent.
        """
        if kind not in EMBEDDING_KINDS:
            raise BrainAlignError(f"unknown embedding kind {kind!r}; use one of {list(EMBEDDING_KINDS)}")
        path = self.root / EMBEDDINGS_DIR / f"{kind}.npy"
        if not path.is_file():
            return None
        ids = np.array([s.strip() for s in (self.root / EMBEDDINGS_DIR / EMBEDDING_IDS_FILE).read_text().splitlines()
                        if s.strip()], dtype=str)
        return np.load(path, allow_pickle=False).astype(np.float32, copy=False), ids

    def scan_embeddings(self, kind: str, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """(S, D) float32: the embedding of each scan's stimulus (rows follow the scans).

        Raises
        ------
        BrainAlignError
            The cohort has no embeddings of this kind.
        """
        found = self.embeddings(kind)
        if found is None:
            raise BrainAlignError(f"{self.root}: no {EMBEDDINGS_DIR}/{kind}.npy; compute {kind} embeddings of the "
                                  f"stimuli first")
        emb, ids = found
        row = pd.Series(np.arange(len(ids)), index=ids)
        stim = self.stimulus_ids if indices is None else self.stimulus_ids[np.asarray(indices, dtype=int)]
        return emb[row.loc[stim].to_numpy()]


def _n_rows(root: Path) -> int:
    return len(_read_csv(root / PHENOTYPES_FILE, REQUIRED_COLUMNS))


def _normalise(values: np.ndarray, scan_id: str, where: str) -> np.ndarray:
    """z-score of the in-mask values (V,), float32; NaN/inf or a constant map is an error naming the scan."""
    bad = ~np.isfinite(values)
    if bad.any():
        raise CohortError([f"scan '{scan_id}': {int(bad.sum())} NaN/inf voxel(s) inside the brain mask (exclude "
                           "them with a cohort mask, or fix the map)"], where=where)
    values = values.astype(np.float64)
    sd = values.std()
    if sd == 0:
        raise CohortError([f"scan '{scan_id}': the map is constant inside the brain mask"], where=where)
    return ((values - values.mean()) / sd).astype(np.float32)


def _volume_file_problems(root: Path, scan_ids: Sequence[str]) -> tuple[list[str], np.ndarray]:
    folder = root / VOLUMES_DIR
    if not folder.is_dir():
        return [f"{VOLUMES_DIR}/ folder is missing"], np.array([], dtype=object)
    present = {p.name[: -len(VOLUME_SUFFIX)] for p in folder.glob(f"*{VOLUME_SUFFIX}")}
    problems, actions = [], []
    missing = [s for s in scan_ids if s not in present]
    if missing:
        problems.append(f"{VOLUMES_DIR}/: no file for {len(missing)} scan(s) in {PHENOTYPES_FILE}, e.g. "
                        f"{[m + VOLUME_SUFFIX for m in missing[:5]]}")
    orphans = sorted(present - set(scan_ids))
    if orphans:
        problems.append(f"{VOLUMES_DIR}/: {len(orphans)} file(s) whose scan_id is not in {PHENOTYPES_FILE}, e.g. "
                        f"{[o + VOLUME_SUFFIX for o in orphans[:5]]}")
    for sid in scan_ids:
        if sid in missing:
            actions.append(None)
            continue
        problem, action = _header_problem(folder / f"{sid}{VOLUME_SUFFIX}", sid)
        actions.append(action)
        if problem:
            problems.append(problem)
    return problems, np.array(actions, dtype=object)


def _grid_notes(scan_ids: np.ndarray, actions: np.ndarray) -> list[str]:
    notes = []
    for action, text in (("reorient", "reoriented to RAS with nibabel.as_closest_canonical (exact flip)"),
                         ("resample", "resampled onto the MNI152 2 mm grid (nilearn resample_img, continuous)")):
        hit = scan_ids[actions == action] if actions.size else np.array([])
        if hit.size:
            notes.append(f"{hit.size} volume(s) off the 91x109x91 RAS grid are {text}, e.g. {hit[:5].tolist()}")
    return notes


def check_volume_contents(root: str | Path) -> list[str]:
    """Read every volume of a cohort and return every content problem (NaN in the mask, constant, unreadable).

    Returns
    -------
    list of str
        Empty when all volumes are usable.  Structural problems raise :class:`CohortError` as in
        :meth:`VolumeCohort.load`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cohort = VolumeCohort.load(root)
    problems = []
    for i in range(len(cohort)):
        try:
            cohort.volume(i)
        except CohortError as err:
            problems += err.problems
    return problems


# -- writing --------------------------------------------------------------------------------------------


def write_embeddings(root: str | Path, kind: str, embeddings: np.ndarray, ids: Sequence[str]) -> Path:
    """Add or replace one kind of precomputed stimulus embeddings in an existing volume cohort.

    Parameters
    ----------
    root : path
        Volume cohort folder.
    kind : {"image", "text"}
    embeddings : array (n, D)
        One row per id.
    ids : sequence of n str
        Stimulus ids of the rows.  When ``embeddings/ids.txt`` exists (another kind was written before), the
        rows are reordered to it and must cover every id listed there; otherwise ``ids.txt`` is written from ``ids``.

    Returns
    -------
    Path of the written ``.npy`` file.
    """
    root = Path(root)
    if kind not in EMBEDDING_KINDS:
        raise BrainAlignError(f"unknown embedding kind {kind!r}; use one of {list(EMBEDDING_KINDS)}")
    arr = np.asarray(embeddings, dtype=np.float32)
    ids = [str(i) for i in ids]
    if arr.ndim != 2 or arr.shape[0] != len(ids):
        raise BrainAlignError(f"{kind} embeddings have shape {arr.shape}; expected ({len(ids)}, D), one row per id")
    if len(set(ids)) != len(ids):
        raise BrainAlignError(f"{kind} embeddings: duplicate stimulus ids")
    if not np.isfinite(arr).all():
        raise BrainAlignError(f"{kind} embeddings contain NaN/inf")
    folder = root / EMBEDDINGS_DIR
    ids_path = folder / EMBEDDING_IDS_FILE
    others = [k for k in EMBEDDING_KINDS if k != kind and (folder / f"{k}.npy").is_file()]
    if ids_path.is_file() and others:
        order = [s.strip() for s in ids_path.read_text().splitlines() if s.strip()]
        missing = sorted(set(order) - set(ids))
        if missing:
            raise BrainAlignError(f"{kind} embeddings lack {len(missing)} stimulus id(s) listed in "
                                  f"{EMBEDDINGS_DIR}/{EMBEDDING_IDS_FILE}, e.g. {missing[:5]}")
        arr = arr[pd.Series(np.arange(len(ids)), index=ids).loc[order].to_numpy()]
    else:
        order = ids
    folder.mkdir(exist_ok=True)
    out = folder / f"{kind}.npy"
    np.save(out, arr)
    ids_path.write_text("\n".join(order) + "\n")
    return out



def _as_image(vol: Any, sid: str) -> nib.Nifti1Image:
    if isinstance(vol, nib.spatialimages.SpatialImage):
        img = nib.Nifti1Image(np.asarray(vol.dataobj, dtype=np.float32), vol.affine)
    else:
        arr = np.asarray(vol, dtype=np.float32)
        if arr.shape != MNI_SHAPE:
            raise BrainAlignError(f"scan '{sid}': array volume has shape {arr.shape}; arrays must be on the MNI grid "
                                  f"{MNI_SHAPE} (pass a nibabel image with its affine otherwise)")
        img = nib.Nifti1Image(arr, MNI_AFFINE)
    if len(img.shape) != 3 and not (len(img.shape) == 4 and img.shape[3] == 1):
        raise BrainAlignError(f"scan '{sid}': volume has shape {img.shape}; one 3-D map per scan is expected")
    img.set_data_dtype(np.float32)
    img.header.set_xyzt_units("mm")
    return img


def write_volume_cohort(
    root: str | Path,
    volumes: Mapping[str, Any] | np.ndarray | Iterable[Any],
    phenotypes: pd.DataFrame,
    stimuli: pd.DataFrame,
    embeddings: Mapping[str, np.ndarray] | None = None,
    *,
    embedding_ids: Sequence[str] | None = None,
    mask: nib.Nifti1Image | np.ndarray | None = None,
    name: str = "volumes",
    description: str = "",
    notes: Sequence[str] = (),
    extra_meta: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    compresslevel: int = 1,
) -> Path:
    """Write a volume cohort folder (format in the module docstring) and return its path.

    Parameters
    ----------
    root : path
        Output folder; an existing non-empty folder is an error unless ``overwrite``.
    volumes : mapping scan_id -> image or (91, 109, 91) array, array (S, 91, 109, 91), or iterable in row order
        One map per scan.  nibabel images keep their own grid (fitted to MNI when read); arrays must be on the
        MNI 2 mm grid.  Written as float32 ``.nii.gz`` with gzip level ``compresslevel`` (1 = fast).
    phenotypes : DataFrame
        ``scan_id``, ``subject_id``, ``stimulus_id`` and free columns; rows define the scan order.
    stimuli : DataFrame
        ``stimulus_id``, ``caption``, optional ``image_path``.
    embeddings : mapping {"image", "text"} -> array (n_stim, D), optional
        Rows follow ``embedding_ids`` (default: the rows of ``stimuli``).
    mask : image or (91, 109, 91) bool array, optional
        Cohort mask (saved as ``mask.nii.gz``, intersected with the MNI mask when read).
    name, description : str
    notes : sequence of str
        Provenance notes kept in ``cohort.json``.
    extra_meta : mapping, optional
        More keys for ``cohort.json``.

    Raises
    ------
    CohortError, BrainAlignError
        Bad tables, ids, shapes, or a non-empty folder; checked before anything is written where possible.
    """
    root = Path(root)
    if not isinstance(phenotypes, pd.DataFrame) or not isinstance(stimuli, pd.DataFrame):
        raise BrainAlignError("phenotypes and stimuli must be pandas DataFrames")
    phen = phenotypes.copy()
    for col in REQUIRED_COLUMNS:
        if col in phen:
            phen[col] = phen[col].astype(str)
    stim = stimuli.copy()
    if "stimulus_id" in stim:
        stim["stimulus_id"] = stim["stimulus_id"].astype(str)
    problems = _table_problems(phen, REQUIRED_COLUMNS, "scan_id", PHENOTYPES_FILE)
    problems += _table_problems(stim, ("stimulus_id", "caption"), "stimulus_id", STIMULI_FILE)
    if not problems:
        unknown = sorted(set(phen["stimulus_id"]) - set(stim["stimulus_id"]))
        if unknown:
            problems.append(f"{PHENOTYPES_FILE}: stimulus_id(s) not in stimuli: {unknown[:5]}")
    emb_ids = [str(s) for s in (embedding_ids if embedding_ids is not None else stim.get("stimulus_id", []))]
    for kind, arr in (embeddings or {}).items():
        if kind not in EMBEDDING_KINDS:
            problems.append(f"embeddings: unknown kind {kind!r} (use {list(EMBEDDING_KINDS)})")
        elif np.ndim(arr) != 2 or len(arr) != len(emb_ids):
            problems.append(f"embeddings '{kind}': shape {np.shape(arr)}, expected ({len(emb_ids)}, D)")
    if problems:
        raise CohortError(problems, where=str(root))
    if root.exists() and not root.is_dir():
        raise BrainAlignError(f"output path {root} exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not overwrite:
            raise BrainAlignError(f"output folder {root} exists and is not empty (pass overwrite=True / --overwrite)")
        if not (root / META_FILE).is_file():
            raise BrainAlignError(f"output folder {root} is not empty and holds no {META_FILE}; refusing to replace "
                                  "a folder that is not a cohort")
    # Everything is written to a staging folder beside the output and moved in place at the end, so a failure
    # half-way (a bad volume, an interrupted download) leaves no half-written cohort.
    root.parent.mkdir(parents=True, exist_ok=True)
    stage = root.parent / f".{root.name}.writing-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    try:
        _write_contents(stage, volumes, phen, stim, embeddings, emb_ids, mask, name, description, notes, extra_meta,
                        compresslevel)
        if root.exists():
            shutil.rmtree(root)
        os.replace(stage, root)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return root


def _write_contents(root: Path, volumes, phen: pd.DataFrame, stim: pd.DataFrame, embeddings, emb_ids: list[str],
                    mask, name: str, description: str, notes: Sequence[str], extra_meta, compresslevel: int) -> None:
    """Write the files of :func:`write_volume_cohort` into ``root`` (a fresh folder)."""
    folder = root / VOLUMES_DIR
    folder.mkdir(parents=True)
    scan_ids = phen["scan_id"].tolist()
    source: Iterable[Any] = (volumes[s] for s in scan_ids) if isinstance(volumes, Mapping) else iter(volumes)
    n = 0
    from nibabel.openers import Opener

    level, Opener.default_compresslevel = Opener.default_compresslevel, int(compresslevel)
    try:
        for sid, vol in zip(scan_ids, source):
            _as_image(vol, sid).to_filename(str(folder / f"{sid}{VOLUME_SUFFIX}"))
            n += 1
    finally:
        Opener.default_compresslevel = level
    if n != len(scan_ids):
        raise BrainAlignError(f"got {n} volumes for {len(scan_ids)} scans in the phenotype table")
    meta: dict[str, Any] = {"kind": "volume", "format_version": FORMAT_VERSION, "name": name,
                            "space": "MNI152 2 mm (91x109x91)", "description": description, "notes": list(notes)}
    if mask is not None:
        data = np.asarray(mask.dataobj) if isinstance(mask, nib.spatialimages.SpatialImage) else np.asarray(mask)
        if data.shape != MNI_SHAPE:
            raise BrainAlignError(f"cohort mask has shape {data.shape}; it must be on the MNI grid {MNI_SHAPE}")
        affine = mask.affine if isinstance(mask, nib.spatialimages.SpatialImage) else MNI_AFFINE
        nib.Nifti1Image((data > 0).astype(np.uint8), affine).to_filename(str(root / "mask.nii.gz"))
        meta["mask"] = "mask.nii.gz"
    meta.update(dict(extra_meta or {}))
    if embeddings:
        (root / EMBEDDINGS_DIR).mkdir()
        for kind, arr in embeddings.items():
            np.save(root / EMBEDDINGS_DIR / f"{kind}.npy", np.asarray(arr, dtype=np.float32))
        (root / EMBEDDINGS_DIR / EMBEDDING_IDS_FILE).write_text("\n".join(emb_ids) + "\n")
    phen.to_csv(root / PHENOTYPES_FILE, index=False)
    stim.to_csv(root / STIMULI_FILE, index=False)
    (root / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
