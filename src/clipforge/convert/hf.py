"""Hugging Face ``CLIPModel`` <-> clipforge: pure config and state-dict mappings (no I/O here)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import ModelConfig, PreprocessConfig, TextConfig, VisionConfig

StateDict = dict[str, torch.Tensor]

_HF_ACT = {"quick_gelu": "quick_gelu", "gelu": "gelu"}

# Per-block parameter names: ours -> HF (q/k/v are fused on our side and handled separately).
_BLOCK = {
    "norm1.weight": "layer_norm1.weight",
    "norm1.bias": "layer_norm1.bias",
    "norm2.weight": "layer_norm2.weight",
    "norm2.bias": "layer_norm2.bias",
    "attn.proj.weight": "self_attn.out_proj.weight",
    "attn.proj.bias": "self_attn.out_proj.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_TOWERS = {"visual.transformer": "vision_model.encoder", "text.transformer": "text_model.encoder"}
_OTHER = {
    "visual.patch_embed.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.cls_token": "vision_model.embeddings.class_embedding",
    "visual.pos_embed": "vision_model.embeddings.position_embedding.weight",
    "visual.norm_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.norm_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.norm_post.weight": "vision_model.post_layernorm.weight",
    "visual.norm_post.bias": "vision_model.post_layernorm.bias",
    "text.token_embed.weight": "text_model.embeddings.token_embedding.weight",
    "text.pos_embed": "text_model.embeddings.position_embedding.weight",
    "text.norm_final.weight": "text_model.final_layer_norm.weight",
    "text.norm_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_PROJ = {"visual.proj": "visual_projection.weight", "text.proj": "text_projection.weight"}


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """A clipforge config from a ``CLIPConfig`` dict (``config.json``). Only ViT towers exist in HF CLIP."""
    v, t = hf["vision_config"], hf["text_config"]
    acts = {v.get("hidden_act", "quick_gelu"), t.get("hidden_act", "quick_gelu")}
    if len(acts) != 1 or next(iter(acts)) not in _HF_ACT:
        raise ValueError(f"unsupported activation(s) {sorted(acts)}: clipforge maps 'gelu' and 'quick_gelu'")
    for tower in (v, t):
        if tower["hidden_size"] % tower["num_attention_heads"]:
            raise ValueError("hidden_size is not a multiple of num_attention_heads")
    return ModelConfig(
        embed_dim=hf.get("projection_dim", 512),
        act=_HF_ACT[acts.pop()],
        init_logit_scale=hf.get("logit_scale_init_value", math.log(1 / 0.07)),
        vision=VisionConfig(
            kind="vit",
            image_size=v["image_size"],
            patch_size=v["patch_size"],
            width=v["hidden_size"],
            layers=v["num_hidden_layers"],
            head_width=v["hidden_size"] // v["num_attention_heads"],
            mlp_ratio=v["intermediate_size"] / v["hidden_size"],
        ),
        text=TextConfig(
            context_length=t["max_position_embeddings"],
            vocab_size=t["vocab_size"],
            width=t["hidden_size"],
            layers=t["num_hidden_layers"],
            head_width=t["hidden_size"] // t["num_attention_heads"],
            mlp_ratio=t["intermediate_size"] / t["hidden_size"],
        ),
        preprocess=PreprocessConfig(),
    ).validate()


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    if cfg.vision.kind != "vit":
        raise ValueError("Hugging Face CLIPModel has no ResNet image tower; only ViT models can be exported")
    v, t = cfg.vision, cfg.text
    return {
        "model_type": "clip",
        "architectures": ["CLIPModel"],
        "projection_dim": cfg.embed_dim,
        "logit_scale_init_value": cfg.init_logit_scale,
        "vision_config": {
            "hidden_size": v.width,
            "intermediate_size": int(v.width * v.mlp_ratio),
            "num_hidden_layers": v.layers,
            "num_attention_heads": v.heads,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "hidden_act": cfg.act,
            "projection_dim": cfg.embed_dim,
        },
        "text_config": {
            "hidden_size": t.width,
            "intermediate_size": int(t.width * t.mlp_ratio),
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length,
            "vocab_size": t.vocab_size,
            "hidden_act": cfg.act,
            "projection_dim": cfg.embed_dim,
            "bos_token_id": t.vocab_size - 2,
            "eos_token_id": t.vocab_size - 1,
            "pad_token_id": 0,
        },
    }


def _block_ids(keys: list[str], prefix: str) -> list[int]:
    """Indices ``i`` of the keys ``{prefix}.{i}.*``."""
    return sorted({int(k[len(prefix) + 1 :].split(".")[0]) for k in keys if k.startswith(prefix + ".")})


def from_hf(sd: StateDict) -> StateDict:
    """HF ``CLIPModel`` state dict -> clipforge state dict. Unknown keys are returned unmapped (and so
    rejected by the strict loader), apart from HF's constant ``position_ids`` buffers."""
    out: StateDict = {}
    rest = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    for ours, theirs in _OTHER.items():
        if theirs in rest:
            out[ours] = rest.pop(theirs)
    for ours, theirs in _PROJ.items():
        if theirs in rest:
            out[ours] = rest.pop(theirs).t().contiguous()  # Linear (embed, width) -> matrix (width, embed)
    for ours_prefix, hf_prefix in _TOWERS.items():
        for i in _block_ids(list(rest), hf_prefix + ".layers"):
            src, dst = f"{hf_prefix}.layers.{i}.", f"{ours_prefix}.blocks.{i}."
            for o, h in _BLOCK.items():
                out[dst + o] = rest.pop(src + h)
            for kind in ("weight", "bias"):
                out[dst + f"attn.qkv.{kind}"] = torch.cat(
                    [rest.pop(src + f"self_attn.{p}_proj.{kind}") for p in "qkv"], dim=0
                )  # (3 * width, ...)
    out.update(rest)
    return out


def to_hf(sd: StateDict) -> StateDict:
    """clipforge state dict (ViT model) -> HF ``CLIPModel`` state dict."""
    out: StateDict = {}
    rest = dict(sd)
    for ours, theirs in _OTHER.items():
        if ours in rest:
            out[theirs] = rest.pop(ours)
    for ours, theirs in _PROJ.items():
        out[theirs] = rest.pop(ours).t().contiguous()
    for ours_prefix, hf_prefix in _TOWERS.items():
        for i in _block_ids(list(rest), ours_prefix + ".blocks"):
            src, dst = f"{ours_prefix}.blocks.{i}.", f"{hf_prefix}.layers.{i}."
            for o, h in _BLOCK.items():
                out[dst + h] = rest.pop(src + o)
            for kind in ("weight", "bias"):
                q, k, v = rest.pop(src + f"attn.qkv.{kind}").chunk(3, dim=0)
                out[dst + f"self_attn.q_proj.{kind}"] = q.contiguous()
                out[dst + f"self_attn.k_proj.{kind}"] = k.contiguous()
                out[dst + f"self_attn.v_proj.{kind}"] = v.contiguous()
    if rest:
        raise ValueError(f"no Hugging Face name for: {', '.join(sorted(rest))}")
    return out
