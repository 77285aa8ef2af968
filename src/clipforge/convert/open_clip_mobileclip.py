"""open_clip's MobileCLIP S models (``MobileCLIP-S1``, ``MobileCLIP-S2``, ``MobileCLIP2-S0`` ... ``-S4``)
<-> clipforge: pure mappings.

open_clip builds them as a ``CustomTextCLIP``: a timm ``FastVit`` MCi image tower under
``visual.trunk.`` (created with ``num_classes=embed_dim`` and average pooling, so its ``head.fc`` is
the biased image projection) and its standard text Transformer under ``text.``, bidirectional
(``no_causal_mask: true``) and read at the end token. clipforge's FastViT tower
(:mod:`clipforge.models.fastvit`) keeps timm's parameter names, so the image tower maps by prefix,
train-time branches and folded ``reparam_conv`` layers alike (weights saved after timm's
``reparameterize_model`` import as a ``reparameterized`` tower). Nothing here imports open_clip or
timm. The module is a :class:`~.adapters.FormatAdapter`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

from ..config import OPENAI_MEAN, OPENAI_STD, ModelConfig, PreprocessConfig, VisionConfig
from . import open_clip
from .adapters import StateDict, check_all_mapped, rename_prefix


class _Tower(NamedTuple):
    layers: tuple[int, ...]
    width: int  # the first stage's; each later stage doubles it
    mlp_ratio: float
    attention_stages: int
    se_stages: int
    attention_norm: str
    stem_scale_branch: bool


# timm's registered MCi towers (timm/models/fastvit.py: fastvit_mci0 ... fastvit_mci4).
_TOWERS = {
    "fastvit_mci0": _Tower((2, 6, 10, 2), 64, 3.0, 1, 2, "batch", True),
    "fastvit_mci1": _Tower((4, 12, 20, 4), 64, 3.0, 1, 2, "batch", True),
    "fastvit_mci2": _Tower((4, 12, 24, 4), 80, 3.0, 1, 2, "batch", True),
    "fastvit_mci3": _Tower((2, 12, 24, 4, 2), 96, 4.0, 2, 0, "layer", False),
    "fastvit_mci4": _Tower((2, 12, 24, 4, 4), 128, 4.0, 2, 0, "layer", False),
}
# open_clip's pretrained preprocessing: MobileCLIP (and MobileCLIP2-S0/S2) take [0, 1] pixels,
# MobileCLIP2-S3/S4 OpenAI's normalisation; all bilinear, shortest side.
_PREPROCESS = {
    "unit": {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "interpolation": "bilinear", "resize_mode": "shortest"},
    "openai": {"mean": OPENAI_MEAN, "std": OPENAI_STD, "interpolation": "bilinear", "resize_mode": "shortest"},
}  # fmt: skip
_PREFIX = {"visual.proj.": "visual.trunk.head.fc.", "visual.": "visual.trunk."}  # ours -> open_clip


def is_mobileclip_config(cfg: dict[str, Any]) -> bool:
    """An open_clip model config whose image tower is one of timm's MCi (FastViT) towers."""
    return open_clip.timm_tower_name(cfg) in _TOWERS


def is_open_clip_mobileclip(keys: Any) -> bool:
    """open_clip weights with a timm FastViT image tower (its MobileOne stem and final conv)."""
    keys = {str(k) for k in keys}
    return any(k.startswith("visual.trunk.stem.0.") for k in keys) and any(
        k.startswith("visual.trunk.final_conv.") for k in keys
    )


def is_folded(keys: Any) -> bool:
    """Weights saved after reparameterisation (``reparam_conv`` layers instead of the branches)."""
    return any(".reparam_conv." in str(k) for k in keys)


