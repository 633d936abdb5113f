"""Methods that learn from a cohort: baselines, NeuroLIP, tokenizers, aligners (registered by name)."""

from brainalign.models.base import Method, Task
from brainalign.models.registry import available_methods, get_method, register_method

# Importing the modules registers their methods.
from brainalign.models import brain_text, linear, supervised  # noqa: E402,F401

__all__ = ["Method", "Task", "available_methods", "get_method", "register_method"]
