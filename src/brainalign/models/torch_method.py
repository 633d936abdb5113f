"""Base for neural methods: keyword arguments split into model and training settings, Lightning fit, batched scoring."""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from brainalign.errors import BrainAlignError
from brainalign.models.base import Method, Task
from brainalign.training.trainer import AlignmentModule, IndexedTensors, TrainConfig, fit_module, seed_everything

TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


class TorchMethod(Method):
    """A :class:`Method` trained with :func:`~brainalign.training.trainer.fit_module`.

    Any keyword argument that names a :class:`TrainConfig` field (``epochs``, ``lr``, ``precision``,
    ``devices``, ...) is a training setting; the others must be keys of ``model_defaults``.

    Subclasses define ``model_defaults``, optionally ``train_defaults`` and ``model_choices`` (model parameters
    restricted to a set of values, checked here so a bad option fails before any work), and implement
    :meth:`build_module`, :meth:`tensors` (per-scan inputs) and :meth:`scores` (positive-class probabilities of a
    batch).
    """

    model_defaults: ClassVar[dict[str, Any]] = {}
    train_defaults: ClassVar[dict[str, Any]] = {}
    model_choices: ClassVar[dict[str, tuple[Any, ...]]] = {}
    predict_batch_size: ClassVar[int] = 64

    def __init__(self, seed: int = 0, **params: Any):
        unknown = sorted(set(params) - TRAIN_FIELDS - set(self.model_defaults))
        if unknown:
            raise TypeError(f"unknown parameter(s) {unknown}; model parameters: {sorted(self.model_defaults)}, "
                            f"training parameters: {sorted(TRAIN_FIELDS)}")
        train = {**self.train_defaults, **{k: v for k, v in params.items() if k in TRAIN_FIELDS}, "seed": seed}
        self.train_config = TrainConfig.from_dict(train)
        self.model_params = {**self.model_defaults, **{k: v for k, v in params.items() if k not in TRAIN_FIELDS}}
        for key, allowed in self.model_choices.items():
            if self.model_params[key] not in allowed:
                raise BrainAlignError(f"{self.name}: {key} must be one of {allowed}, got {self.model_params[key]!r}")
        self.params = {**self.model_params, **self.train_config.to_dict()}
        self.module_: AlignmentModule | None = None

    @abstractmethod
    def build_module(self, task: Task, train: np.ndarray) -> AlignmentModule:
        """A fresh LightningModule for this task (may look at the training scans, e.g. for text vocabularies)."""

    @abstractmethod
    def tensors(self, task: Task, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Per-scan input tensors (first dimension len(idx)) for training and scoring."""

    def predict_tensors(self, task: Task, idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Inputs for :meth:`scores` (default: :meth:`tensors`; brain–text methods add class prompts)."""
        return self.tensors(task, idx)

    @abstractmethod
    def scores(self, module: AlignmentModule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(b,) score of the positive class for a batch (a probability, or a margin that a subclass calibrates)."""

    def fit(self, task: Task, train: np.ndarray, val: np.ndarray | None = None) -> TorchMethod:
        """Train on the scans at ``train``.  With ``select_epoch`` and validation scans ``val`` (both classes
        present), the weights of the epoch whose raw scores (:meth:`scores`) reach the highest validation AUC are
        kept; ``val_auc_by_epoch_`` (one value per epoch) and ``selected_epoch_`` (1-based) record the choice."""
        from sklearn.metrics import roc_auc_score

        train = np.asarray(train, dtype=int)
        classes = np.unique(task.y[train])
        if classes.size < 2:
            raise BrainAlignError(f"{self.name}: the training split has one class only "
                                  f"({task.target}={task.positive if classes[0] else task.negative})")
        config = self.train_config
        if self.workdir is not None:
            config = dataclasses.replace(config, checkpoint_dir=str(Path(self.workdir) / "checkpoints"))
        seed_everything(config.seed)
        self.module_ = self.build_module(task, train)
        self.val_auc_by_epoch_, self.selected_epoch_ = [], None
        hook, best = None, {}
        if config.select_epoch and val is not None and np.unique(task.y[np.asarray(val, dtype=int)]).size == 2:
            val = np.asarray(val, dtype=int)

            def hook(module: AlignmentModule, epoch: int) -> None:
                auc = float(roc_auc_score(task.y[val], TorchMethod.predict_proba(self, task, val)))
                self.val_auc_by_epoch_.append(auc)
                if auc > best.get("auc", -np.inf):
                    best.update(auc=auc, epoch=epoch + 1,
                                state={k: v.detach().clone() for k, v in module.state_dict().items()})

        fit_module(self.module_, IndexedTensors(**self.tensors(task, train)), config, on_epoch_end=hook)
        if best:
            self.module_.load_state_dict(best["state"])
            self.selected_epoch_ = best["epoch"]
        return self

    def predict_proba(self, task: Task, idx: np.ndarray) -> np.ndarray:
        return self.inference(task, idx, self.predict_tensors, self.scores).numpy().astype(float)

    def inference(self, task: Task, idx: np.ndarray, make_tensors: Callable, compute: Callable) -> torch.Tensor:
        """``compute(module, batch)`` over chunks of ``idx`` in eval mode, without gradients; results concatenated
        on the CPU.  ``make_tensors(task, chunk)`` builds each batch (moved to the module's device)."""
        if self.module_ is None:
            raise BrainAlignError(f"{self.name}: predict_proba called before fit")
        module = self.module_.eval()
        device = next(module.parameters()).device
        idx = np.asarray(idx, dtype=int)
        out = []
        with torch.inference_mode():
            for start in range(0, len(idx), self.predict_batch_size):
                batch = make_tensors(task, idx[start : start + self.predict_batch_size])
                out.append(compute(module, {k: v.to(device) for k, v in batch.items()}).float().cpu())
        return torch.cat(out)
