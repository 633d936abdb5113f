"""Re-run a ``brainalign demo`` benchmark with per-fold epoch selection (``select_epoch=true``) for every neural
method, on the same cohort, folds, seeds and settings; print each method's test AUC, DEOdds and selected epochs
per fold, and NeuroLIP's token-map scores.  logreg is left out (it has no epochs; its row is the demo's).

    .venv/bin/brainalign demo --seed 1 --epochs 30 --out DEMO
    .venv/bin/python benchmarks/select_epoch_demo.py DEMO OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from brainalign.evaluation.benchmark import BenchmarkConfig, run_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", type=Path, help="folder written by `brainalign demo --out`")
    parser.add_argument("out", type=Path, help="run folder to write")
    args = parser.parse_args()

    config = yaml.safe_load((args.demo / "run" / "config.yaml").read_text())
    config["methods"] = [m for m in config["methods"] if m != "logreg"]
    for params in config["method_params"].values():
        params["select_epoch"] = True
    results = run_benchmark(BenchmarkConfig(**config), args.out)
    for name, entry in results["methods"].items():
        mean = entry["mean"]
        epochs = [fold.get("selected_epoch") for fold in entry["folds"]]
        print(f"{name:12s} AUC {100 * mean['auc']:5.1f}  DEOdds {100 * mean.get('deodds', np.nan):5.1f}  "
              f"selected epochs {epochs}")
    scores = results["methods"].get("neurolip", {}).get("token_map_scores", {})
    for token, score in scores.items():
        print(f"neurolip token map {token!r}: AUROC {score['auroc_dx']:.2f} for the planted dx ROIs, "
              f"{score['auroc_sensitive']:.2f} for the sensitive ones")


if __name__ == "__main__":
    main()
