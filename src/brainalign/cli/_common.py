"""Shared pieces of the ``brainalign`` command: the console, error handling, YAML and table readers."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from brainalign.errors import BrainAlignError

console = Console(width=max(Console().width, 120))  # room for the metric table when output is piped


def fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}", highlight=False)
    raise typer.Exit(code=2)


def run(fn, *args, **kwargs):
    """Call ``fn`` turning user errors into a message and exit code 2 (no traceback)."""
    try:
        return fn(*args, **kwargs)
    except (BrainAlignError, FileNotFoundError) as err:
        fail(err)



def read_yaml(path: Path, what: str) -> dict:
    """A YAML mapping from ``path``; an unreadable file or a non-mapping is a clear error (exit code 2)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        fail(BrainAlignError(f"cannot read {what} {path}: {err}"))
    if not isinstance(data, dict):
        fail(BrainAlignError(f"{what} {path} must hold a mapping of fields, got {type(data).__name__}"))
    return data


def read_table(path: Path):
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype={"scan_id": str, "subject_id": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        fail(BrainAlignError(f"cannot read phenotype table {path}: {err}"))
    for col in ("roi_path", "func_path"):  # relative file paths are relative to the table's folder
        if col in table:
            table[col] = [p if pd.isna(p) or Path(p).is_absolute() else str(path.parent / p) for p in table[col]]
    return table
