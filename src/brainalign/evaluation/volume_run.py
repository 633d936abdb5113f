"""Whole-brain volume alignment runs (METHODS §4): train the 3-D patch ViT and the ridge / MindEye-style MLP
baselines on one stimulus-held-out split, score retrieval in four directions, run Table 3's ablations, and
retrieve with a trained model on a (new) cohort.  Used by ``brainalign fit volume`` and ``brainalign retrieve``.

``fit_volume_run`` writes ``config.yaml``, ``results.json``, ``timing.json``, ``retrieval.html`` and the
checkpoints (``vit.pt``, ``mlp.pt``, ``ridge.npz``) into the run folder.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from brainalign.errors import BrainAlignError
from brainalign.utils import parse_scalar

METHODS = ("vit", "ridge", "mlp")
ABLATIONS = {"image_only": {"text_weight": 0.0}, "text_only": {"image_weight": 0.0},
             "no_queue": {"queue_size": 0}, "region_mask": {}}
DEFAULT_RIDGE_ALPHAS = [1e1, 1e2, 1e3, 1e4, 1e5, 1e6]
TEXT_PROVIDERS = ("precomputed", "minilm")


def cohort_targets(cohort: Any, text_provider: str = "precomputed") -> dict[str, tuple[Any, Any]]:
    """Target embeddings per stimulus: ``{kind: (array (n_stim, D), ids (n_stim,))}``.

    Image (and, by default, text) embeddings are the cohort's precomputed ``embeddings/*.npy``; with
    ``text_provider="minilm"`` the captions are embedded by the offline all-MiniLM-L6-v2 and cached per stimulus
    under ``COHORT/.cache/embeddings/``.
    """
    import numpy as np

    targets = {k: cohort.embeddings(k) for k in ("image", "text")}
    if text_provider == "minilm":
        from brainalign.encoders.embedding_providers import SentenceTransformerText

        ids = np.asarray(cohort.stimuli["stimulus_id"]).astype(str)
        provider = SentenceTransformerText(cache_dir=cohort.root / ".cache" / "embeddings")
        targets["text"] = (provider.get(ids, cohort.stimuli), ids)
    return {k: v for k, v in targets.items() if v is not None}


def rows_of(targets: tuple[Any, Any], stimulus_ids: Any, kind: str, where: Any) -> Any:
    """The target embedding of each scan's stimulus, (S, D); a clear error names stimuli without one."""
    import numpy as np
    import pandas as pd

    index = pd.Index(np.asarray(targets[1]).astype(str))
    stim = np.asarray(stimulus_ids).astype(str)
    pos = index.get_indexer(stim)
    if (pos < 0).any():
        missing = sorted(set(stim[pos < 0]))
        raise BrainAlignError(f"cohort {where}: the {kind} embeddings have no row for {len(missing)} stimulus id(s) "
                              f"of phenotypes.csv: {missing[:5]}")
    return np.asarray(targets[0], dtype=np.float32)[pos]


# ---------------------------------------------------------------------------------------------------------------
# configuration
def resolve_config(fields: dict[str, Any], sets: list[str], methods: Optional[str], ablations: bool,
                   region_mask: Optional[Path]) -> dict[str, Any]:
    """The fully resolved run configuration (validated), from YAML fields, ``--set`` items and options."""
    from brainalign.models.retrieval_baselines import MLPConfig
    from brainalign.models.volume_aligner import VolumeAlignerConfig

    unknown = sorted(set(fields) - {"vit", "mlp", "ridge", "methods", "ablations", "region_mask", "cohort",
                                    "text_provider"})
    if unknown:
        raise BrainAlignError(f"unknown config section(s) {unknown}; known: vit, mlp, ridge, methods, ablations, "
                              "region_mask, text_provider")
    provider = fields.get("text_provider", "precomputed")
    if provider not in TEXT_PROVIDERS:
        raise BrainAlignError(f"text_provider must be one of {list(TEXT_PROVIDERS)}, got {provider!r}")
    cfg = {"vit": dict(fields.get("vit") or {}), "mlp": dict(fields.get("mlp") or {}),
           "ridge": dict(fields.get("ridge") or {})}
    for item in sets:
        key, sep, value = item.partition("=")
        section, dot, param = key.partition(".")
        if not sep or not key:
            raise BrainAlignError(f"--set expects KEY=VALUE (e.g. vit.epochs=5 or epochs=5), got {item!r}")
        if not dot:
            section, param = "vit", key
        if section not in cfg:
            raise BrainAlignError(f"--set {item!r}: section {section!r} is not one of vit, mlp, ridge")
        cfg[section][param] = parse_scalar(value)
    names = [m.strip() for m in (methods.split(",") if methods else fields.get("methods", list(METHODS)))]
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise BrainAlignError(f"unknown method(s) {bad}; choose from {list(METHODS)}")
    vit = VolumeAlignerConfig.from_dict(cfg["vit"])
    mlp = MLPConfig.from_dict({"seed": vit.seed, **cfg["mlp"]})
    ridge_unknown = sorted(set(cfg["ridge"]) - {"alphas"})
    if ridge_unknown:
        raise BrainAlignError(f"unknown ridge option(s) {ridge_unknown}; known: ['alphas']")
    return {"methods": names, "ablations": bool(ablations or fields.get("ablations", False)),
            "text_provider": provider,
            "region_mask": str(region_mask) if region_mask else fields.get("region_mask"),
            "vit": vit.to_dict(), "mlp": mlp.to_dict(),
            "ridge": {"alphas": [float(a) for a in cfg["ridge"].get("alphas", DEFAULT_RIDGE_ALPHAS)]}}


