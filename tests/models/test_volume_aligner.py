"""Volume aligner (ViT), ridge and MLP baselines on an easy synthetic problem; save/load; bad inputs."""

from __future__ import annotations

import numpy as np
import pytest

from brainalign.errors import BrainAlignError
from brainalign.evaluation.retrieval import retrieval_table
from brainalign.models.retrieval_baselines import MLPConfig, MLPRetrieval, RidgeRetrieval
from brainalign.models.volume_aligner import VolumeAligner, VolumeAlignerConfig

TINY = dict(patch_size=7, depth=1, width=32, heads=2, batch_size=24, queue_size=32, lr=3e-3, min_lr=1e-4,
            warmup_frac=0.05)


def easy_problem(n_stim=48, n_sub=2, seed=0):
    """Voxels are a linear read-out of a stimulus latent plus noise; targets another read-out of it."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((14, 14, 14), dtype=bool)
    mask[1:13, 2:12, 1:14] = True
    z = rng.standard_normal((n_stim, 4))
    w = rng.standard_normal((4, int(mask.sum())))
    img = z @ rng.standard_normal((4, 8))
    txt = np.tanh(z @ rng.standard_normal((4, 6)))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    stim = np.tile(np.arange(n_stim), n_sub)
    X = (z[stim] @ w + 0.5 * rng.standard_normal((len(stim), w.shape[1]))).astype(np.float32)
    ids = np.array([f"s{k:03d}" for k in range(n_stim)])
    return dict(mask=mask, X=X, stim=ids[stim], subj=np.repeat([f"sub-{i}" for i in range(n_sub)], n_stim),
                image=img[stim].astype(np.float32), text=txt[stim].astype(np.float32),
                targets={"image": (img, ids), "text": (txt, ids)})


@pytest.fixture(scope="module")
def problem():
    return easy_problem()


def _split(p):
    test = np.isin(p["stim"], p["targets"]["image"][1][-12:])
    return ~test, test


@pytest.fixture(scope="module")
def fitted(problem):
    train, _ = _split(problem)
    cfg = VolumeAlignerConfig(epochs=12, **TINY)
    return VolumeAligner(cfg).fit(problem["X"][train], problem["mask"], problem["stim"][train],
                                  image=problem["image"][train], text=problem["text"][train])


def _scores(model, p, rows):
    return retrieval_table(model.embed_all(p["X"][rows]), p["targets"], p["stim"][rows], p["subj"][rows])


def test_tiny_fit_beats_chance_on_held_out_stimuli(fitted, problem):
    _, test = _split(problem)
    scores = _scores(fitted, problem, test)
    assert set(scores) == {"brain_to_image", "image_to_brain", "brain_to_text", "text_to_brain"}
    b2i = scores["brain_to_image"]
    assert b2i["chance@1"] == pytest.approx(1 / 12) and b2i["n_candidates"] == 12
    assert b2i["R@1"] >= 3 * b2i["chance@1"]
    assert scores["text_to_brain"]["R@5"] > scores["text_to_brain"]["chance@5"]
    # an untrained model of the same shape is near chance
    untrained = VolumeAligner(VolumeAlignerConfig(epochs=1, text_weight=0.0,
                                                     **{**TINY, "lr": 1e-9, "min_lr": 1e-9}))
    train, _ = _split(problem)
    untrained.fit(problem["X"][train], problem["mask"], problem["stim"][train], image=problem["image"][train])
    assert _scores(untrained, problem, test)["brain_to_image"]["R@1"] < b2i["R@1"]


def test_embed_shapes_and_volume_input(fitted, problem):
    emb = fitted.embed(problem["X"][:5], "image")
    assert emb.shape == (5, 8) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert fitted.embed(problem["X"][:5], "text").shape == (5, 6)  # text gets a linear head (6 != 8)
    vols = np.zeros((5, 14, 14, 14), dtype=np.float32)
    vols[:, problem["mask"]] = problem["X"][:5]
    np.testing.assert_allclose(fitted.embed(vols, "image"), emb, atol=1e-5)
    with pytest.raises(BrainAlignError, match="not trained for target 'audio'"):
        fitted.embed(problem["X"][:2], "audio")


def test_save_load_round_trip(fitted, problem, tmp_path):
    path = fitted.save(tmp_path / "vit.pt")
    again = VolumeAligner.load(path)
    np.testing.assert_allclose(again.embed(problem["X"][:6]), fitted.embed(problem["X"][:6]), atol=1e-6)
    assert again.config == fitted.config and np.array_equal(again.mask, problem["mask"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BrainAlignError, match="cannot read model file"):
        VolumeAligner.load(tmp_path / "junk.pt")
    with pytest.raises(BrainAlignError, match="does not exist"):
        VolumeAligner.load(tmp_path / "missing.pt")


def test_ridge_baseline(problem, tmp_path):
    train, test = _split(problem)
    ridge = RidgeRetrieval().fit(problem["X"][train], problem["stim"][train], image=problem["image"][train],
                                 text=problem["text"][train])
    scores = _scores(ridge, problem, test)
    assert scores["brain_to_image"]["R@1"] >= 3 * scores["brain_to_image"]["chance@1"]
    assert set(ridge.chosen_alphas) == {"image", "text"}
    again = RidgeRetrieval.load(ridge.save(tmp_path / "ridge.npz"))
    np.testing.assert_allclose(again.embed(problem["X"][:4], "text"), ridge.embed(problem["X"][:4], "text"),
                               atol=1e-5)


def _hub_problem(n_voxels, n_informative, noise, seed=0, n_stim=60):
    """Targets share a mean direction (as CLIP embeddings do); voxels read the latent in ``n_informative`` of them."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_stim, 4))
    img = rng.standard_normal(8) + z @ rng.standard_normal((4, 8))
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    stim = np.tile(np.arange(n_stim), 2)
    X = (noise * rng.standard_normal((len(stim), n_voxels))).astype(np.float32)
    X[:, :n_informative] += 0.5 * z[stim] @ rng.standard_normal((4, n_informative))
    ids = np.array([f"s{k:03d}" for k in range(n_stim)])
    return X, ids[stim], np.repeat(["a", "b"], n_stim), (img, ids), img[stim].astype(np.float32), stim >= 40


