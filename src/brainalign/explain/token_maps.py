"""Token maps: aggregate per-scan token→ROI maps, score them against planted truth, write CSV and NIfTI.

A *token map* is one value per ROI saying how much a text token (``"autism"``, ``"female"``...) draws on each
region, e.g. a row of NeuroLIP's token→node attention ``A = A_ttca[:, :M] · A_mhsa`` (METHODS.md §1) or any
attribution map.  Models produce the per-scan maps; this module is pure numpy/pandas:

- :func:`mean_token_maps` — the mean map per token label over the scans whose text has that token;
- :func:`write_token_maps` / :func:`read_token_maps` — the run-folder format: ``<prefix>.csv`` (rows = tokens,
  columns = ROIs in cohort order) and, when an atlas label image is known, ``<prefix>_<token>.nii.gz`` per token
  plus the 4-D ``<prefix>.nii.gz`` (one volume per token, in CSV row order);
- :func:`roi_values_to_nifti` — paint ROI values into the voxels of an atlas label image;
- :func:`score_against_truth` / :func:`score_token_maps` — AUROC and top-k overlap of a map with planted ROIs
  (simulated cohorts, :func:`brainalign.data.simulate.load_truth`).

Atlas convention
----------------
ROI ``i`` (the ``i``-th column of the maps, the ``i``-th entry of ``cohort.json``'s ``roi_labels``) is the
``i``-th smallest non-zero label value of the atlas image, unless an explicit ``label_values`` list (one
label value per ROI, in ROI order) is given.  Voxels with value 0, or with a value not in ``label_values``,
are background (painted 0).  This is the order nilearn's ``NiftiLabelsMasker`` uses for its columns.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainalign.errors import BrainAlignError
from brainalign.utils import preview, to_numpy

__all__ = [
    "DX_AUROC_TARGET",
    "TOKEN_COLUMN",
    "check_token_maps",
    "mean_token_maps",
    "read_token_maps",
    "roi_values_to_nifti",
    "score_against_truth",
    "score_token_maps",
    "token_map_files",
    "write_token_maps",
]

#: Header of the first CSV column.
TOKEN_COLUMN = "token"
#: AUROC a diagnosis token's map should reach against the planted dx ROIs of a simulated cohort.
DX_AUROC_TARGET = 0.85
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ----------------------------------------------------------------------------------------------------------
# helpers


def _default_roi_labels(n: int) -> list[str]:
    return [f"ROI_{i + 1:03d}" for i in range(n)]  # as CohortMeta does


def _check_roi_labels(roi_labels: Sequence[Any] | None, n: int) -> list[str]:
    if roi_labels is None:
        return _default_roi_labels(n)
    labels = [str(v) for v in roi_labels]
    if len(labels) != n:
        raise BrainAlignError(f"roi_labels has {len(labels)} entries but the maps have {n} ROIs")
    dup = pd.Index(labels)[pd.Index(labels).duplicated()].unique().tolist()
    if dup:
        raise BrainAlignError(f"roi_labels must be unique; duplicated: {preview(dup)}")
    return labels


def _label_grid(token_labels: Any, n_scans: int, n_rows: int) -> np.ndarray:
    """Token labels as an object array (n_scans, n_rows); errors name the first scan whose list is wrong."""
    if not isinstance(token_labels, np.ndarray):
        if hasattr(token_labels, "to_numpy"):  # DataFrame / Series
            token_labels = token_labels.to_numpy(dtype=object)
        elif not isinstance(token_labels, Sequence) or isinstance(token_labels, str):
            raise BrainAlignError("token_labels must be a list (one entry per scan) of lists of token labels "
                                  f"(one per map row); got {type(token_labels).__name__}")
    if len(token_labels) != n_scans:
        raise BrainAlignError(f"token_labels has {len(token_labels)} entries but maps has {n_scans} scans")
    try:
        grid = np.asarray(token_labels, dtype=object)
    except ValueError:  # ragged nesting numpy cannot even place in an object array
        grid = np.empty(0, dtype=object)
    if grid.ndim == 1 and grid.size == n_scans and n_rows == 1 and not any(
            isinstance(v, (list, tuple, np.ndarray)) for v in grid[:1]):
        grid = grid.reshape(n_scans, 1)  # one label per scan for 2-D maps
    if grid.shape != (n_scans, n_rows):
        for i, labels in enumerate(token_labels):  # error path only: find the scan at fault
            length = 1 if isinstance(labels, str) or not hasattr(labels, "__len__") else len(labels)
            if length != n_rows:
                raise BrainAlignError(f"token_labels[{i}] has {length} label(s) but maps has {n_rows} row(s) "
                                      f"per scan (maps shape ({n_scans}, {n_rows}, N))")
        raise BrainAlignError(f"token_labels must have shape ({n_scans}, {n_rows}); got {grid.shape}")
    return grid


def _check_finite(arr: np.ndarray, what: str, axis_name: str = "scan") -> None:
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.flatnonzero(~finite.reshape(finite.shape[0], -1).all(axis=1))
        raise BrainAlignError(f"{what} contains {int((~finite).sum())} NaN/inf value(s), in {axis_name}(s) "
                              f"{preview(bad)}")


def _as_map_frame(df: pd.DataFrame, roi_labels: Sequence[Any] | None) -> pd.DataFrame:
    """Check a token-map table and return it with columns in ``roi_labels`` order, string tokens, float values."""
    if not isinstance(df, pd.DataFrame):
        raise BrainAlignError(f"token maps must be a pandas DataFrame (rows = tokens, columns = ROIs); "
                              f"got {type(df).__name__}")
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise BrainAlignError(f"token maps table is empty (shape {df.shape})")
    out = df
    if roi_labels is not None:
        labels = _check_roi_labels(roi_labels, len(roi_labels))
        cols = [str(c) for c in df.columns]
        if isinstance(df.columns, pd.RangeIndex) and len(cols) == len(labels):
            out = df.set_axis(labels, axis=1)  # unlabelled columns are taken to be in ROI order
        elif set(cols) == set(labels) and len(cols) == len(labels):
            out = df.set_axis(cols, axis=1)[labels]
        else:
            missing = [c for c in labels if c not in set(cols)]
            extra = [c for c in cols if c not in set(labels)]
            raise BrainAlignError(f"token maps have {len(cols)} ROI columns, roi_labels has {len(labels)}; "
                                  f"ROIs missing from the maps: {preview(missing)}, columns not in roi_labels: "
                                  f"{preview(extra)}")
    else:
        out = df.set_axis([str(c) for c in df.columns], axis=1)
        _check_roi_labels(out.columns, out.shape[1])
    try:
        values = out.to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise BrainAlignError(f"token maps must be numeric: {err}") from None
    tokens = [str(t) for t in out.index]
    if any(t == "" for t in tokens):
        raise BrainAlignError("token maps have an empty token label")
    dup = pd.Index(tokens)[pd.Index(tokens).duplicated()].unique().tolist()
    if dup:
        raise BrainAlignError(f"token labels must be unique; duplicated: {preview(dup)}")
    _check_finite(values, "token maps", "token row")
    frame = pd.DataFrame(values, index=pd.Index(tokens, name=TOKEN_COLUMN), columns=list(out.columns))
    return frame


def check_token_maps(df: pd.DataFrame, roi_labels: Sequence[Any] | None = None) -> pd.DataFrame:
    """A token-map table checked and normalised: string tokens (index ``token``), float64 values.

    With ``roi_labels`` the columns are reordered to them (same set required; unlabelled 0..N-1 columns are
    taken to be in ROI order).  Raises :class:`BrainAlignError` on an empty table, duplicate tokens or ROI
    labels, non-numeric or NaN/inf values, or columns that do not match ``roi_labels``.
    """
    return _as_map_frame(df, roi_labels)


# ----------------------------------------------------------------------------------------------------------
# aggregation


def mean_token_maps(maps: Any, token_labels: Any, roi_labels: Sequence[Any] | None = None, *,
                    return_counts: bool = False) -> pd.DataFrame | tuple[pd.DataFrame, pd.Series]:
    """Mean map per token label over the scans whose text has that token.

    Parameters
    ----------
    maps : array-like, shape (n_scans, n_rows, N) or (n_scans, N)
        Per-scan maps: row ``r`` of scan ``i`` is the map of the ``r``-th token (or attribute) of scan ``i``'s
        text over the N ROIs.  A 2-D array is one map per scan.  Torch tensors and memory-mapped arrays work.
    token_labels : sequence of sequences, shape (n_scans, n_rows)
        The token label of each row, per scan, e.g. ``[["autism", "male"], ["control", "female"], ...]``
        (a flat list of labels when ``maps`` is 2-D).  ``None``, NaN or ``""`` marks a row to leave out
        (e.g. an attribute missing from that scan's text).  Labels are compared as strings.
    roi_labels : sequence of str, optional
        N column names (``cohort.meta.roi_labels``); ``ROI_001``... by default.
    return_counts : bool
        Also return the number of rows averaged per token.

    Returns
    -------
    DataFrame, shape (n_tokens, N)
        Index ``token`` (labels in order of first appearance), columns = ROI labels, values = mean maps.
    Series, shape (n_tokens,)
        Only with ``return_counts``: rows (normally scans) averaged per token, named ``n``.

    Notes
    -----
    The group-by is one sparse one-hot product (tokens × rows) @ (rows × N), accumulated in float64: no
    Python loop over scans.  A label that appears twice in one scan's list counts that scan twice.

    Raises
    ------
    BrainAlignError
        Maps not 2-/3-D or empty, NaN/inf values (naming the scans), a token-label list of the wrong length
        (naming the scan), no usable label at all, or ``roi_labels`` of the wrong length.
    """
    from scipy import sparse

    arr = to_numpy(maps)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim != 3:
        raise BrainAlignError(f"maps must have shape (n_scans, n_rows, N) or (n_scans, N); got shape {arr.shape}")
    n_scans, n_rows, n_rois = arr.shape
    if arr.size == 0:
        raise BrainAlignError(f"maps is empty (shape {arr.shape})")
    if arr.dtype.kind not in "biuf":
        raise BrainAlignError(f"maps must be numeric; got dtype {arr.dtype}")
    labels = _check_roi_labels(roi_labels, n_rois)
    grid = _label_grid(token_labels, n_scans, n_rows)
    _check_finite(arr, "maps")

    flat = pd.Series(grid.ravel(), dtype=object)
    missing = flat.isna().to_numpy() | (flat.astype(str) == "").to_numpy()
    text = flat.astype(str).where(~missing, None)
    codes, tokens = pd.factorize(text, sort=False)  # None -> -1
    keep = np.flatnonzero(codes >= 0)
    if keep.size == 0:
        raise BrainAlignError("token_labels holds no label (all rows are None/NaN/empty)")
    n_tok = len(tokens)
    onehot = sparse.csr_matrix((np.ones(keep.size), (codes[keep], keep)), shape=(n_tok, flat.size))
    sums = np.asarray(onehot @ arr.reshape(-1, n_rois), dtype=np.float64)
    counts = np.bincount(codes[keep], minlength=n_tok)
    index = pd.Index([str(t) for t in tokens], name=TOKEN_COLUMN)
    df = pd.DataFrame(sums / counts[:, None], index=index, columns=labels)
    if return_counts:
        return df, pd.Series(counts, index=index, name="n")
    return df


# ----------------------------------------------------------------------------------------------------------
# NIfTI


class _AtlasLookup:
    """An atlas label image and, per voxel, the ROI it belongs to (-1 for background)."""

    def __init__(self, atlas_image: Any, n_rois: int, label_values: Sequence[int] | None = None):
        import nibabel as nib

        if isinstance(atlas_image, (str, Path)):
            try:
                img = nib.load(str(atlas_image))
            except (FileNotFoundError, nib.filebasedimages.ImageFileError, OSError) as err:
                raise BrainAlignError(f"atlas image {atlas_image} cannot be read: {err}") from None
            where = str(atlas_image)
        elif hasattr(atlas_image, "dataobj") and hasattr(atlas_image, "affine"):
            img, where = atlas_image, "atlas image"
        else:
            raise BrainAlignError(f"atlas_image must be a path or a nibabel image; got {type(atlas_image).__name__}")
        data = np.asanyarray(img.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise BrainAlignError(f"{where} must be a 3-D label image; got shape {data.shape} "
                                  f"(a 4-D probabilistic atlas is not supported)")
        if data.dtype.kind == "f":
            if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
                raise BrainAlignError(f"{where} has non-integer values; it must be a label image "
                                      f"(one integer label per voxel, 0 = background)")
        elif data.dtype.kind not in "iub":
            raise BrainAlignError(f"{where} has dtype {data.dtype}; it must be an integer label image")
        data = data.astype(np.int64)
        if label_values is None:
            present = np.unique(data)
            values = present[present != 0]
            if values.size != n_rois:
                raise BrainAlignError(f"{where} has {values.size} non-zero labels but the maps have {n_rois} ROIs; "
                                      f"pass label_values (one atlas label value per ROI, in ROI order)")
        else:
            values = np.asarray(label_values)
            if values.ndim != 1 or values.size != n_rois:
                raise BrainAlignError(f"label_values has shape {values.shape} but the maps have {n_rois} ROIs")
            if values.dtype.kind == "f" and np.array_equal(values, np.round(values)):
                values = values.astype(np.int64)
            if values.dtype.kind not in "iu":
                raise BrainAlignError(f"label_values must be integers; got {preview(values)}")
            values = values.astype(np.int64)
            if (values == 0).any():
                raise BrainAlignError("label_values must not contain 0 (the background label)")
            if np.unique(values).size != values.size:
                raise BrainAlignError(f"label_values must be unique; got {preview(values)}")
            absent = np.setdiff1d(values, np.unique(data))
            if absent.size:
                warnings.warn(f"{where}: label value(s) {preview(absent)} have no voxel; those ROIs are not "
                              f"painted", UserWarning, stacklevel=3)
        order = np.argsort(values, kind="stable")
        sorted_values = values[order]
        pos = np.clip(np.searchsorted(sorted_values, data), 0, n_rois - 1)
        self.roi = np.where(sorted_values[pos] == data, order[pos], -1)  # (X, Y, Z)
        self.image = img
        self.label_values = values
        self.n_rois = n_rois

    def paint(self, values: np.ndarray) -> Any:
        """(N,) → 3-D image; (T, N) → 4-D image (X, Y, Z, T); background 0."""
        import nibabel as nib

        vals = np.asarray(values, dtype=np.float32)
        table = np.concatenate([vals, np.zeros(vals.shape[:-1] + (1,), dtype=np.float32)], axis=-1)
        data = table[..., self.roi]  # index -1 hits the appended background 0
        if vals.ndim == 2:
            data = np.moveaxis(data, 0, -1)
        img = nib.Nifti1Image(data, self.image.affine)
        img.set_data_dtype(np.float32)
        header = self.image.header
        if isinstance(header, nib.Nifti1Header):
            img.header.set_xyzt_units(*header.get_xyzt_units())
            for form in ("sform", "qform"):
                code = int(header[f"{form}_code"])
                if code:
                    getattr(img, f"set_{form}")(self.image.affine, code=code)
        return img


def roi_values_to_nifti(values: Any, atlas_image: Any, label_values: Sequence[int] | None = None) -> Any:
    """Paint one value per ROI into the voxels of an atlas label image.

    Parameters
    ----------
    values : array-like, shape (N,) or (T, N)
        ROI values in ROI (cohort) order; a 2-D array gives a 4-D image with T volumes.
    atlas_image : path or nibabel image
        3-D integer label image (a trailing singleton 4th axis is accepted); 0 is background.
    label_values : sequence of int, optional
        The atlas label value of each ROI, in ROI order.  By default the sorted non-zero labels of the image,
        whose number must then equal N.

    Returns
    -------
    nibabel.Nifti1Image
        float32, the atlas's affine (and sform/qform codes, units); voxels outside every ROI are 0.

    Raises
    ------
    BrainAlignError
        Unreadable or non-label atlas, NaN values, or a number of labels different from N.
    """
    vals = to_numpy(values).astype(np.float64)
    if vals.ndim not in (1, 2) or vals.shape[-1] == 0:
        raise BrainAlignError(f"values must have shape (N,) or (T, N); got {vals.shape}")
    _check_finite(vals.reshape(-1, vals.shape[-1]) if vals.ndim == 2 else vals[None], "values", "row")
    return _AtlasLookup(atlas_image, vals.shape[-1], label_values).paint(vals)


def _file_token(token: str) -> str:
    return _UNSAFE.sub("_", token).strip("._") or "token"


def write_token_maps(df: pd.DataFrame, out_dir: str | Path, roi_labels: Sequence[Any] | None = None,
                     atlas_image: Any = None, prefix: str = "token_maps", *,
                     label_values: Sequence[int] | None = None) -> dict[str, Any]:
    """Write token maps in the run-folder format.

    Parameters
    ----------
    df : DataFrame, shape (n_tokens, N)
        Rows = tokens (index), columns = ROIs (e.g. from :func:`mean_token_maps`).
    out_dir : path
        Folder (created).
    roi_labels : sequence of str, optional
        ROI labels in cohort order (``cohort.meta.roi_labels``).  The columns of ``df`` are reordered to it
        (they must be the same set); unlabelled (0..N-1) columns are taken to be in this order.  By default
        the columns of ``df`` as they are.
    atlas_image : path or nibabel image, optional
        3-D atlas label image (``cohort.atlas_image_path()``); when given, NIfTI maps are written too.
        ROI ``i`` ↔ the ``i``-th smallest non-zero label value, unless ``label_values`` is given.
    prefix : str
        File name stem.
    label_values : sequence of int, optional
        Atlas label value of each ROI, in ROI order (see :func:`roi_values_to_nifti`).

    Returns
    -------
    dict
        ``{"csv": Path, "nifti": {token: Path}, "nifti_4d": Path | None}``.

    Files
    -----
    ``<prefix>.csv``
        Header ``token,<roi label 1>,...,<roi label N>``; one row per token, first cell the token.
    ``<prefix>_<token>.nii.gz``
        One 3-D float32 map per token (characters other than letters, digits, ``. _ -`` become ``_``).
    ``<prefix>.nii.gz``
        4-D, one volume per token in CSV row order.

    Raises
    ------
    BrainAlignError
        ROI columns that do not match ``roi_labels``, duplicate tokens, NaN values, two tokens with the same
        file name, or an atlas whose number of labels differs from N.
    """
    if not prefix or _UNSAFE.search(prefix):
        raise BrainAlignError(f"prefix {prefix!r} must be a non-empty file name (letters, digits, . _ -)")
    frame = _as_map_frame(df, roi_labels)
    out = Path(out_dir)
    lookup = None
    if atlas_image is not None:  # check the atlas before writing anything
        lookup = _AtlasLookup(atlas_image, frame.shape[1], label_values)
        names = [_file_token(t) for t in frame.index]
        clash = pd.Index(names)[pd.Index(names).duplicated()].unique().tolist()
        if clash:
            raise BrainAlignError(f"tokens {preview([t for t, n in zip(frame.index, names) if n in clash])} map "
                                  f"to the same file name; rename them")
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"{prefix}.csv"
    frame.to_csv(csv, index=True, index_label=TOKEN_COLUMN)
    result: dict[str, Any] = {"csv": csv, "nifti": {}, "nifti_4d": None}
    if lookup is not None:
        import nibabel as nib

        values = frame.to_numpy()
        for token, name, row in zip(frame.index, names, values):
            path = out / f"{prefix}_{name}.nii.gz"
            nib.save(lookup.paint(row), path)
            result["nifti"][token] = path
        path4d = out / f"{prefix}.nii.gz"
        nib.save(lookup.paint(values), path4d)
        result["nifti_4d"] = path4d
    return result


def read_token_maps(path: str | Path) -> pd.DataFrame:
    """Read a token-map CSV written by :func:`write_token_maps` (index = tokens, columns = ROI labels)."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype={TOKEN_COLUMN: str}, keep_default_na=False, na_values=[""])
    except FileNotFoundError:
        raise BrainAlignError(f"token-map file {path} does not exist") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise BrainAlignError(f"{path} cannot be parsed as CSV: {err}") from None
    if df.columns.empty or df.columns[0] != TOKEN_COLUMN:
        raise BrainAlignError(f"{path}: first column must be '{TOKEN_COLUMN}'; got {list(df.columns[:1])}")
    df = df.set_index(TOKEN_COLUMN)
    try:
        return _as_map_frame(df, None)
    except BrainAlignError as err:
        raise BrainAlignError(f"{path}: {err}") from None


def token_map_files(run_dir: str | Path) -> dict[str, Path]:
    """Token-map CSVs of a run folder, by method.

    Recognised layouts: ``RUN/token_maps.csv`` (method ``"model"``), ``RUN/token_maps_<method>.csv`` and
    ``RUN/<method>/token_maps.csv``.
    """
    run = Path(run_dir)
    found: dict[str, Path] = {}
    if (run / "token_maps.csv").is_file():
        found["model"] = run / "token_maps.csv"
    for path in sorted(run.glob("token_maps_*.csv")):
        found[path.stem[len("token_maps_"):]] = path
    for path in sorted(run.glob("*/token_maps.csv")):
        found.setdefault(path.parent.name, path)
    return found


# ----------------------------------------------------------------------------------------------------------
# scoring against planted truth


def _as_map_vector(values: Any) -> tuple[np.ndarray, pd.Index | None]:
    labels = None
    if isinstance(values, pd.DataFrame):
        if values.shape[0] != 1:
            raise BrainAlignError(f"score_against_truth scores one map; got a table with {values.shape[0]} rows "
                                  f"(select a token with df.loc[token], or use score_token_maps)")
        values = values.iloc[0]
    if isinstance(values, pd.Series):
        labels = pd.Index([str(v) for v in values.index])
        values = values.to_numpy()
    arr = to_numpy(values)
    if arr.ndim != 1 or arr.size < 2:
        raise BrainAlignError(f"the map must have shape (N,) with N >= 2 ROIs; got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise BrainAlignError(f"the map must be numeric; got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise BrainAlignError(f"the map contains NaN/inf at ROI(s) {preview(np.flatnonzero(~np.isfinite(arr)))}")
    return arr, labels


def _roi_indices(rois: Any, n: int, name: str, labels: pd.Index | None) -> np.ndarray:
    arr = to_numpy(rois if not isinstance(rois, (set, frozenset)) else sorted(rois))
    if arr.ndim != 1 or arr.size == 0:
        raise BrainAlignError(f"{name} must be a non-empty list of ROI indices; got {rois!r}")
    if arr.dtype.kind in "OUS":
        if labels is None:
            raise BrainAlignError(f"{name} holds ROI labels {preview(arr)}; pass indices, or the map as a "
                                  f"pandas Series indexed by ROI label")
        pos = labels.get_indexer([str(v) for v in arr])
        if (pos < 0).any():
            raise BrainAlignError(f"{name}: ROI label(s) {preview(arr[pos < 0])} are not in the map")
        arr = pos
    elif arr.dtype.kind == "f" and np.array_equal(arr, np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise BrainAlignError(f"{name} must hold integer ROI indices; got {preview(arr)}")
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise BrainAlignError(f"{name}: ROI index(es) {preview(bad)} out of range for a map of {n} ROIs "
                              f"(valid: 0..{n - 1})")
    idx = np.unique(arr)
    if idx.size == n:
        raise BrainAlignError(f"{name} covers all {n} ROIs; an AUROC needs ROIs outside the set too")
    return idx


def score_against_truth(values: Any, planted_rois: Any, other_rois: Any = None, *,
                        absolute: bool = False) -> dict[str, Any]:
    """How well ranking ROIs by a map recovers planted ROIs.

    Parameters
    ----------
    values : array-like (N,), pandas Series, or one-row DataFrame
        The map, one value per ROI (larger = more important).
    planted_rois : sequence of int (or ROI labels when ``values`` is a Series)
        Positives, e.g. ``truth["dx_rois"]``.
    other_rois : sequence, optional
        A second set, e.g. ``truth["sensitive_rois"]`` (regions the map should *not* find).
    absolute : bool
        Rank by ``|value|`` (signed attributions).

    Returns
    -------
    dict
        ``auroc`` (sklearn ``roc_auc_score`` of planted-vs-rest by map value; ties count one half),
        ``k`` (= number of planted ROIs), ``top_k_rois`` (indices of the k largest values; ties broken by
        ROI order), ``top_k_fraction`` (share of them that are planted), ``n_rois``; with ``other_rois`` also
        ``auroc_other`` and ``top_k_fraction_other`` (share of the same top k in the other set).

    Raises
    ------
    BrainAlignError
        A map that is not 1-D or has NaN/inf, an empty ROI set, an index out of range, or a set covering every
        ROI (AUROC undefined).
    """
    from sklearn.metrics import roc_auc_score

    arr, labels = _as_map_vector(values)
    score = np.abs(arr) if absolute else arr
    n = arr.size
    planted = _roi_indices(planted_rois, n, "planted_rois", labels)
    k = planted.size
    top = np.argsort(-score, kind="stable")[:k]
    positive = np.zeros(n, dtype=np.int8)
    positive[planted] = 1
    out: dict[str, Any] = {"auroc": float(roc_auc_score(positive, score)), "k": int(k),
                           "top_k_rois": top.tolist(), "top_k_fraction": float(positive[top].mean()),
                           "n_rois": int(n)}
    if other_rois is not None:
        other = _roi_indices(other_rois, n, "other_rois", labels)
        in_other = np.zeros(n, dtype=np.int8)
        in_other[other] = 1
        out["auroc_other"] = float(roc_auc_score(in_other, score))
        out["top_k_fraction_other"] = float(in_other[top].mean())
    return out


def score_token_maps(df: pd.DataFrame, truth: Mapping[str, Any], dx_tokens: Sequence[str] | str,
                     sensitive_tokens: Sequence[str] | str = (), *,
                     absolute: bool = False) -> dict[str, dict[str, Any]]:
    """Score token maps of a simulated cohort against its planted dx and sensitive ROIs.

    Parameters
    ----------
    df : DataFrame, shape (n_tokens, N)
        Token maps (rows = tokens, columns = ROIs in cohort order).
    truth : dict
        From :func:`brainalign.data.simulate.load_truth`: needs ``dx_rois`` and ``sensitive_rois`` (and
        ``n_rois``, checked against N when present).
    dx_tokens, sensitive_tokens : sequence of str
        Tokens of the diagnosis (e.g. ``["autism", "control"]``) and of the sensitive attribute
        (e.g. ``["male", "female"]``); each must be a row of ``df``.
    absolute : bool
        Rank ROIs by ``|value|``.

    Returns
    -------
    dict
        ``{token: {"role": "dx" | "sensitive", "auroc_dx", "auroc_sensitive", "top_k_fraction_dx",
        "top_k_fraction_sensitive", "k"}}``, with ``k = len(truth["dx_rois"])`` for the top-k fractions.
        A diagnosis token should have ``auroc_dx >= DX_AUROC_TARGET`` (0.85) and a much lower
        ``auroc_sensitive``.
    """
    frame = _as_map_frame(df, None)
    for key in ("dx_rois", "sensitive_rois"):
        if key not in truth:
            raise BrainAlignError(f"truth has no '{key}'; pass the dict from brainalign.data.simulate.load_truth")
    if truth.get("n_rois") is not None and int(truth["n_rois"]) != frame.shape[1]:
        raise BrainAlignError(f"truth is for {truth['n_rois']} ROIs but the token maps have {frame.shape[1]}")
    dx_tokens = [dx_tokens] if isinstance(dx_tokens, str) else [str(t) for t in dx_tokens]
    sensitive_tokens = [sensitive_tokens] if isinstance(sensitive_tokens, str) else [str(t) for t in sensitive_tokens]
    both = sorted(set(dx_tokens) & set(sensitive_tokens))
    if both:
        raise BrainAlignError(f"token(s) {both} are listed as both dx and sensitive tokens")
    roles = {**dict.fromkeys(dx_tokens, "dx"), **dict.fromkeys(sensitive_tokens, "sensitive")}
    if not roles:
        raise BrainAlignError("give at least one dx or sensitive token to score")
    missing = [t for t in roles if t not in frame.index]
    if missing:
        raise BrainAlignError(f"token(s) {missing} have no map; available tokens: {frame.index.tolist()}")
    out = {}
    for token, role in roles.items():  # a handful of tokens
        s = score_against_truth(frame.loc[token].to_numpy(), truth["dx_rois"], truth["sensitive_rois"],
                                absolute=absolute)
        out[token] = {"role": role, "auroc_dx": s["auroc"], "auroc_sensitive": s["auroc_other"],
                      "top_k_fraction_dx": s["top_k_fraction"], "top_k_fraction_sensitive": s["top_k_fraction_other"],
                      "k": s["k"]}
    return out
