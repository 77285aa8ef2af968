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


# transformers' CLIPVisionConfig / CLIPTextConfig defaults, for config.json files that omit keys.
_HF_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "num_channels": 3,
}
_HF_TEXT_DEFAULTS = {
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "eos_token_id": 2,
}
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """A clipforge config from a ``CLIPConfig`` dict (``config.json``). Only ViT towers exist in HF CLIP.

    Anything that would make clipforge compute something else is a ``ValueError``: another model type,
    an activation other than GELU/QuickGELU, a LayerNorm epsilon other than 1e-5, or text features read
    at an end token that is not the largest id (clipforge pools at ``argmax``, as OpenAI does)."""
    if hf.get("model_type", "clip") != "clip":
        raise ValueError(f"model_type {hf.get('model_type')!r} is not a Hugging Face CLIPModel ('clip')")
    v = {**_HF_VISION_DEFAULTS, **(hf.get("vision_config") or {})}
    t = {**_HF_TEXT_DEFAULTS, **(hf.get("text_config") or {})}
    acts = {v["hidden_act"], t["hidden_act"]}
    if len(acts) != 1 or next(iter(acts)) not in _HF_ACT:
        raise ValueError(f"unsupported activation(s) {sorted(acts)}: clipforge maps 'gelu' and 'quick_gelu'")
    for name, tower in (("vision_config", v), ("text_config", t)):
        if tower["hidden_size"] % tower["num_attention_heads"]:
            raise ValueError(f"{name}: hidden_size is not a multiple of num_attention_heads")
        if not math.isclose(tower["layer_norm_eps"], 1e-5):
            raise ValueError(
                f"{name}: layer_norm_eps {tower['layer_norm_eps']} is not supported (clipforge uses 1e-5)"
            )
    if v["num_channels"] != 3:
        raise ValueError(f"vision_config.num_channels {v['num_channels']} is not supported (RGB only)")
    eos = t["eos_token_id"]
    if eos not in (2, t["vocab_size"] - 1):  # 2: legacy configs, where transformers pools at argmax too
        raise ValueError(
            f"text_config.eos_token_id {eos} is not the largest token id ({t['vocab_size'] - 1}); "
            "clipforge reads text features at the largest id"
        )
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


def preprocess_from_hf(pp: dict[str, Any], *, image_size: int) -> PreprocessConfig:
    """``preprocessor_config.json`` (``CLIPImageProcessor``) -> ours. The crop must be the model's size."""
    crop = _hf_size(pp.get("crop_size", image_size)) if pp.get("do_center_crop", True) else None
    size = pp.get("size", {"shortest_edge": image_size})
    if isinstance(size, dict) and "shortest_edge" in size:
        resize_mode, final = "shortest", crop if crop is not None else size["shortest_edge"]
        if crop is not None and size["shortest_edge"] != crop:
            raise ValueError(
                f"resize to {size['shortest_edge']} then crop {crop} is not supported (equal sizes only)"
            )
    else:
        resize_mode, final = "squash", _hf_size(size)
    if final != image_size:
        raise ValueError(f"preprocessor image size {final} differs from the model's image_size {image_size}")
    resample = pp.get("resample", 3)
    if resample not in _PIL_RESAMPLE:
        raise ValueError(f"resample={resample} is not supported (2 bilinear, 3 bicubic)")
    if not pp.get("do_rescale", True) or not math.isclose(pp.get("rescale_factor", 1 / 255), 1 / 255):
        raise ValueError("only rescaling by 1/255 is supported")
    defaults = PreprocessConfig()
    mean, std = pp.get("image_mean", defaults.mean), pp.get("image_std", defaults.std)
    if not pp.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    out = PreprocessConfig(
        mean=tuple(mean),
        std=tuple(std),
        interpolation=_PIL_RESAMPLE[resample],  # type: ignore[arg-type]
        resize_mode=resize_mode,
    )
    out.validate()
    return out


