"""open_clip's EVA-CLIP, PE-Core and MobileCLIP-B models
(``hf-hub:timm/eva02_base_patch16_clip_224.merged2b_s8b_b131k``, ``hf-hub:timm/PE-Core-B-16``,
``hf-hub:apple/MobileCLIP-B-OpenCLIP``, ...) <-> clipforge: pure mappings.

open_clip builds each as a ``CustomTextCLIP``: a timm ViT-family image tower under ``visual.trunk.``
(created with ``num_classes=embed_dim``, so its ``head`` is the biased image projection) and its
standard text Transformer under ``text.`` (:mod:`.open_clip`'s names). The image towers differ:

- EVA-02 (``eva02_*_clip_*``): class token read after the final norm, 2-D RoPE (rows first,
  positions rescaled to a 16 x 16 reference grid), separate q/k/v projections with no k bias,
  sub-LN in attention and MLP, SwiGLU MLP, LayerNorm eps 1e-6, a patch-embedding bias.
- PE-Core (``vit_pe_core_*``): LayerNorm before the blocks, no patch bias, 2-D RoPE (columns
  first, positions offset by 1), fused q/k/v, GELU MLP, and an 8-head attention pool over the class
  token and the patches.
- MobileCLIP-B (``vit_base_mci_224``, a timm ``VisionTransformer``): a three-conv stem instead of the
  patch convolution (``patch_embed.backbone.*``), positions on the patches only, class token read
  after the final norm, fused q/k/v, GELU MLP, LayerNorm eps 1e-6.
- MobileCLIP2-L-14 (``vit_large_patch14_clip_224``, timm's ``VisionTransformer`` in OpenAI CLIP's
  layout): LayerNorm before the blocks, no patch bias, class token read after the final norm, fused
  q/k/v, GELU MLP, LayerNorm eps 1e-5; only the head differs from OpenAI's (a biased projection).

MobileCLIP's ViT models may run open_clip's text tower bidirectionally (``no_causal_mask: true``, as
MobileCLIP2-L-14 does: no attention mask, read at the end token); EVA-02 and PE-Core configs may not.

EVA-02's attention has no k bias: it is imported as zeros, and a model whose k bias is no longer
zero (trained here) is refused on export. Without RoPE a k bias would not matter (it adds the same
``q . b`` to every score of a query), but EVA-02 rotates keys after the bias, so it does. Nothing
here imports open_clip or timm. The module is a :class:`~.adapters.FormatAdapter`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import torch

from ..config import ConfigError, ModelConfig, PreprocessConfig, VisionConfig
from . import adapters, open_clip
from .adapters import StateDict, check_all_mapped, inverse, move_renamed, take
from .io import ConvertError


class _Tower(NamedTuple):
    family: str  # "eva02" | "pe_core"
    width: int
    layers: int
    heads: int
    patch: int
    image: int
    ref_grid: int


_TOWERS = {
    "eva02_base_patch16_clip_224": _Tower("eva02", 768, 12, 12, 16, 224, 16),
    "eva02_large_patch14_clip_224": _Tower("eva02", 1024, 24, 16, 14, 224, 16),
    "eva02_large_patch14_clip_336": _Tower("eva02", 1024, 24, 16, 14, 336, 16),
    "vit_pe_core_tiny_patch16_384": _Tower("pe_core", 192, 12, 3, 16, 384, 24),
    "vit_pe_core_small_patch16_384": _Tower("pe_core", 384, 12, 6, 16, 384, 24),
    "vit_pe_core_base_patch16_224": _Tower("pe_core", 768, 12, 12, 16, 224, 14),
    "vit_pe_core_large_patch14_336": _Tower("pe_core", 1024, 24, 16, 14, 336, 24),
    "vit_base_mci_224": _Tower("mci_vit", 768, 12, 12, 16, 224, 0),
    "vit_large_patch14_clip_224": _Tower("clip_vit", 1024, 24, 16, 14, 224, 0),
}
_POOL = {"eva02": "token", "pe_core": "map", "mci_vit": "token", "clip_vit": "token"}
_BIDIRECTIONAL_TEXT = ("mci_vit", "clip_vit")  # the families whose configs may set text_cfg.no_causal_mask
# The options each family sets on top of a plain ViT (everything but the sizes).
FAMILY_OPTIONS: dict[str, dict[str, Any]] = {
    "eva02": dict(
        pool="cls", norm_pre=False, patch_bias=True, rope=True, rope_axes="hw", rope_offset=0.0,
        mlp="swiglu", mlp_ratio=4 * 2 / 3, sub_ln=True, proj_bias=True, norm_eps=1e-6,
    ),
    "pe_core": dict(
        pool="map", class_token=True, pool_heads=8, norm_pre=True, patch_bias=False, rope=True, rope_axes="wh",
        rope_offset=1.0, mlp="plain", mlp_ratio=4.0, sub_ln=False, proj_bias=True, norm_eps=1e-5,
    ),
    "mci_vit": dict(
        pool="cls", norm_pre=False, patch_bias=False, stem="conv", class_pos=False, rope=False, mlp="plain",
        mlp_ratio=4.0, sub_ln=False, proj_bias=True, norm_eps=1e-6,
    ),
    "clip_vit": dict(
        pool="cls", norm_pre=True, patch_bias=False, stem="patch", class_pos=True, rope=False, mlp="plain",
        mlp_ratio=4.0, sub_ln=False, proj_bias=True, norm_eps=1e-5,
    ),
}  # fmt: skip
_PREPROCESS = {
    "eva02": {"interpolation": "bicubic", "resize_mode": "shortest"},  # OpenAI's mean and std
    "pe_core": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bilinear", "resize_mode": "squash"},
    "mci_vit": {"mean": (0.0,) * 3, "std": (1.0,) * 3, "interpolation": "bilinear", "resize_mode": "shortest"},
    "clip_vit": {"interpolation": "bicubic", "resize_mode": "shortest"},  # MobileCLIP2-L-14: OpenAI's mean and std
}  # fmt: skip

# ours -> open_clip, whole keys and prefixes of the image tower (text: open_clip's own names).
_EXACT = {
    "visual.patch_embed.weight": "visual.trunk.patch_embed.proj.weight",
    "visual.patch_embed.bias": "visual.trunk.patch_embed.proj.bias",
    "visual.proj_bias": "visual.trunk.head.bias",
}
_PREFIX = {
    "visual.patch_embed.": "visual.trunk.patch_embed.backbone.",  # MobileCLIP-B's conv stem
    "visual.norm_pre.": "visual.trunk.norm_pre.",
    "visual.norm_post.": "visual.trunk.norm.",
    "visual.attn_pool.attn.proj.": "visual.trunk.attn_pool.proj.",
    "visual.attn_pool.norm.": "visual.trunk.attn_pool.norm.",
    "visual.attn_pool.mlp.": "visual.trunk.attn_pool.mlp.",
}
_BLOCKS = {"visual.transformer.blocks.": "visual.trunk.blocks."}
_INNER = {  # inside a block: ours -> timm's Eva (q/k/v are handled apart)
    "norm1.": "norm1.",
    "norm2.": "norm2.",
    "attn.qkv.": "attn.qkv.",  # PE-Core's fused projection
    "attn.norm.": "attn.norm.",
    "attn.proj.": "attn.proj.",
    "mlp.fc1_gate.": "mlp.fc1_g.",
    "mlp.fc1.": "mlp.fc1_x.",
    "mlp.norm.": "mlp.norm.",
    "mlp.fc2.": "mlp.fc2.",
}
_PE_INNER = {**_INNER, "mlp.fc1.": "mlp.fc1."}  # a plain MLP keeps fc1


def is_eva_config(cfg: dict[str, Any]) -> bool:
    """An open_clip model config whose image tower is one of timm's EVA-02 CLIP or PE-Core towers."""
    return open_clip.timm_tower_name(cfg) in _TOWERS


