"""Vector quantiser with an EMA cosine codebook (the brain-token vocabulary; METHODS §2 stage 1, §3).

One small class, :class:`CosineVectorQuantizer`, wraps ``vector_quantize_pytorch.VectorQuantize`` with the
settings of NeuroLM's ``NormEMAVectorQuantizer``: L2-normalised codes compared by cosine similarity, EMA
codebook updates (decay 0.99), k-means initialisation on the first training batch, dead-code restart (codes
whose EMA cluster size falls below a threshold are replaced by random inputs of the current batch), a
commitment loss and the plain straight-through estimator (no rotation trick).  It adds usage statistics
(fraction of codes used, perplexity) that the tokenizer reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from brainalign.errors import BrainAlignError

__all__ = ["CosineVectorQuantizer", "QuantizerOutput", "code_usage"]


@dataclass
class QuantizerOutput:
    """Result of quantising B × M latents.

    Attributes
    ----------
    quantized : Tensor (B, M, C)
        Unit-norm codes; in training, ``x̂ + (q − x̂).detach()`` (straight-through) with x̂ = x / ‖x‖.
    indices : Tensor (B, M) int64
        Code ids.
    commitment : Tensor, scalar
        ``mean ‖x̂ − sg(q)‖²`` (zero in eval mode).
    """

    quantized: Tensor
    indices: Tensor
    commitment: Tensor


def code_usage(indices: Tensor, codebook_size: int) -> dict[str, float]:
    """Codebook usage statistics of a set of code ids.

    Parameters
    ----------
    indices : Tensor of int, any shape
    codebook_size : int
        K.

    Returns
    -------
    dict
        ``usage``: fraction of the K codes used at least once; ``perplexity``: ``exp(H(p))`` of the empirical
        code distribution (between 1 and K); ``perplexity_frac``: perplexity / K.
    """
    counts = torch.bincount(indices.reshape(-1).long(), minlength=codebook_size).double()
    if counts.sum() == 0:
        raise BrainAlignError("code_usage needs at least one code id")
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    perplexity = float(entropy.exp())
    return {"usage": float((counts > 0).double().mean()), "perplexity": perplexity,
            "perplexity_frac": perplexity / codebook_size}


class CosineVectorQuantizer(nn.Module):
    """EMA vector quantiser with L2-normalised (cosine) codes.

    Parameters
    ----------
    dim : int
        Latent width C.
    codebook_size : int
        Number of codes K (fMRI-LM / NeuroLM: 8192; brainalign's CPU default is smaller).
    decay : float
        EMA decay of the codebook statistics (0.99).
    kmeans_init : bool
        Initialise the codebook by k-means (cosine) on the first training batch.
    kmeans_iters : int
    dead_code_threshold : float
        Codes whose EMA cluster size (expected uses per batch) drops below this are restarted from random
        inputs of the batch (0 disables).
    commitment_weight : float
        Weight of the commitment loss inside :attr:`QuantizerOutput.commitment` (the tokenizer weighs it again).
    frozen : bool
        A fixed codebook: no k-means, no EMA updates, no restarts; its codes come from ``codes`` or from a
        loaded state dict.
    codes : Tensor (K, C), optional
        The fixed codes (L2-normalised here); only with ``frozen``.
    """

    def __init__(self, dim: int, codebook_size: int, *, decay: float = 0.99, kmeans_init: bool = True,
                 kmeans_iters: int = 10, dead_code_threshold: float = 1.0, commitment_weight: float = 1.0,
                 frozen: bool = False, codes: Tensor | None = None):
        super().__init__()
        if dim < 1 or codebook_size < 2 or not 0 < decay < 1:
            raise BrainAlignError(f"quantiser needs dim >= 1, codebook_size >= 2 and 0 < decay < 1; got "
                                  f"{dim}, {codebook_size}, {decay}")
        if codes is not None and (not frozen or tuple(codes.shape) != (codebook_size, dim)):
            raise BrainAlignError(f"fixed codes must be ({codebook_size}, {dim}) for a frozen codebook, got "
                                  f"{tuple(codes.shape)} (frozen={frozen})")
        from vector_quantize_pytorch import VectorQuantize

        self.dim, self.codebook_size = dim, codebook_size
        self.vq = VectorQuantize(
            dim=dim, codebook_size=codebook_size, decay=decay, use_cosine_sim=True,
            kmeans_init=kmeans_init and not frozen, kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=0 if frozen else dead_code_threshold, ema_update=not frozen,
            freeze_codebook=frozen, commitment_weight=commitment_weight, rotation_trick=False, sync_codebook=False,
        )
        if codes is not None:
            with torch.no_grad():
                self.vq._codebook.embed.copy_(torch.nn.functional.normalize(codes.float(), dim=-1)[None])
                self.vq._codebook.initted.fill_(True)

    @property
    def codebook(self) -> Tensor:
        """(K, C) unit-norm codes."""
        return self.vq.codebook.detach()

    @property
    def initialised(self) -> bool:
        return bool(self.vq._codebook.initted)

    def forward(self, x: Tensor) -> QuantizerOutput:
        """Quantise latents.

        Parameters
        ----------
        x : Tensor (B, M, C)

        Returns
        -------
        QuantizerOutput
        """
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise BrainAlignError(f"quantiser input must be (B, M, {self.dim}), got {tuple(x.shape)}")
        quantized, indices, loss = self.vq(x)
        return QuantizerOutput(quantized, indices.long(), loss.reshape(()))

    @torch.no_grad()
    def lookup(self, indices: Tensor) -> Tensor:
        """(…, C) codes of the given ids."""
        return self.vq.get_codes_from_indices(indices)