def _region_mask(cohort: Any, path: Optional[str]) -> tuple[Any, str] | None:
    """The region mask (cohort grid, bool) from a NIfTI file or the simulator's truth mask; None if neither."""
    import nibabel as nib
    import numpy as np

    file = Path(path) if path else cohort.root / "truth_mask.nii.gz"
    if not file.is_file():
        if path:
            raise BrainAlignError(f"region mask file {file} does not exist")
        return None
    try:
        data = np.asarray(nib.load(str(file)).dataobj)
    except Exception as err:  # noqa: BLE001 - nibabel raises many types for bad files
        raise BrainAlignError(f"cannot read region mask {file}: {err}") from err
    if data.shape != cohort.mask.shape:
        raise BrainAlignError(f"region mask {file} has shape {data.shape}, the cohort grid is {cohort.mask.shape}")
    region = (data > 0) & cohort.mask
    if not region.any():
        raise BrainAlignError(f"region mask {file} has no voxel inside the cohort's brain mask")
    return region, str(file)


def _columns(mask: Any, sub_mask: Any) -> Any:
    """Column indices, in ``X = volume[mask]`` order, of the voxels of ``sub_mask`` (⊆ mask)."""
    import numpy as np

    position = np.cumsum(mask.ravel()) - 1
    return position[(sub_mask & mask).ravel()]


