"""Simulated cohorts with planted truth: diagnosis, sensitive-attribute and site effects in known regions.

:func:`simulate_cohort` writes a standard cohort folder (``cohort.json``, ``phenotypes.csv``, ``timeseries/``,
``connectivity/``; see :mod:`brainalign.data.cohort`) plus the truth beside it (``truth.json`` and ``truth/*.npy``,
read back with :func:`load_truth`).  Explanations can then be scored against the planted regions and fairness
methods against a known confound (METHODS §5).

Generative model
----------------
Everything below is per time point; ``R`` ROIs, ``T`` time points, ``K`` networks.

1. **Group template** ``C0`` (R×R correlation, positive definite).

   * ``template="blocks"`` (built in): ROIs are split into networks (Yeo-7 names by default, sizes in the
     proportions of the Schaefer-100 atlas: visual 17, somatomotor 14, dorsal_attention 15, ventral_attention 12,
     limbic 5, frontoparietal 13, default 24 per 100 ROIs; each network gets at least one ROI).  Each ROI ``i`` of
     network ``n(i)`` is a latent-factor signal ``x_i = λ_i f_n(i) + g_i G + u_i``: network factors ``f`` (unit
     variance, correlated through a K×K factor correlation Φ with a task-positive and a default-mode meta-factor,
     so e.g. the dorsal-attention and default factors are anti-correlated), a global signal ``G`` and unique noise.
     Loadings ``λ_i = network_strength·U(0.85, 1.15)`` (×0.75 in limbic, whose BOLD signal is weak) and
     ``g_i = global_strength·U(0.7, 1.3)``.  ``C0 = ΛΦΛᵀ + ggᵀ + diag(ψ)`` with ψ making the diagonal 1, hence
     PD.  With the defaults (R = 100) the template has mean within-network correlation 0.59 and between-network
     0.22 (0.0 for dorsal attention–default up to 0.45); the observed FC, attenuated by measurement noise, has
     0.42 and 0.19 (HCP Schaefer-100 group FC: 0.50 and 0.29).
   * ``template="brainspace"``: the HCP group-mean FC of the Schaefer 100/200/300/400 parcellation shipped by
     ``brainspace==0.3.0`` (:func:`brainspace_template`), with Schaefer 7-network labels.
   * ``template_fc=array``: any (R, R) correlation or covariance matrix (made a correlation matrix; eigenvalues
     below 1e-3 are raised so that it is PD).  Networks come from ``network_labels`` or, without them,
     from average-linkage clustering of ``1 - C0`` (named ``cluster_1..K``).

2. **Site** ``k`` (``n_sites`` sites): an additive, mostly positive shift of all correlations (a global,
   motion-like artefact) ``Ck = corr(C0 + s_k v_k v_kᵀ)`` with ``s_k = site_effect·U(0.5, 1.5)`` and
   ``v_k = 1 + 0.5·N(0, 1)`` per ROI; and a measurement-noise level
   ``σ_k = noise_level·exp(site_noise_spread·N(0, 1))`` which scales (attenuates) the observed FC.
   With ``site_prevalence_spread > 0`` the diagnosis base rate differs between sites (see 5).

3. **Person** ``p`` at site ``k``: ``Cp = corr((1 − w)·Ck + (w/ν)·Lk Y Yᵀ Lkᵀ)`` with ``Lk = chol(Ck)`` and
   ``Y ~ N(0, 1)`` of shape (R, ν): a Wishart perturbation centred on the site template, so edges deviate by
   about ``w·(1 − ρ²)/√ν = subject_sd·(1 − ρ²)`` whatever R (``ν = min(25, round((0.5/subject_sd)²))``,
   ``w = min(0.9, subject_sd·√ν)``).  **Scan** ``s`` of person ``p`` (``scans_per_subject`` scans): the same
   construction around ``Cp`` with ``scan_sd`` (smaller), so scans of one person share the person's component
   plus small scan noise.  The mixing matrix ``[√(1−w)·A | √(w/ν)·A Y]`` (rows scaled to unit norm) is an
   exact square root of each perturbed matrix, so no per-scan Cholesky is needed.

4. **Planted effects** act on the scan's mixing matrix ``A`` (``x = A z``, ``AAᵀ = Cs``) through a
   *coupling operator* ``M = I + β·E``: for every ROI ``i`` in an effect set ``S``, ``x_i ← x_i + β·z̄_N``, where
   ``z̄_N`` is the mean signal of a target network ``N`` (its ROIs outside every effect set), scaled to unit
   variance under ``C0``.  ``β > 0`` couples ``S`` more strongly to ``N``; ``β < 0`` decouples it (with ``N`` =
   the ROIs' own network, within-network hypo-connectivity).  Only rows/columns of ``S`` change: FC edges not
   touching ``S`` have exactly the same distribution in both groups.  ``det M = 1``, so ``M Cs Mᵀ`` stays PD.

   * **Diagnosis**: patients get ``β = dx_effect`` on the ``dx_rois`` (default: a contiguous block of
     ``max(2, round(0.08·R))`` ROIs in the middle of the default network) with target ``dx_target``
     (default: their own network) — default-mode hypo-connectivity, as often reported in autism.
   * **Sensitive attribute** (``sensitive="sex"`` or ``"age_group"``): the ``sensitive_group`` (default female,
     resp. child) gets ``β = sensitive_effect`` on a disjoint set ``sensitive_rois`` (default: a block in the
     somatomotor network) coupled to ``sensitive_target`` (default ventral_attention).

   ``truth/dx_effect_fc.npy`` holds the expected FC change ``corr(M C0 Mᵀ) − C0`` and ``truth/dx_edge_mask.npy``
   the edges touching the dx ROIs (likewise for the sensitive effect).

5. **Phenotypes** (per person; every scan of a person carries the same values):

   * synthetic mix: site with probabilities ``Dirichlet(4,…,4)``; sex female with probability
     ``female_fraction``; age: with probability ``child_fraction`` a child ``U(6, 18)``, otherwise an adult
     ``18 + Gamma(2, 5)`` capped at 64 (2 decimals); ``age_group = srs = "child" if age < 18 else "adult"``.
   * diagnosis with **confounding** ``c = confound`` ∈ [0, 1]: with site base rate ``b_k`` (``dx_rate``, shifted
     evenly across sites by up to ± ``site_prevalence_spread``), ``P(dx = patient) = clip(b_k·(1 + c), 0, 1)``
     for persons in ``confound_group`` (default male, resp. child) and ``clip(b_k·(1 − c), 0, 1)`` otherwise.
     ``c = 0``: dx independent of the sensitive attribute; ``c = 1`` with ``b = 0.5``: dx determined by it.
     The realised phi coefficient and contingency tables are in ``truth.json["realised"]``.
   * ``phenotype_table=CSV``: an ABIDE-style table (``SITE_ID``, ``DX_GROUP`` 1 = patient / 2 = control,
     ``SEX`` 1 = male / 2 = female, ``AGE_AT_SCAN``) is resampled by person (without replacement when it has
     enough valid rows), giving the real site/sex/age/dx mix; ``confound``, ``dx_rate``, ``female_fraction``,
     ``child_fraction``, ``n_sites`` and ``site_prevalence_spread`` are then not used.

6. **Time series**: latent sources ``z`` (R + ν_person + ν_scan per scan, the columns of ``A``) and measurement
   noise ``e`` (R) are stationary AR(1) processes
   with coefficient ``ar_phi`` and unit variance; ``x_t = M A z_t + σ_s e_t`` with ``σ_s = σ_k·exp(0.15·N(0,1))``,
   then every ROI is scaled by a positive amplitude ``exp(0.25·N(0,1))`` (ROI signal amplitudes differ; Pearson
   FC does not see it).  ``connectivity/`` holds the Pearson FC of the stored (float32) series computed with
   :func:`~brainalign.data.connectivity.pearson_connectivity`.

Randomness: one ``seed``.  The template, sites, phenotypes and each person's draws come from separate
``numpy.random.SeedSequence(seed, spawn_key=...)`` streams, so the files do not depend on ``chunk_size`` and the
same configuration gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.linalg import cholesky
from scipy.signal import lfilter

from brainalign.data.cohort import TIMESERIES_DIR, CohortMeta, array_path, write_cohort
from brainalign.data.connectivity import pearson_connectivity
from brainalign.errors import BrainAlignError

__all__ = [
    "YEO7_NETWORKS",
    "SimulationConfig",
    "simulate_cohort",
    "load_truth",
    "blocks_template",
    "brainspace_template",
    "schaefer7_networks",
    "TRUTH_FILE",
    "TRUTH_DIR",
]

YEO7_NETWORKS = (
    "visual", "somatomotor", "dorsal_attention", "ventral_attention", "limbic", "frontoparietal", "default",
)
#: ROIs per Yeo-7 network in the Schaefer-100 atlas, used as relative network sizes for the blocks template.
_YEO7_SIZES = (17, 14, 15, 12, 5, 13, 24)
#: Loadings of the Yeo-7 network factors on a task-positive and a default-mode meta-factor (Φ = BBᵀ + diag).
_YEO7_META = {
    "visual": (0.55, 0.0), "somatomotor": (0.6, 0.0), "dorsal_attention": (0.6, -0.25),
    "ventral_attention": (0.6, 0.05), "limbic": (0.1, 0.35), "frontoparietal": (0.45, 0.35),
    "default": (-0.1, 0.6),
}
#: Schaefer 2018 7-network parcellations: ROIs per network (Yeo-7 order) in the left, then right hemisphere.
_SCHAEFER7_COUNTS = {
    100: ((9, 6, 8, 7, 3, 4, 13), (8, 8, 7, 5, 2, 9, 11)),
    200: ((14, 16, 13, 11, 6, 13, 27), (15, 19, 13, 11, 6, 17, 19)),
    300: ((24, 29, 16, 16, 10, 17, 38), (23, 28, 18, 18, 10, 23, 30)),
    400: ((31, 37, 23, 22, 13, 22, 52), (30, 40, 23, 25, 13, 30, 39)),
}
_BRAINSPACE_PIP = "pip install --no-deps brainspace==0.3.0"

SENSITIVE_ATTRIBUTES = ("sex", "age_group")
_GROUP_VALUES = {"sex": ("male", "female"), "age_group": ("child", "adult")}
_DEFAULT_EFFECT_GROUP = {"sex": "female", "age_group": "child"}
_DEFAULT_CONFOUND_GROUP = {"sex": "male", "age_group": "child"}
TABLE_COLUMNS = ("SITE_ID", "DX_GROUP", "SEX", "AGE_AT_SCAN")
#: Settings of the synthetic mix that a phenotype table replaces (recorded in truth.json, not applied).
_TABLE_UNUSED = ("confound", "confound_group", "dx_rate", "female_fraction", "child_fraction", "n_sites",
                 "site_prevalence_spread")
TRUTH_FILE = "truth.json"
TRUTH_DIR = "truth"
DEFAULT_N_SCANS = 400
_STREAM_TEMPLATE, _STREAM_PHENOTYPES, _STREAM_SITES, _STREAM_PERSON = 0, 1, 2, 3


# ------------------------------------------------------------------------------------------------- configuration
@dataclass
class SimulationConfig:
    """Everything that defines a simulated cohort (see the module docstring for the model).

    Fields are grouped: size, template, variability and noise, diagnosis, sensitive attribute, other.
    Invalid values raise :class:`~brainalign.errors.BrainAlignError` listing every problem at once.

    Parameters
    ----------
    n_scans : int, optional
        Total scans (default None: 400 when ``n_subjects`` is not given either).  Persons are drawn until the
        scans are reached; the last person may get fewer scans than drawn.
    n_subjects : int, optional
        Number of persons instead (then the number of scans follows from ``scans_per_subject``).
        Give at most one of ``n_scans`` and ``n_subjects``.
    scans_per_subject : int or (int, int)
        Scans per person, fixed or uniform on the inclusive range (default ``(1, 2)``, ADHD-200-like).
    n_rois : int
        Regions R (default 100).
    n_timepoints : int
        Time points T per scan (default 150; at least 10).
    tr : float
        Repetition time in seconds (default 2.0); metadata only.
    ar_phi : float
        AR(1) coefficient of sources and noise, in [0, 1) (default 0.5, lag-1 autocorrelation of BOLD at TR 2 s).

    template : {"blocks", "brainspace"}
        Group FC template (default "blocks").  Ignored when ``template_fc`` is given.
    template_fc : array (R, R), optional
        User group FC (or covariance) instead of a built-in template (default None).
    network_labels : sequence of str, optional
        R network names for ``template_fc`` (default None: networks found by clustering the template).
    networks : tuple of str
        Network names of the blocks template (default :data:`YEO7_NETWORKS`); custom names get equal sizes
        and a factor correlation of 0.09 between networks.
    network_strength : float
        Mean loading of a ROI on its network factor, blocks template (default 0.65).
    global_strength : float
        Mean loading on the global signal, blocks template (default 0.4).

    subject_sd : float
        Approximate SD of a person's FC edges around the site template (default 0.1; 0 = none; at most 0.5).
    scan_sd : float
        Same for a scan around its person (default 0.04).
    noise_level : float
        SD of the measurement noise relative to the unit-variance signal (default 0.6).
    n_sites : int
        Number of sites (default 4).
    site_effect : float
        Mean strength ``s`` of the site FC shift (default 0.1; 0 = none).
    site_noise_spread : float
        Log-SD of the site noise level (default 0.25).
    site_prevalence_spread : float
        Site dx base rates spread evenly over ``dx_rate ± site_prevalence_spread`` (default 0.0).

    dx_labels : (str, str)
        Values of the ``dx`` column, (control, patient) (default ``("control", "autism")``).
    dx_rate : float
        Base probability of the patient label, in (0, 1) (default 0.5).
    dx_effect : float
        Coupling change β of the dx ROIs in patients (default -0.13: hypo-connectivity).
    dx_rois : tuple of int, optional
        0-based dx ROI indices (default None: chosen from ``dx_network``); ``dx_network`` is then ignored and
        the default target is the most common network among them.
    n_dx_rois : int, optional
        Size of the automatic dx set (default None: ``max(2, round(0.08·R))``).
    dx_network : str, optional
        Network holding the automatic dx set (default None: "default", else the largest network).
    dx_target : str, optional
        Network whose coupling with the dx ROIs changes (default None: the dx ROIs' own network).

    sensitive : {"sex", "age_group"}
        Attribute with a planted effect (default "sex").
    sensitive_group : str, optional
        Group whose coupling is altered (default None: "female" for sex, "child" for age_group).
    sensitive_effect : float
        Coupling change β in that group (default 0.15).
    sensitive_rois, n_sensitive_rois : optional
        As for dx (default None: ``max(2, round(0.08·R))`` ROIs from ``sensitive_network``).
    sensitive_network : str, optional
        Default None: "somatomotor", else the largest network with free ROIs other than the dx target network.
    sensitive_target : str, optional
        Default None: "ventral_attention" when it exists, else the sensitive ROIs' own network.
    confound : float
        Dependence between dx and the sensitive attribute, in [0, 1] (default 0.3; rule in module docstring).
    confound_group : str, optional
        Group with the higher dx prevalence (default None: "male" for sex, "child" for age_group).
    female_fraction : float
        Probability of female sex, synthetic mix (default 0.5).
    child_fraction : float
        Probability of a child (age < 18), synthetic mix (default 0.5).
    phenotype_table : str or Path, optional
        ABIDE-style CSV to resample the real site/sex/age/dx mix from (default None: synthetic mix).

    name : str
        Cohort name (default "simulated").
    seed : int
        The one seed (default 0).
    chunk_size : int
        Scans generated at once (default 64); bounds memory, does not change the output.
    """

    n_scans: int | None = None
    n_subjects: int | None = None
    scans_per_subject: int | tuple[int, int] = (1, 2)
    n_rois: int = 100
    n_timepoints: int = 150
    tr: float = 2.0
    ar_phi: float = 0.5
    template: str = "blocks"
    template_fc: np.ndarray | None = None
    network_labels: Sequence[str] | None = None
    networks: tuple[str, ...] = YEO7_NETWORKS
    network_strength: float = 0.65
    global_strength: float = 0.4
    subject_sd: float = 0.1
    scan_sd: float = 0.04
    noise_level: float = 0.6
    n_sites: int = 4
    site_effect: float = 0.1
    site_noise_spread: float = 0.25
    site_prevalence_spread: float = 0.0
    dx_labels: tuple[str, str] = ("control", "autism")
    dx_rate: float = 0.5
    dx_effect: float = -0.13
    dx_rois: tuple[int, ...] | None = None
    n_dx_rois: int | None = None
    dx_network: str | None = None
    dx_target: str | None = None
    sensitive: str = "sex"
    sensitive_group: str | None = None
    sensitive_effect: float = 0.15
    sensitive_rois: tuple[int, ...] | None = None
    n_sensitive_rois: int | None = None
    sensitive_network: str | None = None
    sensitive_target: str | None = None
    confound: float = 0.3
    confound_group: str | None = None
    female_fraction: float = 0.5
    child_fraction: float = 0.5
    phenotype_table: str | Path | None = None
    name: str = "simulated"
    seed: int = 0
    chunk_size: int = 64

    def __post_init__(self) -> None:
        if isinstance(self.scans_per_subject, (list, tuple)):
            self.scans_per_subject = tuple(self.scans_per_subject)
        for key in ("networks", "dx_labels"):
            setattr(self, key, tuple(getattr(self, key)))
        for key in ("dx_rois", "sensitive_rois"):
            value = getattr(self, key)
            if value is not None:
                setattr(self, key, tuple(int(v) if _is_int(v) else v for v in np.atleast_1d(value).tolist()))
        problems = self.problems()
        if problems:
            raise BrainAlignError("invalid simulation config:\n" + "\n".join(f"  - {p}" for p in problems))

    # -- checks --------------------------------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Every problem of this configuration that can be seen without reading files."""
        p = self._size_problems() + self._model_problems() + self._effect_problems()
        p += _roi_set_problems(self.dx_rois, "dx_rois", self.n_rois)
        p += _roi_set_problems(self.sensitive_rois, "sensitive_rois", self.n_rois)
        if self.dx_rois is not None and self.sensitive_rois is not None and not p:
            common = sorted(set(self.dx_rois) & set(self.sensitive_rois))
            if common:
                p.append(f"dx_rois and sensitive_rois overlap in ROI(s) {common}; the planted sets must be disjoint")
        return p

    def _size_problems(self) -> list[str]:
        p = []
        if self.n_scans is not None and self.n_subjects is not None:
            p.append(f"give n_scans ({self.n_scans}) or n_subjects ({self.n_subjects}), not both")
        for key in ("n_scans", "n_subjects"):
            value = getattr(self, key)
            if value is not None and (not _is_int(value) or value < 1):
                p.append(f"{key} must be a positive integer, got {value!r}")
        sps = self.scans_per_subject
        if _is_int(sps):
            if sps < 1:
                p.append(f"scans_per_subject must be >= 1, got {sps}")
        elif not (isinstance(sps, tuple) and len(sps) == 2 and all(_is_int(v) for v in sps) and 1 <= sps[0] <= sps[1]):
            p.append(f"scans_per_subject must be an int >= 1 or a range (lo, hi) with 1 <= lo <= hi, got {sps!r}")
        if not _is_int(self.n_rois) or self.n_rois < 2:
            p.append(f"n_rois must be an integer >= 2, got {self.n_rois!r}")
        elif self.template_fc is None and self.template == "blocks" and self.n_rois < len(self.networks):
            p.append(f"n_rois ({self.n_rois}) is smaller than the number of networks ({len(self.networks)}: "
                     f"{list(self.networks)}); every network needs at least one ROI")
        if not _is_int(self.n_timepoints) or self.n_timepoints < 10:
            p.append(f"n_timepoints must be an integer >= 10, got {self.n_timepoints!r}")
        if not _is_int(self.chunk_size) or self.chunk_size < 1:
            p.append(f"chunk_size must be a positive integer, got {self.chunk_size!r}")
        if not _is_int(self.n_sites) or self.n_sites < 1:
            p.append(f"n_sites must be a positive integer, got {self.n_sites!r}")
        return p

    def _model_problems(self) -> list[str]:
        p = []
        if not (_is_number(self.tr) and self.tr > 0):
            p.append(f"tr must be a positive number of seconds, got {self.tr!r}")
        if not (_is_number(self.ar_phi) and 0 <= self.ar_phi < 1):
            p.append(f"ar_phi must be in [0, 1), got {self.ar_phi!r}")
        if self.template not in ("blocks", "brainspace"):
            p.append(f"template must be 'blocks' or 'brainspace' (or pass template_fc), got {self.template!r}")
        elif self.template == "brainspace" and self.template_fc is None and self.n_rois not in _SCHAEFER7_COUNTS:
            p.append(f"template 'brainspace' exists for n_rois in {sorted(_SCHAEFER7_COUNTS)}, not {self.n_rois}")
        if len(self.networks) < 2 or len(set(self.networks)) != len(self.networks) or not all(
            isinstance(n, str) and n for n in self.networks
        ):
            p.append(f"networks must be at least 2 distinct non-empty names, got {list(self.networks)}")
        if self.template_fc is not None:
            p += _template_problems(self.template_fc, self.n_rois, self.network_labels)
        elif self.network_labels is not None:
            p.append("network_labels only apply to a user template_fc")
        for key, lo, hi in (("network_strength", 0, 0.9), ("global_strength", 0, 0.6), ("subject_sd", 0, 0.5),
                            ("scan_sd", 0, 0.5), ("noise_level", 0, 10), ("site_effect", 0, 10),
                            ("site_noise_spread", 0, 3), ("site_prevalence_spread", 0, 0.5),
                            ("female_fraction", 0, 1), ("child_fraction", 0, 1)):
            value = getattr(self, key)
            if not (_is_number(value) and lo <= value <= hi):
                p.append(f"{key} must be a number in [{lo}, {hi}], got {value!r}")
        if self.network_strength ** 2 + self.global_strength ** 2 > 0.9 and not p:
            p.append("network_strength² + global_strength² must be <= 0.9 (the ROIs need unique variance)")
        return p

    def _effect_problems(self) -> list[str]:
        p = []
        if len(self.dx_labels) != 2 or len(set(self.dx_labels)) != 2 or not all(
            isinstance(v, str) and v.strip() for v in self.dx_labels
        ):
            p.append(f"dx_labels must be two distinct non-empty strings (control, patient), got {self.dx_labels!r}")
        if not (_is_number(self.dx_rate) and 0 < self.dx_rate < 1):
            p.append(f"dx_rate must be in (0, 1), got {self.dx_rate!r}")
        if not (_is_number(self.confound) and 0 <= self.confound <= 1):
            p.append(f"confound must be in [0, 1] (0 = dx independent of {self.sensitive}), got {self.confound!r}")
        for key in ("dx_effect", "sensitive_effect"):
            value = getattr(self, key)
            if not (_is_number(value) and abs(value) <= 5):
                p.append(f"{key} must be a finite number in [-5, 5], got {value!r}")
        for key in ("n_dx_rois", "n_sensitive_rois"):
            value = getattr(self, key)
            if value is not None and (not _is_int(value) or value < 1):
                p.append(f"{key} must be a positive integer, got {value!r}")
        if self.sensitive not in SENSITIVE_ATTRIBUTES:
            p.append(f"unknown sensitive attribute {self.sensitive!r}; choose one of {list(SENSITIVE_ATTRIBUTES)}")
            return p
        values = _GROUP_VALUES[self.sensitive]
        for key in ("sensitive_group", "confound_group"):
            value = getattr(self, key)
            if value is not None and value not in values:
                p.append(f"{key} {value!r} is not a value of {self.sensitive}; choose one of {list(values)}")
        return p

    # -- conversions ---------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimulationConfig:
        """Build from a plain mapping (YAML/JSON); unknown keys are an error naming the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BrainAlignError(f"unknown simulation config key(s) {unknown}; known keys are {sorted(known)}")
        data = dict(data)
        if data.get("template_fc") is not None:
            data["template_fc"] = np.asarray(data["template_fc"], dtype=float)
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; a user ``template_fc`` is replaced by a note (it is saved in ``truth/``)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "template_fc" and value is not None:
                value = f"user array {tuple(np.shape(value))}, saved as {TRUTH_DIR}/template_fc.npy"
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif f.name == "network_labels" and value is not None:
                value = [str(v) for v in value]
            out[f.name] = value
        return out


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _roi_set_problems(rois: tuple | None, key: str, n_rois: int) -> list[str]:
    if rois is None or not _is_int(n_rois):
        return []
    if len(rois) == 0:
        return [f"{key} is empty; give at least one ROI index or leave it None"]
    bad = [r for r in rois if not _is_int(r)]
    if bad:
        return [f"{key} must hold integer ROI indices, got {bad[:5]}"]
    out = [r for r in rois if not 0 <= r < n_rois]
    if out:
        return [f"{key} has index(es) {out[:10]} outside 0..{n_rois - 1} (n_rois = {n_rois})"]
    if len(set(rois)) != len(rois):
        return [f"{key} has repeated indices {sorted({r for r in rois if rois.count(r) > 1})}"]
    return []


def _template_problems(fc: Any, n_rois: int, labels: Sequence[str] | None) -> list[str]:
    arr = np.asarray(fc)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        return [f"template_fc must be a square (R, R) matrix, got shape {arr.shape}"]
    p = []
    if arr.shape[0] != n_rois:
        p.append(f"template_fc is {arr.shape[0]}×{arr.shape[0]} but n_rois is {n_rois}")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        return p + ["template_fc must be numeric and finite (no NaN/inf)"]
    if not np.allclose(arr, arr.T, atol=1e-6):
        p.append("template_fc is not symmetric")
    if (np.diag(arr) <= 0).any():
        bad = np.flatnonzero(np.diag(arr) <= 0)[:10].tolist()
        p.append(f"template_fc has non-positive diagonal entries at ROI(s) {bad}")
    if labels is not None and len(labels) != arr.shape[0]:
        p.append(f"network_labels has {len(labels)} entries for a {arr.shape[0]}-ROI template_fc")
    return p


# ----------------------------------------------------------------------------------------------------- templates
def _allocate(n: int, weights: Sequence[float]) -> np.ndarray:
    """Split n items into len(weights) groups proportional to weights (largest remainder), each >= 1."""
    w = np.asarray(weights, dtype=float)
    k = len(w)
    share = (n - k) * w / w.sum()
    sizes = 1 + np.floor(share).astype(int)
    rest = n - sizes.sum()
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    sizes[order[:rest]] += 1
    return sizes


def _factor_correlation(networks: Sequence[str]) -> np.ndarray:
    """K×K network-factor correlation Φ = BBᵀ + diag(1 − ‖B_k‖²), PD by construction."""
    if set(networks) <= set(_YEO7_META):
        b = np.array([_YEO7_META[n] for n in networks])
    else:
        b = np.full((len(networks), 1), 0.3)
    phi = b @ b.T
    np.fill_diagonal(phi, 1.0)
    return phi


def blocks_template(
    n_rois: int,
    networks: Sequence[str] = YEO7_NETWORKS,
    *,
    network_strength: float = 0.65,
    global_strength: float = 0.4,
    seed: int = 0,
) -> tuple[np.ndarray, list[str]]:
    """Built-in latent-factor group FC with network blocks (module docstring, step 1).

    Parameters
    ----------
    n_rois : int
        R, at least ``len(networks)``.
    networks : sequence of str
        Network names; Yeo-7 names get Schaefer-100 relative sizes and a realistic factor correlation.
    network_strength, global_strength : float
        Mean loadings on the network factor and on the global signal.
    seed : int

    Returns
    -------
    fc : array (R, R)
        Positive-definite correlation matrix, ROIs ordered by network.
    labels : list of str
        R network names.
    """
    networks = list(networks)
    if n_rois < len(networks):
        raise BrainAlignError(f"n_rois ({n_rois}) is smaller than the number of networks ({len(networks)})")
    yeo = set(networks) <= set(YEO7_NETWORKS)
    weights = [_YEO7_SIZES[YEO7_NETWORKS.index(n)] if yeo else 1.0 for n in networks]
    net = np.repeat(np.arange(len(networks)), _allocate(n_rois, weights))
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STREAM_TEMPLATE,)))
    lam = network_strength * rng.uniform(0.85, 1.15, n_rois)
    if "limbic" in networks:
        lam[net == networks.index("limbic")] *= 0.75
    glob = global_strength * rng.uniform(0.7, 1.3, n_rois)
    scale = np.sqrt(np.minimum(1.0, 0.95 / (lam ** 2 + glob ** 2)))  # keep unique variance >= 0.05
    lam, glob = lam * scale, glob * scale
    phi = _factor_correlation(networks)
    fc = np.outer(lam, lam) * phi[np.ix_(net, net)] + np.outer(glob, glob)
    np.fill_diagonal(fc, 1.0)
    return fc, [networks[k] for k in net]


def schaefer7_networks(n_rois: int) -> tuple[list[str], list[str]]:
    """Yeo-7 network and ROI labels of the Schaefer 2018 7-network parcellation (100, 200, 300 or 400 ROIs).

    Returns
    -------
    networks : list of str
        R network names (:data:`YEO7_NETWORKS` spelling), in atlas order (left hemisphere first).
    roi_labels : list of str
        R labels such as ``"LH_default_3"``.
    """
    if n_rois not in _SCHAEFER7_COUNTS:
        raise BrainAlignError(f"Schaefer 7-network labels exist for {sorted(_SCHAEFER7_COUNTS)} ROIs, not {n_rois}")
    networks, labels = [], []
    for hemi, counts in zip(("LH", "RH"), _SCHAEFER7_COUNTS[n_rois]):
        for name, count in zip(YEO7_NETWORKS, counts):
            networks += [name] * count
            labels += [f"{hemi}_{name}_{i + 1}" for i in range(count)]
    return networks, labels


def brainspace_template(n_rois: int = 100) -> np.ndarray:
    """HCP group-mean FC of the Schaefer parcellation shipped by ``brainspace==0.3.0`` (not imported).

    Parameters
    ----------
    n_rois : {100, 200, 300, 400}

    Returns
    -------
    array (R, R)
        Correlation matrix in Schaefer 7-network order (see :func:`schaefer7_networks`).

    Raises
    ------
    BrainAlignError
        If brainspace is not installed (with the pip command) or the size is not shipped.
    """
    if n_rois not in _SCHAEFER7_COUNTS:
        raise BrainAlignError(
            f"brainspace ships Schaefer FC templates for {sorted(_SCHAEFER7_COUNTS)} ROIs, not {n_rois}"
        )
    spec = importlib.util.find_spec("brainspace")
    if spec is None or not spec.submodule_search_locations:
        raise BrainAlignError(f"the brainspace template needs the brainspace package: {_BRAINSPACE_PIP}")
    name = f"schaefer_{n_rois}_mean_connectivity_matrix.csv"
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "matrices" / "main_group" / name
    if not path.exists():
        raise BrainAlignError(f"{path} is missing from the installed brainspace; reinstall with {_BRAINSPACE_PIP}")
    fc = np.loadtxt(path, delimiter=",")
    if fc.shape != (n_rois, n_rois):
        raise BrainAlignError(f"{path} has shape {fc.shape}, expected ({n_rois}, {n_rois})")
    return fc


def _as_correlation(cov: np.ndarray) -> np.ndarray:
    """(..., R, R) covariance → correlation."""
    d = 1.0 / np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    return cov * d[..., :, None] * d[..., None, :]


def _sanitise_template(fc: np.ndarray, floor: float = 1e-3) -> tuple[np.ndarray, float]:
    """Symmetric PD correlation from a user matrix; returns it and the smallest eigenvalue before the fix."""
    c = _as_correlation(0.5 * (fc + fc.T))
    vals, vecs = np.linalg.eigh(c)
    if vals[0] < floor:
        c = _as_correlation((vecs * np.maximum(vals, floor)) @ vecs.T)
    return c, float(vals[0])


def _cluster_networks(fc: np.ndarray, k: int) -> list[str]:
    from sklearn.cluster import AgglomerativeClustering

    k = min(k, fc.shape[0])
    dist = np.clip(1.0 - fc, 0.0, None)
    lab = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage="average").fit_predict(dist)
    order = {c: i + 1 for i, c in enumerate(dict.fromkeys(lab.tolist()))}  # name by first appearance
    return [f"cluster_{order[c]}" for c in lab]


# --------------------------------------------------------------------------------------------------- the layout
@dataclass
class _EffectSet:
    """One planted coupling effect: ROIs S, target ROIs N, strength β and the resulting (R, R) operator."""

    rois: np.ndarray
    network: str
    target: str
    target_rois: np.ndarray
    beta: float
    weights: np.ndarray  # (|N|,) weights of the target mean, scaled to unit variance under C0

    def apply(self, a: np.ndarray, on: np.ndarray) -> None:
        """In place on mixing matrices ``a`` (n, R, d): rows S += β·on·(weighted sum of target rows).

        ``on`` (n,) is 1 for scans in the affected group, 0 otherwise.
        """
        if not on.any() or self.beta == 0:
            return
        target = np.einsum("j,njk->nk", self.weights, a[:, self.target_rois, :])  # (n, d)
        a[:, self.rois, :] += (self.beta * on)[:, None, None] * target[:, None, :]

    def operator(self, n_rois: int) -> np.ndarray:
        m = np.eye(n_rois)
        m[np.ix_(self.rois, self.target_rois)] += self.beta * self.weights[None, :]
        return m


@dataclass
class _Layout:
    fc: np.ndarray  # (R, R) group template C0
    networks: list[str]  # (R,)
    roi_labels: list[str]
    template_name: str
    template_min_eig: float
    dx: _EffectSet
    sens: _EffectSet

    def members(self, name: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.networks) == name)


def _template(cfg: SimulationConfig) -> tuple[np.ndarray, list[str], list[str], str, float]:
    R = cfg.n_rois
    if cfg.template_fc is not None:
        fc, min_eig = _sanitise_template(np.asarray(cfg.template_fc, dtype=float))
        nets = ([str(v) for v in cfg.network_labels] if cfg.network_labels is not None
                else _cluster_networks(fc, len(cfg.networks)))
        return fc, nets, _numbered_labels(nets), "user", min_eig
    if cfg.template == "brainspace":
        fc, min_eig = _sanitise_template(brainspace_template(R))
        nets, labels = schaefer7_networks(R)
        return fc, nets, labels, f"brainspace-schaefer{R}", min_eig
    fc, nets = blocks_template(R, cfg.networks, network_strength=cfg.network_strength,
                               global_strength=cfg.global_strength, seed=cfg.seed)
    return fc, nets, _numbered_labels(nets), "blocks", float(np.linalg.eigvalsh(fc)[0])


def _numbered_labels(networks: Sequence[str]) -> list[str]:
    counts: dict[str, int] = {}
    out = []
    for n in networks:
        counts[n] = counts.get(n, 0) + 1
        out.append(f"{n}_{counts[n]:02d}")
    return out


def _by_size(networks: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(networks))
    return sorted(names, key=lambda n: -list(networks).count(n))


def _auto_rois(members: np.ndarray, n: int, name: str, what: str) -> np.ndarray:
    """A contiguous block of n members in the middle of a network."""
    if n > len(members):
        raise BrainAlignError(f"{what}: network '{name}' has {len(members)} ROI(s), fewer than the {n} requested")
    start = (len(members) - n) // 2
    return members[start : start + n]


def _effect_params(cfg: SimulationConfig, which: str) -> tuple:
    if which == "dx":
        return cfg.dx_rois, cfg.n_dx_rois, cfg.dx_network, cfg.dx_target, cfg.dx_effect
    return cfg.sensitive_rois, cfg.n_sensitive_rois, cfg.sensitive_network, cfg.sensitive_target, cfg.sensitive_effect


def _effect_set(cfg: SimulationConfig, nets: list[str], which: str, avoid: np.ndarray,
                avoid_network: str | None = None) -> _EffectSet:
    """Resolve the ROI set, network and target network of the dx (``which="dx"``) or sensitive effect.

    Automatic sets are a contiguous block of ``n`` ROIs in the middle of the network (module docstring, step 4),
    outside ``avoid`` (the other set) and, when possible, outside ``avoid_network`` (the other set's target);
    when the target is the ROIs' own network, at least one ROI of it is left as target.
    """
    arr, names = np.asarray(nets), list(dict.fromkeys(nets))
    explicit, n_rois, network, target, beta = _effect_params(cfg, which)
    for key, value in ((f"{which}_network", network), (f"{which}_target", target)):
        if value is not None and value not in names:
            raise BrainAlignError(f"{key} {value!r} is not a network of this template; networks: {names}")
    if target is None and which == "sensitive" and "ventral_attention" in names:
        target = "ventral_attention"
    if explicit is not None:
        rois = np.array(sorted(explicit))
        own_nets = [nets[i] for i in rois]
        network = "+".join(dict.fromkeys(own_nets))
        target = target or max(dict.fromkeys(own_nets), key=own_nets.count)  # most common; ties: first
    else:
        own = target is None or target == network
        free = {n: np.setdiff1d(np.flatnonzero(arr == n), avoid) for n in names}
        if network is None:
            preferred = "default" if which == "dx" else "somatomotor"
            usable = [n for n in _by_size(nets) if free[n].size >= (2 if own else 1)] or _by_size(nets)
            usable = [n for n in usable if n != avoid_network] or usable
            network = preferred if preferred in usable else usable[0]
        count = n_rois or max(1, min(max(2, round(0.08 * len(nets))), free[network].size - (1 if own else 0)))
        rois = _auto_rois(free[network], count, network, f"{which} ROIs")
        target = target or network
    if np.isin(rois, avoid).any():
        raise BrainAlignError(f"dx and sensitive ROI sets overlap in ROI(s) {np.intersect1d(rois, avoid).tolist()}; "
                              "the planted sets must be disjoint")
    return _EffectSet(rois=rois, network=network, target=target, target_rois=np.array([], dtype=int),
                      beta=float(beta), weights=np.array([]))


def _finish_targets(layout_sets: Sequence[_EffectSet], nets: list[str], fc: np.ndarray) -> None:
    """Target ROIs = target network minus every effect ROI; weights scale the mean to unit variance under C0."""
    arr = np.asarray(nets)
    taken = np.concatenate([s.rois for s in layout_sets])
    for s in layout_sets:
        s.target_rois = np.setdiff1d(np.flatnonzero(arr == s.target), taken)
        if s.target_rois.size == 0:
            raise BrainAlignError(
                f"the target network '{s.target}' of the ROIs {s.rois.tolist()} has no ROI left outside the "
                "planted sets; choose fewer ROIs, another target network, or more ROIs in total"
            )
        block = fc[np.ix_(s.target_rois, s.target_rois)]
        s.weights = np.full(s.target_rois.size, 1.0 / (s.target_rois.size * np.sqrt(block.mean())))


def _layout(cfg: SimulationConfig) -> _Layout:
    fc, nets, labels, name, min_eig = _template(cfg)
    if cfg.sensitive_rois is not None and cfg.dx_rois is None:  # explicit set first, automatic one avoids it
        sens = _effect_set(cfg, nets, "sensitive", np.array([], dtype=int))
        dx = _effect_set(cfg, nets, "dx", sens.rois, sens.target)
    else:
        dx = _effect_set(cfg, nets, "dx", np.array([], dtype=int))
        sens = _effect_set(cfg, nets, "sensitive", dx.rois, dx.target)
    _finish_targets([dx, sens], nets, fc)
    return _Layout(fc, nets, labels, name, min_eig, dx, sens)


# --------------------------------------------------------------------------------------------------- phenotypes
def _scan_counts(cfg: SimulationConfig, rng: np.random.Generator) -> np.ndarray:
    """Scans per person; the persons' count follows n_subjects, or is grown until n_scans is reached."""
    sps = cfg.scans_per_subject
    lo, hi = (sps, sps) if _is_int(sps) else sps
    if cfg.n_subjects is not None:
        return rng.integers(lo, hi + 1, cfg.n_subjects)
    n_scans = DEFAULT_N_SCANS if cfg.n_scans is None else cfg.n_scans
    counts = rng.integers(lo, hi + 1, n_scans)  # at least one scan each, so n_scans persons suffice
    total = np.cumsum(counts)
    n = int(np.searchsorted(total, n_scans) + 1)
    counts = counts[:n]
    counts[-1] -= total[n - 1] - n_scans
    return counts


def _age_columns(age: np.ndarray) -> dict[str, np.ndarray]:
    age = np.round(age.astype(float), 2)
    group = np.where(age < 18, "child", "adult")
    return {"age": age, "age_group": group, "srs": group.copy()}


def _synthetic_persons(cfg: SimulationConfig, counts: np.ndarray, rng: np.random.Generator,
                       base_rates: np.ndarray) -> pd.DataFrame:
    n = len(counts)
    site = rng.choice(cfg.n_sites, size=n, p=rng.dirichlet(np.full(cfg.n_sites, 4.0)))
    sex = np.where(rng.random(n) < cfg.female_fraction, "female", "male")
    child = rng.random(n) < cfg.child_fraction
    age = np.where(child, rng.uniform(6.0, 18.0, n), np.minimum(18.0 + rng.gamma(2.0, 5.0, n), 64.0))
    cols = _age_columns(age)
    attr = sex if cfg.sensitive == "sex" else cols["age_group"]
    in_group = attr == _confound_group(cfg)
    b = base_rates[site]
    p = np.clip(np.where(in_group, b * (1 + cfg.confound), b * (1 - cfg.confound)), 0.0, 1.0)
    dx = (rng.random(n) < p).astype(int)
    return pd.DataFrame({"dx": dx, "sex": sex, **cols, "site": site, "n_scans": counts})


def _read_table(path: str | Path) -> tuple[pd.DataFrame, int]:
    """Valid rows of an ABIDE-style table, and the number of rows dropped for missing/invalid values."""
    path = Path(path)
    if not path.is_file():
        raise BrainAlignError(f"phenotype_table {path} does not exist")
    try:
        df = pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise BrainAlignError(f"phenotype_table {path} cannot be parsed as CSV: {err}") from None
    missing = [c for c in TABLE_COLUMNS if c not in df]
    if missing:
        raise BrainAlignError(f"phenotype_table {path} lacks column(s) {missing}; needed: {list(TABLE_COLUMNS)} "
                              f"(DX_GROUP 1 = patient, 2 = control; SEX 1 = male, 2 = female)")
    dx = pd.to_numeric(df["DX_GROUP"], errors="coerce")
    sex = pd.to_numeric(df["SEX"], errors="coerce")
    age = pd.to_numeric(df["AGE_AT_SCAN"], errors="coerce")
    site = df["SITE_ID"].astype("string").str.strip().fillna("")
    ok = (dx.isin([1, 2]) & sex.isin([1, 2]) & (age > 0) & np.isfinite(age) & (site != "")).to_numpy(dtype=bool)
    out = pd.DataFrame({"dx": (dx[ok] == 1).astype(int).to_numpy(), "sex": np.where(sex[ok] == 2, "female", "male"),
                        "age": age[ok].to_numpy(dtype=float), "site": site[ok].astype(str).to_numpy()})
    if out.empty:
        raise BrainAlignError(f"phenotype_table {path} has no row with valid {list(TABLE_COLUMNS)}")
    return out, int((~ok).sum())


def _table_persons(cfg: SimulationConfig, counts: np.ndarray, rng: np.random.Generator,
                   table: pd.DataFrame) -> pd.DataFrame:
    n = len(counts)
    idx = rng.choice(len(table), size=n, replace=n > len(table))
    rows = table.iloc[idx].reset_index(drop=True)
    cols = _age_columns(rows["age"].to_numpy())
    return pd.DataFrame({"dx": rows["dx"].to_numpy(), "sex": rows["sex"].to_numpy(), **cols,
                         "site": rows["site"].to_numpy(), "n_scans": counts})


def _confound_group(cfg: SimulationConfig) -> str:
    return cfg.confound_group or _DEFAULT_CONFOUND_GROUP[cfg.sensitive]


def _effect_group(cfg: SimulationConfig) -> str:
    return cfg.sensitive_group or _DEFAULT_EFFECT_GROUP[cfg.sensitive]


# ---------------------------------------------------------------------------------------------------- sites
@dataclass
class _Sites:
    names: list[str]
    shift: np.ndarray  # (n_sites,) s_k
    noise: np.ndarray  # (n_sites,) σ_k
    base_rate: np.ndarray  # (n_sites,) b_k
    chol: np.ndarray  # (n_sites, R, R) chol(C_k)
    fc: np.ndarray  # (n_sites, R, R) C_k


def _sites(cfg: SimulationConfig, names: list[str], c0: np.ndarray) -> _Sites:
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_STREAM_SITES,)))
    n, R = len(names), c0.shape[0]
    shift = cfg.site_effect * rng.uniform(0.5, 1.5, n)
    pattern = 1.0 + 0.5 * rng.standard_normal((n, R))
    noise = cfg.noise_level * np.exp(cfg.site_noise_spread * rng.standard_normal(n))
    spread = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    base = np.clip(cfg.dx_rate + cfg.site_prevalence_spread * rng.permutation(spread), 0.02, 0.98)
    fc = _as_correlation(c0[None] + shift[:, None, None] * pattern[:, :, None] * pattern[:, None, :])
    chol = np.stack([cholesky(c, lower=True, check_finite=False) for c in fc])  # scipy: 7× numpy's stacked gufunc
    return _Sites(names, shift, noise, base, chol, fc)


