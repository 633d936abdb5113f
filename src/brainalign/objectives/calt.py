"""NeuroLIP's local objectives: token-conditioned attention (TTCA), the CALT loss, attention disentanglement and
the total loss with the negative gradient for sensitive attributes (METHODS §1).

Notation (METHODS §1): B scans per batch, M local image tokens (cluster tokens), N ROIs, S text tokens, D width.
``v_{i|j}`` is image i represented as seen by token s of text j (the TTCA output for that query token);
``t_{j,s}`` is that text token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainalign.errors import BrainAlignError
from brainalign.objectives.contrastive import _as_compute, _check_scalar, _check_tensor, _group_codes

__all__ = [
    "TokenConditionedAttention",
    "attention_distance",
    "calt_confusion",
    "calt_logits",
    "calt_loss",
    "neurolip_total_loss",
    "token_node_attention",
]


class TokenConditionedAttention(nn.Module):
    """Token-conditioned cross-attention (TTCA): text tokens query the image tokens plus a learnable *empty* token.

    One multi-head attention layer with explicit ``q/k/v/out`` projections.  Keys and values are the M local image
    tokens followed by one learnable empty token (shared by all images), so a text token can attend to "nothing"
    (column ``M`` of the attention).  Two forward paths share the weights:

    * :meth:`forward` — every text attends to *its own* image: ``(B, S, D) x (B, M, D) -> (B, S, D)``;
    * :meth:`pairwise` — every query token attends to *every* image: ``(Bq, D) x (Bi, M, D) -> (Bi, Bq, D)``,
      the ``v_{i|j}`` needed by the CALT loss, without Python loops.

    Parameters
    ----------
    dim : int
        Token width D (text and image tokens must share it).
    n_heads : int
        Number of heads; must divide ``dim``.
    dropout : float, default 0
        Dropout on the attention probabilities before they mix the values (as ``nn.MultiheadAttention``).
        The returned attention maps are taken *before* dropout, so their rows always sum to 1.

    Attributes
    ----------
    q_proj, k_proj, v_proj, out_proj : nn.Linear (D -> D)
    empty_token : nn.Parameter (1, D)
        The learnable empty key/value token (before the k/v projections).
    """

    def __init__(self, dim: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if dim < 1 or n_heads < 1 or dim % n_heads:
            raise BrainAlignError(f"dim ({dim}) must be a positive multiple of n_heads ({n_heads})")
        if not 0.0 <= dropout < 1.0:
            raise BrainAlignError(f"dropout must be in [0, 1), got {dropout}")
        self.dim, self.n_heads, self.head_dim = dim, n_heads, dim // n_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.empty_token = nn.Parameter(torch.empty(1, dim))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.trunc_normal_(self.empty_token, std=0.02)

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _check_images(self, image_tokens: Tensor) -> None:
        _check_tensor(image_tokens, "image_tokens", ndim=3, finite=False)
        if image_tokens.shape[-1] != self.dim:
            raise BrainAlignError(f"image_tokens must have width {self.dim}, got shape {tuple(image_tokens.shape)}")
        if image_tokens.shape[0] < 1:
            raise BrainAlignError("image_tokens holds no image (Bi=0)")

    def _keys_values(self, image_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values (Bi, M+1, H, Dh) of the image tokens with the empty token appended last."""
        bi = image_tokens.shape[0]
        empty = self.empty_token.to(image_tokens.dtype).expand(bi, 1, self.dim)
        kv_in = torch.cat([image_tokens, empty], dim=1)
        shape = (bi, kv_in.shape[1], self.n_heads, self.head_dim)
        return self.k_proj(kv_in).view(shape), self.v_proj(kv_in).view(shape)

    # -- paths ------------------------------------------------------------------------------------------------------
    def forward(self, text_tokens: Tensor, image_tokens: Tensor, text_mask: Tensor | None = None,
                average_heads: bool = True) -> tuple[Tensor, Tensor]:
        """Each text attends to its own image.

        Parameters
        ----------
        text_tokens : Tensor (B, S, D)
            Queries (local text tokens, projected to width D).
        image_tokens : Tensor (B, M, D)
            Keys/values (local image tokens); the empty token is appended inside.
        text_mask : Tensor (B, S) of bool, optional
            True for real tokens.  Padded query positions get a zero output and a zero attention row
            (no key mask is needed: every image has its M tokens).
        average_heads : bool, default True
            Return the heads-averaged attention (else per head).

        Returns
        -------
        out : Tensor (B, S, D)
            ``v_ttca``: the image as seen by each text token.
        attn : Tensor (B, S, M+1), or (B, H, S, M+1) when ``average_heads=False``
            Attention probabilities before dropout; column M is the empty token.  Rows sum to 1 (0 where masked).
        """
        _check_tensor(text_tokens, "text_tokens", ndim=3, finite=False)
        self._check_images(image_tokens)
        b, s, d = text_tokens.shape
        if d != self.dim:
            raise BrainAlignError(f"text_tokens must have width {self.dim}, got shape {tuple(text_tokens.shape)}")
        if image_tokens.shape[0] != b:
            raise BrainAlignError(f"text_tokens ({b}) and image_tokens ({image_tokens.shape[0]}) must share the "
                                  "batch size; use pairwise() for every text against every image")
        if text_mask is not None:
            if not isinstance(text_mask, Tensor) or text_mask.shape != (b, s):
                raise BrainAlignError(f"text_mask must be a tensor of shape ({b}, {s}), got "
                                      f"{getattr(text_mask, 'shape', type(text_mask).__name__)}")
            text_mask = text_mask.to(device=text_tokens.device, dtype=torch.bool)
        q = self.q_proj(text_tokens).view(b, s, self.n_heads, self.head_dim)
        k, v = self._keys_values(image_tokens)
        scores = torch.einsum("bshd,bmhd->bhsm", q, k) / math.sqrt(self.head_dim)
        attn = scores.softmax(dim=-1)                                              # (B, H, S, M+1)
        out = torch.einsum("bhsm,bmhd->bshd", self.dropout(attn), v).reshape(b, s, d)
        out = self.out_proj(out)
        if text_mask is not None:
            out = out * text_mask[..., None].to(out.dtype)
            attn = attn * text_mask[:, None, :, None].to(attn.dtype)
        return out, attn.mean(dim=1) if average_heads else attn

    def pairwise(self, query: Tensor, image_tokens: Tensor,
                 average_heads: bool = True) -> tuple[Tensor, Tensor]:
        """Every query token attends over every image's tokens plus the empty token: ``v_{i|j}``.

        Memory is O(Bi · Bq · (M+1) · H) for the attention and O(Bi · Bq · D) for the output; projections are
        computed once per query and once per image.

        Parameters
        ----------
        query : Tensor (Bq, D)
            One token per text (e.g., text j's pooled attribute-value token ``t_{j,s}``).
        image_tokens : Tensor (Bi, M, D)
        average_heads : bool, default True

        Returns
        -------
        out : Tensor (Bi, Bq, D)
            ``out[i, j] = v_{i|j}``: image i as seen by query j.  ``out[i, i]`` equals
            ``forward(query[:, None], image_tokens)[0][i, 0]``.
        attn : Tensor (Bi, Bq, M+1), or (Bi, H, Bq, M+1) when ``average_heads=False``
            Before dropout; column M is the empty token.
        """
        _check_tensor(query, "query", ndim=2, finite=False)
        self._check_images(image_tokens)
        if query.shape[1] != self.dim:
            raise BrainAlignError(f"query must have width {self.dim}, got shape {tuple(query.shape)}")
        bq, bi = query.shape[0], image_tokens.shape[0]
        q = self.q_proj(query).view(bq, self.n_heads, self.head_dim)
        k, v = self._keys_values(image_tokens)
        scores = torch.einsum("qhd,imhd->ihqm", q, k) / math.sqrt(self.head_dim)
        attn = scores.softmax(dim=-1)                                              # (Bi, H, Bq, M+1)
        out = torch.einsum("ihqm,imhd->iqhd", self.dropout(attn), v).reshape(bi, bq, self.dim)
        return self.out_proj(out), attn.mean(dim=1) if average_heads else attn

    def extra_repr(self) -> str:
        return f"dim={self.dim}, n_heads={self.n_heads}, dropout={self.dropout.p}"