@pytest.mark.parametrize("n_voxels, n_informative, noise, centred", [
    (20000, 200, 1.0, True),   # weak, sparse signal in many voxels: shrunk predictions crowd round the mean
    (400, 400, 3.0, False),    # dense signal: keeping the mean ranks better
])
def test_ridge_centres_its_predictions_when_cross_validation_says_so(n_voxels, n_informative, noise, centred):
    X, stim, subj, targets, image, test = _hub_problem(n_voxels, n_informative, noise)
    ridge = RidgeRetrieval().fit(X[~test], stim[~test], image=image[~test])
    assert ridge.centred == {"image": centred}
    m = ridge.models["image"]
    kept = m.predict(X[test])
    centred_pred = kept - image[~test].mean(axis=0)
    expected = centred_pred if centred else kept
    np.testing.assert_allclose(ridge.embed(X[test]), expected / np.linalg.norm(expected, axis=1, keepdims=True),
                               atol=1e-5)

    def r1(emb):
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        return retrieval_table({"image": emb.astype(np.float32)}, {"image": targets}, stim[test],
                               subj[test])["brain_to_image"]["R@1"]
    chosen, other = (r1(centred_pred), r1(kept)) if centred else (r1(kept), r1(centred_pred))
    assert chosen >= other
    if centred:  # the hub case: keeping the mean collapses retrieval
        assert chosen >= 2 * other


def test_ridge_files_without_an_offset_load_uncentred(problem, tmp_path):
    train, _ = _split(problem)
    ridge = RidgeRetrieval().fit(problem["X"][train], problem["stim"][train], image=problem["image"][train])
    path = ridge.save(tmp_path / "ridge.npz")
    with np.load(path) as data:
        old = {k: data[k] for k in data.files if not k.endswith("_offset")}
    np.savez(tmp_path / "old.npz", **old)
    again = RidgeRetrieval.load(tmp_path / "old.npz")
    assert again.centred == {"image": False}
    raw = ridge.models["image"].predict(problem["X"][:3])
    np.testing.assert_allclose(again.embed(problem["X"][:3]), raw / np.linalg.norm(raw, axis=1, keepdims=True),
                               atol=1e-5)


