"""Cross-modal retrieval between brain embeddings and image/text embeddings (METHODS §4, "Retrieval").

Protocol
--------
- **Split by stimulus**: :func:`split_by_stimulus` holds out a fraction of the *stimuli*; every scan of a held-out
  stimulus (all subjects, all repeats) goes to the test set, so test images are unseen in training.
- **Repeats are averaged** (the NSD convention): within each subject, the L2-normalised brain embeddings of the
  trials of one stimulus are averaged (and re-normalised) into one query, so each subject contributes one brain
  item per test stimulus.
- **Per subject, then the mean**: within each subject, the candidates are that subject's test stimuli; R@k is
  computed in four directions — brain→image (query a brain item, rank all candidate images), image→brain,
  brain→text, text→brain — with :func:`brainalign.evaluation.metrics.recall_at_k` (ties count as misses), and
  averaged over subjects (the paper's "mean over 8 subjects").
- **Chance** R@k = min(k, n) / n for n candidates, averaged over subjects the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from brainalign.errors import BrainAlignError
from brainalign.evaluation.metrics import recall_at_k

__all__ = ["DIRECTIONS", "average_repeats", "retrieval_table", "split_by_stimulus", "top_k_ids"]

DIRECTIONS = {"brain_to_image": ("brain", "image"), "image_to_brain": ("image", "brain"),
              "brain_to_text": ("brain", "text"), "text_to_brain": ("text", "brain")}


def split_by_stimulus(stimulus_ids: Any, test_frac: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and test scan indices with disjoint stimuli (scikit-learn ``GroupShuffleSplit``).

    Parameters
    ----------
    stimulus_ids : array-like (S,)
    test_frac : float
        Fraction of distinct stimuli held out.
    seed : int

    Returns
    -------
    train, test : ndarray of int64
    """
    from sklearn.model_selection import GroupShuffleSplit

    ids = np.asarray(stimulus_ids).astype(str)
    n_stim = len(np.unique(ids))
    if n_stim < 4:
        raise BrainAlignError(f"a stimulus split needs at least 4 distinct stimuli, got {n_stim}")
    if not 0 < test_frac < 1:
        raise BrainAlignError(f"test_frac must be in (0, 1), got {test_frac}")
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_frac, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(ids)), groups=ids))
    return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)


def average_repeats(brain: np.ndarray, stimulus_ids: Any, subject_ids: Any) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
    """Mean of the normalised brain embeddings per (subject, stimulus), re-normalised.

    Parameters
    ----------
    brain : ndarray (S, D)
    stimulus_ids, subject_ids : array-like (S,)

    Returns
    -------
    mean : ndarray (G, D)
        One row per (subject, stimulus) pair, sorted by subject then stimulus.
    stimulus, subject : ndarray (G,) of str
    """
    brain = np.asarray(brain, dtype=np.float64)
    stim = np.asarray(stimulus_ids).astype(str)
    subj = np.asarray(subject_ids).astype(str)
    if brain.ndim != 2 or stim.shape != (brain.shape[0],) or subj.shape != (brain.shape[0],):
        raise BrainAlignError(f"brain (S, D), stimulus_ids (S,) and subject_ids (S,) must agree; got "
                              f"{brain.shape}, {stim.shape}, {subj.shape}")
    if not np.isfinite(brain).all():
        raise BrainAlignError("brain embeddings contain NaN/inf values")
    brain = brain / np.maximum(np.linalg.norm(brain, axis=1, keepdims=True), 1e-12)
    pairs = np.stack([subj, stim], axis=1)
    keys, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(keys), brain.shape[1]))
    np.add.at(sums, inverse, brain)
    mean = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return mean, keys[:, 1], keys[:, 0]


