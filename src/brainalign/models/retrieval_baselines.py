"""Retrieval baselines for the volume aligner (paper Table 1): ridge regression and a MindEye-style MLP.

- :class:`RidgeRetrieval` regresses each target embedding on the masked voxels with scikit-learn's ``RidgeCV``
  (penalty chosen by cross-validation grouped by stimulus; with V ≫ S each fit works on the S×S Gram matrix), as in
  Takagi & Nishimoto and Ozcelik & VanRullen's linear decoders.
- :class:`MLPRetrieval` is a small MindEye-like network: a linear layer from voxels to a hidden size, residual
  MLP blocks (Linear → LayerNorm → GELU → Dropout), and one linear head per target, trained with the same queued,
  duplicate-aware symmetric InfoNCE as the ViT (MindEye's MixCo/SoftCLIP schedule and diffusion prior are left out:
  only the retrieval submodule is reproduced).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from brainalign.errors import BrainAlignError
from brainalign.evaluation.metrics import recall_at_k
from brainalign.utils import config_from_dict
from brainalign.models.volume_aligner import (
    BrainTargetModule,
    _load_checkpoint,
    check_training_inputs,
    embed_rows,
    train_on_rows,
)
from brainalign.objectives.queue import CLIP_FINAL_LOGIT_SCALE
from brainalign.training.trainer import TrainConfig, seed_everything

__all__ = ["MLPConfig", "MLPRetrieval", "ResidualMLP", "RidgeRetrieval", "row_space_basis", "stimulus_folds"]


def stimulus_folds(stimulus_ids: Any, n_folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Cross-validation folds that keep every stimulus on one side (``GroupKFold`` by stimulus id).

    Rows of one stimulus (other subjects, repeats) share its target embedding, so leave-one-row-out validation
    would score a penalty on rows whose target is in the training part, which can favour too small a penalty.  Returns
    None (``RidgeCV``'s efficient leave-one-out) when there are fewer than two distinct stimuli.
    """
    from sklearn.model_selection import GroupKFold

    ids = np.asarray(stimulus_ids).astype(str)
    n_groups = len(np.unique(ids))
    if n_groups < 2:
        return None
    return list(GroupKFold(n_splits=min(n_folds, n_groups)).split(ids, groups=ids))