def config_from(cfg: dict[str, Any], *, name: str = "", preprocess: dict[str, Any] | None = None) -> ModelConfig:
    """A clipforge config from an open_clip MobileCLIP S model config; anything clipforge would
    compute differently is a :class:`ConfigError`."""
    v = dict(cfg.get("vision_cfg") or {})
    _, tower = open_clip.timm_tower(cfg, _TOWERS, what="FastViT")
    open_clip.check_timm_head(cfg, pool="avg")
    image_size = v.get("image_size", 256)
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    t = dict(cfg.get("text_cfg") or {})
    causal = not t.pop("no_causal_mask", False)
    # The text tower and the top-level options are open_clip's standard ones: let its adapter check them.
    stand_in = {"image_size": 224, "patch_size": 16, "width": 64, "layers": 1, "head_width": 64}
    base = open_clip.config_from({**cfg, "vision_cfg": stand_in, "text_cfg": t}, name=name)
    vision = VisionConfig(
        kind="fastvit", image_size=int(image_size), width=tower.width, layers=tower.layers, head_width=32,
        mlp_ratio=tower.mlp_ratio, attention_stages=tower.attention_stages, se_stages=tower.se_stages,
        attention_norm=tower.attention_norm, stem_scale_branch=tower.stem_scale_branch,  # type: ignore[arg-type]
    )  # fmt: skip
    family = "openai" if tower.attention_norm == "layer" else "unit"
    pp = {**_PREPROCESS[family], **(preprocess or {})}
    return base.replace(
        vision=vision,
        text=dataclasses.replace(base.text, causal=causal),
        preprocess=open_clip.preprocess_from(pp, image_size=int(image_size)),
    )


def preprocess_from(pp: dict[str, Any], *, image_size: int) -> PreprocessConfig:
    return open_clip.preprocess_from(pp, image_size=image_size)


preprocess_to = open_clip.preprocess_to


def config_to(cfg: ModelConfig) -> dict[str, Any]:
    """An open_clip model config for a MobileCLIP S ``cfg`` whose image tower is one of timm's."""
    if cfg.text.kind != "clip":
        raise ValueError("open_clip has no MobileCLIP-S0 MCT text tower: keep it a clipforge checkpoint")
    v = cfg.vision
    shape = (v.layers, v.width, v.mlp_ratio, v.attention_stages, v.se_stages, v.attention_norm, v.stem_scale_branch)
    timm_name = next((n for n, t in _TOWERS.items() if tuple(t) == shape and v.head_width == 32), None)
    if v.kind != "fastvit" or timm_name is None:
        raise ValueError(
            "open_clip builds MobileCLIP S image towers from timm's named MCi models only; this one is not"
        )
    if v.reparameterized:
        raise ValueError(
            "open_clip builds MobileCLIP towers with their train-time branches: export a model imported "
            "with reparameterize=False"
        )
    plain = cfg.replace(vision=VisionConfig(), text=dataclasses.replace(cfg.text, causal=True))
    out = open_clip.config_to(plain)
    out["vision_cfg"] = {
        "image_size": v.image_size,
        "timm_model_name": timm_name,
        "timm_model_pretrained": False,
        "timm_pool": "avg",
        "timm_proj": None,
    }
    out["text_cfg"]["no_causal_mask"] = not cfg.text.causal
    out["custom_text"] = True
    return out


def state_dict_from(sd: StateDict) -> StateDict:
    """open_clip MobileCLIP S state dict -> clipforge's. Unknown keys keep their names (the strict
    loader then names them)."""
    visual = {k: v for k, v in sd.items() if k.startswith("visual.")}
    out = open_clip.state_dict_from({k: v for k, v in sd.items() if k not in visual})  # text, logit_scale
    for key, value in visual.items():
        out[rename_prefix(key, {b: a for a, b in _PREFIX.items()}) or key] = value
    return out


def state_dict_to(sd: StateDict) -> StateDict:
    """clipforge state dict (FastViT image tower) -> open_clip ``CustomTextCLIP`` with a timm FastVit trunk."""
    visual = {k: v for k, v in sd.items() if k.startswith("visual.")}
    text = open_clip.state_dict_to({k: v for k, v in sd.items() if k not in visual})
    out = {open_clip.custom_text_name(k): v for k, v in text.items()}
    rest: StateDict = {}
    for key, value in visual.items():
        name = rename_prefix(key, _PREFIX)
        if name is None:
            rest[key] = value
        else:
            out[name] = value
    check_all_mapped(rest, "open_clip MobileCLIP")
    return {k: v.contiguous() for k, v in out.items()}
