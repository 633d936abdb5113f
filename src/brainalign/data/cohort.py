"""The cohort: a phenotype table plus lazily loaded arrays per scan, and its on-disk format.

A cohort folder holds::

    cohort.json          metadata (see :class:`CohortMeta`)
    phenotypes.csv       one row per scan: scan_id, subject_id, then free columns (dx, sex, age, site, ...)
    timeseries/<scan_id>.npy     (T, R) ROI time series, float      } at least one of the two
    connectivity/<scan_id>.npy   (R, R) connectivity matrix, float   }

Arrays are memory-mapped on access, so a cohort of tens of thousands of scans is never loaded whole.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainalign.errors import BrainAlignError, CohortError

META_FILE = "cohort.json"
PHENOTYPES_FILE = "phenotypes.csv"
TIMESERIES_DIR = "timeseries"
CONNECTIVITY_DIR = "connectivity"
ARRAY_KINDS = (TIMESERIES_DIR, CONNECTIVITY_DIR)
REQUIRED_COLUMNS = ("scan_id", "subject_id")
FORMAT_VERSION = 1
#: Alternative ``cohort.json`` key names accepted on reading.
META_ALIASES = {
    "TR": "tr", "repetition_time": "tr", "atlas_name": "atlas", "roi_names": "roi_labels", "labels": "roi_labels",
    "coordinates": "roi_coords", "roi_mni": "roi_coords", "mni_coords": "roi_coords", "networks": "roi_networks",
    "network_labels": "roi_networks", "roi_network_labels": "roi_networks",
}
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class CohortMeta:
    """Contents of ``cohort.json``.

    Parameters
    ----------
    name : str
        Cohort name.
    n_rois : int
        Number of regions R; every array must have R columns.
    atlas : str
        Atlas name (``"cc200"``, ``"schaefer100"``, ``"simulated"``...).
    roi_labels : list of str, optional
        R region names; defaults to ``ROI_001`` ... .
    roi_coords : list of [x, y, z], optional
        (R, 3) region centres in MNI mm.
    roi_networks : list of str, optional
        R network labels (e.g. Yeo-7 names), used by fMRI-LM descriptors.
    tr : float, optional
        Repetition time in seconds.
    atlas_image : str, optional
        Path (relative to the cohort folder, or absolute) of the atlas label image, for NIfTI maps.
    columns : dict, optional
        Schema for phenotype columns, ``{"sex": {"type": "category", "values": ["male", "female"]},
        "age": {"type": "numeric"}}``.  Declared columns must exist; category values outside the list are errors.
    exclusions : list of dict, optional
        Scans a builder left out, ``[{"id": ..., "reason": ...}]``; shown by ``cohort info``.
    description : str
        Free text (source, preprocessing).
    extra : dict
        Keys of ``cohort.json`` that brainalign does not use, kept as they were.
    """

    name: str
    n_rois: int
    atlas: str = "unknown"
    roi_labels: list[str] | None = None
    roi_coords: list[list[float]] | None = None
    roi_networks: list[str] | None = None
    tr: float | None = None
    atlas_image: str | None = None
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    exclusions: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = meta_problems(self)
        if problems:
            raise CohortError(problems, where=META_FILE)
        if self.roi_labels is None:
            self.roi_labels = [f"ROI_{i + 1:03d}" for i in range(self.n_rois)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CohortMeta:
        """Build from ``cohort.json`` content.

        Common alternative key names are accepted (:data:`META_ALIASES`, e.g. ``TR``, ``atlas_name``,
        ``network_labels``); ``n_rois`` may be left out when ``roi_labels`` is given.  Keys brainalign does
        not know are kept in ``extra`` (and written back), so other tools' metadata survive.
        """
        data = dict(data)
        problems = []
        for alias, key in META_ALIASES.items():
            if alias in data:
                value = data.pop(alias)
                if data.get(key) not in (None, "unknown", value):
                    problems.append(f"both '{alias}' and '{key}' are given with different values; keep one")
                data[key] = value
        if isinstance(data.get("atlas"), Mapping):  # {"name": ..., ...}: keep the name, the rest as extra
            atlas = dict(data["atlas"])
            data["atlas"] = str(atlas.pop("name", "unknown"))
            data.setdefault("extra", {})["atlas"] = atlas
        if "n_rois" not in data and isinstance(data.get("roi_labels"), list):
            data["n_rois"] = len(data["roi_labels"])
        problems += [f"missing required key '{k}'" for k in ("name", "n_rois") if k not in data]
        if problems:
            raise CohortError(problems, where=META_FILE)
        known = {f.name for f in dataclasses.fields(cls)}
        extra = dict(data.pop("extra", {}) or {})
        extra.update({k: data.pop(k) for k in sorted(set(data) - known)})
        return cls(**data, extra=extra)

    def exclusion_counts(self) -> dict[str, int]:
        """Number of excluded scans per reason."""
        counts: dict[str, int] = {}
        for ex in self.exclusions:
            reason = str(ex.get("reason", "unspecified"))
            counts[reason] = counts.get(reason, 0) + 1
        return counts


def meta_problems(meta: CohortMeta) -> list[str]:
    """Problems in a :class:`CohortMeta` (types and lengths), as messages naming the key."""
    problems = []
    if not isinstance(meta.n_rois, int) or isinstance(meta.n_rois, bool) or meta.n_rois < 2:
        return [f"'n_rois' must be an integer >= 2, got {meta.n_rois!r}"]
    R = meta.n_rois
    for key in ("roi_labels", "roi_networks"):
        value = getattr(meta, key)
        if value is not None and len(value) != R:
            problems.append(f"'{key}' has {len(value)} entries but n_rois is {R}")
    if meta.roi_coords is not None:
        coords = np.asarray(meta.roi_coords, dtype=float)
        if coords.shape != (R, 3):
            problems.append(f"'roi_coords' must have shape ({R}, 3), got {coords.shape}")
    if meta.tr is not None and not (isinstance(meta.tr, (int, float)) and meta.tr > 0):
        problems.append(f"'tr' must be a positive number of seconds, got {meta.tr!r}")
    for col, spec in meta.columns.items():
        kind = spec.get("type") if isinstance(spec, Mapping) else None
        if kind not in ("category", "numeric"):
            problems.append(f"column schema for '{col}' needs type 'category' or 'numeric', got {spec!r}")
        elif kind == "category" and not spec.get("values"):
            problems.append(f"column schema for '{col}' is a category without 'values'")
    return problems


def read_phenotypes(path: Path) -> pd.DataFrame:
    """Read ``phenotypes.csv`` with ``scan_id`` and ``subject_id`` kept as strings."""
    try:
        df = pd.read_csv(path, dtype={"scan_id": str, "subject_id": str})
    except FileNotFoundError:
        raise CohortError([f"{path.name} is missing"], where=str(path.parent)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CohortError([f"{path.name} cannot be parsed as CSV: {err}"], where=str(path.parent)) from None
    return df


def phenotype_problems(df: pd.DataFrame, meta: CohortMeta | None = None) -> list[str]:
    """Problems in a phenotype table: required columns, IDs, duplicates, declared columns and categories."""
    problems = [f"{PHENOTYPES_FILE}: missing required column '{c}'" for c in REQUIRED_COLUMNS if c not in df]
    if problems:
        return problems
    for col in REQUIRED_COLUMNS:
        empty = df.index[df[col].isna()].tolist()
        if empty:
            problems.append(f"{PHENOTYPES_FILE}: column '{col}' is empty in row(s) {[i + 2 for i in empty][:10]}")
    ids = df["scan_id"].dropna()
    bad = [s for s in ids if not _SAFE_ID.match(s)]
    if bad:
        problems.append(
            f"{PHENOTYPES_FILE}: scan_id(s) {bad[:5]} are not usable as file names (letters, digits, . _ - only)"
        )
    dup = ids[ids.duplicated()].unique().tolist()
    if dup:
        problems.append(f"{PHENOTYPES_FILE}: duplicate scan_id(s) {dup[:10]}")
    if meta is not None:
        for col, spec in meta.columns.items():
            if col not in df:
                problems.append(f"{PHENOTYPES_FILE}: column '{col}' declared in {META_FILE} is missing")
                continue
            values = df[col].dropna()
            if spec.get("type") == "category":
                allowed = {str(v) for v in spec["values"]}
                unknown = sorted({str(v) for v in values} - allowed)
                if unknown:
                    rows = df.index[df[col].astype(str).isin(unknown)][:5]
                    problems.append(
                        f"{PHENOTYPES_FILE}: column '{col}' has unknown categor{'ies' if len(unknown) > 1 else 'y'} "
                        f"{unknown[:10]} (allowed: {sorted(allowed)}), e.g. scan(s) {df.loc[rows, 'scan_id'].tolist()}"
                    )
            elif spec.get("type") == "numeric":
                numeric = pd.to_numeric(values, errors="coerce")
                bad_rows = values.index[numeric.isna()]
                if len(bad_rows):
                    problems.append(
                        f"{PHENOTYPES_FILE}: column '{col}' must be numeric; scan(s) "
                        f"{df.loc[bad_rows[:5], 'scan_id'].tolist()} have {values[bad_rows[:5]].tolist()}"
                    )
    return problems


def load_meta(root: Path) -> CohortMeta:
    path = root / META_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CohortError([f"{META_FILE} is missing"], where=str(root)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CohortError([f"{META_FILE} is not valid JSON: {err}"], where=str(root)) from None
    if not isinstance(data, dict):
        raise CohortError([f"{META_FILE} must hold a JSON object"], where=str(root))
    return CohortMeta.from_dict(data)


def array_path(root: Path, kind: str, scan_id: str) -> Path:
    return root / kind / f"{scan_id}.npy"


def open_array(path: Path, scan_id: str) -> np.ndarray:
    """Memory-map one ``.npy`` file, turning a missing or corrupt file into a :class:`CohortError`."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise CohortError([f"scan '{scan_id}': file {path} is missing"]) from None
    except (ValueError, OSError, EOFError) as err:
        raise CohortError([f"scan '{scan_id}': file {path} is corrupt or not a .npy array ({err})"]) from None