def preprocess_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """A ``CLIPImageProcessor`` config reproducing ``cfg.preprocess`` at ``cfg.vision.image_size``."""
    p, s = cfg.preprocess, cfg.vision.image_size
    shortest = p.resize_mode == "shortest"
    return {
        "image_processor_type": "CLIPImageProcessor",
        "processor_class": "CLIPProcessor",
        "do_resize": True,
        "size": {"shortest_edge": s} if shortest else {"height": s, "width": s},
        "resample": {v: k for k, v in _PIL_RESAMPLE.items()}[p.interpolation],
        "do_center_crop": shortest,
        "crop_size": {"height": s, "width": s},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(p.mean),
        "image_std": list(p.std),
        "do_convert_rgb": True,
    }


def _hf_size(size: Any) -> int:
    if isinstance(size, int):
        return size
    if isinstance(size, dict) and size.get("height") == size.get("width") and size.get("height"):
        return int(size["height"])
    raise ValueError(f"unsupported image size {size!r} (square sizes only)")


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """A ``CLIPConfig`` dict for ``cfg``; ResNet towers and a sigmoid-loss bias have no HF counterpart."""
    if cfg.vision.kind != "vit":
        raise ValueError("Hugging Face CLIPModel has no ResNet image tower; only ViT models can be exported")
    if cfg.vision.pool != "cls" or not cfg.text.causal or cfg.text.pool != "eot":
        raise ValueError("a SigLIP-style model is exported as a Hugging Face SiglipModel, not a CLIPModel")
    v, t = cfg.vision, cfg.text
    if cfg.act not in _HF_ACT or not math.isclose(cfg.norm_eps, 1e-5) or not v.norm_pre or v.patch_bias \
            or not v.project or t.proj_bias:
        raise ValueError(
            "Hugging Face CLIPModel holds OpenAI's layout only (GELU/QuickGELU, LayerNorm eps 1e-5, pre-norm, "
            "no patch or projection biases); this model differs"
        )
    if cfg.init_logit_bias is not None:
        raise ValueError(
            "Hugging Face CLIPModel has no logit_bias; a sigmoid-loss model cannot be exported to it"
        )
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
        blocks_from_hf(rest, out, hf_prefix=hf_prefix, ours_prefix=ours_prefix)
    out.update(rest)
    return out


def blocks_from_hf(rest: StateDict, out: StateDict, *, hf_prefix: str, ours_prefix: str) -> None:
    """Move the encoder layers ``{hf_prefix}.layers.i.*`` of ``rest`` into ``out`` as our
    ``{ours_prefix}.blocks.i.*`` (q/k/v fused). Shared by every HF format with CLIP-style layers."""
    for i in _block_ids(list(rest), hf_prefix + ".layers"):
        src, dst = f"{hf_prefix}.layers.{i}.", f"{ours_prefix}.blocks.{i}."
        for o, h in _BLOCK.items():
            out[dst + o] = rest.pop(src + h)
        for kind in ("weight", "bias"):
            out[dst + f"attn.qkv.{kind}"] = torch.cat(
                [rest.pop(src + f"self_attn.{p}_proj.{kind}") for p in "qkv"], dim=0
            )  # (3 * width, ...)


def blocks_to_hf(rest: StateDict, out: StateDict, *, ours_prefix: str, hf_prefix: str) -> None:
    """Inverse of :func:`blocks_from_hf`."""
    for i in _block_ids(list(rest), ours_prefix + ".blocks"):
        src, dst = f"{ours_prefix}.blocks.{i}.", f"{hf_prefix}.layers.{i}."
        for o, h in _BLOCK.items():
            out[dst + h] = rest.pop(src + o)
        for kind in ("weight", "bias"):
            q, k, v = rest.pop(src + f"attn.qkv.{kind}").chunk(3, dim=0)
            out[dst + f"self_attn.q_proj.{kind}"] = q.contiguous()
            out[dst + f"self_attn.k_proj.{kind}"] = k.contiguous()
            out[dst + f"self_attn.v_proj.{kind}"] = v.contiguous()


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
        blocks_to_hf(rest, out, ours_prefix=ours_prefix, hf_prefix=hf_prefix)
    if rest:
        raise ValueError(f"no Hugging Face name for: {', '.join(sorted(rest))}")
    return out
