"""Queued symmetric InfoNCE: FIFO queue, duplicate masking, hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainalign.errors import BrainAlignError
from brainalign.objectives.contrastive import clip_loss
from brainalign.objectives.queue import EmbeddingQueue, distinct_queued, queued_info_nce, stimulus_codes


def test_queue_is_fifo_and_wraps():
    q = EmbeddingQueue(5, 2, 2)
    assert len(q) == 0
    x = torch.eye(2).repeat(2, 1)[:3]  # 3 rows
    q.enqueue(x, x, torch.tensor([1, 2, 3]))
    assert q.contents()[2].tolist() == [1, 2, 3]
    q.enqueue(x, x, torch.tensor([4, 5, 6]))
    assert len(q) == 5 and q.contents()[2].tolist() == [2, 3, 4, 5, 6]  # oldest (1) overwritten
    q.enqueue(x[:1], x[:1], torch.tensor([7]))
    assert q.contents()[2].tolist() == [3, 4, 5, 6, 7]
    big = torch.randn(8, 2)
    q.enqueue(big, big, torch.arange(10, 18))
    assert q.contents()[2].tolist() == [13, 14, 15, 16, 17]
    torch.testing.assert_close(q.contents()[0], F.normalize(big[3:], dim=-1))
    off = EmbeddingQueue(0, 2, 2)
    off.enqueue(x, x, torch.tensor([1, 2, 3]))
    assert len(off) == 0


def test_loss_equals_hand_computation_3x3():
    b = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    t = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    scale = 2.0
    got = queued_info_nce(b, t, torch.tensor([0, 1, 2]), None, logit_scale=scale)
    sim = [[sum(b[i, d].item() * t[j, d].item() for d in range(2)) * scale for j in range(3)] for i in range(3)]
    row = [-(sim[i][i] - np.log(sum(np.exp(sim[i][j]) for j in range(3)))) for i in range(3)]
    col = [-(sim[j][j] - np.log(sum(np.exp(sim[i][j]) for i in range(3)))) for j in range(3)]
    assert got.item() == pytest.approx(0.5 * (np.mean(row) + np.mean(col)), rel=1e-6)
    # and equals the library's CLIP loss at the same fixed scale
    assert got.item() == pytest.approx(clip_loss(b, t, np.log(scale)).item(), rel=1e-6)


def test_queue_adds_negatives_by_hand():
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    q = EmbeddingQueue(4, 2, 2)
    qb = torch.tensor([[0.6, 0.8]])
    qt = torch.tensor([[0.8, 0.6]])
    q.enqueue(qb, qt, torch.tensor([9]))
    got = queued_info_nce(b, t, torch.tensor([0, 1]), q, logit_scale=1.0)
    # brain row i: [cos(b_i, t_0), cos(b_i, t_1), cos(b_i, qt)]; target row j: [cos(t_j, b_0), cos(t_j, b_1), cos(t_j, qb)]
    r = [-(1 - np.log(np.exp(1) + np.exp(0) + np.exp(0.8))), -(1 - np.log(np.exp(0) + np.exp(1) + np.exp(0.6)))]
    c = [-(1 - np.log(np.exp(1) + np.exp(0) + np.exp(0.6))), -(1 - np.log(np.exp(0) + np.exp(1) + np.exp(0.8)))]
    assert got.item() == pytest.approx(0.5 * (np.mean(r) + np.mean(c)), rel=1e-6)
    assert got.item() > queued_info_nce(b, t, torch.tensor([0, 1]), None, logit_scale=1.0).item()
    # queued_brain=False: the target rows see the batch only, the brain rows still see the queued target
    c_batch = [-(1 - np.log(np.exp(1) + np.exp(0))), -(1 - np.log(np.exp(0) + np.exp(1)))]
    targets_only = queued_info_nce(b, t, torch.tensor([0, 1]), q, logit_scale=1.0, queued_brain=False)
    assert targets_only.item() == pytest.approx(0.5 * (np.mean(r) + np.mean(c_batch)), rel=1e-6)


def test_duplicates_are_not_negatives():
    torch.manual_seed(0)
    b, t = torch.randn(4, 3), torch.randn(4, 3)
    codes = torch.tensor([5, 6, 7, 8])
    empty = queued_info_nce(b, t, codes, None)
    q = EmbeddingQueue(8, 3, 3)
    q.enqueue(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([5, 6]))  # same stimuli as batch rows 0 and 1
    q.enqueue(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([7, 8]))
    # every queued entry shares a stimulus with exactly one row and is excluded there; rows differ from "empty"
    # only through the other rows' negatives, so setting all codes equal to the row's would give the empty loss:
    solo = EmbeddingQueue(8, 3, 3)
    solo.enqueue(torch.randn(3, 3), torch.randn(3, 3), torch.tensor([5, 5, 5]))
    two = torch.tensor([5, 5])
    assert queued_info_nce(b[:2], t[:2], two, solo).item() == pytest.approx(
        queued_info_nce(b[:2], t[:2], two, None).item())
    assert queued_info_nce(b, t, codes, q).item() > empty.item() - 1e-6
    # within a batch, equal stimulus codes are positives of each other (multi-positive)
    dup = torch.tensor([0, 0, 1, 2])
    pos = (dup[:, None] == dup[None, :])
    assert queued_info_nce(b, t, dup, None, 100.0).item() == pytest.approx(
        clip_loss(b, t, np.log(100.0), positives=pos).item(), rel=1e-6)


def test_each_queued_stimulus_is_one_negative():
    # oldest first: 3, 4, 3, 9, 4, 1 -> newest 3 (index 2), 9, newest 4 (index 4); 1 is in the batch
    keep = distinct_queued(torch.tensor([3, 4, 3, 9, 4, 1]), torch.tensor([1, 2]))
    assert keep.tolist() == [False, False, True, True, True, False]
    # a stimulus queued three times weighs as much as when queued once (its newest copy)
    b, t = torch.eye(3)[:2], torch.eye(3)[:2]
    codes = torch.tensor([0, 1])
    once, thrice = EmbeddingQueue(8, 3, 3), EmbeddingQueue(8, 3, 3)
    stale = torch.tensor([[0.6, 0.0, 0.8]])
    once.enqueue(torch.tensor([[0.0, 0.6, 0.8]]), torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([7]))
    thrice.enqueue(stale.repeat(2, 1), torch.tensor([[0.8, 0.0, 0.6]]).repeat(2, 1), torch.tensor([7, 7]))
    thrice.enqueue(torch.tensor([[0.0, 0.6, 0.8]]), torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([7]))
    assert queued_info_nce(b, t, codes, thrice, 5.0).item() == pytest.approx(
        queued_info_nce(b, t, codes, once, 5.0).item(), rel=1e-6)


def test_gradient_flows_only_through_batch():
    b = torch.randn(3, 4, requires_grad=True)
    q = EmbeddingQueue(4, 4, 4)
    qb = torch.randn(2, 4, requires_grad=True)
    q.enqueue(qb, torch.randn(2, 4), torch.tensor([10, 11]))
    queued_info_nce(b, torch.randn(3, 4), torch.tensor([0, 1, 2]), q).backward()
    assert b.grad is not None and qb.grad is None


def test_stimulus_codes_are_stable():
    a = stimulus_codes(np.array(["stim-1", "stim-2", "stim-1"]))
    assert a[0] == a[2] != a[1] and a.dtype == np.int64 and (a >= 0).all()
    assert stimulus_codes(["stim-2"])[0] == a[1]
    assert stimulus_codes(np.array([3, 4])).tolist() == [3, 4]


def test_bad_inputs():
    with pytest.raises(BrainAlignError, match="both be"):
        queued_info_nce(torch.randn(3, 4), torch.randn(3, 5), torch.arange(3))
    with pytest.raises(BrainAlignError, match="at least 2"):
        queued_info_nce(torch.randn(1, 4), torch.randn(1, 4), torch.arange(1))
    with pytest.raises(BrainAlignError, match="codes"):
        queued_info_nce(torch.randn(3, 4), torch.randn(3, 4), torch.arange(2))
    x = torch.randn(3, 4)
    x[0, 0] = float("nan")
    with pytest.raises(BrainAlignError, match="brain embeddings contain NaN"):
        queued_info_nce(x, torch.randn(3, 4), torch.arange(3))
    with pytest.raises(BrainAlignError, match="queue size"):
        EmbeddingQueue(-1, 2, 2)
    with pytest.raises(BrainAlignError, match="one-dimensional"):
        stimulus_codes(np.zeros((2, 2)))
