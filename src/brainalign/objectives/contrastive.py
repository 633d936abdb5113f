"""Global contrastive objectives: CLIP (symmetric InfoNCE) and SigLIP (pairwise sigmoid).

Both work on L2-normalised embeddings and accept an optional ``(B, B)`` boolean matrix of positives, so that pairs
whose texts are identical (templated phenotype text repeats) are not pushed apart as negatives
(METHODS §1, "Decision: in L_global, pairs whose texts are identical are positives").

All functions are batched (no Python loops over pairs), numerically stable (``log_softmax`` / ``logsigmoid``) and
raise :class:`~brainalign.errors.BrainAlignError` on bad input (shape mismatch, fewer than 2 samples, NaN/inf).
Half-precision inputs are promoted to float32 inside the losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainalign.errors import BrainAlignError

__all__ = [
    "ClipTemperature",
    "LearnableTemperature",
    "SigmoidTemperatureBias",
    "clip_loss",
    "clip_logits",
    "identical_text_positives",
    "siglip_logits",
    "siglip_loss",
]


# ---------------------------------------------------------------------------------------------------------------
# input checks shared by the objectives (calt.py and fair.py import them)
# ---------------------------------------------------------------------------------------------------------------
def _check_tensor(x: Any, name: str, ndim: int | None = None, finite: bool = True) -> Tensor:
    """A floating-point tensor with ``ndim`` dimensions and (if ``finite``) no NaN/inf."""
    if not isinstance(x, Tensor):
        raise BrainAlignError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise BrainAlignError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise BrainAlignError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if finite and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise BrainAlignError(f"{name} contains {n_bad} NaN or infinite value(s) (shape {tuple(x.shape)})")
    return x


def _as_compute(x: Tensor) -> Tensor:
    """Promote half precision to float32: log-sum-exp and normalisation are not reliable in fp16/bf16."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_pair(img: Any, txt: Any, min_batch: int = 2) -> tuple[Tensor, Tensor]:
    """Two (B, D) embedding batches with the same shape and B >= ``min_batch``."""
    img = _check_tensor(img, "img", ndim=2)
    txt = _check_tensor(txt, "txt", ndim=2)
    if img.shape != txt.shape:
        raise BrainAlignError(
            f"img and txt must have the same shape (B, D), got img {tuple(img.shape)} and txt {tuple(txt.shape)}")
    if img.shape[0] < min_batch:
        raise BrainAlignError(f"a contrastive loss needs a batch of at least {min_batch} pairs, got B={img.shape[0]}")
    if img.shape[1] < 1:
        raise BrainAlignError("embeddings have dimension D=0")
    return img, txt


