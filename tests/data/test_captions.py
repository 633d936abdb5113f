"""fMRI-LM stage-0 descriptors and captions on simulated cohorts with planted truth."""

from __future__ import annotations

import json
import shutil
import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from brainalign.cli import app
from brainalign.data.captions import (
    DescriptorReference,
    caption_cohort,
    describe_cohort,
    describe_z,
    event_summary,
)
from brainalign.data.cohort import Cohort, CohortMeta, write_cohort
from brainalign.data.descriptors import (
    DescriptorModel,
    compute_descriptors,
    diffusion_gradients,
    falff,
    fc_descriptors,
    global_efficiency,
    read_network_file,
    threshold_proportional,
    weighted_clustering,
)
from brainalign.data.simulate import SimulationConfig, load_truth, simulate_cohort
from brainalign.errors import BrainAlignError

TRAIN = np.arange(30)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    cfg = SimulationConfig(n_scans=60, n_rois=28, n_timepoints=100, n_dx_rois=4, dx_effect=-0.5, seed=1)
    return simulate_cohort(tmp_path_factory.mktemp("sim") / "sim", cfg)


@pytest.fixture(scope="module")
def described(sim_dir):
    return describe_cohort(Cohort.load(sim_dir), TRAIN)


# -- building blocks --------------------------------------------------------------------------------

def _random_fc(n=3, T=80, R=30, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, T, R)) + 0.6 * rng.standard_normal((n, T, 1))
    return np.stack([np.corrcoef(a.T) for a in x])


def test_graph_metrics_match_networkx():
    w = threshold_proportional(_random_fc(), 0.15)
    assert np.allclose(w, np.swapaxes(w, 1, 2)) and (w >= 0).all()
    np.testing.assert_allclose((w > 0).sum((1, 2)) / (30 * 29), 0.15, atol=0.01)
    eff, clus = global_efficiency(w), weighted_clustering(w)
    for k in range(len(w)):
        g = nx.from_numpy_array(w[k])
        assert eff[k] == pytest.approx(nx.global_efficiency(g), abs=1e-12)
        assert clus[k] == pytest.approx(nx.average_clustering(g, weight="weight"), abs=1e-12)


def test_fc_descriptors_match_loops():
    fc = _random_fc(n=2, R=6)
    labels = ["a", "a", "b", "b", "b", "c"]
    out = fc_descriptors(fc, labels)
    lab = np.array(labels)
    pairs = [(i, j) for i in range(6) for j in range(6) if i != j]
    within = [fc[:, i, j] for i, j in pairs if lab[i] == lab[j]]
    between = [fc[:, i, j] for i, j in pairs if lab[i] != lab[j]]
    np.testing.assert_allclose(out["fc_within"], np.mean(within, axis=0))
    np.testing.assert_allclose(out["fc_between"], np.mean(between, axis=0))
    np.testing.assert_allclose(out["fc_within:b"], fc[:, [2, 2, 3], [3, 4, 4]].mean(1))
    np.testing.assert_allclose(out["fc_between:c"], fc[:, 5, :5].mean(1))
    assert "fc_within:c" not in out  # a single-ROI network has no within-network pairs


def test_principal_gradient_separates_two_blocks():
    rng = np.random.default_rng(0)
    f = rng.standard_normal((300, 2))
    x = np.concatenate([f[:, :1] + 0.7 * rng.standard_normal((300, 12)),
                        f[:, 1:] + 0.7 * rng.standard_normal((300, 12))], axis=1)
    with pytest.raises(BrainAlignError, match="disconnected pieces"):  # top 10 of each row: its own block
        diffusion_gradients(np.corrcoef(x.T), 2)
    grads, lam = diffusion_gradients(np.corrcoef(x.T), 2, sparsity=0.0)
    g1 = grads[:, 0]
    assert lam[0] > lam[1] > 0
    assert (np.sign(g1[:12]) == np.sign(g1[0])).all() and (np.sign(g1[12:]) == -np.sign(g1[0])).all()


