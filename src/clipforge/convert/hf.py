"""Hugging Face ``CLIPModel`` <-> clipforge: pure config and state-dict mappings (no I/O here).

The module is a :class:`~.adapters.FormatAdapter`. Its HF encoder conventions (layer names, tower
config keys) are shared with :mod:`.hf_siglip`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch

from ..config import ModelConfig, PreprocessConfig, TextConfig, VisionConfig
from .adapters import StateDict, check_all_mapped, inverse, refuse_family_options, take, weights_and_biases

_HF_ACT = {"quick_gelu": "quick_gelu", "gelu": "gelu"}

# Per-block parameter names: ours -> HF (q/k/v are fused on our side and handled separately).
_BLOCK = weights_and_biases(
    {
        "norm1": "layer_norm1",
        "norm2": "layer_norm2",
        "attn.proj": "self_attn.out_proj",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
    }
)
_TOWERS = {"visual.transformer": "vision_model.encoder", "text.transformer": "text_model.encoder"}
_OTHER = {
    "visual.patch_embed.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.cls_token": "vision_model.embeddings.class_embedding",
    "visual.pos_embed": "vision_model.embeddings.position_embedding.weight",
    "text.token_embed.weight": "text_model.embeddings.token_embedding.weight",
    "text.pos_embed": "text_model.embeddings.position_embedding.weight",
    "logit_scale": "logit_scale",
    **weights_and_biases(
        {
            "visual.norm_pre": "vision_model.pre_layrnorm",
            "visual.norm_post": "vision_model.post_layernorm",
            "text.norm_final": "text_model.final_layer_norm",
        }
    ),
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
# MetaClip2Config: CLIP's towers; its text config's end token defaults to 49407 (not CLIP's legacy 2).
_METACLIP2_TEXT_DEFAULTS = {**_HF_TEXT_DEFAULTS, "eos_token_id": 49407}
MODEL_TYPES = ("clip", "metaclip_2")
PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}


def config_from(
    hf: dict[str, Any], *, name: str = "", preprocess: dict[str, Any] | None = None
) -> ModelConfig:
    """A clipforge config from a ``CLIPConfig`` dict (``config.json``) and, when given, a
    ``preprocessor_config.json`` dict. Only ViT towers exist in HF CLIP.

    ``MetaClip2Model`` (``model_type: metaclip_2``, MetaCLIP 2) has the same towers and names, its
    text read at the first ``eos_token_id`` (``text.pool="eos"``).

    Anything that would make clipforge compute something else is a ``ValueError``: another model type,
    an activation other than GELU/QuickGELU, a LayerNorm epsilon other than 1e-5, or CLIP text features
    read at an end token that is not the largest id (clipforge pools at ``argmax``, as OpenAI does)."""
    model_type = hf.get("model_type", "clip")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type {model_type!r} is not a Hugging Face CLIPModel ('clip') or MetaClip2Model")
    metaclip2 = model_type == "metaclip_2"
    text_defaults = _METACLIP2_TEXT_DEFAULTS if metaclip2 else _HF_TEXT_DEFAULTS
    v, t, act = read_towers(hf, _HF_VISION_DEFAULTS, text_defaults, acts=_HF_ACT)
    for where, tower in (("vision_config", v), ("text_config", t)):
        if not math.isclose(tower["layer_norm_eps"], 1e-5):
            raise ValueError(
                f"{where}: layer_norm_eps {tower['layer_norm_eps']} is not supported (clipforge uses 1e-5)"
            )
    eos = t["eos_token_id"]
    if metaclip2 and not (isinstance(eos, int) and 0 <= eos < t["vocab_size"]):
        raise ValueError(f"text_config.eos_token_id {eos!r} is not one token id of the vocabulary")
    # CLIP: 2 is the legacy default, where transformers pools at argmax too
    if not metaclip2 and eos not in (2, t["vocab_size"] - 1):
        raise ValueError(
            f"text_config.eos_token_id {eos} is not the largest token id ({t['vocab_size'] - 1}); "
            "clipforge reads text features at the largest id"
        )
    image_size = v["image_size"]
    return ModelConfig(
        embed_dim=hf.get("projection_dim", 512),
        act=act,
        init_logit_scale=hf.get("logit_scale_init_value", math.log(1 / 0.07)),
        vision=VisionConfig(kind="vit", image_size=image_size, patch_size=v["patch_size"], **tower_from_hf(v)),
        text=TextConfig(**text_tower_from_hf(t), **({"pool": "eos", "eos_id": eos} if metaclip2 else {})),
        preprocess=PreprocessConfig() if preprocess is None else preprocess_from(preprocess, image_size=image_size),
        name=name,
    ).validate()


def read_towers(
    data: dict[str, Any], vision_defaults: dict[str, Any], text_defaults: dict[str, Any], *, acts: dict[str, str]
) -> tuple[dict[str, Any], dict[str, Any], str]:
    """``(vision_config, text_config, our activation)`` of an HF config dict, over transformers'
    defaults for omitted keys, checked for what every clipforge model needs: one activation in both
    towers that ``acts`` maps (HF name -> ours), whole attention heads and RGB input."""
    v = {**vision_defaults, **(data.get("vision_config") or {})}
    t = {**text_defaults, **(data.get("text_config") or {})}
    found = {v["hidden_act"], t["hidden_act"]}
    if len(found) != 1 or next(iter(found)) not in acts:
        raise ValueError(f"unsupported activation(s) {sorted(found)}: clipforge maps {', '.join(sorted(acts))}")
    for where, tower in (("vision_config", v), ("text_config", t)):
        if tower["hidden_size"] % tower["num_attention_heads"]:
            raise ValueError(f"{where}: hidden_size is not a multiple of num_attention_heads")
    if v["num_channels"] != 3:
        raise ValueError(f"vision_config.num_channels {v['num_channels']} is not supported (RGB only)")
    return v, t, acts[found.pop()]


def tower_from_hf(tower: dict[str, Any]) -> dict[str, Any]:
    """The shape of an HF encoder config (``vision_config``/``text_config``) as our tower fields."""
    width = tower["hidden_size"]
    return {
        "width": width,
        "layers": tower["num_hidden_layers"],
        "head_width": width // tower["num_attention_heads"],
        "mlp_ratio": tower["intermediate_size"] / width,
    }


def text_tower_from_hf(t: dict[str, Any]) -> dict[str, Any]:
    """:func:`tower_from_hf` plus the text tower's context length and vocabulary."""
    return {"context_length": t["max_position_embeddings"], "vocab_size": t["vocab_size"], **tower_from_hf(t)}


