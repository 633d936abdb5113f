"""fMRI-LM stage 1: the text-aligned fMRI tokenizer, also the adversarial VQ autoencoder (METHODS §2, §3).

A temporal-patch transformer encodes (T, N) ROI series into M = ⌈T/P⌉·N latents, a cosine EMA vector quantiser
turns them into code ids (the brain-token vocabulary), and a light transformer decoder reconstructs the series.
Two alignment terms tie the vocabulary to language:

* **domain adversary** — a classifier tells the unit-norm fMRI token latents (by default the encoder outputs before
  quantisation, ``domain_input``) from real text-token
  input embeddings of the frozen LLM (SmolLM2-135M), brought to the code width C by the vocabulary's top-C
  principal axes (``code_space``) and L2-normalised; a gradient-reversal layer with the DANN schedule makes the
  encoder confuse it.  Held-out, the run reports the adversary's own accuracy and that of a fresh probe trained
  after the fact (:func:`brainalign.evaluation.tokenizer_run.evaluate_tokenizer`).
  **Decision:** the comparison happens in the code space, not after a learned C → D projection: the image of a
  learned linear C → D map is a C-dimensional subspace of the D-dimensional text space (C = 64 ≪ D = 576), which
  any classifier separates perfectly (held-out accuracy 100 % in a first 400-scan run), so the adversary could
  never be confused.  Both sides are unit-norm so that the norm alone does not give the domain away;
* **contrast** — SigLIP between a scan's latents pooled by :class:`ContrastHead` (mean token + the latent ROI × ROI
  similarity, projected to the text-encoder width) and the frozen text encoder's pooled embedding of its caption;
  identical captions are positives of each other.

``loss = MSE(X, D(Q(E(X)))) + w_commit · commitment + w_d · L_domain + w_c · L_contrast`` (+ ``w_m`` · a
sliced-Wasserstein distance between the fMRI and text token clouds, off by default).

With ``domain_weight = 0`` (the ``no_adversary`` ablation) the classifier is still trained, with weight 1 and
no gradient reaching the encoder (α = 0), so that its held-out accuracy measures how separable the untouched
latents are.  With ``contrast_weight = 0`` (``no_contrast``) the contrastive heads are not trained.

Inputs are series prepared by :func:`brainalign.data.preprocess.prepare_timeseries` (TR 2 s, T = 160 by
default, z-scored per ROI): ``(S, T, N)`` float arrays.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from brainalign.encoders.temporal_patch import PatchDecoder, TemporalPatchEncoder
from brainalign.errors import BrainAlignError
from brainalign.utils import config_from_dict
from brainalign.objectives.contrastive import SigmoidTemperatureBias, siglip_loss
from brainalign.objectives.domain import (DomainClassifier, code_frequencies, code_frequency_loss, dann_alpha,
                                          distribution_distance, domain_loss)
from brainalign.objectives.vq import CosineVectorQuantizer, code_usage
from brainalign.training.trainer import AlignmentModule, IndexedTensors, TrainConfig, fit_module, seed_everything

__all__ = ["ABLATIONS", "ContrastHead", "FMRITokenizer", "TokenizerConfig", "TokenizerModule"]

CHECKPOINT_FORMAT = 2
#: Pooling of a scan's token latents for the caption contrast (see :class:`ContrastHead`).
CONTRAST_POOLS = ("mean", "gram")
#: Ablations of the full model: the changed config fields.
#: ``no_adversary`` drops every term that pulls the fMRI tokens towards text (adversary, distribution match, code
#: frequencies); the codebook stays what ``codebook_init`` makes it.
ABLATIONS = {"full": {},
             "no_adversary": {"domain_weight": 0.0, "domain_match_weight": 0.0, "code_frequency_weight": 0.0},
             "no_contrast": {"contrast_weight": 0.0}}
_TRAIN_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_frac", "seed", "progress")


@dataclass
class TokenizerConfig:
    """Settings of the stage-1 tokenizer (every field can be set from YAML or ``--set key=value``).

    Parameters
    ----------
    n_timepoints : int
        T after preprocessing (fMRI-LM: 160).
    target_tr : float
        TR in seconds after resampling (fMRI-LM: 2.0).
    patch_len : int
        P, time points per patch (fMRI-LM: 160, one token per ROI; default 40 → 4 tokens per ROI at T = 160,
        M = 400 tokens for 100 ROIs: finer codes reconstruct better, and the cost grows with M).
    dim : int
        Latent and code width C.
    depth, heads : int
        Encoder transformer layers and heads.
    decoder_depth : int
        Decoder transformer layers.
    codebook_size : int
        K (fMRI-LM / NeuroLM: 8192; default 512 for CPU-sized cohorts).  With ``codebook_init="text"`` at most
        the number of distinct tokens in the text pool: :meth:`FMRITokenizer.fit` lowers it to that number
        (``FMRITokenizer.config`` and the saved model then hold the K used).
    ema_decay : float
        Codebook EMA decay (0.99, as NeuroLM).
    kmeans_iters : int
        k-means iterations of the codebook initialisation on the first batch.
    dead_code_threshold : float
        EMA cluster size under which a code is restarted from batch inputs (0 disables).
    commitment_weight : float
        w_commit.
    domain_weight : float
        w_d (fMRI-LM: 0.5); 0 (with w_m = w_f = 0) = ``no_adversary``.  Default 0.05: on the 400-scan simulated
        cohort with the learnt codebook larger weights lower the held-out domain accuracy but shrink the codebook
        (w_d = 0.05 / 0.5 / 1: accuracy 0.96 / 0.82 / 0.75, perplexity 43 / 24 / 12 % of K; BENCHMARKS.md).
    contrast_weight : float
        w_c; 0 = ``no_contrast``.  Default 1 (fMRI-LM's weight): with the contrast on the pre-quantisation latents
        through the ``"gram"`` head it raises held-out perplexity (43 % of K vs 29 % without the contrast,
        BENCHMARKS.md); on the quantised codes through a mean pool w_c = 1 had collapsed the codebook.
    codebook_init : str
        ``"text"`` (default): the codebook is fixed to the K most frequent distinct text tokens of the adversary's
        training pool, so every quantised fMRI token *is* the code-space image of a real LLM text token (the
        poster's shared vocabulary); ``"kmeans"``: k-means on the first batch, EMA updates, dead-code restarts, as
        NeuroLM.  With the text codebook, ``code_space="text"``, ``domain_input="quantized"`` and the code
        frequency term, a fresh probe no longer tells fMRI tokens from text (0.51 on the 400-scan simulated
        cohort; 1.00 with NeuroLM's learnt codebook; BENCHMARKS.md).
    code_space : str
        How the LLM's text tokens are brought to the code width C for the adversary: ``"text"`` (default) — the
        top-C principal axes of the training pool's real text-token occurrences, centred on them and whitened;
        ``"vocabulary"`` — the top-C principal axes of the whole input-embedding table.  Unit-normalised, the
        vocabulary-axes text tokens fill a narrow cone (mean resultant length 0.85 on SmolLM2), the whitened
        text axes spread them over the sphere.  The adversary's own held-out accuracy then falls from 0.96 to
        0.59, but a fresh probe still separates the two domains perfectly in both spaces
        (``domain_probe_acc`` 1.00, BENCHMARKS.md): the lower figure is a weaker adversary, not aligned tokens.
    domain_match_weight : float
        w_m: weight of a sliced 2-Wasserstein distance between the fMRI tokens the adversary sees and as many
        text tokens (:func:`~brainalign.objectives.domain.distribution_distance`), a direct pull of the fMRI
        token distribution onto the text one beside the adversary (0 = off, the default; fMRI-LM has the
        adversary only).
    code_frequency_weight : float
        w_f: weight of KL(text ‖ fMRI) between the share of text-pool tokens nearest to each code and the fMRI
        tokens' soft code use (:func:`~brainalign.objectives.domain.code_frequency_loss`; default 1, 0 = off).
        Meant for ``codebook_init="text"``, where each code is a text token and code frequencies are all a
        single-token classifier can tell the domains apart by.
    domain_input : str
        What the domain classifier sees: ``"quantized"`` (default; the codes, i.e. the tokens a language model
        reads — with a learnt codebook a discrete set of at most K points, which the classifier separated from
        text at 0.98) or ``"latent"`` (the unit-norm encoder outputs before quantisation, where fMRI-LM applies
        the adversary).
    contrast_input : str
        What the contrast pools: ``"latent"`` (default, pre-quantisation) or ``"quantized"``.
    contrast_pool : str
        ``"gram"`` (default: mean token + the ROI × ROI similarity of latent trajectories, see
        :class:`ContrastHead`) or ``"mean"``.
    contrast_proj : int
        Width of the per-patch projection in the ``"gram"`` head.
    contrast_dropout : float
        Dropout on the contrast head's pooled features before its linear map to the caption space (0 = off).
    domain_hidden : int
        Hidden width of the domain classifier.
    tokens_per_step : int
        fMRI tokens (sampled from the batch) and text tokens (sampled from the pool) shown to the domain
        classifier per step, each.
    llm : str
        Language model whose input embeddings are the "text" domain (``"smollm2-135m"`` or a ``.gguf`` path).
    text_model : str, optional
        Caption encoder (None: the offline all-MiniLM-L6-v2).
    epochs, batch_size, lr, weight_decay, warmup_frac, seed, progress
        Optimisation (see :class:`~brainalign.training.trainer.TrainConfig`).  fMRI-LM: 50 epochs, lr 1e-4,
        batch 32; the CPU default (20 epochs, lr 1e-3) keeps a 400-scan cohort with ablations within minutes.
    test_size : float
        Fraction of persons held out for evaluation.
    """

    n_timepoints: int = 160
    target_tr: float = 2.0
    patch_len: int = 40
    dim: int = 64
    depth: int = 2
    heads: int = 4
    decoder_depth: int = 1
    codebook_size: int = 512
    ema_decay: float = 0.99
    kmeans_iters: int = 10
    dead_code_threshold: float = 1.0
    commitment_weight: float = 0.25
    domain_weight: float = 0.05
    domain_match_weight: float = 0.0
    code_frequency_weight: float = 1.0
    codebook_init: str = "text"
    code_space: str = "text"
    contrast_weight: float = 1.0
    domain_hidden: int = 256
    domain_input: str = "quantized"
    contrast_input: str = "latent"
    contrast_pool: str = "gram"
    contrast_proj: int = 16
    contrast_dropout: float = 0.0
    tokens_per_step: int = 1024
    llm: str = "smollm2-135m"
    text_model: str | None = None
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_frac: float = 0.05
    seed: int = 0
    progress: bool = False
    test_size: float = 0.2

    def __post_init__(self) -> None:
        problems = []
        for name in ("n_timepoints", "patch_len", "dim", "depth", "heads", "decoder_depth", "codebook_size",
                     "tokens_per_step", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name in ("commitment_weight", "domain_weight", "domain_match_weight", "code_frequency_weight",
                     "contrast_weight", "dead_code_threshold"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        if not problems and self.patch_len > self.n_timepoints:
            problems.append(f"patch_len ({self.patch_len}) exceeds n_timepoints ({self.n_timepoints})")
        if not problems and self.dim % self.heads:
            problems.append(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        for name, allowed in (("domain_input", ("latent", "quantized")), ("contrast_input", ("latent", "quantized")),
                              ("codebook_init", ("kmeans", "text")), ("code_space", ("text", "vocabulary"))):
            if getattr(self, name) not in allowed:
                choices = " or ".join(repr(a) for a in allowed)
                problems.append(f"{name} must be {choices}, got {getattr(self, name)!r}")
        if self.contrast_pool not in CONTRAST_POOLS:
            problems.append(f"contrast_pool must be one of {list(CONTRAST_POOLS)}, got {self.contrast_pool!r}")
        value = self.contrast_proj
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(f"contrast_proj must be a positive integer, got {value!r}")
        if not 0 <= self.contrast_dropout < 1:
            problems.append(f"contrast_dropout must be in [0, 1), got {self.contrast_dropout}")
        if not 0 < self.ema_decay < 1:
            problems.append(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 0 < self.test_size < 1:
            problems.append(f"test_size must be in (0, 1), got {self.test_size}")
        if problems:
            raise BrainAlignError("tokenizer config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TokenizerConfig:
        """Build from a mapping (YAML); unknown keys and wrongly typed values are errors naming them."""
        return config_from_dict(cls, data, "tokenizer")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TokenizerConfig:
        return dataclasses.replace(self, **changes)

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: getattr(self, k) for k in _TRAIN_FIELDS}, min_lr_frac=0.05)


class ContrastHead(nn.Module):
    """Pools a scan's token latents (B, M, C) into one vector in the caption space (B, H) for the contrast.

    Parameters
    ----------
    n_rois : int
        N (tokens are time-major: ``m = w·N + n``).
    dim : int
        C.
    text_dim : int
        H, the caption-encoder width.
    pool : str
        ``"mean"``: Linear(mean over all M tokens).  ``"gram"``: the mean token concatenated with a
        *latent functional connectivity* — each ROI's W patch latents, projected to ``proj`` dims and
        concatenated over time, centred and L2-normalised, give an N × N cosine matrix, whose upper triangle
        (N(N−1)/2 values) is flattened; LayerNorm → Linear to H.  The descriptor captions are mostly about
        connectivity (within/between-network FC, gradients, graph metrics), quantities between ROIs that an
        average of per-ROI tokens cannot express.
    proj : int
        Width each patch latent is projected to before the ROI × ROI similarity (``"gram"`` only).
    dropout : float
        Dropout on the pooled features before the final linear map.
    """

    def __init__(self, n_rois: int, dim: int, text_dim: int, pool: str = "gram", proj: int = 16,
                 dropout: float = 0.0):
        super().__init__()
        if pool not in CONTRAST_POOLS:
            raise BrainAlignError(f"contrast pool must be one of {list(CONTRAST_POOLS)}, got {pool!r}")
        self.n_rois, self.pool = n_rois, pool
        n_features = dim
        if pool == "gram":
            self.proj = nn.Linear(dim, proj)
            rows, cols = torch.triu_indices(n_rois, n_rois, offset=1)
            self.register_buffer("rows", rows, persistent=False)
            self.register_buffer("cols", cols, persistent=False)
            n_features += len(rows)
            self.norm = nn.LayerNorm(n_features)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(n_features, text_dim)

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim != 3 or z.shape[1] % self.n_rois:
            raise BrainAlignError(f"contrast head expects (B, W·{self.n_rois}, C) latents, got {tuple(z.shape)}")
        mean = z.mean(dim=1)
        if self.pool == "mean":
            return self.out(self.dropout(mean))
        B, M, _ = z.shape
        u = self.proj(z).reshape(B, M // self.n_rois, self.n_rois, -1).transpose(1, 2).reshape(B, self.n_rois, -1)
        u = F.normalize(u - u.mean(dim=-1, keepdim=True), dim=-1)
        gram = u @ u.transpose(1, 2)
        return self.out(self.dropout(self.norm(torch.cat([mean, gram[:, self.rows, self.cols]], dim=-1))))


def frequent_rows(pool: Tensor, k: int) -> Tensor:
    """The ``k`` most frequent distinct rows (k, C) of a pool of text-token embeddings (one row per occurrence)."""
    rows, counts = torch.unique(pool.float(), dim=0, return_counts=True)
    if len(rows) < k:
        raise BrainAlignError(f"the text pool has only {len(rows)} distinct tokens, fewer than the {k} codes of a "
                              "text codebook (codebook_init='text'); lower codebook_size")
    return rows[torch.argsort(counts, descending=True, stable=True)[:k]]


class TokenizerModule(AlignmentModule):
    """The networks of the tokenizer and its loss (a LightningModule trained by ``fit_module``).

    Parameters
    ----------
    config : TokenizerConfig
    n_rois : int
        N.
    text_dim : int
        Width of the caption embeddings (384 for MiniLM).
    text_pool : Tensor (U, C), optional
        Input embeddings of real text tokens in the code space (see
        :func:`~brainalign.encoders.language_model.embeddings_to_code_space`), unit-norm; the adversary's "text"
        domain (needed for training only; not saved).
    """

    def __init__(self, config: TokenizerConfig, n_rois: int, text_dim: int, text_pool: Tensor | None = None):
        super().__init__(config.train_config())
        self.config = config
        c = config
        self.encoder = TemporalPatchEncoder(n_rois, c.n_timepoints, c.patch_len, c.dim, c.depth, c.heads)
        if text_pool is not None and (text_pool.ndim != 2 or text_pool.shape[1] != c.dim):
            raise BrainAlignError(f"text_pool must be (U, {c.dim}) (text tokens in the code space), got "
                                  f"{tuple(text_pool.shape)}")
        frozen = c.codebook_init == "text"
        self.quantizer = CosineVectorQuantizer(c.dim, c.codebook_size, decay=c.ema_decay,
                                               kmeans_iters=c.kmeans_iters, dead_code_threshold=c.dead_code_threshold,
                                               frozen=frozen, codes=frequent_rows(text_pool, c.codebook_size)
                                               if frozen and text_pool is not None else None)
        self.decoder = PatchDecoder(self.encoder, c.decoder_depth, c.heads)
        self.domain_classifier = DomainClassifier(c.dim, c.domain_hidden)
        self.contrast_head = ContrastHead(n_rois, c.dim, text_dim, c.contrast_pool, c.contrast_proj,
                                          c.contrast_dropout)
        self.siglip_temperature = SigmoidTemperatureBias()
        pool = F.normalize(text_pool.float(), dim=-1) if text_pool is not None else torch.zeros(0, c.dim)
        self.register_buffer("text_pool", pool, persistent=False)

    def tokens(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, N) → quantised latents (B, M, C), code ids (B, M), commitment loss."""
        out = self.quantizer(self.encoder(x))
        return out.quantized, out.indices, out.commitment

    def forward_all(self, x: Tensor) -> dict[str, Tensor]:
        """(B, T, N) → ``latents`` (B, M, C) unit-norm encoder outputs before quantisation, ``quantized``
        (B, M, C), ``indices`` (B, M), ``commitment``."""
        z = self.encoder(x)
        out = self.quantizer(z)
        return {"latents": F.normalize(z, dim=-1), "quantized": out.quantized, "indices": out.indices,
                "commitment": out.commitment}

    @staticmethod
    def _side(parts: dict[str, Tensor], choice: str) -> Tensor:
        """``parts`` of :meth:`forward_all` named by a config choice, ``"latent"`` or ``"quantized"``."""
        return parts["latents" if choice == "latent" else "quantized"]

    def domain_side(self, parts: dict[str, Tensor]) -> Tensor:
        """The (B, M, C) tokens the domain classifier sees (``config.domain_input``)."""
        return self._side(parts, self.config.domain_input)

    def pooled_text_side(self, parts: dict[str, Tensor]) -> Tensor:
        """(B, text_dim) scan embedding for the caption contrast, from ``config.contrast_input``."""
        return self.contrast_head(self._side(parts, self.config.contrast_input))

    def _progress(self) -> float:
        trainer = getattr(self, "_trainer", None)
        total = max(1, int(trainer.estimated_stepping_batches)) if trainer is not None else 1
        return self.global_step / total

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        c = self.config
        x = batch["x"]
        out = self.forward_all(x)
        quantized, commitment = out["quantized"], out["commitment"]
        mse = F.mse_loss(self.decoder(quantized), x)
        loss = mse + c.commitment_weight * commitment
        parts = {"mse": mse.detach(), "commitment": commitment.detach()}
        if len(self.text_pool):
            side = self.domain_side(out)
            flat = side.reshape(-1, side.shape[-1])
            n = min(c.tokens_per_step, len(flat))
            fmri = flat[torch.randperm(len(flat), device=flat.device)[:n]]
            text = self.text_pool[torch.randint(len(self.text_pool), (n,), device=flat.device)]
            adversarial = c.domain_weight > 0
            alpha = dann_alpha(self._progress()) if adversarial else 0.0
            l_domain, acc = domain_loss(self.domain_classifier, fmri, text, alpha)
            loss = loss + (c.domain_weight if adversarial else 1.0) * l_domain
            parts.update(domain=l_domain.detach(), domain_acc=acc, alpha=torch.tensor(alpha))
            if c.domain_match_weight > 0:
                l_match = distribution_distance(fmri, text)
                loss = loss + c.domain_match_weight * l_match
                parts["match"] = l_match.detach()
            if c.code_frequency_weight > 0:
                codes = self.quantizer.codebook
                latents = out["latents"].reshape(-1, c.dim)
                latents = latents[torch.randperm(len(latents), device=latents.device)[:n]]
                l_freq = code_frequency_loss(latents, codes, code_frequencies(self.text_pool, codes))
                loss = loss + c.code_frequency_weight * l_freq
                parts["frequency"] = l_freq.detach()
        if c.contrast_weight > 0:
            captions, ids = batch["caption"], batch["caption_id"]
            log_t, b = self.siglip_temperature()
            l_contrast = siglip_loss(self.pooled_text_side(out), captions, log_t, b,
                                     positives=ids[:, None] == ids[None, :])
            loss = loss + c.contrast_weight * l_contrast
            parts["contrast"] = l_contrast.detach()
        return loss, parts


def _check_series(x: Any, n_rois: int | None, n_timepoints: int | None, scan_ids: Any = None) -> np.ndarray:
    """(S, T, N) finite float32 array of prepared series, with errors naming the scan."""
    arr = np.asarray(x)
    if arr.ndim != 3:
        raise BrainAlignError(f"time series must be an (S, T, N) array of prepared scans, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise BrainAlignError(f"time series must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    ids = list(scan_ids) if scan_ids is not None else [str(i) for i in range(len(arr))]
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=(1, 2)))
    if bad.size:
        raise BrainAlignError(f"scan(s) {[ids[i] for i in bad[:5]]} contain NaN or infinite values")
    if n_rois is not None and arr.shape[2] != n_rois:
        raise BrainAlignError(f"the tokenizer was trained on {n_rois} ROIs but the series have {arr.shape[2]} "
                              f"(scan {ids[0]}); use the same atlas")
    if n_timepoints is not None and arr.shape[1] != n_timepoints:
        raise BrainAlignError(f"the tokenizer expects {n_timepoints} time points per scan, got {arr.shape[1]} "
                              f"(scan {ids[0]}); prepare series with prepare_timeseries(n_timepoints="
                              f"{n_timepoints})")
    return arr


class FMRITokenizer:
    """Estimator-style front end: ``fit`` on prepared series (and captions), ``encode`` to code ids.

    Parameters
    ----------
    config : TokenizerConfig, optional

    Attributes
    ----------
    module_ : TokenizerModule
        The trained networks (after ``fit`` or ``load``).
    """

    def __init__(self, config: TokenizerConfig | None = None):
        self.config = config or TokenizerConfig()
        self.module_: TokenizerModule | None = None
        self.n_rois_: int | None = None

    # ------------------------------------------------------------------------------------------ training
    def fit(self, x: Any, caption_embeddings: Any = None, captions: Any = None, *,
            text_pool: Tensor | None = None, scan_ids: Any = None) -> FMRITokenizer:
        """Train on S prepared scans.

        Parameters
        ----------
        x : array (S, T, N)
            Prepared series (T = ``config.n_timepoints``).
        caption_embeddings : array (S, H), optional
            Frozen text-encoder embedding of each scan's caption; required when ``contrast_weight > 0``.
        captions : sequence of str (S,), optional
            The captions; identical strings are positives of each other in the contrast (default: all distinct).
        text_pool : Tensor (U, C), optional
            LLM input embeddings of real text tokens mapped to the code width C (the adversary's "text" domain;
            L2-normalised inside); None → no domain term.
        scan_ids : sequence of str, optional
            Names used in error messages.
        """
        c = self.config
        arr = _check_series(x, None, c.n_timepoints, scan_ids)
        S, _, N = arr.shape
        if S < 2:
            raise BrainAlignError(f"training needs at least 2 scans, got {S}")
        tensors = {"x": torch.from_numpy(np.ascontiguousarray(arr))}
        text_dim = 1
        if c.contrast_weight > 0:
            if caption_embeddings is None:
                raise BrainAlignError("contrast_weight > 0 needs caption embeddings (one per scan); pass them or "
                                      "set contrast_weight=0")
            emb = np.asarray(caption_embeddings, dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != S or not np.isfinite(emb).all():
                raise BrainAlignError(f"caption embeddings must be a finite ({S}, H) array, got shape {emb.shape}")
            text_dim = emb.shape[1]
            codes = np.arange(S) if captions is None else np.unique(np.asarray(captions, dtype=str),
                                                                     return_inverse=True)[1]
            if len(codes) != S:
                raise BrainAlignError(f"{len(codes)} captions for {S} scans")
            tensors.update(caption=torch.from_numpy(emb), caption_id=torch.as_tensor(codes, dtype=torch.long))
        elif caption_embeddings is not None:
            text_dim = np.asarray(caption_embeddings).shape[1]
        if text_pool is not None and (text_pool.ndim != 2 or len(text_pool) == 0 or text_pool.shape[1] != c.dim):
            raise BrainAlignError(f"text_pool must be a non-empty (U, {c.dim}) tensor (text tokens in the code "
                                  f"space), got {tuple(text_pool.shape)}")
        if text_pool is None and c.codebook_init == "text":
            raise BrainAlignError("codebook_init='text' takes its codes from text_pool; pass text_pool (or set "
                                  "codebook_init='kmeans')")
        if c.codebook_init == "text":
            distinct = len(torch.unique(text_pool.float(), dim=0))
            if distinct < 2:
                raise BrainAlignError("the text pool has fewer than 2 distinct tokens; a text codebook needs more")
            if distinct < c.codebook_size:
                c = self.config = c.replace(codebook_size=distinct)
        seed_everything(c.seed)
        self.module_ = TokenizerModule(c, N, text_dim, text_pool)
        self.n_rois_ = N
        fit_module(self.module_, IndexedTensors(**tensors), self.module_.train_config)
        self.module_.eval()
        return self

    # ------------------------------------------------------------------------------------------ inference
    def _module(self) -> TokenizerModule:
        if self.module_ is None:
            raise BrainAlignError("the tokenizer is not fitted; call fit() or FMRITokenizer.load()")
        return self.module_

    @property
    def codebook(self) -> Tensor:
        """(K, C) the unit-norm codes of the fitted quantiser."""
        return self._module().quantizer.codebook

    @torch.no_grad()
    def _batched(self, x: Any, fn, scan_ids: Any = None, batch_size: int = 64) -> list:
        module = self._module().eval()
        arr = _check_series(x, self.n_rois_, self.config.n_timepoints, scan_ids)
        return [fn(module, torch.from_numpy(np.ascontiguousarray(arr[i:i + batch_size])))
                for i in range(0, len(arr), batch_size)]

    def encode(self, x: Any, scan_ids: Any = None) -> np.ndarray:
        """Code ids of prepared scans.

        Parameters
        ----------
        x : array (S, T, N)

        Returns
        -------
        ndarray of int64, shape (S, M)
            Token ``w·N + n`` is the code of time patch w of ROI n (M = ⌈T/P⌉·N).
        """
        parts = self._batched(x, lambda m, b: m.tokens(b)[1], scan_ids)
        return torch.cat(parts).numpy().astype(np.int64)

    def reconstruct(self, x: Any, scan_ids: Any = None) -> np.ndarray:
        """(S, T, N) float32 series decoded from the scans' codes."""
        parts = self._batched(x, lambda m, b: m.decoder(m.tokens(b)[0]), scan_ids)
        return torch.cat(parts).numpy()

    def decode(self, codes: Any) -> np.ndarray:
        """(S, M) code ids → (S, T, N) float32 series."""
        module = self._module().eval()
        ids = torch.as_tensor(np.asarray(codes), dtype=torch.long)
        if ids.ndim != 2 or ids.shape[1] != module.encoder.n_tokens:
            raise BrainAlignError(f"codes must be (S, {module.encoder.n_tokens}), got {tuple(ids.shape)}")
        if ids.min() < 0 or ids.max() >= self.config.codebook_size:
            raise BrainAlignError(f"code ids must lie in [0, {self.config.codebook_size})")
        with torch.no_grad():
            return module.decoder(module.quantizer.lookup(ids)).numpy()

    def embed(self, x: Any, scan_ids: Any = None) -> dict[str, np.ndarray]:
        """Outputs used by the evaluation, for prepared scans.

        Returns
        -------
        dict
            ``codes`` (S, M) int64; ``reconstruction`` (S, T, N); ``scan_embedding`` (S, H) pooled latents in
            the caption space; ``tokens`` (S, M, C) unit-norm quantised latents; ``latents`` (S, M, C) unit-norm
            encoder outputs before quantisation (the domain classifier sees ``latents`` with the default
            ``domain_input="latent"``, ``tokens`` with ``"quantized"``).
        """
        def run(m: TokenizerModule, b: Tensor):
            o = m.forward_all(b)
            return o["indices"], m.decoder(o["quantized"]), m.pooled_text_side(o), o["quantized"], o["latents"]

        parts = self._batched(x, run, scan_ids)
        keys = ("codes", "reconstruction", "scan_embedding", "tokens", "latents")
        return {k: torch.cat([p[i] for p in parts]).numpy() for i, k in enumerate(keys)}

    @torch.no_grad()
    def domain_accuracy(self, fmri_tokens: Any, text_tokens: Any) -> float:
        """Balanced accuracy of the trained domain classifier on (n, C) fMRI tokens and (n', C) text tokens in the
        code space (both L2-normalised here)."""
        from sklearn.metrics import balanced_accuracy_score

        clf = self._module().domain_classifier
        f = F.normalize(torch.as_tensor(np.asarray(fmri_tokens, dtype=np.float32)), dim=-1)
        t = F.normalize(torch.as_tensor(np.asarray(text_tokens, dtype=np.float32)), dim=-1)
        pred = torch.cat([clf(f), clf(t)]).argmax(-1).numpy()
        truth = np.r_[np.ones(len(f), int), np.zeros(len(t), int)]
        return float(balanced_accuracy_score(truth, pred))

    def usage(self, codes: Any) -> dict[str, float]:
        """Codebook usage and perplexity of code ids (see :func:`~brainalign.objectives.vq.code_usage`)."""
        return code_usage(torch.as_tensor(np.asarray(codes)), self.config.codebook_size)

    def code_histograms(self, codes: Any) -> np.ndarray:
        """(S, K) fraction of each scan's tokens that use each code (the "vocabulary profile")."""
        codes = np.asarray(codes, dtype=np.int64)
        K = self.config.codebook_size
        counts = np.zeros((len(codes), K))
        np.add.at(counts, (np.repeat(np.arange(len(codes)), codes.shape[1]), codes.ravel()), 1.0)
        return counts / codes.shape[1]

    # ------------------------------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the config and weights to one file (loads with ``torch.load(weights_only=True)``)."""
        module = self._module()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": CHECKPOINT_FORMAT, "config": self.config.to_dict(), "n_rois": self.n_rois_,
                    "text_dim": module.contrast_head.out.out_features,
                    "state_dict": module.state_dict()}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FMRITokenizer:
        """Inverse of :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise BrainAlignError(f"tokenizer checkpoint {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for a corrupt or foreign file
            raise BrainAlignError(f"cannot read tokenizer checkpoint {path}: {err}") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise BrainAlignError(f"{path} is not a brainalign tokenizer checkpoint")
        tok = cls(TokenizerConfig.from_dict(state["config"]))
        tok.module_ = TokenizerModule(tok.config, state["n_rois"], state["text_dim"])
        tok.module_.load_state_dict(state["state_dict"])
        tok.module_.eval()
        tok.n_rois_ = state["n_rois"]
        return tok