# ---------------------------------------------------------------------------------------------------------------
# the run
def fit_volume_run(cohort_dir: Path, out: Path, config: dict[str, Any], say=lambda msg: None) -> dict[str, Any]:
    """Train and evaluate every requested method; write the run folder; return results.json's content."""
    import numpy as np
    import yaml

    from brainalign.data.volumes import VolumeCohort
    from brainalign.evaluation.retrieval import retrieval_table, split_by_stimulus
    from brainalign.models.retrieval_baselines import MLPConfig, MLPRetrieval, RidgeRetrieval
    from brainalign.models.volume_aligner import VolumeAligner, VolumeAlignerConfig

    cohort = VolumeCohort.load(cohort_dir)
    vit_cfg = VolumeAlignerConfig.from_dict(config["vit"])
    targets = cohort_targets(cohort, config.get("text_provider", "precomputed"))
    if not targets:
        raise BrainAlignError(f"cohort {cohort.root} has no embeddings/image.npy or embeddings/text.npy")
    stim, subj = np.asarray(cohort.stimulus_ids).astype(str), np.asarray(cohort.subject_ids).astype(str)
    per_row = {k: rows_of(v, stim, k, cohort.root) for k, v in targets.items()}
    train, test = split_by_stimulus(stim, vit_cfg.test_frac, vit_cfg.seed)
    say(f"split by stimulus: {len(train)} train / {len(test)} test scans")
    X = cohort.masked_stack(progress=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump({"cohort": str(cohort_dir), **config}, sort_keys=False))

    def rows(idx):  # contiguous training rows stay memory-mapped
        return X[idx[0]: idx[-1] + 1] if np.array_equal(idx, np.arange(idx[0], idx[-1] + 1)) else np.asarray(X[idx])

    X_train, X_test = rows(train), rows(test)

    def evaluate(model, X_eval) -> dict[str, Any]:
        return retrieval_table(model.embed_all(X_eval), targets, stim[test], subj[test])

    def targets_for(cfg_weights: dict[str, float] | None) -> dict[str, Any]:
        keep = [k for k in targets if cfg_weights is None or cfg_weights[k] > 0]
        return {k: per_row[k][train] for k in keep}

    results: dict[str, Any] = {"cohort": str(cohort_dir), "methods": {}, "ablations": {}, "notes": [],
                               "split": {"n_train_scans": int(len(train)), "n_test_scans": int(len(test)),
                                         "n_train_stimuli": int(len(set(stim[train]))),
                                         "n_test_stimuli": int(len(set(stim[test]))),
                                         "test_stimuli": sorted(set(stim[test].tolist()))}}
    timing: dict[str, float] = {}
    for name in config["methods"]:
        say(f"training {name}")
        t0 = time.perf_counter()
        if name == "vit":
            model = VolumeAligner(vit_cfg).fit(X_train, cohort.mask, stim[train], **targets_for(vit_cfg.weights))
            model.save(out / "vit.pt")
        elif name == "ridge":
            model = RidgeRetrieval(tuple(config["ridge"]["alphas"])).fit(X_train, stim[train], **targets_for(None))
            model.save(out / "ridge.npz")
            results.setdefault("ridge_alphas", model.chosen_alphas)
            results.setdefault("ridge_centred", model.centred)
        else:
            model = MLPRetrieval(MLPConfig.from_dict(config["mlp"])).fit(X_train, stim[train], **targets_for(None))
            model.save(out / "mlp.pt")
        timing[f"fit_{name}_s"] = time.perf_counter() - t0
        results["methods"][name] = evaluate(model, X_test)

    if config["ablations"]:
        region = _region_mask(cohort, config.get("region_mask"))
        for name, change in ABLATIONS.items():
            cfg = vit_cfg.replace(**change)
            if any(cfg.weights[k] > 0 and k not in targets for k in ("image", "text")):
                results["notes"].append(f"ablation {name} skipped: needs targets the cohort lacks")
                continue
            if name == "region_mask":
                if region is None:
                    results["notes"].append("ablation region_mask skipped: no --region-mask and no truth_mask.nii.gz")
                    continue
                cols = _columns(cohort.mask, region[0])
                results["region_mask_file"], results["region_mask_voxels"] = region[1], int(len(cols))
                say(f"ablation {name} ({len(cols)} voxels)")
                t0 = time.perf_counter()
                model = VolumeAligner(cfg).fit(np.asarray(X_train[:, cols]), region[0], stim[train],
                                               **targets_for(cfg.weights))
                metrics = evaluate(model, np.asarray(X_test[:, cols]))
            else:
                say(f"ablation {name}")
                t0 = time.perf_counter()
                model = VolumeAligner(cfg).fit(X_train, cohort.mask, stim[train], **targets_for(cfg.weights))
                metrics = evaluate(model, X_test)
            timing[f"ablation_{name}_s"] = time.perf_counter() - t0
            results["ablations"][name] = metrics
        if "vit" in results["methods"]:
            results["ablations"]["whole_brain"] = results["methods"]["vit"]
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    write_retrieval_html(out / "retrieval.html", results)
    return results


_HTML = """<!doctype html><html><head><meta charset="utf-8"><title>brainalign retrieval</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:.2em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}table{border-collapse:collapse}tr:nth-child(even){background:#f3f3f3}
</style></head><body><h1>Cross-modal retrieval</h1>
<p>Cohort: {{ cohort }}. Held-out stimuli: {{ split.n_test_stimuli }} ({{ split.n_test_scans }} scans);
repeats averaged per subject and stimulus; R@k in %, mean over subjects.</p>
{% for title, rows in tables %}{% if rows %}<h2>{{ title }}</h2><table><tr><th>model</th>
{% for d in directions %}<th colspan="3">{{ d.replace('_', ' ') }}</th>{% endfor %}</tr><tr><th></th>
{% for d in directions %}{% for k in ks %}<th>R@{{ k }}</th>{% endfor %}{% endfor %}</tr>
{% for name, row in rows.items() %}<tr><td>{{ name }}</td>{% for d in directions %}{% for k in ks %}
<td>{{ fmt(row, d, 'R@' ~ k) }}</td>{% endfor %}{% endfor %}</tr>{% endfor %}
<tr><td><i>chance</i></td>{% for d in directions %}{% for k in ks %}<td><i>{{ fmt(chance, d, 'chance@' ~ k) }}</i></td>
{% endfor %}{% endfor %}</tr></table>{% endif %}{% endfor %}
{% for n in notes %}<p>note: {{ n }}</p>{% endfor %}</body></html>"""


