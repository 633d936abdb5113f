"""Held-out retrieval of one volume-aligner setting (or the ridge baseline) on a volume cohort, without the run
folder of ``brainalign fit volume``: for comparing ViT settings quickly on the same stimulus split.

    .venv/bin/python benchmarks/volume_settings.py COHORT vit depth=2 width=64 heads=4 epochs=12 \\
        batch_size=64 queue_size=1024 patch_embedding=per_patch pool=mean
    .venv/bin/python benchmarks/volume_settings.py COHORT ridge

FIELD=VALUE items are :class:`~brainalign.models.volume_aligner.VolumeAlignerConfig` fields.  Prints the fit time
and R@1/5/10 (%) in the four directions (chance 100·k / n_test_stimuli).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from brainalign.data.volumes import VolumeCohort
from brainalign.evaluation.retrieval import retrieval_table, split_by_stimulus
from brainalign.evaluation.volume_run import cohort_targets, rows_of
from brainalign.models.retrieval_baselines import RidgeRetrieval
from brainalign.models.volume_aligner import VolumeAligner, VolumeAlignerConfig
from brainalign.utils import parse_scalar


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[2] not in ("vit", "ridge"):
        sys.exit(__doc__)
    cohort, method = VolumeCohort.load(sys.argv[1]), sys.argv[2]
    fields = {k: parse_scalar(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
    cfg = VolumeAlignerConfig.from_dict(fields)
    targets = cohort_targets(cohort)
    stim, subj = np.asarray(cohort.stimulus_ids).astype(str), np.asarray(cohort.subject_ids).astype(str)
    per_row = {k: rows_of(v, stim, k, cohort.root) for k, v in targets.items()}
    train, test = split_by_stimulus(stim, cfg.test_frac, cfg.seed)
    X = cohort.masked_stack()
    X_train, X_test = np.asarray(X[train]), np.asarray(X[test])
    start = time.perf_counter()
    if method == "ridge":
        model = RidgeRetrieval().fit(X_train, stim[train], **{k: v[train] for k, v in per_row.items()})
        extra = f"alphas {model.chosen_alphas}"
    else:
        given = {k: v[train] for k, v in per_row.items() if cfg.weights[k] > 0}
        model = VolumeAligner(cfg).fit(X_train, cohort.mask, stim[train], **given)
        extra = str(fields)
    fit_s = time.perf_counter() - start
    table = retrieval_table(model.embed_all(X_test), targets, stim[test], subj[test])
    print(f"{method} ({extra}): fit {fit_s:.1f} s; {len(train)} training / {len(test)} test scans")
    for direction, row in table.items():
        print(f"  {direction:15s} R@1/5/10 " + " / ".join(f"{100 * row[f'R@{k}']:.1f}" for k in (1, 5, 10))
              + f"   (chance@1 {100 * row['chance@1']:.1f})")


if __name__ == "__main__":
    main()