def array_problems(arr: np.ndarray, kind: str, scan_id: str, n_rois: int, min_timepoints: int = 10) -> list[str]:
    """Content problems of one scan's array: shape, dtype, non-finite values, constant ROIs, asymmetry."""
    where = f"scan '{scan_id}' ({kind}/{scan_id}.npy)"
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        return [f"{where}: dtype {arr.dtype} is not numeric"]
    if kind == TIMESERIES_DIR:
        if arr.ndim != 2 or arr.shape[1] != n_rois:
            return [f"{where}: shape {arr.shape}, expected (T, {n_rois}) with time along rows"]
        problems = []
        if arr.shape[0] < min_timepoints:
            problems.append(f"{where}: only {arr.shape[0]} time points (at least {min_timepoints} needed)")
        bad = ~np.isfinite(arr)
        if bad.any():
            rois = np.flatnonzero(bad.any(axis=0))
            problems.append(f"{where}: {int(bad.sum())} NaN/inf value(s) in ROI column(s) {rois[:10].tolist()}")
        else:
            const = np.flatnonzero(np.ptp(arr, axis=0) == 0)
            if const.size:
                problems.append(f"{where}: constant (zero-variance) ROI column(s) {const[:10].tolist()}")
        return problems
    if arr.shape != (n_rois, n_rois):
        return [f"{where}: shape {arr.shape}, expected ({n_rois}, {n_rois})"]
    if not np.isfinite(arr).all():
        rois = np.flatnonzero((~np.isfinite(arr)).any(axis=0))
        return [f"{where}: NaN/inf value(s) in ROI(s) {rois[:10].tolist()} (often a constant ROI time series)"]
    if not np.allclose(arr, arr.T, atol=1e-5):
        return [f"{where}: matrix is not symmetric"]
    return []


