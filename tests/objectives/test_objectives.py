"""Objectives: each loss against a naive loop, the properties METHODS §1 relies on, and bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from brainalign.errors import BrainAlignError
from brainalign.objectives import (
    ClipTemperature,
    SigmoidTemperatureBias,
    TokenConditionedAttention,
    attention_distance,
    calt_confusion,
    calt_logits,
    calt_loss,
    clip_logits,
    clip_loss,
    fairclip_loss,
    fairclip_penalty,
    identical_text_positives,
    neurolip_total_loss,
    siglip_loss,
    sinkhorn_divergence,
    token_node_attention,
)

DT = torch.float64
# the tests read scalar values of graph-attached tensors on purpose
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar:UserWarning")


def _emb(b=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=DT), torch.randn(b, d, generator=g, dtype=DT)


def _cos(u, v):
    return float(torch.dot(u, v) / (u.norm() * v.norm()))


def _log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


# ------------------------------------------------------------------------------------------------------ CLIP
def _naive_clip(img, txt, log_scale, pos):
    b = img.shape[0]
    s = math.exp(log_scale)
    logits = [[s * _cos(img[i], txt[j]) for j in range(b)] for i in range(b)]
    i2t = t2i = 0.0
    for i in range(b):
        lse = math.log(sum(math.exp(v) for v in logits[i]))
        js = [j for j in range(b) if pos[i][j]]
        i2t += -sum(logits[i][j] - lse for j in js) / len(js)
    for j in range(b):
        col = [logits[i][j] for i in range(b)]
        lse = math.log(sum(math.exp(v) for v in col))
        is_ = [i for i in range(b) if pos[i][j]]
        t2i += -sum(col[i] - lse for i in is_) / len(is_)
    return 0.5 * (i2t / b + t2i / b)


def test_clip_loss_matches_naive_loop_and_cross_entropy():
    img, txt = _emb()
    ls = math.log(1 / 0.07)
    got = clip_loss(img, txt, torch.tensor(ls, dtype=DT))
    eye = np.eye(6, dtype=bool)
    assert float(got) == pytest.approx(_naive_clip(img, txt, ls, eye), rel=1e-10)
    logits = clip_logits(img, txt, ls)
    labels = torch.arange(6)
    ref = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    assert float(got) == pytest.approx(float(ref), rel=1e-12)


def test_clip_loss_multi_positive_matches_naive_loop():
    img, txt = _emb(b=7, seed=3)
    texts = ["a", "b", "a", "c", "b", "a", "d"]
    pos = identical_text_positives(texts)
    got = clip_loss(img, txt, 2.0, positives=pos)
    assert float(got) == pytest.approx(_naive_clip(img, txt, 2.0, pos.numpy()), rel=1e-10)
    # all-distinct texts: the multi-positive form reduces to the standard loss
    assert float(clip_loss(img, txt, 2.0, identical_text_positives(list("abcdefg")))) == pytest.approx(
        float(clip_loss(img, txt, 2.0)), rel=1e-12)


def test_clip_loss_is_symmetric():
    img, txt = _emb(seed=4)
    pos = identical_text_positives(["x", "y", "x", "z", "z", "w"])
    assert float(clip_loss(img, txt, 1.3)) == pytest.approx(float(clip_loss(txt, img, 1.3)), rel=1e-12)
    assert float(clip_loss(img, txt, 1.3, pos)) == pytest.approx(float(clip_loss(txt, img, 1.3, pos.T)), rel=1e-12)


def test_clip_loss_float32_and_gradient():
    img, txt = (t.float().requires_grad_() for t in _emb())
    temp = ClipTemperature()
    loss = clip_loss(img, txt, temp())
    loss.backward()
    assert loss.dtype == torch.float32 and img.grad is not None and temp.log_scale.grad is not None


# ------------------------------------------------------------------------------------------------------ SigLIP
def test_siglip_diagonal_matches_hand_computation():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DT)
    txt = torch.tensor([[1.0, 1.0], [0.0, 2.0]], dtype=DT)
    log_t, b = math.log(10.0), -10.0
    c = 1 / math.sqrt(2)  # cos(img0, txt0) = cos(img1, txt0) = 1/sqrt2; cos(img0, txt1) = 0; cos(img1, txt1) = 1
    z = [[10 * c - 10, 10 * 0 - 10], [10 * c - 10, 10 * 1 - 10]]
    y = [[1, -1], [-1, 1]]
    hand = -sum(_log_sigmoid(y[i][j] * z[i][j]) for i in range(2) for j in range(2)) / 2
    assert float(siglip_loss(img, txt, log_t, b)) == pytest.approx(hand, rel=1e-12)


def test_siglip_with_positives_matches_naive_loop():
    img, txt = _emb(b=5, seed=5)
    pos = identical_text_positives(["p", "q", "p", "r", "q"])
    log_t, b = torch.tensor(1.7, dtype=DT), torch.tensor(-3.0, dtype=DT)
    got = siglip_loss(img, txt, log_t, b, positives=pos)
    ref = 0.0
    for i in range(5):
        for j in range(5):
            z = math.exp(1.7) * _cos(img[i], txt[j]) - 3.0
            ref -= _log_sigmoid(z if pos[i, j] else -z)
    assert float(got) == pytest.approx(ref / 5, rel=1e-10)


def test_identical_text_positives_and_temperatures():
    pos = identical_text_positives(["a", "b", "a", "a b"])
    expected = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert pos.dtype == torch.bool and torch.equal(pos, expected)
    temp = ClipTemperature(init=1 / 0.07, max_scale=100)
    assert temp.scale == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        temp.log_scale.fill_(10.0)
    assert temp.scale == pytest.approx(100.0, rel=1e-6)
    log_t, b = SigmoidTemperatureBias()()
    assert float(log_t.detach().exp()) == pytest.approx(10.0) and float(b.detach()) == -10.0


# ------------------------------------------------------------------------------------------------------ TTCA
def _naive_attend(mod, q_tok, img_tok):
    """One query token (D,) over one image (M, D) + empty token, head by head, from the module's weights."""
    kv = torch.cat([img_tok, mod.empty_token], dim=0)
    q, k, v = mod.q_proj(q_tok), mod.k_proj(kv), mod.v_proj(kv)
    h, dh = mod.n_heads, mod.head_dim
    outs, attns = [], []
    for hh in range(h):
        sl = slice(hh * dh, (hh + 1) * dh)
        a = torch.softmax(k[:, sl] @ q[sl] / math.sqrt(dh), dim=0)
        attns.append(a)
        outs.append(a @ v[:, sl])
    return mod.out_proj(torch.cat(outs)), torch.stack(attns).mean(0)


