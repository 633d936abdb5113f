"""fMRI-LM stage-0 captions: descriptors z-scored against training scans and written into fixed templates.

:func:`caption_cohort` computes the descriptors of :mod:`brainalign.data.descriptors` for every scan, fits
a :class:`DescriptorReference` (mean and standard deviation of each descriptor) on the training scans only,
z-scores every scan against it, and writes one caption per scan.  Everything is deterministic: the same
cohort, training scans and settings give the same text.

Wording of a z-score (thresholds inclusive towards "typical")::

    z < -2        "markedly reduced (z=-2.3)"
    -2 <= z < -1  "reduced (z=-1.4)"
    -1 <= z <= 1  "typical (z=+0.2)"
    1 < z <= 2    "elevated (z=+1.5)"
    z > 2         "markedly elevated (z=+2.1)"

A caption has one paragraph per domain (connectivity, gradients, graph, ICA fALFF: global values first,
then the networks outside the typical range, most extreme first), and, when the cohort folder has
``events/<scan_id>.tsv`` (as the ``connattractor`` cohort writes), a sentence summarising the task events:
trials per ``trial_type``, the mean of every other numeric column (onset, duration and ``onset_session``
excepted) and the values of text columns.

Descriptors are computed from each scan's stored series (or matrix) at its own TR, not from the
resampled, cropped series of :mod:`brainalign.data.preprocess` that the tokenizer reads.

:func:`polish_captions` rewrites captions into freer prose with the offline LLM, line by line, and keeps a
rewritten line only when it carries exactly the numbers of the template line: SmolLM2-135M changes z values
in many lines (BENCHMARKS.md), and a caption with wrong numbers is worse than a stiff one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from brainalign.data.descriptors import (
    DescriptorModel,
    DescriptorSettings,
    resolve_networks,
)
from brainalign.errors import BrainAlignError

__all__ = [
    "CaptionResult",
    "DescriptorReference",
    "caption_cohort",
    "caption_scans",
    "describe_cohort",
    "describe_z",
    "event_summary",
]

EVENTS_DIR = "events"
_EVENT_SKIP = {"onset", "duration", "onset_session", "trial_type", "sample", "response_time"}


class DescriptorReference:
    """Mean and standard deviation of every descriptor over reference (training) scans.

    Attributes
    ----------
    mean_, std_ : pandas.Series
        Indexed by descriptor name.  ``std_`` is the sample standard deviation (ddof=1; 0 with one scan).
    n_scans_ : int
    """

    def __init__(self, mean: pd.Series, std: pd.Series, n_scans: int):
        self.mean_ = mean.astype(float)
        self.std_ = std.astype(float)
        self.n_scans_ = int(n_scans)

    @classmethod
    def fit(cls, descriptors: pd.DataFrame) -> DescriptorReference:
        """Fit on a (scans × descriptors) table of training scans.

        Raises
        ------
        BrainAlignError
            Empty table, or non-finite values (the column and scan are named).
        """
        if descriptors.shape[0] == 0 or descriptors.shape[1] == 0:
            raise BrainAlignError("the descriptor reference needs at least one training scan and one descriptor")
        values = descriptors.to_numpy(dtype=float)
        bad = ~np.isfinite(values)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise BrainAlignError(f"descriptor '{descriptors.columns[c]}' is not finite for scan "
                                  f"'{descriptors.index[r]}'")
        std = descriptors.std(ddof=1) if len(descriptors) > 1 else descriptors.std(ddof=0)
        return cls(descriptors.mean(), std, len(descriptors))

    def zscore(self, descriptors: pd.DataFrame) -> pd.DataFrame:
        """``(value - mean) / std`` per descriptor; a descriptor constant over the reference gets z = 0.

        Raises
        ------
        BrainAlignError
            A descriptor of the reference is missing from the table.
        """
        missing = [c for c in self.mean_.index if c not in descriptors]
        if missing:
            raise BrainAlignError(f"descriptor column(s) {missing[:10]} of the reference are missing from the table")
        cols = list(self.mean_.index)
        std = self.std_.where(self.std_ > 0)
        z = (descriptors[cols] - self.mean_) / std
        return z.fillna(0.0).where(np.isfinite(descriptors[cols]))

    def to_dict(self) -> dict[str, Any]:
        return {"n_scans": self.n_scans_,
                "mean": {k: float(v) for k, v in self.mean_.items()},
                "std": {k: float(v) for k, v in self.std_.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DescriptorReference:
        try:
            mean, std = pd.Series(d["mean"], dtype=float), pd.Series(d["std"], dtype=float)
            n = int(d["n_scans"])
        except (KeyError, TypeError, ValueError) as err:
            raise BrainAlignError(f"descriptor reference needs 'mean', 'std' and 'n_scans': {err!r}") from None
        if list(mean.index) != list(std.index):
            raise BrainAlignError("descriptor reference: 'mean' and 'std' name different descriptors")
        return cls(mean, std, n)


# -- wording ------------------------------------------------------------------------------------------

def describe_z(z: float) -> str:
    """The phrase for one z-score, e.g. ``"markedly elevated (z=+2.1)"`` (thresholds in the module docstring)."""
    return f"{_word(z)} ({_fmt_z(z)})"


def _word(z: float) -> str:
    z = round(float(z), 1)  # classify the number the text shows, so "typical (z=+1.0)" never reads "elevated"
    if z < -2:
        return "markedly reduced"
    if z < -1:
        return "reduced"
    if z <= 1:
        return "typical"
    return "elevated" if z <= 2 else "markedly elevated"


def _fmt_z(z: float) -> str:
    z = 0.0 if abs(z) < 0.05 else z  # no "z=-0.0"
    return f"z={z:+.1f}"


def _pretty(net: str) -> str:
    return net.replace("_", " ")


_WORD_ORDER = ("markedly elevated", "markedly reduced", "elevated", "reduced")


def _network_sentence(z: pd.Series, prefix: str, what: str, networks: Sequence[str]) -> str:
    """E.g. 'Within-network connectivity is markedly reduced in default (z=-2.3); elevated in visual (z=+1.2)
    and limbic (z=+1.1); the other networks are typical.'  Most extreme categories first, then by |z|."""
    cols = [f"{prefix}:{n}" for n in networks if f"{prefix}:{n}" in z.index]
    if not cols:
        return ""
    words = {c: _word(z[c]) for c in cols}
    groups = []
    for word in _WORD_ORDER:
        members = sorted((c for c in cols if words[c] == word), key=lambda c: -abs(z[c]))
        if members:
            names = [f"{_pretty(c.split(':', 1)[1])} ({_fmt_z(z[c])})" for c in members]
            groups.append(f"{word} in " + (", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1
                                           else names[0]))
    if not groups:
        return f"{what} is typical in every network."
    n_typical = sum(w == "typical" for w in words.values())
    return f"{what} is " + "; ".join(groups) + ("; the other networks are typical." if n_typical else ".")


