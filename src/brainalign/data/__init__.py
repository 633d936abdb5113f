"""Cohorts and everything computed from them before any model: connectivity, phenotype text, descriptors and
captions, simulation, whole-brain volumes.

``data`` knows nothing of models.  Start with :class:`brainalign.data.cohort.Cohort` (ROI time series and
connectivity) or :class:`brainalign.data.volumes.VolumeCohort` (MNI volumes with stimuli).
"""

from brainalign.data.cohort import Cohort, CohortMeta, write_cohort
from brainalign.data.volumes import VolumeCohort, write_volume_cohort

__all__ = ["Cohort", "CohortMeta", "VolumeCohort", "write_cohort", "write_volume_cohort"]