def _check_scalar(x: Any, name: str, like: Tensor) -> Tensor:
    """A 0-d (or one-element) finite tensor on ``like``'s device; Python numbers are accepted."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        x = torch.tensor(float(x), dtype=like.dtype, device=like.device)
    if not isinstance(x, Tensor):
        raise BrainAlignError(f"{name} must be a scalar tensor or a number, got {type(x).__name__}")
    if x.numel() != 1:
        raise BrainAlignError(f"{name} must be a scalar, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.to(like.dtype)
    if not bool(torch.isfinite(x).all()):
        raise BrainAlignError(f"{name} is not finite ({float(x)})")
    return x.reshape(()).to(device=like.device, dtype=like.dtype)


def _check_positives(positives: Any, n_rows: int, n_cols: int, device: torch.device) -> Tensor:
    """A (n_rows, n_cols) boolean matrix of positives (None -> the diagonal)."""
    if positives is None:
        if n_rows != n_cols:
            raise BrainAlignError(f"default (diagonal) positives need a square problem, got {n_rows} x {n_cols}")
        return torch.eye(n_rows, dtype=torch.bool, device=device)
    if not isinstance(positives, Tensor):
        positives = torch.as_tensor(np.asarray(positives))
    if positives.shape != (n_rows, n_cols):
        raise BrainAlignError(f"positives must have shape ({n_rows}, {n_cols}), got {tuple(positives.shape)}")
    if positives.dtype != torch.bool:
        if positives.is_floating_point() and not bool(torch.isfinite(positives).all()):
            raise BrainAlignError("positives contains NaN or infinite values")
        if not bool(((positives == 0) | (positives == 1)).all()):
            raise BrainAlignError(f"positives must be boolean (or 0/1), got dtype {positives.dtype} with other values")
        positives = positives.bool()
    return positives.to(device)


def _group_codes(groups: Any, n: int, device: torch.device, name: str = "groups") -> Tensor:
    """Integer codes (n,) for a group label per sample: an integer/bool tensor, or any array of labels (str, int)."""
    if isinstance(groups, Tensor):
        if groups.is_floating_point():
            if not bool(torch.isfinite(groups).all()):
                raise BrainAlignError(f"{name} contains NaN or infinite values; code missing values explicitly")
            if not bool((groups == groups.round()).all()):
                raise BrainAlignError(f"{name} must hold integer group codes, got non-integral floats")
            groups = groups.long()
        elif groups.dtype == torch.bool:
            groups = groups.long()
        elif groups.is_complex():
            raise BrainAlignError(f"{name} must hold integer group codes, got dtype {groups.dtype}")
        codes = groups
    else:
        arr = np.asarray(groups)
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all():
                raise BrainAlignError(f"{name} contains NaN or infinite values; code missing values explicitly")
        if arr.dtype.kind == "O" and any(g is None or (isinstance(g, float) and math.isnan(g)) for g in arr.ravel()):
            raise BrainAlignError(f"{name} contains missing values (None/NaN); code them explicitly")
        if arr.ndim != 1:
            raise BrainAlignError(f"{name} must be one-dimensional (B,), got shape {arr.shape}")
        _, inverse = np.unique(arr, return_inverse=True)
        codes = torch.as_tensor(inverse.reshape(-1), dtype=torch.long)
    if codes.ndim != 1 or codes.shape[0] != n:
        raise BrainAlignError(f"{name} must have shape ({n},), got {tuple(codes.shape)}")
    return codes.to(device)


# ---------------------------------------------------------------------------------------------------------------
# logits and losses
# ---------------------------------------------------------------------------------------------------------------
def _cosine_matrix(img: Tensor, txt: Tensor) -> Tensor:
    """(B, B) cosine similarities cos(img_i, txt_j)."""
    return F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T


def clip_logits(img: Tensor, txt: Tensor, logit_scale: Tensor | float) -> Tensor:
    """CLIP logits ``exp(logit_scale) * cos(img_i, txt_j)``.

    Parameters
    ----------
    img, txt : Tensor (B, D)
        Image (brain) and text embeddings; they need not be normalised.
    logit_scale : scalar Tensor or float
        Log of the multiplier (CLIP stores ``log(1/0.07)``).

    Returns
    -------
    Tensor (B, B)
        Row i: image i against every text.
    """
    img, txt = _check_pair(img, txt, min_batch=1)
    return _clip_logits(img, txt, logit_scale)


def _clip_logits(img: Tensor, txt: Tensor, logit_scale: Tensor | float) -> Tensor:
    img, txt = _as_compute(img), _as_compute(txt)
    scale = _check_scalar(logit_scale, "logit_scale", img).exp()
    return scale * _cosine_matrix(img, txt)


def _multi_positive_nll(logits: Tensor, positives: Tensor) -> Tensor:
    """Mean over rows of the average negative log-softmax over each row's positives."""
    n_pos = positives.sum(dim=1)
    if not bool((n_pos > 0).all()):
        rows = torch.nonzero(n_pos == 0).flatten().tolist()
        raise BrainAlignError(f"every row and column of positives needs at least one positive; none in {rows[:10]}")
    logp = F.log_softmax(logits, dim=1)
    # masked_fill, not multiplication: a -inf log-probability off the positives must not give 0 * inf = NaN
    per_row = -logp.masked_fill(~positives, 0.0).sum(dim=1) / n_pos
    return per_row.mean()