def _caption(z: pd.Series, networks: Sequence[str], n_gradients: int, events: str) -> str:
    d = {k: describe_z(v) for k, v in z.items() if ":" not in k}
    paras = [
        f"Functional connectivity: within-network connectivity is {d['fc_within']} and between-network "
        f"connectivity is {d['fc_between']}. "
        + _network_sentence(z, "fc_within", "Within-network connectivity", networks) + " "
        + _network_sentence(z, "fc_between", "Connectivity with other networks", networks),
        "Functional gradients: the principal gradient range is " + d["gradient1_range"] + " and its variance is "
        + d["gradient1_variance"]
        + "".join(f"; the {('second', 'third')[g - 2]} gradient range is {d[f'gradient{g}_range']}"
                  for g in range(2, min(n_gradients, 3) + 1)) + ". "
        + _network_sentence(z, "gradient1", "Position on the principal gradient", networks),
        f"Graph organisation: modularity is {d['modularity']}, global efficiency is {d['global_efficiency']} and "
        f"average clustering is {d['clustering']}.",
    ]
    if "falff" in d:
        paras.append(f"Low-frequency fluctuations (ICA fALFF): overall {d['falff']}. "
                     + _network_sentence(z, "falff", "fALFF", networks))
    if events:
        paras.append(events)
    return "\n".join(p.strip() for p in paras)


# -- events -------------------------------------------------------------------------------------------

