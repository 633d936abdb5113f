"""fMRI-LM stage-0 descriptors: per-scan numbers in four domains (METHODS §2 "Stage 0").

Every descriptor is one number per scan, computed for a batch of scans at once.  With K networks
(``cohort.meta.roi_networks`` or a label file) the columns are:

**Functional connectivity** (Pearson FC from :mod:`brainalign.data.connectivity`, raw r, diagonal excluded)

- ``fc_within`` / ``fc_between``: mean FC of all within-network / between-network ROI pairs;
- ``fc_within:<net>``: mean FC among the ROIs of one network (networks with a single ROI have none);
- ``fc_between:<net>``: mean FC between the network's ROIs and all ROIs of other networks.

**Functional gradients** (diffusion-map embedding of FC, as in BrainSpace / mapalign)

Each FC matrix is sparsified row by row (each row keeps its top 10 %, ``gradient_sparsity=0.9``), rows are
compared with the cosine kernel (negative affinities set to 0), and the diffusion map (``alpha=0.5``,
multiscale ``diffusion_time=0``: eigenvalues scaled by λ/(1-λ)) gives ``n_gradients`` gradients.  Each
scan's gradients are Procrustes-rotated onto the group gradients of the mean training FC (signs and
order of eigenvectors are otherwise arbitrary; see :func:`_reference_gradients` for the reference's
sparsity).  Each row keeps at least ``MIN_NEIGHBOURS`` = 10 entries, so small atlases stay connected; a
scan whose affinity graph still falls apart gets its gradients at a sparsity lowered in steps of 0.1 until it is
connected, with a warning naming it (:func:`connected_gradients`).

- ``gradient<g>_range`` / ``gradient<g>_variance`` (g = 1..n_gradients): spread of each aligned gradient;
- ``gradient1:<net>``: mean position of the network's ROIs on the principal gradient.

**Graph metrics** (proportional threshold: for each scan the strongest ``edge_density`` = 15 % of ROI pairs
among the positive ones are kept with their weights; weaker and negative edges are removed)

- ``modularity``: Newman modularity of the Louvain partition (``networkx.community.louvain_communities``,
  seeded, weighted).  networkx works one graph at a time, so this is the one per-scan loop (≈ 12 ms a scan
  for 100 ROIs);
- ``global_efficiency``: mean inverse shortest-path length of the binary thresholded graph (networkx's
  ``global_efficiency``), computed for all scans at once by breadth-first matrix products;
- ``clustering``: average weighted clustering (Onnela et al. 2005, networkx's ``average_clustering`` with
  ``weight``), batched with matrix products.

**ICA fALFF** (needs time series and a TR; skipped for connectivity-only cohorts)

A group temporal ICA (``sklearn.decomposition.FastICA``, K components, seeded) is fitted on the training
scans' per-ROI z-scored series concatenated in time (at most ``ica_max_scans`` scans, evenly spaced).  Each
component is matched one-to-one to a network by the Hungarian algorithm on the mean absolute ROI weight of
its mixing vector within each network.  Every scan's component time courses are its z-scored series
projected through the unmixing matrix; ``falff:<net>`` is the fALFF of the network's component and
``falff`` their mean.  fALFF = power in 0.01-0.08 Hz / power at all frequencies above 0 (periodogram of the
linearly detrended time course; a power ratio, not Zou et al.'s amplitude ratio).

The group pieces (reference gradients, ICA) live in a :class:`DescriptorModel`, fitted on training scans
only, so descriptors of a scan never depend on test scans.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainalign.errors import BrainAlignError

__all__ = [
    "DescriptorModel",
    "DescriptorSettings",
    "compute_descriptors",
    "connected_gradients",
    "diffusion_gradients",
    "fc_descriptors",
    "falff",
    "global_efficiency",
    "graph_descriptors",
    "read_network_file",
    "resolve_networks",
    "weighted_clustering",
]

DOMAINS = ("connectivity", "gradients", "graph", "ica")
#: Fewest FC entries a row keeps before the gradient kernel (BrainSpace's 10 % alone leaves 3 of 28 ROIs,
#: which splits the affinity graph of small atlases into disconnected pieces).
MIN_NEIGHBOURS = 10


@dataclass
class DescriptorSettings:
    """Settings of :func:`compute_descriptors` (all documented in the module docstring).

    Parameters
    ----------
    edge_density : float
        Fraction of ROI pairs kept for graph metrics (0.15).
    n_gradients : int
        Diffusion-map gradients computed and aligned (3).
    gradient_sparsity : float
        Row-wise sparsity of FC before the cosine kernel (0.9: keep each row's top 10 %).
    alpha : float
        Diffusion-map anisotropy (0.5).
    falff_band : (float, float)
        Low-frequency band in Hz (0.01, 0.08).
    ica_max_scans : int
        At most this many training scans feed the group ICA (200).
    chunk_size : int
        Scans per batch (bounds memory to chunk_size · R² floats).
    seed : int
        Seed of the Louvain partition and of FastICA.
    """

    edge_density: float = 0.15
    n_gradients: int = 3
    gradient_sparsity: float = 0.9
    alpha: float = 0.5
    falff_band: tuple[float, float] = (0.01, 0.08)
    ica_max_scans: int = 200
    chunk_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        self.falff_band = tuple(float(f) for f in self.falff_band)
        if not 0 < self.edge_density <= 1:
            raise BrainAlignError(f"edge_density must be in (0, 1], got {self.edge_density}")
        if not 0 <= self.gradient_sparsity < 1:
            raise BrainAlignError(f"gradient_sparsity must be in [0, 1), got {self.gradient_sparsity}")
        if self.n_gradients < 1:
            raise BrainAlignError(f"n_gradients must be >= 1, got {self.n_gradients}")
        lo, hi = self.falff_band
        if not 0 <= lo < hi:
            raise BrainAlignError(f"falff_band must be (low, high) Hz with 0 <= low < high, got {self.falff_band}")


# -- networks -----------------------------------------------------------------------------------------

def read_network_file(path: str | Path, n_rois: int) -> list[str]:
    """Network labels from a text file, one label per line in ROI order (blank lines ignored).

    Raises
    ------
    BrainAlignError
        The file is missing or has a number of labels other than ``n_rois``.
    """
    path = Path(path)
    try:
        labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise BrainAlignError(f"cannot read network label file {path}: {err}") from None
    if len(labels) != n_rois:
        raise BrainAlignError(f"network label file {path} has {len(labels)} labels but the cohort has {n_rois} ROIs "
                              "(one label per line, in ROI order)")
    return labels


def resolve_networks(cohort, networks: Sequence[str] | None = None) -> list[str]:
    """R network labels: ``networks`` if given, else ``cohort.meta.roi_networks``.

    Raises
    ------
    BrainAlignError
        Neither is available (descriptors need networks), or the lengths do not match, or there are
        fewer than two networks.
    """
    labels = list(networks) if networks is not None else cohort.meta.roi_networks
    if labels is None:
        raise BrainAlignError(
            f"cohort {cohort.root} has no network labels ('roi_networks' in cohort.json); descriptors and captions "
            "need one network label per ROI: pass a label file (--networks FILE, one label per line)"
        )
    labels = [str(x) for x in labels]
    if len(labels) != cohort.n_rois:
        raise BrainAlignError(f"{len(labels)} network labels given for {cohort.n_rois} ROIs in cohort {cohort.root}")
    if len(set(labels)) < 2:
        raise BrainAlignError(f"network labels of cohort {cohort.root} name only {sorted(set(labels))}; "
                              "between-network descriptors need at least two networks")
    return labels


def _network_order(labels: Sequence[str]) -> list[str]:
    """Unique network names in order of first appearance."""
    return list(dict.fromkeys(labels))


def _onehot(labels: Sequence[str], names: Sequence[str]) -> np.ndarray:
    return (np.asarray(labels)[:, None] == np.asarray(names)[None, :]).astype(np.float64)  # (R, K)


# -- connectivity -------------------------------------------------------------------------------------

def fc_descriptors(fc: np.ndarray, labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Within- and between-network mean FC.

    Parameters
    ----------
    fc : array (n, R, R)
        Connectivity matrices (the diagonal is ignored).
    labels : sequence of R str

    Returns
    -------
    dict of name -> array (n,)
    """
    names = _network_order(labels)
    onehot = _onehot(labels, names)  # (R, K)
    off = 1.0 - np.eye(fc.shape[1])
    sums = np.einsum("rk,nrs,sl->nkl", onehot, np.asarray(fc, dtype=np.float64) * off, onehot)  # (n, K, K)
    counts = onehot.T @ off @ onehot  # (K, K) ordered pairs
    diag = np.eye(len(names), dtype=bool)
    out = {
        "fc_within": sums[:, diag].sum(1) / counts[diag].sum(),
        "fc_between": sums[:, ~diag].sum(1) / counts[~diag].sum(),
    }
    for k, net in enumerate(names):
        if counts[k, k] > 0:
            out[f"fc_within:{net}"] = sums[:, k, k] / counts[k, k]
    between = (sums.sum(2) - sums[:, diag]) / (counts.sum(1) - counts[diag])  # (n, K)
    out.update({f"fc_between:{net}": between[:, k] for k, net in enumerate(names)})
    return out


# -- gradients ----------------------------------------------------------------------------------------

def _cosine_affinity(fc: np.ndarray, sparsity: float) -> np.ndarray:
    """(n, R, R) FC -> non-negative cosine affinity of row-wise sparsified rows."""
    x = np.array(fc, dtype=np.float64)
    if sparsity > 0:
        R = x.shape[-1]
        keep = max(int(np.floor((1.0 - sparsity) * R + 1e-9)), min(R, MIN_NEIGHBOURS))
        k = R - keep
        if k > 0:
            thr = np.partition(x, k, axis=-1)[..., k : k + 1]  # each row's keep-th largest value
            x[x < thr] = 0.0
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    x /= np.where(norm > 0, norm, 1.0)
    return np.clip(np.matmul(x, np.swapaxes(x, -1, -2)), 0.0, None)


def diffusion_gradients(fc: np.ndarray, n_gradients: int = 3, *, alpha: float = 0.5, sparsity: float = 0.9,
                        scan_ids: Sequence[str] | None = None,
                        disconnected: str = "raise") -> tuple[np.ndarray, np.ndarray]:
    """Diffusion-map gradients of a batch of FC matrices (BrainSpace's ``approach="dm"``, cosine kernel).

    Parameters
    ----------
    fc : array (n, R, R) or (R, R)
    n_gradients : int
    alpha : float
        Anisotropic normalisation (0.5: Fokker-Planck).
    sparsity : float
        Row-wise sparsity before the kernel (each row keeps at least ``MIN_NEIGHBOURS`` entries).
    scan_ids : sequence of str, optional
        Names for error messages.
    disconnected : str
        A matrix whose affinity graph falls apart (or has a ROI with no positive affinity): ``"raise"`` (an
        error naming it) or ``"nan"`` (its gradients and eigenvalues are NaN; see :func:`connected_gradients`).

    Returns
    -------
    gradients : array (n, R, n_gradients)
        Eigenvectors of the diffusion operator (first, trivial one dropped) scaled by λ/(1-λ).
    lambdas : array (n, n_gradients)
        The scaled eigenvalues.
    """
    if disconnected not in ("raise", "nan"):
        raise BrainAlignError(f"disconnected must be 'raise' or 'nan', got {disconnected!r}")
    single = np.ndim(fc) == 2
    a = _cosine_affinity(np.asarray(fc)[None] if single else np.asarray(fc), sparsity)
    isolated = (a.sum(-1) <= 0).any(-1)  # a ROI with no positive affinity at all: the graph is split too
    if isolated.any() and disconnected != "nan":
        raise BrainAlignError("a ROI has no positive affinity to any other ROI; gradients are undefined")
    a[isolated] = np.eye(a.shape[-1])  # every ROI its own piece, so the split test below flags it
    deg = a.sum(-1)
    if alpha > 0:
        d = deg ** -alpha
        a = d[:, :, None] * a * d[:, None, :]
    d = a.sum(-1) ** -0.5
    sym = d[:, :, None] * a * d[:, None, :]
    vals, vecs = np.linalg.eigh(sym)  # ascending
    vals = vals[:, ::-1][:, : n_gradients + 1]
    vecs = vecs[:, :, ::-1][:, :, : n_gradients + 1]
    split = vals[:, 1] > 1.0 - 1e-8  # eigenvalue 1 twice: the affinity graph is disconnected
    if split.any() and disconnected != "nan":
        s = int(np.flatnonzero(split)[0])
        name = f"scan '{scan_ids[s]}'" if scan_ids is not None else f"matrix {s}"
        raise BrainAlignError(f"{name}: the gradient affinity graph falls apart into disconnected pieces; "
                              "lower gradient_sparsity so that each ROI keeps more neighbours")
    # The top eigenvector of the symmetric operator is sqrt(degree) (normalised); dividing by it gives the
    # right eigenvectors of the Markov matrix (BrainSpace divides by the computed vector, which is the same).
    root = np.sqrt(a.sum(-1))
    v0 = root / np.linalg.norm(root, axis=-1, keepdims=True)
    psi = vecs / v0[:, :, None]
    lam = vals[:, 1:] / np.clip(1.0 - vals[:, 1:], 1e-12, None)
    grads = psi[:, :, 1:] * lam[:, None, :]
    grads[split], lam[split] = np.nan, np.nan
    return (grads[0], lam[0]) if single else (grads, lam)


def connected_gradients(fc: np.ndarray, n_gradients: int, *, alpha: float, sparsity: float,
                        scan_ids: Sequence[str], warn: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`diffusion_gradients` of a batch (n, R, R) where a scan whose affinity graph falls apart at
    ``sparsity`` is recomputed at sparsities lowered in steps of 0.1 until it is connected (as for the reference
    gradients); a warning names those scans unless ``warn`` is False.  Returns the gradients (n, R, n_gradients)
    and the sparsity used per scan (n,); an error names a scan that stays disconnected even unsparsified."""
    grads, _ = diffusion_gradients(fc, n_gradients, alpha=alpha, sparsity=sparsity, disconnected="nan")
    used = np.full(len(fc), float(sparsity))
    bad = np.isnan(grads).any(axis=(1, 2))
    if not bad.any():
        return grads, used
    ids = np.asarray(scan_ids, dtype=str)
    if warn:
        more = " ..." if bad.sum() > 5 else ""
        warnings.warn(f"scan(s) {[str(i) for i in ids[bad][:5]]}{more}: the gradient affinity graph falls apart "
                      f"at sparsity {sparsity}; their gradients use a lower sparsity", stacklevel=2)
    for lower in np.round(np.arange(sparsity - 0.1, -1e-9, -0.1), 10):
        idx = np.flatnonzero(bad)
        grads[idx], _ = diffusion_gradients(fc[idx], n_gradients, alpha=alpha, sparsity=float(lower),
                                            disconnected="nan")
        used[idx] = lower
        bad = np.isnan(grads).any(axis=(1, 2))
        if not bad.any():
            return grads, used
    raise BrainAlignError(f"'{ids[bad][0]}': the gradient affinity graph falls apart into disconnected "
                          "pieces at every sparsity; its ROIs share no positive connectivity profile")


def procrustes_align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rotate each (R, k) ``source`` onto the (R, k) ``target`` (orthogonal Procrustes, batched).

    Parameters
    ----------
    source : array (n, R, k)
    target : array (R, k)

    Returns
    -------
    array (n, R, k)
    """
    u, _, vt = np.linalg.svd(np.matmul(np.swapaxes(source, -1, -2), target))  # (n, k, k)
    return np.matmul(source, np.matmul(u, vt))


# -- graph metrics ------------------------------------------------------------------------------------

def threshold_proportional(fc: np.ndarray, density: float) -> np.ndarray:
    """Keep each scan's strongest ``density`` fraction of ROI pairs (positive weights only).

    Parameters
    ----------
    fc : array (n, R, R)
    density : float in (0, 1]

    Returns
    -------
    array (n, R, R), float64
        Symmetric, zero diagonal, weights in (0, 1] where kept, 0 elsewhere.
    """
    n, R, _ = fc.shape
    iu = np.triu_indices(R, k=1)
    edges = np.asarray(fc, dtype=np.float64)[:, iu[0], iu[1]]  # (n, E)
    keep = max(1, int(round(density * edges.shape[1])))
    thr = -np.partition(-edges, keep - 1, axis=1)[:, keep - 1 : keep]  # keep-th largest
    edges = np.where((edges >= thr) & (edges > 0), edges, 0.0)
    w = np.zeros((n, R, R))
    w[:, iu[0], iu[1]] = edges
    return w + np.swapaxes(w, 1, 2)


def global_efficiency(adjacency: np.ndarray) -> np.ndarray:
    """Global efficiency of binary undirected graphs (as ``networkx.global_efficiency``), batched.

    Parameters
    ----------
    adjacency : array (n, R, R)
        Non-zero entries are edges; the diagonal is ignored.

    Returns
    -------
    array (n,)
        Mean over ordered pairs i != j of 1 / shortest-path length (0 for unreachable pairs).
    """
    a = (np.asarray(adjacency) != 0).astype(np.float32)
    n, R, _ = a.shape
    eye = np.eye(R, dtype=bool)
    a[:, eye] = 0
    reached = a > 0
    inv_dist = reached.astype(np.float64)
    frontier = reached
    for d in range(2, R):
        nxt = (np.matmul(frontier.astype(np.float32), a) > 0) & ~reached
        nxt[:, eye] = False
        if not nxt.any():
            break
        inv_dist += nxt / d
        reached |= nxt
        frontier = nxt
    return inv_dist.sum((1, 2)) / (R * (R - 1))


def weighted_clustering(weights: np.ndarray) -> np.ndarray:
    """Average weighted clustering coefficient (Onnela; ``networkx.average_clustering(weight=...)``), batched.

    Parameters
    ----------
    weights : array (n, R, R)
        Non-negative symmetric weights, zero diagonal.

    Returns
    -------
    array (n,)
        Mean over all ROIs of ``Σ_jk (ŵ_ij ŵ_jk ŵ_ki)^(1/3) / (k_i (k_i - 1))`` with ŵ = w / max(w)
        per graph; ROIs with fewer than two neighbours count as 0.
    """
    w = np.asarray(weights, dtype=np.float64)
    top = w.max(axis=(1, 2), keepdims=True)
    c = np.cbrt(w / np.where(top > 0, top, 1.0))
    cycles = np.einsum("nij,njk,nki->ni", c, c, c)
    deg = (w > 0).sum(-1)
    denom = deg * (deg - 1)
    return np.where(denom > 0, cycles / np.where(denom > 0, denom, 1), 0.0).mean(1)


def louvain_modularity(weights: np.ndarray, seed: int = 0) -> np.ndarray:
    """Modularity of the seeded Louvain partition of each weighted graph (networkx), (n, R, R) -> (n,)."""
    import networkx as nx

    out = np.empty(len(weights))
    for s, w in enumerate(weights):  # networkx handles one graph at a time
        g = nx.from_numpy_array(w)
        if g.number_of_edges() == 0:
            out[s] = 0.0
            continue
        parts = nx.community.louvain_communities(g, weight="weight", seed=seed)
        out[s] = nx.community.modularity(g, parts, weight="weight")
    return out


def graph_descriptors(fc: np.ndarray, density: float = 0.15, seed: int = 0) -> dict[str, np.ndarray]:
    """``modularity``, ``global_efficiency`` and ``clustering`` of proportionally thresholded FC (n, R, R)."""
    w = threshold_proportional(fc, density)
    return {"modularity": louvain_modularity(w, seed), "global_efficiency": global_efficiency(w),
            "clustering": weighted_clustering(w)}


# -- fALFF --------------------------------------------------------------------------------------------

def falff(x: np.ndarray, tr: float, band: tuple[float, float] = (0.01, 0.08)) -> np.ndarray:
    """Fractional amplitude of low-frequency fluctuations as a power ratio, along axis -2 (time).

    Parameters
    ----------
    x : array (..., T, C)
        Time courses.
    tr : float
        Sampling interval, seconds.
    band : (low, high)
        Hz.

    Returns
    -------
    array (..., C)
        Power in ``band`` / power at all frequencies > 0 (periodogram, linear detrend).
    """
    from scipy.signal import periodogram

    if tr is None or tr <= 0:
        raise BrainAlignError(f"fALFF needs a positive TR in seconds, got {tr!r} (set 'tr' in cohort.json)")
    if band[0] >= 0.5 / tr:
        raise BrainAlignError(f"fALFF band {band} Hz lies above the Nyquist frequency {0.5 / tr:.3f} Hz of TR {tr} s")
    freqs, power = periodogram(x, fs=1.0 / tr, detrend="linear", axis=-2)
    pos = freqs > 0
    inband = (freqs >= band[0]) & (freqs <= band[1])
    total = power[..., pos, :].sum(-2)
    return power[..., inband, :].sum(-2) / np.where(total > 0, total, 1.0)


def _zscore_time(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(-2, keepdims=True)
    sd = x.std(-2, keepdims=True)
    return x / np.where(sd > 0, sd, 1.0)


def _single_thread_blas():
    """BLAS limited to one thread: the batched products here are of small (R, R) matrices, where thread
    start-up costs more than it gains, and badly so on a loaded machine (connattractor, 98 scans, 2 busy
    cores: 33 s with the default thread pool, 4.7 s with one thread)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _reference_gradients(mean_fc: np.ndarray, s: DescriptorSettings) -> tuple[np.ndarray, float]:
    """Gradients of the mean training FC, the Procrustes target of every scan's gradients.

    A group-mean FC is smoother and more modular than any single scan's: with BrainSpace's 90 % row-wise
    sparsity the affinity of a block-structured mean (the simulator's, 100 ROIs) splits into one piece per
    network although every single scan's stays connected.  As the reference only fixes the orientation of
    the gradients, its sparsity is lowered in steps of 0.1 until its affinity graph is connected.
    """
    grads, used = connected_gradients(mean_fc[None], s.n_gradients, alpha=s.alpha, sparsity=s.gradient_sparsity,
                                      scan_ids=["the mean training FC"], warn=False)
    return grads[0], float(used[0])


# -- the fitted group pieces --------------------------------------------------------------------------

class DescriptorModel:
    """Group-level pieces of the descriptors, fitted on training scans only.

    Holds the reference gradients (diffusion map of the training scans' mean FC) used to align each scan's
    gradients, and the group ICA (unmixing matrix, mean, component-to-network matching).

    Parameters
    ----------
    labels : sequence of R str
        Network label of each ROI.
    settings : DescriptorSettings, optional

    Attributes
    ----------
    reference_gradients_ : array (R, n_gradients)
    reference_sparsity_ : float
        Sparsity used for the reference (the setting, or lower when the mean FC's graph needs it).
    ica_unmixing_ : array (K, R) or None
        None when the cohort has no time series (the ICA domain is then left out).
    ica_mean_ : array (R,) or None
    ica_networks_ : list of K str or None
        The network matched to each component.
    tr_ : float or None
    """

    def __init__(self, labels: Sequence[str], settings: DescriptorSettings | None = None):
        self.labels = [str(x) for x in labels]
        self.networks = _network_order(self.labels)
        self.settings = settings or DescriptorSettings()
        self.reference_gradients_: np.ndarray | None = None
        self.reference_sparsity_: float | None = None
        self.ica_unmixing_: np.ndarray | None = None
        self.ica_mean_: np.ndarray | None = None
        self.ica_networks_: list[str] | None = None
        self.tr_: float | None = None
        self.n_fit_scans_ = 0

    @property
    def domains(self) -> tuple[str, ...]:
        return DOMAINS if self.ica_unmixing_ is not None else DOMAINS[:3]

    def _check(self, cohort) -> None:
        if len(self.labels) != cohort.n_rois:
            raise BrainAlignError(f"descriptor model has {len(self.labels)} ROIs, cohort {cohort.root} has "
                                  f"{cohort.n_rois}")

    def fit(self, cohort, indices: Sequence[int] | None = None) -> DescriptorModel:
        """Fit the reference gradients and, when the cohort has time series, the group ICA.

        Parameters
        ----------
        cohort : Cohort
        indices : sequence of int, optional
            Training scan positions (default: all scans).
        """
        with _single_thread_blas():
            return self._fit(cohort, indices)

    def _fit(self, cohort, indices: Sequence[int] | None) -> DescriptorModel:
        self._check(cohort)
        s = self.settings
        idx = np.arange(len(cohort)) if indices is None else np.asarray(indices, dtype=int)
        if idx.size == 0:
            raise BrainAlignError("the descriptor reference needs at least one training scan")
        mean_fc = np.zeros((cohort.n_rois, cohort.n_rois))
        for start in range(0, idx.size, s.chunk_size):
            mean_fc += cohort.connectivity_stack(idx[start : start + s.chunk_size], dtype=np.float64).sum(0)
        mean_fc /= idx.size
        self.reference_gradients_, self.reference_sparsity_ = _reference_gradients(mean_fc, s)
        self.n_fit_scans_ = int(idx.size)
        if cohort.has_timeseries:
            self._fit_ica(cohort, idx)
        return self

    def _fit_ica(self, cohort, idx: np.ndarray) -> None:
        from scipy.optimize import linear_sum_assignment
        from sklearn.decomposition import FastICA

        if cohort.meta.tr is None:
            raise BrainAlignError(f"cohort {cohort.root} has time series but no TR in cohort.json; the ICA fALFF "
                                  "descriptors need it ('tr', seconds)")
        s = self.settings
        K = len(self.networks)
        pick = idx[np.unique(np.linspace(0, idx.size - 1, min(idx.size, s.ica_max_scans)).round().astype(int))]
        data = np.concatenate([_zscore_time(cohort.timeseries(int(i))) for i in pick])  # (ΣT, R)
        if data.shape[0] < 2 * K:
            raise BrainAlignError(f"group ICA needs at least {2 * K} time points in the training scans, "
                                  f"got {data.shape[0]}")
        ica = FastICA(n_components=K, whiten="unit-variance", random_state=s.seed, max_iter=1000, tol=1e-4)
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # a partly converged basis still separates bands
            ica.fit(data)
        weights = np.abs(ica.mixing_)  # (R, K): ROI weight of each component
        weights /= np.linalg.norm(weights, axis=0, keepdims=True)
        onehot = _onehot(self.labels, self.networks)
        score = (onehot / onehot.sum(0)).T @ weights  # (K networks, K components): mean |weight| in network
        net_idx, comp_idx = linear_sum_assignment(-score)
        order = comp_idx[np.argsort(net_idx)]  # component matched to each network, in network order
        self.ica_unmixing_ = ica.components_[order]
        self.ica_mean_ = ica.mean_
        self.ica_networks_ = list(self.networks)
        self.tr_ = float(cohort.meta.tr)

    def transform(self, cohort, indices: Sequence[int] | None = None, progress=None) -> pd.DataFrame:
        """Descriptors of the given scans (default all): DataFrame indexed by scan_id, one column each.

        Parameters
        ----------
        progress : callable, optional
            Called as ``progress(done, total)`` after each chunk of scans.
        """
        if self.reference_gradients_ is None:
            raise BrainAlignError("DescriptorModel.transform() needs fit() first")
        self._check(cohort)
        s = self.settings
        idx = np.arange(len(cohort)) if indices is None else np.asarray(indices, dtype=int)
        parts = []
        with _single_thread_blas():
            for start in range(0, idx.size, s.chunk_size):
                chunk = idx[start : start + s.chunk_size]
                parts.append(self._chunk(cohort, chunk))
                if progress is not None:
                    progress(min(start + s.chunk_size, idx.size), idx.size)
        if not parts:
            return pd.DataFrame(index=pd.Index([], name="scan_id", dtype=str))
        table = pd.concat(parts)
        table.index.name = "scan_id"
        return table

    def _chunk(self, cohort, chunk: np.ndarray) -> pd.DataFrame:
        s = self.settings
        fc = cohort.connectivity_stack(chunk, dtype=np.float64)
        cols: dict[str, np.ndarray] = dict(fc_descriptors(fc, self.labels))
        grads, _ = connected_gradients(fc, s.n_gradients, alpha=s.alpha, sparsity=s.gradient_sparsity,
                                       scan_ids=cohort.scan_ids[chunk])
        grads = procrustes_align(grads, self.reference_gradients_)  # (n, R, g)
        for g in range(s.n_gradients):
            cols[f"gradient{g + 1}_range"] = np.ptp(grads[:, :, g], axis=1)
            cols[f"gradient{g + 1}_variance"] = grads[:, :, g].var(axis=1)
        onehot = _onehot(self.labels, self.networks)
        g1_net = grads[:, :, 0] @ (onehot / onehot.sum(0))  # (n, K)
        cols.update({f"gradient1:{net}": g1_net[:, k] for k, net in enumerate(self.networks)})
        cols.update(graph_descriptors(fc, s.edge_density, s.seed))
        if self.ica_unmixing_ is not None:
            cols.update(self._falff(cohort, chunk))
        return pd.DataFrame(cols, index=pd.Index(cohort.scan_ids[chunk], name="scan_id"))

    def _falff(self, cohort, chunk: np.ndarray) -> dict[str, np.ndarray]:
        series = [cohort.timeseries(int(i)) for i in chunk]
        lengths = np.array([x.shape[0] for x in series])
        values = np.empty((len(chunk), len(self.networks)))
        for T in np.unique(lengths):
            pos = np.flatnonzero(lengths == T)
            x = _zscore_time(np.stack([series[p] for p in pos]))  # (b, T, R)
            sources = (x - self.ica_mean_) @ self.ica_unmixing_.T  # (b, T, K)
            values[pos] = falff(sources, self.tr_, self.settings.falff_band)
        out = {"falff": values.mean(1)}
        out.update({f"falff:{net}": values[:, k] for k, net in enumerate(self.ica_networks_)})
        return out

    # -- persistence ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (lists of floats)."""
        if self.reference_gradients_ is None:
            raise BrainAlignError("DescriptorModel.to_dict() needs fit() first")
        tolist = (lambda a: None if a is None else np.asarray(a).tolist())
        return {"labels": self.labels, "settings": asdict(self.settings), "n_fit_scans": self.n_fit_scans_,
                "reference_gradients": tolist(self.reference_gradients_),
                "reference_sparsity": self.reference_sparsity_, "ica_unmixing": tolist(self.ica_unmixing_),
                "ica_mean": tolist(self.ica_mean_), "ica_networks": self.ica_networks_, "tr": self.tr_}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DescriptorModel:
        try:
            model = cls(data["labels"], DescriptorSettings(**data.get("settings", {})))
            model.reference_gradients_ = np.asarray(data["reference_gradients"], dtype=np.float64)
            asarr = (lambda a: None if a is None else np.asarray(a, dtype=np.float64))
            model.ica_unmixing_ = asarr(data.get("ica_unmixing"))
            model.ica_mean_ = asarr(data.get("ica_mean"))
            model.ica_networks_ = data.get("ica_networks")
            model.tr_ = data.get("tr")
            model.reference_sparsity_ = data.get("reference_sparsity")
            model.n_fit_scans_ = int(data.get("n_fit_scans", 0))
        except (KeyError, TypeError, ValueError) as err:
            raise BrainAlignError(f"descriptor model state is incomplete or malformed: {err!r}") from None
        return model


def compute_descriptors(cohort, indices: Sequence[int] | None = None, *, networks: Sequence[str] | None = None,
                        model: DescriptorModel | None = None, settings: DescriptorSettings | None = None,
                        progress=None) -> pd.DataFrame:
    """Per-scan descriptors in four domains (see the module docstring for every column).

    Parameters
    ----------
    cohort : Cohort
    indices : sequence of int, optional
        Scan positions (default: all, in cohort order).
    networks : sequence of R str, optional
        Network labels; default ``cohort.meta.roi_networks``.
    model : DescriptorModel, optional
        Fitted group pieces.  Default: fitted on the scans of ``indices`` themselves — pass a model fitted
        on training scans (``DescriptorModel(labels).fit(cohort, train)``) to keep test scans out of it.
    settings : DescriptorSettings, optional
        Used when ``model`` is None.

    Returns
    -------
    DataFrame
        Index ``scan_id`` (in the order of ``indices``), one float column per descriptor.

    Raises
    ------
    BrainAlignError
        No network labels, a missing TR with time series, unreadable arrays.
    """
    if model is None:
        model = DescriptorModel(resolve_networks(cohort, networks), settings).fit(cohort, indices)
    return model.transform(cohort, indices, progress=progress)
