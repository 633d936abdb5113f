"""BrainNetTF: the network transformer trained supervised with cross-entropy (NeuroLIP's baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from brainalign.encoders.brain_network import BNTClassifier
from brainalign.models.base import Task
from brainalign.models.registry import register_method
from brainalign.models.torch_method import TorchMethod
from brainalign.training.trainer import AlignmentModule, TrainConfig


class BNTModule(AlignmentModule):
    def __init__(self, n_rois: int, train_config: TrainConfig, **encoder_kw: Any):
        super().__init__(train_config)
        self.model = BNTClassifier(n_rois, n_classes=2, **encoder_kw)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = F.cross_entropy(self.model(batch["fc"]), batch["y"])
        return loss, {"ce": loss.detach()}


@register_method("brainnettf")
class BrainNetTF(TorchMethod):
    """Brain Network Transformer classifier on connectivity (Kan et al., 2022).

    Model parameters: ``n_layers`` (2), ``n_heads`` (4), ``ff_dim`` (1024), ``n_clusters`` (100), ``dropout`` (0.1).
    Training defaults follow BNT (Adam-style lr 1e-4, weight decay 1e-4, batch 16, cosine schedule) with fewer
    epochs (30) so CPU runs stay short; BNT trains 200 epochs with mixup, which is not used here.
    """

    model_defaults = {"n_layers": 2, "n_heads": 4, "ff_dim": 1024, "n_clusters": 100, "dropout": 0.1}
    train_defaults = {"epochs": 30, "batch_size": 16, "lr": 1e-4, "weight_decay": 1e-4, "min_lr_frac": 0.1}

    def build_module(self, task: Task, train: np.ndarray) -> BNTModule:
        return BNTModule(task.cohort.n_rois, self.train_config, **self.model_params)

    def tensors(self, task: Task, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return {"fc": torch.from_numpy(np.ascontiguousarray(task.fc[idx])),
                "y": torch.from_numpy(task.y[idx].astype(np.int64))}

    def scores(self, module: BNTModule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.softmax(module.model(batch["fc"]), dim=-1)[:, 1]
