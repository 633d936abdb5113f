"""Phenotype texts of a task, encoded once: the text side shared by NeuroLIP and the two-tower baselines.

Scans with identical phenotype text share one row of a table of unique texts; the frozen text encoder runs
once per unique string (and its cache keeps prompts built for prediction).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainalign.data.phenotype_text import AttributeSpec, PhenotypeTemplate, PhenotypeText
from brainalign.encoders.text import TextBatch, TextEncoder
from brainalign.errors import BrainAlignError
from brainalign.models.base import Task, label_string


@functools.lru_cache(maxsize=4)
def shared_text_encoder(model: str | None = None, max_length: int = 64) -> TextEncoder:
    """One frozen encoder per model for the whole process (loading it takes seconds; its cache is shared)."""
    return TextEncoder(model, trainable=False, max_length=max_length)


def task_template(task: Task, template: str | None = None, target_attribute: str | None = None) -> PhenotypeTemplate:
    """The phenotype template for ``task``, whose target attribute reads ``task.target`` and knows its labels.

    The target attribute (``target_attribute``, default: the one reading the target column, else ``"dx"``)
    maps each target label to itself when NeuroLIP's default words do not cover the labels (e.g. ``adhd``).

    Raises
    ------
    BrainAlignError
        When the template does not contain the target attribute.
    """
    base = PhenotypeTemplate(template) if template else PhenotypeTemplate()
    name = target_attribute or next((a for a in base.attributes if task.target in base.specs[a].column), "dx")
    base.require(name)
    spec = base.specs[name]
    raw = task.cohort.phenotypes[task.target]
    try:
        for value in raw.unique():
            spec.word(value, "target", task.target)
        values = spec.values
    except BrainAlignError:  # labels outside the default vocabulary: use them as words
        values = {v: label_string(v) for v in raw.unique()}
    return base.with_attributes(**{name: AttributeSpec(name, column=task.target, values=values, known_at_test=False)})


def sensitive_attributes(template: PhenotypeTemplate, task: Task, names: list[str] | None = None) -> list[str]:
    """Template attributes that carry the sensitive attribute (default: those reading ``task.sensitive``;
    ``age_group`` maps to ``srs``, NeuroLIP's child/adult attribute)."""
    if names is not None:
        template.require(names)
        return list(names)
    if task.sensitive is None:
        return []
    found = [a for a in template.attributes if task.sensitive in template.specs[a].column or a == task.sensitive]
    if not found and task.sensitive == "age_group" and "srs" in template.attributes:
        found = ["srs"]
    if not found:
        raise BrainAlignError(f"no template attribute carries the sensitive column '{task.sensitive}'; the template "
                              f"has {list(template.attributes)} (pass sensitive_attributes=[...])")
    return found


@dataclass
class TaskTexts:
    """The texts of every scan of a task and their encodings.

    Attributes
    ----------
    template : PhenotypeTemplate
    target_attribute : str
    attributes : list of str
        Template attributes in order (rows of ``features.attr_tokens``).
    unique : list of PhenotypeText
    text_id : array (n_scans,)
        Row of ``unique`` for each scan.
    features : TextBatch
        Encodings of ``unique`` (tokens (U, S, H), mask, pooled (U, H), attr_tokens (U, A, H)).
    groups : array (n_scans, A) of int
        Code of each attribute's value word per scan (same code = same value), for CALT labels.
    vocab : list of dict
        Per attribute, value word → code.
    """

    template: PhenotypeTemplate
    target_attribute: str
    attributes: list[str]
    unique: list[PhenotypeText]
    text_id: np.ndarray
    features: TextBatch
    groups: np.ndarray
    vocab: list[dict[str, int]]

    @classmethod
    def build(cls, task: Task, encoder: TextEncoder, template: str | None = None,
              target_attribute: str | None = None) -> TaskTexts:
        tmpl = task_template(task, template, target_attribute)
        target = next(a for a in tmpl.attributes if tmpl.specs[a].column == (task.target,))
        texts = tmpl.render_frame(task.cohort.phenotypes)
        strings = [t.text for t in texts]
        unique_strings, first, text_id = np.unique(strings, return_index=True, return_inverse=True)
        unique = [texts[i] for i in first]
        attributes = list(tmpl.attributes)
        features = encoder.encode(unique, attributes)
        words = np.array([[t.value(a) for a in attributes] for t in texts], dtype=object).reshape(len(texts), -1)
        vocab = [{w: k for k, w in enumerate(sorted(set(words[:, j])))} for j in range(len(attributes))]
        groups = np.array([[vocab[j][w] for j, w in enumerate(row)] for row in words], dtype=np.int64)
        return cls(tmpl, target, attributes, unique, text_id.astype(np.int64), features, groups, vocab)

    def class_prompts(self, task: Task, idx: np.ndarray, encoder: TextEncoder,
                      seen_words: dict[str, set[str]] | None = None) -> tuple[list[str], TextBatch]:
        """Prompts with the target attribute set to each class (negative, positive) for the scans ``idx``.

        Attributes known at test time come from each scan's row.  With ``seen_words`` (category attribute →
        words seen in training), a value never seen in training is an error naming the scan.

        Returns
        -------
        classes : [negative, positive] labels
        features : TextBatch of 2·len(idx) prompts, ordered scan-major: (scan 0, neg), (scan 0, pos), ...
        """
        rows = task.cohort.phenotypes.iloc[np.asarray(idx, dtype=int)]
        raw = task.cohort.phenotypes[task.target]
        labels = raw.map(label_string)
        classes = [task.negative, task.positive]
        per_class = [self.template.prompt_frame(rows, {self.target_attribute: raw[labels == c].iloc[0]})
                     for c in classes]
        if seen_words:
            self._check_seen(per_class[0], rows, seen_words)
        prompts = [p for pair in zip(*per_class) for p in pair]
        return classes, encoder.encode(prompts, self.attributes)

    def _check_seen(self, prompts: list[PhenotypeText], rows: pd.DataFrame, seen: dict[str, set[str]]) -> None:
        for attr, words in seen.items():
            for k, p in enumerate(prompts):
                if p.value(attr) not in words:
                    raise BrainAlignError(
                        f"scan '{rows['scan_id'].iat[k]}': attribute '{attr}' has value '{p.value(attr)}', never seen "
                        f"in training (seen: {sorted(words)}); the model cannot score it")

    def seen_category_words(self, train: np.ndarray) -> dict[str, set[str]]:
        """Category attributes (other than the target) → value words present in the training scans."""
        out = {}
        for j, attr in enumerate(self.attributes):
            if attr == self.target_attribute or self.template.specs[attr].kind != "category":
                continue
            inverse = {code: w for w, code in self.vocab[j].items()}
            out[attr] = {inverse[c] for c in np.unique(self.groups[train, j])}
        return out