def is_open_clip_eva(keys: Any) -> bool:
    """open_clip weights with a timm Eva image tower (EVA-02's split q/k/v or PE-Core's norm_pre), or
    MobileCLIP-B's timm ViT with a conv stem."""
    keys = {str(k) for k in keys}
    return (
        "visual.trunk.blocks.0.attn.q_proj.weight" in keys
        or ("visual.trunk.norm_pre.weight" in keys and "visual.trunk.cls_token" in keys)
        or "visual.trunk.patch_embed.backbone.0.conv.weight" in keys
    )


def family_of(v: VisionConfig) -> str | None:
    """``eva02`` / ``pe_core`` / ``mci_vit`` / ``clip_vit`` when ``v`` sets exactly that family's options, else None."""
    for family, options in FAMILY_OPTIONS.items():
        if all(getattr(v, k) == want for k, want in options.items()):
            return family
    return None


def config_from(cfg: dict[str, Any], *, name: str = "", preprocess: dict[str, Any] | None = None) -> ModelConfig:
    """A clipforge config from an open_clip EVA-02 / PE-Core model config; anything clipforge would
    compute differently is a :class:`ConfigError`."""
    v = dict(cfg.get("vision_cfg") or {})
    timm_name, tower = open_clip.timm_tower(cfg, _TOWERS, what="Eva")
    open_clip.check_timm_head(cfg, pool=_POOL[tower.family])
    image_size = v.get("image_size", tower.image)
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    if int(image_size) != tower.image:
        raise ConfigError(f"{timm_name} takes {tower.image} px images, the config says {image_size}")
    # The text tower and the top-level options are open_clip's standard ones: let its adapter check them.
    stand_in = {"image_size": tower.image, "patch_size": tower.patch, "width": 64, "layers": 1, "head_width": 64}
    t = dict(cfg.get("text_cfg") or {})
    causal = not t.pop("no_causal_mask", False) if tower.family in _BIDIRECTIONAL_TEXT else True
    base = open_clip.config_from({**cfg, "vision_cfg": stand_in, "text_cfg": t}, name=name)
    vision = VisionConfig(
        image_size=tower.image, patch_size=tower.patch, width=tower.width, layers=tower.layers,
        head_width=tower.width // tower.heads, rope_ref_grid=tower.ref_grid, **FAMILY_OPTIONS[tower.family],
    )  # fmt: skip
    pp = {**_PREPROCESS[tower.family], **(preprocess or {})}
    return base.replace(
        vision=vision,
        text=dataclasses.replace(base.text, causal=causal),
        preprocess=open_clip.preprocess_from(pp, image_size=tower.image),
    )


