"""Held-out retrieval of one volume-aligner setting (or the ridge baseline) on a volume cohort: ``brainalign fit
volume`` for a single method, into a temporary run folder, printed as one compact table, for comparing ViT settings
quickly on the same stimulus split.

    .venv/bin/python benchmarks/volume_settings.py COHORT vit depth=2 width=64 heads=4 epochs=12 \\
        batch_size=64 queue_size=1024 patch_embedding=per_patch pool=mean
    .venv/bin/python benchmarks/volume_settings.py COHORT ridge

FIELD=VALUE items are :class:`~brainalign.models.volume_aligner.VolumeAlignerConfig` fields (``seed`` and
``test_frac`` also set the split).  Prints the fit time and R@1/5/10 (%) in the four directions.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from brainalign.evaluation.volume_run import fit_volume_run, resolve_config


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[2] not in ("vit", "ridge"):
        sys.exit(__doc__)
    cohort, method, items = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    config = resolve_config({}, [f"vit.{item}" for item in items], method, False, None)
    with tempfile.TemporaryDirectory() as run:
        results = fit_volume_run(cohort, Path(run), config)
        fit_s = json.loads((Path(run) / "timing.json").read_text())[f"fit_{method}_s"]
    split = results["split"]
    extra = (f"alphas {results['ridge_alphas']}, centred {results['ridge_centred']}" if method == "ridge"
             else " ".join(items))
    print(f"{method} ({extra}): fit {fit_s:.1f} s; {split['n_train_scans']} training / {split['n_test_scans']} "
          "test scans")
    for direction, row in results["methods"][method].items():
        print(f"  {direction:15s} R@1/5/10 " + " / ".join(f"{100 * row[f'R@{k}']:.1f}" for k in (1, 5, 10))
              + f"   (chance@1 {100 * row['chance@1']:.1f})")


if __name__ == "__main__":
    main()
