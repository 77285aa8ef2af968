"""Apple's own MobileCLIP checkpoints (github.com/apple/ml-mobileclip: ``mobileclip_s0.pt``, ``_s1``,
``_s2``) -> clipforge: pure mappings.

Apple saves a plain state dict of its ``mobileclip.clip.CLIP``: the MCi image tower under
``image_encoder.model.`` (a FastViT whose blocks sit in one flat ``network`` list: a stage's blocks,
then the next stage's patch embedding, its RepCPE, its blocks, ...; the head is ``head.proj``, an
unbiased ``(width, embed_dim)`` projection after average pooling) and the text tower under
``text_encoder.``: ``transformer.*`` holds Apple's pre-norm Transformer blocks (``model_name: base``,
S1/S2) or, for MobileCLIP-S0 (``model_name: mct``), those blocks between two RepMixer conv blocks
(:mod:`clipforge.models.text_mct`). Both towers map onto clipforge's FastViT and text towers, train-time
branches and Apple's folded (``reparameterize_model``) layers alike. The files record no
configuration: :func:`infer_config` reads it from the tensor shapes, :func:`config_from` from Apple's
model config JSON (``mobileclip/configs/mobileclip_s0.json``). :func:`state_dict_to` maps back (for
running Apple's code on clipforge's weights). Nothing here imports Apple's code.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from ..config import ConfigError, ModelConfig, PreprocessConfig, TextConfig, VisionConfig

StateDict = dict[str, torch.Tensor]
IMAGE, TEXT = "image_encoder.model.", "text_encoder."

# Apple's MCi towers (mobileclip/models/mci.py): stage depths, first width, MLP ratio. All have one
# attention stage (BatchNorm), squeeze-excite in the last two patch embeddings, 32-channel heads.
_TOWERS = {"mci0": ((2, 6, 10, 2), 64), "mci1": ((4, 12, 20, 4), 64), "mci2": ((4, 12, 24, 4), 80)}
_MCT_KERNEL = 11  # mobileclip/modules/text/repmixer.py: RepMixerBlock(dim) with its default kernel
_APPLE_HEADS = 8  # every published text config (n_heads_per_layer); the files cannot say
# Apple's inference transforms: Resize(256, bilinear) on the shorter side, CenterCrop, ToTensor (no normalisation)
_PREPROCESS = PreprocessConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), interpolation="bilinear")

_MOBILEONE = {"rbr_conv.0.": "conv_kxk.0.", "rbr_scale.": "conv_scale.", "rbr_skip.": "identity.",
              "reparam_conv.": "reparam_conv.", "se.reduce.": "se.fc1.", "se.expand.": "se.fc2."}  # fmt: skip
_PATCH_EMBED = {"proj.0.lkb_origin.": "proj.0.large_conv.", "proj.0.small_conv.": "proj.0.small_conv.",
                "proj.0.lkb_reparam.": "proj.0.reparam_conv.", "proj.0.se.": "proj.0.se."}  # fmt: skip
_IMAGE_BLOCK = {"token_mixer.layer_scale": "token_mixer.layer_scale.gamma", "layer_scale_1": "layer_scale_1.gamma",
                "layer_scale_2": "layer_scale_2.gamma", "layer_scale": "layer_scale.gamma",
                "convffn.": "mlp."}  # fmt: skip
_TEXT_BLOCK = {"pre_norm_mha.0.": "norm1.", "pre_norm_mha.1.qkv_proj.": "attn.qkv.",
               "pre_norm_mha.1.out_proj.": "attn.proj.", "pre_norm_ffn.0.": "norm2.",
               "pre_norm_ffn.1.": "mlp.fc1.", "pre_norm_ffn.4.": "mlp.fc2."}  # fmt: skip
_CONV_BLOCK = {"token_mixer.layer_scale": "token_mixer.gamma", "token_mixer.norm.rbr_skip.": "token_mixer.norm.",
               "token_mixer.mixer.rbr_skip.": "token_mixer.skip.",
               "token_mixer.mixer.rbr_conv.0.": "token_mixer.conv.",
               "token_mixer.reparam_conv.": "token_mixer.reparam_conv.", "convffn.": "mlp.",
               "layer_scale": "gamma"}  # fmt: skip


def is_apple_mobileclip(keys: Any) -> bool:
    """Apple's ``mobileclip.clip.CLIP`` state dict (an MCi image tower and Apple's text tower)."""
    keys = {str(k) for k in keys}
    return any(k.startswith(IMAGE + "patch_embed.") for k in keys) and any(k.startswith(TEXT) for k in keys)


def folded_towers(keys: Any) -> tuple[bool, bool]:
    """(image, text): whether each tower was saved after Apple's ``reparameterize_model``."""
    keys = [str(k) for k in keys]
    image = any(k.startswith(IMAGE) and (".reparam_conv." in k or ".lkb_reparam." in k) for k in keys)
    text = any(k.startswith(TEXT) and ".token_mixer.reparam_conv." in k for k in keys)
    return image, text


