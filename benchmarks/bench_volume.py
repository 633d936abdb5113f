"""Training throughput of the volume aligner: brainalign's Lightning path vs a plain PyTorch loop, same process.

Both train the same 3-D patch ViT (fresh copies from one seed) on the same masked rows with the same queued
InfoNCE loss and AdamW, for the same number of steps; the first ``--warmup`` steps of each are not timed.

    .venv/bin/python benchmarks/bench_volume.py --cohort /tmp/va_bench --steps 20 --batch-size 32

Without ``--cohort`` the rows are random numbers on the MNI brain mask (throughput does not depend on values).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from brainalign.models.volume_aligner import VolumeAligner, VolumeAlignerConfig, VolumeRows
from brainalign.objectives.queue import stimulus_codes
from brainalign.training.trainer import fit_module, seed_everything


def _data(args):
    if args.cohort:
        from brainalign.data.volumes import VolumeCohort

        cohort = VolumeCohort.load(args.cohort)
        n = min(len(cohort), args.batch_size * (args.steps + args.warmup))
        X = np.asarray(cohort.masked_stack()[:n])
        stim = np.asarray(cohort.stimulus_ids)[:n]
        img, txt = cohort.scan_embeddings("image")[:n], cohort.scan_embeddings("text")[:n]
        return cohort.mask, X, stim, img, txt
    from brainalign.data.volumes import mni_brain_mask

    mask = np.asarray(mni_brain_mask().dataobj) > 0
    rng = np.random.default_rng(0)
    n = args.batch_size * (args.steps + args.warmup)
    X = rng.standard_normal((n, int(mask.sum())), dtype=np.float32)
    stim = np.array([f"s{i}" for i in range(n)])
    return mask, X, stim, rng.standard_normal((n, 64)).astype(np.float32), rng.standard_normal((n, 48)).astype(
        np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=14)
    parser.add_argument("--patch-embedding", choices=("shared", "per_patch"), default="shared")
    parser.add_argument("--pool", choices=("cls", "mean"), default="cls")
    args = parser.parse_args()

    mask, X, stim, img, txt = _data(args)
    cfg = VolumeAlignerConfig(width=args.width, depth=args.depth, heads=args.heads, patch_size=args.patch_size,
                              patch_embedding=args.patch_embedding, pool=args.pool, batch_size=args.batch_size,
                              epochs=1, queue_size=256, warmup_frac=0.0)
    targets = {"image": img, "text": txt}
    codes = stimulus_codes(stim)
    print(f"torch threads: {torch.get_num_threads()}; rows {X.shape}; batch {args.batch_size}; "
          f"width {args.width}, depth {args.depth}, patch {args.patch_size} ({args.patch_embedding}, {args.pool})")

    # --- brainalign: fit_module (Lightning) -------------------------------------------------------------
    seed_everything(0)
    module = VolumeAligner(cfg)._build(mask, {k: v.shape[1] for k, v in targets.items()})
    print(f"kept patches: {module.backbone.n_patches}, parameters: "
          f"{sum(p.numel() for p in module.parameters()) / 1e6:.2f} M")
    n_warm = args.batch_size * args.warmup
    fit_module(module, VolumeRows(X[:n_warm], codes[:n_warm], {k: v[:n_warm] for k, v in targets.items()}),
               cfg.train_config())
    t0 = time.perf_counter()
    fit_module(module, VolumeRows(X[n_warm:], codes[n_warm:], {k: v[n_warm:] for k, v in targets.items()}),
               cfg.train_config())
    lightning_s = time.perf_counter() - t0
    n_timed = X.shape[0] - n_warm

    # --- plain PyTorch loop over the same model and loss --------------------------------------------------
    seed_everything(0)
    plain = VolumeAligner(cfg)._build(mask, {k: v.shape[1] for k, v in targets.items()})
    optimizer = torch.optim.AdamW(plain.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    dataset = VolumeRows(X, codes, targets)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    plain.train()
    t0, seen = None, 0
    for step, batch in enumerate(loader):
        if step == args.warmup:
            t0, seen = time.perf_counter(), 0
        loss, _ = plain.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), cfg.grad_clip)
        optimizer.step()
        seen += len(batch["index"])
    plain_s = time.perf_counter() - t0

    ours, theirs = n_timed / lightning_s, seen / plain_s
    print(f"brainalign fit_module (Lightning): {ours:.2f} volumes/s ({n_timed} volumes in {lightning_s:.1f} s)")
    print(f"plain PyTorch loop:                {theirs:.2f} volumes/s ({seen} volumes in {plain_s:.1f} s)")
    print(f"ratio brainalign / plain: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
