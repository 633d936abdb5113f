"""``brainalign cohort simulate-volumes`` / ``volume-info`` / ``fetch-nsd``: whole-brain volume cohorts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from brainalign.cli._common import console, read_yaml, run


def simulate_volumes(
    out: Path = typer.Argument(..., help="Output volume cohort folder."),
    config: Optional[Path] = typer.Option(None, help="YAML file of VolumeSimulationConfig fields (options override it)."),
    n_stimuli: Optional[int] = typer.Option(None, help="Distinct stimuli (default 100)."),
    n_subjects: Optional[int] = typer.Option(None, help="Subjects, each seeing every stimulus (default 2)."),
    repeats: Optional[int] = typer.Option(None, help="Presentations per stimulus and subject (default 1)."),
    latent_dim: Optional[int] = typer.Option(None, help="Stimulus latent dimensions, >= 7 (default 16)."),
    n_regions: Optional[int] = typer.Option(None, help="Informative blobs (default 10)."),
    signal: Optional[float] = typer.Option(None, help="Response amplitude at a blob centre (default 2.0)."),
    noise: Optional[float] = typer.Option(None, help="Voxel noise sd (default 1.0)."),
    seed: Optional[int] = typer.Option(None, help="Seed (default 0)."),
    overwrite: bool = typer.Option(False, help="Replace an existing folder."),
) -> None:
    """Simulate an NSD-like volume cohort (MNI 2 mm) with planted informative regions (truth_mask.nii.gz).

    Every VolumeSimulationConfig field (see brainalign.data.simulate_volumes) can be set in the --config YAML.
    The resolved config is written as config.yaml in the folder.
    """
    import yaml

    from brainalign.data.simulate_volumes import VolumeSimulationConfig, simulate_volume_cohort

    fields = read_yaml(config, "volume simulation config") if config is not None else {}
    given = dict(n_stimuli=n_stimuli, n_subjects=n_subjects, repeats=repeats, latent_dim=latent_dim,
                 n_regions=n_regions, signal=signal, noise=noise, seed=seed)
    fields.update({k: v for k, v in given.items() if v is not None})
    sim = run(VolumeSimulationConfig.from_dict, fields)
    t0 = time.perf_counter()
    with console.status(f"simulating {sim.n_subjects * sim.n_stimuli * sim.repeats} volumes"):
        path = run(simulate_volume_cohort, out, sim, overwrite=overwrite)
    (path / "config.yaml").write_text(yaml.safe_dump(sim.to_dict(), sort_keys=False))
    console.print(f"wrote {path} in {time.perf_counter() - t0:.1f} s (truth: {path / 'truth.json'})")


def volume_info(
    cohort: Path = typer.Argument(..., help="Volume cohort folder."),
    check: bool = typer.Option(False, help="Also read every volume and report content problems (exit code 1)."),
) -> None:
    """Describe a volume cohort: scans, subjects, stimuli, mask, embeddings and grid notes."""
    from brainalign.data.volumes import EMBEDDING_KINDS, VolumeCohort, check_volume_contents, mni_mask_source

    c = run(VolumeCohort.load, cohort)
    table = Table(title=f"volume cohort {c.meta.get('name', c.root.name)}", show_header=False)
    table.add_row("folder", str(c.root))
    table.add_row("scans / subjects / stimuli",
                  f"{len(c)} / {len(set(c.subject_ids))} / {len(set(c.stimulus_ids))}")
    table.add_row("mask", f"{c.n_voxels} voxels ({mni_mask_source()}"
                  + (f" ∩ {c.meta['mask']}" if c.meta.get("mask") else "") + ")")
    for kind in EMBEDDING_KINDS:
        found = c.embeddings(kind)
        table.add_row(f"{kind} embeddings", "none" if found is None else f"{found[0].shape[0]} x {found[0].shape[1]}")
    for note in c.notes:
        table.add_row("note", note)
    if c.meta.get("description"):
        table.add_row("description", str(c.meta["description"]))
    console.print(table)
    if check:
        problems = run(check_volume_contents, cohort)
        if problems:
            console.print(f"[bold red]{len(problems)} problem(s)[/] in {cohort}:", highlight=False)
            for p in problems:
                console.print(f"  - {p}", highlight=False, markup=False)
            raise typer.Exit(code=1)
        console.print(f"[green]all {len(c)} volumes readable[/]")


def embed_captions(
    cohort: Path = typer.Argument(..., help="Volume cohort folder (stimuli.csv captions)."),
    model: Optional[str] = typer.Option(None, help="sentence-transformers folder or name (default: offline all-MiniLM-L6-v2)."),
    batch_size: int = typer.Option(64, help="Captions per batch."),
) -> None:
    """Embed every stimulus caption with a sentence-transformers model into embeddings/text.npy (+ ids.txt).

    Gives cohorts without precomputed targets (nimare-studyset, NSD) the text embeddings that
    `brainalign fit volume` aligns to.
    """
    from brainalign.data.volumes import VolumeCohort, write_embeddings
    from brainalign.encoders.embedding_providers import SentenceTransformerText

    c = run(VolumeCohort.load, cohort)
    ids = c.stimuli["stimulus_id"].astype(str).tolist()
    t0 = time.perf_counter()
    with console.status(f"embedding {len(ids)} captions"):
        emb = run(SentenceTransformerText(model, batch_size=batch_size).get, ids, c.stimuli)
    path = run(write_embeddings, cohort, "text", emb, ids)
    console.print(f"wrote {path} ({emb.shape[0]} x {emb.shape[1]}) in {time.perf_counter() - t0:.1f} s")


def fetch_volumes(
    name: str = typer.Argument(..., help="nimare-studyset (PyPI package nimare) | nsd (downloads from the NSD S3 bucket)."),
    out: Path = typer.Argument(..., help="Output volume cohort folder."),
    subject: int = typer.Option(1, help="nsd: subject 1..8."),
    sessions: str = typer.Option("1", help="nsd: sessions, e.g. '1' or '1-3' or '1,4'."),
    per: str = typer.Option("image", help="nsd: one volume per 'image' (repeats averaged) or per 'trial'."),
    max_trials: Optional[int] = typer.Option(None, help="nsd: only the first n trials."),
    n_studies: Optional[int] = typer.Option(None, help="nimare-studyset: only the first n studies."),
    data_dir: Optional[Path] = typer.Option(None, help="nsd download cache (default $BRAINALIGN_DATA or ~/.cache/brainalign)."),
    overwrite: bool = typer.Option(False),
) -> None:
    """Build a whole-brain volume cohort from real data (NSD betas or nimare's studyset)."""
    from brainalign.errors import BrainAlignError

    if name == "nimare-studyset":
        from brainalign.data.studyset import load_nimare_studyset

        with console.status("drawing study maps"):
            path = run(load_nimare_studyset, out, overwrite=overwrite, n_studies=n_studies)
    elif name == "nsd":
        from brainalign.data.nsd import fetch_nsd

        path = run(fetch_nsd, out, subject=subject, sessions=run(_parse_sessions, sessions), per=per,
                   max_trials=max_trials, data_dir=data_dir, overwrite=overwrite)
    else:
        from brainalign.cli._common import fail

        fail(BrainAlignError(f"unknown volume dataset '{name}'; choose nimare-studyset or nsd"))
    volume_info(path, check=False)


def _parse_sessions(text: str) -> list[int]:
    from brainalign.errors import BrainAlignError

    sessions: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            sessions += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise BrainAlignError(f"--sessions must look like '1', '1-3' or '1,4', got {text!r}") from None
    return sessions


def register_volume_commands(app: typer.Typer) -> None:
    """Add the volume commands to the ``cohort`` group."""
    app.command("simulate-volumes")(simulate_volumes)
    app.command("volume-info")(volume_info)
    app.command("fetch-volumes")(fetch_volumes)
    app.command("embed-captions")(embed_captions)