def test_gradients_agree_with_brainspace():
    kernels = pytest.importorskip("brainspace.gradient.kernels")
    embedding = pytest.importorskip("brainspace.gradient.embedding")
    from brainalign.data.descriptors import _cosine_affinity

    rng = np.random.default_rng(0)
    R = 94
    x = rng.standard_normal((400, 4)) @ (rng.standard_normal((R, 4)) * [1.0, 0.8, 0.6, 0.4]).T
    fc = np.corrcoef((x + rng.standard_normal((400, R))).T)
    ref_affinity = kernels.compute_affinity(fc, kernel="cosine", sparsity=0.8)
    np.testing.assert_allclose(_cosine_affinity(fc[None], 0.8)[0], ref_affinity, atol=1e-12)
    ref, ref_lam = embedding.diffusion_mapping(ref_affinity, n_components=3, alpha=0.5, diffusion_time=0,
                                               random_state=0)
    grads, lam = diffusion_gradients(fc, 3, sparsity=0.8)
    for k in range(3):
        assert abs(np.corrcoef(ref[:, k], grads[:, k])[0, 1]) > 0.999
    # BrainSpace runs a symmetric eigensolver on the non-symmetric Markov matrix; ours uses its symmetric
    # conjugate, exact, so the eigenvalues agree only to a few per cent
    np.testing.assert_allclose(lam, ref_lam, rtol=0.05)


def test_falff_of_slow_and_fast_sines():
    t = np.arange(200) * 2.0
    x = np.stack([np.sin(2 * np.pi * 0.04 * t), np.sin(2 * np.pi * 0.2 * t)], axis=1)
    out = falff(x, 2.0)
    assert out[0] > 0.95 and out[1] < 0.05
    with pytest.raises(BrainAlignError, match="positive TR"):
        falff(x, None)


def test_describe_z_wording():
    assert describe_z(2.1) == "markedly elevated (z=+2.1)"
    assert describe_z(1.5) == "elevated (z=+1.5)"
    assert describe_z(1.04) == "typical (z=+1.0)"
    assert describe_z(-0.01) == "typical (z=+0.0)"
    assert describe_z(-1.4) == "reduced (z=-1.4)"
    assert describe_z(-2.3) == "markedly reduced (z=-2.3)"


# -- the simulated cohort ---------------------------------------------------------------------------

def test_planted_hypoconnectivity_lowers_within_network_z(described, sim_dir):
    cohort = Cohort.load(sim_dir)
    truth = load_truth(sim_dir, arrays=False)["dx"]
    net = truth["network"]
    patients = (cohort.phenotypes["dx"] == "autism").to_numpy()
    table = described.table
    z_cols = [c for c in table if c.startswith("fc_within:") and c.endswith("_z")]
    gap = {c: table.loc[patients, c].mean() - table.loc[~patients, c].mean() for c in z_cols}
    assert gap[f"fc_within:{net}_z"] < -1.0
    assert min(gap, key=gap.get) == f"fc_within:{net}_z"
    assert (table.loc[patients, "caption"].str.contains(f"reduced in {net}")).mean() > \
        (table.loc[~patients, "caption"].str.contains(f"reduced in {net}")).mean()


def test_table_layout_and_domains(described):
    table = described.table
    assert list(table.columns[:2]) == ["scan_id", "caption"]
    names = list(described.reference.mean_.index)
    assert list(table.columns[2:]) == [c for n in names for c in (n, f"{n}_z")]
    for col in ("fc_within", "fc_between", "gradient1_range", "gradient1_variance", "modularity",
                "global_efficiency", "clustering", "falff", "fc_within:default", "gradient1:visual", "falff:limbic"):
        assert col in names
    assert described.model.domains == ("connectivity", "gradients", "graph", "ica")
    assert np.isfinite(table[names].to_numpy()).all()
    train_z = table.iloc[TRAIN][[f"{n}_z" for n in names]]
    np.testing.assert_allclose(train_z.mean(), 0, atol=1e-9)
    np.testing.assert_allclose(train_z.std(ddof=1), 1, atol=1e-9)
    first = table["caption"].iloc[0]
    for head in ("Functional connectivity:", "Functional gradients:", "Graph organisation:", "ICA fALFF"):
        assert head in first


