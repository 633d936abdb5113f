"""Frozen target embeddings per stimulus: precomputed arrays, sentence-transformers text, open_clip image/text.

Every provider maps stimulus ids to a ``(n, D)`` float32 array through :meth:`EmbeddingProvider.get`.  Providers
that compute embeddings (:class:`SentenceTransformerText`, :class:`OpenClipEmbeddings`) cache one ``.npy`` per
stimulus id under ``cache_dir/<provider key>/`` (for a cohort: ``COHORT/.cache/embeddings/``), so a stimulus is
encoded once across runs.  Nothing is downloaded: the default text model is the offline all-MiniLM-L6-v2;
open_clip is an optional extra (``pip install open_clip_torch``; it pulls torchvision, which is why it is not a
dependency) and needs its weights cached locally unless ``BRAINALIGN_ALLOW_DOWNLOAD=1``.
"""

from __future__ import annotations

import hashlib
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.errors import BrainAlignError

__all__ = ["EmbeddingProvider", "OpenClipEmbeddings", "PrecomputedEmbeddings", "SentenceTransformerText",
           "stimulus_table_column"]


def _safe_name(stimulus_id: str) -> str:
    """A file name for a stimulus id: readable when the id is, else hashed (ids may hold '/' or spaces)."""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", stimulus_id) and stimulus_id not in (".", ".."):
        return stimulus_id
    return "h" + hashlib.sha1(stimulus_id.encode()).hexdigest()


def stimulus_table_column(stimuli: Any, ids: Sequence[str], column: str) -> list[Any]:
    """Values of ``column`` for ``ids`` from a stimuli table (DataFrame with ``stimulus_id``); clear errors."""
    if stimuli is None:
        raise BrainAlignError(f"a stimuli table with columns 'stimulus_id' and {column!r} is needed")
    if "stimulus_id" not in stimuli.columns or column not in stimuli.columns:
        raise BrainAlignError(f"stimuli table needs columns 'stimulus_id' and {column!r}; has {list(stimuli.columns)}")
    table = stimuli.assign(stimulus_id=stimuli["stimulus_id"].astype(str)).drop_duplicates("stimulus_id")
    lookup = table.set_index("stimulus_id")[column]
    missing = [s for s in ids if s not in lookup.index or lookup.isna().get(s, True)]
    if missing:
        raise BrainAlignError(f"stimuli table has no {column!r} for {len(missing)} stimulus id(s): {missing[:5]}")
    return lookup.loc[list(ids)].tolist()


class EmbeddingProvider(ABC):
    """Maps stimulus ids to frozen target embeddings.

    Parameters
    ----------
    kind : {"image", "text"}
        Which target the embeddings stand for.
    cache_dir : path, optional
        Folder of the per-stimulus ``.npy`` cache (None: no disk cache).
    """

    def __init__(self, kind: str, cache_dir: str | os.PathLike | None = None):
        if kind not in ("image", "text"):
            raise BrainAlignError(f"embedding kind must be 'image' or 'text', got {kind!r}")
        self.kind = kind
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    @property
    def key(self) -> str:
        """Name of the cache sub-folder (the provider and its model)."""
        return type(self).__name__

    @abstractmethod
    def _compute(self, ids: list[str], stimuli: Any) -> np.ndarray:
        """(n, D) embeddings of ``ids`` (no cache)."""

    def get(self, stimulus_ids: Sequence[Any], stimuli: Any = None) -> np.ndarray:
        """Embeddings of ``stimulus_ids`` (repeats allowed), shape (n, D), float32.

        Parameters
        ----------
        stimulus_ids : sequence of str (n,)
        stimuli : DataFrame, optional
            The cohort's stimuli table (``stimulus_id``, ``caption``, ``image_path``), for computing providers.
        """
        ids = [str(s) for s in stimulus_ids]
        unique = list(dict.fromkeys(ids))
        found: dict[str, np.ndarray] = {}
        folder = self.cache_dir / self.key if self.cache_dir is not None else None
        if folder is not None and folder.is_dir():
            for s in unique:
                f = folder / f"{_safe_name(s)}.npy"
                if f.exists():
                    found[s] = np.load(f)
        todo = [s for s in unique if s not in found]
        if todo:
            computed = np.asarray(self._compute(todo, stimuli), dtype=np.float32)
            if computed.shape[0] != len(todo):
                raise BrainAlignError(f"{self.key} returned {computed.shape[0]} embeddings for {len(todo)} stimuli")
            if not np.isfinite(computed).all():
                raise BrainAlignError(f"{self.key} produced NaN/inf embeddings")
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                for s, e in zip(todo, computed):
                    np.save(folder / f"{_safe_name(s)}.npy", e)
            found.update(zip(todo, computed))
        if not ids:
            raise BrainAlignError("no stimulus ids given")
        return np.stack([found[s] for s in ids]).astype(np.float32)


