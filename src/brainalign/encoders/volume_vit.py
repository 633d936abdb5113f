"""3-D patch Vision Transformer over whole-brain volumes (METHODS §4, "Encoder").

A volume (X, Y, Z) — MNI152 2 mm is (91, 109, 91) — is zero-padded at the far end of each axis to a multiple of
the patch size ``p`` and cut into non-overlapping ``p³`` patches.  Patches holding no in-mask voxel are dropped; the
indices of the kept patches are fixed by the mask when the encoder is built and stored as a buffer, so a checkpoint
carries them.  Each kept patch is flattened and linearly embedded, a learnable CLS token is prepended, one learned
position per token is added, pre-norm transformer blocks follow, and the CLS output is projected to ``embed_dim``.

For attribution methods the forward pass is split into three public steps that can be called separately:
:meth:`VolumeViT.tokenize` (input → tokens), :meth:`VolumeViT.run_blocks` (any range of blocks, optionally returning
every block's output and attention weights) and :meth:`VolumeViT.head` (tokens → embedding).  An information
bottleneck at block k is ``head(run_blocks(bottleneck(run_blocks(tokenize(x), 0, k)), k))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from brainalign.errors import BrainAlignError

__all__ = ["PerPatchLinear", "VolumeViT", "VolumeViTOutput", "kept_patch_indices", "patch_grid"]


def patch_grid(shape: Sequence[int], patch_size: int) -> tuple[int, int, int]:
    """Patches per axis after padding ``shape`` (X, Y, Z) up to a multiple of ``patch_size``."""
    return tuple(int(-(-s // patch_size)) for s in shape)  # ceil division


def kept_patch_indices(mask: np.ndarray, patch_size: int) -> np.ndarray:
    """Flat indices (row-major over the patch grid) of the patches holding at least one in-mask voxel.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
    patch_size : int

    Returns
    -------
    ndarray of int64, shape (K,)
        Sorted indices into the ``gx·gy·gz`` patch grid of :func:`patch_grid`.
    """
    grid = patch_grid(mask.shape, patch_size)
    padded = np.zeros([g * patch_size for g in grid], dtype=bool)
    padded[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    p = patch_size
    blocks = padded.reshape(grid[0], p, grid[1], p, grid[2], p).any(axis=(1, 3, 5))
    return np.flatnonzero(blocks.ravel()).astype(np.int64)


def _patch_gather_index(mask: np.ndarray, patch_size: int, kept: np.ndarray) -> np.ndarray:
    """(K·p³,) int64: for each voxel of each kept patch, its column in ``volume[mask]``, or V (a zero slot)."""
    p = patch_size
    grid = patch_grid(mask.shape, p)
    column = np.full([g * p for g in grid], int(mask.sum()), dtype=np.int64)
    column[: mask.shape[0], : mask.shape[1], : mask.shape[2]][mask] = np.arange(int(mask.sum()))
    blocks = column.reshape(grid[0], p, grid[1], p, grid[2], p).transpose(0, 2, 4, 1, 3, 5).reshape(-1, p ** 3)
    return np.ascontiguousarray(blocks[kept].reshape(-1))


@dataclass
class VolumeViTOutput:
    """What :meth:`VolumeViT.forward` returns with ``return_tokens`` or ``return_attention``.

    Attributes
    ----------
    embedding : Tensor (B, embed_dim)
        Projected CLS output.
    tokens : Tensor (B, 1 + K, width)
        Final tokens (after the last block, before the final norm); token 0 is CLS, token k ≥ 1 is kept patch k-1.
    block_outputs : list of Tensor (B, 1 + K, width)
        Output of every block, in order (empty unless ``return_tokens``).
    attentions : list of Tensor (B, heads, 1 + K, 1 + K)
        Softmax attention weights of every block (empty unless ``return_attention``).
    """

    embedding: Tensor
    tokens: Tensor
    block_outputs: list[Tensor] = field(default_factory=list)
    attentions: list[Tensor] = field(default_factory=list)


class PerPatchLinear(nn.Module):
    """One linear map per kept patch (untied patch embedding): (B, K, p³) → (B, K, width).

    Brain patches are not translation-equivalent (each location holds different areas), so a single embedding
    shared by every patch superimposes ("folds") all patches onto one p³ filter: with uniform attention the pooled
    token is ``W · Σ_k x_k`` and a few informative patches drown in hundreds of noise patches.  Separate weights per
    patch make the pooled token a full linear read-out of the brain, as the first layer of MindEye's MLP.

    Parameters
    ----------
    n_patches, patch_voxels, width : int
        K, p³ and the token size.  Weights (K, p³, width) are drawn as those of *one* ``nn.Linear`` over the
        whole brain (uniform, bound 1/√(K·p³)) and biases (K, width) start at 0: most patches carry only noise,
        and with the per-patch bound 1/√p³ their random initial features swamped the few informative ones
        (simulated benchmark, 12 epochs, two runs: brain→image R@5 36 % → 43–60 %, image→brain R@1
        29.5 % → 39.5–42.5 %; BENCHMARKS.md).
    """

    def __init__(self, n_patches: int, patch_voxels: int, width: int):
        super().__init__()
        bound = 1.0 / float(np.sqrt(n_patches * patch_voxels))
        self.weight = nn.Parameter(torch.empty(n_patches, patch_voxels, width).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(n_patches, width))

    def forward(self, patches: Tensor) -> Tensor:
        return torch.einsum("bkp,kpw->bkw", patches, self.weight) + self.bias


class _Block(nn.Module):
    """Pre-norm transformer block whose attention weights can be returned (for rollout / Chefer relevance).

    With ``layer_scale`` > 0 each branch's output is multiplied by a learnable per-channel scale starting at that
    value (LayerScale, Touvron et al. 2021, "Going deeper with image transformers"), so the block starts close to
    the identity."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float, layer_scale: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(round(width * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, width),
                                 nn.Dropout(dropout))
        scales = [nn.Parameter(torch.full((width,), float(layer_scale))) for _ in range(2)] if layer_scale else []
        self.layer_scales = nn.ParameterList(scales)

    def forward(self, x: Tensor, need_weights: bool = False) -> tuple[Tensor, Tensor | None]:
        h = self.norm1(x)
        a, w = self.attn(h, h, h, need_weights=need_weights, average_attn_weights=False)
        x = x + (self.layer_scales[0] * a if self.layer_scales else a)
        m = self.mlp(self.norm2(x))
        return x + (self.layer_scales[1] * m if self.layer_scales else m), w


