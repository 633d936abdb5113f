"""The cosine EMA vector quantiser and the domain-adversarial pieces (gradient reversal, DANN schedule)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from brainalign.errors import BrainAlignError
from brainalign.objectives.domain import DomainClassifier, dann_alpha, domain_loss, grad_reverse
from brainalign.objectives.vq import CosineVectorQuantizer, code_usage


def _near(direction: torch.Tensor, shape: tuple[int, ...], noise: float = 0.05) -> torch.Tensor:
    return direction + noise * torch.randn(*shape, direction.shape[-1])


def test_ema_moves_used_codes_toward_the_data():
    torch.manual_seed(0)
    vq = CosineVectorQuantizer(8, 16, kmeans_init=False, dead_code_threshold=0.0)
    d = F.normalize(torch.randn(8), dim=0)
    x = _near(d, (4, 50))
    before = vq.codebook.clone()
    used = vq(x).indices.unique()
    for _ in range(30):
        vq(x)
    after = vq.codebook
    assert torch.allclose(after.norm(dim=1), torch.ones(16), atol=1e-4)  # codes stay unit-norm
    assert bool((after[used] @ d > before[used] @ d + 0.1).all())
    assert float((after @ d).max()) > 0.95 > float((before @ d).max())
    unused = torch.tensor([k for k in range(16) if k not in used.tolist()])
    assert torch.allclose(after[unused], before[unused])  # no restarts: unused codes untouched


def test_eval_mode_does_not_update_codebook():
    torch.manual_seed(0)
    vq = CosineVectorQuantizer(8, 16, kmeans_init=False, dead_code_threshold=0.0).eval()
    before = vq.codebook.clone()
    vq(torch.randn(2, 30, 8))
    assert torch.equal(before, vq.codebook)


def test_kmeans_initialisation_finds_the_clusters():
    torch.manual_seed(0)
    vq = CosineVectorQuantizer(8, 12, kmeans_init=True, kmeans_iters=20, dead_code_threshold=0.0)
    centres = F.normalize(torch.randn(3, 8), dim=1)
    x = centres[torch.randint(3, (1, 600))] + 0.02 * torch.randn(1, 600, 8)
    assert not vq.initialised
    vq(x)
    assert vq.initialised
    best = (vq.codebook @ centres.T).max(dim=0).values  # each centre's closest code
    assert bool((best > 0.95).all()), best


def test_dead_codes_are_restarted_from_batch_inputs():
    torch.manual_seed(0)
    vq = CosineVectorQuantizer(8, 16, kmeans_init=False, dead_code_threshold=2.0)
    d = F.normalize(torch.randn(8), dim=0)
    assert float((vq.codebook @ d).min()) < 0.5
    for _ in range(3):
        vq(_near(d, (4, 50)))
    # every code was either used or replaced by an input near d
    assert float((vq.codebook @ d).min()) > 0.8


def test_straight_through_gradient_is_that_of_the_normalised_input():
    torch.manual_seed(0)
    vq = CosineVectorQuantizer(8, 16, kmeans_init=False, dead_code_threshold=0.0)
    x = torch.randn(2, 5, 8, requires_grad=True)
    w = torch.randn(2, 5, 8)
    out = vq(x)
    assert out.indices.shape == (2, 5) and out.indices.dtype == torch.int64
    (out.quantized * w).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    (F.normalize(x2, dim=-1) * w).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-5)
    assert float(out.commitment.detach()) > 0


def test_frozen_codebook_keeps_the_given_codes():
    torch.manual_seed(0)
    codes = torch.randn(6, 4)
    vq = CosineVectorQuantizer(4, 6, frozen=True, codes=codes).train()
    for _ in range(3):  # training steps would move or restart EMA codes
        out = vq(torch.randn(2, 50, 4))
    torch.testing.assert_close(vq.codebook, F.normalize(codes, dim=-1))
    torch.testing.assert_close(out.quantized, vq.codebook[out.indices])
    with pytest.raises(BrainAlignError, match="fixed codes must be"):
        CosineVectorQuantizer(4, 6, frozen=True, codes=torch.randn(5, 4))
    with pytest.raises(BrainAlignError, match="fixed codes must be"):
        CosineVectorQuantizer(4, 6, codes=codes)  # codes only with frozen


def test_code_usage_and_perplexity():
    uniform = code_usage(torch.arange(8).repeat(5), 8)
    assert uniform["usage"] == 1.0 and math.isclose(uniform["perplexity"], 8.0, rel_tol=1e-9)
    single = code_usage(torch.full((20,), 3), 8)
    assert single["usage"] == 1 / 8 and math.isclose(single["perplexity"], 1.0)
    with pytest.raises(BrainAlignError):
        code_usage(torch.zeros(0, dtype=torch.long), 8)


def test_quantiser_rejects_bad_shapes():
    vq = CosineVectorQuantizer(8, 16)
    with pytest.raises(BrainAlignError, match=r"\(B, M, 8\)"):
        vq(torch.randn(2, 5, 7))
    with pytest.raises(BrainAlignError):
        CosineVectorQuantizer(8, 1)


def test_gradient_reversal_flips_and_scales():
    x = torch.randn(4, 3, requires_grad=True)
    g = torch.randn(4, 3)
    y = grad_reverse(x, 0.3)
    assert torch.equal(y, x)
    y.backward(g)
    assert torch.allclose(x.grad, -0.3 * g)
    with pytest.raises(BrainAlignError):
        grad_reverse(x, -1.0)


def test_dann_schedule_endpoints():
    assert dann_alpha(0.0) == 0.0
    assert math.isclose(dann_alpha(1.0), 2 / (1 + math.exp(-10)) - 1) and dann_alpha(1.0) > 0.999
    assert math.isclose(dann_alpha(0.5), 2 / (1 + math.exp(-5)) - 1)
    values = [dann_alpha(p / 10) for p in range(11)]
    assert values == sorted(values)
    assert dann_alpha(2.0) == dann_alpha(1.0) and dann_alpha(-1.0) == 0.0  # clipped


def test_domain_loss_trains_classifier_and_reverses_encoder_gradient():
    torch.manual_seed(0)
    clf = DomainClassifier(6, hidden=8)
    fmri = torch.randn(10, 6, requires_grad=True)
    text = torch.randn(12, 6)
    loss, acc = domain_loss(clf, fmri, text, alpha=1.0)
    loss.backward()
    reversed_grad = fmri.grad.clone()
    assert 0 <= float(acc) <= 1 and all(p.grad is not None for p in clf.parameters())
    # the same loss without reversal: the fMRI gradient is exactly the negative
    fmri.grad = None
    logits = clf(fmri)
    plain = 0.5 * (F.cross_entropy(logits, torch.ones(10, dtype=torch.long))
                   + F.cross_entropy(clf(text), torch.zeros(12, dtype=torch.long)))
    plain.backward()
    assert torch.allclose(reversed_grad, -fmri.grad, atol=1e-6)
    fmri.grad = None
    domain_loss(clf, fmri, text, alpha=0.0)[0].backward()
    assert torch.count_nonzero(fmri.grad) == 0
    with pytest.raises(BrainAlignError, match="equal width"):
        domain_loss(clf, torch.randn(3, 6), torch.randn(3, 5), 1.0)