def clip_loss(img: Tensor, txt: Tensor, logit_scale: Tensor | float, positives: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE (CLIP) loss on L2-normalised embeddings.

    With logits ``L = exp(logit_scale) * cos(img_i, txt_j)`` and a positive set ``P_i`` per row,

    ``loss = ½ [ mean_i ( -1/|P_i| Σ_{j∈P_i} log softmax_j L_ij )
    + mean_j ( -1/|Pᵀ_j| Σ_{i∈Pᵀ_j} log softmax_i L_ij ) ]``.

    With the default (diagonal) positives this is exactly open_clip's ``ClipLoss``:
    ``(CE(L, arange) + CE(Lᵀ, arange)) / 2``.  With several positives per row (e.g., identical texts, see
    :func:`identical_text_positives`) it is the *multi-positive* form that averages the log-likelihood over the
    positives (as in SupCon's "L_out"); identical duplicates then share the probability mass instead of being
    pushed apart as negatives.

    Parameters
    ----------
    img, txt : Tensor (B, D)
        Paired embeddings (row i of ``img`` matches row i of ``txt``); normalised inside.  B >= 2.
    logit_scale : scalar Tensor or float
        Log of the temperature multiplier (learnable; see :class:`ClipTemperature`).  Not clamped here.
    positives : Tensor (B, B) of bool, optional
        ``positives[i, j]`` marks text j as a positive for image i.  Default: the diagonal.  Every row and every
        column must hold at least one positive.

    Returns
    -------
    Tensor, scalar
    """
    img, txt = _check_pair(img, txt)
    pos = _check_positives(positives, img.shape[0], txt.shape[0], img.device)
    logits = _clip_logits(img, txt, logit_scale)
    return 0.5 * (_multi_positive_nll(logits, pos) + _multi_positive_nll(logits.T, pos.T))


def siglip_logits(img: Tensor, txt: Tensor, log_t: Tensor | float, b: Tensor | float) -> Tensor:
    """SigLIP logits ``z_ij = exp(log_t) * cos(img_i, txt_j) + b``.

    Parameters
    ----------
    img, txt : Tensor (B, D)
    log_t, b : scalar Tensor or float
        Log temperature and bias (see :class:`SigmoidTemperatureBias`).

    Returns
    -------
    Tensor (B, B)
    """
    img, txt = _check_pair(img, txt, min_batch=1)
    return _siglip_logits(img, txt, log_t, b)


def _siglip_logits(img: Tensor, txt: Tensor, log_t: Tensor | float, b: Tensor | float) -> Tensor:
    img, txt = _as_compute(img), _as_compute(txt)
    t = _check_scalar(log_t, "log_t", img).exp()
    return t * _cosine_matrix(img, txt) + _check_scalar(b, "b", img)


def siglip_loss(img: Tensor, txt: Tensor, log_t: Tensor | float, b: Tensor | float,
                positives: Tensor | None = None) -> Tensor:
    """SigLIP pairwise sigmoid loss.

    ``z_ij = exp(log_t) · cos(img_i, txt_j) + b``, ``y_ij = +1`` on positives (default: the diagonal) else ``-1``,

    ``loss = -(1/B) Σ_{i,j} log σ(y_ij z_ij)``

    (a sum over all B² pairs divided by B, as in SigLIP and open_clip's ``SigLipLoss``, not a mean over pairs).

    Parameters
    ----------
    img, txt : Tensor (B, D)
        Paired embeddings; normalised inside.  B >= 2.
    log_t, b : scalar Tensor or float
        Log temperature (SigLIP init ``log 10``) and bias (init ``-10``).
    positives : Tensor (B, B) of bool, optional
        Pairs labelled +1 (default: the diagonal).  Use :func:`identical_text_positives` for templated text.

    Returns
    -------
    Tensor, scalar
    """
    img, txt = _check_pair(img, txt)
    pos = _check_positives(positives, img.shape[0], txt.shape[0], img.device)
    z = _siglip_logits(img, txt, log_t, b)
    y = pos.to(z.dtype) * 2.0 - 1.0
    return -F.logsigmoid(y * z).sum() / img.shape[0]


def identical_text_positives(texts: Sequence[str], device: torch.device | str | None = None) -> Tensor:
    """Positives matrix marking pairs whose texts are identical.

    Templated phenotype text repeats ("diagnostic group: control, sex: male, ..."), so two scans with the same
    string are positives of each other (METHODS §1 decision for ``L_global``).  The diagonal is always True.

    Parameters
    ----------
    texts : sequence of str, length B
    device : torch device, optional

    Returns
    -------
    Tensor (B, B) of bool
        ``out[i, j] = texts[i] == texts[j]`` (exact string equality).
    """
    if isinstance(texts, (str, bytes)) or not hasattr(texts, "__iter__"):
        raise BrainAlignError(f"texts must be a sequence of strings, got {type(texts).__name__}")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise BrainAlignError(f"texts must all be strings; entries {bad[:10]} are not "
                              f"(first: {type(texts[bad[0]]).__name__})")
    index: dict[str, int] = {}
    codes = torch.tensor([index.setdefault(t, len(index)) for t in texts], dtype=torch.long, device=device)
    return codes[:, None] == codes[None, :]


# ---------------------------------------------------------------------------------------------------------------
# learnable temperatures
# ---------------------------------------------------------------------------------------------------------------
class LearnableTemperature(nn.Module):
    """Base class of the learnable temperature holders (parameters are stored in log space)."""


class ClipTemperature(LearnableTemperature):
    """CLIP's learnable logit scale, stored as ``log scale`` and clamped at use.

    Parameters
    ----------
    init : float, default 1/0.07
        Initial multiplier (CLIP's ``1 / 0.07 ≈ 14.3``).
    max_scale : float, default 100
        The multiplier is clamped to at most this value at use (CLIP clamps at 100).  The clamp has zero
        gradient above the bound, as CLIP's in-place clamp effectively does.

    Examples
    --------
    >>> temp = ClipTemperature()
    >>> loss = clip_loss(img, txt, temp())           # doctest: +SKIP
    """

    def __init__(self, init: float = 1 / 0.07, max_scale: float = 100.0):
        super().__init__()
        if not (init > 0 and max_scale > 0 and math.isfinite(init) and math.isfinite(max_scale)):
            raise BrainAlignError(f"init ({init}) and max_scale ({max_scale}) must be positive and finite")
        if init > max_scale:
            raise BrainAlignError(f"init ({init}) exceeds max_scale ({max_scale})")
        self.max_scale = float(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init)))

    def forward(self) -> Tensor:
        """The clamped log scale (scalar), to pass as ``logit_scale`` to :func:`clip_loss`."""
        return self.log_scale.clamp(max=math.log(self.max_scale))

    @property
    def scale(self) -> float:
        """The current (clamped) multiplier."""
        return float(self().detach().exp())

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, max_scale={self.max_scale:g}"


class SigmoidTemperatureBias(LearnableTemperature):
    """SigLIP's learnable temperature and bias: holds ``log t`` and ``b``.

    Parameters
    ----------
    init_t : float, default 10
        Initial temperature t (stored as ``log t``).
    init_b : float, default -10
        Initial bias (strongly negative, because most pairs are negatives).

    Notes
    -----
    Calling the module returns ``(log_t, b)``, two scalar tensors to pass to :func:`siglip_loss` or
    :func:`~brainalign.objectives.calt_loss`.  Neither is clamped (as in SigLIP).
    """

    def __init__(self, init_t: float = 10.0, init_b: float = -10.0):
        super().__init__()
        if not (init_t > 0 and math.isfinite(init_t) and math.isfinite(init_b)):
            raise BrainAlignError(f"init_t ({init_t}) must be positive and finite, init_b ({init_b}) finite")
        self.log_t = nn.Parameter(torch.tensor(math.log(init_t)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def forward(self) -> tuple[Tensor, Tensor]:
        """``(log_t, b)``, both scalar tensors."""
        return self.log_t, self.b

    def extra_repr(self) -> str:
        return f"t={float(self.log_t.exp()):.4g}, b={float(self.b):.4g}"
