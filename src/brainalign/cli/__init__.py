"""The ``brainalign`` command.  Heavy imports happen inside commands so ``--help`` stays fast.

Each verb lives in its own module of this package; this file only assembles them.
"""

from __future__ import annotations

import typer

from brainalign.cli.benchmark import benchmark, demo
from brainalign.cli.cohort import cohort_app

app = typer.Typer(help="Align brain activity (fMRI) with language.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(cohort_app, name="cohort")
app.command("benchmark")(benchmark)
app.command("demo")(demo)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