def test_captions_are_deterministic(described, sim_dir):
    again = describe_cohort(Cohort.load(sim_dir), TRAIN)
    pd.testing.assert_frame_equal(described.table, again.table)
    assert json.dumps(described.reference_dict()) == json.dumps(again.reference_dict())


def test_test_scans_do_not_change_training_values(described, sim_dir, tmp_path):
    other = shutil.copytree(sim_dir, tmp_path / "other")
    rng = np.random.default_rng(9)
    for sid in Cohort.load(other).scan_ids[30:]:  # replace every test scan with unrelated data
        ts = rng.standard_normal((100, 28)).astype(np.float32)
        np.save(other / "timeseries" / f"{sid}.npy", ts)
        np.save(other / "connectivity" / f"{sid}.npy", np.corrcoef(ts.T).astype(np.float32))
    changed = describe_cohort(Cohort.load(other), TRAIN).table
    pd.testing.assert_frame_equal(changed.iloc[TRAIN], described.table.iloc[TRAIN])
    assert not changed.iloc[30:].equals(described.table.iloc[30:])


def test_compute_descriptors_with_fitted_model(described, sim_dir):
    cohort = Cohort.load(sim_dir)
    model = DescriptorModel.from_dict(json.loads(json.dumps(described.model.to_dict())))
    part = compute_descriptors(cohort, [40, 5], model=model)
    assert list(part.index) == [cohort.scan_ids[40], cohort.scan_ids[5]]
    names = list(part.columns)
    np.testing.assert_allclose(part.to_numpy(), described.table.iloc[[40, 5]][names].to_numpy(), rtol=1e-9)


def test_reference_roundtrip_and_errors(described):
    ref = DescriptorReference.from_dict(json.loads(json.dumps(described.reference.to_dict())))
    names = list(ref.mean_.index)
    desc = described.table.set_index("scan_id")[names]
    pd.testing.assert_frame_equal(ref.zscore(desc), described.reference.zscore(desc))
    with pytest.raises(BrainAlignError, match=r"descriptor column\(s\) \['modularity'\] .* missing"):
        ref.zscore(desc.drop(columns="modularity"))
    bad = desc.copy()
    bad.iloc[3, 1] = np.nan
    with pytest.raises(BrainAlignError, match=rf"descriptor '{names[1]}' is not finite for scan '{desc.index[3]}'"):
        DescriptorReference.fit(bad)
    with pytest.raises(BrainAlignError, match="'mean', 'std' and 'n_scans'"):
        DescriptorReference.from_dict({"mean": {}})


def test_constant_descriptor_gets_zero_z():
    desc = pd.DataFrame({"a": [1.0, 1.0, 1.0], "b": [1.0, 2.0, 3.0]}, index=["x", "y", "z"])
    z = DescriptorReference.fit(desc).zscore(desc)
    assert (z["a"] == 0).all() and z["b"].tolist() == [-1.0, 0.0, 1.0]


# -- networks, events, connectivity-only cohorts ----------------------------------------------------

def _small_cohort(tmp_path, networks=True, timeseries=True, tr=2.0, n=8, R=12, seed=3):
    rng = np.random.default_rng(seed)
    ids = [f"s{i}" for i in range(n)]
    labels = ["a"] * 4 + ["b"] * 4 + ["c"] * (R - 8)
    meta = CohortMeta(name="small", n_rois=R, tr=tr, roi_networks=labels if networks else None)
    factors = rng.standard_normal((n, 90, 3))
    series = [f[:, [0] * 4 + [1] * 4 + [2] * (R - 8)] + rng.standard_normal((90, R)) for f in factors]
    phen = pd.DataFrame({"scan_id": ids, "subject_id": ids})
    if timeseries:
        root = write_cohort(tmp_path / "small", meta, phen, timeseries=series)
    else:
        root = write_cohort(tmp_path / "small", meta, phen, connectivity=[np.corrcoef(s.T) for s in series])
    return root, labels


