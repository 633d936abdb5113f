"""NSD-like simulated volume cohorts with planted truth (METHODS §4-5).

:func:`simulate_volume_cohort` writes a standard volume cohort (:mod:`brainalign.data.volumes`) whose voxels
respond to stimuli through known regions, plus ``truth_mask.nii.gz`` (the informative voxels), ``truth.json``
and ``truth/latents.npy``.  Alignment and attribution methods (IB-BA, RISE, Grad-CAM...) can then be scored
against the truth instead of only by degradation.

Generative model
----------------
1. **Stimuli** ``k = 1..K`` have latent features ``z_k ~ N(0, I_L)`` (``latent_dim = L``).
2. **Embeddings**: image ``e_img = W2 tanh(W1 z + b1) + σ_e ε`` and text ``e_txt`` built the same way from the
   same ``z`` with different random maps (hidden width 2·L), so both carry the latent but differ; each row is
   L2-normalised, as CLIP embeddings are.
3. **Captions** are templated from the latent: the largest of ``z[0:4]`` picks the object (animal, vehicle, food,
   furniture), the sign of ``z[4]`` the setting (indoors/outdoors), ``z[5]`` terciles the count (one, two,
   several), the sign of ``z[6]`` the light (bright/dark): "a bright photo of two vehicles outdoors".  Latent
   dimensions beyond those shape the brain and embeddings only.
4. **Informative regions**: ``n_regions`` spherical blobs of radius ``region_radius_mm`` centred on voxels of
   the real MNI brain mask eroded by the radius (so every blob lies inside the brain) and at least two radii
   apart.  Voxel ``x`` of region ``r`` has a weight vector ``w_x ~ N(0, I_L/L)`` and a Gaussian profile
   ``p(x) = exp(-d²/(2(radius/2)²))``; its response to stimulus ``k`` for subject ``s`` is
   ``signal · g_s,r · p(x) · f_r((w_x + δ_s,x)·z_k)`` with ``f_r`` the identity for even regions and
   ``tanh(2u)/2`` (non-linear) for odd ones when ``nonlinear``, subject gains ``g = 1 + subject_variation·N(0,1)``
   and subject weight deviations ``δ ~ subject_variation·N(0, I_L/L)``.
5. **Noise**: every in-mask voxel of every scan gets ``noise·N(0, 1)``; each of ``repeats`` presentations of a
   stimulus gets fresh noise.  Voxels outside the mask are 0.  Voxels outside the regions carry only noise.

The truth mask holds the voxels with ``p(x) >= 0.1``, i.e. the blobs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from brainalign.data.volumes import MNI_AFFINE, MNI_SHAPE, _mni_mask_array, write_volume_cohort
from brainalign.errors import BrainAlignError

__all__ = ["VolumeSimulationConfig", "simulate_volume_cohort", "TRUTH_FILE", "TRUTH_MASK_FILE"]

TRUTH_FILE = "truth.json"
TRUTH_MASK_FILE = "truth_mask.nii.gz"
OBJECTS = ("animal", "vehicle", "plate of food", "piece of furniture")
OBJECTS_PLURAL = ("animals", "vehicles", "plates of food", "pieces of furniture")
MIN_LATENT_DIM = 7  # the caption template reads z[0:7]


@dataclass
class VolumeSimulationConfig:
    """Settings of :func:`simulate_volume_cohort` (every default is the value shown).

    Parameters
    ----------
    n_stimuli : int
        K distinct stimuli (images with captions).
    n_subjects : int
        Subjects; each sees every stimulus ``repeats`` times, so S = n_subjects·n_stimuli·repeats scans.
    repeats : int
        Presentations per stimulus and subject (fresh noise each).
    latent_dim : int
        L, dimensions of the stimulus latent (>= 7: the captions read the first 7).
    image_dim, text_dim : int
        Embedding sizes of the image and text targets.
    embedding_noise : float
        σ_e, noise added to the embeddings before normalisation (relative to a unit-variance signal).
    n_regions : int
        Informative blobs.  With the defaults (10 blobs of 10 mm, ~3 % of the brain) a whole-brain ridge
        regression from voxels to text embeddings reaches brain->text R@1 0.25 among 20 held-out stimuli
        (chance 0.05); with 6 blobs of 8 mm it stays near chance (0.10) while the planted voxels alone give 1.0.
    region_radius_mm : float
        Blob radius (mm); the profile is a Gaussian of sd radius/2, cut at the radius.
    signal : float
        Response amplitude at a blob centre (in units of the voxel noise sd when ``noise`` is 1).
    noise : float
        Voxel noise sd.
    subject_variation : float
        Spread of subject gains and voxel weights.
    nonlinear : bool
        Odd regions respond through a tanh.
    seed : int
    compresslevel : int
        gzip level of the written volumes (1 = fastest).
    """

    n_stimuli: int = 100
    n_subjects: int = 2
    repeats: int = 1
    latent_dim: int = 16
    image_dim: int = 64
    text_dim: int = 48
    embedding_noise: float = 0.1
    n_regions: int = 10
    region_radius_mm: float = 10.0
    signal: float = 2.0
    noise: float = 1.0
    subject_variation: float = 0.2
    nonlinear: bool = True
    seed: int = 0
    compresslevel: int = 1

    def __post_init__(self) -> None:
        problems = []
        for name in ("n_stimuli", "n_subjects", "repeats", "image_dim", "text_dim", "n_regions"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.latent_dim, int) or self.latent_dim < MIN_LATENT_DIM:
            problems.append(f"latent_dim must be an integer >= {MIN_LATENT_DIM}, got {self.latent_dim!r}")
        for name in ("region_radius_mm",):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("embedding_noise", "signal", "noise", "subject_variation"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 <= self.compresslevel <= 9:
            problems.append(f"compresslevel must be 0..9, got {self.compresslevel!r}")
        if self.n_stimuli < 2:
            problems.append("n_stimuli must be at least 2")
        if problems:
            raise BrainAlignError("volume simulation config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VolumeSimulationConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BrainAlignError(f"unknown volume simulation field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _embed(z: np.ndarray, dim: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(K, dim) float32 unit rows: a random two-layer tanh map of the latent plus noise."""
    L = z.shape[1]
    w1 = rng.standard_normal((L, 2 * L)) / np.sqrt(L)
    b1 = 0.3 * rng.standard_normal(2 * L)
    w2 = rng.standard_normal((2 * L, dim)) / np.sqrt(2 * L)
    e = np.tanh(z @ w1 + b1) @ w2
    e = e / e.std() + noise * rng.standard_normal(e.shape)
    return (e / np.linalg.norm(e, axis=1, keepdims=True)).astype(np.float32)