def test_ttca_pairwise_equals_naive_loop_and_forward_diagonal():
    torch.manual_seed(0)
    mod = TokenConditionedAttention(dim=8, n_heads=2).double().eval()
    bi, bq, m = 3, 4, 5
    img = torch.randn(bi, m, 8, dtype=DT)
    qry = torch.randn(bq, 8, dtype=DT)
    out, attn = mod.pairwise(qry, img)
    assert out.shape == (bi, bq, 8) and attn.shape == (bi, bq, m + 1)
    for i in range(bi):
        for j in range(bq):
            o, a = _naive_attend(mod, qry[j], img[i])
            torch.testing.assert_close(out[i, j], o)
            torch.testing.assert_close(attn[i, j], a)
    # forward: text i (one token) attends to its own image i -> the diagonal of pairwise
    fwd_out, fwd_attn = mod(qry[:bi, None, :], img)
    assert fwd_out.shape == (bi, 1, 8) and fwd_attn.shape == (bi, 1, m + 1)
    idx = torch.arange(bi)
    torch.testing.assert_close(fwd_out[:, 0], out[idx, idx])
    torch.testing.assert_close(fwd_attn[:, 0], attn[idx, idx])


def test_ttca_attention_rows_sum_to_one_and_mask():
    torch.manual_seed(1)
    mod = TokenConditionedAttention(dim=12, n_heads=3, dropout=0.5).train()
    txt, img = torch.randn(2, 4, 12), torch.randn(2, 6, 12)
    out, attn = mod(txt, img)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4))
    assert bool((attn[..., -1] > 0).all())  # the empty token takes some mass
    _, per_head = mod(txt, img, average_heads=False)
    assert per_head.shape == (2, 3, 4, 7)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    with torch.no_grad():
        out, attn = mod(txt, img, text_mask=mask)
    assert float(out[0, 2:].abs().sum()) == 0.0 and float(attn[0, 2:].sum()) == 0.0
    torch.testing.assert_close(attn[1].sum(-1), torch.ones(4))
    _, pattn = mod.pairwise(txt[:, 0], img)
    torch.testing.assert_close(pattn.sum(-1), torch.ones(2, 2))


