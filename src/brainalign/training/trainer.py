"""Training through Lightning: one config, one LightningModule base, one ``fit_module`` call.

Every neural method (NeuroLIP, CLIP/SigLIP/FairCLIP, BrainNetTF, ...) subclasses :class:`AlignmentModule`,
implements ``compute_loss(batch) -> (loss, parts)``, and is trained by :func:`fit_module` with AdamW and a
linear warm-up + cosine schedule.  GPU users pick mixed precision and DDP through :class:`TrainConfig`
(``precision="bf16-mixed"``, ``devices=4``, ``strategy="ddp"``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from brainalign.errors import BrainAlignError
from brainalign.utils import config_from_dict

PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "64-true")


@dataclass
class TrainConfig:
    """Optimisation and hardware settings shared by every neural method.

    Parameters
    ----------
    epochs : int
        Passes over the training scans (NeuroLIP paper: 64).
    batch_size : int
        Scans per step (paper: 32); the last incomplete batch is dropped when the data allow a full one,
        since pairwise losses need at least two scans.
    lr, weight_decay : float
        AdamW settings (paper: 1e-4, 1e-4).
    warmup_frac : float
        Fraction of steps with linear warm-up (paper: 0.03), then cosine decay to ``min_lr_frac · lr``.
    min_lr_frac : float
        Final learning rate as a fraction of ``lr``.
    grad_clip : float
        Gradient-norm clipping (0 disables).
    precision : str
        Lightning precision: "32-true" (CPU default), "16-mixed" or "bf16-mixed" (GPU), "64-true".
    accelerator : str
        "cpu", "gpu", "auto".
    devices : int or str
        Devices per node ("auto", 1, 4, ...).
    strategy : str
        "auto", "ddp", "ddp_spawn", "fsdp".
    num_workers : int
        DataLoader workers (data are in memory; 0 is usually fastest on CPU).
    seed : int
        Seeds Python, numpy and torch (workers too) before the model is built.
    progress : bool
        Show a progress bar.
    checkpoint_dir : str, optional
        Where ``last.ckpt`` is kept; with ``resume=True`` training continues from it.
    resume : bool
    select_epoch : bool
        Keep the weights of the epoch with the highest validation AUC instead of the last epoch's, when the
        method is given validation scans (:meth:`~brainalign.models.torch_method.TorchMethod.fit`; the benchmark
        passes each fold's validation scans).  Early stopping without stopping: every epoch is trained, so the
        random stream, and the last epoch's weights, are those of a run without selection.
    """

    epochs: int = 64
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_frac: float = 0.03
    min_lr_frac: float = 0.0
    grad_clip: float = 1.0
    precision: str = "32-true"
    accelerator: str = "cpu"
    devices: int | str = 1
    strategy: str = "auto"
    num_workers: int = 0
    seed: int = 0
    progress: bool = False
    checkpoint_dir: str | None = None
    resume: bool = False
    select_epoch: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            problems.append(f"batch_size must be >= 2 (contrastive losses compare scans), got {self.batch_size}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.warmup_frac < 1:
            problems.append(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if self.precision not in PRECISIONS:
            problems.append(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if problems:
            raise BrainAlignError("training config: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrainConfig:
        return config_from_dict(cls, data, "training")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def warmup_cosine(step: int, total: int, warmup: int, min_frac: float) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine to ``min_frac``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * progress))


class AlignmentModule(pl.LightningModule):
    """Base LightningModule: AdamW + warm-up/cosine, logging of every loss part.

    Subclasses implement :meth:`compute_loss` returning ``(loss, {name: value})``.
    """

    def __init__(self, train_config: TrainConfig):
        super().__init__()
        self.train_config = train_config

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, parts = self.compute_loss(batch)
        if not torch.isfinite(loss):
            raise BrainAlignError(f"training diverged: loss is {loss.item()} at step {self.global_step} "
                                  f"(parts: { {k: float(v) for k, v in parts.items()} }); lower lr or check inputs")
        self.log("loss", loss, prog_bar=True, batch_size=len(batch["index"]))
        for name, value in parts.items():
            self.log(f"loss/{name}", value, batch_size=len(batch["index"]))
        return loss

    def parameter_lr(self, name: str) -> float:
        """Peak learning rate of the parameter ``name`` (default: the training config's ``lr``)."""
        return self.train_config.lr

    def configure_optimizers(self):
        cfg = self.train_config
        groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if p.requires_grad:
                no_decay = p.ndim < 2 or "temperature" in name or "bias" in name
                key = (0.0 if no_decay else cfg.weight_decay, self.parameter_lr(name))
                groups.setdefault(key, []).append(p)
        optimizer = torch.optim.AdamW([{"params": ps, "weight_decay": wd, "lr": lr}
                                       for (wd, lr), ps in groups.items()], lr=cfg.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(round(cfg.warmup_frac * total))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total, warmup, cfg.min_lr_frac))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class IndexedTensors(Dataset):
    """Rows of several equally long tensors, plus ``index`` (the row number), as a dict per item."""

    def __init__(self, **tensors: torch.Tensor):
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise BrainAlignError(f"tensors have different lengths: { {k: len(v) for k, v in tensors.items()} }")
        self.tensors = tensors
        self.n = lengths.pop()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        item = {k: v[i] for k, v in self.tensors.items()}
        item["index"] = torch.tensor(i)
        return item


def fit_module(module: AlignmentModule, dataset: Dataset, config: TrainConfig,
               on_epoch_end: Callable[[AlignmentModule, int], None] | None = None) -> AlignmentModule:
    """Train ``module`` on ``dataset`` with Lightning; returns the module (trained in place).

    With ``config.checkpoint_dir``, ``last.ckpt`` is saved after each epoch; ``config.resume`` continues from it.
    ``on_epoch_end(module, epoch)`` is called after every training epoch (0-based; every submodule's train/eval
    mode is restored afterwards).
    """
    if len(dataset) < 2:
        raise BrainAlignError(f"training needs at least 2 scans, got {len(dataset)}")
    generator = torch.Generator().manual_seed(config.seed)
    batch_size = min(config.batch_size, len(dataset))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator,
                        drop_last=len(dataset) % batch_size == 1,  # never a batch of one scan
                        num_workers=config.num_workers, persistent_workers=config.num_workers > 0)
    callbacks, ckpt_path = [], None
    if on_epoch_end is not None:
        callbacks.append(_EpochEndHook(on_epoch_end))
    if config.checkpoint_dir:
        from lightning.pytorch.callbacks import ModelCheckpoint

        Path(config.checkpoint_dir).mkdir(parents=True, exist_ok=True)
        callbacks.append(ModelCheckpoint(dirpath=config.checkpoint_dir, save_last=True, save_top_k=0,
                                         enable_version_counter=False))
        last = Path(config.checkpoint_dir) / "last.ckpt"
        if config.resume and last.exists():
            ckpt_path = str(last)
    with warnings.catch_warnings(), _quiet_lightning():
        # Lightning's notes about dataloader workers, logging intervals and its own deprecations
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer = pl.Trainer(
            max_epochs=config.epochs, accelerator=config.accelerator, devices=config.devices,
            strategy=config.strategy, precision=config.precision, gradient_clip_val=config.grad_clip or None,
            enable_progress_bar=config.progress, enable_model_summary=False, logger=False,
            enable_checkpointing=bool(config.checkpoint_dir), callbacks=callbacks,
            default_root_dir=config.checkpoint_dir or None, num_sanity_val_steps=0, deterministic=False,
        )
        trainer.fit(module, loader, ckpt_path=ckpt_path)
    return module


class _EpochEndHook(pl.Callback):
    """Calls ``fn(module, epoch)`` at the end of every training epoch."""

    def __init__(self, fn: Callable[[AlignmentModule, int], None]):
        self.fn = fn

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: AlignmentModule) -> None:
        modes = [(m, m.training) for m in pl_module.modules()]
        self.fn(pl_module, trainer.current_epoch)
        for m, training in modes:
            m.train(training)


@contextlib.contextmanager
def _quiet_lightning():
    """Silence Lightning's start-up banners (GPU/TPU availability, tips) below warning level."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning", "lightning.pytorch.utilities.rank_zero",
             "lightning.fabric.utilities.rank_zero")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (one seed for everything)."""
    pl.seed_everything(seed, workers=True, verbose=False)


def checkpoint_loads_safely(path: str | os.PathLike) -> dict[str, Any]:
    """Load a Lightning checkpoint with ``weights_only=True`` (no arbitrary code from pickles)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()
