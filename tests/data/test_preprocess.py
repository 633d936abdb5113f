"""Time-series preprocessing for fMRI-LM: resampling, crop/stretch, z-score, and the errors around them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.signal import periodogram

from brainalign.data.cohort import Cohort, CohortMeta, write_cohort
from brainalign.data.preprocess import prepare_cohort_timeseries, prepare_timeseries, resample_ratio
from brainalign.errors import BrainAlignError


def _sines(T: int, tr: float, freqs: list[float], seed: int = 0) -> np.ndarray:
    t = np.arange(T) * tr
    rng = np.random.default_rng(seed)
    return np.stack([np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi)) for f in freqs], axis=1)


def _peak(x: np.ndarray, tr: float) -> np.ndarray:
    f, p = periodogram(x, fs=1 / tr, axis=0, detrend="linear")
    return f[p.argmax(axis=0)]


@pytest.mark.parametrize("tr, T", [(0.72, 1200), (2.5, 200), (1.0, 400)])
def test_resampling_keeps_frequency(tr, T):
    freqs = [0.02, 0.05, 0.1]
    out = prepare_timeseries(_sines(T, tr, freqs), tr, target_tr=2.0, n_timepoints=160)
    assert out.shape == (160, 3) and out.dtype == np.float32
    resolution = 1 / (160 * 2.0)
    np.testing.assert_allclose(_peak(out, 2.0), freqs, atol=resolution)


def test_upsampled_frequency_above_old_nyquist_is_not_invented():
    # 0.15 Hz at TR 3 s (Nyquist 0.167 Hz) stays at 0.15 Hz at TR 2 s
    out = prepare_timeseries(_sines(200, 3.0, [0.15]), 3.0, target_tr=2.0, n_timepoints=200)
    assert abs(_peak(out, 2.0)[0] - 0.15) <= 1 / (200 * 2.0)


def test_centre_crop_without_resampling():
    x = np.random.default_rng(1).standard_normal((200, 4))
    out = prepare_timeseries(x, 2.0, target_tr=2.0, n_timepoints=160)
    mid = x[20:180]
    np.testing.assert_allclose(out, (mid - mid.mean(0)) / mid.std(0), atol=1e-5)


def test_short_series_is_interpolated_to_length():
    ramp = np.stack([np.arange(100.0), np.arange(100.0) ** 2], axis=1)
    out = prepare_timeseries(ramp, 2.0, target_tr=2.0, n_timepoints=160)
    assert out.shape == (160, 2)
    line = np.linspace(0, 99, 160)
    np.testing.assert_allclose(out[:, 0], (line - line.mean()) / line.std(), atol=1e-5)
    assert np.all(np.diff(out[:, 1]) > 0)  # still increasing


def test_zscore_per_roi():
    x = np.random.default_rng(2).standard_normal((300, 5)) * [1, 10, 100, 0.1, 3] + [5, -3, 1000, 0, 2]
    out = prepare_timeseries(x, 1.5, target_tr=2.0, n_timepoints=100)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(0), 1, atol=1e-4)


def test_resample_ratio():
    assert resample_ratio(0.72, 2.0) == (9, 25)
    assert resample_ratio(2.0, 2.0) == (1, 1)
    assert resample_ratio(2.5, 2.0) == (5, 4)


@pytest.mark.parametrize("tr", [None, 0.0, -1.0, float("nan")])
def test_missing_tr(tr):
    with pytest.raises(BrainAlignError, match=r"scan 's1'.*repetition time"):
        prepare_timeseries(np.ones((50, 2)) * np.arange(50)[:, None], tr, scan_id="s1")


def test_nan_names_roi():
    x = np.random.default_rng(3).standard_normal((200, 4))
    x[10, 2] = np.nan
    with pytest.raises(BrainAlignError, match=r"scan 'bad'.*NaN/inf.*ROI index\(es\) \[2\]"):
        prepare_timeseries(x, 2.0, scan_id="bad")


def test_constant_roi_names_index():
    x = np.random.default_rng(4).standard_normal((200, 4))
    x[:, 3] = 7.0
    with pytest.raises(BrainAlignError, match=r"scan 'c'.*ROI index\(es\) \[3\] are constant"):
        prepare_timeseries(x, 2.0, scan_id="c")


def test_too_short():
    x = np.random.default_rng(5).standard_normal((60, 3))
    with pytest.raises(BrainAlignError, match=r"scan 'short'.*60 time points.*fewer than min_length=80"):
        prepare_timeseries(x, 2.0, scan_id="short")  # 60 < ceil(160 / 2)
    # 60 samples at TR 0.72 s are only 22 at TR 2 s
    with pytest.raises(BrainAlignError, match=r"give 22 at TR 2 s, fewer than min_length=30"):
        prepare_timeseries(x, 0.72, n_timepoints=60, scan_id="short")
    assert prepare_timeseries(x, 2.0, min_length=50, scan_id="ok").shape == (160, 3)


def test_not_2d():
    with pytest.raises(BrainAlignError, match=r"scan 'v'.*2-D \(T, R\)"):
        prepare_timeseries(np.zeros(10), 2.0, scan_id="v")


def _cohort(tmp_path, lengths, tr=2.0):
    rng = np.random.default_rng(6)
    ids = [f"s{i}" for i in range(len(lengths))]
    meta = CohortMeta(name="t", n_rois=3, tr=tr)
    phen = pd.DataFrame({"scan_id": ids, "subject_id": ids})
    series = [rng.standard_normal((T, 3)) for T in lengths]
    return Cohort.load(write_cohort(tmp_path / "c", meta, phen, timeseries=series)), series


def test_cohort_batch_matches_single(tmp_path):
    cohort, series = _cohort(tmp_path, [180, 100, 180, 140])
    out = prepare_cohort_timeseries(cohort, n_timepoints=120)
    assert out.shape == (4, 120, 3) and out.dtype == np.float32
    for k, x in enumerate(series):
        np.testing.assert_allclose(out[k], prepare_timeseries(x.astype(np.float32), 2.0, n_timepoints=120),
                                   atol=1e-5)
    np.testing.assert_allclose(prepare_cohort_timeseries(cohort, [2, 1], n_timepoints=120), out[[2, 1]], atol=0)


def test_cohort_without_tr(tmp_path):
    cohort, _ = _cohort(tmp_path, [100], tr=None)
    with pytest.raises(BrainAlignError, match=r"cohort .*repetition time \(TR\) is None"):
        prepare_cohort_timeseries(cohort)