def test_token_node_attention_rows_at_most_one():
    torch.manual_seed(2)
    mod = TokenConditionedAttention(dim=8, n_heads=2)
    _, a_ttca = mod(torch.randn(3, 4, 8), torch.randn(3, 5, 8))
    a_mhsa = torch.softmax(torch.randn(3, 5, 10), dim=-1)
    a = token_node_attention(a_ttca, a_mhsa)
    assert a.shape == (3, 4, 10)
    assert bool((a >= 0).all()) and bool((a.sum(-1) <= 1 + 1e-6).all())
    torch.testing.assert_close(a.sum(-1), 1 - a_ttca[..., -1])
    torch.testing.assert_close(a[1, 2], a_ttca[1, 2, :5] @ a_mhsa[1])


# ------------------------------------------------------------------------------------------------------ CALT
def test_calt_loss_and_logits_match_naive_loop():
    g = torch.Generator().manual_seed(7)
    b, d = 5, 6
    cond = torch.randn(b, b, d, generator=g, dtype=DT)
    tok = torch.randn(b, d, generator=g, dtype=DT)
    groups = torch.tensor([0, 1, 0, 2, 1])
    log_t, bias = math.log(10.0), -10.0
    z = calt_logits(cond, tok, log_t, bias)
    ref = 0.0
    for i in range(b):
        for j in range(b):
            zij = 10.0 * _cos(cond[i, j], tok[j]) - 10.0
            assert float(z[i, j]) == pytest.approx(zij, rel=1e-10)
            ref -= _log_sigmoid(zij if groups[i] == groups[j] else -zij)
    assert float(calt_loss(cond, tok, groups, log_t, bias)) == pytest.approx(ref / b, rel=1e-10)
    # string labels give the same labels as integer codes
    assert float(calt_loss(cond, tok, ["a", "b", "a", "c", "b"], log_t, bias)) == pytest.approx(ref / b, rel=1e-12)
    # rectangular: images against two class prompts
    z2 = calt_loss(cond[:, :2], tok[:2], ["x", "y", "x", "x", "y"], log_t, bias, text_groups=["x", "y"])
    ref2 = -sum(_log_sigmoid(float(z[i, j]) * (1 if [0, 1, 0, 0, 1][i] == j else -1))
                for i in range(b) for j in range(2)) / b
    assert float(z2) == pytest.approx(ref2, rel=1e-10)