def _captions(z: np.ndarray) -> list[str]:
    """Templated captions from latent features z[:, 0:7] (see the module docstring)."""
    obj = np.argmax(z[:, :4], axis=1)
    count = np.digitize(z[:, 5], np.quantile(z[:, 5], [1 / 3, 2 / 3]))
    light = np.where(z[:, 6] > 0, "bright", "dark")
    place = np.where(z[:, 4] > 0, "outdoors", "indoors")
    words = np.where(count == 0, np.array(OBJECTS, dtype=object)[obj],
                     np.array(OBJECTS_PLURAL, dtype=object)[obj])
    number = np.array(["one", "two", "several"], dtype=object)[count]
    return [f"a {li} photo of {n} {w} {p}" for li, n, w, p in zip(light, number, words, place)]


def _regions(mask: np.ndarray, cfg: VolumeSimulationConfig, rng: np.random.Generator):
    """Blob centres (voxel indices) inside the eroded mask, and per-voxel region index and profile."""
    radius_vox = cfg.region_radius_mm / 2.0
    # Centres at least one radius away from the nearest non-brain voxel keep every blob inside the mask.
    inner = ndimage.distance_transform_edt(mask) > radius_vox
    candidates = np.argwhere(inner)
    if len(candidates) == 0:
        raise BrainAlignError(f"region_radius_mm={cfg.region_radius_mm} is too large for the brain mask")
    order = rng.permutation(len(candidates))
    centres: list[np.ndarray] = []
    for idx in order:  # greedy rejection sampling; stops after n_regions acceptances
        c = candidates[idx]
        if all(np.sum((c - o) ** 2) >= (2 * radius_vox) ** 2 for o in centres):
            centres.append(c)
            if len(centres) == cfg.n_regions:
                break
    if len(centres) < cfg.n_regions:
        raise BrainAlignError(f"cannot place {cfg.n_regions} non-overlapping regions of radius "
                              f"{cfg.region_radius_mm} mm in the brain mask")
    centres_arr = np.array(centres)
    vox = np.argwhere(mask)  # (V, 3), C order: same order as volume[mask]
    d2 = ((vox[:, None, :] - centres_arr[None, :, :]) ** 2).sum(-1)  # (V, R)
    region = np.argmin(d2, axis=1)
    dmin = d2[np.arange(len(vox)), region]
    profile = np.where(dmin <= radius_vox**2, np.exp(-dmin / (2 * (radius_vox / 2) ** 2)), 0.0)
    return centres_arr, region, profile


