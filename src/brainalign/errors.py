"""Exceptions raised on bad input.  Every message names the scan, file or column at fault."""

from __future__ import annotations


class BrainAlignError(ValueError):
    """Bad input or an impossible request, with a message a user can act on."""


class CohortError(BrainAlignError):
    """One or more problems in a cohort folder.

    Parameters
    ----------
    problems : list of str
        Every problem found, each naming the scan, file or column.  All are reported at once.
    """

    def __init__(self, problems: list[str] | str, *, where: str = "cohort"):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        n = len(self.problems)
        head = f"{where}: {n} problem{'s' if n != 1 else ''}"
        super().__init__(head + "\n" + "\n".join(f"  - {p}" for p in self.problems))