def _rename(tail: str, rules: dict[str, str]) -> str | None:
    for src, dst in rules.items():
        if tail == src.rstrip(".") or tail.startswith(src) and src.endswith("."):
            return dst + tail[len(src) :]
    return None


def _network_layout(keys: list[str]) -> dict[int, tuple[str, int]]:
    """Apple's ``network.<k>`` entries -> (what, stage): ``blocks``, ``downsample`` (a patch embedding,
    which starts the next stage) or ``pos_emb`` (a RepCPE, in the stage it precedes)."""
    kinds: dict[int, str] = {}
    for key in keys:
        m = re.match(re.escape(IMAGE) + r"network\.(\d+)\.(\w+)", key)
        if m:
            k, head = int(m.group(1)), m.group(2)
            kinds[k] = "downsample" if head == "proj" else ("blocks" if head.isdigit() else "pos_emb")
    layout, stage = {}, 0
    for k in sorted(kinds):
        stage += kinds[k] == "downsample"
        layout[k] = (kinds[k], stage)
    return layout


def _image_key(tail: str, layout: dict[int, tuple[str, int]]) -> str | None:
    """One image-tower name after ``image_encoder.model.`` -> ours after ``visual.``; None: no rule."""
    m = re.match(r"patch_embed\.(\d+)\.(.*)", tail)
    if m:
        inner = _rename(m.group(2), _MOBILEONE)
        return f"stem.{m.group(1)}.{inner}" if inner else None
    if tail.startswith("conv_exp."):
        inner = _rename(tail[len("conv_exp.") :], _MOBILEONE)
        return f"final_conv.{inner}" if inner else None
    m = re.match(r"network\.(\d+)\.(.*)", tail)
    if not m or int(m.group(1)) not in layout:
        return None
    what, stage = layout[int(m.group(1))]
    inner = _stage_part(what, m.group(2), to_ours=True)
    return f"stages.{stage}.{what}.{inner}" if inner else None


_POS_EMB = {"pe.": "pos_enc.", "reparam_conv.": "reparam_conv."}


def _stage_part(what: str, rest: str, *, to_ours: bool) -> str | None:
    """The name inside one stage part (``what``: downsample, pos_emb or blocks), Apple's -> ours
    (``to_ours``) or ours -> Apple's; None: no rule."""
    mobileone, patch, pos, block_rules = (
        (r if to_ours else _inverse(r)) for r in (_MOBILEONE, _PATCH_EMBED, _POS_EMB, _IMAGE_BLOCK)
    )
    if what == "downsample":
        mobile = _rename(rest[len("proj.1.") :], mobileone) if rest.startswith("proj.1.") else None
        return f"proj.1.{mobile}" if mobile else _rename(rest, patch)
    if what == "pos_emb":
        return _rename(rest, pos)
    j, _, block = rest.partition(".")
    if block.startswith(("token_mixer.norm.", "token_mixer.mixer.")):
        part, _, param = block[len("token_mixer.") :].partition(".")
        mobile = _rename(param, mobileone)
        return f"{j}.token_mixer.{part}.{mobile}" if mobile else None
    return f"{j}.{_rename(block, block_rules) or block}"


