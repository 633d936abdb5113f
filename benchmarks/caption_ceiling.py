"""How much of the descriptor captions can a scan's connectivity retrieve at all?  A ceiling for the tokenizer's
caption↔scan retrieval, on the same split and captions as a ``brainalign tokenize fit`` run.

Peers: ridge regression (``RidgeCV``) fitted on the run's training scans and scored with the same
``retrieval_metrics`` on its held-out scans, from
- the Fisher-z upper triangle of each scan's FC to its caption embedding (the frozen text encoder the tokenizer's
  contrast uses);
- the descriptor values the caption is written from to its caption embedding (how far the caption embeddings can
  be told apart at all through a linear map);
- the same descriptors to the caption's lines embedded one by one and concatenated.
The tokenizer's own figures are read from the run and printed beside them.

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
    table = caption_cohort(cohort, train_indices=train)
    captions = table["caption"].astype(str).tolist()
    emb = caption_embeddings(captions, None)
    lines = [c.split("\n") for c in captions]
    width = max(len(parts) for parts in lines)
    line_emb = caption_embeddings([p for parts in lines for p in parts + [""] * (width - len(parts))], None)
    line_emb = line_emb.reshape(len(captions), -1)
    fc = np.arctanh(np.clip(cohort.fc_upper(), -0.999, 0.999))
    descriptors = np.nan_to_num(table.select_dtypes("number").to_numpy(dtype=float))
    test_captions = [captions[i] for i in test]
    keys = ("caption_to_scan_R@1", "caption_to_scan_R@5", "caption_to_scan_R@10", "scan_to_caption_R@5",
            "chance_R@5")
    print(f"{len(train)} training / {len(test)} held-out scans")
    print("model".ljust(36) + "".join(k.rjust(22) for k in keys))
    ceiling = {}
    for name, features, target in (("ridge FC -> caption", fc, emb),
                                   (f"ridge {descriptors.shape[1]} descriptors -> caption", descriptors, emb),
                                   ("ridge descriptors -> caption lines", descriptors, line_emb)):
        ridge = RidgeCV(alphas=np.logspace(-3, 5, 17)).fit(features[train], target[train])
        ceiling[name] = retrieval_metrics(ridge.predict(features[test]), target[test], test_captions)
        print(name.ljust(36) + "".join(f"{ceiling[name][k]:22.3f}" for k in keys) + f"   (alpha {ridge.alpha_:g})")
    for name, entry in run["methods"].items():
        m = entry["metrics"]
        print(f"tokenizer {name}".ljust(36) + "".join(f"{m.get(k, float('nan')):22.3f}" for k in keys))
    fc_r5 = ceiling["ridge FC -> caption"]["caption_to_scan_R@5"]
    print(f"ratio tokenizer full / ridge FC, caption->scan R@5: "
          f"{run['methods']['full']['metrics']['caption_to_scan_R@5'] / max(fc_r5, 1e-12):.2f}")


if __name__ == "__main__":
    main()
