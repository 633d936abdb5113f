"""Connectivity: batched Pearson against numpy and nilearn, bad-input policy, ConnectivityFeatures."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.data.connectivity import ConnectivityFeatures, ConstantROIReport, pearson_connectivity
from brainalign.errors import BrainAlignError

nilearn_connectome = pytest.importorskip("nilearn.connectome")
EmpiricalCovariance = pytest.importorskip("sklearn.covariance").EmpiricalCovariance


def ar1(n: int, T: int, R: int, seed: int = 0, phi: float = 0.6) -> np.ndarray:
    """(n, T, R) AR(1) series whose innovations share 3 latent factors (so correlations are not ~0)."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((3, R))
    innov = rng.standard_normal((n, T, R)) + rng.standard_normal((n, T, 3)) @ mixing
    x = np.empty_like(innov)
    x[:, 0] = innov[:, 0]
    for t in range(1, T):
        x[:, t] = phi * x[:, t - 1] + innov[:, t]
    return x + rng.uniform(-50, 50, size=(n, 1, R))  # ROI offsets, as in raw BOLD


def nilearn_empirical(series, kind: str = "correlation", fit=None) -> np.ndarray:
    measure = nilearn_connectome.ConnectivityMeasure(cov_estimator=EmpiricalCovariance(), kind=kind)
    measure.fit(list(fit) if fit is not None else list(series))
    return measure.transform(list(series))


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return ar1(7, 60, 12)


# ------------------------------------------------------------------------------------------- correctness
def test_matches_numpy_corrcoef(batch):
    out = pearson_connectivity(batch)
    assert out.shape == (7, 12, 12) and out.dtype == np.float32
    for scan, mat in zip(batch, out):
        np.testing.assert_allclose(mat, np.corrcoef(scan, rowvar=False), atol=1e-6)


def test_matches_nilearn_empirical_correlation(batch):
    np.testing.assert_allclose(pearson_connectivity(batch), nilearn_empirical(batch), atol=1e-6)
    out64 = pearson_connectivity(batch, matmul_dtype=np.float64, out_dtype=np.float64)
    np.testing.assert_allclose(out64, nilearn_empirical(batch), atol=1e-12)


def test_symmetric_unit_diagonal_bounded(batch):
    out = pearson_connectivity(batch)
    np.testing.assert_array_equal(out, out.transpose(0, 2, 1))
    np.testing.assert_array_equal(np.diagonal(out, axis1=1, axis2=2), 1.0)
    assert np.abs(out).max() <= 1.0


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
def test_chunking_gives_identical_results(batch, chunk_size):
    np.testing.assert_array_equal(pearson_connectivity(batch, chunk_size=chunk_size),
                                  pearson_connectivity(batch, chunk_size=256))


def test_memmap_input(tmp_path, batch):
    path = tmp_path / "ts.npy"
    np.save(path, batch.astype(np.float32))
    mm = np.load(path, mmap_mode="r")
    assert isinstance(mm, np.memmap)
    np.testing.assert_array_equal(pearson_connectivity(mm, chunk_size=2),
                                  pearson_connectivity(batch.astype(np.float32)))


def test_integer_input(batch):
    ints = np.round(batch * 100).astype(np.int32)
    np.testing.assert_allclose(pearson_connectivity(ints), nilearn_empirical(ints.astype(float)), atol=1e-6)


# --------------------------------------------------------------------------------------------- bad input
def test_constant_zero_roi_is_an_error_naming_scan_and_roi(batch):
    x = batch.copy()
    x[4, :, 9] = 0.0
    ids = [f"sub-{i}" for i in range(7)]
    with pytest.raises(BrainAlignError, match=r"scan 'sub-4': ROI 9 is constant"):
        pearson_connectivity(x, ids)
    with pytest.raises(BrainAlignError, match=r"scan '#4': ROI 9 is constant"):
        pearson_connectivity(x, chunk_size=3)  # found in the second chunk, named by position