class Cohort:
    """A cohort folder opened for reading.

    Use :meth:`load`; arrays are memory-mapped when accessed.  Subsets (:meth:`subset`, :meth:`select`)
    share the folder and differ only in their phenotype rows.

    Attributes
    ----------
    root : Path
    meta : CohortMeta
    phenotypes : pandas.DataFrame
        One row per scan in cohort order, index 0..n-1.
    """

    def __init__(self, root: Path, meta: CohortMeta, phenotypes: pd.DataFrame, kinds: tuple[str, ...]):
        self.root = Path(root)
        self.meta = meta
        self.phenotypes = phenotypes.reset_index(drop=True)
        self.kinds = kinds

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def load(cls, root: str | Path) -> Cohort:
        """Open a cohort folder, checking its structure (metadata, table, IDs, files present).

        Array contents are checked when each array is read, and all at once by
        :func:`brainalign.data.validate.validate_cohort`.

        Raises
        ------
        CohortError
            Listing every structural problem found.
        """
        root = Path(root)
        if not root.is_dir():
            raise CohortError([f"folder {root} does not exist"], where=str(root))
        meta = load_meta(root)
        df = read_phenotypes(root / PHENOTYPES_FILE)
        problems = phenotype_problems(df, meta)
        kinds = tuple(k for k in ARRAY_KINDS if (root / k).is_dir())
        if not kinds:
            problems.append(f"neither {TIMESERIES_DIR}/ nor {CONNECTIVITY_DIR}/ exists")
        if not problems:
            problems += file_problems(root, df["scan_id"].tolist(), kinds)
        if problems:
            raise CohortError(problems, where=str(root))
        return cls(root, meta, df, kinds)

    # -- basic facts -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.phenotypes)

    def __repr__(self) -> str:
        return f"Cohort({self.meta.name!r}, scans={len(self)}, rois={self.n_rois}, arrays={list(self.kinds)})"

    @property
    def n_rois(self) -> int:
        return self.meta.n_rois

    @property
    def scan_ids(self) -> np.ndarray:
        return self.phenotypes["scan_id"].to_numpy(dtype=str)

    @property
    def subject_ids(self) -> np.ndarray:
        return self.phenotypes["subject_id"].to_numpy(dtype=str)

    @property
    def has_timeseries(self) -> bool:
        return TIMESERIES_DIR in self.kinds

    @property
    def has_connectivity(self) -> bool:
        return CONNECTIVITY_DIR in self.kinds

    def column(self, name: str) -> pd.Series:
        """One phenotype column, with a clear error naming the available columns if it is missing."""
        self.require_columns([name])
        return self.phenotypes[name]

    def require_columns(self, names: Iterable[str]) -> None:
        missing = [n for n in names if n not in self.phenotypes]
        if missing:
            raise CohortError(
                [f"column '{n}' is missing from {PHENOTYPES_FILE} (columns: {list(self.phenotypes.columns)})"
                 for n in missing],
                where=str(self.root),
            )

    # -- subsets -----------------------------------------------------------------------------------
    def subset(self, indices: Sequence[int] | np.ndarray) -> Cohort:
        """Scans at the given positions, in that order."""
        idx = np.asarray(indices, dtype=int)
        return Cohort(self.root, self.meta, self.phenotypes.iloc[idx], self.kinds)

    def select(self, query: str | None = None, **equals: Any) -> Cohort:
        """Scans whose phenotypes match.

        ``cohort.select("age < 18", sex="female")`` keeps rows where the pandas query holds and every
        keyword column equals its value (a list means "any of").
        """
        mask = np.ones(len(self), dtype=bool)
        if query:
            try:
                mask &= self.phenotypes.eval(query).to_numpy(dtype=bool)
            except Exception as err:  # pandas raises many types for a bad expression
                raise BrainAlignError(f"cannot evaluate query {query!r} on {PHENOTYPES_FILE}: {err}") from None
        for col, value in equals.items():
            values = value if isinstance(value, (list, tuple, set)) else [value]
            mask &= self.column(col).isin(values).to_numpy()
        return self.subset(np.flatnonzero(mask))

    # -- arrays ------------------------------------------------------------------------------------
    def _index(self, scan: int | str) -> tuple[int, str]:
        if isinstance(scan, (int, np.integer)):
            if not -len(self) <= scan < len(self):
                raise IndexError(f"scan index {scan} out of range for {len(self)} scans")
            return int(scan), str(self.phenotypes["scan_id"].iat[int(scan)])
        hits = np.flatnonzero(self.scan_ids == scan)
        if hits.size == 0:
            raise KeyError(f"scan_id '{scan}' is not in this cohort")
        return int(hits[0]), str(scan)

    def _array(self, kind: str, scan: int | str, min_timepoints: int) -> np.ndarray:
        if kind not in self.kinds:
            raise BrainAlignError(f"cohort {self.root} has no {kind}/ folder")
        _, sid = self._index(scan)
        arr = open_array(array_path(self.root, kind, sid), sid)
        problems = array_problems(arr, kind, sid, self.n_rois, min_timepoints)
        if problems:
            raise CohortError(problems, where=str(self.root))
        return arr

    def timeseries(self, scan: int | str, min_timepoints: int = 10) -> np.ndarray:
        """(T, R) time series of one scan (position or scan_id), memory-mapped and checked."""
        return self._array(TIMESERIES_DIR, scan, min_timepoints)

    def connectivity(self, scan: int | str) -> np.ndarray:
        """(R, R) connectivity of one scan: the stored matrix, else Pearson FC of its time series."""
        if self.has_connectivity:
            return self._array(CONNECTIVITY_DIR, scan, 0)
        from brainalign.data.connectivity import pearson_connectivity

        _, sid = self._index(scan)
        return pearson_connectivity(self.timeseries(scan)[None], scan_ids=[sid])[0]

    def connectivity_stack(self, indices: Sequence[int] | None = None, dtype: Any = np.float32) -> np.ndarray:
        """(n, R, R) connectivity of the given scans (all by default), loaded in memory.

        Stored matrices are read; otherwise Pearson FC is computed in batches of equal length.
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=int)
        R = self.n_rois
        out = np.empty((len(idx), R, R), dtype=dtype)
        if self.has_connectivity:
            for k, i in enumerate(idx):
                out[k] = self._array(CONNECTIVITY_DIR, int(i), 0)
            return out
        from brainalign.data.connectivity import pearson_connectivity

        series = [self.timeseries(int(i)) for i in idx]
        lengths = np.array([s.shape[0] for s in series])
        for T in np.unique(lengths):
            pos = np.flatnonzero(lengths == T)
            ids = [str(self.phenotypes["scan_id"].iat[int(idx[p])]) for p in pos]
            out[pos] = pearson_connectivity(np.stack([series[p] for p in pos]), scan_ids=ids)
        return out

    def batches(
        self, batch_size: int, kind: str = CONNECTIVITY_DIR, indices: Sequence[int] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray | list[np.ndarray]]]:
        """Yield ``(positions, arrays)`` in order.

        For ``kind="connectivity"`` arrays are (b, R, R); for ``"timeseries"`` a list of (T_i, R) arrays
        (lengths may differ between scans).
        """
        idx = np.arange(len(self)) if indices is None else np.asarray(indices, dtype=int)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            if kind == CONNECTIVITY_DIR:
                yield chunk, self.connectivity_stack(chunk)
            elif kind == TIMESERIES_DIR:
                yield chunk, [np.asarray(self.timeseries(int(i))) for i in chunk]
            else:
                raise BrainAlignError(f"unknown array kind {kind!r}; use one of {ARRAY_KINDS}")

    def fc_upper(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """(n, R(R-1)/2) upper triangle (k=1) of each scan's connectivity."""
        iu = np.triu_indices(self.n_rois, k=1)
        return self.connectivity_stack(indices)[:, iu[0], iu[1]]

    def atlas_image_path(self) -> Path | None:
        if not self.meta.atlas_image:
            return None
        path = Path(self.meta.atlas_image)
        return path if path.is_absolute() else self.root / path


