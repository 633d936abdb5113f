"""Functional connectivity from ROI time series.

:func:`pearson_connectivity` is a batched Pearson correlation (one matrix product per chunk of scans).
:class:`ConnectivityFeatures` wraps nilearn's ``ConnectivityMeasure`` for partial correlation, tangent
and covariance, with the same input checks.

Bad input policy: NaN/inf values, constant (zero-variance) ROIs and series shorter than ``min_timepoints``
raise :class:`~brainalign.errors.BrainAlignError` naming the scan and ROI.  ``constant="zero"`` instead
sets a constant ROI's correlations to 0 (diagonal 1) and reports which ROIs in ``ConstantROIReport``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from brainalign.errors import BrainAlignError

KINDS = ("correlation", "partial correlation", "tangent", "covariance", "precision")


@dataclass
class ConstantROIReport:
    """Constant ROIs found under ``constant="zero"``: ``{scan_id: [roi indices]}``."""

    rois: dict[str, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rois)


def _scan_names(n: int, scan_ids: Sequence[str] | None) -> list[str]:
    if scan_ids is None:
        return [f"#{i}" for i in range(n)]
    if len(scan_ids) != n:
        raise BrainAlignError(f"got {len(scan_ids)} scan_ids for {n} time series")
    return [str(s) for s in scan_ids]


def check_timeseries(ts: np.ndarray, scan_ids: Sequence[str] | None = None, min_timepoints: int = 10,
                     check_values: bool = True) -> None:
    """Raise a clear error if a (n, T, R) batch has the wrong shape, too few points or (``check_values``)
    non-finite values."""
    if ts.ndim != 3:
        raise BrainAlignError(f"time series batch must be (n_scans, T, R), got shape {ts.shape}")
    n, T, R = ts.shape
    names = _scan_names(n, scan_ids)
    if T < min_timepoints:
        raise BrainAlignError(f"time series have {T} time points; at least {min_timepoints} are needed")
    if R < 2:
        raise BrainAlignError(f"time series have {R} ROI column(s); at least 2 are needed")
    if check_values:
        check_finite(ts, names)


def check_finite(ts: np.ndarray, names: Sequence[str], offset: int = 0) -> None:
    """Raise naming the first scan and ROI with NaN/inf in a (n, T, R) batch (``offset``: position of ts[0])."""
    finite = np.isfinite(ts).all(axis=1)  # (n, R)
    if not finite.all():
        s, r = np.argwhere(~finite)[0]
        n_bad = int((~finite).any(axis=1).sum())
        raise BrainAlignError(f"scan '{names[offset + s]}': NaN/inf in ROI {r} ({n_bad} scan(s) affected)")


def pearson_connectivity(
    ts: np.ndarray,
    scan_ids: Sequence[str] | None = None,
    *,
    min_timepoints: int = 10,
    constant: str = "error",
    report: ConstantROIReport | None = None,
    chunk_size: int = 32,
    dtype: type = np.float64,
    matmul_dtype: type = np.float32,
    out_dtype: type = np.float32,
) -> np.ndarray:
    """Pearson correlation matrices of a batch of ROI time series.

    Parameters
    ----------
    ts : array (n_scans, T, R)
        Time along axis 1.  Any float or int dtype; memory-mapped input is read chunk by chunk.
    scan_ids : sequence of str, optional
        Names used in error messages.
    min_timepoints : int
        Shorter series are an error.
    constant : {"error", "zero"}
        What to do with a zero-variance ROI (see module docstring).
    report : ConstantROIReport, optional
        Filled with the constant ROIs found when ``constant="zero"``.
    chunk_size : int
        Scans per matrix product (bounds temporary memory to chunk_size * T * R values).
    dtype : numpy float type
        Precision of centering and normalisation (float64, so large signal offsets cost no accuracy).
    matmul_dtype : numpy float type
        Precision of the products of the normalised series.  float32 (default) is about 1.5x faster and
        differs from an empirical-covariance correlation by < 2e-6 for T = 200 (see BENCHMARKS.md);
        float64 gives < 1e-12.
    out_dtype : numpy float type
        Returned dtype.

    Returns
    -------
    array (n_scans, R, R)
        Symmetric, unit diagonal.
    """
    if constant not in ("error", "zero"):
        raise BrainAlignError(f"constant must be 'error' or 'zero', got {constant!r}")
    ts = np.asarray(ts) if not isinstance(ts, np.memmap) else ts
    check_timeseries(ts, scan_ids, min_timepoints, check_values=False)  # values: chunk by chunk below
    n, T, R = ts.shape
    names = _scan_names(n, scan_ids)
    out = np.empty((n, R, R), dtype=out_dtype)
    diag = np.arange(R)
    for start in range(0, n, chunk_size):
        x = np.array(ts[start : start + chunk_size], dtype=dtype)  # (b, T, R), a private copy
        check_finite(x, names, start)
        mean = x.mean(axis=1, keepdims=True)
        x -= mean
        norm = np.sqrt(np.einsum("btr,btr->br", x, x))  # (b, R)
        # A constant ROI leaves only rounding residue after centering: at most ~T ulps of its value per
        # point (the mean's worst-case summation error), so its norm is below T·sqrt(T)·eps·|value|.
        const = norm <= T * np.sqrt(T) * np.finfo(dtype).eps * np.abs(mean[:, 0, :])
        if const.any():
            s, r = np.argwhere(const)[0]
            if constant == "error":
                raise BrainAlignError(
                    f"scan '{names[start + s]}': ROI {r} is constant (zero variance); correlation is undefined. "
                    "Remove the ROI, fix the extraction, or pass constant='zero'."
                )
            if report is not None:
                for b, rois in enumerate(const):
                    if rois.any():
                        report.rois[names[start + b]] = np.flatnonzero(rois).tolist()
            norm = np.where(const, np.inf, norm)  # its correlations become 0
        x /= norm[:, None, :]
        x = x.astype(matmul_dtype, copy=False)  # unit-norm columns: float32 products err by ~sqrt(T)·eps32
        corr = np.matmul(x.transpose(0, 2, 1), x)  # (b, R, R)
        np.clip(corr, -1.0, 1.0, out=corr)
        corr[:, diag, diag] = 1.0
        out[start : start + len(x)] = corr
    return out


class ConnectivityFeatures:
    """Connectivity of any kind, scikit-learn style: ``fit`` on training scans, ``transform`` any scans.

    ``kind="correlation"`` uses :func:`pearson_connectivity`; the other kinds ("partial correlation",
    "tangent", "covariance", "precision") use ``nilearn.connectome.ConnectivityMeasure`` with the
    empirical covariance (or Ledoit-Wolf shrinkage when ``shrinkage=True``).  For "tangent", the group
    reference is fitted on the training scans only.

    Parameters
    ----------
    kind : str
    shrinkage : bool
        Use Ledoit-Wolf covariance (nilearn's default) instead of the empirical covariance.
    vectorize : bool
        Return the upper triangle without the diagonal, (n, R(R-1)/2), instead of (n, R, R).
    min_timepoints : int
    """

    def __init__(self, kind: str = "correlation", shrinkage: bool = False, vectorize: bool = False,
                 min_timepoints: int = 10):
        if kind not in KINDS:
            raise BrainAlignError(f"unknown connectivity kind {kind!r}; choose one of {KINDS}")
        self.kind = kind
        self.shrinkage = shrinkage
        self.vectorize = vectorize
        self.min_timepoints = min_timepoints
        self._measure = None

    def _checked(self, series: Sequence[np.ndarray], scan_ids: Sequence[str] | None) -> list[np.ndarray]:
        names = _scan_names(len(series), scan_ids)
        out = []
        for name, s in zip(names, series):
            s = np.asarray(s, dtype=np.float64)
            check_timeseries(s[None], [name], self.min_timepoints)
            const = np.flatnonzero(np.ptp(s, axis=0) == 0)
            if const.size:
                raise BrainAlignError(f"scan '{name}': ROI(s) {const[:10].tolist()} are constant (zero variance)")
            out.append(s)
        widths = {s.shape[1] for s in out}
        if len(widths) > 1:
            raise BrainAlignError(f"time series have different numbers of ROIs: {sorted(widths)}")
        return out

    def _new_measure(self):
        from nilearn.connectome import ConnectivityMeasure
        from sklearn.covariance import EmpiricalCovariance, LedoitWolf

        cov = LedoitWolf(store_precision=False) if self.shrinkage else EmpiricalCovariance(store_precision=False)
        # z-score each ROI first (nilearn's default), so shrinkage does not depend on each ROI's scale
        return ConnectivityMeasure(cov_estimator=cov, kind=self.kind, vectorize=False, standardize=True)

    def fit(self, series: Sequence[np.ndarray], scan_ids: Sequence[str] | None = None) -> ConnectivityFeatures:
        """Fit the group reference (needed for "tangent"); series are (T_i, R) arrays."""
        if self.kind != "correlation" or self.shrinkage:
            self._measure = self._new_measure().fit(self._checked(series, scan_ids))
        return self

    def transform(self, series: Sequence[np.ndarray], scan_ids: Sequence[str] | None = None) -> np.ndarray:
        """Connectivity of each (T_i, R) series: (n, R, R), or (n, R(R-1)/2) when ``vectorize``."""
        if self.kind == "correlation" and not self.shrinkage:
            lengths = {np.shape(s)[0] for s in series}
            if len(lengths) == 1:
                mats = pearson_connectivity(np.stack([np.asarray(s) for s in series]), scan_ids,
                                            min_timepoints=self.min_timepoints)
            else:
                names = _scan_names(len(series), scan_ids)
                mats = np.stack([pearson_connectivity(np.asarray(s)[None], [n], min_timepoints=self.min_timepoints)[0]
                                 for s, n in zip(series, names)])
        else:
            if self._measure is None:
                if self.kind == "tangent":
                    raise BrainAlignError("tangent connectivity needs fit() on training scans before transform()")
                self._measure = self._new_measure().fit(self._checked(series, scan_ids))
            mats = self._measure.transform(self._checked(series, scan_ids)).astype(np.float32)
        if self.vectorize:
            iu = np.triu_indices(mats.shape[1], k=1)
            return mats[:, iu[0], iu[1]]
        return mats

    def fit_transform(self, series: Sequence[np.ndarray], scan_ids: Sequence[str] | None = None) -> np.ndarray:
        return self.fit(series, scan_ids).transform(series, scan_ids)
