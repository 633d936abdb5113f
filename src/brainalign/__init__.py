"""brainalign: align brain activity (fMRI) with language.

The package is layered one way: ``data`` (cohorts, connectivity, phenotype text, simulation)
→ ``models`` (encoders, objectives, methods) → ``evaluation`` (metrics, protocol, benchmark runner)
→ ``cli``.  Lower layers never import higher ones.
"""

from brainalign.errors import BrainAlignError, CohortError

__version__ = "0.1.0"
__all__ = ["BrainAlignError", "CohortError", "__version__"]