# ---------------------------------------------------------------------------------------------- the generator
def _bmm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Batched matrix product (n, p, q) @ (n, q, r) → (n, p, r).

    A loop of 2-D products: numpy's stacked ``matmul``/``cholesky`` gufuncs do not reach OpenBLAS's blocked
    kernels and measured 3–7× slower than 2-D calls for 200×200 matrices on the 2-core reference machine.
    """
    out = np.empty((a.shape[0], a.shape[1], b.shape[2]), dtype=np.result_type(a, b))
    for i in range(a.shape[0]):
        np.matmul(a[i], b[i], out=out[i])
    return out


def _mix_params(sd: float) -> tuple[int, float]:
    """(ν, w) of the Wishart mixture giving an edge SD of about ``sd`` (w·(1−ρ²)/√ν); (0, 0) for sd = 0."""
    if sd <= 0:
        return 0, 0.0
    nu = min(25, max(1, round((0.5 / sd) ** 2)))
    return nu, min(0.9, sd * math.sqrt(nu))


def _perturb(a: np.ndarray, y: np.ndarray, w: float) -> np.ndarray:
    """Mixing matrices of ``corr((1 − w)·AAᵀ + (w/ν)·(AY)(AY)ᵀ)``.

    ``[√(1−w)·A | √(w/ν)·AY]`` with rows scaled to unit norm is an exact (non-triangular) square root, so no
    Cholesky is needed per person or scan.

    Parameters
    ----------
    a : array (n, R, d)
        Mixing matrices with unit-norm rows (``AAᵀ`` is a correlation matrix).
    y : array (n, d, ν)
        Standard-normal draws.
    w : float

    Returns
    -------
    array (n, R, d + ν)
    """
    out = np.concatenate([math.sqrt(1.0 - w) * a, math.sqrt(w / y.shape[-1]) * _bmm(a, y)], axis=2)
    out /= np.linalg.norm(out, axis=2, keepdims=True)
    return out


def _ar1(w: np.ndarray, w0: np.ndarray, phi: float) -> np.ndarray:
    """Stationary unit-variance AR(1) along axis 1 of (n, T, d) white noise ``w``, with (n, d) start draws."""
    if phi == 0:
        return w
    zi = (phi * w0)[:, None, :]
    out, _ = lfilter([math.sqrt(1 - phi * phi)], [1.0, -phi], w, axis=1, zi=zi)
    return out.astype(np.float32, copy=False)


class _Generator:
    """Time series of the persons, chunk by chunk (about ``chunk_size`` scans per chunk)."""

    def __init__(self, cfg: SimulationConfig, layout: _Layout, sites: _Sites, persons: pd.DataFrame):
        self.cfg, self.layout, self.sites, self.persons = cfg, layout, sites, persons
        self.first_scan = np.concatenate([[0], np.cumsum(persons["n_scans"].to_numpy())])
        self.mix_person, self.mix_scan = _mix_params(cfg.subject_sd), _mix_params(cfg.scan_sd)

    def chunks(self) -> Iterator[tuple[int, int]]:
        """Person ranges [start, stop) holding about chunk_size scans (at least one person)."""
        first, n, start = self.first_scan, len(self.persons), 0
        while start < n:
            stop = int(np.searchsorted(first, first[start] + self.cfg.chunk_size, side="right")) - 1
            stop = min(max(stop, start + 1), n)
            yield start, stop
            start = stop

    def timeseries(self, progress: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
        """Yield every scan's (T, R) float32 series in table order."""
        total = 2 * int(self.first_scan[-1])
        for start, stop in self.chunks():
            yield from self._chunk(start, stop)
            if progress is not None:
                progress(int(self.first_scan[stop]), total)

    def _chunk(self, start: int, stop: int) -> np.ndarray:
        """(n_scans, T, R) float32 series of persons start..stop-1 (module docstring, steps 3, 4 and 6)."""
        cfg, lay = self.cfg, self.layout
        per = self.persons.iloc[start:stop]
        counts = per["n_scans"].to_numpy()
        owner = np.repeat(np.arange(len(per)), counts)
        draws = [self._draw(p, int(c)) for p, c in zip(range(start, stop), counts)]
        a = self.sites.chol[per["site_index"].to_numpy()]  # (persons, R, R)
        if self.mix_person[0]:
            a = _perturb(a, np.stack([d["y_person"] for d in draws]), self.mix_person[1])
        a = a[owner]  # (scans, R, d)
        if self.mix_scan[0]:
            a = _perturb(a, np.concatenate([d["y_scan"] for d in draws]), self.mix_scan[1])
        lay.dx.apply(a, per["dx"].to_numpy()[owner].astype(float))
        lay.sens.apply(a, per["effect_group"].to_numpy()[owner].astype(float))
        z = _ar1(np.concatenate([d["z"] for d in draws]), np.concatenate([d["z0"] for d in draws]), cfg.ar_phi)
        e = _ar1(np.concatenate([d["e"] for d in draws]), np.concatenate([d["e0"] for d in draws]), cfg.ar_phi)
        sigma = self.sites.noise[per["site_index"].to_numpy()[owner]] * np.concatenate([d["jitter"] for d in draws])
        x = _bmm(z, a.astype(np.float32).transpose(0, 2, 1))
        x += sigma[:, None, None].astype(np.float32) * e
        x *= np.concatenate([d["amp"] for d in draws])[:, None, :]
        return x

    def _draw(self, person: int, n_scans: int) -> dict[str, np.ndarray | None]:
        """All random numbers of one person, from the person's own stream (so chunking cannot change them)."""
        R, T = self.cfg.n_rois, self.cfg.n_timepoints
        nu_p, nu_s = self.mix_person[0], self.mix_scan[0]
        d = R + nu_p + nu_s  # latent sources per scan
        rng = np.random.default_rng(np.random.SeedSequence(self.cfg.seed, spawn_key=(_STREAM_PERSON, person)))
        return {
            "y_person": rng.standard_normal((R, nu_p)) if nu_p else None,
            "y_scan": rng.standard_normal((n_scans, R + nu_p, nu_s)) if nu_s else None,
            "z": rng.standard_normal((n_scans, T, d), dtype=np.float32),
            "z0": rng.standard_normal((n_scans, d), dtype=np.float32),
            "e": rng.standard_normal((n_scans, T, R), dtype=np.float32),
            "e0": rng.standard_normal((n_scans, R), dtype=np.float32),
            "jitter": np.exp(0.15 * rng.standard_normal(n_scans)),
            "amp": np.exp(0.25 * rng.standard_normal((n_scans, R))).astype(np.float32),
        }


