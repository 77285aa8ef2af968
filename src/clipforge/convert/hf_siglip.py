"""Hugging Face ``SiglipModel`` / ``Siglip2Model`` <-> clipforge: pure config and state-dict mappings.

``SiglipModel`` (``model_type="siglip"``) holds SigLIP and the fixed-resolution SigLIP 2 checkpoints.
``Siglip2Model`` (``model_type="siglip2"``, NaFlex) embeds pre-cut patches with a linear layer and
resizes its position grid to each image's aspect ratio; clipforge imports it at its native square
grid (``sqrt(num_patches)`` patches a side), where the resize is the identity and the linear patch
embedding is a convolution: square images then give exactly Siglip2Model's embeddings.
Aspect-preserving variable resolution is not supported. Export always writes a ``SiglipModel``.

The module is a :class:`~.adapters.FormatAdapter`; the encoder layers and tower config keys are
:mod:`.hf`'s.
"""

from __future__ import annotations

import math
from typing import Any

from ..config import ModelConfig, PreprocessConfig, TextConfig, VisionConfig
from . import hf
from .adapters import StateDict, check_all_mapped, inverse, refuse_family_options, take, weights_and_biases

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
    "visual.attn_pool.attn.qkv.weight": "vision_model.head.attention.in_proj_weight",
    "visual.attn_pool.attn.qkv.bias": "vision_model.head.attention.in_proj_bias",
    "text.token_embed.weight": "text_model.embeddings.token_embedding.weight",
    "text.pos_embed": "text_model.embeddings.position_embedding.weight",
    "text.proj_bias": "text_model.head.bias",
    **weights_and_biases(
        {
            "visual.norm_post": "vision_model.post_layernorm",
            "visual.attn_pool.attn.proj": "vision_model.head.attention.out_proj",
            "visual.attn_pool.norm": "vision_model.head.layernorm",
            "visual.attn_pool.mlp.fc1": "vision_model.head.mlp.fc1",
            "visual.attn_pool.mlp.fc2": "vision_model.head.mlp.fc2",
            "text.norm_final": "text_model.final_layer_norm",
        }
    ),
}
_PATCH = "vision_model.embeddings.patch_embedding.weight"
_PROBE = "vision_model.head.probe"
_TEXT_HEAD = "text_model.head.weight"
_SCALARS = ("logit_scale", "logit_bias")
_PREPROCESS = PreprocessConfig(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="squash")


def is_siglip(data: dict[str, Any]) -> bool:
    """A ``config.json`` of SigLIP's Hugging Face classes."""
    return data.get("model_type") in MODEL_TYPES


def config_from(
    data: dict[str, Any], *, name: str = "", preprocess: dict[str, Any] | None = None
) -> ModelConfig:
    """A clipforge config from a ``SiglipConfig``/``Siglip2Config`` dict (``config.json``) and, when
    given, a ``preprocessor_config.json`` dict.

    Anything clipforge would compute differently is a ``ValueError``: no attention-pooling head,
    different activations or LayerNorm epsilons in the two towers, a text projection whose size is
    not the image width, non-RGB input, a non-square position grid (NaFlex)."""
    model_type = data.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not a Hugging Face SiglipModel/Siglip2Model")
    v, t, act = hf.read_towers(data, _VISION_DEFAULTS, _TEXT_DEFAULTS, acts=_ACT)
    eps = {float(v["layer_norm_eps"]), float(t["layer_norm_eps"])}
    if len(eps) != 1:
        raise ValueError(f"the towers' layer_norm_eps differ ({sorted(eps)}); clipforge uses one")
    if not v["vision_use_head"]:
        raise ValueError("vision_config.vision_use_head is false: a SigLIP image tower without its pooling head")
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
        act=act,  # type: ignore[arg-type]
        norm_eps=eps.pop(),
        init_logit_scale=SIGLIP_INIT_SCALE,
        init_logit_bias=SIGLIP_INIT_BIAS,
        vision=VisionConfig(
            kind="vit",
            image_size=image_size,
            patch_size=patch,
            **hf.tower_from_hf(v),
            pool="map",
            norm_pre=False,
            patch_bias=True,
            project=False,
        ),
        text=TextConfig(**hf.text_tower_from_hf(t), causal=False, pool="last", proj_bias=True),
        preprocess=_PREPROCESS if preprocess is None else preprocess_from(preprocess, image_size=image_size),
        name=name,
    ).validate()


