"""Hugging Face ``SiglipModel`` / ``Siglip2Model`` <-> clipforge: pure config and state-dict mappings.

``SiglipModel`` (``model_type="siglip"``) holds SigLIP and the fixed-resolution SigLIP 2 checkpoints.
``Siglip2Model`` (``model_type="siglip2"``, NaFlex) embeds pre-cut patches with a linear layer and
resizes its position grid to each image's aspect ratio; clipforge imports it at its native square
grid (``sqrt(num_patches)`` patches a side), where the resize is the identity and the linear patch
embedding is a convolution: square images then give exactly Siglip2Model's embeddings.
Aspect-preserving variable resolution is not supported. Export always writes a ``SiglipModel``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import ModelConfig, PreprocessConfig, TextConfig, VisionConfig
from .hf import _PIL_RESAMPLE, blocks_from_hf, blocks_to_hf, preprocess_from_hf

StateDict = dict[str, torch.Tensor]

MODEL_TYPES = ("siglip", "siglip2")
SIGLIP_INIT_SCALE = math.log(10.0)  # big_vision's initial temperature and bias; the weights override them
SIGLIP_INIT_BIAS = -10.0
_ACT = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}
_ACT_TO_HF = {"gelu_tanh": "gelu_pytorch_tanh", "gelu": "gelu", "quick_gelu": "quick_gelu"}

# transformers' SiglipVisionConfig / SiglipTextConfig defaults, for config.json files that omit keys.
_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_channels": 3,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "vision_use_head": True,
    "num_patches": 256,
}
_TEXT_DEFAULTS = {
    "vocab_size": 32000,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 64,
    "hidden_act": "gelu_pytorch_tanh",
    "layer_norm_eps": 1e-6,
    "projection_size": None,
}

_OTHER = {
    "visual.patch_embed.bias": "vision_model.embeddings.patch_embedding.bias",
    "visual.pos_embed": "vision_model.embeddings.position_embedding.weight",
    "visual.norm_post.weight": "vision_model.post_layernorm.weight",
    "visual.norm_post.bias": "vision_model.post_layernorm.bias",
    "visual.attn_pool.attn.qkv.weight": "vision_model.head.attention.in_proj_weight",
    "visual.attn_pool.attn.qkv.bias": "vision_model.head.attention.in_proj_bias",
    "visual.attn_pool.attn.proj.weight": "vision_model.head.attention.out_proj.weight",
    "visual.attn_pool.attn.proj.bias": "vision_model.head.attention.out_proj.bias",
    "visual.attn_pool.norm.weight": "vision_model.head.layernorm.weight",
    "visual.attn_pool.norm.bias": "vision_model.head.layernorm.bias",
    "visual.attn_pool.mlp.fc1.weight": "vision_model.head.mlp.fc1.weight",
    "visual.attn_pool.mlp.fc1.bias": "vision_model.head.mlp.fc1.bias",
    "visual.attn_pool.mlp.fc2.weight": "vision_model.head.mlp.fc2.weight",
    "visual.attn_pool.mlp.fc2.bias": "vision_model.head.mlp.fc2.bias",
    "text.token_embed.weight": "text_model.embeddings.token_embedding.weight",
    "text.pos_embed": "text_model.embeddings.position_embedding.weight",
    "text.norm_final.weight": "text_model.final_layer_norm.weight",
    "text.norm_final.bias": "text_model.final_layer_norm.bias",
    "text.proj_bias": "text_model.head.bias",
}
_TOWERS = {"visual.transformer": "vision_model.encoder", "text.transformer": "text_model.encoder"}
_PATCH = "vision_model.embeddings.patch_embedding.weight"
_PROBE = "vision_model.head.probe"
_TEXT_HEAD = "text_model.head.weight"
_SCALARS = ("logit_scale", "logit_bias")


def is_siglip(hf: dict[str, Any]) -> bool:
    return hf.get("model_type") in MODEL_TYPES


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """A clipforge config from a ``SiglipConfig``/``Siglip2Config`` dict (``config.json``).

    Anything clipforge would compute differently is a ``ValueError``: no attention-pooling head,
    different activations or LayerNorm epsilons in the two towers, a text projection whose size is
    not the image width, non-RGB input, a non-square position grid (NaFlex)."""
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not a Hugging Face SiglipModel/Siglip2Model")
    v = {**_VISION_DEFAULTS, **(hf.get("vision_config") or {})}
    t = {**_TEXT_DEFAULTS, **(hf.get("text_config") or {})}
    acts = {v["hidden_act"], t["hidden_act"]}
    if len(acts) != 1 or next(iter(acts)) not in _ACT:
        raise ValueError(f"unsupported activation(s) {sorted(acts)}: clipforge maps {', '.join(sorted(_ACT))}")
    eps = {float(v["layer_norm_eps"]), float(t["layer_norm_eps"])}
    if len(eps) != 1:
        raise ValueError(f"the towers' layer_norm_eps differ ({sorted(eps)}); clipforge uses one")
    if not v["vision_use_head"]:
        raise ValueError("vision_config.vision_use_head is false: a SigLIP image tower without its pooling head")
    if v["num_channels"] != 3:
        raise ValueError(f"vision_config.num_channels {v['num_channels']} is not supported (RGB only)")
    for name, tower in (("vision_config", v), ("text_config", t)):
        if tower["hidden_size"] % tower["num_attention_heads"]:
            raise ValueError(f"{name}: hidden_size is not a multiple of num_attention_heads")
    patch = _square(v["patch_size"], "vision_config.patch_size")
    if model_type == "siglip2":
        grid = math.isqrt(v["num_patches"])
        if grid * grid != v["num_patches"]:
            raise ValueError(
                f"vision_config.num_patches {v['num_patches']} is not a square grid; clipforge imports "
                "NaFlex checkpoints at their native square resolution only"
            )
        image_size = grid * patch
    else:
        image_size = _square(v["image_size"], "vision_config.image_size")
    embed = t["projection_size"] or t["hidden_size"]
    if embed != v["hidden_size"]:
        raise ValueError(
            f"text projection_size {embed} differs from the image width {v['hidden_size']} (the image "
            "tower has no projection)"
        )
    return ModelConfig(
        embed_dim=embed,
        act=_ACT[acts.pop()],  # type: ignore[arg-type]
        norm_eps=eps.pop(),
        init_logit_scale=SIGLIP_INIT_SCALE,
        init_logit_bias=SIGLIP_INIT_BIAS,
        vision=VisionConfig(
            kind="vit",
            image_size=image_size,
            patch_size=patch,
            width=v["hidden_size"],
            layers=v["num_hidden_layers"],
            head_width=v["hidden_size"] // v["num_attention_heads"],
            mlp_ratio=v["intermediate_size"] / v["hidden_size"],
            pool="map",
            norm_pre=False,
            patch_bias=True,
            project=False,
        ),
        text=TextConfig(
            context_length=t["max_position_embeddings"],
            vocab_size=t["vocab_size"],
            width=t["hidden_size"],
            layers=t["num_hidden_layers"],
            head_width=t["hidden_size"] // t["num_attention_heads"],
            mlp_ratio=t["intermediate_size"] / t["hidden_size"],
            causal=False,
            pool="last",
            proj_bias=True,
        ),
        preprocess=PreprocessConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="squash"),
    ).validate()


def preprocess_from_hf_siglip(pp: dict[str, Any], *, image_size: int) -> PreprocessConfig:
    """``preprocessor_config.json`` of a ``SiglipImageProcessor`` (resize both sides, no crop) or a
    NaFlex ``Siglip2ImageProcessor`` (imported at the model's square size) -> ours."""
    if "max_num_patches" in pp:  # NaFlex: the image is resized to whole patches, here the native grid
        pp = {k: v for k, v in pp.items() if k not in ("max_num_patches", "patch_size", "size")}
        pp["size"] = {"height": image_size, "width": image_size}
    return preprocess_from_hf({"do_center_crop": False, "resample": 3, **pp}, image_size=image_size)


def preprocess_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """A ``SiglipImageProcessor`` config reproducing ``cfg.preprocess`` (squash resize only)."""
    p, s = cfg.preprocess, cfg.vision.image_size
    if p.resize_mode != "squash":
        raise ValueError("SiglipImageProcessor resizes both sides (resize_mode='squash'); this model crops")
    return {
        "image_processor_type": "SiglipImageProcessor",
        "processor_class": "SiglipProcessor",
        "do_resize": True,
        "size": {"height": s, "width": s},
        "resample": {v: k for k, v in _PIL_RESAMPLE.items()}[p.interpolation],
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(p.mean),
        "image_std": list(p.std),
        "do_convert_rgb": True,
    }


def config_to_hf(cfg: ModelConfig, *, pad_token_id: int = 1, eos_token_id: int = 1) -> dict[str, Any]:
    """A ``SiglipConfig`` dict for a SigLIP-layout ``cfg``; anything else is a ``ValueError``."""
    v, t = cfg.vision, cfg.text
    layout = {
        "a ViT image tower": v.kind == "vit",
        "attention pooling (vision.pool='map')": v.pool == "map",
        "no pre-norm (vision.norm_pre=false)": not v.norm_pre,
        "a patch-embedding bias": v.patch_bias,
        "no image projection (vision.project=false)": not v.project,
        "bidirectional text attention (text.causal=false)": not t.causal,
        "text read at the last position (text.pool='last')": t.pool == "last",
        "a text projection bias": t.proj_bias,
        "a logit bias": cfg.init_logit_bias is not None,
    }
    missing = [k for k, ok in layout.items() if not ok]
    if missing:
        raise ValueError("a Hugging Face SiglipModel needs " + ", ".join(missing))
    if cfg.act not in _ACT_TO_HF:
        raise ValueError(f"activation {cfg.act!r} has no SiglipModel counterpart")
    common = {"hidden_act": _ACT_TO_HF[cfg.act], "layer_norm_eps": cfg.norm_eps, "attention_dropout": 0.0}
    return {
        "model_type": "siglip",
        "architectures": ["SiglipModel"],
        "initializer_factor": 1.0,
        "vision_config": {
            **common,
            "model_type": "siglip_vision_model",
            "hidden_size": v.width,
            "intermediate_size": int(v.width * v.mlp_ratio),
            "num_hidden_layers": v.layers,
            "num_attention_heads": v.heads,
            "num_channels": 3,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "vision_use_head": True,
        },
        "text_config": {
            **common,
            "model_type": "siglip_text_model",
            "hidden_size": t.width,
            "intermediate_size": int(t.width * t.mlp_ratio),
            "num_hidden_layers": t.layers,
            "num_attention_heads": t.heads,
            "max_position_embeddings": t.context_length,
            "vocab_size": t.vocab_size,
            "projection_size": cfg.embed_dim,
            "pad_token_id": pad_token_id,
            "eos_token_id": eos_token_id,
            "bos_token_id": None,
        },
    }


def from_hf(sd: StateDict) -> StateDict:
    """HF ``SiglipModel``/``Siglip2Model`` state dict -> clipforge's. Unknown keys are returned
    unmapped (and so rejected by the strict loader), apart from HF's constant ``position_ids``."""
    out: StateDict = {}
    rest = {k: v for k, v in sd.items() if not k.endswith("position_ids")}
    for ours, theirs in _OTHER.items():
        if theirs in rest:
            out[ours] = rest.pop(theirs)
    if _PATCH in rest:
        w = rest.pop(_PATCH)
        if w.ndim == 2:  # Siglip2: Linear over patches flattened as (row, col, channel)
            width, n = w.shape
            patch = math.isqrt(n // 3)
            w = w.view(width, patch, patch, 3).permute(0, 3, 1, 2).contiguous()  # (width, 3, p, p)
        out["visual.patch_embed.weight"] = w
    if _PROBE in rest:
        out["visual.attn_pool.probe"] = rest.pop(_PROBE).reshape(-1)  # (1, 1, C) -> (C,)
    if _TEXT_HEAD in rest:
        out["text.proj"] = rest.pop(_TEXT_HEAD).t().contiguous()  # Linear (embed, width) -> (width, embed)
    for key in _SCALARS:
        if key in rest:
            out[key] = rest.pop(key).reshape(())
    for ours_prefix, hf_prefix in _TOWERS.items():
        blocks_from_hf(rest, out, hf_prefix=hf_prefix, ours_prefix=ours_prefix)
    out.update(rest)
    return out


def to_hf(sd: StateDict) -> StateDict:
    """clipforge state dict (SigLIP layout) -> HF ``SiglipModel`` state dict."""
    out: StateDict = {}
    rest = dict(sd)
    for ours, theirs in _OTHER.items():
        if ours in rest:
            out[theirs] = rest.pop(ours)
    out[_PATCH] = rest.pop("visual.patch_embed.weight")
    out[_PROBE] = rest.pop("visual.attn_pool.probe").reshape(1, 1, -1)
    out[_TEXT_HEAD] = rest.pop("text.proj").t().contiguous()
    for key in _SCALARS:
        out[key] = rest.pop(key).reshape(1)
    for ours_prefix, hf_prefix in _TOWERS.items():
        blocks_to_hf(rest, out, ours_prefix=ours_prefix, hf_prefix=hf_prefix)
    if rest:
        raise ValueError(f"no Hugging Face SiglipModel name for: {', '.join(sorted(rest))}")
    return out


def _square(value: Any, what: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise ValueError(f"{what} {value!r} is not supported (square sizes only)")