def preprocess_from(pp: dict[str, Any], *, image_size: int) -> PreprocessConfig:
    return open_clip.preprocess_from(pp, image_size=image_size)


preprocess_to = open_clip.preprocess_to


def config_to(cfg: ModelConfig) -> dict[str, Any]:
    """An open_clip model config for an EVA-02 / PE-Core ``cfg`` whose image tower is one of timm's."""
    v = cfg.vision
    family = family_of(v)
    shape = (family, v.width, v.layers, v.heads, v.patch_size, v.image_size, v.rope_ref_grid)
    timm_name = next((n for n, t in _TOWERS.items() if tuple(t) == shape), None)
    if timm_name is None:
        raise ValueError(
            "open_clip builds EVA-02 / PE-Core image towers from timm's named models only; this one is not"
        )
    if not cfg.text.causal and family not in _BIDIRECTIONAL_TEXT:
        raise ValueError(f"open_clip's {family} configs have a causal text tower; this one is bidirectional")
    plain = cfg.replace(vision=dataclasses.replace(VisionConfig(), image_size=v.image_size, patch_size=v.patch_size))
    out = open_clip.config_to(plain)
    if not cfg.text.causal:
        out["text_cfg"]["no_causal_mask"] = True
    out["vision_cfg"] = {
        "image_size": v.image_size,
        "timm_model_name": timm_name,
        "timm_model_pretrained": False,
        "timm_pool": _POOL[_TOWERS[timm_name].family],
        "timm_proj": None,
    }
    out["custom_text"] = True
    return out


def state_dict_from(sd: StateDict) -> StateDict:
    """open_clip EVA-02 / PE-Core state dict -> clipforge's. Unknown keys keep their names (the
    strict loader then names them)."""
    visual = {k: v for k, v in sd.items() if k.startswith("visual.")}
    out = open_clip.state_dict_from({k: v for k, v in sd.items() if k not in visual})  # text, logit_scale
    mapped, rest = take(visual, inverse(_EXACT))
    out.update(mapped)
    if "visual.trunk.cls_token" in rest:
        out["visual.cls_token"] = rest.pop("visual.trunk.cls_token").reshape(-1)  # (1, 1, C) -> (C,)
    adapters.take_timm_trunk_pooling(rest, out)
    if "visual.trunk.head.weight" in rest:
        out["visual.proj"] = rest.pop("visual.trunk.head.weight").t().contiguous()  # (E, C) -> (C, E)
    _fuse_qkv(rest, out)
    inner = _INNER if any(".mlp.fc1_x." in k for k in rest) else _PE_INNER
    move_renamed(rest, out, inverse(_PREFIX), inverse(_BLOCKS), inverse(inner))
    return out | rest


