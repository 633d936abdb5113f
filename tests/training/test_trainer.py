"""Training loop: schedule, config checks, checkpoints that resume, safe loading."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from brainalign.errors import BrainAlignError
from brainalign.training.trainer import (
    AlignmentModule,
    IndexedTensors,
    TrainConfig,
    checkpoint_loads_safely,
    fit_module,
    seed_everything,
    warmup_cosine,
)


class LinearModule(AlignmentModule):
    def __init__(self, config):
        super().__init__(config)
        self.net = nn.Linear(3, 1)

    def compute_loss(self, batch):
        loss = ((self.net(batch["x"]).squeeze(-1) - batch["t"]) ** 2).mean()
        return loss, {"mse": loss.detach()}


def data(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return IndexedTensors(x=x, t=x @ torch.tensor([1.0, -2.0, 0.5]))


def test_warmup_cosine_shape():
    values = [warmup_cosine(s, 100, 10, 0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    assert warmup_cosine(55, 100, 10, 0.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


@pytest.mark.parametrize("kw, pattern", [
    ({"epochs": 0}, "epochs must be >= 1"), ({"batch_size": 1}, "batch_size must be >= 2"),
    ({"precision": "8-bit"}, "precision must be one of"), ({"warmup_frac": 1.5}, "warmup_frac"),
])
def test_config_checks(kw, pattern):
    with pytest.raises(BrainAlignError, match=pattern):
        TrainConfig(**kw)
    with pytest.raises(BrainAlignError, match="unknown training option"):
        TrainConfig.from_dict({"epoch": 3})


def test_fit_learns_and_is_seeded():
    weights = []
    for _ in range(2):
        seed_everything(0)
        module = fit_module(LinearModule(TrainConfig(epochs=30, batch_size=8, lr=0.05)), data(), TrainConfig(
            epochs=30, batch_size=8, lr=0.05))
        weights.append(module.net.weight.detach().clone())
    assert torch.allclose(weights[0], torch.tensor([[1.0, -2.0, 0.5]]), atol=0.1)
    assert torch.equal(weights[0], weights[1])


def test_checkpoint_resume_continues(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.05, checkpoint_dir=str(tmp_path))
    seed_everything(0)
    fit_module(LinearModule(cfg), data(), cfg)
    state = checkpoint_loads_safely(tmp_path / "last.ckpt")
    assert state["epoch"] == 2 and "net.weight" in state["state_dict"]  # epochs completed
    longer = TrainConfig(epochs=4, batch_size=8, lr=0.05, checkpoint_dir=str(tmp_path), resume=True)
    module = LinearModule(longer)
    fit_module(module, data(), longer)
    assert checkpoint_loads_safely(tmp_path / "last.ckpt")["epoch"] == 4
    assert module.trainer.global_step == 4 * 5  # 2 epochs restored + 2 more, 5 steps each


def test_divergence_and_tiny_data_are_clear_errors():
    class Exploding(LinearModule):
        def compute_loss(self, batch):
            return torch.tensor(float("nan"), requires_grad=True), {}

    with pytest.raises(BrainAlignError, match="training diverged"):
        fit_module(Exploding(TrainConfig(epochs=1)), data(), TrainConfig(epochs=1))
    with pytest.raises(BrainAlignError, match="at least 2 scans"):
        fit_module(LinearModule(TrainConfig()), data(1), TrainConfig())
