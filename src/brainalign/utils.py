"""Small helpers shared across layers (no brainalign imports but the exceptions)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from brainalign.errors import BrainAlignError


def to_numpy(x: Any) -> np.ndarray:
    """numpy view of an array-like, including a torch tensor (detached, on the CPU), without importing torch."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def preview(values: Sequence[Any] | np.ndarray, k: int = 5) -> str:
    """The first ``k`` values as a short list for error messages: ``[1, 2, 3, ...]``."""
    values = list(values)
    shown = ", ".join(repr(v.item() if isinstance(v, np.generic) else v) for v in values[:k])
    return f"[{shown}{', ...' if len(values) > k else ''}]"


def parse_scalar(text: str) -> Any:
    """A ``--set KEY=VALUE`` value: a YAML scalar (``5``, ``0.5``, ``true``, ``[1, 2]``, ``null``, ``gram``), with
    exponent floats written without a dot (``1e-3``, ``5E4``; YAML 1.1 reads them as strings) as floats."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity") else value
        except ValueError:
            return value
    return value


def config_from_dict(cls: type, data: Any, what: str) -> Any:
    """Build the dataclass ``cls`` from a mapping (YAML, ``--set``): unknown keys and values of the wrong type
    (a string where a number belongs) are :class:`BrainAlignError` naming ``what`` ("tokenizer", ...)."""
    import dataclasses

    data = dict(data or {})
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise BrainAlignError(f"unknown {what} option(s) {unknown}; known: {known}")
    try:
        return cls(**data)
    except TypeError as err:
        raise BrainAlignError(f"{what} options have a value of the wrong type: {err}") from None
