"""Temporal-patch transformer: ROI time series → one token per (time patch, ROI) (fMRI-LM stage 1 encoder).

Each ROI's series is cut into non-overlapping patches of P time points along time only, so every ROI is kept:
M = ⌈T / P⌉ · N tokens.  The last patch is zero-padded when P does not divide T (inputs are z-scored per ROI by
the tokenizer, so zero is the series mean); the padded positions are known and ignored by the reconstruction
loss.  Tokens are ordered time-major, ``m = w · N + n`` (patch w, ROI n), the order fMRI-LM's stage 2 predicts
in (all N tokens of step w, then step w + 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainalign.errors import BrainAlignError

__all__ = ["PatchDecoder", "TemporalPatchEncoder", "n_patches", "patchify", "unpatchify"]


def n_patches(n_timepoints: int, patch_len: int) -> int:
    """⌈T / P⌉; a series shorter than one patch is an error (it would be almost all padding)."""
    if n_timepoints < patch_len:
        raise BrainAlignError(f"time series of {n_timepoints} time points is shorter than one patch "
                              f"(patch_len={patch_len}); lower patch_len or use longer scans")
    return math.ceil(n_timepoints / patch_len)


def patchify(x: Tensor, patch_len: int) -> Tensor:
    """Cut (B, T, N) series into (B, W·N, P) patches, time-major, zero-padding the end of the last patch.

    Parameters
    ----------
    x : Tensor (B, T, N)
    patch_len : int
        P, time points per patch.

    Returns
    -------
    Tensor (B, M, P) with M = ⌈T/P⌉ · N; token ``w·N + n`` holds ``x[:, wP:(w+1)P, n]``.
    """
    if x.ndim != 3:
        raise BrainAlignError(f"time series batch must be (B, T, N), got shape {tuple(x.shape)}")
    B, T, N = x.shape
    W = n_patches(T, patch_len)
    x = F.pad(x, (0, 0, 0, W * patch_len - T))                  # (B, W·P, N)
    return x.reshape(B, W, patch_len, N).permute(0, 1, 3, 2).reshape(B, W * N, patch_len)


def unpatchify(patches: Tensor, n_rois: int, n_timepoints: int) -> Tensor:
    """Inverse of :func:`patchify`: (B, W·N, P) → (B, T, N), dropping the padding."""
    B, M, P = patches.shape
    W = M // n_rois
    x = patches.reshape(B, W, n_rois, P).permute(0, 1, 3, 2).reshape(B, W * P, n_rois)
    return x[:, :n_timepoints]


def _transformer(dim: int, depth: int, heads: int, dropout: float) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(dim), enable_nested_tensor=False)


class TemporalPatchEncoder(nn.Module):
    """Patch embedding + learned ROI and patch-position embeddings + transformer encoder.

    Parameters
    ----------
    n_rois : int
        N.
    n_timepoints : int
        T the model is built for (sets the number of patch positions W = ⌈T/P⌉).
    patch_len : int
        P.
    dim : int
        Latent width C.
    depth, heads : int
        Transformer layers and attention heads (``dim % heads == 0``).
    dropout : float

    Shapes
    ------
    forward: (B, T, N) → (B, M, C), M = W · N.
    """

    def __init__(self, n_rois: int, n_timepoints: int, patch_len: int, dim: int = 64, depth: int = 2,
                 heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise BrainAlignError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.n_rois, self.n_timepoints, self.patch_len = n_rois, n_timepoints, patch_len
        self.n_windows = n_patches(n_timepoints, patch_len)
        self.embed = nn.Linear(patch_len, dim)
        self.roi_embedding = nn.Parameter(torch.randn(n_rois, dim) * 0.02)
        self.position_embedding = nn.Parameter(torch.randn(self.n_windows, dim) * 0.02)
        self.transformer = _transformer(dim, depth, heads, dropout)

    @property
    def n_tokens(self) -> int:
        """M = W · N."""
        return self.n_windows * self.n_rois

    def token_embeddings(self) -> Tensor:
        """(M, C) sum of ROI and position embeddings, time-major."""
        return (self.position_embedding[:, None, :] + self.roi_embedding[None, :, :]).reshape(self.n_tokens, -1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3 or x.shape[1:] != (self.n_timepoints, self.n_rois):
            raise BrainAlignError(f"encoder expects (B, {self.n_timepoints}, {self.n_rois}) series, "
                                  f"got {tuple(x.shape)}")
        tokens = self.embed(patchify(x, self.patch_len)) + self.token_embeddings()
        return self.transformer(tokens)


class PatchDecoder(nn.Module):
    """Light decoder: codes (B, M, C) → a small transformer with the same token embeddings → (B, T, N) series.

    Parameters
    ----------
    encoder : TemporalPatchEncoder
        Gives N, T, P and the width C (its ROI/position embeddings are not shared; the decoder has its own).
    depth : int
        Transformer layers (1 keeps it light).
    heads : int
    """

    def __init__(self, encoder: TemporalPatchEncoder, depth: int = 1, heads: int = 4):
        super().__init__()
        dim = encoder.embed.out_features
        self.n_rois, self.n_timepoints, self.patch_len = encoder.n_rois, encoder.n_timepoints, encoder.patch_len
        self.roi_embedding = nn.Parameter(torch.randn(encoder.n_rois, dim) * 0.02)
        self.position_embedding = nn.Parameter(torch.randn(encoder.n_windows, dim) * 0.02)
        self.transformer = _transformer(dim, depth, heads, 0.0)
        self.head = nn.Linear(dim, encoder.patch_len)

    def forward(self, codes: Tensor) -> Tensor:
        pos = (self.position_embedding[:, None, :] + self.roi_embedding[None, :, :]).reshape(-1, codes.shape[-1])
        patches = self.head(self.transformer(codes + pos))
        return unpatchify(patches, self.n_rois, self.n_timepoints)