def test_no_network_labels_is_a_clear_error(tmp_path):
    root, labels = _small_cohort(tmp_path, networks=False)
    cohort = Cohort.load(root)
    with pytest.raises(BrainAlignError, match=r"no network labels.*--networks FILE"):
        caption_cohort(cohort)
    assert caption_cohort(cohort, networks=labels).shape[0] == 8
    with pytest.raises(BrainAlignError, match="11 network labels given for 12 ROIs"):
        caption_cohort(cohort, networks=labels[:-1])
    with pytest.raises(BrainAlignError, match="at least two networks"):
        caption_cohort(cohort, networks=["x"] * 12)


def test_network_file(tmp_path):
    path = tmp_path / "nets.txt"
    path.write_text("a\nb\n\nc\n")
    assert read_network_file(path, 3) == ["a", "b", "c"]
    with pytest.raises(BrainAlignError, match=r"nets\.txt has 3 labels but the cohort has 4 ROIs"):
        read_network_file(path, 4)
    with pytest.raises(BrainAlignError, match="cannot read network label file"):
        read_network_file(tmp_path / "absent.txt", 3)


def test_connectivity_only_cohort_leaves_out_ica(tmp_path):
    root, _ = _small_cohort(tmp_path, timeseries=False)
    result = describe_cohort(Cohort.load(root))
    assert result.model.domains == ("connectivity", "gradients", "graph")
    assert not any(c.startswith("falff") for c in result.table)
    assert "fALFF" not in result.table["caption"].iloc[0]


def test_timeseries_without_tr_is_a_clear_error(tmp_path):
    root, _ = _small_cohort(tmp_path, tr=None)
    with pytest.raises(BrainAlignError, match=r"no TR in cohort\.json.*fALFF"):
        caption_cohort(Cohort.load(root))


def test_events_become_a_sentence(tmp_path):
    root, _ = _small_cohort(tmp_path)
    (root / "events").mkdir()
    pd.DataFrame({"onset": [10.0, 30.0, 50.0], "duration": [12.5, 11.0, 12.5],
                  "trial_type": ["heat", "rating", "heat"], "temperature": [45.0, np.nan, 46.0],
                  "rating": [np.nan, 110.0, np.nan], "regulation": ["up", "up", "up"]}
                 ).to_csv(root / "events" / "s2.tsv", sep="\t", index=False, na_rep="n/a")
    table = caption_cohort(Cohort.load(root))
    assert table["caption"].iloc[2].endswith(
        "Task events: 2 heat and 1 rating trials; mean temperature 45.5, mean rating 110, regulation up.")
    assert "Task events" not in table["caption"].iloc[1]
    with pytest.raises(BrainAlignError, match="needs an 'onset' column"):
        event_summary(pd.DataFrame({"x": [1]}), "ev.tsv")


# -- CLI ----------------------------------------------------------------------------------------------

