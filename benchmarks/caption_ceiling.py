"""How much of the descriptor captions can a scan's connectivity retrieve at all?  Ceilings for the tokenizer's
caption↔scan retrieval, on the held-out split ``brainalign tokenize fit`` uses (one per seed) and its captions.

Peers, each fitted on the training scans and scored with the same ``retrieval_metrics`` on the held-out ones:
- ridge regression (``RidgeCV``) from the Fisher-z upper triangle of each scan's FC to its caption embedding (the
  frozen text encoder the tokenizer's contrast uses), and to the caption embedding *whitened* (PCA to 32 axes
  fitted on the training captions: the template text all captions share is one direction, the numbers that tell
  them apart are small ones);
- the same FC through a linear map trained with the tokenizer's own contrast (SigLIP loss, AdamW lr 1e-3,
  batch 32, 20 epochs, the tokenizer's defaults): what the contrast's loss and budget reach on *exact* FC;
- ridge from the descriptor values the caption is written from (how far the caption embeddings can be told
  apart at all through a linear map), to the caption and to its lines embedded one by one and concatenated.

    .venv/bin/python benchmarks/caption_ceiling.py --cohort /tmp/tk/sim400 --seeds 0,1,2
    .venv/bin/python benchmarks/caption_ceiling.py --cohort /tmp/tk/sim400 --run RUN   # the run's split; prints
                                                                                     # its tokenizer rows beside
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler

from brainalign.data.captions import caption_cohort
from brainalign.data.cohort import Cohort
from brainalign.evaluation.tokenizer_run import caption_embeddings, holdout_split, retrieval_metrics
from brainalign.models.tokenizer import TokenizerConfig
from brainalign.objectives.contrastive import SigmoidTemperatureBias, siglip_loss

KEYS = ("caption_to_scan_R@1", "caption_to_scan_R@5", "caption_to_scan_R@10", "scan_to_caption_R@5", "chance_R@5")
WHITEN_AXES = 32


def siglip_linear(x: np.ndarray, y: np.ndarray, train: np.ndarray, cfg: TokenizerConfig, seed: int) -> np.ndarray:
    """A linear map from standardised x (S, F) to y's space (S, H), trained on the training rows with the
    tokenizer's contrast loss and optimisation settings; returns the (S, H) predictions."""
    torch.manual_seed(seed)
    xs = torch.as_tensor(StandardScaler().fit(x[train]).transform(x), dtype=torch.float32)
    ys = torch.as_tensor(y, dtype=torch.float32)
    linear, scale = torch.nn.Linear(xs.shape[1], ys.shape[1]), SigmoidTemperatureBias()
    params = list(linear.parameters()) + list(scale.parameters())
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rows = torch.as_tensor(train)
    for _ in range(cfg.epochs):
        order = rows[torch.randperm(len(rows))]
        for batch in order.split(cfg.batch_size):
            if len(batch) < 2:
                continue
            log_t, b = scale()
            loss = siglip_loss(linear(xs[batch]), ys[batch], log_t, b)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        return linear(xs).numpy()


def ceilings(cohort: Cohort, train: np.ndarray, test: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
    table = caption_cohort(cohort, train_indices=train)
    captions = table["caption"].astype(str).tolist()
    emb = caption_embeddings(captions, None)
    whitened = PCA(WHITEN_AXES, whiten=True, random_state=seed).fit(emb[train]).transform(emb)
    lines = [c.split("\n") for c in captions]
    width = max(len(parts) for parts in lines)
    line_emb = caption_embeddings([p for parts in lines for p in parts + [""] * (width - len(parts))], None)
    line_emb = line_emb.reshape(len(captions), -1)
    fc = np.arctanh(np.clip(cohort.fc_upper(), -0.999, 0.999))
    descriptors = np.nan_to_num(table.select_dtypes("number").to_numpy(dtype=float))
    test_captions = [captions[i] for i in test]
    out = {}
    for name, features, target in (("ridge FC -> caption", fc, emb),
                                   ("ridge FC -> whitened caption", fc, whitened),
                                   (f"ridge {descriptors.shape[1]} descriptors -> caption", descriptors, emb),
                                   ("ridge descriptors -> caption lines", descriptors, line_emb)):
        ridge = RidgeCV(alphas=np.logspace(-3, 5, 17)).fit(features[train], target[train])
        out[name] = retrieval_metrics(ridge.predict(features[test]), target[test], test_captions)
    cfg = TokenizerConfig(seed=seed)
    for name, target in (("SigLIP linear FC -> caption", emb), ("SigLIP linear FC -> whitened caption", whitened)):
        out[name] = retrieval_metrics(siglip_linear(fc, target, train, cfg, seed)[test], target[test], test_captions)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", required=True)
    parser.add_argument("--seeds", default="0", help="comma-separated split seeds (ignored with --run)")
    parser.add_argument("--run", help="folder of a `brainalign tokenize fit` run: use its split, print its rows")
    args = parser.parse_args()

    cohort = Cohort.load(args.cohort)
    run = json.loads((Path(args.run) / "results.json").read_text()) if args.run else None
    seeds = [None] if run else [int(s) for s in args.seeds.split(",")]
    print("model".ljust(40) + "".join(k.rjust(22) for k in KEYS))
    per_seed = []
    for seed in seeds:
        if run:
            train, test = np.array(run["split"]["train"]), np.array(run["split"]["test"])
        else:
            train, test = holdout_split(cohort, TokenizerConfig(seed=seed))
        print(f"split seed {seed if seed is not None else 'of the run'}: {len(train)} training / {len(test)} held-out")
        rows = ceilings(cohort, train, test, seed or 0)
        per_seed.append(rows)
        for name, m in rows.items():
            print(name.ljust(40) + "".join(f"{m[k]:22.3f}" for k in KEYS))
    if len(per_seed) > 1:
        print("mean over seeds")
        for name in per_seed[0]:
            print(name.ljust(40) + "".join(f"{np.mean([r[name][k] for r in per_seed]):22.3f}" for k in KEYS))
    if run:
        for name, entry in run["methods"].items():
            m = entry["metrics"]
            print(f"tokenizer {name}".ljust(40) + "".join(f"{m.get(k, float('nan')):22.3f}" for k in KEYS))
        fc_r5 = per_seed[0]["ridge FC -> caption"]["caption_to_scan_R@5"]
        print(f"ratio tokenizer full / ridge FC, caption->scan R@5: "
              f"{run['methods']['full']['metrics']['caption_to_scan_R@5'] / max(fc_r5, 1e-12):.2f}")


if __name__ == "__main__":
    main()
