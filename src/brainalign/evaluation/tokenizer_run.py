"""Tokenizer experiments (fMRI-LM stage 1): fit the tokenizer and its ablations on a cohort, score held-out scans,
encode cohorts.  Used by ``brainalign tokenize``.

``fit_experiment`` splits the cohort by person (held-out fifth), captions every scan (reference statistics from
the training scans), trains the full tokenizer and the ``no_adversary`` / ``no_contrast`` ablations, and writes::

    RUN/config.yaml      the fully resolved TokenizerConfig
    RUN/results.json     held-out metrics per variant, the split, timings
    RUN/model.pt         the full model (FMRITokenizer.load; torch.load(weights_only=True))

``encode_cohort`` writes ``TOKENS/tokens.npz`` with ``codes`` (S, M) int64 and ``scan_ids`` (S,), in cohort
order; token ``w·N + n`` is time patch w of ROI n (``TOKENS/tokens.json`` records N, W, P and the model).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from brainalign.errors import BrainAlignError

MODEL_FILE = "model.pt"
N_DOMAIN_TOKENS = 4096  # fMRI and text tokens each, for the held-out domain accuracy


def chance_recall(targets: np.ndarray, k: int) -> float:
    """Expected recall@k of a random ranking: mean over queries of ``1 − C(n−c, k) / C(n, k)`` (c correct of n)."""
    from scipy.special import comb

    n = targets.shape[1]
    k = min(k, n)
    c = targets.sum(axis=1)
    return float(np.mean(1.0 - comb(n - c, k) / comb(n, k)))


def retrieval_metrics(scan_emb: np.ndarray, caption_emb: np.ndarray, captions: list[str]) -> dict[str, float]:
    """Caption↔scan recall@1/5/10 both ways on cosine similarity; identical captions all count as correct."""
    from brainalign.evaluation.metrics import recall_at_k

    a = scan_emb / np.linalg.norm(scan_emb, axis=1, keepdims=True).clip(1e-12)
    b = caption_emb / np.linalg.norm(caption_emb, axis=1, keepdims=True).clip(1e-12)
    sim = a @ b.T
    caps = np.asarray(captions, dtype=object)
    targets = caps[:, None] == caps[None, :]
    out = {f"scan_to_caption_{k}": v for k, v in recall_at_k(sim, targets).items()}
    out.update({f"caption_to_scan_{k}": v for k, v in recall_at_k(sim.T, targets.T).items()})
    out.update({f"chance_R@{k}": chance_recall(targets, k) for k in (1, 5, 10)})
    return out


def evaluate_tokenizer(tok, x_test: np.ndarray, caption_emb: np.ndarray | None, captions: list[str] | None,
                       text_test: np.ndarray | None, rng: np.random.Generator,
                       age: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                       probe_train: tuple[dict[str, np.ndarray], np.ndarray] | None = None) -> dict[str, float]:
    """Held-out metrics of a fitted :class:`~brainalign.models.tokenizer.FMRITokenizer`.

    Parameters
    ----------
    tok : FMRITokenizer
    x_test : array (S, T, N)
        Prepared held-out scans.
    caption_emb : array (S, H), optional
        Their caption embeddings (for retrieval).
    captions : list of str, optional
    text_test : array (n, C), optional
        Held-out text-token input embeddings of the LLM in the code space (for the domain accuracy).
    rng : numpy Generator
        Draws the fMRI tokens compared with text tokens.
    age : (codes_train (S_tr, M), age_train (S_tr,), age_test (S,)), optional
        For the age probe: ridge regression on code-usage histograms, R² on the held-out scans.
    probe_train : (train_embedding, text_train (n', C)), optional
        ``tok.embed`` of the training scans and the training text tokens, for a fresh domain probe (below).

    Returns
    -------
    dict
        ``recon_r2`` (sklearn ``r2_score`` over all S·T·N values flattened, i.e. one pooled R²),
        ``domain_acc`` (balanced accuracy of the trained domain classifier on the held-out tokens it is trained
        on — the pre-quantisation latents with ``domain_input="latent"``, the codes with ``"quantized"`` — against
        held-out text tokens), ``domain_acc_tokens`` / ``domain_acc_latents`` (the same classifier on the other
        representation, a diagnostic), ``domain_probe_acc`` (a fresh classifier of the adversary's shape,
        Linear → ReLU → Linear, trained after the fact on training-scan tokens against training text tokens and
        scored the same way: whether the domains are separable at all, not only whether the adversary lost
        track), ``code_tv_to_text`` (total variation distance between the held-out scans' code histogram and
        that of the held-out text tokens' nearest codes: 0.5 + 0.5·TV is the best balanced accuracy of any
        classifier that sees only a token's code), ``usage``, ``perplexity``, ``perplexity_frac``, retrieval
        recalls with chance levels, ``age_r2``, ``encode_scans_per_s``.
    """
    import torch
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score

    from brainalign.objectives.domain import code_frequencies

    start = time.perf_counter()
    tok.encode(x_test)
    encode_rate = len(x_test) / (time.perf_counter() - start)
    e = tok.embed(x_test)
    out: dict[str, float] = {"recon_r2": float(r2_score(x_test.reshape(-1), e["reconstruction"].reshape(-1))),
                             "encode_scans_per_s": encode_rate}
    out.update(tok.usage(e["codes"]))
    if text_test is not None and len(text_test):
        n_tokens = e["tokens"].shape[0] * e["tokens"].shape[1]
        n = min(N_DOMAIN_TOKENS, n_tokens)
        pick = rng.choice(n_tokens, n, replace=False)
        text = text_test[rng.integers(0, len(text_test), n)]
        seen = "latents" if tok.config.domain_input == "latent" else "tokens"
        other = "tokens" if seen == "latents" else "latents"
        out["domain_acc"] = tok.domain_accuracy(e[seen].reshape(n_tokens, -1)[pick], text)
        out[f"domain_acc_{other}"] = tok.domain_accuracy(e[other].reshape(n_tokens, -1)[pick], text)
        codebook = tok.codebook
        fmri_share = torch.bincount(torch.from_numpy(e["codes"].reshape(-1)).long(), minlength=len(codebook))
        text_share = code_frequencies(torch.from_numpy(np.asarray(text_test)), codebook)
        out["code_tv_to_text"] = float(0.5 * (fmri_share / fmri_share.sum() - text_share).abs().sum())
        if probe_train is not None:
            out["domain_probe_acc"] = _domain_probe(tok, seen, probe_train, e[seen].reshape(n_tokens, -1)[pick],
                                                    text, rng)
    if caption_emb is not None and captions is not None:  # also without contrast: then it is chance level
        out.update(retrieval_metrics(e["scan_embedding"], caption_emb, captions))
    if age is not None:
        codes_train, age_train, age_test = age
        probe = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(tok.code_histograms(codes_train), age_train)
        out["age_r2"] = float(r2_score(age_test, probe.predict(tok.code_histograms(e["codes"]))))
    return out


def _domain_probe(tok, seen: str, probe_train: tuple[dict[str, np.ndarray], np.ndarray], fmri_test: np.ndarray,
                  text_test: np.ndarray, rng: np.random.Generator) -> float:
    """Balanced held-out accuracy of a fresh fMRI-vs-text classifier (scikit-learn ``MLPClassifier``, one hidden
    layer as wide as the adversary's) trained on tokens of the training scans and the training text pool."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.neural_network import MLPClassifier

    train_embedding, text_train = probe_train
    tokens = train_embedding[seen]
    tokens = tokens.reshape(-1, tokens.shape[-1])
    n = min(N_DOMAIN_TOKENS, len(tokens), len(text_train))
    fmri = tokens[rng.choice(len(tokens), n, replace=False)]
    text = np.asarray(text_train)[rng.choice(len(text_train), n, replace=False)]
    text = text / np.linalg.norm(text, axis=1, keepdims=True)  # the adversary sees unit-norm text tokens
    text_test = text_test / np.linalg.norm(text_test, axis=1, keepdims=True)
    clf = MLPClassifier((tok.config.domain_hidden,), max_iter=300, early_stopping=True,
                        random_state=int(rng.integers(2**31)))
    clf.fit(np.concatenate([fmri, text]), np.r_[np.ones(n), np.zeros(n)])
    x_eval = np.concatenate([fmri_test, text_test])
    y_eval = np.r_[np.ones(len(fmri_test)), np.zeros(len(text_test))]
    return float(balanced_accuracy_score(y_eval, clf.predict(x_eval)))


def holdout_split(cohort, config) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) scan indices: a held-out ``config.test_size`` of persons, stratified on ``dx`` when present,
    drawn with ``config.seed`` (the split of :func:`fit_experiment`)."""
    from brainalign.evaluation.protocol import make_splits

    y = cohort.phenotypes["dx"].astype(str).to_numpy() if "dx" in cohort.phenotypes else np.zeros(len(cohort), int)
    splits = make_splits(y, cohort.subject_ids, test_size=config.test_size, n_folds=2, seed=config.seed)
    test = splits.test
    train = np.setdiff1d(np.arange(len(cohort)), test)
    return train, test


def _text_pools(captions: list[str], train: np.ndarray, test: np.ndarray, llm: str | None, dim: int,
                rng: np.random.Generator, code_space: str = "vocabulary", size: int = 8192):
    """LLM input embeddings of real text tokens in the code space: (size, dim) from training captions + the first
    half of the fixed English passage, and (size, dim) from held-out captions + its second half.

    ``code_space="vocabulary"``: the top-``dim`` principal axes of the whole embedding table.  ``"text"``: the
    top-``dim`` principal axes of the training pool's token occurrences, centred on them and whitened, so that
    the unit-norm text tokens spread over the sphere instead of filling a narrow cone
    (``TokenizerConfig.code_space``)."""
    import torch

    from brainalign.encoders.language_model import ENGLISH_TEXT, embeddings_to_code_space, llm_input_embeddings, \
        sample_text_tokens, text_token_ids

    full = llm_input_embeddings(llm)
    half = len(ENGLISH_TEXT) // 2
    ids_train = text_token_ids([captions[i] for i in train] + [ENGLISH_TEXT[:half]], llm)
    ids_test = text_token_ids([captions[i] for i in test] + [ENGLISH_TEXT[half:]], llm)
    if code_space == "vocabulary":
        mean, components = embeddings_to_code_space(full, dim)
    else:
        mean, components = embeddings_to_code_space(full[torch.from_numpy(np.asarray(ids_train))], dim, whiten=True)
    pools = []
    for ids in (ids_train, ids_test):
        rows = full[torch.from_numpy(sample_text_tokens(ids, size, rng))]
        pools.append((rows - mean) @ components)
    return pools[0].clone(), pools[1].numpy().copy()


def caption_embeddings(captions: list[str], text_model: str | None) -> np.ndarray:
    """(S, H) pooled embeddings of the frozen text encoder (cached on disk under ``data_home()/text-cache``)."""
    from brainalign.data.fetchers import data_home
    from brainalign.encoders.text import TextEncoder

    encoder = TextEncoder(text_model, max_length=256, cache_dir=data_home() / "text-cache")
    return encoder.encode(list(captions)).pooled.numpy().astype(np.float32)


def read_captions(path: Path, scan_ids: np.ndarray) -> list[str]:
    """Captions from a CSV with columns ``scan_id`` and ``caption``, in the order of ``scan_ids``."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype={"scan_id": str, "caption": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise BrainAlignError(f"cannot read captions file {path}: {err}") from None
    missing_cols = [c for c in ("scan_id", "caption") if c not in table]
    if missing_cols:
        raise BrainAlignError(f"captions file {path} lacks column(s) {missing_cols} (columns: {list(table.columns)})")
    table = table.dropna(subset=["caption"]).drop_duplicates("scan_id", keep="last").set_index("scan_id")
    missing = [s for s in scan_ids if s not in table.index]
    if missing:
        raise BrainAlignError(f"captions file {path} has no caption for {len(missing)} scan(s), e.g. {missing[:5]}")
    return table.loc[list(scan_ids), "caption"].astype(str).tolist()


def fit_experiment(cohort_dir: Path, out: Path, config, ablations: bool = True, say=print,
                   captions_file: Path | None = None) -> dict[str, Any]:
    """Train the tokenizer (and its ablations) on a cohort folder and write the run folder (see module doc).

    Captions come from :func:`brainalign.data.captions.caption_cohort` (reference statistics fitted on the
    training scans), or from ``captions_file`` (CSV with ``scan_id``, ``caption``) when given.
    """
    import yaml

    from brainalign.data.captions import caption_cohort
    from brainalign.data.cohort import Cohort
    from brainalign.data.preprocess import prepare_cohort_timeseries
    from brainalign.models.tokenizer import ABLATIONS, FMRITokenizer

    t0 = time.perf_counter()
    cohort = Cohort.load(cohort_dir)
    x = prepare_cohort_timeseries(cohort, target_tr=config.target_tr, n_timepoints=config.n_timepoints)
    train, test = holdout_split(cohort, config)
    say(f"{len(cohort)} scans prepared to {x.shape[1]} time points x {x.shape[2]} ROIs; "
        f"{len(train)} training / {len(test)} held-out scans (by person)")
    if captions_file is not None:
        captions = read_captions(captions_file, cohort.scan_ids)
    else:
        captions = caption_cohort(cohort, train_indices=train)["caption"].astype(str).tolist()
    emb = caption_embeddings(captions, config.text_model)
    rng = np.random.default_rng(config.seed)
    pool_train, pool_test = _text_pools(captions, train, test, config.llm, config.dim, rng, config.code_space)
    age = None
    if "age" in cohort.phenotypes:
        values = cohort.phenotypes["age"].to_numpy(dtype=float)
        if np.isfinite(values).all():
            age = values
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    results: dict[str, Any] = {"cohort": str(cohort_dir), "captions": str(captions_file or "descriptors"),
                               "n_scans": len(cohort), "n_train": int(len(train)),
                               "n_test": int(len(test)), "prepare_seconds": time.perf_counter() - t0,
                               "split": {"train": train.tolist(), "test": test.tolist()}, "methods": {}}
    variants = ABLATIONS if ablations else {"full": {}}
    for name, changes in variants.items():
        cfg = config.replace(**changes)
        say(f"training {name} ({cfg.epochs} epochs)")
        start = time.perf_counter()
        tok = FMRITokenizer(cfg).fit(x[train], emb[train], [captions[i] for i in train], text_pool=pool_train,
                                     scan_ids=cohort.scan_ids[train])
        fit_seconds = time.perf_counter() - start
        train_embedding = tok.embed(x[train])  # codes for the age probe, tokens for the domain probe
        age_args = None if age is None else (train_embedding["codes"], age[train], age[test])
        metrics = evaluate_tokenizer(tok, x[test], emb[test], [captions[i] for i in test], pool_test,
                                     np.random.default_rng(config.seed), age_args,
                                     probe_train=(train_embedding, pool_train.numpy()))
        metrics["fit_seconds"] = fit_seconds
        results["methods"][name] = {"config_changes": changes, "codebook_size": tok.config.codebook_size,
                                    "metrics": metrics}
        say(f"  {name}: " + ", ".join(f"{k}={v:.3f}" for k, v in metrics.items()
                                      if k in ("recon_r2", "domain_acc", "domain_probe_acc", "code_tv_to_text",
                                               "perplexity_frac",
                                               "caption_to_scan_R@5", "age_r2")))
        if name == "full":
            tok.save(out / MODEL_FILE)
    results["total_seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def encode_cohort(model: Path, cohort_dir: Path, out: Path) -> Path:
    """Encode every scan of a cohort with a trained tokenizer; write ``tokens.npz`` + ``tokens.json``."""
    from brainalign.data.cohort import Cohort
    from brainalign.data.preprocess import prepare_cohort_timeseries
    from brainalign.models.tokenizer import FMRITokenizer

    path = model / MODEL_FILE if model.is_dir() else model
    tok = FMRITokenizer.load(path)
    cohort = Cohort.load(cohort_dir)
    if cohort.n_rois != tok.n_rois_:
        raise BrainAlignError(f"cohort {cohort_dir} has {cohort.n_rois} ROIs but the tokenizer {path} was trained "
                              f"on {tok.n_rois_}; use a cohort with the same atlas")
    cfg = tok.config
    x = prepare_cohort_timeseries(cohort, target_tr=cfg.target_tr, n_timepoints=cfg.n_timepoints)
    codes = tok.encode(x, scan_ids=cohort.scan_ids)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "tokens.npz", codes=codes, scan_ids=cohort.scan_ids.astype(str))
    enc = tok.module_.encoder
    (out / "tokens.json").write_text(json.dumps({
        "model": str(path), "cohort": str(cohort_dir), "n_scans": len(codes), "n_tokens": int(codes.shape[1]),
        "n_rois": enc.n_rois, "n_patches": enc.n_windows, "patch_len": enc.patch_len,
        "codebook_size": cfg.codebook_size, "order": "token w*n_rois + n = time patch w of ROI n"}, indent=2))
    return out / "tokens.npz"
