"""Natural Scenes Dataset (Allen et al., 2022) -> a volume cohort of MNI-space single-trial betas with COCO captions.

NSD is public on AWS S3 (bucket ``natural-scenes-dataset``, read over plain HTTPS at :data:`NSD_URL`; its terms
of use must be accepted on the NSD website first).  :func:`fetch_nsd` downloads, into
``<data_home>/nsd/`` (see :func:`brainalign.data.fetchers.data_home`), keeping the bucket's layout:

- ``nsddata/experiments/nsd/nsd_expdesign.mat``: ``masterordering`` (30,000 trials -> 1-based index into the
  subject's 10,000 images), ``subjectim`` (8 x 10,000 -> 1-based 73k NSD image id), ``sharedix`` (the 1,000
  images all subjects saw);
- ``nsddata/experiments/nsd/nsd_stim_info_merged.csv``: ``nsdId`` (0-based) -> ``cocoId``, ``cocoSplit``;
- ``nsddata_stimuli/stimuli/nsd/annotations/captions_{train2017,val2017}.json``: the COCO caption annotations;
- ``nsddata_betas/ppdata/subjXX/MNI/betas_fithrf_GLMdenoise_RR/betas_sessionNN.nii.gz``: 750 trials per
  session, GLMsingle betas (fitted HRF, GLMdenoise, ridge) in MNI space, int16 = percent signal change x 300.

Trial ``t`` (0-based over the subject's sessions, 750 per session) shows NSD image
``subjectim[subject-1, masterordering[t]-1] - 1`` (0-based 73k id, the ``nsdId`` of the stimulus table).
Betas are divided by 300 (percent signal change) when the file stores integers without a scale factor, moved
onto the MNI 2 mm grid (:func:`brainalign.data.volumes.to_mni_grid`: exact reorientation, then continuous
resampling of the 1 mm maps) and written either one volume per trial (``per="trial"``) or, by default, one
per image averaged over its repeats within the requested sessions (``per="image"``; up to 3 in NSD).  The
caption of a stimulus is its first COCO caption; all five are kept in ``stimuli.csv`` (``captions``, joined
with " | ").

Cost: every session file is streamed once; each trial is resampled from 1 mm to 2 mm (continuous
interpolation, the slow step).  ``per="image"`` sums in-mask betas in a float32 accumulator on disk beside the
output folder (about 0.9 MB per image, removed at the end).  No NSD file was downloaded while writing this
module: the layout and the mapping follow the NSD data manual and are tested on small fake files.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import pandas as pd

from brainalign.data.volumes import MNI_AFFINE, MNI_SHAPE, _mni_mask_array, to_mni_grid, write_volume_cohort
from brainalign.errors import BrainAlignError

__all__ = ["NSD_URL", "SESSIONS_PER_SUBJECT", "build_nsd_cohort", "fetch_nsd", "nsd_captions", "nsd_trials"]

NSD_URL = "https://natural-scenes-dataset.s3.amazonaws.com"
EXPDESIGN = "nsddata/experiments/nsd/nsd_expdesign.mat"
STIM_INFO = "nsddata/experiments/nsd/nsd_stim_info_merged.csv"
COCO_CAPTIONS = "nsddata_stimuli/stimuli/nsd/annotations/captions_{split}.json"
COCO_SPLITS = ("train2017", "val2017")
BETAS = "nsddata_betas/ppdata/subj{subject:02d}/MNI/betas_fithrf_GLMdenoise_RR/betas_session{session:02d}.nii.gz"
#: Scan sessions each subject completed (subjects 1-8).
SESSIONS_PER_SUBJECT = {1: 40, 2: 40, 3: 32, 4: 30, 5: 40, 6: 32, 7: 40, 8: 30}
TRIALS_PER_SESSION = 750
BETA_SCALE = 300.0  # NSD stores betas as int16 percent signal change x 300


def _download(relpath: str, cache: Path, timeout: float = 60.0) -> Path:
    """One bucket file into ``cache/relpath`` (skipped when present), written to ``.part`` then renamed."""
    import requests

    dest = cache / relpath
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    url = f"{NSD_URL}/{relpath}"
    part = dest.with_name(dest.name + ".part")
    try:
        with requests.get(url, stream=True, timeout=timeout) as resp:
            if resp.status_code != 200:
                raise BrainAlignError(f"NSD download of {url} failed: HTTP {resp.status_code}")
            with part.open("wb") as fh:
                for block in resp.iter_content(chunk_size=1 << 20):
                    fh.write(block)
    except requests.RequestException as err:
        raise BrainAlignError(f"NSD download of {url} failed: {err}") from None
    part.replace(dest)
    return dest


def nsd_trials(expdesign: Mapping[str, Any], subject: int, sessions: Sequence[int]) -> pd.DataFrame:
    """Map the subject's trials in the given sessions to NSD images.

    Parameters
    ----------
    expdesign : mapping
        Contents of ``nsd_expdesign.mat`` (``scipy.io.loadmat``): ``masterordering``, ``subjectim``, optional
        ``sharedix``.
    subject : int
        1..8.
    sessions : sequence of int
        1-based session numbers.

    Returns
    -------
    DataFrame
        One row per trial in time order: ``session``, ``trial`` (0-based over all sessions),
        ``trial_in_session`` (0-based), ``image10k`` (0-based index into the subject's 10,000 images),
        ``nsd_id`` (0-based 73k id), ``repeat`` (0-based presentation number of that image in the whole
        experiment), ``shared`` (one of the 1,000 images every subject saw).
    """
    for key in ("masterordering", "subjectim"):
        if key not in expdesign:
            raise BrainAlignError(f"{EXPDESIGN}: key '{key}' is missing (keys: {sorted(expdesign)[:10]})")
    master = np.asarray(expdesign["masterordering"]).ravel().astype(np.int64)
    subjectim = np.atleast_2d(np.asarray(expdesign["subjectim"])).astype(np.int64)
    if not 1 <= subject <= subjectim.shape[0]:
        raise BrainAlignError(f"NSD subject must be 1..{subjectim.shape[0]}, got {subject}")
    sessions = np.asarray(sorted(set(int(s) for s in sessions)), dtype=np.int64)
    n_max = min(SESSIONS_PER_SUBJECT.get(subject, 40), len(master) // TRIALS_PER_SESSION)
    bad = sessions[(sessions < 1) | (sessions > n_max)]
    if bad.size or sessions.size == 0:
        raise BrainAlignError(f"NSD subject {subject} has sessions 1..{n_max}; got {sessions.tolist()}")
    trial = ((sessions[:, None] - 1) * TRIALS_PER_SESSION + np.arange(TRIALS_PER_SESSION)[None]).ravel()
    image10k = master - 1
    if image10k.min() < 0 or image10k.max() >= subjectim.shape[1]:
        raise BrainAlignError(f"{EXPDESIGN}: masterordering values must be 1..{subjectim.shape[1]}")
    repeat_all = pd.Series(image10k).groupby(image10k).cumcount().to_numpy()
    nsd_id = subjectim[subject - 1, image10k[trial]] - 1
    shared_ids = np.asarray(expdesign.get("sharedix", np.array([]))).ravel().astype(np.int64) - 1
    return pd.DataFrame({
        "session": np.repeat(sessions, TRIALS_PER_SESSION),
        "trial": trial,
        "trial_in_session": np.tile(np.arange(TRIALS_PER_SESSION), sessions.size),
        "image10k": image10k[trial],
        "nsd_id": nsd_id,
        "repeat": repeat_all[trial],
        "shared": np.isin(nsd_id, shared_ids),
    })


def nsd_captions(stim_info: pd.DataFrame, coco: Mapping[str, Mapping[str, Any]], nsd_ids: Sequence[int]) -> pd.DataFrame:
    """COCO captions of NSD images.

    Parameters
    ----------
    stim_info : DataFrame
        ``nsd_stim_info_merged.csv``: ``nsdId``, ``cocoId``, ``cocoSplit``.
    coco : mapping split -> COCO caption annotation JSON (``{"annotations": [{"image_id", "caption"}, ...]}``)
    nsd_ids : sequence of int
        0-based NSD ids wanted.

    Returns
    -------
    DataFrame
        ``stimulus_id`` (``nsd-XXXXX``), ``caption`` (first COCO caption), ``captions`` (all, " | "),
        ``nsd_id``, ``coco_id``, ``coco_split``; one row per requested id, in the given order.
    """
    missing = [c for c in ("nsdId", "cocoId", "cocoSplit") if c not in stim_info]
    if missing:
        raise BrainAlignError(f"{STIM_INFO}: missing column(s) {missing}")
    info = stim_info.drop_duplicates("nsdId").set_index("nsdId")
    ids = np.asarray(nsd_ids, dtype=np.int64)
    absent = ids[~np.isin(ids, info.index.to_numpy())]
    if absent.size:
        raise BrainAlignError(f"{STIM_INFO}: no row for nsdId(s) {absent[:5].tolist()}")
    rows = info.loc[ids]
    ann = pd.concat([pd.DataFrame(coco[s].get("annotations", []), columns=["image_id", "caption"]).assign(split=s)
                     for s in coco], ignore_index=True)
    ann["caption"] = ann["caption"].astype(str).str.strip()
    grouped = ann.groupby(["split", "image_id"])["caption"].agg(list)
    keys = list(zip(rows["cocoSplit"].astype(str), rows["cocoId"].astype(np.int64)))
    found = [grouped.get(k) for k in keys]
    lost = [int(i) for i, f in zip(ids, found) if not f]
    if lost:
        raise BrainAlignError(f"COCO captions: no caption for nsdId(s) {lost[:5]} (cocoId "
                              f"{[k[1] for k, f in zip(keys, found) if not f][:5]})")
    return pd.DataFrame({
        "stimulus_id": [f"nsd-{i:05d}" for i in ids],
        "caption": [f[0] for f in found],
        "captions": [" | ".join(f) for f in found],
        "nsd_id": ids,
        "coco_id": rows["cocoId"].to_numpy(dtype=np.int64),
        "coco_split": rows["cocoSplit"].astype(str).to_numpy(),
    })


def _session_volumes(path: Path, trials: Sequence[int]):
    """Yield the (X, Y, Z) float32 betas of the given trials (ascending) of one 4-D session file.

    The file is streamed once from start to end: a gzipped NIfTI cannot seek backwards cheaply, and slicing
    its proxy trial by trial would decompress it from the start for every trial.  NSD's int16 values are
    divided by :data:`BETA_SCALE` unless the header carries its own scale factor.
    """
    img = nib.load(str(path))
    proxy = img.dataobj
    if len(img.shape) != 4 or getattr(proxy, "order", "F") != "F":
        raise BrainAlignError(f"{path}: shape {img.shape}, expected 4-D (x, y, z, trials)")
    trials = [int(t) for t in trials]
    if trials and (trials != sorted(trials) or trials[-1] >= img.shape[3]):
        raise BrainAlignError(f"{path}: has {img.shape[3]} trials, asked for up to trial {trials[-1] + 1}")
    dtype = np.dtype(proxy.dtype)
    n_vox = int(np.prod(img.shape[:3]))
    slope, inter = float(proxy.slope), float(proxy.inter)
    own_scale = np.isfinite(slope) and (slope, inter) != (1.0, 0.0)
    scale = 1.0 if own_scale or np.issubdtype(dtype, np.floating) else 1.0 / BETA_SCALE
    wanted = set(trials)
    with nib.openers.ImageOpener(str(path)) as fh:
        fh.seek(proxy.offset)
        for t in range(trials[-1] + 1 if trials else 0):
            try:
                block = fh.read(n_vox * dtype.itemsize)
            except (EOFError, OSError, zlib.error) as err:
                raise BrainAlignError(f"{path}: cannot read trial {t + 1} ({err}; truncated download?)") from None
            if len(block) != n_vox * dtype.itemsize:
                raise BrainAlignError(f"{path}: file ends inside trial {t + 1} (truncated download?)")
            if t not in wanted:
                continue
            data = np.frombuffer(block, dtype=dtype).reshape(img.shape[:3], order="F").astype(np.float32)
            if own_scale:
                data = data * slope + inter
            grid, _ = to_mni_grid(nib.Nifti1Image(data * np.float32(scale), img.affine))
            yield grid


def build_nsd_cohort(
    out_dir: str | Path,
    source: str | Path,
    subject: int = 1,
    sessions: Sequence[int] = (1,),
    per: Literal["image", "trial"] = "image",
    max_trials: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Build a volume cohort from NSD files laid out as in the bucket under ``source`` (see the module docstring).

    Parameters
    ----------
    out_dir : path
    source : path
        Folder with the bucket layout (what :func:`fetch_nsd` downloads).
    subject : int
        1..8.
    sessions : sequence of int
    per : {"image", "trial"}
        One volume per image (betas averaged over its repeats in these sessions), or one per trial.
    max_trials : int, optional
        Use only the first n trials (in time order) of the requested sessions, for a quick look.
    overwrite : bool

    Returns
    -------
    Path
        Volume cohort: ``subject_id`` ``subjXX``, ``stimulus_id`` ``nsd-XXXXX``; per image ``scan_id``
        ``subjXX_nsd-XXXXX`` with ``n_repeats``, ``sessions``, ``shared``; per trial
        ``subjXX_ses-NN_trial-TTT`` with ``session``, ``trial``, ``repeat``, ``shared``.
    """
    from scipy.io import loadmat

    from brainalign.data.builders import _check_out_dir

    if per not in ("image", "trial"):
        raise BrainAlignError(f"per must be 'image' or 'trial', got {per!r}")
    out = _check_out_dir(out_dir, overwrite)
    source = Path(source)
    try:
        design = loadmat(str(source / EXPDESIGN))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise BrainAlignError(f"cannot read {source / EXPDESIGN}: {err}") from None
    trials = nsd_trials(design, subject, sessions)
    if max_trials is not None:
        trials = trials.iloc[: int(max_trials)]
    stim_info = pd.read_csv(source / STIM_INFO)
    coco = {}
    for split in sorted(set(stim_info.set_index("nsdId").loc[trials["nsd_id"].unique(), "cocoSplit"].astype(str))):
        path = source / COCO_CAPTIONS.format(split=split)
        try:
            coco[split] = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError) as err:
            raise BrainAlignError(f"cannot read COCO captions {path}: {err}") from None
    subj = f"subj{subject:02d}"
    images = trials["nsd_id"].drop_duplicates().to_numpy()
    stimuli = nsd_captions(stim_info, coco, images)
    betas = {s: source / BETAS.format(subject=subject, session=s) for s in trials["session"].unique()}
    for s, path in betas.items():
        if not path.is_file():
            raise BrainAlignError(f"NSD betas for {subj} session {s} are missing: {path}")

    def trial_volumes():
        for s, group in trials.groupby("session", sort=True):
            yield from _session_volumes(betas[s], group["trial_in_session"].tolist())

    if per == "trial":
        phen = pd.DataFrame({
            "scan_id": [f"{subj}_ses-{s:02d}_trial-{t + 1:03d}" for s, t in zip(trials["session"],
                                                                               trials["trial_in_session"])],
            "subject_id": subj, "stimulus_id": [f"nsd-{i:05d}" for i in trials["nsd_id"]],
            "session": trials["session"].to_numpy(), "trial": trials["trial"].to_numpy(),
            "repeat": trials["repeat"].to_numpy(), "shared": trials["shared"].to_numpy(),
        })
        volumes = trial_volumes()
    else:
        mask = _mni_mask_array()[0]
        pos = pd.Series(np.arange(len(images)), index=images)
        staging = out.parent / f".{out.name}.nsd-staging"
        staging.mkdir(parents=True, exist_ok=True)
        sums = np.lib.format.open_memmap(staging / "sums.npy", mode="w+", dtype=np.float32,
                                         shape=(len(images), int(mask.sum())))
        for row, vol in zip(pos.loc[trials["nsd_id"]].to_numpy(), trial_volumes()):
            sums[row] += vol[mask]
        counts = trials.groupby("nsd_id").size().loc[images].to_numpy()
        sessions_of = trials.groupby("nsd_id")["session"].agg(lambda s: ";".join(map(str, sorted(set(s)))))
        phen = pd.DataFrame({
            "scan_id": [f"{subj}_nsd-{i:05d}" for i in images], "subject_id": subj,
            "stimulus_id": [f"nsd-{i:05d}" for i in images], "n_repeats": counts,
            "sessions": sessions_of.loc[images].to_numpy(),
            "shared": trials.drop_duplicates("nsd_id")["shared"].to_numpy(),
        })

        def averaged():
            for k in range(len(images)):
                vol = np.zeros(MNI_SHAPE, dtype=np.float32)
                vol[mask] = sums[k] / counts[k]
                yield vol

        volumes = averaged()
    notes = [f"NSD {subj} sessions {sorted(set(trials['session'].tolist()))}, betas_fithrf_GLMdenoise_RR in MNI "
             f"space, percent signal change, resampled to 2 mm; one volume per {per}"
             + ("; averaged volumes are stored inside the MNI brain mask only" if per == "image" else "")]
    try:
        return write_volume_cohort(out, volumes, phen, stimuli, name=f"nsd-{subj}", notes=notes,
                                   description="Natural Scenes Dataset (Allen et al. 2022), COCO captions.",
                                   extra_meta={"source": NSD_URL, "affine": MNI_AFFINE.tolist()},
                                   overwrite=overwrite)
    finally:
        if per == "image":
            del sums
            shutil.rmtree(staging, ignore_errors=True)


