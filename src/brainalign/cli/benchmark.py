"""``brainalign benchmark`` and ``brainalign demo``: methods compared under the NeuroLIP protocol."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from brainalign.cli._common import console, fail, read_yaml, run
from brainalign.errors import BrainAlignError
from brainalign.utils import parse_scalar


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
    from brainalign.evaluation.benchmark import BenchmarkConfig

    fields = read_yaml(config, "benchmark config") if config is not None else {}
    given = dict(cohort=str(cohort) if cohort else None, target=target, sensitive=sensitive, positive=positive,
                 test_size=test_size, n_folds=n_folds, stratify_site=stratify_site, seed=seed, n_boot=n_boot,
                 methods=[m.strip() for m in methods.split(",") if m.strip()] if methods else None)
    fields.update({k: v for k, v in given.items() if v is not None})
    fields.setdefault("methods", ["logreg"])
    fields.setdefault("target", "dx")
    if "cohort" not in fields:
        fail(BrainAlignError("no cohort: pass --cohort DIR or set 'cohort' in --config"))
    if ablation:
        from brainalign.models.brain_text import ABLATIONS

        fields["methods"] = list(fields["methods"]) + [a for a in ABLATIONS if a not in fields["methods"]]
    params = fields.setdefault("method_params", {})
    for item in set_:
        key, sep, value = item.partition("=")
        method, dot, param = key.partition(".")
        if not (sep and dot and method and param):
            fail(BrainAlignError(f"--set expects METHOD.PARAM=VALUE, got {item!r}"))
        params.setdefault(method, {})[param] = parse_scalar(value)
    try:
        bench = BenchmarkConfig(**fields)
    except TypeError as err:
        fail(BrainAlignError(f"bad benchmark config: {err}"))
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
        results = run(run_benchmark, config, out,
                       on_fold=lambda name, k: progress.update(bar, advance=1, description=f"{name} fold {k + 1}"))
    notes = sorted({str(w.message) for w in caught if issubclass(w.category, UndefinedMetricWarning)})
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    return results


# ---------------------------------------------------------------------------------------------------- demo
DEMO_METHODS = "logreg,brainnettf,clip,siglip,fairclip,neurolip"


def demo(
    out: Optional[Path] = typer.Option(None, help="Keep the simulated cohort and run folder here (default: a temp folder)."),
    methods: str = typer.Option(DEMO_METHODS, help="Methods to compare (--methods logreg for a 10-second demo)."),
    n_subjects: int = typer.Option(250, help="Simulated persons (1 or 2 scans each)."),
    confound: float = typer.Option(0.6, help="Sex–diagnosis confound of the simulated cohort, 0..1."),
    epochs: int = typer.Option(30, help="Training epochs of the neural methods."),
    select_epoch: bool = typer.Option(True, help="Keep, per fold, each neural method's epoch with the highest "
                                      "validation AUC (BENCHMARKS.md: five cohorts)."),
    lr: float = typer.Option(3e-4, help="Learning rate of the neural methods (papers: 1e-4 over 64 epochs; this "
                                        "short run's settings were chosen by validation AUC, BENCHMARKS.md)."),
    batch_size: int = typer.Option(16, help="Scans per step of the neural methods (papers: 32)."),
    sensitive_loss: str = typer.Option("confusion", help="NeuroLIP's sensitive-attribute term: 'negative' (the "
                                       "paper's maximised CALT loss) or 'confusion' (BENCHMARKS.md)."),
    n_folds: int = typer.Option(3, help="Cross-validation folds."),
    seed: int = typer.Option(0, help="Seed of the simulated cohort, the folds and training."),
) -> None:
    """Simulate a cohort with a sex–diagnosis confound, compare NeuroLIP with its baselines, print the table with
    fairness metrics and how well NeuroLIP's token maps (occlusion maps here) find the planted ROIs."""
    from brainalign.data.simulate import SimulationConfig, simulate_cohort
    from brainalign.evaluation.benchmark import BenchmarkConfig
    from brainalign.models import get_method

    t0 = time.perf_counter()
    names = [m.strip() for m in methods.split(",") if m.strip()]
    params = {name: {"epochs": epochs, "lr": lr, "batch_size": batch_size, "select_epoch": select_epoch}
              for name in names if name != "logreg"}
    for name in names:  # NeuroLIP's attention maps are alike for every token (BENCHMARKS.md); occlusion maps are not
        if name.startswith("neurolip"):
            params[name].update(token_map="occlusion", sensitive_loss=sensitive_loss)
    for name in names:  # unknown names and bad options fail here, before simulating
        run(get_method, name, **params.get(name, {}))
    root = out or Path(tempfile.mkdtemp(prefix="brainalign-demo-"))
    cohort_dir, run_dir = root / "cohort", root / "run"
    config = run(SimulationConfig, n_subjects=n_subjects, confound=confound, sensitive="sex", seed=seed)
    console.print(f"[bold]1/2[/] simulating {n_subjects} persons (sex–diagnosis confound {confound}) → {cohort_dir}")
    run(simulate_cohort, cohort_dir, config, overwrite=True)
    truth = json.loads((cohort_dir / "truth.json").read_text())
    phi = truth.get("realised", {}).get("phi_subjects")
    console.print(f"    planted: dx effect in {len(truth['dx_rois'])} ROIs, sex effect in "
                  f"{len(truth['sensitive_rois'])} other ROIs" + (f"; realised dx–sex phi {phi:.2f}" if phi is not None else ""))
    console.print(f"[bold]2/2[/] benchmark {', '.join(names)}: 20% held-out test + {n_folds}-fold CV grouped by person"
                  f" ({epochs} epochs{', best validation epoch kept' if select_epoch else ''}, lr {lr:g}, batch "
                  f"{batch_size} for neural methods; NeuroLIP's sensitive term: {sensitive_loss})")
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