class VolumeViT(nn.Module):
    """3-D patch ViT: volume or masked voxel vector → embedding.

    Parameters
    ----------
    mask : ndarray or Tensor of bool, shape (X, Y, Z)
        Brain (or region) mask.  Voxels outside it are ignored (set to 0); patches without any in-mask voxel are
        dropped.  Masked-vector inputs follow the mask's C-order (``volume[mask]``).
    embed_dim : int
        Output size (the target embedding size, e.g. 1024 for CLIP ViT-H/14).
    patch_size : int, default 14
        Edge of the cubic patches, in voxels (14 voxels = 28 mm at 2 mm).
    width, depth, heads : int
        Token size, number of transformer blocks, attention heads (``width`` must be divisible by ``heads``).
    mlp_ratio : float
        Hidden size of the block MLP as a multiple of ``width``.
    dropout : float
    patch_dropout : float
        Fraction of patch tokens dropped at random (per sample) in training mode, as in FLIP; a regulariser that
        also speeds training.  All tokens are used in eval mode.
    patch_embedding : {"shared", "per_patch"}
        ``"shared"`` (ViT's usual single ``nn.Linear(p³, width)``) or ``"per_patch"`` (:class:`PerPatchLinear`,
        one map per kept patch: K·p³·width weights, about V·width).  The shared embedding folds every patch onto
        one filter.  Default ``"shared"`` (the paper's); on the simulated 1000-volume benchmark (800 training
        volumes, 12 epochs) ``"per_patch"`` with ``pool="mean"`` reached brain→image R@1 15 % among 100
        held-out stimuli where ``"shared"`` with CLS stayed at 2.5 % (chance 1 %; BENCHMARKS.md).
    pool : {"cls", "mean"}
        Read the embedding from the CLS token (ViT) or from the mean of the patch tokens (global average pooling).
    layer_scale : float
        Initial LayerScale of every block's two branches (0 = off, the paper's plain blocks).  Each pre-norm block
        normalises every token, noise-only patches included, to unit scale before its attention and MLP, and adds
        the result back to all tokens; with a small start value the blocks begin as the identity and the encoder as
        the patch embedding's linear read-out (BENCHMARKS.md).

    Attributes
    ----------
    kept_patches : buffer (K,) int64
        Indices of the kept patches in the padded patch grid.
    voxel_index : buffer (V,) int64
        Flat indices of the in-mask voxels in the (X·Y·Z) grid, to scatter masked vectors back.
    """

    def __init__(self, mask: np.ndarray | Tensor, embed_dim: int, patch_size: int = 14, width: int = 256,
                 depth: int = 12, heads: int = 8, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 patch_dropout: float = 0.0, patch_embedding: str = "shared", pool: str = "cls",
                 layer_scale: float = 0.0):
        super().__init__()
        mask_np = mask.detach().cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
        if mask_np.ndim != 3:
            raise BrainAlignError(f"mask must be a 3-D (X, Y, Z) array, got shape {mask_np.shape}")
        mask_np = mask_np.astype(bool)
        if not mask_np.any():
            raise BrainAlignError("mask holds no in-mask voxel")
        problems = []
        if patch_size < 1:
            problems.append(f"patch_size must be >= 1, got {patch_size}")
        if width < 1 or heads < 1 or width % heads:
            problems.append(f"width ({width}) must be a positive multiple of heads ({heads})")
        if not 0 <= patch_dropout < 1:
            problems.append(f"patch_dropout must be in [0, 1), got {patch_dropout}")
        if patch_embedding not in ("shared", "per_patch"):
            problems.append(f"patch_embedding must be 'shared' or 'per_patch', got {patch_embedding!r}")
        if pool not in ("cls", "mean"):
            problems.append(f"pool must be 'cls' or 'mean', got {pool!r}")
        if not layer_scale >= 0:
            problems.append(f"layer_scale must be >= 0, got {layer_scale}")
        if depth < 0 or embed_dim < 1:
            problems.append(f"depth ({depth}) must be >= 0 and embed_dim ({embed_dim}) >= 1")
        if problems:
            raise BrainAlignError("VolumeViT: " + "; ".join(problems))
        self.volume_shape = tuple(int(s) for s in mask_np.shape)
        self.patch_size = int(patch_size)
        self.grid = patch_grid(self.volume_shape, self.patch_size)
        kept = kept_patch_indices(mask_np, self.patch_size)
        self.register_buffer("mask", torch.from_numpy(mask_np), persistent=True)
        self.register_buffer("kept_patches", torch.from_numpy(kept), persistent=True)
        self.register_buffer("voxel_index", torch.from_numpy(np.flatnonzero(mask_np.ravel()).astype(np.int64)),
                             persistent=True)
        self.register_buffer("patch_gather", torch.from_numpy(_patch_gather_index(mask_np, self.patch_size, kept)),
                             persistent=False)
        self.embed_dim, self.width, self.depth, self.heads = int(embed_dim), int(width), int(depth), int(heads)
        self.patch_dropout = float(patch_dropout)
        self.patch_embedding, self.pool = str(patch_embedding), str(pool)
        self.patch_embed = (nn.Linear(self.patch_size ** 3, width) if patch_embedding == "shared"
                            else PerPatchLinear(len(kept), self.patch_size ** 3, width))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.positions = nn.Parameter(torch.zeros(1, 1 + len(kept), width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.positions, std=0.02)
        self.blocks = nn.ModuleList(_Block(width, heads, mlp_ratio, dropout, layer_scale) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)

    @property
    def n_patches(self) -> int:
        """K, the number of kept patches."""
        return int(self.kept_patches.numel())

    @property
    def n_voxels(self) -> int:
        """V, the number of in-mask voxels (length of a masked-vector input)."""
        return int(self.voxel_index.numel())

    # ------------------------------------------------------------------------------------------------------
    # input → volume → patches → tokens
    def to_volume(self, x: Tensor) -> Tensor:
        """(B, X, Y, Z) volumes or (B, V) masked vectors → (B, X, Y, Z) volumes, zero outside the mask."""
        vec = self.masked_vector(x)
        flat = vec.new_zeros(vec.shape[0], int(np.prod(self.volume_shape)))
        flat[:, self.voxel_index] = vec
        return flat.reshape(vec.shape[0], *self.volume_shape)

    def masked_vector(self, x: Tensor) -> Tensor:
        """(B, X, Y, Z) volumes or (B, V) masked vectors → (B, V) in-mask values (checked finite)."""
        if not isinstance(x, Tensor):
            x = torch.as_tensor(np.asarray(x))
        if not x.is_floating_point():
            x = x.float()
        if x.ndim == 4:
            if tuple(x.shape[1:]) != self.volume_shape:
                raise BrainAlignError(f"volumes must have shape (B, {', '.join(map(str, self.volume_shape))}), "
                                      f"got {tuple(x.shape)}")
            x = x.reshape(x.shape[0], -1).index_select(1, self.voxel_index)
        elif x.ndim != 2:
            raise BrainAlignError(f"input must be (B, X, Y, Z) volumes or (B, V) masked vectors, got shape "
                                  f"{tuple(x.shape)}")
        elif x.shape[1] != self.n_voxels:
            raise BrainAlignError(f"masked input has {x.shape[1]} voxels per scan, but the encoder's mask has "
                                  f"{self.n_voxels}")
        if not bool(torch.isfinite(x).all()):
            raise BrainAlignError(f"input contains {int((~torch.isfinite(x)).sum())} NaN or infinite in-mask "
                                  "value(s); fill or exclude those scans first")
        return x

    def patches(self, x: Tensor) -> Tensor:
        """(B, X, Y, Z) or (B, V) input → (B, K, p³) flattened kept patches (voxel order z fastest).

        One gather from the masked vector (plus a zero slot for padding and out-of-mask voxels) through the fixed
        ``patch_gather`` index, instead of rebuilding the padded grid: the cost scales with the kept patches.
        """
        vec = self.masked_vector(x)
        vec = torch.cat([vec, vec.new_zeros(vec.shape[0], 1)], dim=1)
        return vec[:, self.patch_gather].reshape(vec.shape[0], self.n_patches, self.patch_size ** 3)

    def tokenize(self, x: Tensor) -> Tensor:
        """Input → (B, 1 + K, width) tokens (CLS first) with positions added, before any block.

        In training mode with ``patch_dropout`` > 0, only a random ``K' = round(K·(1 - patch_dropout))`` patch
        tokens per sample are returned: (B, 1 + K', width).
        """
        emb = self.patch_embed(self.patches(x)) + self.positions[:, 1:]
        cls = (self.cls_token + self.positions[:, :1]).expand(emb.shape[0], -1, -1)
        if self.training and self.patch_dropout > 0:
            n_keep = max(1, int(round(emb.shape[1] * (1 - self.patch_dropout))))
            keep = torch.rand(emb.shape[0], emb.shape[1], device=emb.device).argsort(dim=1)[:, :n_keep]
            emb = emb.gather(1, keep[:, :, None].expand(-1, -1, emb.shape[2]))
        return torch.cat([cls, emb], dim=1)

    def run_blocks(self, tokens: Tensor, start: int = 0, stop: int | None = None, return_tokens: bool = False,
                   return_attention: bool = False) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Apply blocks ``start..stop-1`` to ``tokens`` (B, 1 + K, width).

        Returns
        -------
        tokens : Tensor (B, 1 + K, width)
        block_outputs : list of Tensor (empty unless ``return_tokens``)
        attentions : list of Tensor (B, heads, 1 + K, 1 + K) (empty unless ``return_attention``)
        """
        outputs, attentions = [], []
        for block in self.blocks[start:stop]:
            tokens, w = block(tokens, need_weights=return_attention)
            if return_tokens:
                outputs.append(tokens)
            if return_attention:
                attentions.append(w)
        return tokens, outputs, attentions

    def head(self, tokens: Tensor) -> Tensor:
        """(B, 1 + K, width) tokens → (B, embed_dim): final norm of the CLS token (``pool="cls"``) or of the mean
        patch token (``pool="mean"``), then the projection."""
        pooled = tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)
        return self.proj(self.norm(pooled))

    def forward(self, x: Tensor, return_tokens: bool = False,
                return_attention: bool = False) -> Tensor | VolumeViTOutput:
        """Embed a batch.

        Parameters
        ----------
        x : Tensor (B, X, Y, Z) or (B, V)
            z-scored volumes on the mask's grid, or masked voxel vectors (``volume[mask]`` order).
        return_tokens, return_attention : bool
            Return a :class:`VolumeViTOutput` with every block's output and/or attention weights.

        Returns
        -------
        Tensor (B, embed_dim), or VolumeViTOutput when either flag is set.
        """
        tokens, outputs, attentions = self.run_blocks(self.tokenize(x), return_tokens=return_tokens,
                                                      return_attention=return_attention)
        embedding = self.head(tokens)
        if return_tokens or return_attention:
            return VolumeViTOutput(embedding, tokens, outputs, attentions)
        return embedding

    def patch_to_volume(self, values: Tensor) -> Tensor:
        """Spread per-patch values (B, K) back to voxels: (B, X, Y, Z), zero outside the mask.

        Used to map patch attributions (IB-BA λ, relevance of patch tokens) onto the brain.
        """
        if values.ndim != 2 or values.shape[1] != self.n_patches:
            raise BrainAlignError(f"patch values must have shape (B, {self.n_patches}), got {tuple(values.shape)}")
        p, (gx, gy, gz) = self.patch_size, self.grid
        b = values.shape[0]
        grid = values.new_zeros(b, gx * gy * gz).index_copy(1, self.kept_patches, values)
        vol = grid.reshape(b, gx, gy, gz)[:, :, None, :, None, :, None].expand(b, gx, p, gy, p, gz, p)
        vol = vol.reshape(b, gx * p, gy * p, gz * p)[:, : self.volume_shape[0], : self.volume_shape[1],
                                                         : self.volume_shape[2]]
        return vol * self.mask.to(vol.dtype)