def tower_to_hf(tower: VisionConfig | TextConfig) -> dict[str, Any]:
    """Inverse of :func:`tower_from_hf`."""
    return {
        "hidden_size": tower.width,
        "intermediate_size": int(tower.width * tower.mlp_ratio),
        "num_hidden_layers": tower.layers,
        "num_attention_heads": tower.heads,
    }


def preprocess_from(pp: dict[str, Any], *, image_size: int) -> PreprocessConfig:
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
    if resample not in PIL_RESAMPLE:
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
        interpolation=PIL_RESAMPLE[resample],  # type: ignore[arg-type]
        resize_mode=resize_mode,
    )
    out.validate()
    return out


def preprocess_to(cfg: ModelConfig) -> dict[str, Any]:
    """A ``CLIPImageProcessor`` config reproducing ``cfg.preprocess`` at ``cfg.vision.image_size``."""
    s = cfg.vision.image_size
    shortest = cfg.preprocess.resize_mode == "shortest"
    return {
        **image_processor(cfg, family="CLIP"),
        "size": {"shortest_edge": s} if shortest else {"height": s, "width": s},
        "do_center_crop": shortest,
        "crop_size": {"height": s, "width": s},
    }


def image_processor(cfg: ModelConfig, *, family: str) -> dict[str, Any]:
    """The config keys HF's image processors share, reproducing ``cfg.preprocess`` but for resizing
    and cropping; ``family`` names the classes (``CLIP``: ``CLIPImageProcessor``, ``CLIPProcessor``)."""
    p = cfg.preprocess
    return {
        "image_processor_type": f"{family}ImageProcessor",
        "processor_class": f"{family}Processor",
        "do_resize": True,
        "resample": inverse(PIL_RESAMPLE)[p.interpolation],
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


def config_to(cfg: ModelConfig) -> dict[str, Any]:
    """A ``CLIPConfig`` dict for ``cfg`` (a ``MetaClip2Config`` for text read at ``eos_id``); ResNet
    towers and a sigmoid-loss bias have no HF counterpart."""
    refuse_family_options(cfg, "Hugging Face CLIPModel")
    if cfg.vision.kind != "vit":
        raise ValueError("Hugging Face CLIPModel has no ResNet image tower; only ViT models can be exported")
    if cfg.vision.pool != "cls" or not cfg.text.causal or cfg.text.pool not in ("eot", "eos"):
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
    metaclip2 = t.pool == "eos"
    return {
        "model_type": "metaclip_2" if metaclip2 else "clip",
        "architectures": ["MetaClip2Model" if metaclip2 else "CLIPModel"],
        "projection_dim": cfg.embed_dim,
        "logit_scale_init_value": cfg.init_logit_scale,
        "vision_config": {
            **tower_to_hf(v),
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "hidden_act": cfg.act,
            "projection_dim": cfg.embed_dim,
        },
        "text_config": {
            **tower_to_hf(t),
            "max_position_embeddings": t.context_length,
            "vocab_size": t.vocab_size,
            "hidden_act": cfg.act,
            "projection_dim": cfg.embed_dim,
            "bos_token_id": t.vocab_size - 2,
            "eos_token_id": t.eos_id if metaclip2 else t.vocab_size - 1,
            "pad_token_id": 0,
        },
    }


def _block_ids(keys: list[str], prefix: str) -> list[int]:
    """Indices ``i`` of the keys ``{prefix}.{i}.*``."""
    return sorted({int(k[len(prefix) + 1 :].split(".")[0]) for k in keys if k.startswith(prefix + ".")})


def state_dict_from(sd: StateDict) -> StateDict:
    """HF ``CLIPModel`` state dict -> clipforge state dict. Unknown keys are returned unmapped (and so
    rejected by the strict loader), apart from HF's constant ``position_ids`` buffers."""
    out, rest = take(without_position_ids(sd), inverse(_OTHER))
    for ours, theirs in _PROJ.items():
        if theirs in rest:
            out[ours] = rest.pop(theirs).t().contiguous()  # Linear (embed, width) -> matrix (width, embed)
    encoders_from_hf(rest, out)
    return out | rest  # unmapped keys as they are: the strict loader names them


def state_dict_to(sd: StateDict) -> StateDict:
    """clipforge state dict (ViT model) -> HF ``CLIPModel`` state dict."""
    out, rest = take(sd, _OTHER)
    for ours, theirs in _PROJ.items():
        out[theirs] = rest.pop(ours).t().contiguous()
    encoders_to_hf(rest, out)
    check_all_mapped(rest, "Hugging Face")
    return out


def without_position_ids(sd: StateDict) -> StateDict:
    """A copy of an HF state dict without its constant ``position_ids`` buffers."""
    return {k: v for k, v in sd.items() if not k.endswith("position_ids")}


def encoders_from_hf(rest: StateDict, out: StateDict) -> None:
    """Move both towers' encoder layers (``vision_model.encoder.layers.i.*``, ``text_model...``) of
    ``rest`` into ``out`` as our ``visual.transformer.blocks.i.*``, ``text...`` (q/k/v fused).
    Shared by every HF format with CLIP-style layers."""
    for src, dst in _layers(rest, to_hf=False):
        out.update({dst + o: rest.pop(src + h) for o, h in _BLOCK.items()})
        for kind in ("weight", "bias"):
            qkv = [rest.pop(src + f"self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[dst + f"attn.qkv.{kind}"] = torch.cat(qkv, dim=0)  # (3 * width, ...)


def encoders_to_hf(rest: StateDict, out: StateDict) -> None:
    """Inverse of :func:`encoders_from_hf`."""
    for src, dst in _layers(rest, to_hf=True):
        out.update({dst + h: rest.pop(src + o) for o, h in _BLOCK.items()})
        for kind in ("weight", "bias"):
            for p, w in zip("qkv", rest.pop(src + f"attn.qkv.{kind}").chunk(3, dim=0), strict=True):
                out[dst + f"self_attn.{p}_proj.{kind}"] = w.contiguous()


def _layers(rest: StateDict, *, to_hf: bool) -> Iterator[tuple[str, str]]:
    """``(source prefix, destination prefix)`` of each encoder layer in ``rest``, both towers."""
    for ours, theirs in _TOWERS.items():
        src, dst = (f"{ours}.blocks", f"{theirs}.layers") if to_hf else (f"{theirs}.layers", f"{ours}.blocks")
        for i in _block_ids(list(rest), src):
            yield f"{src}.{i}.", f"{dst}.{i}."
