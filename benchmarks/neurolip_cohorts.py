"""NeuroLIP against its baselines on several new simulated cohorts: ``brainalign demo --seed S`` for each seed (its
cohort, protocol and settings, each neural method's epoch chosen per fold on validation AUC).  Prints, per cohort
and across cohorts, the three targets of issue 3: NeuroLIP's AUC gap to the best method, its DEOdds against CLIP's,
SigLIP's and FairCLIP's, and its "autism" token map's AUROC for the planted dx ROIs.

    .venv/bin/python benchmarks/neurolip_cohorts.py OUT --seeds 3,4,5,6,7 [-- DEMO OPTIONS, e.g. --epochs 15]

A cohort whose ``OUT/seed-S/run/results.json`` exists is read, not re-run (so a stopped run resumes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from brainalign.cli import app

CLIP_STYLE = ("clip", "siglip", "fairclip")


def run_cohort(root: Path, seed: int, demo_options: list[str]) -> dict:
    """``brainalign demo --seed seed --out root`` (unless its results exist) → its results.json."""
    results = root / "run" / "results.json"
    if not results.exists():
        out = CliRunner().invoke(app, ["demo", "--seed", str(seed), "--out", str(root), *demo_options])
        (root / "demo.log").write_text(out.output)
        if out.exit_code != 0:
            raise SystemExit(f"seed {seed}: the demo failed, see {root / 'demo.log'}") from out.exception
    return json.loads(results.read_text())


def summarise(results: dict) -> dict:
    """One cohort's results → AUC and DEOdds per method (%), NeuroLIP's gap and targets."""
    auc = {m: 100 * r["mean"]["auc"] for m, r in results["methods"].items()}
    deodds = {m: 100 * r["mean"]["deodds"] for m, r in results["methods"].items()}
    best = max((m for m in auc if m != "neurolip"), key=auc.get)
    maps = results["methods"]["neurolip"].get("token_map_scores", {})
    autism = maps.get(results["task"]["positive"], {})  # the positive dx token's map
    gap = auc[best] - auc["neurolip"]
    return {"auc": auc, "deodds": deodds, "best": best, "gap": gap,
            "map_dx": autism.get("auroc_dx", np.nan), "map_sex": autism.get("auroc_sensitive", np.nan),
            "auc_met": gap <= 2.0, "deodds_met": all(deodds["neurolip"] < deodds[m] for m in CLIP_STYLE),
            "map_met": autism.get("auroc_dx", 0.0) >= 0.85,
            "epochs": [f.get("selected_epoch") for f in results["methods"]["neurolip"]["folds"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seeds", default="3,4,5,6,7", help="comma-separated cohort seeds")
    parser.add_argument("demo_options", nargs=argparse.REMAINDER, help="passed to `brainalign demo` after --")
    args = parser.parse_args()
    options = [o for o in args.demo_options if o != "--"]

    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        t0 = time.perf_counter()
        row = summarise(run_cohort(args.out / f"seed-{seed}", seed, options))
        rows.append(row)
        deodds = " / ".join(f"{row['deodds'][m]:.1f}" for m in ("neurolip", *CLIP_STYLE))
        print(f"seed {seed} ({time.perf_counter() - t0:.0f} s): NeuroLIP AUC {row['auc']['neurolip']:.1f}, best other "
              f"{row['best']} {row['auc'][row['best']]:.1f} (gap {row['gap']:.1f}); DEOdds NeuroLIP / CLIP / SigLIP / "
              f"FairCLIP {deodds}; 'autism' map dx {row['map_dx']:.2f} / sex {row['map_sex']:.2f}; NeuroLIP epochs "
              f"{row['epochs']}", flush=True)
    print(f"\nacross {len(rows)} cohorts (mean ± std of the per-cohort means, %):")
    for method in rows[0]["auc"]:
        aucs = [r["auc"][method] for r in rows]
        deos = [r["deodds"][method] for r in rows]
        print(f"  {method:12s} AUC {np.mean(aucs):5.1f} ± {np.std(aucs):4.1f}   DEOdds {np.mean(deos):5.1f} ± "
              f"{np.std(deos):4.1f}")
    n = len(rows)
    print(f"targets met: AUC within 2 of the best {sum(r['auc_met'] for r in rows)} of {n} (mean gap "
          f"{np.mean([r['gap'] for r in rows]):.1f}); DEOdds below CLIP, SigLIP and FairCLIP "
          f"{sum(r['deodds_met'] for r in rows)} of {n}; dx map >= 0.85 {sum(r['map_met'] for r in rows)} of {n} "
          f"(mean {np.nanmean([r['map_dx'] for r in rows]):.2f})")


if __name__ == "__main__":
    main()