def test_calt_loss_decreases_on_separable_toy_problem():
    torch.manual_seed(0)
    b, m, d = 16, 4, 8
    groups = torch.arange(b) % 2
    centres = torch.randn(2, d) * 2
    img = centres[groups][:, None, :] + 0.3 * torch.randn(b, m, d)
    attr_emb = torch.nn.Parameter(torch.randn(2, d))  # one learnable token per attribute value
    ttca = TokenConditionedAttention(d, n_heads=2)
    temp = SigmoidTemperatureBias()
    opt = torch.optim.Adam([*ttca.parameters(), *temp.parameters(), attr_emb], lr=0.05)
    losses = []
    for _ in range(30):
        tok = attr_emb[groups]
        cond, _ = ttca.pairwise(tok, img)
        loss = calt_loss(cond, tok, groups, *temp())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    z = calt_logits(ttca.pairwise(attr_emb, img)[0], attr_emb, *temp())  # each image vs the two value tokens
    assert float((z.argmax(1) == groups).float().mean()) == 1.0


def test_calt_confusion_is_the_squared_gap_of_mean_logits():
    g = torch.Generator().manual_seed(3)
    b, d = 6, 5
    cond = torch.randn(b, b, d, generator=g, dtype=DT, requires_grad=True)
    tok = torch.randn(b, d, generator=g, dtype=DT)
    groups = torch.tensor([0, 1, 0, 1, 1, 0])
    z = calt_logits(cond, tok, 0.0, 0.0)
    same = groups[:, None] == groups[None, :]
    ref = (z[same].mean() - z[~same].mean()) ** 2
    value = calt_confusion(cond, tok, groups, 0.0, 0.0)
    assert float(value) == pytest.approx(float(ref), rel=1e-10) and float(value) > 0
    value.backward()
    assert torch.isfinite(cond.grad).all() and cond.grad.abs().sum() > 0
    # a conditioned image that matches every token equally carries no group information: zero
    flat = tok[None].expand(b, b, d)
    assert float(calt_confusion(flat, tok, groups, 0.0, 0.0)) == pytest.approx(0.0, abs=1e-12)
    # minimised, it drives the gap to 0 instead of reversing it (the negated CALT loss rewards a reversed code)
    one_group = calt_confusion(cond.detach(), tok, torch.zeros(b, dtype=torch.long), 0.0, 0.0)
    assert float(one_group) == 0.0
    with pytest.raises(BrainAlignError, match="own texts"):
        calt_confusion(cond.detach()[:, :2], tok[:2], groups, 0.0, 0.0)


