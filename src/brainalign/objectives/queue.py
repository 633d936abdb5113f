"""Symmetric InfoNCE with a fixed temperature and a memory queue of past embeddings (METHODS §4, "Alignment").

Which side is queued, and why
-----------------------------
The queue keeps, for the last ``size`` training samples, the (frozen) *target* embedding (image or text), the
(detached) *brain* embedding and the stimulus id.  In the brain→target direction the queued targets are extra
negatives; in the target→brain direction the queued brain embeddings are.  Queued targets are exact (targets are
frozen, so they never go stale, unlike MoCo's keys).  Queued brain embeddings come from an encoder a few steps
older; with ``size / batch`` steps of lag (16 at the paper's 4096/256) and a small learning rate this staleness is
small, the same trade MoCo makes, and without it the target→brain direction would not profit from the queue at
all.  ``queued_brain=False`` leaves that direction to the batch and queues the exact targets only.  Gradients flow
through the current batch only.

Duplicates
----------
A stimulus is seen by several subjects and repeated, so two rows can share a stimulus id.  Inside the batch, rows
with the same stimulus id are positives of each other (multi-positive InfoNCE: the log-likelihood is averaged
over the positives, as ``brainalign.objectives.contrastive.clip_loss`` does).  Every stimulus enters a softmax
once: queue entries of a stimulus the batch holds are dropped (the batch has its exact target and a fresher brain
embedding; the queued copy of a row's own image must not be pushed away, and counting it as a positive would weight
stimuli by how often they were queued), and of several queued entries of one stimulus only the newest is kept (a
queue longer than the training set would otherwise weight each negative by how often it was queued).

Temperature
-----------
Fixed at CLIP's final value: logits are ``100 · cos`` (τ = 0.01), as in the paper.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainalign.errors import BrainAlignError

__all__ = ["CLIP_FINAL_LOGIT_SCALE", "EmbeddingQueue", "distinct_queued", "queued_info_nce", "stimulus_codes"]

CLIP_FINAL_LOGIT_SCALE = 100.0  # exp(logit_scale) at the end of CLIP training (the clamp value)


def stimulus_codes(ids: Any) -> np.ndarray:
    """Stable int64 codes for stimulus ids (str or int); equal ids give equal codes across calls.

    Strings are hashed with a fixed-seed 63-bit hash (BLAKE2) so that codes held by the queue remain comparable to
    codes of later batches without a shared vocabulary.
    """
    import hashlib

    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise BrainAlignError(f"stimulus ids must be one-dimensional (B,), got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    return np.array([int.from_bytes(hashlib.blake2b(str(s).encode(), digest_size=8).digest(), "little") >> 1
                     for s in arr.tolist()], dtype=np.int64)


class EmbeddingQueue(nn.Module):
    """FIFO ring buffer of the last ``size`` (brain, target, stimulus code) triples.

    Parameters
    ----------
    size : int
        Capacity in samples (paper: 4096).  0 disables the queue.
    brain_dim, target_dim : int
        Embedding sizes.

    Notes
    -----
    Buffers are non-persistent: a checkpoint does not carry the queue (it refills within ``size / batch`` steps).
    When a batch is larger than the capacity only its last ``size`` rows are kept.  Under DDP each process keeps its
    own queue of its own samples.
    """

    def __init__(self, size: int, brain_dim: int, target_dim: int):
        super().__init__()
        if size < 0:
            raise BrainAlignError(f"queue size must be >= 0, got {size}")
        self.size = int(size)
        self.register_buffer("brain", torch.zeros(self.size, brain_dim), persistent=False)
        self.register_buffer("target", torch.zeros(self.size, target_dim), persistent=False)
        self.register_buffer("codes", torch.zeros(self.size, dtype=torch.long), persistent=False)
        self.ptr = 0
        self.filled = 0

    def __len__(self) -> int:
        return self.filled

    def contents(self) -> tuple[Tensor, Tensor, Tensor]:
        """The queued ``(brain (n, Db), target (n, Dt), codes (n,))``, oldest first, n = ``len(self)``."""
        if self.filled < self.size:
            idx = torch.arange(self.filled, device=self.codes.device)
        else:
            idx = (torch.arange(self.size, device=self.codes.device) + self.ptr) % self.size
        return self.brain[idx], self.target[idx], self.codes[idx]

    @torch.no_grad()
    def enqueue(self, brain: Tensor, target: Tensor, codes: Tensor) -> None:
        """Append a batch (detached), overwriting the oldest entries when full."""
        if self.size == 0:
            return
        if brain.shape[0] != target.shape[0] or brain.shape[0] != codes.shape[0]:
            raise BrainAlignError(f"enqueue needs equally long batches, got brain {tuple(brain.shape)}, target "
                                  f"{tuple(target.shape)}, codes {tuple(codes.shape)}")
        brain, target, codes = brain[-self.size:], target[-self.size:], codes[-self.size:]
        n = brain.shape[0]
        idx = (torch.arange(n, device=self.codes.device) + self.ptr) % self.size
        self.brain[idx] = F.normalize(brain.detach().float(), dim=-1).to(self.brain.dtype)
        self.target[idx] = F.normalize(target.detach().float(), dim=-1).to(self.target.dtype)
        self.codes[idx] = codes.to(self.codes.device)
        self.ptr = (self.ptr + n) % self.size
        self.filled = min(self.size, self.filled + n)


def _nll_with_extra(logits: Tensor, positives: Tensor, extra: Tensor | None) -> Tensor:
    """Multi-positive NLL of rows of ``[logits | extra]`` (the ``extra`` columns are negatives only)."""
    full = torch.cat([logits, extra], dim=1) if extra is not None and extra.shape[1] > 0 else logits
    logp = F.log_softmax(full, dim=1)[:, : logits.shape[1]]
    n_pos = positives.sum(dim=1)
    return (-logp.masked_fill(~positives, 0.0).sum(dim=1) / n_pos).mean()


def queued_info_nce(brain: Tensor, target: Tensor, codes: Tensor, queue: EmbeddingQueue | None = None,
                    logit_scale: float = CLIP_FINAL_LOGIT_SCALE, queued_brain: bool = True) -> Tensor:
    """Symmetric InfoNCE between brain and target embeddings, with queued negatives and duplicate masking.

    ``L = ½ [ mean_i NLL_i(brain_i → [targets of the batch | queued targets]) +
    mean_j NLL_j(target_j → [brains of the batch | queued brains]) ]`` with logits ``logit_scale · cos``.
    Positives of row i are the batch rows with the same stimulus code; queue entries are negatives, once per
    stimulus (:func:`distinct_queued`).  The queue is *read* here, not updated: call ``queue.enqueue`` after the loss.

    Parameters
    ----------
    brain : Tensor (B, D)
        Brain embeddings (gradients flow).
    target : Tensor (B, D)
        Frozen target embeddings of the same rows.
    codes : Tensor (B,) int64
        Stimulus codes (:func:`stimulus_codes`).
    queue : EmbeddingQueue, optional
    logit_scale : float
        Multiplier of the cosine (fixed; default 100, τ = 0.01).
    queued_brain : bool
        Use the queued (stale) brain embeddings as negatives of the target→brain direction; False leaves that
        direction to the batch and queues only the exact, frozen targets.

    Returns
    -------
    Tensor, scalar
    """
    if brain.ndim != 2 or brain.shape != target.shape:
        raise BrainAlignError(f"brain and target embeddings must both be (B, D), got {tuple(brain.shape)} and "
                              f"{tuple(target.shape)}")
    if brain.shape[0] < 2:
        raise BrainAlignError(f"a contrastive loss needs at least 2 rows, got {brain.shape[0]}")
    if codes.shape != (brain.shape[0],):
        raise BrainAlignError(f"codes must have shape ({brain.shape[0]},), got {tuple(codes.shape)}")
    for name, x in (("brain", brain), ("target", target)):
        if not bool(torch.isfinite(x).all()):
            raise BrainAlignError(f"{name} embeddings contain NaN or infinite values")
    b = F.normalize(brain.float(), dim=-1)
    t = F.normalize(target.float(), dim=-1)
    logits = logit_scale * b @ t.T
    positives = codes[:, None] == codes[None, :]
    q_brain = q_target = None
    if queue is not None and len(queue) > 0:
        q_brain, q_target, q_codes = queue.contents()
        keep = distinct_queued(q_codes.to(codes.device), codes)
        q_brain, q_target = q_brain.to(b)[keep], q_target.to(t)[keep]
        q_brain = logit_scale * t @ q_brain.T if queued_brain else None  # target rows against queued brains
        q_target = logit_scale * b @ q_target.T    # brain rows against queued targets
    return 0.5 * (_nll_with_extra(logits, positives, q_target) + _nll_with_extra(logits.T, positives, q_brain))


def distinct_queued(queued_codes: Tensor, batch_codes: Tensor) -> Tensor:
    """(n,) bool: the queue entries (oldest first) that are negatives — the newest entry of each stimulus the
    batch (``batch_codes`` (B,)) does not hold."""
    n = queued_codes.shape[0]
    _, inverse = torch.unique(queued_codes, return_inverse=True)
    position = torch.arange(n, device=queued_codes.device)
    newest = torch.full((int(inverse.max()) + 1,), -1, dtype=torch.long, device=queued_codes.device)
    newest = newest.scatter_reduce(0, inverse, position, reduce="amax")
    return (newest[inverse] == position) & ~torch.isin(queued_codes, batch_codes)