def test_cli_writes_captions_and_reference(tmp_path):
    root, labels = _small_cohort(tmp_path, n=10)
    runner = CliRunner()
    result = runner.invoke(app, ["captions", "--cohort", str(root), "--train-fraction", "0.6"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(root / "captions.csv")
    assert len(table) == 10 and list(table.columns[:3]) == ["scan_id", "caption", "fc_within"]
    ref = json.loads((root / "captions_reference.json").read_text())
    assert len(ref["train_scan_ids"]) == 6 and ref["summary"]["n_scans"] == 10
    assert set(ref["reference"]["mean"]) == set(table.columns[2::2])
    assert (root / "captions_config.yaml").is_file()
    ids = tmp_path / "train.txt"
    ids.write_text("s0\ns1\ns2\ns3\n")
    out = tmp_path / "o" / "caps.csv"
    result = runner.invoke(app, ["captions", "--cohort", str(root), "--train-ids", str(ids), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out.parent / "caps_reference.json").read_text())["train_scan_ids"] == ["s0", "s1", "s2", "s3"]


def _flat(result) -> str:
    return " ".join(result.output.split())  # the console wraps long lines


def test_cli_errors(tmp_path):
    root, labels = _small_cohort(tmp_path, networks=False)
    runner = CliRunner()
    result = runner.invoke(app, ["captions", "--cohort", str(root)])
    assert result.exit_code == 2 and "no network labels" in _flat(result)
    nets = tmp_path / "nets.txt"
    nets.write_text("\n".join(labels[:-1]))
    result = runner.invoke(app, ["captions", "--cohort", str(root), "--networks", str(nets)])
    assert result.exit_code == 2 and "has 11 labels but the cohort has 12 ROIs" in _flat(result)
    nets.write_text("\n".join(labels))
    ids = tmp_path / "train.txt"
    ids.write_text("s0\nnope\n")
    result = runner.invoke(app, ["captions", "--cohort", str(root), "--networks", str(nets), "--train-ids", str(ids)])
    assert result.exit_code == 2 and "not in the cohort" in _flat(result) and "nope" in _flat(result)
    result = runner.invoke(app, ["captions", "--cohort", str(root), "--networks", str(nets),
                                 "--train-fraction", "1.5"])
    assert result.exit_code == 2 and "--train-fraction must be in (0, 1]" in _flat(result)
    assert runner.invoke(app, ["captions", "--cohort", str(root), "--networks", str(nets)]).exit_code == 0


# -- polishing ----------------------------------------------------------------------------------------

def _fake_replies(prompts, system):
    """A stand-in LLM: rewrites the first line faithfully, changes a number in the second, answers the third
    with two lines and the fourth with nothing."""
    out = []
    for i, p in enumerate(prompts):
        k = i % 4
        out.append(["In short: " + p, p.replace("1", "7"), "Sure.\n" + p, "  "][k])
    return out


def test_polish_keeps_only_rewrites_with_the_same_numbers():
    from brainalign.data.captions import polish_captions, same_numbers

    assert same_numbers("a (z=+1.6) and b (z=-0.2)", "b is z=-0.2, a is z=+1.6")
    assert not same_numbers("a (z=+1.6)", "a (z=1.6)") and not same_numbers("a (z=+1.6)", "a")
    caps = ["A is typical (z=+0.1).\nB is reduced (z=-1.4).\nC (z=+2.0).\nD (z=+0.5).",
            "E is elevated (z=+1.2).\nF (z=-0.1)."]
    out, kept = polish_captions(caps, generate=_fake_replies)
    assert out[0] == "In short: A is typical (z=+0.1).\nB is reduced (z=-1.4).\nC (z=+2.0).\nD (z=+0.5)."
    # E is the fifth line (a faithful rewrite again); F's rewrite changes a number: its template is kept
    assert out[1] == "In short: E is elevated (z=+1.2).\nF (z=-0.1)."
    assert kept.tolist() == [1, 1]


def test_polish_bad_input():
    from brainalign.data.captions import polish_captions

    with pytest.raises(BrainAlignError, match="non-empty caption strings"):
        polish_captions("one caption", generate=_fake_replies)
    with pytest.raises(BrainAlignError, match="non-empty caption strings"):
        polish_captions(["ok (z=+1.0)", ""], generate=_fake_replies)
    with pytest.raises(BrainAlignError, match="returned 1 replies for 2 prompts"):
        polish_captions(["a\nb"], generate=lambda prompts, system: ["a"])


def test_cli_polish(tmp_path, monkeypatch):
    import brainalign.encoders.language_model as lm

    root, labels = _small_cohort(tmp_path, n=6)
    runner = CliRunner()
    result = runner.invoke(app, ["captions", "--cohort", str(root), "--polish", "--llm", "nope"])
    assert result.exit_code == 2 and "unknown language model 'nope'" in _flat(result)
    monkeypatch.setattr(lm, "gguf_path", lambda name=None: tmp_path)
    monkeypatch.setattr(lm, "generate", lambda prompts, system, *a, **k: ["Put simply, " + p for p in prompts])
    result = runner.invoke(app, ["captions", "--cohort", str(root), "--polish"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(root / "captions.csv")
    assert list(table.columns[:4]) == ["scan_id", "caption", "caption_template", "polished_lines"]
    lines = table["caption_template"].str.count("\n") + 1
    assert (table["polished_lines"] == lines).all()
    assert all(c == "\n".join("Put simply, " + x for x in t.split("\n"))
               for c, t in zip(table["caption"], table["caption_template"]))
    summary = json.loads((root / "captions_reference.json").read_text())["summary"]
    assert summary["polished_lines_kept"] == f"{lines.sum()} of {lines.sum()}"


def test_a_scan_whose_gradient_graph_splits_gets_a_lower_sparsity():
    from brainalign.data.descriptors import connected_gradients

    rng = np.random.default_rng(0)
    f = rng.standard_normal((300, 2))
    blocks = np.concatenate([f[:, :1] + 0.7 * rng.standard_normal((300, 12)),
                             f[:, 1:] + 0.7 * rng.standard_normal((300, 12))], axis=1)
    mixed = rng.standard_normal((300, 2)) @ rng.standard_normal((2, 24)) + rng.standard_normal((300, 24))
    fc = np.stack([np.corrcoef(mixed.T), np.corrcoef(blocks.T)])  # the second splits at sparsity 0.9
    grads, lam = diffusion_gradients(fc, 2, disconnected="nan")
    assert np.isfinite(grads[0]).all() and np.isnan(grads[1]).all() and np.isnan(lam[1]).all()
    with pytest.warns(UserWarning, match=r"\['b'\]: the gradient affinity graph falls apart at sparsity 0.9"):
        out, used = connected_gradients(fc, 2, alpha=0.5, sparsity=0.9, scan_ids=["a", "b"])
    assert np.isfinite(out).all() and used[0] == 0.9 and used[1] < 0.9
    np.testing.assert_allclose(out[0], grads[0])  # a connected scan keeps the requested sparsity
    expected, _ = diffusion_gradients(fc[1], 2, sparsity=float(used[1]))
    np.testing.assert_allclose(out[1], expected)
    with pytest.raises(BrainAlignError, match="disconnected must be"):
        diffusion_gradients(fc, 2, disconnected="ignore")
    isolated = np.eye(24)[None]  # no ROI shares a positive profile with another: disconnected at any sparsity
    with pytest.warns(UserWarning, match="falls apart"), \
            pytest.raises(BrainAlignError, match="'c'.*at every sparsity"):
        connected_gradients(isolated, 2, alpha=0.5, sparsity=0.9, scan_ids=["c"])
    from brainalign.data.descriptors import DescriptorSettings, _reference_gradients

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reference lowers its sparsity silently
        ref, ref_sparsity = _reference_gradients(fc[1], DescriptorSettings(n_gradients=2))
    assert ref_sparsity == used[1]
    np.testing.assert_allclose(ref, out[1])
    lonely = fc[:1].copy()
    lonely[:, 3], lonely[:, :, 3] = 0.0, 0.0  # ROI 3 has no positive affinity to any ROI, itself included
    with pytest.raises(BrainAlignError, match="no positive affinity"):
        diffusion_gradients(lonely, 2)
    assert np.isnan(diffusion_gradients(lonely, 2, disconnected="nan")[0]).all()
    with pytest.warns(UserWarning, match="falls apart"), \
            pytest.raises(BrainAlignError, match="'d'.*at every sparsity"):
        connected_gradients(lonely, 2, alpha=0.5, sparsity=0.9, scan_ids=["d"])