def test_negated_calt_reverses_the_code_and_confusion_removes_it():
    """On images that carry the attribute, maximising CALT makes same-value pairs look *less* alike (the gap of
    mean logits turns strongly negative: still a code for the attribute); minimising the confusion term
    drives the gap to 0."""
    def train(objective):
        torch.manual_seed(0)
        b, m, d = 16, 4, 8
        groups = torch.arange(b) % 2
        img = torch.randn(2, d)[groups][:, None, :] + 0.3 * torch.randn(b, m, d)
        lift = torch.nn.Linear(d, d)  # stands in for the brain encoder the sensitive term trains
        tok = torch.randn(2, d)[groups]
        ttca = TokenConditionedAttention(d, n_heads=2)
        opt = torch.optim.Adam([*ttca.parameters(), *lift.parameters()], lr=0.05)
        for _ in range(60):
            cond, _ = ttca.pairwise(tok, lift(img))
            loss = -calt_loss(cond, tok, groups, 1.0, 0.0) if objective == "negative" else \
                calt_confusion(cond, tok, groups, 1.0, 0.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
        z = calt_logits(ttca.pairwise(tok, lift(img))[0], tok, 1.0, 0.0).detach()
        same = groups[:, None] == groups[None, :]
        return float(z[same].mean() - z[~same].mean())

    reversed_gap, confused_gap = train("negative"), train("confusion")
    assert reversed_gap < -0.5 * math.e  # t = e: the cosines of same-value pairs fall well below the others'
    assert abs(confused_gap) < 0.05


# ----------------------------------------------------------------------------------------------- attention + total
def test_attention_distance_value_and_gradient_sign():
    torch.manual_seed(3)
    a_d = torch.rand(4, 7, dtype=DT, requires_grad=True)
    a_s = torch.rand(4, 7, dtype=DT, requires_grad=True)
    dist = attention_distance(a_d, a_s)
    ref = sum(float((a_d[i] - a_s[i]).detach().norm()) for i in range(4)) / 4
    assert float(dist) == pytest.approx(ref, rel=1e-12)
    # the total loss subtracts beta * L_attn: descending it moves the two maps apart
    total, _ = neurolip_total_loss(torch.tensor(0.0, dtype=DT), {}, set(), dist, beta=1e-3)
    total.backward()
    diff = (a_d - a_s).detach()
    assert float((a_d.grad * diff).sum()) < 0 and float((a_s.grad * diff).sum()) > 0
    step = 10.0
    new = attention_distance(a_d.detach() - step * a_d.grad, a_s.detach() - step * a_s.grad)
    assert float(new) > float(dist)
    # identical maps: finite, zero gradient
    x = torch.ones(2, 3, requires_grad=True)
    attention_distance(x, torch.ones(2, 3)).backward()
    assert bool(torch.isfinite(x.grad).all())


def test_total_loss_signs_and_parts():
    lg = torch.tensor(1.0, requires_grad=True)
    ldx = torch.tensor(2.0, requires_grad=True)
    lsex = torch.tensor(3.0, requires_grad=True)
    la = torch.tensor(4.0, requires_grad=True)
    calt = {"dx": ldx, "sex": lsex}
    total, parts = neurolip_total_loss(lg, calt, {"sex"}, la, beta=0.5)
    assert float(total) == pytest.approx(1 + 2 - 3 - 0.5 * 4)
    total.backward()
    assert float(lsex.grad) == -1.0 and float(ldx.grad) == 1.0 and float(lg.grad) == 1.0 and float(la.grad) == -0.5
    assert set(parts) == {"global", "calt/dx", "calt/sex", "attn_distance", "total"}
    assert not parts["total"].requires_grad and float(parts["calt/sex"]) == 3.0
    off, _ = neurolip_total_loss(lg, calt, {"sex"}, la, beta=0.5, negative_gradient=False)
    assert float(off) == pytest.approx(1 + 2 + 3 - 2)
    dropped, _ = neurolip_total_loss(lg, {"dx": ldx}, {"sex"}, None, drop_sensitive=True)
    assert float(dropped) == pytest.approx(3.0)


# --------------------------------------------------------------------------------------------- Sinkhorn + FairCLIP
X8 = [0.12, 0.55, 0.31, 0.80, 0.47, 0.05, 0.66, 0.29]
Y5 = [0.40, 0.71, 0.18, 0.93, 0.52]


def test_sinkhorn_matches_geomloss_reference_values():
    # geomloss 0.3.1, SamplesLoss("sinkhorn", p=2, blur=..., backend="tensorized")(x[:, None], y[:, None]), float64
    x = torch.tensor(X8, dtype=DT, requires_grad=True)
    y = torch.tensor(Y5, dtype=DT)
    s = sinkhorn_divergence(x, y, blur=1e-4)
    assert float(s) == pytest.approx(0.011772219115653937, rel=1e-9)
    (gx,) = torch.autograd.grad(s, x)
    torch.testing.assert_close(gx, torch.tensor([-0.0075, -0.02, -0.01125, -0.01625, -0.00625, -0.01625,
                                                 -0.00625, -0.01375], dtype=DT), atol=1e-9, rtol=0)
    assert float(sinkhorn_divergence(x, y, blur=0.1)) == pytest.approx(0.010359615442491848, rel=1e-9)
    a = torch.tensor([0.1, 0.2, 0.05, 0.15, 0.1, 0.1, 0.2, 0.1], dtype=DT)
    assert float(sinkhorn_divergence(x, y, a, blur=1e-4)) == pytest.approx(0.004728275996718012, rel=1e-9)


def test_sinkhorn_matches_pot_and_exact_1d_ot():
    ot = pytest.importorskip("ot")
    x, y = torch.tensor(X8, dtype=DT), torch.tensor(Y5, dtype=DT)
    # entropic OT (no debiasing) against POT's log-domain solver: same cost |x-y|^2/2, reg = blur^2
    blur = 0.3
    cost = (x[:, None] - y[None]) ** 2 / 2
    a, b = torch.full((8,), 1 / 8, dtype=DT), torch.full((5,), 1 / 5, dtype=DT)
    plan = ot.sinkhorn(a, b, cost, blur ** 2, method="sinkhorn_log", numItermax=100000, stopThr=1e-13)
    primal = (plan * cost).sum() + blur ** 2 * (plan * (plan / (a[:, None] * b[None])).log()).sum()
    ours = sinkhorn_divergence(x, y, blur=blur, debias=False, iters_per_eps=200)
    assert float(ours) == pytest.approx(float(primal), rel=1e-6)
    # small blur: close to the exact W2^2 / 2 (geomloss-style eps-scaling is a few percent short)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exact = float(ot.wasserstein_1d(x, y, p=2)) / 2
    assert float(sinkhorn_divergence(x, y, blur=1e-4)) == pytest.approx(exact, rel=0.1)
    assert float(sinkhorn_divergence(x, y, blur=1e-4, scaling=0.9, iters_per_eps=30)) == pytest.approx(
        exact, rel=1e-4)


def test_sinkhorn_identical_is_zero_and_grows_with_shift():
    x = torch.tensor(X8, dtype=DT)
    assert abs(float(sinkhorn_divergence(x, x.clone()))) < 1e-12
    vals = [float(sinkhorn_divergence(x, x + s)) for s in (0.0, 0.05, 0.1, 0.2)]
    assert vals[0] == pytest.approx(0.0, abs=1e-12)
    assert vals[1] < vals[2] < vals[3]
    assert vals[3] == pytest.approx(0.2 ** 2 / 2, rel=0.05)  # a pure shift: W2^2 / 2 = shift^2 / 2
    # batched over problems == one at a time
    xs = torch.stack([x, x.flip(0)])
    ys = torch.stack([x + 0.1, x * 0.5])
    torch.testing.assert_close(sinkhorn_divergence(xs, ys),
                               torch.stack([sinkhorn_divergence(xs[k], ys[k]) for k in range(2)]))


def _fair_batch(seed=0, b=12, d=6):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, d, generator=g, dtype=DT)
    txt = img + 0.8 * torch.randn(b, d, generator=g, dtype=DT)
    # group 1 pairs are much better matched than group 0 -> different similarity distributions
    txt[b // 2:] = img[b // 2:] + 0.1 * torch.randn(b - b // 2, d, generator=g, dtype=DT)
    groups = torch.tensor([0] * (b // 2) + [1] * (b - b // 2))
    return img, txt, groups


def test_fairclip_loss_penalty_and_gradient():
    img, txt, groups = _fair_batch()
    img.requires_grad_(True)
    txt.requires_grad_(True)
    base = clip_loss(img, txt, 2.0)
    fair = fairclip_loss(img, txt, 2.0, groups, lam=1.0)
    assert float(fair) > float(base) + 1e-3
    assert float(fairclip_loss(img, txt, 2.0, groups)) >= float(base)  # default lam = 1e-4
    # the penalty equals the sum of per-group Sinkhorn divergences on matched cosines
    sims = F.cosine_similarity(img, txt, dim=1)
    ref = sum(sinkhorn_divergence(sims, sims[groups == g]) for g in (0, 1))
    assert float(fairclip_penalty(img, txt, groups)) == pytest.approx(float(ref), rel=1e-9)
    gi, gt = torch.autograd.grad(fairclip_penalty(img, txt, groups), [img, txt])
    assert float(gi.abs().sum()) > 0 and float(gt.abs().sum()) > 0
    # one group, or only singleton groups (skipped): exactly the CLIP loss
    assert float(fairclip_loss(img, txt, 2.0, torch.zeros(12, dtype=torch.long), lam=1.0)) == pytest.approx(
        float(base), abs=1e-12)
    assert float(fairclip_loss(img, txt, 2.0, torch.arange(12), lam=1.0)) == float(base)
    # string labels work and a singleton group is ignored
    labels = ["f"] * 6 + ["m"] * 5 + ["x"]
    ref2 = sinkhorn_divergence(sims, sims[:6]) + sinkhorn_divergence(sims, sims[6:11])
    assert float(fairclip_penalty(img, txt, labels)) == pytest.approx(float(ref2), rel=1e-9)


# ------------------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_brainalign_error():
    img, txt = _emb()
    with pytest.raises(BrainAlignError, match="same shape"):
        clip_loss(img, txt[:5], 1.0)
    with pytest.raises(BrainAlignError, match="at least 2"):
        siglip_loss(img[:1], txt[:1], 1.0, -1.0)
    bad = img.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(BrainAlignError, match="NaN"):
        clip_loss(bad, txt, 1.0)
    with pytest.raises(BrainAlignError, match="NaN"):
        fairclip_loss(bad, txt, 1.0, torch.zeros(6))
    with pytest.raises(BrainAlignError, match="logit_scale"):
        clip_loss(img, txt, float("nan"))
    with pytest.raises(BrainAlignError, match="positives must have shape"):
        clip_loss(img, txt, 1.0, positives=torch.eye(5, dtype=torch.bool))
    with pytest.raises(BrainAlignError, match="at least one positive"):
        clip_loss(img, txt, 1.0, positives=torch.zeros(6, 6, dtype=torch.bool))
    with pytest.raises(BrainAlignError, match="sequence of strings"):
        identical_text_positives("abc")
    with pytest.raises(BrainAlignError, match=r"groups must have shape \(6,\)"):
        fairclip_loss(img, txt, 1.0, torch.zeros(5))
    with pytest.raises(BrainAlignError, match="NaN"):
        calt_loss(torch.randn(3, 3, 4), torch.randn(3, 4), [0.0, float("nan"), 1.0], 1.0, 0.0)
    with pytest.raises(BrainAlignError, match=r"\(Bi, Bq, D\)"):
        calt_loss(torch.randn(3, 3, 4), torch.randn(2, 4), [0, 1, 0], 1.0, 0.0)
    with pytest.raises(BrainAlignError, match="at least 2 images"):
        calt_loss(torch.randn(1, 1, 4), torch.randn(1, 4), [0], 1.0, 0.0)
    mod = TokenConditionedAttention(8, 2)
    with pytest.raises(BrainAlignError, match="width 8"):
        mod(torch.randn(2, 3, 6), torch.randn(2, 4, 8))
    with pytest.raises(BrainAlignError, match="batch size"):
        mod(torch.randn(2, 3, 8), torch.randn(3, 4, 8))
    with pytest.raises(BrainAlignError, match="multiple of n_heads"):
        TokenConditionedAttention(10, 3)
    with pytest.raises(BrainAlignError, match="M\\+1"):
        token_node_attention(torch.rand(2, 3, 5), torch.rand(2, 5, 9))
    with pytest.raises(BrainAlignError, match="share the shape"):
        attention_distance(torch.rand(2, 5), torch.rand(2, 6))
    with pytest.raises(BrainAlignError, match="no CALT loss"):
        neurolip_total_loss(torch.tensor(1.0), {"dx": torch.tensor(1.0)}, {"sexx"}, None)
    with pytest.raises(BrainAlignError, match="not finite"):
        neurolip_total_loss(torch.tensor(float("nan")), {}, set(), None)
    with pytest.raises(BrainAlignError, match="scalar"):
        neurolip_total_loss(torch.ones(2), {}, set(), None)
    with pytest.raises(BrainAlignError, match="sum to 1"):
        sinkhorn_divergence(torch.rand(4), torch.rand(3), torch.ones(4))
