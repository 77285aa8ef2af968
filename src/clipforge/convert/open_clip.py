"""open_clip (and OpenAI CLIP, same layout) <-> clipforge: pure config and state-dict mappings.

open_clip's standard ``CLIP`` keeps OpenAI's parameter names: ``visual.conv1``, ``visual.class_embedding``,
``visual.transformer.resblocks.{i}.attn.in_proj_weight``, ``token_embedding``, ``ln_final``,
``text_projection``, ...; its ``CustomTextCLIP`` puts the text tower under ``text.``. ModifiedResNet
towers use ``visual.conv1..3``/``bn1..3`` for the stem and ``downsample.{0,1}`` for the shortcut.
Nothing here imports open_clip. The module is a :class:`~.adapters.FormatAdapter`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import torch

from ..config import ConfigError, ModelConfig, PreprocessConfig, TextConfig, VisionConfig
from .adapters import StateDict, inverse, rename_in_blocks, rename_prefix

# ours -> open_clip, whole keys.
_EXACT = {
    "visual.cls_token": "visual.class_embedding",
    "visual.pos_embed": "visual.positional_embedding",
    "visual.proj": "visual.proj",
    "visual.attnpool.pos_embed": "visual.attnpool.positional_embedding",
    "text.pos_embed": "positional_embedding",
    "text.proj": "text_projection",
    "logit_scale": "logit_scale",
    "logit_bias": "logit_bias",
}
# ours -> open_clip, key prefixes (the rest of the key is kept, or mapped by _BLOCK inside blocks).
_PREFIX_VIT = {
    "visual.patch_embed.": "visual.conv1.",
    "visual.norm_pre.": "visual.ln_pre.",
    "visual.norm_post.": "visual.ln_post.",
}
_PREFIX_RESNET = {
    "visual.stem.0.": "visual.conv1.",
    "visual.stem.1.": "visual.bn1.",
    "visual.stem.3.": "visual.conv2.",
    "visual.stem.4.": "visual.bn2.",
    "visual.stem.6.": "visual.conv3.",
    "visual.stem.7.": "visual.bn3.",
    "visual.attnpool.": "visual.attnpool.",
    **{f"visual.layer{i}.": f"visual.layer{i}." for i in range(1, 5)},
}
_PREFIX_TEXT = {
    "text.token_embed.": "token_embedding.",
    "text.norm_final.": "ln_final.",
}
_PREFIX_BLOCKS = {
    "visual.transformer.blocks.": "visual.transformer.resblocks.",
    "text.transformer.blocks.": "transformer.resblocks.",
}
# Inside one residual block (OpenAI's ResidualAttentionBlock, also open_clip's SigLIP text tower): ours -> open_clip.
RESBLOCK = {
    "norm1.": "ln_1.",
    "norm2.": "ln_2.",
    "attn.qkv.weight": "attn.in_proj_weight",
    "attn.qkv.bias": "attn.in_proj_bias",
    "attn.proj.": "attn.out_proj.",
    "mlp.fc1.": "mlp.c_fc.",
    "mlp.fc2.": "mlp.c_proj.",
}
# ResNet shortcut: ours is Sequential(avgpool|identity, conv, bn); open_clip names the conv "0", the bn "1".
_DOWNSAMPLE = re.compile(r"^(visual\.layer\d\.\d+\.downsample\.)(\d+)(\..*)$")
_CUSTOM_TEXT = (
    "text.token_embedding.",
    "text.positional_embedding",
    "text.transformer.",
    "text.ln_final.",
    "text.text_projection",
)


def is_resnet(sd: StateDict) -> bool:
    return any(k.startswith(("visual.layer1.", "visual.stem.")) for k in sd)


def state_dict_from(sd: StateDict) -> StateDict:
    """open_clip / OpenAI state dict -> clipforge state dict. Keys without a rule keep their name, so the
    strict loader reports them as unexpected; BatchNorm counters absent from old files are added as 0."""
    sd = _custom_text_to_flat(sd)
    resnet = is_resnet(sd)
    out = {_rename(k, resnet=resnet, to_ours=True): v for k, v in sd.items()}
    for key in [k for k in out if k.endswith(".running_mean")]:
        out.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    for key in ("logit_scale", "logit_bias"):
        if key in out and out[key].numel() == 1:
            out[key] = out[key].reshape(())  # open_clip may store these as (1,)
    return out


def state_dict_to(sd: StateDict) -> StateDict:
    """clipforge state dict -> open_clip ``CLIP`` state dict (OpenAI's names)."""
    resnet = is_resnet(sd)
    out: StateDict = {}
    for k, v in sd.items():
        name = _rename(k, resnet=resnet, to_ours=False)
        if name == k and not _is_shared_name(k):
            raise ValueError(f"no open_clip name for {k!r}")
        out[name] = v
    return out


def _is_shared_name(key: str) -> bool:
    return key in ("visual.proj", "logit_scale", "logit_bias") or key.startswith(
        ("visual.layer", "visual.attnpool.")
    )


def _rename(key: str, *, resnet: bool, to_ours: bool) -> str:
    exact = inverse(_EXACT) if to_ours else _EXACT
    if key in exact:
        return exact[key]
    prefixes = {**(_PREFIX_RESNET if resnet else _PREFIX_VIT), **_PREFIX_TEXT}
    name = rename_prefix(key, inverse(prefixes) if to_ours else prefixes)
    if name is not None:
        m = _DOWNSAMPLE.match(name)
        if m:  # shift the shortcut index: ours 1, 2 <-> open_clip 0, 1
            name = f"{m[1]}{int(m[2]) + (1 if to_ours else -1)}{m[3]}"
        return name
    blocks, inner = (inverse(_PREFIX_BLOCKS), inverse(RESBLOCK)) if to_ours else (_PREFIX_BLOCKS, RESBLOCK)
    name = rename_in_blocks(key, blocks, inner)
    return key if name is None else name


def custom_text_name(key: str) -> str:
    """A flat text-tower name -> ``CustomTextCLIP``'s (under ``text.``); other names unchanged."""
    flat = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
    return f"text.{key}" if key.startswith(flat) else key


def _custom_text_to_flat(sd: StateDict) -> StateDict:
    """open_clip's ``CustomTextCLIP`` keeps the (same) text tower under ``text.``: drop that prefix."""
    if not any(k.startswith("text.token_embedding.") for k in sd):
        return sd
    return {k[len("text.") :] if k.startswith(_CUSTOM_TEXT) else k: v for k, v in sd.items()}


# --------------------------------------------------------------------------- configs

# open_clip options that change the computation: each is accepted only at the value that means
# "standard CLIP"; anything else is a feature clipforge does not implement.
# Options of open_clip's transformer blocks, the same in both towers.
_BLOCK_FIXED = {
    "ls_init_value": None,
    "final_ln_after_pool": False,
    "act_kwargs": None,
    "norm_kwargs": None,
    "block_type": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
}
_VISION_FIXED = {
    **_BLOCK_FIXED,
    "patch_dropout": 0.0,
    "attentional_pool": False,
    "no_ln_pre": False,
    "pos_embed_type": "learnable",
    "pool_type": "tok",
    "timm_model_name": None,
}
_VISION_IGNORED = {
    "output_tokens",
    "attn_pooler_queries",
    "attn_pooler_heads",
    "timm_model_pretrained",
    "timm_pool",
    "timm_proj",
    "timm_proj_bias",
    "timm_drop",
    "timm_drop_path",
}
_TEXT_FIXED = {
    **_BLOCK_FIXED,
    "hf_model_name": None,
    "hf_tokenizer_name": None,
    "tokenizer_mode": None,
    "tokenizer_kwargs": None,
    "embed_cls": False,
    "no_causal_mask": False,
    "pool_type": "argmax",
    "proj_bias": False,
    "proj_type": "linear",
}
_TEXT_IGNORED = {"output_tokens", "pad_id", "eos_id", "hf_model_pretrained", "hf_proj_type", "hf_pooler_type"}
_TOP_FIXED = {"multimodal_cfg": None}
_TOP_IGNORED = {"custom_text", "cast_dtype", "nonscalar_logit_scale", "output_dict"}


def config_from(
    cfg: dict[str, Any], *, name: str = "", preprocess: dict[str, Any] | None = None
) -> ModelConfig:
    """A clipforge config from an open_clip model config (``model_configs/*.json`` or the ``model_cfg``
    of an ``open_clip_config.json``). Features clipforge cannot reproduce are a :class:`ConfigError`."""
    if not isinstance(cfg, dict) or "vision_cfg" not in cfg or "text_cfg" not in cfg:
        raise ConfigError("an open_clip model config needs 'embed_dim', 'vision_cfg' and 'text_cfg'")
    top = {
        k: v
        for k, v in cfg.items()
        if k
        not in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias")
    }
    _check(top, _TOP_FIXED, _TOP_IGNORED, "model config")
    v, t = dict(cfg["vision_cfg"]), dict(cfg["text_cfg"])
    vision_known = {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size"}
    _check(
        {k: x for k, x in v.items() if k not in vision_known}, _VISION_FIXED, _VISION_IGNORED, "vision_cfg"
    )
    text_known = {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}
    # MetaCLIP 2's text is read at the first eos_id token (pool_type "eos"); every other CLIP at argmax
    eos_pool = t.get("pool_type") == "eos"
    if eos_pool and not isinstance(t.get("eos_id"), int):
        raise ConfigError("open_clip option text_cfg.pool_type='eos' needs an int text_cfg.eos_id")
    extra = {k: x for k, x in t.items() if k not in text_known and not (eos_pool and k == "pool_type")}
    _check(extra, _TEXT_FIXED, _TEXT_IGNORED, "text_cfg")

    image_size = v.get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        if len(set(image_size)) != 1:
            raise ConfigError(f"non-square image_size {list(image_size)} is not supported")
        image_size = image_size[0]
    layers = v.get("layers", 12)
    resnet = isinstance(layers, (list, tuple))
    width = v.get("width", 768)
    vision = VisionConfig(
        kind="resnet" if resnet else "vit",
        image_size=int(image_size),
        width=width,
        layers=tuple(layers) if resnet else int(layers),
        patch_size=32 if resnet else v.get("patch_size", 16),
        head_width=v.get("head_width", 64),
        mlp_ratio=v.get("mlp_ratio", 4.0),
    )
    heads = t.get("heads", 8)
    text_width = t.get("width", 512)
    if text_width % heads:
        raise ConfigError(f"text_cfg.width {text_width} is not a multiple of heads {heads}")
    text = TextConfig(
        context_length=t.get("context_length", 77),
        vocab_size=t.get("vocab_size", 49408),
        width=text_width,
        layers=t.get("layers", 12),
        head_width=text_width // heads,
        mlp_ratio=t.get("mlp_ratio", 4.0),
        **({"pool": "eos", "eos_id": t["eos_id"]} if eos_pool else {}),
    )
    return ModelConfig(
        embed_dim=cfg["embed_dim"],
        vision=vision,
        text=text,
        act="quick_gelu" if cfg.get("quick_gelu", False) else "gelu",
        init_logit_scale=cfg.get("init_logit_scale", math.log(1 / 0.07)),
        init_logit_bias=cfg.get("init_logit_bias"),
        preprocess=preprocess_from(preprocess or {}, image_size=int(image_size)),
        name=name,
    ).validate()


def config_to(cfg: ModelConfig) -> dict[str, Any]:
    """An open_clip model config (the JSON format of ``open_clip/model_configs``)."""
    v, t = cfg.vision, cfg.text
    vision: dict[str, Any] = {"image_size": v.image_size, "width": v.width, "head_width": v.head_width}
    if v.kind == "resnet":
        vision.update(layers=list(v.layers), patch_size=None)  # type: ignore[arg-type]
    else:
        vision.update(layers=v.layers, patch_size=v.patch_size, mlp_ratio=v.mlp_ratio)
    out: dict[str, Any] = {
        "embed_dim": cfg.embed_dim,
        "quick_gelu": cfg.act == "quick_gelu",
        "vision_cfg": vision,
        "text_cfg": {
            "context_length": t.context_length,
            "vocab_size": t.vocab_size,
            "width": t.width,
            "heads": t.heads,
            "layers": t.layers,
            "mlp_ratio": t.mlp_ratio,
        },
    }
    if t.pool == "eos":
        out["text_cfg"].update(pool_type="eos", eos_id=t.eos_id)
    if cfg.init_logit_bias is not None:
        out["init_logit_bias"] = cfg.init_logit_bias
    return out


def preprocess_from(pp: dict[str, Any], *, image_size: int) -> PreprocessConfig:
    """open_clip's ``preprocess_cfg`` (mean, std, interpolation, resize_mode, size) -> ours."""
    size = pp.get("size", image_size)
    if isinstance(size, (list, tuple)):
        size = size[0] if len(set(size)) == 1 else size
    if size != image_size:
        raise ConfigError(f"preprocess size {size} differs from the model's image_size {image_size}")
    if pp.get("mode", "RGB") != "RGB":
        raise ConfigError(f"unsupported preprocess mode {pp['mode']!r} (only RGB)")
    resize_mode = pp.get("resize_mode", "shortest")
    if resize_mode not in ("shortest", "squash"):
        raise ConfigError(f"unsupported resize_mode {resize_mode!r} (clipforge has 'shortest' and 'squash')")
    defaults = PreprocessConfig()
    return PreprocessConfig(
        mean=tuple(pp.get("mean", defaults.mean)),
        std=tuple(pp.get("std", defaults.std)),
        interpolation=pp.get("interpolation", "bicubic"),
        resize_mode=resize_mode,
    )


def preprocess_to(cfg: ModelConfig) -> dict[str, Any]:
    """open_clip's ``preprocess_cfg`` reproducing ``cfg.preprocess``."""
    p = cfg.preprocess
    return {
        "size": cfg.vision.image_size,
        "mean": list(p.mean),
        "std": list(p.std),
        "interpolation": p.interpolation,
        "resize_mode": p.resize_mode,
    }


_T = TypeVar("_T")


def timm_tower_name(cfg: dict[str, Any]) -> str:
    """The timm image tower an open_clip model config names (``vision_cfg.timm_model_name``), or ""."""
    return str((cfg.get("vision_cfg") or {}).get("timm_model_name") or "")


def timm_tower(cfg: dict[str, Any], towers: Mapping[str, _T], *, what: str) -> tuple[str, _T]:
    """The name and entry in ``towers`` of the timm image tower ``cfg`` names; a tower not in
    ``towers`` is a :class:`ConfigError` (``what``: the kind of tower, for the message)."""
    name = timm_tower_name(cfg)
    if name not in towers:
        raise ConfigError(
            f"vision_cfg.timm_model_name {name!r} is not a supported timm {what} tower ({', '.join(towers)})"
        )
    return name, towers[name]


def check_timm_head(cfg: dict[str, Any], *, pool: str) -> None:
    """A timm image tower must end in its trunk's own head: ``timm_pool`` ``pool`` (the default) and
    no ``timm_proj``; anything else is a :class:`ConfigError`."""
    v = cfg.get("vision_cfg") or {}
    if v.get("timm_pool", pool) != pool or v.get("timm_proj") not in (None, ""):
        raise ConfigError(
            f"{timm_tower_name(cfg)}: only timm_pool={pool!r} with timm_proj=null (the trunk's head) is supported"
        )


def _check(extra: dict[str, Any], fixed: dict[str, Any], ignored: set[str], where: str) -> None:
    for key, value in extra.items():
        if key in ignored:
            continue
        if key not in fixed:
            raise ConfigError(
                f"unknown open_clip option {where}.{key}; clipforge cannot tell what it changes"
            )
        if value != fixed[key] and not (fixed[key] is None and value in ({}, "", False)):
            raise ConfigError(
                f"open_clip option {where}.{key}={value!r} is not supported by clipforge "
                f"(only {fixed[key]!r}, standard CLIP)"
            )


to_open_clip = state_dict_to  # the name tests/hub_fixtures.py and benchmarks/ import