def fetch_nsd(
    out_dir: str | Path,
    *,
    subject: int = 1,
    sessions: Sequence[int] = (1,),
    per: Literal["image", "trial"] = "image",
    max_trials: int | None = None,
    data_dir: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Download what a cohort of NSD ``subject``'s ``sessions`` needs, then :func:`build_nsd_cohort`.

    Files are cached under ``<data_home>/nsd`` (bucket layout), so a second call downloads nothing.  One
    session of MNI betas is large (several GB); start with one session.

    Parameters
    ----------
    out_dir : path
    subject, sessions, per, max_trials, overwrite
        See :func:`build_nsd_cohort`.
    data_dir : path, optional
        Download cache root (default :func:`brainalign.data.fetchers.data_home`).
    """
    from brainalign.data.fetchers import data_home

    if subject not in SESSIONS_PER_SUBJECT:
        raise BrainAlignError(f"NSD subject must be one of {sorted(SESSIONS_PER_SUBJECT)}, got {subject!r}")
    bad = [s for s in sessions if not 1 <= int(s) <= SESSIONS_PER_SUBJECT[subject]]
    if bad or not sessions:
        raise BrainAlignError(f"NSD subject {subject} has sessions 1..{SESSIONS_PER_SUBJECT[subject]}; got {list(sessions)}")
    cache = data_home(data_dir) / "nsd"
    for rel in (EXPDESIGN, STIM_INFO, *(COCO_CAPTIONS.format(split=s) for s in COCO_SPLITS)):
        _download(rel, cache)
    for s in sorted(set(int(x) for x in sessions)):
        _download(BETAS.format(subject=subject, session=s), cache)
    return build_nsd_cohort(out_dir, cache, subject=subject, sessions=sessions, per=per, max_trials=max_trials,
                            overwrite=overwrite)
