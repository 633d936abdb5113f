"""``brainalign fit volume`` and ``brainalign retrieve``: whole-brain volume ↔ image/text alignment and retrieval.

``fit volume`` splits a volume cohort by stimulus, trains the 3-D patch ViT (``vit``), the ridge baseline
(``ridge``) and the MindEye-style MLP (``mlp``) on the same split, evaluates R@1/5/10 in four directions on the
held-out stimuli and, with ``--ablations``, the paper's Table 3 rows (image only, text only, region mask vs whole
brain, queue off).  The run folder gets ``config.yaml``, ``results.json``, ``timing.json``, ``retrieval.html`` and
the checkpoints (``vit.pt``, ``mlp.pt``, ``ridge.npz``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import typer

from brainalign.cli._common import console, fail, read_yaml, run
from brainalign.errors import BrainAlignError

fit_app = typer.Typer(help="Train a model on a cohort and evaluate it.", no_args_is_help=True)


# ---------------------------------------------------------------------------------------------------------------
# commands
@fit_app.command("volume")
def fit_volume(
    cohort: Path = typer.Option(..., help="Volume cohort folder (phenotypes.csv with stimulus_id, embeddings/)."),
    out: Path = typer.Option(..., help="Run folder (config.yaml, results.json, retrieval.html, vit.pt, ...)."),
    config: Optional[Path] = typer.Option(None, help="YAML with sections vit (VolumeAlignerConfig fields), mlp, ridge, "
                                                      "and keys methods, ablations, region_mask, text_provider "
                                                      "(precomputed | minilm)."),
    set_: list[str] = typer.Option([], "--set", help="Override, SECTION.FIELD=VALUE (repeatable), e.g. vit.epochs=5 "
                                                      "or mlp.hidden=64; a bare FIELD=VALUE sets a vit field."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated: vit, ridge, mlp (default all three)."),
    ablations: bool = typer.Option(False, "--ablations", help="Add Table 3's ablations: image only, text only, "
                                                               "region mask vs whole brain, queue off."),
    region_mask: Optional[Path] = typer.Option(None, help="NIfTI on the cohort grid for the region ablation "
                                                          "(default: the cohort's truth_mask.nii.gz if present)."),
) -> None:
    """Align whole-brain volumes with image and text embeddings; evaluate cross-modal retrieval on held-out stimuli."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from brainalign.evaluation.volume_run import fit_volume_run, resolve_config

    fields = read_yaml(config, "volume config") if config is not None else {}
    resolved = run(resolve_config, fields, set_, methods, ablations, region_mask)
    t0 = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("loading cohort")
        results = run(fit_volume_run, cohort, out, resolved, lambda msg: progress.update(task, description=msg))
    _print_table(results)
    console.print(f"done in {time.perf_counter() - t0:.1f} s; results: {out / 'results.json'}, "
                  f"table: {out / 'retrieval.html'}")


def _print_table(results: dict[str, Any]) -> None:
    from rich.table import Table

    from brainalign.evaluation.retrieval import DIRECTIONS

    table = Table(title="retrieval on held-out stimuli, R@1 / R@5 / R@10 (%)")
    table.add_column("model")
    for d in DIRECTIONS:
        table.add_column(d.replace("_", " "))
    rows = {**results["methods"], **{f"ablation {k}": v for k, v in results["ablations"].items()}}
    for name, row in rows.items():
        table.add_row(name, *[" / ".join(f"{100 * row[d][f'R@{k}']:.1f}" for k in (1, 5, 10)) if d in row else "–"
                              for d in DIRECTIONS])
    console.print(table)
    for note in results.get("notes", []):
        console.print(f"[yellow]note:[/] {note}", highlight=False)


def retrieve(
    model: Path = typer.Option(..., help="Run folder of `brainalign fit volume` (or a vit.pt / mlp.pt / ridge.npz)."),
    cohort: Path = typer.Option(..., help="Volume cohort to embed and retrieve from."),
    out: Optional[Path] = typer.Option(None, help="results JSON (default MODEL/retrieve_<cohort name>.json)."),
    method: str = typer.Option("vit", help="Which model of the run folder: vit, mlp or ridge."),
    k: int = typer.Option(10, help="Stimulus ids listed per scan."),
) -> None:
    """Embed a (new) cohort with a trained model: R@1/5/10 in four directions and each scan's top-k stimuli."""
    from brainalign.evaluation.volume_run import retrieve_run

    if k < 1:
        fail(BrainAlignError(f"--k must be >= 1, got {k}"))
    target = out or (model if model.is_dir() else model.parent) / f"retrieve_{cohort.name}.json"
    with console.status("embedding scans"):
        results = run(retrieve_run, model, cohort, target, method, k)
    for direction, row in results["metrics"].items():
        console.print(f"{direction}: " + ", ".join(f"R@{j} {100 * row[f'R@{j}']:.1f}% "
                                                  f"(chance {100 * row[f'chance@{j}']:.1f}%)" for j in (1, 5, 10)))
    for note in results["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print(f"results: {target}")