def state_dict_to(sd: StateDict) -> StateDict:
    """clipforge state dict (EVA-02 / PE-Core layout) -> open_clip ``CustomTextCLIP`` with a timm Eva trunk."""
    visual = {k: v for k, v in sd.items() if k.startswith("visual.")}
    text = open_clip.state_dict_to({k: v for k, v in sd.items() if k not in visual})
    out = {open_clip.custom_text_name(k): v for k, v in text.items()}
    mapped, rest = take(visual, _EXACT)
    out.update(mapped)
    out["visual.trunk.cls_token"] = rest.pop("visual.cls_token").reshape(1, 1, -1)
    out["visual.trunk.pos_embed"] = rest.pop("visual.pos_embed").unsqueeze(0)  # (1, N, C)
    out["visual.trunk.head.weight"] = rest.pop("visual.proj").t().contiguous()  # (C, E) -> (E, C)
    eva = any(".mlp.fc1_gate." in k for k in rest)
    if "visual.attn_pool.probe" in rest:
        out["visual.trunk.attn_pool.latent"] = rest.pop("visual.attn_pool.probe").reshape(1, 1, -1)
        for kind in ("weight", "bias"):
            qkv = rest.pop(f"visual.attn_pool.attn.qkv.{kind}")
            c = qkv.shape[0] // 3
            out[f"visual.trunk.attn_pool.q.{kind}"], out[f"visual.trunk.attn_pool.kv.{kind}"] = qkv[:c], qkv[c:]
    if eva:
        _split_qkv(rest, out)
    inner = _INNER if eva else _PE_INNER
    move_renamed(rest, out, _PREFIX, _BLOCKS, inner)
    check_all_mapped(rest, "open_clip EVA-02 / PE-Core")
    return {k: v.contiguous() for k, v in out.items()}


def _fuse_qkv(rest: StateDict, out: StateDict) -> None:
    """EVA-02's ``q_proj``/``k_proj``/``v_proj`` (no k bias) -> one ``qkv`` with a zero k bias."""
    prefix, ours = "visual.trunk.blocks.", "visual.transformer.blocks."
    blocks = sorted({k[len(prefix) :].split(".")[0] for k in rest if k.startswith(prefix) and ".attn.q_proj." in k})
    for i in blocks:
        src = f"{prefix}{i}.attn."
        q, k, v = (rest.pop(f"{src}{n}_proj.weight") for n in "qkv")
        out[f"{ours}{i}.attn.qkv.weight"] = torch.cat([q, k, v])  # (3C, C)
        qb, vb = rest.pop(f"{src}q_proj.bias"), rest.pop(f"{src}v_proj.bias")
        out[f"{ours}{i}.attn.qkv.bias"] = torch.cat([qb, torch.zeros_like(qb), vb])  # (3C,)


def _split_qkv(rest: StateDict, out: StateDict) -> None:
    """One ``qkv`` -> EVA-02's three projections; its k bias must be zero (the format has none)."""
    prefix = "visual.transformer.blocks."
    for key in [k for k in rest if k.startswith(prefix) and k.endswith(".attn.qkv.weight")]:
        i = key[len(prefix) :].split(".")[0]
        dst = f"visual.trunk.blocks.{i}.attn."
        w, b = rest.pop(key), rest.pop(f"{prefix}{i}.attn.qkv.bias")
        c = w.shape[0] // 3
        if b[c : 2 * c].any():
            raise ConvertError(
                f"{key[: -len('weight')]}bias: the k part is not zero, and open_clip's EVA-02 format has no k bias "
                "(under RoPE it changes the attention): this model cannot be exported to open_clip"
            )
        for j, n in enumerate("qkv"):
            out[f"{dst}{n}_proj.weight"] = w[j * c : (j + 1) * c]
        out[f"{dst}q_proj.bias"], out[f"{dst}v_proj.bias"] = b[:c], b[2 * c :]
