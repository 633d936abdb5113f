"""Temporal patching (shapes, padding, order) and the temporal-patch encoder/decoder."""

from __future__ import annotations

import pytest
import torch

from brainalign.encoders.temporal_patch import PatchDecoder, TemporalPatchEncoder, n_patches, patchify, unpatchify
from brainalign.errors import BrainAlignError


def test_patchify_pads_last_patch_and_orders_time_major():
    x = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3) + 1  # no zeros in the data
    p = patchify(x, 4)
    assert p.shape == (2, 3 * 3, 4)  # ceil(10/4) = 3 patches x 3 ROIs
    # token w*N + n holds x[:, 4w:4w+4, n]
    assert torch.equal(p[:, 1 * 3 + 2], x[:, 4:8, 2])
    # the last patch has 10 - 8 = 2 real points, then zero padding
    last = p[:, 2 * 3 + 0]
    assert torch.equal(last[:, :2], x[:, 8:10, 0]) and torch.equal(last[:, 2:], torch.zeros(2, 2))
    assert torch.equal(unpatchify(p, 3, 10), x)


def test_exact_multiple_needs_no_padding():
    x = torch.randn(1, 12, 5)
    assert patchify(x, 4).shape == (1, 15, 4)
    assert torch.equal(unpatchify(patchify(x, 4), 5, 12), x)


def test_series_shorter_than_a_patch_is_an_error():
    with pytest.raises(BrainAlignError, match="shorter than one patch"):
        n_patches(5, 8)
    with pytest.raises(BrainAlignError, match="shorter than one patch"):
        patchify(torch.randn(1, 5, 3), 8)
    with pytest.raises(BrainAlignError, match="shorter than one patch"):
        TemporalPatchEncoder(n_rois=3, n_timepoints=5, patch_len=8)


def test_encoder_and_decoder_shapes():
    enc = TemporalPatchEncoder(n_rois=6, n_timepoints=25, patch_len=10, dim=16, depth=1, heads=2)
    assert enc.n_tokens == 3 * 6
    z = enc(torch.randn(4, 25, 6))
    assert z.shape == (4, 18, 16) and torch.isfinite(z).all()
    dec = PatchDecoder(enc, depth=1, heads=2)
    assert dec(z).shape == (4, 25, 6)


def test_encoder_rejects_wrong_shape():
    enc = TemporalPatchEncoder(n_rois=6, n_timepoints=20, patch_len=10, dim=16, depth=1, heads=2)
    with pytest.raises(BrainAlignError, match=r"\(B, 20, 6\)"):
        enc(torch.randn(2, 20, 7))
    with pytest.raises(BrainAlignError, match="divisible"):
        TemporalPatchEncoder(n_rois=6, n_timepoints=20, patch_len=10, dim=15, heads=2)