def _text_blocks(keys: list[str]) -> dict[int, str]:
    """Apple's ``transformer.<i>`` -> our module: ``conv_in``/``conv_out`` (the MCT conv blocks, first
    and last) or ``transformer.blocks.<n>`` (the Transformer blocks, in order)."""
    conv, attn = set(), set()
    for key in keys:
        m = re.match(re.escape(TEXT) + r"transformer\.(\d+)\.(\w+)", key)
        if m:
            (conv if m.group(2) in ("token_mixer", "convffn", "layer_scale") else attn).add(int(m.group(1)))
    out = {i: f"transformer.blocks.{n}" for n, i in enumerate(sorted(attn))}
    for i in conv:
        out[i] = "conv_in" if i < min(attn, default=0) else "conv_out"
    return out


def _text_key(tail: str, value: torch.Tensor, blocks: dict[int, str]) -> tuple[str, torch.Tensor] | None:
    """One text-tower name after ``text_encoder.`` (with its tensor, reshaped) -> ours after ``text.``."""
    simple = {"embedding_layer.weight": "token_embed.weight", "projection_layer": "proj",
              "final_layer_norm.weight": "norm_final.weight", "final_layer_norm.bias": "norm_final.bias"}  # fmt: skip
    if tail in simple:
        return simple[tail], value
    if tail == "positional_embedding.pos_embed.pos_embed":
        return "pos_embed", value.reshape(-1, value.shape[-1])  # (1, 1, T, C) -> (T, C)
    m = re.match(r"transformer\.(\d+)\.(.*)", tail)
    if not m or int(m.group(1)) not in blocks:
        return None
    module, rest = blocks[int(m.group(1))], m.group(2)
    if module.startswith("transformer."):
        inner = _rename(rest, _TEXT_BLOCK)
        return (f"{module}.{inner}", value) if inner else None
    inner = _rename(rest, _CONV_BLOCK)
    if inner is None:
        return None
    if inner.endswith(("fc1.weight", "fc2.weight")):  # 1 x 1 Conv2d (out, in, 1, 1) -> Linear (out, in)
        value = value.reshape(value.shape[0], value.shape[1])
    elif value.dim() == 4:  # (1, k) Conv2d (C, 1, 1, k) -> Conv1d (C, 1, k)
        value = value.reshape(value.shape[0], value.shape[1], -1)
    elif value.dim() == 3:  # layer scales (C, 1, 1) -> (C,)
        value = value.reshape(-1)
    return f"{module}.{inner}", value


def state_dict_from(sd: StateDict) -> StateDict:
    """Apple's MobileCLIP state dict -> clipforge's. Keys without a rule keep their names (the strict
    loader then names them)."""
    keys = list(sd)
    layout, blocks = _network_layout(keys), _text_blocks(keys)
    out: StateDict = {}
    for key, value in sd.items():
        name: str | None = None
        if key == IMAGE + "head.proj":  # (width, embed_dim), no bias -> our biased Linear
            out["visual.proj.weight"] = value.t().contiguous()
            out["visual.proj.bias"] = torch.zeros(value.shape[1], dtype=value.dtype)
            continue
        if key.startswith(IMAGE):
            inner = _image_key(key[len(IMAGE) :], layout)
            name = f"visual.{inner}" if inner else None
        elif key.startswith(TEXT):
            found = _text_key(key[len(TEXT) :], value, blocks)
            if found is not None:
                name, value = f"text.{found[0]}", found[1]
        elif key == "logit_scale":
            name = key
        out[name or key] = value
    return out


def _inverse(rules: dict[str, str]) -> dict[str, str]:
    return {dst: src for src, dst in rules.items()}


