"""How much of the descriptor captions can a scan's connectivity retrieve at all?  A ceiling for the tokenizer's
caption↔scan retrieval, on the same split and captions as a ``brainalign tokenize fit`` run.

Peer: ridge regression (``RidgeCV``) from the Fisher-z upper triangle of each scan's FC to its caption embedding
(the frozen text encoder the tokenizer's contrast uses), fitted on the run's training scans and scored with the same
``retrieval_metrics`` on its held-out scans; the tokenizer's own figures are read from the run and printed beside it.

    .venv/bin/python benchmarks/caption_ceiling.py --cohort /tmp/tk/sim400 --run RUN
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import RidgeCV

from brainalign.data.captions import caption_cohort
from brainalign.data.cohort import Cohort
from brainalign.evaluation.tokenizer_run import caption_embeddings, retrieval_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--run", required=True, help="folder of a `brainalign tokenize fit` run (its split)")
    args = parser.parse_args()

    cohort = Cohort.load(args.cohort)
    run = json.loads((Path(args.run) / "results.json").read_text())
    train, test = np.array(run["split"]["train"]), np.array(run["split"]["test"])
    captions = caption_cohort(cohort, train_indices=train)["caption"].astype(str).tolist()
    emb = caption_embeddings(captions, None)
    fc = np.arctanh(np.clip(cohort.fc_upper(), -0.999, 0.999))
    ridge = RidgeCV(alphas=np.logspace(-1, 5, 13)).fit(fc[train], emb[train])
    ceiling = retrieval_metrics(ridge.predict(fc[test]), emb[test], [captions[i] for i in test])
    keys = ("caption_to_scan_R@1", "caption_to_scan_R@5", "caption_to_scan_R@10", "scan_to_caption_R@5",
            "chance_R@5")
    print(f"{len(train)} training / {len(test)} held-out scans; ridge alpha {ridge.alpha_:g}")
    print("model".ljust(28) + "".join(k.rjust(22) for k in keys))
    print("ridge FC -> caption".ljust(28) + "".join(f"{ceiling[k]:22.3f}" for k in keys))
    for name, entry in run["methods"].items():
        m = entry["metrics"]
        print(f"tokenizer {name}".ljust(28) + "".join(f"{m.get(k, float('nan')):22.3f}" for k in keys))
    print(f"ratio tokenizer full / ridge, caption->scan R@5: "
          f"{run['methods']['full']['metrics']['caption_to_scan_R@5'] / max(ceiling['caption_to_scan_R@5'], 1e-12):.2f}")


if __name__ == "__main__":
    main()