def row_space_basis(X: np.ndarray, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenpairs of ``X·Xᵀ`` above ``rtol·λ_max``: coordinates ``X·V = U·√λ`` (S, r) of the rows of ``X`` (S, V) in
    an orthonormal basis ``V = Xᵀ·U·λ^(-1/2)`` of their span, with ``U`` (S, r) and ``√λ`` (r,).

    Ridge regression on the coordinates equals ridge on ``X`` (intercept included): coefficients ``β`` (D, r)
    there are ``β·λ^(-1/2)·Uᵀ·X`` (D, V) on the voxels."""
    gram = (X @ X.T).astype(np.float64)
    lam, U = np.linalg.eigh(gram)
    keep = lam > rtol * max(float(lam[-1]), 1e-300)
    U, root = U[:, keep], np.sqrt(lam[keep])
    return U * root, U, root


class RidgeRetrieval:
    """Ridge regression from masked voxels to each target embedding; its (maybe centred) predictions are the brain
    embeddings.

    Centring: a ridge prediction is the training mean of the target plus a shrunk scan-specific part.  When the
    shrinkage is strong (many voxels, few scans) the mean dominates every prediction's cosine and every scan retrieves
    the candidates nearest the mean (hubs): on a 1000-volume simulated cohort brain→image R@1 was 13.5 % with the
    mean kept and 83.0 % with it subtracted (BENCHMARKS.md); on other data keeping it ranks better.  ``fit`` chooses,
    per target, by the same stimulus-grouped folds as the penalty, whichever of the two gives the higher held-out
    brain→target R@1 (``centred``).

    Parameters
    ----------
    alphas : sequence of float
        Penalties searched by ``RidgeCV`` with 5-fold cross-validation grouped by stimulus
        (:func:`stimulus_folds`), one choice per target.
    """

    kind = "ridge"

    def __init__(self, alphas: tuple[float, ...] = (1e1, 1e2, 1e3, 1e4, 1e5, 1e6)):
        self.alphas = tuple(float(a) for a in alphas)
        self.models: dict[str, Any] = {}
        self.offsets: dict[str, np.ndarray] = {}  # subtracted from each target's predictions: 0 or its mean

    def fit(self, X: Any, stimulus_ids: Any, image: np.ndarray | None = None,
            text: np.ndarray | None = None) -> RidgeRetrieval:
        """Choose each target's penalty and centring by cross-validation grouped by stimulus, then fit on all rows.

        The search and the final fit run on the rows' coordinates in their own row space, ``X·V = U·√λ`` from the
        eigendecomposition of the (S, S) Gram matrix (:func:`row_space_basis`): ridge fits and predictions
        (intercept included) depend on ``X`` only through that space, so each of the folds × penalties fits costs
        O(S³) instead of O(S²·V), and the final coefficients are mapped back to the voxels in O(D·S·V).
        """
        from sklearn.linear_model import Ridge, RidgeCV

        ids, targets = check_training_inputs(X, stimulus_ids, {"image": image, "text": text})
        Xa = np.asarray(X, dtype=np.float32)
        if not np.isfinite(Xa).all():
            rows = np.flatnonzero(~np.isfinite(Xa).all(axis=1))
            raise BrainAlignError(f"scan row(s) {rows[:5].tolist()} contain NaN/inf voxel values")
        scores, U, root = row_space_basis(Xa)
        cv = stimulus_folds(ids)
        self.models, self.offsets = {}, {}
        for k, y in targets.items():
            # a list: scikit-learn writes into a one-element sequence of alphas
            alpha = float(RidgeCV(alphas=list(self.alphas), cv=cv).fit(scores, y).alpha_)
            centre = cv is not None and _centring_wins(scores, y, ids, alpha, cv)
            reduced = Ridge(alpha=alpha).fit(scores, y)
            model = Ridge(alpha=alpha)
            model.coef_ = (((reduced.coef_ / root) @ U.T).astype(np.float32) @ Xa).astype(np.float64)
            model.intercept_, model.n_features_in_, model.alpha_ = reduced.intercept_, Xa.shape[1], alpha
            self.models[k] = model
            self.offsets[k] = y.mean(axis=0) if centre else np.zeros(y.shape[1], dtype=np.float32)
        return self

    @property
    def centred(self) -> dict[str, bool]:
        """Per target: whether the predictions are centred on the training mean before the cosine."""
        return {k: bool(np.any(v != 0)) for k, v in self.offsets.items()}

    @property
    def chosen_alphas(self) -> dict[str, float]:
        return {k: float(m.alpha_) for k, m in self.models.items()}

    def embed_all(self, X: Any, batch_size: int = 512, progress: Any = None) -> dict[str, np.ndarray]:
        """{target: (S, D)} L2-normalised predictions, less the training mean where ``centred``."""
        if not self.models:
            raise BrainAlignError("the ridge baseline is not fitted")
        out: dict[str, list[np.ndarray]] = {k: [] for k in self.models}
        for start in range(0, X.shape[0], batch_size):
            rows = np.asarray(X[start:start + batch_size], dtype=np.float32)
            for k, m in self.models.items():
                p = m.predict(rows) - self.offsets.get(k, 0.0)
                out[k].append(p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12))
            if progress is not None:
                progress(len(rows))
        return {k: np.concatenate(v).astype(np.float32) for k, v in out.items()}

    def embed(self, X: Any, target: str = "image") -> np.ndarray:
        return self.embed_all(X)[target]

    def save(self, path: str | os.PathLike) -> Path:
        """Coefficients (D, V), intercepts (D,) and chosen penalties per target in an ``.npz`` (no pickles)."""
        if not self.models:
            raise BrainAlignError("the ridge baseline is not fitted")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for k, m in self.models.items():
            arrays.update({f"{k}_coef": m.coef_, f"{k}_intercept": np.atleast_1d(m.intercept_),
                           f"{k}_alpha": np.array(m.alpha_), f"{k}_offset": self.offsets[k]})
        np.savez(path, alphas=np.array(self.alphas), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> RidgeRetrieval:
        from sklearn.linear_model import Ridge

        path = Path(path)
        if not path.is_file():
            raise BrainAlignError(f"model file {path} does not exist")
        with np.load(path, allow_pickle=False) as data:
            model = cls(tuple(data["alphas"].tolist()))
            for k in ("image", "text"):
                if f"{k}_coef" in data:
                    r = Ridge(alpha=float(data[f"{k}_alpha"]))
                    r.coef_, r.intercept_ = data[f"{k}_coef"], data[f"{k}_intercept"]
                    r.n_features_in_ = r.coef_.shape[1]
                    model.models[k] = r
                    # files written before centring existed hold no offset: their predictions were not centred
                    model.offsets[k] = data[f"{k}_offset"] if f"{k}_offset" in data else np.zeros(r.coef_.shape[0])
        return model


def _top1(pred: np.ndarray, y: np.ndarray, ids: np.ndarray) -> float:
    """Brain→target R@1 of predictions (n, D) among the distinct targets of their stimuli ``ids`` (n,)."""
    _, first, row_of = np.unique(ids, return_index=True, return_inverse=True)
    cand = y[first] / np.maximum(np.linalg.norm(y[first], axis=1, keepdims=True), 1e-12)
    return recall_at_k(pred @ cand.T, row_of, ks=(1,))["R@1"]  # norms of pred do not change a row's ranking


def _centring_wins(scores: np.ndarray, y: np.ndarray, ids: np.ndarray, alpha: float,
                   folds: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    """Whether subtracting the training mean from ridge's predictions gives a higher held-out brain→target R@1
    than keeping it, summed over the stimulus-grouped ``folds`` (ties keep the mean)."""
    from sklearn.linear_model import Ridge

    kept = centred = 0.0
    for train, val in folds:
        pred = Ridge(alpha=alpha).fit(scores[train], y[train]).predict(scores[val])
        kept += _top1(pred, y[val], ids[val])
        centred += _top1(pred - y[train].mean(axis=0), y[val], ids[val])
    return centred > kept


class ResidualMLP(nn.Module):
    """(B, V) → (B, hidden): Linear → LayerNorm → GELU → Dropout, then ``n_blocks`` residual blocks of the same."""

    def __init__(self, n_voxels: int, hidden: int = 512, n_blocks: int = 2, dropout: float = 0.15):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(n_voxels, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
            for _ in range(n_blocks))

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return h


@dataclass
class MLPConfig:
    """Settings of the MindEye-style baseline (small, CPU-trainable defaults)."""

    hidden: int = 256
    n_blocks: int = 2
    dropout: float = 0.15
    queue_size: int = 0
    centre: bool = True  # brain embeddings centred on their training mean (BrainTargetModule.fit_centres)
    logit_scale: float = CLIP_FINAL_LOGIT_SCALE
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_frac: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.centre, bool):
            raise BrainAlignError(f"MLP option centre must be true or false, got {self.centre!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> MLPConfig:
        return config_from_dict(cls, data, "MLP")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class MLPRetrieval:
    """MindEye-style residual MLP with one head per target, trained contrastively.

    Parameters
    ----------
    config : MLPConfig, optional
    """

    kind = "mlp"

    def __init__(self, config: MLPConfig | None = None):
        self.config = config or MLPConfig()
        self.module: BrainTargetModule | None = None

    def _build(self, n_voxels: int, target_dims: dict[str, int]) -> BrainTargetModule:
        c = self.config
        train = TrainConfig(epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, weight_decay=c.weight_decay,
                            warmup_frac=c.warmup_frac, seed=c.seed)
        backbone = ResidualMLP(n_voxels, c.hidden, c.n_blocks, c.dropout)
        return BrainTargetModule(backbone, c.hidden, target_dims, {k: 1.0 for k in target_dims}, c.queue_size,
                                 c.logit_scale, train, shared_space=False)

    def fit(self, X: Any, stimulus_ids: Any, image: np.ndarray | None = None,
            text: np.ndarray | None = None) -> MLPRetrieval:
        ids, targets = check_training_inputs(X, stimulus_ids, {"image": image, "text": text})
        seed_everything(self.config.seed)
        self.module = self._build(X.shape[1], {k: v.shape[1] for k, v in targets.items()})
        train_on_rows(self.module, X, ids, targets, self.config.centre)
        return self

    def embed_all(self, X: Any, batch_size: int = 256, progress: Any = None) -> dict[str, np.ndarray]:
        if self.module is None:
            raise BrainAlignError("the MLP baseline is not fitted")
        return embed_rows(self.module, X, batch_size, progress)

    def embed(self, X: Any, target: str = "image") -> np.ndarray:
        return self.embed_all(X)[target]

    def save(self, path: str | os.PathLike) -> Path:
        if self.module is None:
            raise BrainAlignError("the MLP baseline is not fitted")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n_vox = self.module.backbone.stem[0].in_features
        torch.save({"kind": self.kind, "config": self.config.to_dict(), "target_dims": self.module.target_dims,
                    "n_voxels": n_vox, "state_dict": self.module.state_dict()}, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> MLPRetrieval:
        state = _load_checkpoint(path, cls.kind)
        model = cls(MLPConfig.from_dict(state["config"]))
        model.module = model._build(int(state["n_voxels"]), state["target_dims"])
        if not model.module.load_state(state["state_dict"]):
            model.config = dataclasses.replace(model.config, centre=False)
        model.module.eval()
        return model