def _number(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def event_summary(events: pd.DataFrame, where: str = "events") -> str:
    """One sentence summarising a BIDS-like events table.

    Trials are counted per ``trial_type`` (or in total without that column); every other numeric column
    (except onset, duration, onset_session) is averaged over its non-missing rows; text columns list their
    distinct values (at most three).

    Raises
    ------
    BrainAlignError
        The table lacks an ``onset`` column.
    """
    if "onset" not in events:
        raise BrainAlignError(f"{where}: events table needs an 'onset' column (columns: {list(events.columns)})")
    if events.empty:
        return "Task events: none recorded."
    if "trial_type" in events:
        counts = events["trial_type"].astype(str).value_counts(sort=False)
        parts = [f"{n} {t}" for t, n in counts.items()]
        text = "Task events: " + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]) \
            + (" trials" if len(parts) > 1 or counts.iloc[0] != 1 else " trial")
    else:
        text = f"Task events: {len(events)} trials"
    details = []
    for col in events.columns:
        if col in _EVENT_SKIP:
            continue
        values = events[col].dropna()
        if values.empty:
            continue
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            details.append(f"mean {col.replace('_', ' ')} {_number(float(numeric.mean()))}")
        else:
            uniq = list(dict.fromkeys(values.astype(str)))
            details.append(f"{col.replace('_', ' ')} " + "/".join(uniq[:3]) + (" ..." if len(uniq) > 3 else ""))
    return text + ("; " + ", ".join(details) if details else "") + "."


def _cohort_events(cohort, scan_ids: Sequence[str]) -> list[str]:
    folder = cohort.root / EVENTS_DIR
    if not folder.is_dir():
        return [""] * len(scan_ids)
    out = []
    for sid in scan_ids:  # one small file per scan
        path = folder / f"{sid}.tsv"
        if not path.is_file():
            out.append("")
            continue
        try:
            table = pd.read_csv(path, sep="\t", na_values=["n/a"])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise BrainAlignError(f"scan '{sid}': events file {path} cannot be read as a TSV table: {err}") from None
        out.append(event_summary(table, str(path)))
    return out


# -- the whole cohort ---------------------------------------------------------------------------------

@dataclass
class CaptionResult:
    """What :func:`describe_cohort` returns.

    Attributes
    ----------
    table : DataFrame
        One row per scan: ``scan_id``, ``caption``, then each descriptor ``<name>`` and ``<name>_z``.
    reference : DescriptorReference
    model : DescriptorModel
    train_indices : array of int
    """

    table: pd.DataFrame
    reference: DescriptorReference
    model: DescriptorModel
    train_indices: np.ndarray

    def reference_dict(self) -> dict[str, Any]:
        """Everything fitted on the training scans, JSON-ready (``captions_reference.json``)."""
        return {"train_scan_ids": self.table["scan_id"].iloc[self.train_indices].tolist(),
                "reference": self.reference.to_dict(), "model": self.model.to_dict()}


def caption_scans(descriptors: pd.DataFrame, reference: DescriptorReference, networks: Sequence[str],
                  n_gradients: int = 3, events: Sequence[str] | None = None) -> pd.DataFrame:
    """Captions for a descriptor table: columns ``scan_id``, ``caption``, each descriptor and its ``_z``.

    Parameters
    ----------
    descriptors : DataFrame (scans × descriptors), index scan_id
    reference : DescriptorReference
    networks : sequence of str
        Network names in the order they are mentioned when tied.
    events : sequence of str, optional
        Event sentence per scan ("" for none).
    """
    z = reference.zscore(descriptors)
    events = list(events) if events is not None else [""] * len(z)
    captions = [_caption(z.iloc[i], networks, n_gradients, events[i]) for i in range(len(z))]
    cols = list(reference.mean_.index)
    numbers = pd.concat([descriptors[cols], z.add_suffix("_z")], axis=1)
    numbers = numbers[[c for pair in zip(cols, [f"{c}_z" for c in cols]) for c in pair]]
    table = pd.DataFrame({"scan_id": descriptors.index.astype(str), "caption": captions})
    return pd.concat([table, numbers.reset_index(drop=True)], axis=1)


def describe_cohort(cohort, train_indices: Sequence[int] | None = None, *, networks: Sequence[str] | None = None,
                    settings: DescriptorSettings | None = None, progress=None) -> CaptionResult:
    """Descriptors, reference statistics and captions of every scan (see :func:`caption_cohort`).

    Parameters
    ----------
    cohort : Cohort
    train_indices : sequence of int, optional
        Scans the reference statistics and group pieces are fitted on (default: all scans).
    networks : sequence of R str, optional
        Network labels when the cohort has none (or to override them).
    settings : DescriptorSettings, optional
    progress : callable, optional
        ``progress(done, total)`` while descriptors are computed.
    """
    labels = resolve_networks(cohort, networks)
    n = len(cohort)
    train = np.arange(n) if train_indices is None else np.asarray(train_indices, dtype=int)
    if train.size == 0:
        raise BrainAlignError("no training scans: the reference statistics need at least one")
    if train.min() < 0 or train.max() >= n:
        raise BrainAlignError(f"training scan positions must lie in 0..{n - 1}")
    model = DescriptorModel(labels, settings).fit(cohort, train)
    desc = model.transform(cohort, progress=progress)
    reference = DescriptorReference.fit(desc.iloc[train])
    table = caption_scans(desc, reference, model.networks, model.settings.n_gradients,
                          _cohort_events(cohort, cohort.scan_ids.tolist()))
    return CaptionResult(table, reference, model, train)