def file_problems(root: Path, scan_ids: Sequence[str], kinds: Iterable[str]) -> list[str]:
    """Missing array files for listed scans, and files whose IDs are not in the table."""
    problems = []
    wanted = set(scan_ids)
    for kind in kinds:
        present = {p.stem for p in (root / kind).glob("*.npy")}
        missing = [s for s in scan_ids if s not in present]
        if missing:
            problems.append(f"{kind}/: no file for {len(missing)} scan(s) in {PHENOTYPES_FILE}, e.g. {missing[:5]}")
        orphans = sorted(present - wanted)
        if orphans:
            problems.append(
                f"{kind}/: {len(orphans)} file(s) whose scan_id is not in {PHENOTYPES_FILE}, e.g. "
                f"{[o + '.npy' for o in orphans[:5]]}"
            )
        others = sorted(p.name for p in (root / kind).iterdir() if p.suffix != ".npy")
        if others:
            problems.append(f"{kind}/: file(s) that are not .npy arrays: {others[:5]}")
    return problems


def write_cohort(
    root: str | Path,
    meta: CohortMeta,
    phenotypes: pd.DataFrame,
    timeseries: Iterable[np.ndarray] | Mapping[str, np.ndarray] | None = None,
    connectivity: Iterable[np.ndarray] | Mapping[str, np.ndarray] | np.ndarray | None = None,
    overwrite: bool = False,
    dtype: Any = np.float32,
) -> Path:
    """Write a cohort folder.

    Parameters
    ----------
    root : path
        Output folder (created).  An existing non-empty folder is an error unless ``overwrite``.
    meta : CohortMeta
    phenotypes : DataFrame
        Must contain ``scan_id`` and ``subject_id``; rows define the scan order.
    timeseries, connectivity : iterable of arrays in row order, or mapping scan_id -> array, optional
        (T, R) series and/or (R, R) matrices.  Iterables are consumed one array at a time, so generators
        keep memory flat.  At least one must be given.
    dtype : numpy dtype
        Storage type of the arrays (float32 by default).

    Returns
    -------
    Path of the written folder.
    """
    root = Path(root)
    if timeseries is None and connectivity is None:
        raise BrainAlignError("write_cohort needs timeseries and/or connectivity arrays")
    problems = phenotype_problems(phenotypes, meta)
    if problems:
        raise CohortError(problems, where=str(root))
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise BrainAlignError(f"output folder {root} exists and is not empty (pass overwrite=True / --overwrite)")
    root.mkdir(parents=True, exist_ok=True)
    scan_ids = phenotypes["scan_id"].astype(str).tolist()
    for kind, arrays in ((TIMESERIES_DIR, timeseries), (CONNECTIVITY_DIR, connectivity)):
        if arrays is None:
            continue
        folder = root / kind
        if folder.exists():
            for old in folder.glob("*.npy"):
                old.unlink()
        folder.mkdir(exist_ok=True)
        source = (arrays[s] for s in scan_ids) if isinstance(arrays, Mapping) else iter(arrays)
        n_written = 0
        for sid, arr in zip(scan_ids, source):
            arr = np.asarray(arr, dtype=dtype)
            bad = array_problems(arr, kind, sid, meta.n_rois, min_timepoints=1)
            if bad:
                raise CohortError(bad, where=str(root))
            np.save(folder / f"{sid}.npy", arr)
            n_written += 1
        if n_written != len(scan_ids):
            raise BrainAlignError(f"{kind}: got {n_written} arrays for {len(scan_ids)} scans in the phenotype table")
    phenotypes.to_csv(root / PHENOTYPES_FILE, index=False)
    (root / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    return root