def state_dict_to(sd: StateDict) -> StateDict:
    """clipforge state dict (a FastViT image tower, a ``clip`` or ``mct`` text tower) -> Apple's
    ``mobileclip.clip.CLIP`` names and shapes (what Apple's ``load_state_dict`` takes); the image
    projection must have a zero bias (Apple's has none)."""
    network: dict[tuple[int, str], int] = {}
    for key in sd:  # our stages in order -> Apple's flat network indices
        m = re.match(r"visual\.stages\.(\d+)\.(downsample|pos_emb|blocks)\.", key)
        if m:
            network[int(m.group(1)), m.group(2)] = -1
    order = {"downsample": 0, "pos_emb": 1, "blocks": 2}
    for k, entry in enumerate(sorted(network, key=lambda e: (e[0], order[e[1]]))):
        network[entry] = k
    mct = any(k.startswith("text.conv_in.") for k in sd)
    layers = len({k.split(".")[3] for k in sd if k.startswith("text.transformer.blocks.")})
    out: StateDict = {}
    rest: list[str] = []
    for key, value in sd.items():
        name: str | None = None
        if key == "visual.proj.weight":
            name, value = IMAGE + "head.proj", value.t().contiguous()
        elif key == "visual.proj.bias":
            if bool(value.abs().max() > 0):
                raise ValueError("Apple's MCi head has no bias: the image projection's bias must be zero")
            continue
        elif key.startswith("visual."):
            inner = _image_key_to(key[len("visual.") :], network)
            name = IMAGE + inner if inner else None
        elif key.startswith("text."):
            found = _text_key_to(key[len("text.") :], value, mct=mct, layers=layers)
            if found is not None:
                name, value = TEXT + found[0], found[1]
        elif key == "logit_scale":
            name = key
        if name is None:
            rest.append(key)
        else:
            out[name] = value
    if rest:
        raise ValueError(f"no Apple MobileCLIP name for: {', '.join(sorted(rest))}")
    return out


def _image_key_to(tail: str, network: dict[tuple[int, str], int]) -> str | None:
    m = re.match(r"stem\.(\d+)\.(.*)", tail)
    if m:
        inner = _rename(m.group(2), _inverse(_MOBILEONE))
        return f"patch_embed.{m.group(1)}.{inner}" if inner else None
    if tail.startswith("final_conv."):
        inner = _rename(tail[len("final_conv.") :], _inverse(_MOBILEONE))
        return f"conv_exp.{inner}" if inner else None
    m = re.match(r"stages\.(\d+)\.(downsample|pos_emb|blocks)\.(.*)", tail)
    if not m:
        return None
    k, what = network[int(m.group(1)), m.group(2)], m.group(2)
    inner = _stage_part(what, m.group(3), to_ours=False)
    return f"network.{k}.{inner}" if inner else None


def _text_key_to(tail: str, value: torch.Tensor, *, mct: bool, layers: int) -> tuple[str, torch.Tensor] | None:
    simple = {"token_embed.weight": "embedding_layer.weight", "proj": "projection_layer",
              "norm_final.weight": "final_layer_norm.weight", "norm_final.bias": "final_layer_norm.bias"}  # fmt: skip
    if tail in simple:
        return simple[tail], value
    if tail == "pos_embed":
        return "positional_embedding.pos_embed.pos_embed", value.reshape(1, 1, *value.shape)
    m = re.match(r"transformer\.blocks\.(\d+)\.(.*)", tail)
    if m:
        inner = _rename(m.group(2), _inverse(_TEXT_BLOCK))
        return (f"transformer.{int(m.group(1)) + mct}.{inner}", value) if inner else None
    m = re.match(r"(conv_in|conv_out)\.(.*)", tail)
    if not m:
        return None
    inner = _rename(m.group(2), _inverse(_CONV_BLOCK))
    if inner is None:
        return None
    if inner.endswith(("fc1.weight", "fc2.weight")):  # Linear (out, in) -> 1 x 1 Conv2d
        value = value[:, :, None, None]
    elif value.dim() == 3:  # Conv1d (C, 1, k) -> (1, k) Conv2d
        value = value[:, :, None, :]
    elif inner.endswith("layer_scale"):  # (C,) -> (C, 1, 1)
        value = value[:, None, None]
    index = 0 if m.group(1) == "conv_in" else layers + 1
    return f"transformer.{index}.{inner}", value