def test_mlp_baseline_trains_and_round_trips(problem, tmp_path):
    train, test = _split(problem)
    mlp = MLPRetrieval(MLPConfig(hidden=32, n_blocks=1, epochs=8, batch_size=24, lr=1e-3)).fit(
        problem["X"][train], problem["stim"][train], image=problem["image"][train])
    scores = _scores(mlp, problem, test)
    assert set(scores) == {"brain_to_image", "image_to_brain"}
    assert scores["brain_to_image"]["R@5"] > scores["brain_to_image"]["chance@5"]
    again = MLPRetrieval.load(mlp.save(tmp_path / "mlp.pt"))
    np.testing.assert_allclose(again.embed(problem["X"][:4]), mlp.embed(problem["X"][:4]), atol=1e-6)


def test_config_from_yaml_and_validation(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("depth: 2\nqueue_size: 0\nlr: 0.001\n")
    cfg = VolumeAlignerConfig.from_yaml(f)
    assert (cfg.depth, cfg.queue_size, cfg.lr, cfg.patch_size) == (2, 0, 1e-3, 14)
    tc = cfg.train_config()
    assert tc.warmup_frac == 0.01 and tc.min_lr_frac == pytest.approx(1e-5 / 1e-3)
    with pytest.raises(BrainAlignError, match="unknown volume aligner option"):
        VolumeAlignerConfig.from_dict({"depht": 2})
    with pytest.raises(BrainAlignError, match="not both 0"):
        VolumeAlignerConfig(image_weight=0, text_weight=0)
    with pytest.raises(BrainAlignError, match="batch_size"):
        VolumeAlignerConfig(batch_size=1)


def test_bad_training_inputs(problem):
    p = problem
    model = VolumeAligner(VolumeAlignerConfig(epochs=1, **TINY))
    with pytest.raises(BrainAlignError, match="voxel columns"):
        model.fit(p["X"][:, :10], p["mask"], p["stim"], image=p["image"], text=p["text"])
    with pytest.raises(BrainAlignError, match="no \\['text'\\] embeddings"):
        model.fit(p["X"], p["mask"], p["stim"], image=p["image"])
    bad = p["image"].copy()
    bad[3] = np.nan
    with pytest.raises(BrainAlignError, match="image targets contain NaN/inf for stimulus id"):
        model.fit(p["X"], p["mask"], p["stim"], image=bad, text=p["text"])
    with pytest.raises(BrainAlignError, match="stimulus_ids must have shape"):
        model.fit(p["X"], p["mask"], p["stim"][:3], image=p["image"], text=p["text"])
    X = p["X"].copy()
    X[2, 7] = np.inf
    with pytest.raises(BrainAlignError, match="scan row 2 contains 1 NaN/inf"):
        model.fit(X, p["mask"], p["stim"], image=p["image"], text=p["text"])
    with pytest.raises(BrainAlignError, match="NaN/inf"):
        RidgeRetrieval().fit(X, p["stim"], image=p["image"])
    with pytest.raises(BrainAlignError, match="not fitted"):
        VolumeAligner().embed(p["X"][:2])


def test_per_patch_embedding_option_round_trips_and_old_files_load(problem, tmp_path):
    """``patch_embedding="per_patch"`` builds untied weights and survives save/load; files written before the
    option existed (no field in their config) load with the default shared embedding."""
    import torch

    from brainalign.encoders.volume_vit import PerPatchLinear

    train, _ = _split(problem)
    fit = dict(image=problem["image"][train], text=problem["text"][train])
    untied = VolumeAligner(VolumeAlignerConfig(epochs=1, patch_embedding="per_patch", pool="mean", layer_scale=1e-4,
                                               **TINY)).fit(
        problem["X"][train], problem["mask"], problem["stim"][train], **fit)
    assert isinstance(untied.module.backbone.patch_embed, PerPatchLinear)
    again = VolumeAligner.load(untied.save(tmp_path / "untied.pt"))
    np.testing.assert_allclose(again.embed(problem["X"][:4]), untied.embed(problem["X"][:4]), atol=1e-6)
    shared = VolumeAligner(VolumeAlignerConfig(epochs=1, **TINY)).fit(problem["X"][train], problem["mask"],
                                                                      problem["stim"][train], **fit)
    state = torch.load(shared.save(tmp_path / "vit.pt"), weights_only=True)
    for name in ("patch_embedding", "pool", "mixup_alpha", "mixup_frac", "layer_scale", "queued_brain"):
        del state["config"][name]  # as written before the options existed
    torch.save(state, tmp_path / "old.pt")
    old = VolumeAligner.load(tmp_path / "old.pt")
    assert old.config.patch_embedding == "shared" and old.config.mixup_alpha == 0.0 and old.config.layer_scale == 0
    assert old.config.queued_brain is False  # fields a file lacks take today's defaults
    np.testing.assert_allclose(old.embed(problem["X"][:4]), shared.embed(problem["X"][:4]), atol=1e-6)
    with pytest.raises(BrainAlignError, match="patch_embedding must be"):
        VolumeAlignerConfig(patch_embedding="conv")
    with pytest.raises(BrainAlignError, match="pool must be"):
        VolumeAlignerConfig(pool="max")
    with pytest.raises(BrainAlignError, match="layer_scale must be >= 0"):
        VolumeAlignerConfig(layer_scale=-1e-4)
    with pytest.raises(BrainAlignError, match="queued_brain must be true or false"):
        VolumeAlignerConfig.from_dict({"queued_brain": "maybe"})


def test_mixup_mixes_inputs_and_targets_in_training_only(problem):
    """BiMixCo-style mixup: loss = λ·L(x̃, y) + (1-λ)·L(x̃, y[π]) on x̃ = λx + (1-λ)x[π]; off in eval / after frac."""
    import torch

    from brainalign.models.volume_aligner import BrainTargetModule
    from brainalign.objectives.queue import queued_info_nce
    from brainalign.training.trainer import TrainConfig

    n_vox = int(problem["mask"].sum())

    def module(alpha, frac=1.0):
        torch.manual_seed(0)
        return BrainTargetModule(torch.nn.Linear(n_vox, 8), 8, {"image": 8}, {"image": 1.0}, 0, 100.0,
                                 TrainConfig(epochs=3), mixup_alpha=alpha, mixup_frac=frac)

    batch = {"x": torch.from_numpy(problem["X"][:16]), "image": torch.from_numpy(problem["image"][:16]),
             "code": torch.arange(16), "index": torch.arange(16)}
    plain, mixed, off = module(0.0).train(), module(1.0).train(), module(1.0, frac=0.0).train()
    losses = []
    for m in (plain, mixed, off):
        torch.manual_seed(1)
        losses.append(float(m.compute_loss(batch)[0].detach()))
    torch.manual_seed(1)
    lam = float(torch.distributions.Beta(1.0, 1.0).sample())
    perm = torch.randperm(16)
    out = plain.backbone(lam * batch["x"] + (1 - lam) * batch["x"][perm])
    expected = (lam * queued_info_nce(out, batch["image"], batch["code"])
                + (1 - lam) * queued_info_nce(out, batch["image"][perm], batch["code"][perm]))
    assert losses[1] == pytest.approx(float(expected.detach()), rel=1e-5)
    assert losses[0] == losses[2] and losses[1] != pytest.approx(losses[0])
    mixed.eval(), plain.eval()
    eval_losses = [float(m.compute_loss(batch)[0].detach()) for m in (mixed, plain)]
    assert eval_losses[0] == pytest.approx(eval_losses[1])
    with pytest.raises(BrainAlignError, match="mixup_alpha"):
        VolumeAlignerConfig(mixup_alpha=-1.0)


def test_ridge_folds_keep_each_stimulus_on_one_side():
    from brainalign.models.retrieval_baselines import stimulus_folds

    stim = np.array(["a", "b", "c", "d", "e", "f"] * 2)  # two subjects saw every stimulus
    folds = stimulus_folds(stim, n_folds=3)
    assert len(folds) == 3
    for train, val in folds:
        assert not set(stim[train]) & set(stim[val])
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(12))
    assert stimulus_folds(["a", "a", "a"]) is None  # one stimulus: RidgeCV's leave-one-out