def test_constant_nonzero_roi_is_an_error(batch):
    x = batch.copy()
    x[2, :, 5] = 1000.1
    with pytest.raises(BrainAlignError, match=r"scan '#2': ROI 5 is constant"):
        pearson_connectivity(x)


@pytest.mark.parametrize("T", [200, 1200])
def test_constant_roi_detected_for_long_series(T):
    rng = np.random.default_rng(T)
    missed = []
    for value in [*rng.uniform(-1e6, 1e6, 20), *rng.uniform(-1, 1, 20), 1000.1, 3.3, 12345.678]:
        x = rng.standard_normal((2, T, 6))
        x[1, :, 4] = value
        try:
            pearson_connectivity(x)
            missed.append(float(value))
        except BrainAlignError as err:
            assert "scan '#1': ROI 4 is constant" in str(err)
    assert not missed, f"constant ROIs not detected at T={T}: {missed[:5]}"


def test_constant_zero_policy_and_report(batch):
    x = batch.copy()
    x[1, :, 3] = 0.0
    x[5, :, [0, 7]] = 0.0
    report = ConstantROIReport()
    out = pearson_connectivity(x, [f"s{i}" for i in range(7)], constant="zero", report=report, chunk_size=4)
    assert report.rois == {"s1": [3], "s5": [0, 7]}
    assert len(report) == 2
    assert out[1, 3, 3] == 1.0
    np.testing.assert_array_equal(np.delete(out[1, 3], 3), 0.0)
    np.testing.assert_array_equal(np.delete(out[1, :, 3], 3), 0.0)
    keep = [r for r in range(12) if r != 3]
    np.testing.assert_allclose(out[1][np.ix_(keep, keep)], np.corrcoef(x[1][:, keep], rowvar=False), atol=1e-6)
    np.testing.assert_allclose(out[0], pearson_connectivity(batch[:1])[0])  # other scans untouched


def test_bad_constant_policy(batch):
    with pytest.raises(BrainAlignError, match="'error' or 'zero'"):
        pearson_connectivity(batch, constant="drop")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_is_an_error(batch, bad):
    x = batch.copy()
    x[3, 10, 2] = bad
    with pytest.raises(BrainAlignError, match=r"scan 'd': NaN/inf in ROI 2 \(1 scan\(s\) affected\)"):
        pearson_connectivity(x, list("abcdefg"))


def test_too_short_is_an_error(batch):
    with pytest.raises(BrainAlignError, match="9 time points; at least 10"):
        pearson_connectivity(batch[:, :9])
    assert pearson_connectivity(batch[:, :5], min_timepoints=5).shape == (7, 12, 12)


@pytest.mark.parametrize("shape", [(60, 12), (2, 3, 60, 12), ()])
def test_wrong_ndim_is_an_error(shape):
    with pytest.raises(BrainAlignError, match=r"\(n_scans, T, R\)"):
        pearson_connectivity(np.ones(shape))


def test_single_roi_and_scan_id_count(batch):
    with pytest.raises(BrainAlignError, match="at least 2"):
        pearson_connectivity(batch[:, :, :1])
    with pytest.raises(BrainAlignError, match="got 2 scan_ids for 7"):
        pearson_connectivity(batch, ["a", "b"])


# ------------------------------------------------------------------------------------ ConnectivityFeatures
@pytest.fixture(scope="module")
def series() -> list[np.ndarray]:
    """Variable-length (T_i, 10) series: 6 train-like, lengths 40..90."""
    return [ar1(1, T, 10, seed=T)[0] for T in (40, 55, 70, 90, 64, 48)]


def test_features_correlation_variable_length(series):
    out = ConnectivityFeatures().fit_transform(series)
    assert out.shape == (6, 10, 10)
    for s, mat in zip(series, out):
        np.testing.assert_allclose(mat, np.corrcoef(s, rowvar=False), atol=1e-6)


