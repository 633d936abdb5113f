"""Cohorts and everything computed from them before any model: connectivity, phenotype text, simulation.

``data`` knows nothing of models.  Start with :class:`brainalign.data.cohort.Cohort`.
"""

from brainalign.data.cohort import Cohort, CohortMeta, write_cohort

__all__ = ["Cohort", "CohortMeta", "write_cohort"]
