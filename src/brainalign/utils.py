"""Small helpers shared across layers (no brainalign imports)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


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
