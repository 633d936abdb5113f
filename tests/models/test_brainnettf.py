"""BrainNetTF and the network-transformer encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainalign.data.cohort import Cohort
from brainalign.encoders.brain_network import BrainNetworkEncoder, ClusterNodeAttention, orthonormal_rows
from brainalign.errors import BrainAlignError
from brainalign.models import Task, get_method


def test_orthonormal_centres_and_encoder_shapes():
    c = orthonormal_rows(10, 16)
    assert torch.allclose(c @ c.T, torch.eye(10), atol=1e-5)
    with pytest.raises(BrainAlignError, match="cannot make 20 orthonormal"):
        orthonormal_rows(20, 16)
    enc = BrainNetworkEncoder(10, n_heads=4, ff_dim=32, n_clusters=50)  # 10 ROIs: projected to 12, M capped at 12
    out = enc(torch.randn(3, 10, 10))
    assert out["nodes"].shape == (3, 10, 12) and out["clusters"].shape == (3, 12, 12)
    assert torch.allclose(out["assignment"].sum(-1), torch.ones(3, 10), atol=1e-5)
    tokens, attn = ClusterNodeAttention(12, 4)(out["clusters"], out["nodes"])
    assert tokens.shape == (3, 12, 12) and attn.shape == (3, 12, 10)
    with pytest.raises(BrainAlignError, match="expected connectivity of shape"):
        enc(torch.randn(3, 10, 9))


def test_brainnettf_learns_toy_cohort(toy_cohort_dir):
    task = Task.from_cohort(Cohort.load(toy_cohort_dir), "dx", "sex")
    train, test = np.arange(0, 44), np.arange(44, 60)
    model = get_method("brainnettf", epochs=15, batch_size=8, lr=1e-3, ff_dim=64, n_clusters=8)
    score = model.fit(task, train).predict_proba(task, test)
    assert score.shape == (16,) and np.isfinite(score).all()
    assert ((score > 0.5) == task.y[test]).mean() >= 0.75


def test_brainnettf_bad_parameters(toy_cohort_dir):
    with pytest.raises(BrainAlignError, match="unknown parameter.*depth"):
        get_method("brainnettf", depth=3)
    task = Task.from_cohort(Cohort.load(toy_cohort_dir), "dx")
    with pytest.raises(BrainAlignError, match="one class only"):
        get_method("brainnettf", epochs=1).fit(task, np.flatnonzero(task.y == 0))


def test_cluster_tokens_differ_at_initialisation():
    """With BNT's plain re-encoding the assignment starts uniform and all cluster tokens coincide."""
    torch.manual_seed(0)
    enc = BrainNetworkEncoder(40, ff_dim=64, n_clusters=20)
    fc = torch.corrcoef(torch.randn(40, 100)).expand(4, 40, 40)
    out = enc(fc)
    assert out["assignment"].max(-1).values.mean() > 3 / 20  # far from uniform (1/20)
    assert out["clusters"].std(1).mean() > 0.1 * out["clusters"].norm(dim=-1).mean() / 40 ** 0.5


def test_select_epoch_keeps_the_best_validation_epoch(toy_cohort_dir):
    from sklearn.metrics import roc_auc_score

    from brainalign.models.torch_method import TorchMethod

    task = Task.from_cohort(Cohort.load(toy_cohort_dir), "dx", "sex")
    train, val = np.arange(0, 40), np.arange(40, 60)
    kw = dict(epochs=6, batch_size=8, lr=1e-3, ff_dim=32, n_clusters=8)
    plain = get_method("brainnettf", **kw).fit(task, train, val)
    assert plain.selected_epoch_ is None and plain.val_auc_by_epoch_ == []  # off by default
    model = get_method("brainnettf", select_epoch=True, **kw).fit(task, train, val)
    history = model.val_auc_by_epoch_
    assert len(history) == 6 and model.selected_epoch_ == int(np.argmax(history)) + 1
    restored = roc_auc_score(task.y[val], TorchMethod.predict_proba(model, task, val))
    assert restored == pytest.approx(max(history), abs=1e-6)  # the kept weights are that epoch's
    last = roc_auc_score(task.y[val], TorchMethod.predict_proba(plain, task, val))
    assert last == pytest.approx(history[-1], abs=1e-6)  # selection does not change the training run itself
    one_class = get_method("brainnettf", select_epoch=True, **kw).fit(task, train, val[task.y[val] == 1])
    assert one_class.selected_epoch_ is None  # no AUC on a one-class validation split: the last epoch is kept
