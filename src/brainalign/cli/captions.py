"""``brainalign captions``: fMRI-LM stage-0 descriptor captions for every scan of a cohort."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from brainalign.cli._common import console, fail, run
from brainalign.errors import BrainAlignError


def _read_ids(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        fail(BrainAlignError(f"cannot read training scan list {path}: {err}"))


def train_positions(cohort, train_fraction: float | None, train_ids: list[str] | None, seed: int,
                    where: str = "--train-ids"):
    """Training scan positions: listed scan IDs, a subject-grouped random fraction, or all scans.

    Raises
    ------
    BrainAlignError
        Both options given, a fraction outside (0, 1], or IDs that are not in the cohort.
    """
    import numpy as np

    if train_fraction is not None and train_ids is not None:
        raise BrainAlignError("give --train-fraction or --train-ids, not both")
    if train_ids is not None:
        ids = cohort.scan_ids
        unknown = sorted(set(train_ids) - set(ids))
        if unknown:
            raise BrainAlignError(f"{where}: {len(unknown)} scan_id(s) not in the cohort, e.g. {unknown[:5]}")
        return np.flatnonzero(np.isin(ids, train_ids))
    if train_fraction is None or train_fraction == 1.0:
        return np.arange(len(cohort))
    if not 0 < train_fraction < 1:
        raise BrainAlignError(f"--train-fraction must be in (0, 1], got {train_fraction}")
    from sklearn.model_selection import GroupShuffleSplit

    split = GroupShuffleSplit(n_splits=1, train_size=train_fraction, random_state=seed)
    train, _ = next(split.split(np.zeros(len(cohort)), groups=cohort.subject_ids))
    return np.sort(train)


def captions(
    cohort: Path = typer.Option(..., "--cohort", help="Cohort folder."),
    out: Optional[Path] = typer.Option(None, help="Output CSV (default: COHORT/captions.csv); the reference "
                                                  "statistics go beside it as <stem>_reference.json."),
    train_fraction: Optional[float] = typer.Option(None, help="Fit the reference on this fraction of subjects "
                                                              "(grouped by subject_id, seeded)."),
    train_ids: Optional[Path] = typer.Option(None, help="File with the training scan_ids, one per line."),
    networks: Optional[Path] = typer.Option(None, help="Network label file, one label per ROI and line "
                                                       "(for cohorts without roi_networks)."),
    edge_density: float = typer.Option(0.15, help="Fraction of ROI pairs kept for graph metrics."),
    n_gradients: int = typer.Option(3, help="Diffusion-map gradients."),
    seed: int = typer.Option(0, help="Seed of the split, Louvain and ICA."),
    polish: bool = typer.Option(False, help="Rewrite each caption line with the offline LLM; a rewrite is kept "
                                            "only if it holds exactly the line's numbers (column caption_template "
                                            "keeps the template, polished_lines counts the rewrites kept)."),
    llm: Optional[str] = typer.Option(None, help="Language model for --polish: 'smollm2-135m' (default) or a "
                                                 ".gguf path."),
) -> None:
    """fMRI-LM stage 0: descriptors, z-scores against training scans, and one caption per scan.

    Writes the CSV (scan_id, caption, each descriptor and its z-score), <stem>_reference.json (what was fitted
    on the training scans, and a summary) and <stem>_config.yaml.  Default reference: all scans.
    """
    import numpy as np
    import yaml
    from rich.progress import Progress

    from brainalign.data.captions import describe_cohort, polish_captions
    from brainalign.data.cohort import Cohort
    from brainalign.data.descriptors import DescriptorSettings, read_network_file

    c = run(Cohort.load, cohort)
    if polish:
        from brainalign.encoders.language_model import gguf_path

        run(gguf_path, llm)  # an unknown model fails before the descriptors are computed
    labels = run(read_network_file, networks, c.n_rois) if networks is not None else None
    ids = _read_ids(train_ids) if train_ids is not None else None
    train = run(train_positions, c, train_fraction, ids, seed, str(train_ids))
    settings = run(DescriptorSettings, edge_density=edge_density, n_gradients=n_gradients, seed=seed)
    out = out if out is not None else c.root / "captions.csv"
    t0 = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("descriptors", total=len(c))
        result = run(describe_cohort, c, train, networks=labels, settings=settings,
                     progress=lambda done, total: progress.update(task, completed=done))
    table = result.table
    if polish:
        console.print(f"polishing {len(table)} captions with the offline LLM ...", highlight=False)
        polished, kept = run(polish_captions, table["caption"].astype(str).tolist(), llm)
        table.insert(table.columns.get_loc("caption") + 1, "caption_template", table["caption"])
        table.insert(table.columns.get_loc("caption_template") + 1, "polished_lines", kept)
        table["caption"] = polished
    templates = table.get("caption_template", table["caption"])
    seconds = time.perf_counter() - t0
    config = {"cohort": str(c.root), "out": str(out), "train_fraction": train_fraction,
              "train_ids": str(train_ids) if train_ids else None, "networks": str(networks) if networks else None,
              "polish": polish, "llm": llm,
              "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()}}
    n_desc = len(result.reference.mean_)
    summary = {"n_scans": len(c), "n_train": int(train.size), "n_descriptors": n_desc,
               "domains": list(result.model.domains), "seconds": round(seconds, 2),
               "n_events_captions": int(templates.str.contains("Task events").sum()),
               "mean_caption_words": float(np.mean(table["caption"].str.split().str.len()))}
    if polish:
        n_lines = int(table["caption_template"].str.count("\n").sum() + len(table))
        summary["polished_lines_kept"] = f"{int(table['polished_lines'].sum())} of {n_lines}"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    ref_path = out.with_name(out.stem + "_reference.json")
    ref_path.write_text(json.dumps({"config": config, "summary": summary, **result.reference_dict()}) + "\n")
    out.with_name(out.stem + "_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    console.print(f"wrote {out} ({len(c)} scans, {n_desc} descriptors in {', '.join(result.model.domains)}; "
                  f"reference on {train.size} training scans) and {ref_path.name} in {seconds:.1f} s",
                  highlight=False)
