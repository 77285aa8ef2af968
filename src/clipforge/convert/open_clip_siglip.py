"""open_clip's SigLIP models (``hf-hub:timm/ViT-B-16-SigLIP``, ...) <-> clipforge: pure mappings.

open_clip builds them as a ``CustomTextCLIP``: a timm ViT image tower under ``visual.trunk.`` (no
class token, ``attn_pool`` = multi-head attention pooling with a learned ``latent``, no projection)
and its own text Transformer under ``text.`` with bidirectional attention read at the last position
and a biased ``text_projection``. Nothing here imports open_clip or timm. The module is a
:class:`~.adapters.FormatAdapter`; the text blocks and the preprocessing config are :mod:`.open_clip`'s.

Activations: timm builds its original SigLIP towers (B/16 and L/16 at 224-384 px, So400m/14) with its
default exact GELU and the later ones (SigLIP 2's B/32, L/16-512, So400m/16, giant-opt) with tanh GELU
(:func:`timm_act`); open_clip's text tower is exact GELU unless ``act_kwargs`` say ``tanh``. The
released SigLIP / SigLIP 2 weights were trained (big_vision) with tanh GELU in both towers, which is
what transformers and clipforge compute for them (one ``act`` for the model), so open_clip's outputs
for the original towers differ from clipforge's by that approximation. Models trained in open_clip on
such a tower (NLLB-CLIP's SigLIP variants, :mod:`.open_clip_hf_text`) take timm's activation.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..config import Activation, ConfigError, ModelConfig, PreprocessConfig, TextConfig, VisionConfig
from . import adapters, open_clip
from .adapters import StateDict, check_all_mapped, inverse, rename_in_blocks, rename_prefix, take

# timm's SigLIP image towers: name -> (width, layers, heads, mlp width).
_TIMM_SIZES = {
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
    "so400m": (1152, 27, 16, 4304),
    "giantopt": (1536, 40, 16, 6144),
}
_TIMM_NAME = re.compile(r"^vit_(base|large|so400m|giantopt)_patch(\d+)_siglip_(\d+)$")
# The towers timm registers with act_layer='gelu_tanh' (timm 1.0.31, models/vision_transformer.py);
# every other one takes its default, exact GELU.
_TIMM_TANH = frozenset({
    "vit_base_patch32_siglip_256", "vit_large_patch16_siglip_512", "vit_so400m_patch16_siglip_256",
    "vit_so400m_patch16_siglip_384", "vit_so400m_patch16_siglip_512", "vit_giantopt_patch16_siglip_256",
    "vit_giantopt_patch16_siglip_384",
})  # fmt: skip
_ACT = {"tanh": "gelu_tanh", "none": "gelu"}

# ours -> open_clip, whole keys or prefixes (blocks keep timm's own names inside).
_EXACT = {
    "visual.patch_embed.weight": "visual.trunk.patch_embed.proj.weight",
    "visual.patch_embed.bias": "visual.trunk.patch_embed.proj.bias",
    "text.token_embed.weight": "text.token_embedding.weight",
    "text.proj_bias": "text.text_projection.bias",
    "logit_scale": "logit_scale",
    "logit_bias": "logit_bias",
}
_PREFIX = {
    "visual.transformer.blocks.": "visual.trunk.blocks.",
    "visual.norm_post.": "visual.trunk.norm.",
    "visual.attn_pool.attn.proj.": "visual.trunk.attn_pool.proj.",
    "visual.attn_pool.norm.": "visual.trunk.attn_pool.norm.",
    "visual.attn_pool.mlp.": "visual.trunk.attn_pool.mlp.",
    "text.norm_final.": "text.ln_final.",
}
_TEXT_BLOCKS = {"text.transformer.blocks.": "text.transformer.resblocks."}  # inside: open_clip.RESBLOCK
# SigLIP's preprocessing, for configs that do not say
_PREPROCESS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic", "resize_mode": "squash"}


def is_open_clip_siglip(keys: Any) -> bool:
    return any(str(k).startswith("visual.trunk.attn_pool.") for k in keys)


def is_siglip_config(cfg: dict[str, Any]) -> bool:
    """An open_clip model config whose image tower is a timm SigLIP ViT."""
    return bool(_TIMM_NAME.match(str((cfg.get("vision_cfg") or {}).get("timm_model_name") or "")))


def timm_act(timm_name: str) -> Activation:
    """The activation timm builds SigLIP tower ``timm_name`` with: ``gelu_tanh`` or (its default) ``gelu``."""
    return "gelu_tanh" if timm_name in _TIMM_TANH else "gelu"


def image_tower(cfg: dict[str, Any]) -> VisionConfig:
    """The timm SigLIP image tower an open_clip model config names, as our ViT (attention pooling, no
    class token, no projection); any other timm tower or head is a :class:`ConfigError`."""
    v = cfg.get("vision_cfg") or {}
    m = _TIMM_NAME.match(str(v.get("timm_model_name") or ""))
    if m is None:
        raise ConfigError(f"vision_cfg.timm_model_name {v.get('timm_model_name')!r} is not a timm SigLIP ViT")
    width, layers, heads, mlp = _TIMM_SIZES[m[1]]
    patch, image_size = int(m[2]), int(v.get("image_size", m[3]))
    if v.get("timm_pool", "map") != "map" or v.get("timm_proj", "none") not in ("none", None):
        raise ConfigError("only timm_pool='map' with timm_proj='none' (SigLIP's image tower) is supported")
    return VisionConfig(
        image_size=image_size, patch_size=patch, width=width, layers=layers, head_width=width // heads,
        mlp_ratio=mlp / width, pool="map", norm_pre=False, patch_bias=True, project=False,
    )  # fmt: skip


def timm_tower_to(v: VisionConfig) -> dict[str, Any]:
    """open_clip's ``vision_cfg`` for our SigLIP-layout image tower ``v``: one of timm's named towers
    (its activation: :func:`timm_act` of the name), else ``ValueError``."""
    shape = (v.width, v.layers, v.heads, int(v.width * v.mlp_ratio))
    size = next((n for n, s in _TIMM_SIZES.items() if s == shape), None)
    if size is None:
        raise ValueError("open_clip builds SigLIP image towers from timm's named sizes only; this one is not")
    return {"image_size": v.image_size, "timm_model_name": f"vit_{size}_patch{v.patch_size}_siglip_{v.image_size}",
            "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none"}  # fmt: skip


def config_from(
    cfg: dict[str, Any], *, name: str = "", preprocess: dict[str, Any] | None = None
) -> ModelConfig:
    """A clipforge config from an open_clip SigLIP model config (``open_clip_config.json``'s
    ``model_cfg``); anything clipforge would compute differently is a :class:`ConfigError`. The model
    is computed with tanh GELU, as the SigLIP weights were trained (see the module's note)."""
    t = cfg.get("text_cfg") or {}
    vision = image_tower(cfg)
    width, image_size = vision.width, vision.image_size
    needed = {"no_causal_mask": True, "proj_bias": True, "pool_type": "last"}
    wrong = [f"{k}={t.get(k)!r}" for k, want in needed.items() if t.get(k) != want]
    if wrong:
        raise ConfigError(f"text_cfg {', '.join(wrong)}: a SigLIP text tower has " + str(needed))
    eps = float((t.get("norm_kwargs") or {}).get("eps", 1e-5))
    approx = str((t.get("act_kwargs") or {}).get("approximate", "tanh"))  # the weights' (big_vision's) GELU
    if approx not in _ACT:
        raise ConfigError(f"text_cfg.act_kwargs.approximate {approx!r} is not supported")
    if not math.isclose(eps, 1e-6) or approx != "tanh":
        raise ConfigError(
            "the timm SigLIP image tower uses GELU(tanh) and LayerNorm eps 1e-6; this text tower differs"
        )
    text_width, text_heads = int(t.get("width", width)), int(t.get("heads", vision.heads))
    if cfg.get("embed_dim", width) != width:
        raise ConfigError(f"embed_dim {cfg.get('embed_dim')} differs from the image width {width} (no projection)")
    return ModelConfig(
        embed_dim=width,
        act="gelu_tanh",
        norm_eps=1e-6,
        init_logit_scale=float(cfg.get("init_logit_scale", math.log(10))),
        init_logit_bias=float(cfg.get("init_logit_bias", -10.0)),
        vision=vision,
        text=TextConfig(
            context_length=int(t.get("context_length", 64)), vocab_size=int(t.get("vocab_size", 32000)),
            width=text_width, layers=int(t.get("layers", 12)), head_width=text_width // text_heads,
            mlp_ratio=float(t.get("mlp_ratio", 4.0)), causal=False, pool="last", proj_bias=True,
        ),
        preprocess=preprocess_from(preprocess or {}, image_size=image_size),
        name=name,
    ).validate()  # fmt: skip


def preprocess_from(pp: dict[str, Any], *, image_size: int) -> PreprocessConfig:
    """open_clip's ``preprocess_cfg`` -> ours, SigLIP's where it says nothing."""
    return open_clip.preprocess_from({**_PREPROCESS, **pp}, image_size=image_size)


preprocess_to = open_clip.preprocess_to


def config_to(cfg: ModelConfig) -> dict[str, Any]:
    """An open_clip model config for a SigLIP-layout ``cfg`` whose image tower is one of timm's."""
    t = cfg.text
    vision = timm_tower_to(cfg.vision)
    if cfg.act != "gelu_tanh" or not math.isclose(cfg.norm_eps, 1e-6):
        raise ValueError(
            f"open_clip's SigLIP configs run GELU(tanh) with LayerNorm eps 1e-6; this model has act {cfg.act!r}, "
            f"eps {cfg.norm_eps}"
        )
    return {
        "embed_dim": cfg.embed_dim,
        "init_logit_bias": cfg.init_logit_bias,
        "custom_text": True,
        "vision_cfg": vision,
        "text_cfg": {
            "context_length": t.context_length, "vocab_size": t.vocab_size, "width": t.width, "heads": t.heads,
            "layers": t.layers, "mlp_ratio": t.mlp_ratio, "no_causal_mask": True, "proj_bias": True,
            "pool_type": "last", "norm_kwargs": {"eps": cfg.norm_eps}, "act_kwargs": {"approximate": "tanh"},
        },
    }  # fmt: skip


def state_dict_from(sd: StateDict) -> StateDict:
    """open_clip SigLIP state dict -> clipforge's. Unknown keys keep their names (the strict loader
    then names them)."""
    out, rest = take(sd, inverse(_EXACT))
    for key in ("logit_scale", "logit_bias"):
        if key in out:
            out[key] = out[key].reshape(())
    adapters.take_timm_trunk_pooling(rest, out)
    _move_text_and_renamed(rest, out, to_ours=True)
    return out | rest  # unmapped keys as they are: the strict loader names them


# (open_clip's name, ours) of the text tower's position table and projection
_TEXT_POS = ("text.positional_embedding", "text.pos_embed")
_TEXT_PROJ = ("text.text_projection.weight", "text.proj")  # open_clip (E, W), ours (W, E): transposed


def _move_text_and_renamed(rest: StateDict, out: StateDict, *, to_ours: bool) -> None:
    """Move the text tower's position table and projection, then every key ``_rename`` maps, from
    ``rest`` to ``out`` under the other format's names."""
    (pos_src, pos_dst), (proj_src, proj_dst) = ((a, b) if to_ours else (b, a) for a, b in (_TEXT_POS, _TEXT_PROJ))
    if pos_src in rest:
        out[pos_dst] = rest.pop(pos_src)
    if proj_src in rest:
        out[proj_dst] = rest.pop(proj_src).t().contiguous()  # (E, W) <-> (W, E)
    for key in list(rest):
        name = _rename(key, to_ours=to_ours)
        if name is not None:
            out[name] = rest.pop(key)


def state_dict_to(sd: StateDict) -> StateDict:
    """clipforge state dict (SigLIP layout) -> open_clip ``CustomTextCLIP`` with a timm trunk. Without
    text keys, the image tower (and ``logit_scale`` / ``logit_bias``) alone, for another text tower's adapter."""
    out, rest = take(sd, _EXACT)
    out["visual.trunk.pos_embed"] = rest.pop("visual.pos_embed").unsqueeze(0)  # (1, N, C)
    out["visual.trunk.attn_pool.latent"] = rest.pop("visual.attn_pool.probe").reshape(1, 1, -1)
    for kind in ("weight", "bias"):
        qkv = rest.pop(f"visual.attn_pool.attn.qkv.{kind}")
        c = qkv.shape[0] // 3
        out[f"visual.trunk.attn_pool.q.{kind}"], out[f"visual.trunk.attn_pool.kv.{kind}"] = qkv[:c], qkv[c:]
    _move_text_and_renamed(rest, out, to_ours=False)
    check_all_mapped(rest, "open_clip SigLIP")
    return {k: v.contiguous() for k, v in out.items()}


def _rename(key: str, *, to_ours: bool) -> str | None:
    prefixes, blocks, inner = _PREFIX, _TEXT_BLOCKS, open_clip.RESBLOCK
    if to_ours:
        prefixes, blocks, inner = inverse(prefixes), inverse(blocks), inverse(inner)
    name = rename_prefix(key, prefixes)
    return name if name is not None else rename_in_blocks(key, blocks, inner)