def test_features_correlation_same_length_uses_batch(batch):
    np.testing.assert_array_equal(ConnectivityFeatures().transform(list(batch)), pearson_connectivity(batch))


def test_features_partial_correlation(series):
    out = ConnectivityFeatures("partial correlation").fit_transform(series)
    np.testing.assert_allclose(out, nilearn_empirical(series, "partial correlation"), atol=1e-6)
    prec = np.linalg.inv(np.cov(series[0], rowvar=False))
    d = np.sqrt(np.diag(prec))
    expected = -prec / np.outer(d, d)
    np.fill_diagonal(expected, 1.0)
    np.testing.assert_allclose(out[0], expected, atol=1e-5)


def test_features_tangent_fit_on_train_only(series):
    train, test = series[:4], series[4:]
    feats = ConnectivityFeatures("tangent").fit(train)
    out = feats.transform(test)
    np.testing.assert_allclose(out, nilearn_empirical(test, "tangent", fit=train), atol=1e-5)
    refit = ConnectivityFeatures("tangent").fit(series).transform(test)
    assert np.abs(refit - out).max() > 1e-4  # the reference really comes from the training scans


def test_features_tangent_without_fit_is_an_error(series):
    with pytest.raises(BrainAlignError, match="tangent.*fit"):
        ConnectivityFeatures("tangent").transform(series)


def test_features_vectorize(series):
    full = ConnectivityFeatures("partial correlation").fit_transform(series)
    vec = ConnectivityFeatures("partial correlation", vectorize=True).fit_transform(series)
    iu = np.triu_indices(10, k=1)
    assert vec.shape == (6, 45)
    np.testing.assert_array_equal(vec, full[:, iu[0], iu[1]])
    assert ConnectivityFeatures(vectorize=True).fit_transform(series).shape == (6, 45)


def test_features_shrinkage_shrinks(series):
    shrunk = ConnectivityFeatures(shrinkage=True).fit_transform(series)
    plain = ConnectivityFeatures().fit_transform(series)
    off = ~np.eye(10, dtype=bool)
    assert np.abs(shrunk[:, off]).mean() < np.abs(plain[:, off]).mean()
    np.testing.assert_allclose(np.diagonal(shrunk, axis1=1, axis2=2), 1.0, atol=1e-6)


def test_features_shrinkage_matches_nilearn_default_and_is_scale_free(series):
    out = ConnectivityFeatures(shrinkage=True).fit_transform(series)
    scaled = [s * np.geomspace(0.1, 10, s.shape[1]) for s in series]
    np.testing.assert_allclose(ConnectivityFeatures(shrinkage=True).fit_transform(scaled), out, atol=1e-5)
    ref = nilearn_connectome.ConnectivityMeasure(kind="correlation").fit_transform(series)
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_features_bad_input(series):
    with pytest.raises(BrainAlignError, match="unknown connectivity kind"):
        ConnectivityFeatures("coherence")
    with pytest.raises(BrainAlignError, match="different numbers of ROIs"):
        ConnectivityFeatures("covariance").fit([series[0], series[1][:, :8]])
    const = series[0].copy()
    const[:, 4] = 3.0
    with pytest.raises(BrainAlignError, match=r"scan 'x': ROI\(s\) \[4\] are constant"):
        ConnectivityFeatures("partial correlation").fit([const], ["x"])
    with pytest.raises(BrainAlignError, match=r"scan 'x': ROI 4 is constant"):
        ConnectivityFeatures().transform([np.zeros_like(const) + np.arange(10) * (np.arange(10) != 4)
                                          + np.random.default_rng(0).standard_normal(const.shape)
                                          * (np.arange(10) != 4)], ["x"])
    nan = series[2].copy()
    nan[5, 1] = np.nan
    with pytest.raises(BrainAlignError, match=r"scan 'n': NaN/inf in ROI 1"):
        ConnectivityFeatures("tangent").fit([series[0], nan], ["ok", "n"])
