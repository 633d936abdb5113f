"""The ``brainalign`` command.  Heavy imports happen inside commands so ``--help`` stays fast.

Each verb lives in its own module of this package; this file only assembles them.
"""

from __future__ import annotations

import typer

from brainalign.cli.benchmark import benchmark, demo
from brainalign.cli.captions import captions
from brainalign.cli.cohort import cohort_app
from brainalign.cli.tokenize import tokenize_app
from brainalign.cli.volume import fit_app, retrieve
from brainalign.cli.volume_data import register_volume_commands

app = typer.Typer(help="Align brain activity (fMRI) with language.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(cohort_app, name="cohort")
app.add_typer(tokenize_app, name="tokenize")
register_volume_commands(cohort_app)
app.command("benchmark")(benchmark)
app.command("demo")(demo)
app.command("captions")(captions)
app.add_typer(fit_app, name="fit"); app.command("retrieve")(retrieve)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