def preprocess_from(pp: dict[str, Any], *, image_size: int) -> PreprocessConfig:
    """``preprocessor_config.json`` of a ``SiglipImageProcessor`` (resize both sides, no crop) or a
    NaFlex ``Siglip2ImageProcessor`` (imported at the model's square size) -> ours."""
    if "max_num_patches" in pp:  # NaFlex: the image is resized to whole patches, here the native grid
        pp = {k: v for k, v in pp.items() if k not in ("max_num_patches", "patch_size", "size")}
        pp["size"] = {"height": image_size, "width": image_size}
    return hf.preprocess_from({"do_center_crop": False, "resample": 3, **pp}, image_size=image_size)


def preprocess_to(cfg: ModelConfig) -> dict[str, Any]:
    """A ``SiglipImageProcessor`` config reproducing ``cfg.preprocess`` (squash resize only)."""
    if cfg.preprocess.resize_mode != "squash":
        raise ValueError("SiglipImageProcessor resizes both sides (resize_mode='squash'); this model crops")
    s = cfg.vision.image_size
    return {**hf.image_processor(cfg, family="Siglip"), "size": {"height": s, "width": s}}


def config_to(cfg: ModelConfig) -> dict[str, Any]:
    """A ``SiglipConfig`` dict for a SigLIP-layout ``cfg``; anything else is a ``ValueError``. The text
    config's ``pad_token_id``/``eos_token_id`` are 1, for the exporter to set from the tokenizer."""
    refuse_family_options(cfg, "Hugging Face SiglipModel")
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
            **hf.tower_to_hf(v),
            "num_channels": 3,
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "vision_use_head": True,
        },
        "text_config": {
            **common,
            "model_type": "siglip_text_model",
            **hf.tower_to_hf(t),
            "max_position_embeddings": t.context_length,
            "vocab_size": t.vocab_size,
            "projection_size": cfg.embed_dim,
            "pad_token_id": 1,
            "eos_token_id": 1,
            "bos_token_id": None,
        },
    }


def state_dict_from(sd: StateDict) -> StateDict:
    """HF ``SiglipModel``/``Siglip2Model`` state dict -> clipforge's. Unknown keys are returned
    unmapped (and so rejected by the strict loader), apart from HF's constant ``position_ids``."""
    out, rest = take(hf.without_position_ids(sd), inverse(_OTHER))
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
    hf.encoders_from_hf(rest, out)
    return out | rest  # unmapped keys as they are: the strict loader names them


def state_dict_to(sd: StateDict) -> StateDict:
    """clipforge state dict (SigLIP layout) -> HF ``SiglipModel`` state dict."""
    out, rest = take(sd, _OTHER)
    out[_PATCH] = rest.pop("visual.patch_embed.weight")
    out[_PROBE] = rest.pop("visual.attn_pool.probe").reshape(1, 1, -1)
    out[_TEXT_HEAD] = rest.pop("text.proj").t().contiguous()
    for key in _SCALARS:
        out[key] = rest.pop(key).reshape(1)
    hf.encoders_to_hf(rest, out)
    check_all_mapped(rest, "Hugging Face SiglipModel")
    return out


def _square(value: Any, what: str) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        return int(value[0])
    raise ValueError(f"{what} {value!r} is not supported (square sizes only)")


config_to_hf, to_hf = config_to, state_dict_to  # the names benchmarks/bench_siglip.py imports