def _lookup(targets: tuple[np.ndarray, Sequence[str]], ids: np.ndarray, kind: str) -> np.ndarray:
    emb, tid = np.asarray(targets[0], dtype=np.float64), np.asarray(targets[1]).astype(str)
    row = {s: i for i, s in enumerate(tid)}
    missing = sorted({s for s in ids if s not in row})
    if missing:
        raise BrainAlignError(f"no {kind} embedding for {len(missing)} stimulus id(s): {missing[:5]}")
    out = emb[[row[s] for s in ids]]
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def retrieval_table(brain: Mapping[str, np.ndarray], targets: Mapping[str, tuple[np.ndarray, Sequence[str]]],
                    stimulus_ids: Any, subject_ids: Any, ks: Sequence[int] = (1, 5, 10)) -> dict[str, dict[str, float]]:
    """R@k and chance in the four directions, averaged over subjects (see the module notes).

    Parameters
    ----------
    brain : dict of str to ndarray (S, D_target)
        Brain embeddings of the test scans in each target's space (``{"image": ..., "text": ...}``).
    targets : dict of str to (ndarray (n_stim, D_target), ids (n_stim,))
        Target embeddings per stimulus id.
    stimulus_ids, subject_ids : array-like (S,)
    ks : sequence of int

    Returns
    -------
    dict
        ``{direction: {"R@1": ..., "chance@1": ..., ..., "n_subjects": ..., "n_candidates": mean}}`` for every
        direction whose target is present in both ``brain`` and ``targets``; fractions in [0, 1].
    """
    stim = np.asarray(stimulus_ids).astype(str)
    subj = np.asarray(subject_ids).astype(str)
    out: dict[str, dict[str, float]] = {}
    for kind in ("image", "text"):
        if kind not in brain or kind not in targets:
            continue
        emb = np.asarray(brain[kind])
        if emb.ndim != 2 or emb.shape[0] != len(stim):
            raise BrainAlignError(f"brain {kind} embeddings must be (S={len(stim)}, D), got {emb.shape}")
        t_dim = np.asarray(targets[kind][0]).shape[1]
        if emb.shape[1] != t_dim:
            raise BrainAlignError(f"brain embeddings have dimension {emb.shape[1]} but the {kind} target embeddings "
                                  f"have {t_dim}: the model was trained for another embedding space")
        mean, g_stim, g_subj = average_repeats(emb, stim, subj)
        tgt = _lookup(targets[kind], g_stim, kind)
        per: dict[str, list[dict[str, float]]] = {f"brain_to_{kind}": [], f"{kind}_to_brain": []}
        sizes = []
        for s in np.unique(g_subj):
            rows = g_subj == s
            if rows.sum() < 2:
                continue
            sim = mean[rows] @ tgt[rows].T  # (n, n): brain item i vs stimulus j; diagonal = correct
            sizes.append(int(rows.sum()))
            per[f"brain_to_{kind}"].append(recall_at_k(sim, None, ks))
            per[f"{kind}_to_brain"].append(recall_at_k(sim.T, None, ks))
        if not sizes:
            raise BrainAlignError("retrieval needs a subject with at least 2 test stimuli")
        for direction, rows in per.items():
            res = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
            res.update({f"chance@{k}": float(np.mean([min(k, n) / n for n in sizes])) for k in ks})
            res.update(n_subjects=len(sizes), n_candidates=float(np.mean(sizes)))
            out[direction] = res
    if not out:
        raise BrainAlignError("no target present in both the brain embeddings and the target embeddings")
    return out


def top_k_ids(brain: np.ndarray, targets: tuple[np.ndarray, Sequence[str]], k: int = 10) -> np.ndarray:
    """The ``k`` most similar stimulus ids per brain embedding (cosine), best first; shape (S, min(k, n_stim))."""
    emb = np.asarray(targets[0], dtype=np.float64)
    ids = np.asarray(targets[1]).astype(str)
    b = np.asarray(brain, dtype=np.float64)
    if b.shape[1] != emb.shape[1]:
        raise BrainAlignError(f"brain embeddings have dimension {b.shape[1]}, targets {emb.shape[1]}")
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    sim = b @ emb.T
    k = min(k, emb.shape[0])
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(sim, top, axis=1).argsort(axis=1)[:, ::-1]
    return ids[np.take_along_axis(top, order, axis=1)]
