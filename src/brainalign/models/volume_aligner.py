"""Whole-brain volume ↔ image/text alignment (METHODS §4): a 3-D patch ViT trained with L = w_I·L_BI + w_T·L_BT.

Each loss is a symmetric InfoNCE with CLIP's final, fixed temperature and a memory queue of past samples' targets
(:mod:`brainalign.objectives.queue`); stimuli seen several times are never negatives of themselves.  Brain
embeddings are centred on their training mean before retrieval (``centre``).  Training goes
through :func:`brainalign.training.trainer.fit_module` (AdamW, 1 % linear warm-up then cosine to ``min_lr``; mixed
precision and DDP through the ``precision`` / ``devices`` / ``strategy`` fields).

Inputs are masked voxel vectors ``X`` (S, V) (``volume[mask]`` order, any array-like including a read-only
memory map: rows are read per batch) with their frozen target embeddings per row.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from brainalign.encoders.volume_vit import VolumeViT
from brainalign.errors import BrainAlignError
from brainalign.utils import config_from_dict
from brainalign.objectives.queue import CLIP_FINAL_LOGIT_SCALE, EmbeddingQueue, queued_info_nce, stimulus_codes
from brainalign.training.trainer import AlignmentModule, TrainConfig, fit_module, seed_everything

__all__ = ["TARGETS", "BrainTargetModule", "VolumeAligner", "VolumeAlignerConfig", "VolumeRows", "embed_rows",
           "check_training_inputs", "train_on_rows"]

TARGETS = ("image", "text")


@dataclass
class VolumeAlignerConfig:
    """Every setting of the volume aligner (defaults: the paper's, except the CPU-friendly ``width``).

    Parameters
    ----------
    image_weight, text_weight : float
        Weights of L_BI and L_BT (0 drops a target: the image-only / text-only ablations).
    queue_size : int
        Past samples whose embeddings add negatives (paper: 4096; 0 = no queue).
    queued_brain : bool
        Whether the queued brain embeddings (from an encoder up to ``queue_size / batch_size`` steps older) are
        negatives of the target→brain direction too, as in MoCo.  Default False: only the exact, frozen targets
        are queued (negatives of the brain→target direction).  On the 1000-volume simulated cohort the
        targets-only queue raised R@1 over no queue in 11 of 12 seed × direction pairs, the both-sides queue
        lowered it (BENCHMARKS.md).
    centre : bool
        Centre the brain embeddings on their training mean before the cosine (not in the paper; see
        :meth:`BrainTargetModule.fit_centres`).
    logit_scale : float
        Fixed multiplier of the cosine (CLIP's final 100, τ = 0.01).
    patch_size, depth, width, heads, mlp_ratio, dropout
        Encoder shape (paper: patch 14, 12 blocks, ViT-H widths; ``width`` 256 here so that CPUs can train it).
    patch_dropout : float
        Fraction of patch tokens dropped per sample in training (not in the paper; 0 = off).
    patch_embedding : {"shared", "per_patch"}
        The paper's shared ViT patch embedding (default) or an untied one per patch; see
        :class:`~brainalign.encoders.volume_vit.VolumeViT`.
    pool : {"cls", "mean"}
        Embedding read from the CLS token (paper) or the mean patch token.
    layer_scale : float
        Initial LayerScale of the blocks' branches (not in the paper; 0 = off); see
        :class:`~brainalign.encoders.volume_vit.VolumeViT`.
    mixup_alpha, mixup_frac
        BiMixCo-style input mixup with ``λ ~ Beta(α, α)`` for the first ``mixup_frac`` of the epochs (not in the
        paper; MindEye's remedy for memorisation on small fMRI sets); 0 = off.  See :class:`BrainTargetModule`.
    epochs, batch_size, lr, min_lr, warmup_frac, weight_decay, grad_clip
        Optimisation (paper: 150 epochs, batch 256, AdamW 3e-4, 1 % warm-up, cosine to 1e-5).
    precision, accelerator, devices, strategy, num_workers, progress
        Hardware (see :class:`~brainalign.training.trainer.TrainConfig`).
    test_frac : float
        Fraction of *stimuli* held out for retrieval evaluation (used by the CLI).
    seed : int
    """

    image_weight: float = 1.0
    text_weight: float = 1.0
    queue_size: int = 4096
    queued_brain: bool = False
    centre: bool = True
    logit_scale: float = CLIP_FINAL_LOGIT_SCALE
    patch_size: int = 14
    depth: int = 12
    width: int = 256
    heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    patch_dropout: float = 0.0
    patch_embedding: str = "shared"
    pool: str = "cls"
    layer_scale: float = 0.0
    mixup_alpha: float = 0.0
    mixup_frac: float = 1.0
    epochs: int = 150
    batch_size: int = 256
    lr: float = 3e-4
    min_lr: float = 1e-5
    warmup_frac: float = 0.01
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    precision: str = "32-true"
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_workers: int = 0
    progress: bool = False
    test_frac: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.image_weight < 0 or self.text_weight < 0 or self.image_weight + self.text_weight <= 0:
            problems.append(f"image_weight ({self.image_weight}) and text_weight ({self.text_weight}) must be >= 0 "
                            "and not both 0")
        if self.queue_size < 0:
            problems.append(f"queue_size must be >= 0, got {self.queue_size}")
        for name in ("queued_brain", "centre"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not self.logit_scale > 0:
            problems.append(f"logit_scale must be > 0, got {self.logit_scale}")
        if not 0 < self.min_lr <= self.lr:
            problems.append(f"min_lr ({self.min_lr}) must be in (0, lr={self.lr}]")
        if self.patch_embedding not in ("per_patch", "shared"):
            problems.append(f"patch_embedding must be 'per_patch' or 'shared', got {self.patch_embedding!r}")
        if self.mixup_alpha < 0 or not 0 <= self.mixup_frac <= 1:
            problems.append(f"mixup_alpha ({self.mixup_alpha}) must be >= 0 and mixup_frac ({self.mixup_frac}) in "
                            "[0, 1]")
        if self.pool not in ("cls", "mean"):
            problems.append(f"pool must be 'cls' or 'mean', got {self.pool!r}")
        if not self.layer_scale >= 0:
            problems.append(f"layer_scale must be >= 0, got {self.layer_scale}")
        if not 0 < self.test_frac < 1:
            problems.append(f"test_frac must be in (0, 1), got {self.test_frac}")
        if problems:
            raise BrainAlignError("volume aligner config: " + "; ".join(problems))
        self.train_config()  # validates the optimisation fields

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> VolumeAlignerConfig:
        return config_from_dict(cls, data, "volume aligner")

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> VolumeAlignerConfig:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise BrainAlignError(f"cannot read config {path}: {err}") from err
        if not isinstance(data, dict):
            raise BrainAlignError(f"config {path} must hold a mapping of fields, got {type(data).__name__}")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> VolumeAlignerConfig:
        return dataclasses.replace(self, **changes)

    @property
    def weights(self) -> dict[str, float]:
        return {"image": float(self.image_weight), "text": float(self.text_weight)}

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           weight_decay=self.weight_decay, warmup_frac=self.warmup_frac,
                           min_lr_frac=self.min_lr / self.lr, grad_clip=self.grad_clip, precision=self.precision,
                           accelerator=self.accelerator, devices=self.devices, strategy=self.strategy,
                           num_workers=self.num_workers, seed=self.seed, progress=self.progress)


# ---------------------------------------------------------------------------------------------------------------
# data
def check_training_inputs(X: Any, stimulus_ids: Any, targets: Mapping[str, np.ndarray | None]) -> tuple[
        np.ndarray, dict[str, np.ndarray]]:
    """Check shapes of masked rows, stimulus ids and per-row targets; returns ids (S,) str and float32 targets."""
    if getattr(X, "ndim", None) != 2:
        raise BrainAlignError(f"X must be a (S, V) array of masked voxel rows, got shape {getattr(X, 'shape', None)}")
    ids = np.asarray(stimulus_ids).astype(str)
    if ids.shape != (X.shape[0],):
        raise BrainAlignError(f"stimulus_ids must have shape ({X.shape[0]},), got {ids.shape}")
    out = {}
    for kind, emb in targets.items():
        if emb is None:
            continue
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != X.shape[0]:
            raise BrainAlignError(f"{kind} targets must be (S={X.shape[0]}, D), got {emb.shape}")
        bad = ~np.isfinite(emb).all(axis=1)
        if bad.any():
            raise BrainAlignError(f"{kind} targets contain NaN/inf for stimulus id(s) {ids[bad][:5].tolist()}")
        out[kind] = emb
    if not out:
        raise BrainAlignError("no target embeddings given (image and/or text)")
    return ids, out


class VolumeRows(Dataset):
    """Rows of masked voxels (read lazily, e.g. from a memory map) with per-row targets and stimulus codes."""

    def __init__(self, X: Any, codes: np.ndarray, targets: Mapping[str, np.ndarray]):
        self.X, self.codes, self.targets = X, torch.from_numpy(np.asarray(codes, dtype=np.int64)), {
            k: torch.from_numpy(v) for k, v in targets.items()}

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        row = np.asarray(self.X[i], dtype=np.float32)
        if not np.isfinite(row).all():
            raise BrainAlignError(f"scan row {i} contains {int((~np.isfinite(row)).sum())} NaN/inf voxel value(s)")
        item = {"x": torch.from_numpy(row.copy()), "code": self.codes[i], "index": torch.tensor(i)}
        item.update({k: v[i] for k, v in self.targets.items()})
        return item


# ---------------------------------------------------------------------------------------------------------------
# Lightning module shared by the ViT and the MLP baseline
class BrainTargetModule(AlignmentModule):
    """backbone (B, V) → (B, H), then one head per target → (B, D_target); loss Σ_k w_k · queued InfoNCE.

    Parameters
    ----------
    backbone : nn.Module
        Maps a batch of masked rows to (B, H).
    hidden_dim : int
        H.
    target_dims : dict of str to int
        Embedding size of each trained target.  A target with D == H uses the backbone output as is (the paper's
        single brain embedding in CLIP space); other targets get a linear head.
    weights : dict of str to float
    queue_size : int
    logit_scale : float
    train_config : TrainConfig
    shared_space : bool
        Use the backbone output itself for targets whose size equals ``hidden_dim`` (otherwise every target gets
        a linear head).
    mixup_alpha : float
        BiMixCo-style mixup (MindEye): in training, each batch's inputs are mixed with a shuffled copy,
        ``x̃ = λ·x + (1-λ)·x[π]`` with ``λ ~ Beta(α, α)``, and the loss is ``λ·L(x̃, y) + (1-λ)·L(x̃, y[π])`` (the
        InfoNCE with soft targets in both directions).  0 = off.
    mixup_frac : float
        Fraction of the epochs (the first ones) that use mixup, as MindEye's BiMixCo → SoftCLIP schedule.
    queued_brain : bool
        Use the queued brain embeddings as negatives of the target→brain direction (see
        :func:`~brainalign.objectives.queue.queued_info_nce`).
    """

    def __init__(self, backbone: nn.Module, hidden_dim: int, target_dims: Mapping[str, int],
                 weights: Mapping[str, float], queue_size: int, logit_scale: float, train_config: TrainConfig,
                 shared_space: bool = True, mixup_alpha: float = 0.0, mixup_frac: float = 1.0,
                 queued_brain: bool = False):
        super().__init__(train_config)
        self.queued_brain = bool(queued_brain)
        self.mixup_alpha, self.mixup_frac = float(mixup_alpha), float(mixup_frac)
        self.backbone = backbone
        self.target_dims = dict(target_dims)
        self.weights = {k: float(weights.get(k, 0.0)) for k in target_dims}
        self.logit_scale = float(logit_scale)
        self.heads = nn.ModuleDict({
            k: nn.Identity() if shared_space and d == hidden_dim else nn.Linear(hidden_dim, d, bias=False)
            for k, d in target_dims.items()})
        self.queues = nn.ModuleDict({k: EmbeddingQueue(queue_size, d, d) for k, d in target_dims.items()})
        for k, d in target_dims.items():  # zero = not centred (see fit_centres)
            self.register_buffer(f"centre_{k}", torch.zeros(d))

    def centre_of(self, kind: str) -> Tensor:
        """(D,) the mean L2-normalised training embedding of ``kind`` (zeros until :meth:`fit_centres`)."""
        return getattr(self, f"centre_{kind}")

    @torch.no_grad()
    def fit_centres(self, X: Any, batch_size: int = 64) -> None:
        """Set each target's centre to the mean L2-normalised embedding of the training rows ``X`` (S, V).

        :func:`embed_rows` subtracts it before the final normalisation.  The InfoNCE leaves a component common to
        every brain embedding unconstrained in the target→brain direction, and in the brain→target direction it
        acts as a per-candidate bias learnt on the training stimuli; on new stimuli it only draws every scan to the
        same candidates (hubs).  On the 1000-volume simulated cohort at ``--signal 1`` centring raised the ViT's
        brain→image R@1 from 18.5 to 33.5 % (BENCHMARKS.md).
        """
        for k in self.target_dims:
            self.centre_of(k).zero_()
        for k, v in embed_rows(self, X, batch_size).items():
            self.centre_of(k).copy_(torch.from_numpy(v.mean(axis=0)))

    def load_state(self, state_dict: Mapping[str, Tensor]) -> bool:
        """Load weights; files written before centring existed lack the centres (left at zero).  Returns whether
        the file held them."""
        missing, unexpected = self.load_state_dict(state_dict, strict=False)
        if unexpected or any(not m.startswith("centre_") for m in missing):
            raise BrainAlignError(f"model weights do not match the model: missing {missing}, unexpected {unexpected}")
        return not missing

    def embed(self, x: Tensor) -> dict[str, Tensor]:
        """(B, V) rows → {target: (B, D_target)} (not normalised)."""
        h = self.backbone(x)
        return {k: head(h) for k, head in self.heads.items()}

    def _mixup_active(self) -> bool:
        epochs = int(np.ceil(self.mixup_frac * self.train_config.epochs))
        return self.training and self.mixup_alpha > 0 and self.current_epoch < epochs

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, partner, lam = batch["x"], None, 1.0
        if self._mixup_active():
            lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
            partner = torch.randperm(x.shape[0], device=x.device)
            x = lam * x + (1.0 - lam) * x[partner]
        out = self.embed(x)
        parts, total = {}, None
        for kind, w in self.weights.items():
            if w <= 0:
                continue
            queue = self.queues[kind] if self.training else None
            loss = queued_info_nce(out[kind], batch[kind], batch["code"], queue, self.logit_scale, self.queued_brain)
            if partner is not None:
                mixed = queued_info_nce(out[kind], batch[kind][partner], batch["code"][partner], queue,
                                        self.logit_scale, self.queued_brain)
                loss = lam * loss + (1.0 - lam) * mixed
            if self.training:  # a mixed row is queued under its dominant stimulus
                rows = partner if partner is not None and lam < 0.5 else slice(None)
                self.queues[kind].enqueue(out[kind], batch[kind][rows], batch["code"][rows])
            parts[f"L_B{kind[0].upper()}"] = loss.detach()
            total = w * loss if total is None else total + w * loss
        return total, parts


def train_on_rows(module: BrainTargetModule, X: Any, stimulus_ids: np.ndarray, targets: Mapping[str, np.ndarray],
                  centre: bool) -> None:
    """Train ``module`` on masked rows ``X`` (S, V) with their stimulus ids (S,) and targets {kind: (S, D)}, leave
    it in eval mode and, when ``centre``, centre its embeddings on those rows
    (:meth:`BrainTargetModule.fit_centres`)."""
    fit_module(module, VolumeRows(X, stimulus_codes(stimulus_ids), targets), module.train_config)
    module.eval()
    if centre:
        module.fit_centres(X)


@torch.no_grad()
def embed_rows(module: BrainTargetModule, X: Any, batch_size: int = 64, progress: Any = None) -> dict[str, np.ndarray]:
    """Embeddings of every row of ``X`` (S, V) for every target head: {target: (S, D)} float32, L2-normalised,
    less the module's training centre (:meth:`BrainTargetModule.fit_centres`), normalised again."""
    was_training = module.training
    module.eval()
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in module.heads}
    try:
        for start in range(0, X.shape[0], batch_size):
            rows = np.array(X[start:start + batch_size], dtype=np.float32)  # a copy: memory maps are read-only
            if not np.isfinite(rows).all():
                bad = start + np.flatnonzero(~np.isfinite(rows).all(axis=1))
                raise BrainAlignError(f"scan row(s) {bad[:5].tolist()} contain NaN/inf voxel values")
            out = module.embed(torch.from_numpy(rows))
            for k, v in out.items():
                v = F.normalize(F.normalize(v.float(), dim=-1) - module.centre_of(k), dim=-1)
                chunks[k].append(v.numpy())
            if progress is not None:
                progress(len(rows))
    finally:
        module.train(was_training)
    return {k: np.concatenate(v) for k, v in chunks.items()}


# ---------------------------------------------------------------------------------------------------------------
class VolumeAligner:
    """The 3-D patch ViT aligned with frozen image and text embeddings.

    Parameters
    ----------
    config : VolumeAlignerConfig, optional

    Examples
    --------
    >>> model = VolumeAligner(VolumeAlignerConfig(depth=1, width=32, heads=2, patch_size=7, epochs=2))  # doctest: +SKIP
    >>> model.fit(X, mask, stimulus_ids, image=img, text=txt).embed(X_test, "image")               # doctest: +SKIP
    """

    kind = "vit"

    def __init__(self, config: VolumeAlignerConfig | None = None):
        self.config = config or VolumeAlignerConfig()
        self.module: BrainTargetModule | None = None

    def _build(self, mask: np.ndarray, target_dims: Mapping[str, int]) -> BrainTargetModule:
        c = self.config
        primary = "image" if "image" in target_dims else "text"
        encoder = VolumeViT(mask, embed_dim=target_dims[primary], patch_size=c.patch_size, width=c.width,
                            depth=c.depth, heads=c.heads, mlp_ratio=c.mlp_ratio, dropout=c.dropout,
                            patch_dropout=c.patch_dropout, patch_embedding=c.patch_embedding, pool=c.pool,
                            layer_scale=c.layer_scale)
        return BrainTargetModule(encoder, target_dims[primary], target_dims, c.weights, c.queue_size,
                                 c.logit_scale, c.train_config(), mixup_alpha=c.mixup_alpha, mixup_frac=c.mixup_frac,
                                 queued_brain=c.queued_brain)

    def fit(self, X: Any, mask: np.ndarray, stimulus_ids: Any, image: np.ndarray | None = None,
            text: np.ndarray | None = None) -> VolumeAligner:
        """Train on masked rows.

        Parameters
        ----------
        X : array-like (S, V)
            Masked voxel rows (``volume[mask]``), z-scored; a memory map is read per batch.
        mask : ndarray of bool (X, Y, Z)
            The mask that defines the columns of ``X`` (V = mask.sum()).
        stimulus_ids : array-like (S,)
            Stimulus shown in each scan (repeats and several subjects per stimulus allowed).
        image, text : ndarray (S, D_image) / (S, D_text), optional
            Frozen target embeddings per row; at least one, and each with a positive weight in the config.
        """
        mask = np.asarray(mask, dtype=bool)
        ids, targets = check_training_inputs(X, stimulus_ids, {"image": image, "text": text})
        if X.shape[1] != int(mask.sum()):
            raise BrainAlignError(f"X has {X.shape[1]} voxel columns but the mask has {int(mask.sum())} voxels")
        missing = [k for k, w in self.config.weights.items() if w > 0 and k not in targets]
        if missing:
            raise BrainAlignError(f"config weights {missing} targets > 0 but no {missing} embeddings were given; "
                                  "pass them or set their weight to 0")
        targets = {k: v for k, v in targets.items() if self.config.weights[k] > 0}
        seed_everything(self.config.seed)
        self.module = self._build(mask, {k: v.shape[1] for k, v in targets.items()})
        train_on_rows(self.module, X, ids, targets, self.config.centre)
        return self

    def _require(self) -> BrainTargetModule:
        if self.module is None:
            raise BrainAlignError("the model is not fitted; call fit() or load() first")
        return self.module

    @property
    def target_dims(self) -> dict[str, int]:
        return dict(self._require().target_dims)

    @property
    def mask(self) -> np.ndarray:
        return self._require().backbone.mask.cpu().numpy()

    def embed(self, X: Any, target: str = "image", batch_size: int = 64) -> np.ndarray:
        """L2-normalised brain embeddings of masked rows (or volumes) in ``target``'s space, shape (S, D)."""
        return self.embed_all(X, batch_size)[self._check_target(target)]

    def embed_all(self, X: Any, batch_size: int = 64, progress: Any = None) -> dict[str, np.ndarray]:
        """{target: (S, D)} L2-normalised brain embeddings for every trained target."""
        return embed_rows(self._require(), X, batch_size, progress)

    def _check_target(self, target: str) -> str:
        if target not in self._require().target_dims:
            raise BrainAlignError(f"the model was not trained for target {target!r}; trained: "
                                  f"{sorted(self._require().target_dims)}")
        return target

    def save(self, path: str | os.PathLike) -> Path:
        """Write weights, mask and config to ``path`` (a ``.pt`` file readable with ``weights_only=True``)."""
        module = self._require()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"kind": self.kind, "config": self.config.to_dict(), "target_dims": module.target_dims,
                    "state_dict": module.state_dict()}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> VolumeAligner:
        """Read a model written by :meth:`save` (``torch.load(weights_only=True)``)."""
        state = _load_checkpoint(path, cls.kind)
        model = cls(VolumeAlignerConfig.from_dict(state["config"]))  # fields added later take their defaults
        mask = state["state_dict"]["backbone.mask"].numpy()
        model.module = model._build(mask, state["target_dims"])
        if not model.module.load_state(state["state_dict"]):
            model.config = model.config.replace(centre=False)
        model.module.eval()
        return model


def _load_checkpoint(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BrainAlignError(f"model file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise BrainAlignError(f"cannot read model file {path}: {err}") from err
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else None
        raise BrainAlignError(f"{path} is not a {kind!r} model file (kind {found!r})")
    return state
