"""``brainalign tokenize``: train the fMRI-LM stage-1 tokenizer (with ablations) and turn scans into tokens.

The work is done by :mod:`brainalign.evaluation.tokenizer_run`, whose docstring describes the run folder and the
token file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from brainalign.cli._common import console, read_yaml, run
from brainalign.errors import BrainAlignError
from brainalign.utils import parse_scalar

tokenize_app = typer.Typer(help="Train the text-aligned fMRI tokenizer and turn scans into tokens.",
                           no_args_is_help=True)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``["epochs=5", "lr=1e-3"]`` → ``{"epochs": 5, "lr": 0.001}`` (values: :func:`~brainalign.utils.parse_scalar`)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise BrainAlignError(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = parse_scalar(value)
    return out


@tokenize_app.command("fit")
def tokenize_fit(
    cohort: Path = typer.Option(..., "--cohort", help="Cohort folder with timeseries/ and a TR."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML of TokenizerConfig fields."),
    set_: list[str] = typer.Option([], "--set", help="Override a config field, key=value (repeatable)."),
    ablations: bool = typer.Option(True, "--ablations/--no-ablations",
                                   help="Also train no_adversary and no_contrast."),
    captions: Optional[Path] = typer.Option(None, "--captions",
                                            help="CSV (scan_id, caption) instead of the descriptor captions."),
) -> None:
    """Train the text-aligned tokenizer; write config.yaml, results.json and model.pt."""
    from brainalign.evaluation.tokenizer_run import fit_experiment
    from brainalign.models.tokenizer import TokenizerConfig

    data = read_yaml(config, "tokenizer config") if config else {}
    data.update(run(parse_sets, set_))
    cfg = run(TokenizerConfig.from_dict, data)
    results = run(fit_experiment, cohort, out, cfg, ablations,
                  lambda msg: console.print(msg, highlight=False, markup=False), captions)
    console.print(f"[green]done[/] in {results['total_seconds']:.0f} s: {out}/results.json")


@tokenize_app.command("encode")
def tokenize_encode(
    model: Path = typer.Option(..., "--model", help="Run folder of `tokenize fit` (or its model.pt)."),
    cohort: Path = typer.Option(..., "--cohort", help="Cohort folder to encode."),
    out: Path = typer.Option(..., "--out", help="Folder for tokens.npz and tokens.json."),
) -> None:
    """Turn every scan of a cohort into code ids (tokens.npz: codes (S, M) int64, scan_ids (S,))."""
    from brainalign.evaluation.tokenizer_run import encode_cohort

    with console.status("encoding"):
        path = run(encode_cohort, model, cohort, out)
    console.print(f"[green]wrote[/] {path}")