def token_node_attention(attn_ttca: Tensor, attn_mhsa: Tensor) -> Tensor:
    """Token→node (ROI) attention ``A = A_ttca[:, :, :M] @ A_mhsa``.

    The empty-token column is dropped, so each row sums to ``1 - attn_ttca[..., M]`` ≤ 1 when the rows of both
    inputs are probability vectors.  Row ``A[b, s]`` is the brain map of text token s for scan b.

    Parameters
    ----------
    attn_ttca : Tensor (B, S, M+1)
        Heads-averaged TTCA attention (:meth:`TokenConditionedAttention.forward`).  The pairwise attention
        (Bi, Bq, M+1) works too: the result is then (Bi, Bq, N), the map of query j on image i.
    attn_mhsa : Tensor (B, M, N)
        Heads-averaged attention of the M cluster tokens over the N node embeddings.

    Returns
    -------
    Tensor (B, S, N)
    """
    _check_tensor(attn_ttca, "attn_ttca", ndim=3, finite=False)
    _check_tensor(attn_mhsa, "attn_mhsa", ndim=3, finite=False)
    b, _, m1 = attn_ttca.shape
    if attn_mhsa.shape[0] != b or attn_mhsa.shape[1] != m1 - 1:
        raise BrainAlignError(f"attn_ttca {tuple(attn_ttca.shape)} must be (B, S, M+1) and attn_mhsa "
                              f"{tuple(attn_mhsa.shape)} (B, M, N) with the same B and M")
    return attn_ttca[..., :-1] @ attn_mhsa