class PrecomputedEmbeddings(EmbeddingProvider):
    """Embeddings given as an array with one row per stimulus id (e.g. a cohort's ``embeddings/<kind>.npy``).

    Parameters
    ----------
    embeddings : ndarray (n_stim, D)
    ids : sequence of str (n_stim,)
    kind : {"image", "text"}
    """

    def __init__(self, embeddings: np.ndarray, ids: Sequence[Any], kind: str):
        super().__init__(kind)
        emb = np.asarray(embeddings)
        ids = [str(s) for s in ids]
        if emb.ndim != 2 or emb.shape[0] != len(ids):
            raise BrainAlignError(f"{kind} embeddings must be (n_stim, D) with one row per id; got {emb.shape} for "
                                  f"{len(ids)} ids")
        if not np.isfinite(emb).all():
            rows = np.flatnonzero(~np.isfinite(emb).all(axis=1))
            raise BrainAlignError(f"{kind} embeddings contain NaN/inf for stimulus id(s) "
                                  f"{[ids[r] for r in rows[:5]]}")
        self.embeddings = emb.astype(np.float32)
        self.row = {s: i for i, s in enumerate(ids)}

    @classmethod
    def from_cohort(cls, cohort: Any, kind: str) -> PrecomputedEmbeddings:
        """From ``cohort.embeddings(kind)`` (a VolumeCohort); a clear error when the cohort has none."""
        got = cohort.embeddings(kind)
        if got is None:
            raise BrainAlignError(f"cohort {getattr(cohort, 'root', '')} has no precomputed {kind} embeddings "
                                  f"(embeddings/{kind}.npy); compute them with another provider")
        return cls(got[0], got[1], kind)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def _compute(self, ids: list[str], stimuli: Any) -> np.ndarray:
        missing = [s for s in ids if s not in self.row]
        if missing:
            raise BrainAlignError(f"no precomputed {self.kind} embedding for {len(missing)} stimulus id(s): "
                                  f"{missing[:5]}")
        return self.embeddings[[self.row[s] for s in ids]]


class SentenceTransformerText(EmbeddingProvider):
    """Caption embeddings from a sentence-transformers model (default: the offline all-MiniLM-L6-v2, D = 384).

    Parameters
    ----------
    model : str or path, optional
        Local folder or Hugging Face name (a name needs ``BRAINALIGN_ALLOW_DOWNLOAD=1`` or a local HF cache).
    cache_dir : path, optional
    batch_size : int
    """

    def __init__(self, model: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                 batch_size: int = 64):
        super().__init__("text", cache_dir)
        from brainalign.encoders.text import default_text_model_path

        self.model_path = str(model) if model is not None else str(default_text_model_path())
        self.batch_size = batch_size
        self._model = None

    @property
    def key(self) -> str:
        return "st-" + _safe_name(Path(self.model_path).name or self.model_path)

    def _compute(self, ids: list[str], stimuli: Any) -> np.ndarray:
        captions = stimulus_table_column(stimuli, ids, "caption")
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            local = Path(self.model_path).exists()
            if not local and os.environ.get("BRAINALIGN_ALLOW_DOWNLOAD") != "1":
                raise BrainAlignError(f"text model {self.model_path!r} is not a local folder and downloads are off "
                                      "(set BRAINALIGN_ALLOW_DOWNLOAD=1)")
            self._model = SentenceTransformer(self.model_path, device="cpu")
        return self._model.encode([str(c) for c in captions], batch_size=self.batch_size,
                                  normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


class OpenClipEmbeddings(EmbeddingProvider):
    """CLIP image or caption embeddings from open_clip (optional extra; imported when first used).

    Parameters
    ----------
    kind : {"image", "text"}
    model_name, pretrained : str
        open_clip model and weights tag (paper: ViT-H-14, laion2b_s32b_b79k).
    cache_dir : path, optional
    batch_size : int
    """

    def __init__(self, kind: str, model_name: str = "ViT-H-14", pretrained: str = "laion2b_s32b_b79k",
                 cache_dir: str | os.PathLike | None = None, batch_size: int = 32):
        super().__init__(kind, cache_dir)
        self.model_name, self.pretrained, self.batch_size = model_name, pretrained, batch_size
        self._parts = None

    @property
    def key(self) -> str:
        return f"openclip-{_safe_name(self.model_name)}-{_safe_name(self.pretrained)}-{self.kind}"

    def _load(self):
        try:
            import open_clip
        except ImportError as err:
            raise BrainAlignError("OpenClipEmbeddings needs the optional package open_clip "
                                  "(`pip install open_clip_torch`; it installs torchvision, which must match your "
                                  "torch build); or use PrecomputedEmbeddings / SentenceTransformerText") from err
        if os.environ.get("BRAINALIGN_ALLOW_DOWNLOAD") != "1":
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        model, _, preprocess = open_clip.create_model_and_transforms(self.model_name, pretrained=self.pretrained)
        return model.eval(), preprocess, open_clip.get_tokenizer(self.model_name)

    def _compute(self, ids: list[str], stimuli: Any) -> np.ndarray:
        import torch

        if self._parts is None:
            self._parts = self._load()
        model, preprocess, tokenizer = self._parts
        column = "image_path" if self.kind == "image" else "caption"
        values = stimulus_table_column(stimuli, ids, column)
        out = []
        with torch.no_grad():
            for start in range(0, len(values), self.batch_size):
                chunk = values[start:start + self.batch_size]
                if self.kind == "image":
                    from PIL import Image

                    batch = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in chunk])
                    emb = model.encode_image(batch)
                else:
                    emb = model.encode_text(tokenizer([str(c) for c in chunk]))
                out.append(torch.nn.functional.normalize(emb.float(), dim=-1).numpy())
        return np.concatenate(out)