def infer_config(sd: StateDict, *, name: str = "") -> ModelConfig:
    """The architecture of an Apple MobileCLIP state dict, from its tensor shapes. What shapes cannot
    say is Apple's for every published model: 8 text heads, 32-channel image heads, 256-pixel images,
    unnormalised pixels, GELU."""
    keys = list(sd)
    if IMAGE + "head.proj" not in sd or TEXT + "projection_layer" not in sd:
        raise ConfigError(
            "not an Apple MobileCLIP state dict with an MCi image tower "
            "(no image_encoder.model.head.proj or text_encoder.projection_layer)"
        )
    image_folded, text_folded = folded_towers(keys)
    layout = _network_layout(keys)
    stages = 1 + max((s for _, s in layout.values()), default=0)
    depths = [0] * stages
    attention, se = set(), set()
    for key in keys:
        m = re.match(re.escape(IMAGE) + r"network\.(\d+)\.(\d+)\.(\w+)", key)
        if m:
            stage = layout[int(m.group(1))][1]
            depths[stage] = max(depths[stage], int(m.group(2)) + 1)
            if key.endswith(".token_mixer.qkv.weight"):
                attention.add(stage)
        m = re.match(re.escape(IMAGE) + r"network\.(\d+)\.proj\.0\.se\.", key)
        if m:
            se.add(layout[int(m.group(1))][1])
    stem = sd[IMAGE + ("patch_embed.0.reparam_conv.weight" if image_folded else "patch_embed.0.rbr_conv.0.conv.weight")]
    width = int(stem.shape[0])
    fc1 = next(v for k, v in sd.items() if re.match(re.escape(IMAGE) + r"network\.\d+\.0\.convffn\.fc1\.weight", k))
    attn_norm = next((k for k in keys if k.endswith(".0.norm.weight") and k.startswith(IMAGE)), None)
    if attn_norm is not None and attn_norm.replace(".weight", ".running_mean") not in sd:
        raise ConfigError("Apple's MCi towers normalise attention with BatchNorm; this one does not")
    vision = VisionConfig(
        kind="fastvit", image_size=256, width=width, layers=tuple(depths), head_width=32,
        mlp_ratio=fc1.shape[0] / fc1.shape[1], attention_stages=len(attention), se_stages=len(se),
        stem_scale_branch=image_folded or IMAGE + "patch_embed.0.rbr_scale.conv.weight" in sd,
        reparameterized=image_folded,
    )  # fmt: skip
    if attention != set(range(stages - len(attention), stages)) or se != set(range(stages - len(se), stages)):
        raise ConfigError("Apple MCi tower with attention or squeeze-excite stages other than the last ones")
    token = sd[TEXT + "embedding_layer.weight"]
    blocks = _text_blocks(keys)
    layers = sum(m.startswith("transformer.") for m in blocks.values())
    mct = "conv_in" in blocks.values()
    ffn = sd.get(TEXT + f"transformer.{min(i for i, m in blocks.items() if m.startswith('transformer.'))}"
                 ".pre_norm_ffn.1.weight") if layers else None  # fmt: skip
    text_width = int(token.shape[1])
    conv_key = next((k for k in keys if k.startswith(TEXT) and k.endswith(".convffn.conv.conv.weight")), None)
    conv_weight = sd[conv_key] if conv_key else None
    text = TextConfig(
        context_length=int(sd[TEXT + "positional_embedding.pos_embed.pos_embed"].shape[-2]),
        vocab_size=int(token.shape[0]), width=text_width, layers=layers, head_width=text_width // _APPLE_HEADS,
        mlp_ratio=(ffn.shape[0] / text_width) if ffn is not None else 4.0, causal=False, kind="mct" if mct else "clip",
        conv_kernel=int(conv_weight.shape[-1]) if mct and conv_weight is not None else 0,
        reparameterized=text_folded,
    )  # fmt: skip
    embed_dim = int(sd[TEXT + "projection_layer"].shape[1])
    return ModelConfig(
        embed_dim=embed_dim, vision=vision, text=text, act="gelu", preprocess=_PREPROCESS, name=name
    ).validate()