def _joint_codes(groups, text_groups, bi: int, bq: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Codes for image and text labels such that equal labels get equal codes."""
    if isinstance(groups, Tensor) and isinstance(text_groups, Tensor):
        return (_group_codes(groups, bi, device), _group_codes(text_groups, bq, device, name="text_groups"))
    gi = np.asarray(groups.cpu() if isinstance(groups, Tensor) else groups)
    gq = np.asarray(text_groups.cpu() if isinstance(text_groups, Tensor) else text_groups)
    if gi.shape != (bi,) or gq.shape != (bq,):
        raise BrainAlignError(f"groups must have shape ({bi},) and text_groups ({bq},), got {gi.shape} and {gq.shape}")
    joint = _group_codes(np.concatenate([gi, gq]), bi + bq, device)
    return joint[:bi], joint[bi:]


def calt_logits(cond_img: Tensor, attr_token: Tensor, log_t: Tensor | float, b: Tensor | float) -> Tensor:
    """CALT logits ``z_ij = exp(log_t) · cos(v_{i|j}, t_{j,s}) + b``.

    Also the prediction score of image i against text j's attribute token (e.g., one prompt per class:
    softmax over the class axis gives class probabilities, METHODS §1 "Prediction").

    Parameters
    ----------
    cond_img : Tensor (Bi, Bq, D)
        ``v_{i|j}`` from :meth:`TokenConditionedAttention.pairwise`.
    attr_token : Tensor (Bq, D)
        ``t_{j,s}``: the attribute-value token of text j.
    log_t, b : scalar Tensor or float
        Log temperature and bias (:class:`~brainalign.objectives.SigmoidTemperatureBias`).

    Returns
    -------
    Tensor (Bi, Bq)
    """
    cond_img = _check_tensor(cond_img, "cond_img", ndim=3)
    attr_token = _check_tensor(attr_token, "attr_token", ndim=2)
    if cond_img.shape[1:] != attr_token.shape:
        raise BrainAlignError(f"cond_img {tuple(cond_img.shape)} must be (Bi, Bq, D) with attr_token "
                              f"{tuple(attr_token.shape)} (Bq, D)")
    cond_img, attr_token = _as_compute(cond_img), _as_compute(attr_token)
    cos = (F.normalize(cond_img, dim=-1) * F.normalize(attr_token, dim=-1)[None]).sum(dim=-1)
    t = _check_scalar(log_t, "log_t", cos).exp()
    return t * cos + _check_scalar(b, "b", cos)


def calt_loss(cond_img: Tensor, attr_token: Tensor, groups, log_t: Tensor | float, b: Tensor | float,
              text_groups=None) -> Tensor:
    """Contrastive attribute-level token (CALT) loss for one attribute.

    ``z_ij = t · cos(v_{i|j}, t_{j,s}) + b``, ``y_ij = +1`` if ``groups[i] == groups[j]`` (same attribute value)
    else ``-1``, and

    ``L = -(1/Bi) Σ_{i,j} log σ(y_ij z_ij)``

    (SigLIP normalisation: the sum over pairs divided by the number of images).

    Parameters
    ----------
    cond_img : Tensor (Bi, Bq, D)
        ``v_{i|j}``.  Usually Bi = Bq = B (the texts of the same batch).
    attr_token : Tensor (Bq, D)
        ``t_{j,s}``.
    groups : Tensor (Bi,) of int, or array of labels
        Attribute value of each image (any labels; compared for equality).  Missing values must be coded
        explicitly (NaN/None are rejected).
    log_t, b : scalar Tensor or float
    text_groups : Tensor (Bq,) or array of labels, optional
        Attribute value of each text when the texts are not the images' own (e.g., class prompts).  Default:
        ``groups`` (then Bi must equal Bq).  Labels are compared as given, so both must use the same coding.

    Returns
    -------
    Tensor, scalar
    """
    z = calt_logits(cond_img, attr_token, log_t, b)
    bi, bq = z.shape
    if bi < 2:
        raise BrainAlignError(f"calt_loss needs at least 2 images, got Bi={bi}")
    if text_groups is None:
        if bi != bq:
            raise BrainAlignError(f"cond_img is {bi} x {bq}: pass text_groups when the texts are not the "
                                  "images' own")
        gi = _group_codes(groups, bi, z.device)
        gq = gi
    else:
        gi, gq = _joint_codes(groups, text_groups, bi, bq, z.device)
    y = (gi[:, None] == gq[None, :]).to(z.dtype) * 2.0 - 1.0
    return -F.logsigmoid(y * z).sum() / bi


def calt_confusion(cond_img: Tensor, attr_token: Tensor, groups, log_t: Tensor | float,
                   b: Tensor | float) -> Tensor:
    """Confusion alternative to the negated CALT term for a sensitive attribute: ``(z̄_same − z̄_diff)²``.

    ``z̄_same`` / ``z̄_diff`` are the mean CALT logits (:func:`calt_logits`) over the pairs (i, j) whose images
    share / do not share the attribute value.  The term is 0 when the token-conditioned similarity carries no
    information about the attribute on average, and it grows whichever way the two means part.  The paper's
    negative gradient maximises the CALT loss instead, whose maximum is a *reversed* code — same-value pairs
    pushed apart, which encodes the attribute as much as a correct code does.  On the demo cohort (20 epochs)
    NeuroLIP's test AUC was 74 with the paper's term and 80 with this one at lr 3e-4, 52 and 66 at lr 1e-3
    (BENCHMARKS.md).

    Parameters
    ----------
    cond_img : Tensor (B, B, D)
        ``v_{i|j}`` for the batch's own texts.
    attr_token : Tensor (B, D)
    groups : Tensor (B,) of int, or array of labels
    log_t, b : scalar Tensor or float

    Returns
    -------
    Tensor, scalar
        0 when the batch has only one attribute value (nothing to compare).
    """
    z = calt_logits(cond_img, attr_token, log_t, b)
    bi, bq = z.shape
    if bi != bq or bi < 2:
        raise BrainAlignError(f"calt_confusion needs the batch's own texts (B x B, B >= 2), got {bi} x {bq}")
    g = _group_codes(groups, bi, z.device)
    same = (g[:, None] == g[None, :]).to(z.dtype)
    n_same, n_diff = same.sum(), (1 - same).sum()
    if n_diff == 0:
        return z.sum() * 0.0
    gap = (z * same).sum() / n_same - (z * (1 - same)).sum() / n_diff
    return gap.square()


def attention_distance(a_disease: Tensor, a_sensitive: Tensor) -> Tensor:
    """Attention disentanglement ``L_attn``: mean over the batch of ``‖A_disease[b] - A_sensitive[b]‖₂``.

    The rows are the token→node maps (:func:`token_node_attention`) of the disease token and of the sensitive
    attribute's token for the same scan.  NeuroLIP *maximises* it: the total loss subtracts ``β · L_attn``
    (:func:`neurolip_total_loss`).  The gradient at identical rows is 0 (``torch.linalg.vector_norm``).

    Parameters
    ----------
    a_disease, a_sensitive : Tensor (B, N)
        Any leading dimensions are accepted ((..., N)); the mean runs over all of them.

    Returns
    -------
    Tensor, scalar
    """
    a_disease = _check_tensor(a_disease, "a_disease")
    a_sensitive = _check_tensor(a_sensitive, "a_sensitive")
    if a_disease.ndim < 1 or a_disease.shape != a_sensitive.shape:
        raise BrainAlignError(f"a_disease {tuple(a_disease.shape)} and a_sensitive {tuple(a_sensitive.shape)} "
                              "must share the shape (B, N)")
    if a_disease.numel() == 0:
        raise BrainAlignError("attention maps are empty")
    diff = _as_compute(a_disease) - _as_compute(a_sensitive)
    return torch.linalg.vector_norm(diff, dim=-1).mean()


def _check_loss(x, name: str) -> Tensor:
    if not isinstance(x, Tensor) or x.numel() != 1:
        raise BrainAlignError(f"{name} must be a scalar tensor, got "
                              f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if not bool(torch.isfinite(x).all()):
        raise BrainAlignError(f"{name} is not finite ({float(x)})")
    return x.reshape(())


def neurolip_total_loss(global_loss: Tensor, calt_losses: Mapping[str, Tensor], sensitive,
                        attn_distance: Tensor | None = None, beta: float = 1e-3, negative_gradient: bool = True,
                        drop_sensitive: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
    """NeuroLIP's total loss ``L = L_global + Σ_a sign(a) · L_calt_a − β · L_attn``.

    ``sign(a) = −1`` for sensitive attributes when ``negative_gradient`` (their CALT term is *maximised*, so the
    local image tokens stop encoding them), ``+1`` otherwise.  With ``drop_sensitive`` the sensitive CALT terms are
    left out entirely (an ablation); they may then be absent from ``calt_losses``.

    Note that a maximised CALT term is unbounded above (``−log σ(yz)`` grows linearly in ``|z|``); the paper relies
    on β, the learning rate and the bounded cosine (|z| ≤ t + |b|) to keep it in check.

    Parameters
    ----------
    global_loss : Tensor, scalar
        ``L_global`` (SigLIP between the global tokens).
    calt_losses : mapping attribute name -> scalar Tensor
        One CALT loss per attribute (``dx``, ``sex``, ``age``, ``srs``, ...).
    sensitive : set of str
        Names of the sensitive attributes (e.g., ``{"srs"}`` on ABIDE, ``{"sex"}`` on ADHD-200).  Each must be a
        key of ``calt_losses`` unless ``drop_sensitive``.
    attn_distance : Tensor, scalar, optional
        ``L_attn`` (:func:`attention_distance`); None leaves the term out (ablation "w/o L_attn").
    beta : float, default 1e-3
    negative_gradient : bool, default True
        False gives sensitive attributes the sign +1 (ablation "w/o negative gradient").
    drop_sensitive : bool, default False

    Returns
    -------
    total : Tensor, scalar
        Differentiable.
    parts : dict str -> Tensor (detached scalars)
        ``"global"``, ``"calt/<attr>"`` (unsigned values, also for dropped terms when given),
        ``"attn_distance"`` (when given) and ``"total"``.
    """
    if isinstance(sensitive, str):
        sensitive = {sensitive}
    sensitive = set(sensitive)
    if not isinstance(calt_losses, Mapping):
        raise BrainAlignError(f"calt_losses must be a mapping attribute -> loss, got {type(calt_losses).__name__}")
    unknown = sorted(sensitive - set(calt_losses))
    if unknown and not drop_sensitive:
        raise BrainAlignError(f"sensitive attribute(s) {unknown} have no CALT loss; known: {sorted(calt_losses)}")
    if not (beta >= 0 and math.isfinite(beta)):
        raise BrainAlignError(f"beta must be a non-negative number, got {beta}")
    total = _check_loss(global_loss, "global_loss")
    parts = {"global": total.detach()}
    for attr, loss in calt_losses.items():
        loss = _check_loss(loss, f"calt_losses[{attr!r}]")
        parts[f"calt/{attr}"] = loss.detach()
        if attr in sensitive:
            if drop_sensitive:
                continue
            total = total - loss if negative_gradient else total + loss
        else:
            total = total + loss
    if attn_distance is not None:
        attn_distance = _check_loss(attn_distance, "attn_distance")
        parts["attn_distance"] = attn_distance.detach()
        total = total - beta * attn_distance
    parts["total"] = total.detach()
    return total, parts
