"""Encoding throughput of the fMRI tokenizer against its own encoder without the quantiser, in the same process.

Peers, each timed as best of ``--repeats`` over the same ``(n_scans, T, N)`` float32 array in batches of
``--batch-size`` (torch.no_grad, eval mode, ``torch.set_num_threads(--threads)``):

* ``FMRITokenizer.encode``: input checks + temporal-patch transformer + cosine VQ → int64 code ids;
* ``plain PyTorch loop, encoder only``: ``module.encoder(batch)`` in a bare loop (no checks, no VQ) — the floor
  the tokenizer can reach;
* ``plain PyTorch loop, encoder + nearest code``: the same loop plus ``argmax(normalize(z) @ codebookᵀ)`` written
  by hand, which must give the same ids as ``encode`` (exit status 1 otherwise).

The model is the one saved by ``brainalign tokenize fit`` (``--model RUN``) or, without it, an untrained one with
the default :class:`~brainalign.models.tokenizer.TokenizerConfig` (speed does not depend on the weights).

Usage::

    .venv/bin/python benchmarks/bench_tokenizer.py [--model RUN] [--n-scans 400 --n-rois 100]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


def best_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="run folder of `tokenize fit` or its model.pt")
    parser.add_argument("--n-scans", type=int, default=400)
    parser.add_argument("--n-rois", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from pathlib import Path

    from brainalign.models.tokenizer import FMRITokenizer, TokenizerConfig, TokenizerModule

    if args.model:
        path = Path(args.model)
        tok = FMRITokenizer.load(path / "model.pt" if path.is_dir() else path)
    else:
        tok = FMRITokenizer(TokenizerConfig())
        torch.manual_seed(0)
        tok.module_ = TokenizerModule(tok.config, args.n_rois, text_dim=384).eval()
        tok.n_rois_ = args.n_rois
    module, cfg = tok.module_, tok.config
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.n_scans, cfg.n_timepoints, tok.n_rois_)).astype(np.float32)
    codebook = module.quantizer.codebook
    bs = args.batch_size

    @torch.no_grad()
    def plain(with_codes: bool):
        out = []
        for i in range(0, len(x), bs):
            z = module.encoder(torch.from_numpy(x[i:i + bs]))
            out.append((F.normalize(z, dim=-1) @ codebook.T).argmax(-1) if with_codes else z)
        return torch.cat(out)

    t_tok, codes = best_time(lambda: tok.encode(x), args.repeats)
    t_enc, _ = best_time(lambda: plain(False), args.repeats)
    t_hand, hand = best_time(lambda: plain(True), args.repeats)
    agree = float((hand.numpy() == codes).mean())
    print(f"fMRI tokenizer encoding: {args.n_scans} scans x {cfg.n_timepoints} time points x {tok.n_rois_} ROIs, "
          f"{codes.shape[1]} tokens/scan, K={cfg.codebook_size}, batch {bs}, {args.threads} threads")
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {platform.machine()}")
    rows = [("FMRITokenizer.encode", t_tok), ("plain PyTorch loop, encoder only", t_enc),
            ("plain PyTorch loop, encoder + nearest code", t_hand)]
    for name, t in rows:
        print(f"  {name:<45s} {t:8.3f} s  {args.n_scans / t:9.1f} scans/s  ratio to encode {t / t_tok:5.2f}")
    print(f"code ids equal to the hand-written nearest code: {agree * 100:.2f} %")
    return 0 if agree > 0.999 else 1


if __name__ == "__main__":
    sys.exit(main())
