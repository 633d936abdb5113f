"""Alignment objectives (pure torch, batched): CLIP and SigLIP (global), NeuroLIP's TTCA + CALT + attention
disentanglement + total loss with the negative gradient, and FairCLIP's Sinkhorn-penalised CLIP loss.

See METHODS §1.  Every loss raises :class:`~brainalign.errors.BrainAlignError` on bad input.
"""

from brainalign.objectives.calt import (
    TokenConditionedAttention,
    attention_distance,
    calt_confusion,
    calt_logits,
    calt_loss,
    neurolip_total_loss,
    token_node_attention,
)
from brainalign.objectives.contrastive import (
    ClipTemperature,
    LearnableTemperature,
    SigmoidTemperatureBias,
    clip_logits,
    clip_loss,
    identical_text_positives,
    siglip_logits,
    siglip_loss,
)
from brainalign.objectives.domain import DomainClassifier, GradientReversal, dann_alpha, domain_loss, grad_reverse
from brainalign.objectives.fair import fairclip_loss, fairclip_penalty, sinkhorn_divergence
from brainalign.objectives.vq import CosineVectorQuantizer, QuantizerOutput, code_usage

__all__ = [
    "ClipTemperature",
    "CosineVectorQuantizer",
    "DomainClassifier",
    "GradientReversal",
    "QuantizerOutput",
    "code_usage",
    "dann_alpha",
    "domain_loss",
    "grad_reverse",
    "LearnableTemperature",
    "SigmoidTemperatureBias",
    "TokenConditionedAttention",
    "attention_distance",
    "calt_confusion",
    "calt_logits",
    "calt_loss",
    "clip_logits",
    "clip_loss",
    "fairclip_loss",
    "fairclip_penalty",
    "identical_text_positives",
    "neurolip_total_loss",
    "siglip_logits",
    "siglip_loss",
    "sinkhorn_divergence",
    "token_node_attention",
]