def test_ridge_on_row_space_scores_equals_ridge_on_voxels():
    from sklearn.linear_model import Ridge

    from brainalign.models.retrieval_baselines import row_space_basis

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 500)), rng.standard_normal((30, 3))
    S, U, root = row_space_basis(X)
    assert S.shape == U.shape == (30, 30) and root.shape == (30,)
    train, test = np.arange(20), np.arange(20, 30)
    for alpha in (0.1, 10.0, 1e4):  # a fold's fit and held-out predictions are the same in both coordinates
        full = Ridge(alpha=alpha).fit(X[train], y[train]).predict(X[test])
        reduced = Ridge(alpha=alpha).fit(S[train], y[train]).predict(S[test])
        np.testing.assert_allclose(reduced, full, rtol=1e-6, atol=1e-8)
    # RidgeRetrieval's voxel coefficients, mapped back from the row space, are scikit-learn's on the voxels
    stim = np.repeat(np.arange(15), 2)
    fitted = RidgeRetrieval(alphas=(10.0,)).fit(X.astype(np.float32), stim, image=y)
    direct = Ridge(alpha=10.0).fit(X.astype(np.float32), y)
    np.testing.assert_allclose(fitted.models["image"].coef_, direct.coef_, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(fitted.models["image"].intercept_, direct.intercept_, rtol=1e-3, atol=1e-5)


def test_queued_brain_option_reaches_the_loss(problem, monkeypatch):
    from brainalign.models import volume_aligner

    seen = []

    def spy(*args, **kwargs):
        seen.append(args[5] if len(args) > 5 else kwargs.get("queued_brain", True))
        return real(*args, **kwargs)

    real = volume_aligner.queued_info_nce
    monkeypatch.setattr(volume_aligner, "queued_info_nce", spy)
    train, _ = _split(problem)
    model = VolumeAligner(VolumeAlignerConfig(epochs=1, queued_brain=False, text_weight=0.0, **TINY)).fit(
        problem["X"][train], problem["mask"], problem["stim"][train], image=problem["image"][train])
    assert model.module.queued_brain is False and seen and not any(seen)


def test_centring_subtracts_the_training_mean_and_round_trips(fitted, problem, tmp_path):
    import torch

    train, _ = _split(problem)
    module = fitted.module
    assert fitted.config.centre  # the default
    centre = module.centre_of("image").clone()
    module.centre_of("image").zero_()
    raw_train = fitted.embed(problem["X"][train])
    raw = fitted.embed(problem["X"][:5])
    module.centre_of("image").copy_(centre)
    np.testing.assert_allclose(centre.numpy(), raw_train.mean(axis=0), atol=1e-5)
    expected = raw - centre.numpy()
    np.testing.assert_allclose(fitted.embed(problem["X"][:5]), expected / np.linalg.norm(expected, axis=1,
                                                                                        keepdims=True), atol=1e-5)
    again = VolumeAligner.load(fitted.save(tmp_path / "vit.pt"))
    torch.testing.assert_close(again.module.centre_of("image"), centre)
    # a file written before centring existed: no centre buffers, loads uncentred and says so
    state = torch.load(tmp_path / "vit.pt", weights_only=True)
    state["state_dict"] = {k: v for k, v in state["state_dict"].items() if not k.startswith("centre_")}
    del state["config"]["centre"]
    torch.save(state, tmp_path / "old.pt")
    old = VolumeAligner.load(tmp_path / "old.pt")
    assert old.config.centre is False and not old.module.centre_of("image").any()
    np.testing.assert_allclose(old.embed(problem["X"][:5]), raw, atol=1e-5)
    state["state_dict"]["backbone.unknown"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(BrainAlignError, match="do not match the model"):
        VolumeAligner.load(tmp_path / "bad.pt")
    with pytest.raises(BrainAlignError, match="centre must be true or false"):
        VolumeAlignerConfig.from_dict({"centre": "yes"})


def test_uncentred_models_keep_raw_embeddings(problem):
    train, _ = _split(problem)
    plain = VolumeAligner(VolumeAlignerConfig(epochs=1, centre=False, text_weight=0.0, **TINY)).fit(
        problem["X"][train], problem["mask"], problem["stim"][train], image=problem["image"][train])
    assert not plain.module.centre_of("image").any()
    mlp = MLPRetrieval(MLPConfig(hidden=16, n_blocks=1, epochs=1, batch_size=24)).fit(
        problem["X"][train], problem["stim"][train], image=problem["image"][train])
    assert mlp.module.centre_of("image").any()  # the MLP baseline centres by default too
    with pytest.raises(BrainAlignError, match="centre must be true or false"):
        MLPConfig(centre=1)
