"""ROI time series brought to a common sampling and length (fMRI-LM "Input", METHODS §2).

fMRI-LM feeds its tokenizer series resampled to TR 2.0 s and cut or stretched to T = 160 time points.
:func:`prepare_timeseries` does this for one (T, R) series, :func:`prepare_cohort_timeseries` for many
scans of a cohort at once (scans of equal length are processed as one batch).

Steps, in order:

1. **Checks** on the input: TR known and > 0, every value finite, no constant ROI, enough samples.
2. **Resampling** to ``target_tr`` with :func:`scipy.signal.resample_poly` (polyphase FIR with an
   anti-aliasing low-pass; the TR ratio is written as a fraction ``up/down`` with denominator <= 1000,
   and edges are padded with a fitted line, ``padtype="line"``, so that drift does not ring).
3. **Length**: a longer series is **centre-cropped** (the middle ``n_timepoints`` samples: the start of a
   run holds the non-steady-state volumes and the end often the largest drift); a shorter one is
   **linearly interpolated** onto ``n_timepoints`` equally spaced points spanning the whole series
   (this stretches time: its effective TR becomes ``duration / n_timepoints``).  A series shorter than
   ``min_length`` samples after resampling is refused rather than stretched.
4. **Per-ROI z-score** over time (mean 0, population standard deviation 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from brainalign.errors import BrainAlignError

__all__ = ["prepare_timeseries", "prepare_cohort_timeseries", "resample_ratio"]


def resample_ratio(tr: float, target_tr: float) -> tuple[int, int]:
    """Integer ``(up, down)`` with ``up / down ≈ tr / target_tr`` (denominator at most 1000).

    Parameters
    ----------
    tr, target_tr : float
        Source and target repetition times, seconds.
    """
    frac = Fraction(float(tr) / float(target_tr)).limit_denominator(1000)
    return max(frac.numerator, 1), max(frac.denominator, 1)


def _check_tr(tr: float | None, what: str) -> float:
    if tr is None or not np.isfinite(tr) or tr <= 0:
        raise BrainAlignError(
            f"{what}: repetition time (TR) is {tr!r}; a positive TR in seconds is needed to resample "
            "(set 'tr' in cohort.json or pass tr=...)"
        )
    return float(tr)


def _check_values(x: np.ndarray, scan_ids: Sequence[str]) -> None:
    """Finite values and no constant ROI in a (b, T, R) batch; errors name the scan and ROI index."""
    finite = np.isfinite(x).all(axis=1)  # (b, R)
    if not finite.all():
        s, r = np.argwhere(~finite)[0]
        rois = np.flatnonzero(~finite[s])
        raise BrainAlignError(f"scan '{scan_ids[s]}': NaN/inf values in ROI index(es) {rois[:10].tolist()} "
                              f"(first: ROI {r})")
    const = np.ptp(x, axis=1) == 0  # (b, R)
    if const.any():
        s, r = np.argwhere(const)[0]
        rois = np.flatnonzero(const[s])
        raise BrainAlignError(f"scan '{scan_ids[s]}': ROI index(es) {rois[:10].tolist()} are constant "
                              f"(zero variance); they cannot be z-scored (first: ROI {r})")


def _fit_length(x: np.ndarray, n_timepoints: int) -> np.ndarray:
    """Centre-crop or linearly interpolate a (b, T, R) batch to (b, n_timepoints, R) along axis 1."""
    T = x.shape[1]
    if T >= n_timepoints:
        start = (T - n_timepoints) // 2
        return x[:, start : start + n_timepoints]
    from scipy.interpolate import make_interp_spline

    grid = np.linspace(0.0, T - 1.0, n_timepoints)
    return make_interp_spline(np.arange(T, dtype=float), x, k=1, axis=1)(grid)


def _prepare_batch(x: np.ndarray, tr: float, scan_ids: Sequence[str], *, target_tr: float, n_timepoints: int,
                   min_length: int | None) -> np.ndarray:
    """(b, T, R) -> float32 (b, n_timepoints, R); see the module docstring."""
    from scipy.signal import resample_poly

    if n_timepoints < 2:
        raise BrainAlignError(f"n_timepoints must be >= 2, got {n_timepoints}")
    target_tr = _check_tr(target_tr, "target_tr")
    tr = _check_tr(tr, f"scan '{scan_ids[0]}'" if len(scan_ids) == 1 else f"scans {list(scan_ids[:3])}...")
    x = np.asarray(x, dtype=np.float64)
    _check_values(x, scan_ids)
    up, down = resample_ratio(tr, target_tr)
    T = x.shape[1]
    n_resampled = -(-T * up // down)  # ceil, the length resample_poly returns
    need = (n_timepoints + 1) // 2 if min_length is None else int(min_length)
    if n_resampled < max(need, 2):
        raise BrainAlignError(
            f"scan '{scan_ids[0]}': {T} time points at TR {tr:g} s give {n_resampled} at TR {target_tr:g} s, "
            f"fewer than min_length={max(need, 2)}; the series is too short to be stretched to {n_timepoints}"
        )
    if (up, down) != (1, 1):
        x = resample_poly(x, up, down, axis=1, padtype="line")
    x = _fit_length(x, n_timepoints)
    x = x - x.mean(axis=1, keepdims=True)
    sd = x.std(axis=1, keepdims=True)
    tiny = sd[:, 0, :] <= 1e-12 * (1.0 + np.abs(x).max(axis=1))
    if tiny.any():  # constant after cropping (e.g. a step outside the kept window)
        s, r = np.argwhere(tiny)[0]
        raise BrainAlignError(f"scan '{scan_ids[s]}': ROI index {r} is constant within the kept window")
    return (x / sd).astype(np.float32)


def prepare_timeseries(x: np.ndarray, tr: float | None, *, target_tr: float = 2.0, n_timepoints: int = 160,
                       scan_id: str = "?", min_length: int | None = None) -> np.ndarray:
    """Resample, crop or stretch, and z-score one ROI time series.

    Parameters
    ----------
    x : array (T, R)
        Time along rows, any float or int dtype.
    tr : float
        Repetition time of ``x``, seconds.
    target_tr : float
        Repetition time after resampling, seconds (fMRI-LM: 2.0).
    n_timepoints : int
        Output length (fMRI-LM: 160).  Longer series are centre-cropped, shorter ones linearly
        interpolated (stretched in time).
    scan_id : str
        Name used in error messages.
    min_length : int, optional
        Fewest samples the series may have *after resampling to target_tr*; default
        ``ceil(n_timepoints / 2)``, so a series is never stretched more than twofold.

    Returns
    -------
    array (n_timepoints, R), float32
        Every ROI with mean 0 and standard deviation 1 over time.

    Raises
    ------
    BrainAlignError
        TR missing or <= 0; NaN/inf values (names the ROI indices); a constant ROI (names the index);
        a series shorter than ``min_length`` after resampling; not a 2-D array.
    """
    arr = np.asarray(x)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise BrainAlignError(f"scan '{scan_id}': time series must be a 2-D (T, R) array, got shape {arr.shape}")
    return _prepare_batch(arr[None], tr, [scan_id], target_tr=target_tr, n_timepoints=n_timepoints,
                          min_length=min_length)[0]


def prepare_cohort_timeseries(cohort, indices: Sequence[int] | None = None, *, target_tr: float = 2.0,
                              n_timepoints: int = 160, min_length: int | None = None) -> np.ndarray:
    """:func:`prepare_timeseries` for many scans of a cohort, with TR from ``cohort.meta.tr``.

    Scans are read one by one (memory-mapped) and processed in batches of equal length, so the
    resampling and z-scoring are vectorised over scans.

    Parameters
    ----------
    cohort : brainalign.data.cohort.Cohort
        Must have ``timeseries/`` and a TR in ``cohort.json``.
    indices : sequence of int, optional
        Scan positions (default: all, in cohort order).
    target_tr, n_timepoints, min_length
        As in :func:`prepare_timeseries`.

    Returns
    -------
    array (S, n_timepoints, R), float32
        In the order of ``indices``.
    """
    if not cohort.has_timeseries:
        raise BrainAlignError(f"cohort {cohort.root} has no timeseries/ folder; preprocessing needs ROI time series")
    tr = _check_tr(cohort.meta.tr, f"cohort {cohort.root} (cohort.json)")
    idx = np.arange(len(cohort)) if indices is None else np.asarray(indices, dtype=int)
    ids = cohort.scan_ids[idx] if len(idx) else np.array([], dtype=str)
    out = np.empty((len(idx), n_timepoints, cohort.n_rois), dtype=np.float32)
    series = [cohort.timeseries(int(i), min_timepoints=1) for i in idx]
    lengths = np.array([s.shape[0] for s in series], dtype=int)
    for T in np.unique(lengths):
        pos = np.flatnonzero(lengths == T)
        out[pos] = _prepare_batch(np.stack([series[p] for p in pos]), tr, [str(ids[p]) for p in pos],
                                  target_tr=target_tr, n_timepoints=n_timepoints, min_length=min_length)
    return out