def _stored_connectivity(root: Path, scan_ids: Sequence[str], chunk_size: int,
                         progress: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
    """Pearson FC of the time series already written under ``root/timeseries``, chunk by chunk."""
    n = len(scan_ids)
    for start in range(0, n, chunk_size):
        ids = list(scan_ids[start : start + chunk_size])
        ts = np.stack([np.load(array_path(root, TIMESERIES_DIR, sid), allow_pickle=False) for sid in ids])
        yield from pearson_connectivity(ts, ids)
        if progress is not None:
            progress(n + start + len(ids), 2 * n)


# ----------------------------------------------------------------------------------------------------- the cohort
def _people(cfg: SimulationConfig, c0: np.ndarray) -> tuple[pd.DataFrame, _Sites, dict[str, Any]]:
    """Person table (dx 0/1, sex, age, age_group, srs, site, site_index, n_scans, effect_group), sites, source."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(_STREAM_PHENOTYPES,)))
    counts = _scan_counts(cfg, rng)
    if cfg.phenotype_table is not None:
        table, dropped = _read_table(cfg.phenotype_table)
        persons = _table_persons(cfg, counts, rng, table)
        names = sorted(persons["site"].unique().tolist())
        sites = _sites(cfg, names, c0)
        persons["site_index"] = persons["site"].map({n: i for i, n in enumerate(names)}).to_numpy()
        source = {"kind": "table", "path": str(cfg.phenotype_table), "valid_rows": len(table),
                  "dropped_rows": dropped, "with_replacement": bool(len(counts) > len(table)),
                  "unused_settings": {k: getattr(cfg, k) for k in _TABLE_UNUSED}}
    else:
        sites = _sites(cfg, [f"site-{k + 1:02d}" for k in range(cfg.n_sites)], c0)
        persons = _synthetic_persons(cfg, counts, rng, sites.base_rate)
        persons["site_index"] = persons["site"].to_numpy()
        persons["site"] = np.asarray(sites.names, dtype=object)[persons["site_index"].to_numpy()]
        source = {"kind": "synthetic"}
    attr = persons["sex"] if cfg.sensitive == "sex" else persons["age_group"]
    persons["effect_group"] = (attr == _effect_group(cfg)).astype(int).to_numpy()
    return persons, sites, source


def _scan_table(cfg: SimulationConfig, persons: pd.DataFrame) -> pd.DataFrame:
    width = max(4, len(str(len(persons))))
    subject = [f"sub-{i + 1:0{width}d}" for i in range(len(persons))]
    counts = persons["n_scans"].to_numpy()
    owner = np.repeat(np.arange(len(persons)), counts)
    run = np.concatenate([np.arange(1, c + 1) for c in counts])
    rows = persons.iloc[owner].reset_index(drop=True)
    return pd.DataFrame({
        "scan_id": [f"{subject[o]}_run-{r}" for o, r in zip(owner, run)],
        "subject_id": [subject[o] for o in owner],
        "dx": np.asarray(cfg.dx_labels, dtype=object)[rows["dx"].to_numpy()],
        "sex": rows["sex"].to_numpy(),
        "age": rows["age"].to_numpy(dtype=float),
        "age_group": rows["age_group"].to_numpy(),
        "srs": rows["srs"].to_numpy(),
        "site": rows["site"].to_numpy(),
    })


def _meta(cfg: SimulationConfig, layout: _Layout, site_names: list[str]) -> CohortMeta:
    columns = {
        "dx": {"type": "category", "values": list(cfg.dx_labels)},
        "sex": {"type": "category", "values": ["male", "female"]},
        "age": {"type": "numeric"},
        "age_group": {"type": "category", "values": ["child", "adult"]},
        "srs": {"type": "category", "values": ["child", "adult"]},
        "site": {"type": "category", "values": list(site_names)},
    }
    desc = (f"Simulated cohort (brainalign.data.simulate, seed {cfg.seed}, template {layout.template_name}): "
            f"{cfg.dx_labels[1]} effect β={cfg.dx_effect:g} in ROIs {layout.dx.rois.tolist()} "
            f"(coupling with {layout.dx.target}); {cfg.sensitive}={_effect_group(cfg)} effect "
            f"β={cfg.sensitive_effect:g} in ROIs {layout.sens.rois.tolist()} (coupling with {layout.sens.target}). "
            f"Planted truth in {TRUTH_FILE} and {TRUTH_DIR}/.")
    return CohortMeta(name=cfg.name, n_rois=cfg.n_rois, atlas="simulated", roi_labels=list(layout.roi_labels),
                      roi_networks=list(layout.networks), tr=float(cfg.tr), columns=columns, description=desc)


def simulate_cohort(
    out_dir: str | Path,
    config: SimulationConfig | None = None,
    *,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Simulate a cohort with planted truth and write it (cohort folder + ``truth.json`` + ``truth/``).

    Parameters
    ----------
    out_dir : path
        Output folder (created).  A non-empty folder is an error unless ``overwrite``.
    config : SimulationConfig, optional
        Defaults to ``SimulationConfig()`` (400 scans, 100 ROIs, 150 time points).
    overwrite : bool
        Replace the arrays, tables and truth of an existing folder.
    progress : callable, optional
        Called as ``progress(done, total)`` after each chunk; ``total`` is twice the number of scans (a
        time-series pass, then an FC pass over the stored series).

    Returns
    -------
    Path
        The cohort folder; open it with :meth:`brainalign.data.cohort.Cohort.load`, the truth with
        :func:`load_truth`.

    Raises
    ------
    BrainAlignError
        Invalid configuration (ROI sets, networks, phenotype table columns...) or a non-empty output folder.
    """
    cfg = config if config is not None else SimulationConfig()
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise BrainAlignError(f"output folder {out} exists and is not empty (pass overwrite=True / --overwrite)")
    layout = _layout(cfg)
    persons, sites, source = _people(cfg, layout.fc)
    scans = _scan_table(cfg, persons)
    meta = _meta(cfg, layout, sites.names)
    gen = _Generator(cfg, layout, sites, persons)
    write_cohort(out, meta, scans, timeseries=gen.timeseries(progress), overwrite=overwrite)
    # FC of the stored float32 series, read back: no second generation pass and no FC held in memory.
    write_cohort(out, meta, scans, connectivity=_stored_connectivity(out, scans["scan_id"].tolist(),
                                                                     cfg.chunk_size, progress), overwrite=True)
    _write_truth(out, cfg, layout, sites, persons, scans, source)
    return out


# ---------------------------------------------------------------------------------------------------- the truth
def _association(dx: np.ndarray, group: np.ndarray) -> float | None:
    """Phi coefficient (Pearson correlation of two 0/1 vectors); None when one is constant."""
    if dx.std() == 0 or group.std() == 0:
        return None
    return float(np.corrcoef(dx, group)[0, 1])


def _realised(cfg: SimulationConfig, persons: pd.DataFrame, scans: pd.DataFrame) -> dict[str, Any]:
    col, cgroup = cfg.sensitive, _confound_group(cfg)
    out: dict[str, Any] = {"confound_group": cgroup}
    for level, df, dx in (("subjects", persons, persons["dx"].to_numpy()),
                          ("scans", scans, (scans["dx"] == cfg.dx_labels[1]).to_numpy().astype(int))):
        group = df[col].astype(str).to_numpy()
        table = pd.crosstab(pd.Series(np.asarray(cfg.dx_labels)[dx], name="dx"), pd.Series(group, name=col))
        out[f"contingency_{level}"] = {str(d): {str(g): int(v) for g, v in row.items()} for d, row in table.iterrows()}
        out[f"phi_{level}"] = _association(dx.astype(float), (group == cgroup).astype(float))
        out[f"p_dx_given_{col}_{level}"] = {str(g): float(dx[group == g].mean()) for g in sorted(set(group))}
    return out


def _effect_truth(s: _EffectSet, layout: _Layout) -> dict[str, Any]:
    return {"rois": s.rois.tolist(), "roi_labels": [layout.roi_labels[i] for i in s.rois],
            "network": s.network, "target_network": s.target, "target_rois": s.target_rois.tolist(),
            "beta": s.beta, "n_edges": int(s.rois.size * (len(layout.networks) - 1)
                                           - s.rois.size * (s.rois.size - 1) // 2)}


def _truth_arrays(layout: _Layout) -> dict[str, np.ndarray]:
    R = len(layout.networks)
    arrays = {"template_fc": layout.fc.astype(np.float32)}
    for key, s in (("dx", layout.dx), ("sensitive", layout.sens)):
        m = s.operator(R)
        diff = _as_correlation(m @ layout.fc @ m.T) - layout.fc
        np.fill_diagonal(diff, 0.0)
        arrays[f"{key}_effect_fc"] = diff.astype(np.float32)
        mask = np.zeros((R, R), dtype=bool)
        mask[s.rois, :] = mask[:, s.rois] = True
        np.fill_diagonal(mask, False)
        arrays[f"{key}_edge_mask"] = mask
    return arrays


def _write_truth(out: Path, cfg: SimulationConfig, layout: _Layout, sites: _Sites, persons: pd.DataFrame,
                 scans: pd.DataFrame, source: dict[str, Any]) -> None:
    arrays = _truth_arrays(layout)
    folder = out / TRUTH_DIR
    folder.mkdir(exist_ok=True)
    for name, arr in arrays.items():
        np.save(folder / f"{name}.npy", arr)
    site_info = {}
    for k, name in enumerate(sites.names):
        mine = persons["site_index"].to_numpy() == k
        site_info[name] = {"fc_shift": float(sites.shift[k]), "noise_sd": float(sites.noise[k]),
                           "dx_base_rate": None if source["kind"] == "table" else float(sites.base_rate[k]),
                           "n_subjects": int(mine.sum()), "n_scans": int(persons["n_scans"].to_numpy()[mine].sum()),
                           "dx_rate": float(persons["dx"].to_numpy()[mine].mean()) if mine.any() else None}
    truth = {
        "format": "brainalign-simulation-truth", "version": 1, "seed": cfg.seed,
        "n_scans": len(scans), "n_subjects": len(persons), "n_rois": cfg.n_rois,
        "dx_rois": layout.dx.rois.tolist(), "sensitive_rois": layout.sens.rois.tolist(),
        "sensitive": cfg.sensitive, "sensitive_group": _effect_group(cfg),
        "dx_labels": list(cfg.dx_labels), "dx_positive": cfg.dx_labels[1],
        "dx_effect": cfg.dx_effect, "sensitive_effect": cfg.sensitive_effect,
        "confound": None if source["kind"] == "table" else cfg.confound,
        "realised": _realised(cfg, persons, scans),
        "dx": _effect_truth(layout.dx, layout), "sensitive_attribute": _effect_truth(layout.sens, layout),
        "template": {"name": layout.template_name, "min_eigenvalue": layout.template_min_eig},
        "networks": {n: layout.members(n).tolist() for n in dict.fromkeys(layout.networks)},
        "sites": site_info, "phenotype_source": source,
        "arrays": {name: f"{TRUTH_DIR}/{name}.npy" for name in arrays},
        "config": cfg.to_dict(),
    }
    (out / TRUTH_FILE).write_text(json.dumps(truth, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    """numpy scalars and arrays (e.g. an ``np.int64`` seed) as plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def load_truth(cohort_dir: str | Path, *, arrays: bool = True) -> dict[str, Any]:
    """Read the planted truth of a simulated cohort.

    Parameters
    ----------
    cohort_dir : path
        A folder written by :func:`simulate_cohort`.
    arrays : bool
        Also load ``truth/*.npy`` into ``truth["array_data"]`` (``template_fc``, ``dx_effect_fc``,
        ``dx_edge_mask``, ``sensitive_effect_fc``, ``sensitive_edge_mask``; each (R, R)).

    Returns
    -------
    dict
        The contents of ``truth.json`` (``dx_rois``, ``sensitive_rois``, ``sensitive``, effects, ``confound``,
        ``realised``, ``sites``, ``config``...), plus ``array_data`` when asked.
    """
    root = Path(cohort_dir)
    path = root / TRUTH_FILE
    if not path.is_file():
        raise BrainAlignError(f"{root} has no {TRUTH_FILE}; it is not a cohort written by simulate_cohort")
    try:
        truth = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BrainAlignError(f"{path} is not valid JSON: {err}") from None
    if arrays:
        data = {}
        for name, rel in truth.get("arrays", {}).items():
            try:
                data[name] = np.load(root / rel, allow_pickle=False)
            except (FileNotFoundError, ValueError, OSError) as err:
                raise BrainAlignError(f"truth array {root / rel} cannot be read: {err}") from None
        truth["array_data"] = data
    return truth