def simulate_volume_cohort(out: str | Path, config: VolumeSimulationConfig | None = None,
                           overwrite: bool = False) -> Path:
    """Simulate an NSD-like volume cohort with planted informative regions.

    Parameters
    ----------
    out : path
        Output folder (a volume cohort; see :mod:`brainalign.data.volumes`).
    config : VolumeSimulationConfig, optional
    overwrite : bool

    Returns
    -------
    Path
        The folder, with ``truth_mask.nii.gz`` (uint8, informative voxels), ``truth.json`` (config, region
        centres in voxels and MNI mm, voxel counts) and ``truth/latents.npy`` ((K, L) stimulus latents, rows in
        ``stimuli.csv`` order) beside the cohort files.
    """
    cfg = config or VolumeSimulationConfig()
    rng = np.random.default_rng(cfg.seed)
    mask = _mni_mask_array()[0]
    K, L, n_sub = cfg.n_stimuli, cfg.latent_dim, cfg.n_subjects
    z = rng.standard_normal((K, L))
    emb = {"image": _embed(z, cfg.image_dim, cfg.embedding_noise, rng),
           "text": _embed(z, cfg.text_dim, cfg.embedding_noise, rng)}
    stim_ids = [f"stim-{k:05d}" for k in range(K)]
    stimuli = pd.DataFrame({"stimulus_id": stim_ids, "caption": _captions(z)})

    centres, region, profile = _regions(mask, cfg, rng)
    informative = np.flatnonzero(profile > 0.1)
    n_inf = informative.size
    w = rng.standard_normal((L, n_inf)) / np.sqrt(L)
    gains = 1.0 + cfg.subject_variation * rng.standard_normal((n_sub, cfg.n_regions))
    deltas = cfg.subject_variation * rng.standard_normal((n_sub, L, n_inf)) / np.sqrt(L)
    nonlin = (region[informative] % 2 == 1) if cfg.nonlinear else np.zeros(n_inf, dtype=bool)
    amp = (cfg.signal * profile[informative]).astype(np.float32)

    rows = [(s, k, r) for s in range(n_sub) for k in range(K) for r in range(cfg.repeats)]
    phen = pd.DataFrame({
        "scan_id": [f"sub-{s + 1:02d}_stim-{k:05d}_rep-{r + 1}" for s, k, r in rows],
        "subject_id": [f"sub-{s + 1:02d}" for s, _, _ in rows],
        "stimulus_id": [stim_ids[k] for _, k, _ in rows],
        "repeat": [r + 1 for _, _, r in rows],
    })
    V = int(mask.sum())

    def volumes():
        for s in range(n_sub):
            u = z @ (w + deltas[s])  # (K, n_inf): every stimulus' drive of the informative voxels
            u[:, nonlin] = np.tanh(2 * u[:, nonlin]) / 2
            clean = (u * gains[s, region[informative]] * amp).astype(np.float32)
            for k in range(K):
                for _ in range(cfg.repeats):
                    values = (cfg.noise * rng.standard_normal(V)).astype(np.float32)
                    values[informative] += clean[k]
                    vol = np.zeros(MNI_SHAPE, dtype=np.float32)
                    vol[mask] = values
                    yield vol

    centres_mm = nib.affines.apply_affine(MNI_AFFINE, centres)
    desc = (f"Simulated NSD-like cohort: {n_sub} subjects x {K} stimuli x {cfg.repeats} repeats, "
            f"{cfg.n_regions} informative regions ({n_inf} voxels), seed {cfg.seed}")
    root = write_volume_cohort(out, volumes(), phen, stimuli, emb, name="simulated-volumes", description=desc,
                               notes=["simulated: see truth.json"], extra_meta={"simulation": cfg.to_dict()},
                               overwrite=overwrite, compresslevel=cfg.compresslevel)
    truth = np.zeros(MNI_SHAPE, dtype=np.uint8)
    flat = np.zeros(V, dtype=np.uint8)
    flat[informative] = 1
    truth[mask] = flat
    nib.Nifti1Image(truth, MNI_AFFINE).to_filename(str(root / TRUTH_MASK_FILE))
    (root / "truth").mkdir(exist_ok=True)
    np.save(root / "truth" / "latents.npy", z.astype(np.float32))
    info = {
        "config": cfg.to_dict(),
        "n_scans": len(phen),
        "n_informative_voxels": int(n_inf),
        "n_mask_voxels": V,
        "regions": [{"index": i, "centre_voxel": centres[i].tolist(),
                     "centre_mm": np.round(centres_mm[i], 1).tolist(),
                     "nonlinear": bool(cfg.nonlinear and i % 2 == 1),
                     "n_voxels": int(np.sum(region[informative] == i))} for i in range(cfg.n_regions)],
        "files": {"truth_mask": TRUTH_MASK_FILE, "latents": "truth/latents.npy"},
        "model": "voxel = signal*gain[s,r]*profile*f_r((w_x+delta_s,x)·z_k) + noise*N(0,1); see "
                 "brainalign.data.simulate_volumes",
    }
    (root / TRUTH_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return root
