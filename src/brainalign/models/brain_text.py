"""Brain–text methods: NeuroLIP and the two-tower baselines CLIP, SigLIP and FairCLIP (METHODS §1).

All share the BNT-style brain encoder and the phenotype-text encoder: frozen by default (texts encoded once per
unique string), or fine-tuned with the rest (``tune_text=True``, at its own ``text_lr``).  They predict the
diagnosis by scoring each scan against one prompt per class — the scan's own phenotype text with the target
attribute set to that class (attributes known at test time come from the scan's row) — and taking a softmax over
the two classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.nn import functional as F

from brainalign.data.phenotype_text import PhenotypeText
from brainalign.encoders.brain_network import BrainNetworkEncoder, ClusterNodeAttention
from brainalign.encoders.text import TextBatch, TextEncoder
from brainalign.errors import BrainAlignError
from brainalign.models.base import Task
from brainalign.models.phenotype_texts import TaskTexts, sensitive_attributes, shared_text_encoder
from brainalign.models.registry import register_method
from brainalign.models.torch_method import TorchMethod
from brainalign.objectives import (
    ClipTemperature,
    SigmoidTemperatureBias,
    TokenConditionedAttention,
    attention_distance,
    calt_confusion,
    calt_loss,
    clip_loss,
    fairclip_loss,
    neurolip_total_loss,
    siglip_loss,
    token_node_attention,
)
from brainalign.training.trainer import AlignmentModule, TrainConfig

ENCODER_KEYS = ("n_layers", "n_heads", "ff_dim", "n_clusters", "dropout")


@dataclass
class TokenMaps:
    """Token→ROI maps of the attribute-value tokens of some scans.

    Attributes
    ----------
    maps : array (n_scans, n_attributes, N)
    words : list of list of str
        The value word of each attribute per scan (the token, e.g. "autism", "female").
    attributes : list of str
    roles : list of str
        Per attribute: "disease", "sensitive" or "other".
    """

    maps: np.ndarray
    words: list[list[str]]
    attributes: list[str]
    roles: list[str]

    def tokens_with_role(self, role: str) -> list[str]:
        cols = [j for j, r in enumerate(self.roles) if r == role]
        return sorted({w[j] for w in self.words for j in cols})


@dataclass
class TunedText:
    """A text encoder fine-tuned with a brain–text module: the encoder (trainable, its own copy), its peak learning
    rate, and what it encodes — the task's unique texts (rows of ``text_id``) and their attributes."""

    encoder: TextEncoder
    lr: float
    unique: list[PhenotypeText]
    attributes: list[str]


class BrainTextModule(AlignmentModule):
    """Brain encoder + projections + the phenotype texts: a table of their frozen encodings (non-persistent
    buffers), or, with ``tuned``, the trainable encoder itself, run on each batch's distinct texts."""

    def __init__(self, n_rois: int, texts: TextBatch, train_config: TrainConfig, dim: int, encoder_kw: dict,
                 tuned: TunedText | None = None):
        super().__init__(train_config)
        self.brain = BrainNetworkEncoder(n_rois, **encoder_kw)
        self.img_global = nn.Linear(self.brain.dim, dim)
        self.txt_global = nn.Linear(texts.pooled.shape[-1], dim)
        # Encodings of the unique texts, rebuilt from the text encoder's cache, so not saved in checkpoints.
        self.register_buffer("text_pooled", texts.pooled.float(), persistent=False)
        self.register_buffer("text_attr_tokens", texts.attr_tokens.float(), persistent=False)
        self.tuned = tuned
        self.text_encoder = tuned.encoder if tuned is not None else None  # registered: trained and checkpointed

    def parameter_lr(self, name: str) -> float:
        if self.tuned is not None and name.startswith("text_encoder."):
            return self.tuned.lr
        return super().parameter_lr(name)

    def text_rows(self, text_id: torch.Tensor) -> dict[str, torch.Tensor]:
        """text_id (B,) → pooled (B, H) and attribute-value tokens (B, A, H) of each scan's text."""
        if self.tuned is None:
            return {"pooled": self.text_pooled[text_id], "attr_tokens": self.text_attr_tokens[text_id]}
        rows, inverse = torch.unique(text_id, return_inverse=True)  # each distinct text encoded once
        out = self.text_encoder.encode([self.tuned.unique[r] for r in rows.tolist()], self.tuned.attributes)
        return {"pooled": out.pooled[inverse].float(), "attr_tokens": out.attr_tokens[inverse].float()}


