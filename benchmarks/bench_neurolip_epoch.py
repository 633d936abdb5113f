"""One NeuroLIP training epoch: brainalign's Lightning training against a plain PyTorch loop, same process.

Both train the same module (same data, batch size, AdamW, warm-up/cosine schedule, gradient clipping) for one
epoch; the ratio is the framework's overhead.  Data: a simulated cohort (default 800 scans × 200 ROIs).

Usage::

    .venv/bin/python benchmarks/bench_neurolip_epoch.py [--n-scans 800 --n-rois 200 --method neurolip]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch


def plain_loop(module, dataset, batch_size: int, seed: int) -> float:
    """One epoch with a hand-written loop; returns seconds."""
    from brainalign.training.trainer import warmup_cosine

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed), drop_last=True)
    cfg = module.train_config
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = len(loader)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total, int(cfg.warmup_frac * total), cfg.min_lr_frac))
    module.train()
    start = time.perf_counter()
    for batch in loader:
        loss, _ = module.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.step()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-scans", type=int, default=800)
    p.add_argument("--n-rois", type=int, default=200)
    p.add_argument("--n-timepoints", type=int, default=150)
    p.add_argument("--method", default="neurolip")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--param", action="append", default=[], help="method parameter NAME=VALUE (repeatable)")
    args = p.parse_args()
    import yaml

    params = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.param)}

    from brainalign.data.cohort import Cohort
    from brainalign.data.simulate import SimulationConfig, simulate_cohort
    from brainalign.models import Task, get_method
    from brainalign.training.trainer import IndexedTensors, fit_module, seed_everything

    with tempfile.TemporaryDirectory() as tmp:
        root = simulate_cohort(f"{tmp}/sim", SimulationConfig(n_scans=args.n_scans, n_rois=args.n_rois,
                                                               n_timepoints=args.n_timepoints, seed=args.seed))
        task = Task.from_cohort(Cohort.load(root), "dx", "sex")
        train = np.arange(len(task))
        method = get_method(args.method, epochs=1, batch_size=args.batch_size, seed=args.seed, **params)
        t0 = time.perf_counter()
        module = method.build_module(task, train)  # includes encoding the phenotype texts once
        prep = time.perf_counter() - t0
        dataset = IndexedTensors(**method.tensors(task, train))
        print(f"{args.method} {params}: {len(task)} scans x {args.n_rois} ROIs, batch {args.batch_size}, "
              f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; text/model set-up {prep:.1f} s")

        seed_everything(args.seed)
        t0 = time.perf_counter()
        fit_module(module, dataset, method.train_config)
        lightning_s = time.perf_counter() - t0
        seed_everything(args.seed)
        plain_module = method.build_module(task, train)
        plain_s = plain_loop(plain_module, dataset, min(args.batch_size, len(dataset)), args.seed)

    n = len(dataset)
    print("\n| training loop | epoch s | scans/s | ratio to plain |\n|---|---:|---:|---:|")
    print(f"| brainalign fit_module (Lightning) | {lightning_s:.2f} | {n / lightning_s:.0f} | "
          f"{lightning_s / plain_s:.2f}x |")
    print(f"| plain PyTorch loop | {plain_s:.2f} | {n / plain_s:.0f} | 1.00x |")


if __name__ == "__main__":
    main()