def write_retrieval_html(path: Path, results: dict[str, Any]) -> Path:
    """A small HTML page with the methods and ablations retrieval tables (jinja2)."""
    import jinja2

    from brainalign.evaluation.retrieval import DIRECTIONS

    rows = list(results["methods"].values()) + list(results["ablations"].values())
    chance = rows[0] if rows else {}

    def fmt(row, direction, key):
        value = row.get(direction, {}).get(key)
        return "–" if value is None else f"{100 * value:.2f}"

    html = jinja2.Environment(autoescape=True).from_string(_HTML).render(
        cohort=results["cohort"], split=results["split"], directions=list(DIRECTIONS), ks=(1, 5, 10),
        tables=[("Methods", results["methods"]), ("Ablations (ViT)", results["ablations"])], chance=chance,
        fmt=fmt, notes=results.get("notes", []))
    path.write_text(html)
    return path


def retrieve_run(model_dir: Path, cohort_dir: Path, out: Path, method: str = "vit", k: int = 10) -> dict[str, Any]:
    """Embed every scan of a cohort with a trained model; write R@k and each scan's top-k stimulus ids."""
    import numpy as np

    from brainalign.data.volumes import VolumeCohort
    from brainalign.evaluation.retrieval import retrieval_table, top_k_ids
    from brainalign.models.retrieval_baselines import MLPRetrieval, RidgeRetrieval
    from brainalign.models.volume_aligner import VolumeAligner

    loaders = {"vit": (VolumeAligner, "vit.pt"), "mlp": (MLPRetrieval, "mlp.pt"), "ridge": (RidgeRetrieval, "ridge.npz")}
    if method not in loaders:
        raise BrainAlignError(f"unknown method {method!r}; choose from {sorted(loaders)}")
    cls, file = loaders[method]
    path = model_dir / file if model_dir.is_dir() else model_dir
    model = cls.load(path)
    cohort = VolumeCohort.load(cohort_dir)
    X = cohort.masked_stack(progress=True)
    if method == "vit":
        model_mask = model.mask
        if model_mask.shape != cohort.mask.shape:
            raise BrainAlignError(f"model {path} expects volumes of shape {model_mask.shape}, cohort {cohort_dir} has "
                                  f"{cohort.mask.shape}")
        if not np.array_equal(model_mask, cohort.mask):  # voxels outside the cohort mask are 0
            cols = _columns(cohort.mask, model_mask)
            inside = (model_mask & cohort.mask)[model_mask]
            full = np.zeros((X.shape[0], int(model_mask.sum())), dtype=np.float32)
            full[:, inside] = X[:, cols]
            X = full
    elif X.shape[1] != _n_inputs(model):
        raise BrainAlignError(f"model {path} takes {_n_inputs(model)} voxels, cohort {cohort_dir} has {X.shape[1]}")
    brain = model.embed_all(X)
    run_config = (path.parent / "config.yaml")
    provider = "precomputed"
    if run_config.is_file():
        import yaml

        provider = (yaml.safe_load(run_config.read_text()) or {}).get("text_provider", "precomputed")
    available = cohort_targets(cohort, provider)
    targets, notes = {}, []
    for kind, emb in brain.items():
        found = available.get(kind)
        if found is None:
            notes.append(f"no embeddings/{kind}.npy in {cohort_dir}: {kind} directions skipped")
            continue
        if found[0].shape[1] != emb.shape[1]:
            raise BrainAlignError(f"{cohort_dir}/embeddings/{kind}.npy has dimension {found[0].shape[1]}, but model "
                                  f"{path} embeds into {emb.shape[1]} dimensions")
        targets[kind] = found
    if not targets:
        raise BrainAlignError(f"cohort {cohort_dir} has none of the embeddings the model was trained for "
                              f"({sorted(brain)})")
    stim, subj = np.asarray(cohort.stimulus_ids).astype(str), np.asarray(cohort.subject_ids).astype(str)
    for kind, found in targets.items():
        rows_of(found, stim, kind, cohort_dir)  # every scan's stimulus needs an embedding
    metrics = retrieval_table({k: brain[k] for k in targets}, targets, stim, subj)
    top = {kind: top_k_ids(brain[kind], targets[kind], k) for kind in targets}
    scans = [{"scan_id": str(sid), "stimulus_id": str(stim[i]), **{f"top_{kind}": top[kind][i].tolist()
                                                                   for kind in top}}
             for i, sid in enumerate(cohort.scan_ids)]
    results = {"model": str(path), "method": method, "cohort": str(cohort_dir), "metrics": metrics,
               "notes": notes, "k": int(k), "scans": scans}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results


def _n_inputs(model: Any) -> int:
    if hasattr(model, "models"):
        return int(next(iter(model.models.values())).coef_.shape[1])
    return int(model.module.backbone.stem[0].in_features)