def config_from(data: dict[str, Any], *, name: str = "", preprocess: dict[str, Any] | None = None) -> ModelConfig:
    """A clipforge config from Apple's model config JSON (``mobileclip/configs/<model>.json``); anything
    clipforge would compute differently is a :class:`ConfigError`."""
    image, text = dict(data.get("image_cfg") or {}), dict(data.get("text_cfg") or {})
    tower = _TOWERS.get(str(image.get("model_name")))
    if tower is None:
        raise ConfigError(
            f"image_cfg.model_name {image.get('model_name')!r} is not one of Apple's MCi towers ({', '.join(_TOWERS)})"
        )
    variant = text.get("model_name")
    if variant not in ("mct", "base"):
        raise ConfigError(f"text_cfg.model_name must be 'mct' or 'base', got {variant!r}")
    if text.get("no_pos_embedding") or text.get("norm_layer", "layer_norm") not in ("layer_norm", "layer_norm_fp32"):
        raise ConfigError("text_cfg.no_pos_embedding / norm_layer: clipforge has learned positions and LayerNorm")
    width, layers = int(text["dim"]), int(text["n_transformer_layers"])
    heads, ffn = text["n_heads_per_layer"], text["ffn_multiplier_per_layer"]
    heads = set(heads) if isinstance(heads, list) else {heads}
    ffn = set(ffn) if isinstance(ffn, list) else {ffn}
    if len(heads) != 1 or len(ffn) != 1:
        raise ConfigError("text_cfg: clipforge's text blocks share one head count and FFN multiplier")
    (n_heads,), (mult,) = heads, ffn
    hidden = int(math.ceil(width * mult / 16.0) * 16)  # Apple rounds the FFN width up to a multiple of 16
    if hidden != int(width * mult) or width % n_heads:
        raise ConfigError(f"text_cfg: FFN width {hidden} or {n_heads} heads do not fit a {width}-wide block")
    depths, first = tower
    vision = VisionConfig(
        kind="fastvit", image_size=int(image.get("image_size", 256)), width=first, layers=depths, head_width=32,
        mlp_ratio=3.0, attention_stages=1, se_stages=2,
    )  # fmt: skip
    text_cfg = TextConfig(
        context_length=int(text["context_length"]), vocab_size=int(text["vocab_size"]), width=width, layers=layers,
        head_width=width // n_heads, mlp_ratio=float(mult), causal=bool(text.get("causal_masking", False)),
        kind="mct" if variant == "mct" else "clip", conv_kernel=_MCT_KERNEL if variant == "mct" else 0,
    )  # fmt: skip
    pp = _PREPROCESS if preprocess is None else PreprocessConfig(**{**_PREPROCESS.__dict__, **preprocess})
    return ModelConfig(
        embed_dim=int(data["embed_dim"]), vision=vision, text=text_cfg, act="gelu", preprocess=pp, name=name
    ).validate()


def same_architecture(a: ModelConfig, b: ModelConfig) -> list[str]:
    """What differs between two configs in the tensors' shapes and layout (not the name, image size,
    preprocessing, head counts or folding): empty when a state dict of one loads into the other."""
    diffs = []
    for tower in ("vision", "text"):
        x, y = getattr(a, tower), getattr(b, tower)
        for field in ("kind", "width", "layers", "mlp_ratio", "attention_stages", "se_stages", "stem_scale_branch",
                      "context_length", "vocab_size", "conv_kernel"):  # fmt: skip
            if hasattr(x, field) and getattr(x, field) != getattr(y, field):
                diffs.append(f"{tower}.{field}: {getattr(x, field)!r} vs {getattr(y, field)!r}")
    if a.embed_dim != b.embed_dim:
        diffs.append(f"embed_dim: {a.embed_dim} vs {b.embed_dim}")
    return diffs