def caption_cohort(cohort, train_indices: Sequence[int] | None = None, *, networks: Sequence[str] | None = None,
                   settings: DescriptorSettings | None = None) -> pd.DataFrame:
    """One caption per scan, in cohort order.

    Parameters
    ----------
    cohort : Cohort
        Needs network labels (``roi_networks``) or ``networks``; time series with a TR add the ICA fALFF
        domain; ``events/<scan_id>.tsv`` add an event sentence.
    train_indices : sequence of int, optional
        Scans the reference statistics (and the group gradients and ICA) are fitted on.  Default: all scans
        — then every scan's z-scores are relative to the whole cohort, including itself; pass the training
        split for a model evaluated on held-out scans.
    networks : sequence of R str, optional
    settings : DescriptorSettings, optional

    Returns
    -------
    DataFrame
        Columns ``scan_id``, ``caption``, then every descriptor's raw value and its z-score (``<name>_z``).
    """
    return describe_cohort(cohort, train_indices, networks=networks, settings=settings).table


# -- polishing with the offline LLM ------------------------------------------------------------------

POLISH_SYSTEM = ("You edit neuroimaging reports. Rewrite the user's text as one fluent sentence or two for a "
                 "clinician. Keep every number exactly as written, with its sign and the 'z=' before it. Add "
                 "nothing that is not in the text.")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def same_numbers(template: str, text: str) -> bool:
    """Whether ``text`` holds exactly the numbers of ``template`` (as a multiset of written numbers)."""
    return sorted(_NUMBER.findall(template)) == sorted(_NUMBER.findall(text))


def polish_captions(captions: Sequence[str], llm: str | None = None, generate=None, batch_size: int = 8,
                    max_new_tokens: int = 160) -> tuple[list[str], np.ndarray]:
    """Rewrite captions with the offline LLM, keeping only rewrites that preserve every number.

    Each caption line is rewritten on its own; a rewrite that is empty, spans several lines or does not hold
    exactly the numbers of its line (:func:`same_numbers`) is discarded and the template line kept.

    Parameters
    ----------
    captions : sequence of str
        Template captions (lines separated by ``"\\n"``).
    llm : str, optional
        Model key or ``.gguf`` path (default SmolLM2-135M-Instruct).
    generate : callable, optional
        ``generate(prompts, system) -> replies``; default :func:`brainalign.encoders.language_model.generate`.
    batch_size, max_new_tokens : int
        Passed to the generator.

    Returns
    -------
    captions : list of str
        Polished captions, one per input, in order.
    kept : ndarray of int, shape (n_captions,)
        Rewritten lines kept per caption.
    """
    if isinstance(captions, str) or any(not isinstance(c, str) or not c.strip() for c in captions):
        raise BrainAlignError("polish_captions needs a list of non-empty caption strings")
    if generate is None:
        from brainalign.encoders.language_model import generate as llm_generate

        def generate(prompts, system):
            return llm_generate(prompts, system, llm, max_new_tokens=max_new_tokens, batch_size=batch_size)

    lines = [c.split("\n") for c in captions]
    flat = [line for parts in lines for line in parts]
    replies = generate(flat, POLISH_SYSTEM)
    if len(replies) != len(flat):
        raise BrainAlignError(f"the generator returned {len(replies)} replies for {len(flat)} prompts")
    ok = np.array([bool(r.strip()) and "\n" not in r.strip() and same_numbers(t, r)
                   for t, r in zip(flat, replies)])
    chosen = [r.strip() if good else t for t, r, good in zip(flat, replies, ok)]
    starts = np.cumsum([0] + [len(parts) for parts in lines])
    out = ["\n".join(chosen[a:b]) for a, b in zip(starts[:-1], starts[1:])]
    return out, np.add.reduceat(ok.astype(int), starts[:-1])