class NeuroLIPModule(BrainTextModule):
    """NeuroLIP: local image tokens, TTCA, CALT per attribute, negative gradient, attention distance, global SigLIP."""

    def __init__(self, n_rois: int, texts: TextBatch, train_config: TrainConfig, *, attributes: list[str],
                 disease: str, sensitive: list[str], dim: int = 128, n_heads: int = 4, beta: float = 1e-3,
                 negative_gradient: bool = True, attention_loss: bool = True, sensitive_loss: str = "negative",
                 encoder_kw: dict, tuned: TunedText | None = None):
        super().__init__(n_rois, texts, train_config, dim, encoder_kw, tuned)
        self.attributes, self.disease, self.sensitive = attributes, disease, sensitive
        self.beta, self.negative_gradient, self.attention_loss = beta, negative_gradient, attention_loss
        self.sensitive_loss = sensitive_loss
        E = self.brain.dim
        self.local = ClusterNodeAttention(E, encoder_kw.get("n_heads", 4))
        self.img_local = nn.Linear(E, dim)
        self.txt_local = nn.Linear(texts.pooled.shape[-1], dim)
        self.ttca = TokenConditionedAttention(dim, n_heads)
        self.calt_temperature = nn.ModuleList(SigmoidTemperatureBias() for _ in attributes)
        self.global_temperature = SigmoidTemperatureBias()

    def brain_tokens(self, fc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """fc (B, N, N) → local tokens v_loc (B, M, D), cluster→node attention (B, M, N), global token (B, D)."""
        out = self.brain(fc)
        local, a_mhsa = self.local(out["clusters"], out["nodes"])
        return self.img_local(local), a_mhsa, self.img_global(out["clusters"].mean(1))

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        v_loc, a_mhsa, v_g = self.brain_tokens(batch["fc"])
        ids = batch["text_id"]
        text = self.text_rows(ids)
        t_attr = self.txt_local(text["attr_tokens"])  # (B, A, D)
        global_loss = siglip_loss(v_g, self.txt_global(text["pooled"]), *self.global_temperature(),
                                  ids[:, None] == ids[None, :])
        calt, maps = {}, {}
        for k, attr in enumerate(self.attributes):  # a handful of attributes; pairs are batched inside
            cond, attn = self.ttca.pairwise(t_attr[:, k], v_loc)  # (B, B, D), (B, B, M+1)
            log_t, b = self.calt_temperature[k]()
            unlearn = attr in self.sensitive and self.negative_gradient
            if unlearn:
                # The sensitive term's temperature and bias stay fixed: a maximised CALT term could grow without
                # bound through t and b alone (cosines are bounded), and t → 0 would zero the confusion gap;
                # neither removes information from the brain tokens.
                log_t, b = log_t.detach(), b.detach()
            loss_fn = calt_confusion if unlearn and self.sensitive_loss == "confusion" else calt_loss
            calt[attr] = loss_fn(cond, t_attr[:, k], batch["groups"][:, k], log_t, b)
            own = attn.diagonal(dim1=0, dim2=1).T[:, None, :]  # each scan under its own text: (B, 1, M+1)
            maps[attr] = token_node_attention(own, a_mhsa)[:, 0]  # (B, N)
        distance = None
        if self.attention_loss and self.sensitive:
            distance = torch.stack([attention_distance(maps[self.disease], maps[s]) for s in self.sensitive]).mean()
        return neurolip_total_loss(global_loss, calt, set(self.sensitive), distance, self.beta,
                                   self.negative_gradient and self.sensitive_loss == "negative")

    def class_logits(self, fc: torch.Tensor, prompt_attr: torch.Tensor) -> torch.Tensor:
        """fc (b, N, N), prompt attribute tokens (b, C, A, H) → CALT logits (b, C) of the disease token."""
        v_loc, _, _ = self.brain_tokens(fc)
        k = self.attributes.index(self.disease)
        q = self.txt_local(prompt_attr[:, :, k])  # (b, C, D)
        cond, _ = self.ttca(q, v_loc)  # each scan's image under its C prompts: (b, C, D)
        log_t, bias = self.calt_temperature[k]()
        return log_t.exp() * F.cosine_similarity(cond, q, dim=-1) + bias

    def attribute_maps(self, fc: torch.Tensor, text_id: torch.Tensor) -> torch.Tensor:
        """Token→node maps A (b, A, N) of each attribute's value token in each scan's own text."""
        v_loc, a_mhsa, _ = self.brain_tokens(fc)
        q = self.txt_local(self.text_rows(text_id)["attr_tokens"])  # (b, A, D)
        _, attn = self.ttca(q, v_loc)  # (b, A, M+1)
        return token_node_attention(attn, a_mhsa)

    def occlusion_maps(self, fc: torch.Tensor, own: torch.Tensor, prototypes: list[torch.Tensor],
                       fill: torch.Tensor, max_elements: int = 2**26) -> torch.Tensor:
        """Contrastive occlusion maps (b, A, N): how much each ROI makes a scan look like its own attribute value.

        For attribute k with value prototypes ``P_k`` (V_k value tokens), the token logit of value w is the CALT
        logit ``z(w) = t_k · cos(TTCA(P_k[w], v_loc), P_k[w]) + b_k`` and the contrast is ``z(own) − mean of z(w)
        over the other values`` (``z(own)`` alone when V_k = 1).  ROI r's map value is the drop of the contrast
        when r's row and column of the FC are replaced by ``fill`` (the training mean): positive where the region
        supports the scan's own value.  All N occlusions of a chunk of scans run as one batch.

        Parameters
        ----------
        fc : Tensor (b, N, N)
        own : Tensor (b, A) of int
            Each scan's value code per attribute (a row of ``prototypes[k]``).
        prototypes : list of A Tensors (V_k, H)
            Raw (text-encoder) value tokens per attribute.
        fill : Tensor (N, N)
        max_elements : int
            Occluded FC entries per forward pass (memory bound; 2**26 floats = 256 MB).
        """
        b, n, _ = fc.shape
        eye = torch.eye(n, dtype=torch.bool, device=fc.device)
        cross = eye[:, :, None] | eye[:, None, :]  # (N, N, N): ROI r's row and column
        chunk = max(1, max_elements // ((n + 1) * n * n))
        out = []
        for start in range(0, b, chunk):  # scans in chunks; the N occlusions of a scan are one batch
            x = fc[start:start + chunk]
            c = len(x)
            stack = torch.cat([x[:, None], torch.where(cross, fill, x[:, None])], 1).reshape(c * (n + 1), n, n)
            v_loc = self.brain_tokens(stack)[0]
            maps = []
            for k, proto in enumerate(prototypes):
                q = self.txt_local(proto)  # (V, D)
                cond, _ = self.ttca(q.expand(len(v_loc), -1, -1), v_loc)  # (c(N+1), V, D)
                log_t, bias = self.calt_temperature[k]()
                z = (log_t.exp() * F.cosine_similarity(cond, q, dim=-1) + bias).reshape(c, n + 1, -1)
                hit = F.one_hot(own[start:start + chunk, k], len(proto)).to(z.dtype)[:, None]  # (c, 1, V)
                contrast = (z * hit).sum(-1)
                if len(proto) > 1:
                    contrast = contrast - (z * (1 - hit)).sum(-1) / (len(proto) - 1)
                maps.append(contrast[:, :1] - contrast[:, 1:])  # (c, N)
            out.append(torch.stack(maps, 1))
        return torch.cat(out)

    def embedding(self, fc: torch.Tensor) -> torch.Tensor:
        """fc (b, N, N) → frozen brain embedding (b, 2D) for the linear probe: [v_g, mean of v_loc]."""
        v_loc, _, v_g = self.brain_tokens(fc)
        return torch.cat([v_g, v_loc.mean(1)], dim=-1)


class TwoTowerModule(BrainTextModule):
    """Global brain and text embeddings aligned by CLIP, SigLIP or FairCLIP."""

    def __init__(self, n_rois: int, texts: TextBatch, train_config: TrainConfig, *, objective: str, dim: int = 128,
                 fair_lambda: float = 1e-4, fair_blur: float = 1e-4, encoder_kw: dict, tuned: TunedText | None = None):
        super().__init__(n_rois, texts, train_config, dim, encoder_kw, tuned)
        self.objective, self.fair_lambda, self.fair_blur = objective, fair_lambda, fair_blur
        self.temperature = SigmoidTemperatureBias() if objective == "siglip" else ClipTemperature()

    def brain_embedding(self, fc: torch.Tensor) -> torch.Tensor:
        return self.img_global(self.brain(fc)["clusters"].mean(1))

    def embedding(self, fc: torch.Tensor) -> torch.Tensor:
        """fc (b, N, N) → frozen brain embedding (b, D) for the linear probe."""
        return self.brain_embedding(fc)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        img = self.brain_embedding(batch["fc"])
        ids = batch["text_id"]
        txt = self.txt_global(self.text_rows(ids)["pooled"])
        positives = ids[:, None] == ids[None, :]
        if self.objective == "siglip":
            loss = siglip_loss(img, txt, *self.temperature(), positives)
        elif self.objective == "fairclip":
            loss = fairclip_loss(img, txt, self.temperature(), batch["sensitive"], self.fair_lambda, self.fair_blur,
                                 positives)
        else:
            loss = clip_loss(img, txt, self.temperature(), positives)
        return loss, {self.objective: loss.detach()}

    def class_logits(self, fc: torch.Tensor, prompt_pooled: torch.Tensor) -> torch.Tensor:
        """fc (b, N, N), prompt pooled embeddings (b, C, H) → similarity logits (b, C)."""
        img = F.normalize(self.brain_embedding(fc), dim=-1)[:, None, :]
        txt = F.normalize(self.txt_global(prompt_pooled), dim=-1)
        return (img * txt).sum(-1)  # the temperature does not change the softmax ranking; probabilities use cos


class BrainTextMethod(TorchMethod):
    """Common fit/predict for brain–text methods: texts built and encoded once, prompts per class at prediction."""

    text_defaults: ClassVar[dict[str, Any]] = {"template": None, "text_model": None, "dim": 128,
                                               "n_layers": 2, "n_heads": 4, "ff_dim": 1024, "n_clusters": 100,
                                               # dropout on the N×N node features costs ~25 % of a CPU step
                                               "dropout": 0.0, "prediction": "prompt",
                                               "tune_text": False, "text_lr": 1e-5}
    train_defaults = {"epochs": 30, "batch_size": 32, "lr": 1e-4, "weight_decay": 1e-4, "warmup_frac": 0.03}
    model_choices: ClassVar[dict[str, tuple[Any, ...]]] = {"prediction": ("prompt", "probe"),
                                                           "tune_text": (False, True)}

    def __init__(self, seed: int = 0, **params: Any):
        super().__init__(seed, **params)
        lr = self.model_params["text_lr"]
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise BrainAlignError(f"{self.name}: text_lr must be a number > 0, got {lr!r}")

    def encoder(self) -> TextEncoder:
        """The text encoder: once fitted with ``tune_text``, the model's own tuned copy; else the shared frozen one."""
        if self.model_params["tune_text"] and self.module_ is not None:
            return self.module_.text_encoder
        return shared_text_encoder(self.model_params["text_model"])

    def tuned_text(self) -> TunedText | None:
        """With ``tune_text``: a fresh trainable copy of the pretrained encoder for a new module (else None)."""
        if not self.model_params["tune_text"]:
            return None
        frozen = shared_text_encoder(self.model_params["text_model"])
        encoder = TextEncoder(self.model_params["text_model"], trainable=True, max_length=frozen.max_length)
        return TunedText(encoder, float(self.model_params["text_lr"]), self.texts_.unique, self.texts_.attributes)

    def encoder_kw(self) -> dict[str, Any]:
        return {k: self.model_params[k] for k in ENCODER_KEYS}

    def prepare(self, task: Task, train: np.ndarray) -> None:
        self.train_idx_ = np.asarray(train, dtype=int)
        # Always the pretrained encoder here: a refit starts from it, not from a previous fit's tuned copy.
        self.texts_ = TaskTexts.build(task, shared_text_encoder(self.model_params["text_model"]),
                                      self.model_params["template"])
        self.seen_ = self.texts_.seen_category_words(train)
        self.sensitive_ = sensitive_attributes(self.texts_.template, task, self.model_params.get("sensitive_attributes"))

    def tensors(self, task: Task, idx: np.ndarray) -> dict[str, torch.Tensor]:
        out = {"fc": torch.from_numpy(np.ascontiguousarray(task.fc[idx])),
               "text_id": torch.from_numpy(self.texts_.text_id[idx]),
               "groups": torch.from_numpy(self.texts_.groups[idx])}
        if task.groups is not None:
            codes = np.unique(task.groups, return_inverse=True)[1]
            out["sensitive"] = torch.from_numpy(codes[idx].astype(np.int64))
        return out

    def fit(self, task: Task, train: np.ndarray, val: np.ndarray | None = None) -> BrainTextMethod:
        """Train, then fit the prediction rule on the training scans.

        ``prediction="prompt"`` (default, the paper's rule): a 1-D logistic regression maps the
        positive-minus-negative prompt logit to a probability.  The paper's softmax over the two prompts is this
        map with slope 1 and intercept 0; the prompts' logits carry an offset (the class words sit at different
        distances from the brain tokens), which leaves the ranking (AUC) intact but can put every scan on one
        side of 0.5, so thresholded metrics (ACC, SEN, SPC, DPD, DEOdds) would describe the offset rather than
        the model.

        ``prediction="probe"``: a logistic regression on the frozen, standardised brain embeddings (the linear
        probe METHODS §1 also reports).
        """
        super().fit(task, train, val)
        if self.model_params["tune_text"]:  # the table of text encodings (token-map prototypes) from the tuned encoder
            with torch.no_grad():
                self.texts_.features = self.encoder().eval().encode(self.texts_.unique, self.texts_.attributes)
        if self.model_params["prediction"] == "probe":
            self.calibration_ = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            self.calibration_.fit(self.embeddings(task, train), task.y[train])
        else:
            margin = super().predict_proba(task, train)
            self.calibration_ = LogisticRegression(C=100.0).fit(margin[:, None], task.y[train])
        return self

    def embeddings(self, task: Task, idx: np.ndarray) -> np.ndarray:
        """(len(idx), D) frozen brain embeddings of the trained model."""
        return self.inference(task, idx, self.tensors, lambda m, b: m.embedding(b["fc"])).numpy()

    def predict_proba(self, task: Task, idx: np.ndarray) -> np.ndarray:
        """(len(idx),) calibrated probability of the positive class."""
        if self.model_params["prediction"] == "probe":
            return self.calibration_.predict_proba(self.embeddings(task, idx))[:, 1]
        margin = super().predict_proba(task, idx)
        return self.calibration_.predict_proba(margin[:, None])[:, 1]

    def predict_tensors(self, task: Task, idx: np.ndarray) -> dict[str, torch.Tensor]:
        _, prompts = self.texts_.class_prompts(task, idx, self.encoder(), self.seen_)
        b = len(idx)
        return {"fc": torch.from_numpy(np.ascontiguousarray(task.fc[idx])),
                "prompt_pooled": prompts.pooled.reshape(b, 2, -1),
                "prompt_attr": prompts.attr_tokens.reshape(b, 2, *prompts.attr_tokens.shape[1:])}


@register_method("neurolip")
class NeuroLIP(BrainTextMethod):
    """NeuroLIP (Yang & Li, 2025): token-conditioned alignment of FC with phenotype text, fair by design.

    Model parameters (besides the encoder's): ``beta`` (1e-3, weight of the attention distance),
    ``negative_gradient`` (True), ``attention_loss`` (True) — the Table 2 ablations turn these off —
    ``sensitive_loss`` (``"negative"``, the paper's maximised CALT term, or ``"confusion"``, the squared gap
    between same- and different-value mean logits, :func:`~brainalign.objectives.calt_confusion`; used when
    ``negative_gradient``), ``ttca_heads`` (4), ``sensitive_attributes`` (default: the template attribute
    reading the sensitive column).
    """

    model_defaults = {**BrainTextMethod.text_defaults, "beta": 1e-3, "negative_gradient": True,
                      "attention_loss": True, "sensitive_loss": "negative", "ttca_heads": 4,
                      "sensitive_attributes": None, "token_map": "attention"}
    model_choices = {**BrainTextMethod.model_choices, "token_map": ("attention", "occlusion"),
                     "sensitive_loss": ("negative", "confusion")}

    def build_module(self, task: Task, train: np.ndarray) -> NeuroLIPModule:
        self.prepare(task, train)
        self.occlusion_fill_ = torch.from_numpy(np.ascontiguousarray(task.fc[train].mean(0, dtype=np.float64),
                                                                     dtype=np.float32))
        p = self.model_params
        return NeuroLIPModule(task.cohort.n_rois, self.texts_.features, self.train_config,
                              attributes=self.texts_.attributes, disease=self.texts_.target_attribute,
                              sensitive=self.sensitive_, dim=p["dim"], n_heads=p["ttca_heads"], beta=p["beta"],
                              negative_gradient=p["negative_gradient"], attention_loss=p["attention_loss"],
                              sensitive_loss=p["sensitive_loss"], encoder_kw=self.encoder_kw(),
                              tuned=self.tuned_text())

    def scores(self, module: NeuroLIPModule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = module.class_logits(batch["fc"], batch["prompt_attr"])
        return logits[:, 1] - logits[:, 0]

    def token_maps(self, task: Task, idx: np.ndarray) -> TokenMaps:
        """Maps of every attribute-value token in each scan's own text (see :class:`TokenMaps`).

        ``token_map="attention"`` (the paper's): A = A_ttca · A_mhsa.  ``"occlusion"``: the drop of the token's
        contrastive CALT logit when each ROI is occluded (:meth:`NeuroLIPModule.occlusion_maps`), with value
        prototypes averaged over the training texts.
        """
        texts = self.texts_
        if self.model_params["token_map"] == "occlusion":
            protos = self.value_prototypes()
            fill = self.occlusion_fill_
            maps = self.inference(task, idx, self.tensors, lambda m, b: m.occlusion_maps(
                b["fc"], b["groups"], [p.to(b["fc"].device) for p in protos], fill.to(b["fc"].device)))
        else:
            maps = self.inference(task, idx, self.tensors, lambda m, b: m.attribute_maps(b["fc"], b["text_id"]))
        words = [[texts.unique[t].value(a) for a in texts.attributes] for t in texts.text_id[np.asarray(idx)]]
        roles = ["disease" if a == texts.target_attribute else "sensitive" if a in self.sensitive_ else "other"
                 for a in texts.attributes]
        return TokenMaps(maps.numpy(), words, list(texts.attributes), roles)

    def value_prototypes(self) -> list[torch.Tensor]:
        """Per attribute, (V, H) mean value token of the texts with each value code (texts.groups codes).

        Averaged over the distinct texts of the training scans; a value absent from training keeps its own
        texts' mean (its row is only used to explain scans that carry it)."""
        texts, train = self.texts_, self.train_idx_
        tokens = texts.features.attr_tokens.float()  # (U, A, H)
        out = []
        for k in range(len(texts.attributes)):
            codes = texts.groups[:, k]
            ids = np.unique(np.stack([texts.text_id, codes], 1)[train], axis=0)  # (text, code) pairs in training
            proto = torch.zeros(len(texts.vocab[k]), tokens.shape[-1])
            for c in range(len(proto)):  # a handful of values per attribute
                rows = ids[ids[:, 1] == c, 0]
                if len(rows) == 0:
                    rows = np.unique(texts.text_id[codes == c])
                proto[c] = tokens[rows, k].mean(0)
            out.append(proto)
        return out


class TwoTowerMethod(BrainTextMethod):
    objective: ClassVar[str] = "clip"
    model_defaults = dict(BrainTextMethod.text_defaults)

    def build_module(self, task: Task, train: np.ndarray) -> TwoTowerModule:
        self.prepare(task, train)
        extra = {k: self.model_params[k] for k in ("fair_lambda", "fair_blur") if k in self.model_params}
        return TwoTowerModule(task.cohort.n_rois, self.texts_.features, self.train_config, objective=self.objective,
                              dim=self.model_params["dim"], encoder_kw=self.encoder_kw(), tuned=self.tuned_text(),
                              **extra)

    def scores(self, module: TwoTowerModule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = module.class_logits(batch["fc"], batch["prompt_pooled"])
        scale = module.temperature()[0] if self.objective == "siglip" else module.temperature()
        return scale.exp() * (logits[:, 1] - logits[:, 0])


@register_method("clip")
class CLIPBaseline(TwoTowerMethod):
    """CLIP: symmetric InfoNCE between global brain and text embeddings, learnable temperature (init 1/0.07)."""

    objective = "clip"


@register_method("siglip")
class SigLIPBaseline(TwoTowerMethod):
    """SigLIP: pairwise sigmoid loss between global brain and text embeddings (t = 10, b = −10 at start)."""

    objective = "siglip"


@register_method("fairclip")
class FairCLIPBaseline(TwoTowerMethod):
    """FairCLIP: CLIP + λ · Sinkhorn distance between batch and per-group similarity distributions
    (``fair_lambda`` 1e-4, ``fair_blur`` 1e-4; groups are the task's sensitive attribute)."""

    objective = "fairclip"
    model_defaults = {**BrainTextMethod.text_defaults, "fair_lambda": 1e-4, "fair_blur": 1e-4}

    def fit(self, task: Task, train: np.ndarray, val: np.ndarray | None = None) -> FairCLIPBaseline:
        if task.groups is None:
            raise BrainAlignError("fairclip needs a sensitive attribute (benchmark --sensitive COLUMN)")
        return super().fit(task, train, val)


@register_method("neurolip-no-attn")
class NeuroLIPNoAttention(NeuroLIP):
    """Table 2 ablation: NeuroLIP without the attention-distance loss L_attn."""

    model_defaults = {**NeuroLIP.model_defaults, "attention_loss": False}


@register_method("neurolip-no-neg")
class NeuroLIPNoNegative(NeuroLIP):
    """Table 2 ablation: NeuroLIP without the negative gradient (sensitive CALT terms minimised like the others)."""

    model_defaults = {**NeuroLIP.model_defaults, "negative_gradient": False}


@register_method("neurolip-no-attn-no-neg")
class NeuroLIPNoFairness(NeuroLIP):
    """Table 2 ablation: NeuroLIP without L_attn and without the negative gradient."""

    model_defaults = {**NeuroLIP.model_defaults, "attention_loss": False, "negative_gradient": False}


#: Table 2's rows, added by ``brainalign benchmark --ablation``.
ABLATIONS = ["neurolip-no-attn", "neurolip-no-neg", "neurolip-no-attn-no-neg"]
