"""OpenAI CLIP checkpoints: infer the architecture from tensor shapes, map names (open_clip's layout).

OpenAI's files record no config. Everything but the attention head count is visible in the shapes;
the heads follow OpenAI's rule (64-wide heads in every tower). OpenAI trained with QuickGELU, so
that is the activation of an OpenAI checkpoint unless told otherwise.
"""

from __future__ import annotations

import math

import torch

from ..config import ConfigError, ModelConfig, TextConfig, VisionConfig
from . import open_clip

StateDict = dict[str, torch.Tensor]

# Tensor attributes of OpenAI's TorchScript models that are not weights.
EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
HEAD_WIDTH = 64

# Key fragments of open_clip features clipforge does not implement -> what they are.
_UNSUPPORTED = {
    "visual.trunk.": "a timm image tower",
    "visual.attn_pool": "attentional pooling",
    "visual.head.": "a timm projection head",
    ".ls_1.": "layer scale",
    ".ln_q.": "query/key normalisation",
    ".ln_attn.": "scaled attention norms",
    "text.transformer.embeddings.": "a Hugging Face text tower",
    "text.cls_emb": "a text class token (CoCa)",
    "text_decoder.": "a caption decoder (CoCa)",
    "text_projection.weight": "a Linear text projection",
}


def has_openai_markers(keys: set[str] | list[str]) -> bool:
    """The non-weight tensors only OpenAI's own files carry (``input_resolution`` etc.)."""
    return any(k in EXTRA_KEYS for k in keys)


def check_supported(sd: StateDict) -> None:
    """Raise :class:`ConfigError` when the weights belong to an architecture clipforge cannot map."""
    found = sorted(
        {what for k in sd for frag, what in _UNSUPPORTED.items() if frag in k or k.startswith(frag)}
    )
    if found:
        raise ConfigError(
            f"cannot convert: the checkpoint uses {', '.join(found)}, which clipforge does not implement"
        )
    flat = open_clip._custom_text_to_flat(sd)
    if (
        "visual.conv1.weight" in flat
        and "visual.ln_pre.weight" not in flat
        and "visual.layer1.0.conv1.weight" not in flat
    ):
        raise ConfigError(
            "cannot convert: the ViT has no ln_pre (open_clip no_ln_pre), which clipforge does not implement"
        )


def clean(sd: StateDict) -> StateDict:
    """Drop the non-weight tensors of OpenAI's TorchScript files (checking they agree with the shapes)."""
    sd = dict(sd)
    flat = open_clip._custom_text_to_flat(sd)
    checks = {"context_length": ("positional_embedding", 0), "vocab_size": ("token_embedding.weight", 0)}
    for key, (tensor, dim) in checks.items():
        if key in sd and tensor in flat and int(sd[key]) != flat[tensor].shape[dim]:
            raise ConfigError(
                f"{key}={int(sd[key])} disagrees with {tensor} of shape {tuple(flat[tensor].shape)}"
            )
    for key in [k for k in sd if k in EXTRA_KEYS or k.endswith("attn_mask")]:
        del sd[key]
    return sd


def infer_config(
    sd: StateDict, *, act: str = "quick_gelu", name: str = "", exact_heads: bool = True
) -> ModelConfig:
    """The architecture of an OpenAI/open_clip-layout state dict, read from its tensor shapes.

    Head counts are not visible in the shapes: OpenAI's rule (64-wide heads) is applied, and a tower
    whose width is not a multiple of 64 is an error unless ``exact_heads=False`` (when the result
    is only compared with a given config, see :func:`compare_configs`)."""
    check_supported(sd)
    sd = open_clip._custom_text_to_flat(sd)

    def head_width(width: int) -> int:
        if width % HEAD_WIDTH == 0:
            return HEAD_WIDTH
        if exact_heads:
            raise ConfigError(
                f"cannot infer the attention heads of a {width}-wide tower (OpenAI's rule is "
                "64-wide heads); pass the model config: `model=\"NAME\"` or `model=\"CONFIG.json\"`"
            )
        return math.gcd(width, HEAD_WIDTH)

    def shape(key: str) -> tuple[int, ...]:
        if key not in sd:
            raise ConfigError(f"cannot infer the architecture: tensor {key!r} is missing")
        return tuple(sd[key].shape)

    def count(prefix: str) -> int:
        return len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})

    if "visual.layer1.0.conv1.weight" in sd:
        stages = tuple(count(f"visual.layer{i}.") for i in range(1, 5))
        width = shape("visual.layer1.0.conv1.weight")[0]
        tokens = shape("visual.attnpool.positional_embedding")[0]
        grid = _square_root(tokens - 1, "visual.attnpool.positional_embedding")
        vision = VisionConfig(
            kind="resnet", image_size=grid * 32, width=width, layers=stages, head_width=head_width(width * 32)
        )
    else:
        width, _, patch, _ = shape("visual.conv1.weight")
        tokens = shape("visual.positional_embedding")[0]
        grid = _square_root(tokens - 1, "visual.positional_embedding")
        vision = VisionConfig(
            kind="vit",
            image_size=grid * patch,
            width=width,
            layers=count("visual.transformer.resblocks."),
            patch_size=patch,
            head_width=head_width(width),
            mlp_ratio=shape("visual.transformer.resblocks.0.mlp.c_fc.weight")[0] / width,
        )
    text_width = shape("ln_final.weight")[0]
    text = TextConfig(
        context_length=shape("positional_embedding")[0],
        vocab_size=shape("token_embedding.weight")[0],
        width=text_width,
        layers=count("transformer.resblocks."),
        head_width=head_width(text_width),
        mlp_ratio=shape("transformer.resblocks.0.mlp.c_fc.weight")[0] / text_width,
    )
    bias = float(sd["logit_bias"].reshape(())) if "logit_bias" in sd else None
    scale = float(sd["logit_scale"].reshape(())) if "logit_scale" in sd else math.log(1 / 0.07)
    return ModelConfig(
        embed_dim=shape("text_projection")[1],
        vision=vision,
        text=text,
        act=act,  # type: ignore[arg-type]
        init_logit_scale=scale,
        init_logit_bias=bias,
        name=name,
    ).validate()


def compare_configs(given: ModelConfig, inferred: ModelConfig) -> list[str]:
    """Fields where a named/JSON config disagrees with the checkpoint's shapes (heads are not visible)."""
    diffs = []
    pairs = {"embed_dim": (given.embed_dim, inferred.embed_dim)}
    for tower in ("vision", "text"):
        g, i = getattr(given, tower), getattr(inferred, tower)
        for f in (
            "kind",
            "image_size",
            "width",
            "layers",
            "patch_size",
            "mlp_ratio",
            "context_length",
            "vocab_size",
        ):
            if hasattr(g, f) and not (f == "patch_size" and g.kind == "resnet"):
                pairs[f"{tower}.{f}"] = (getattr(g, f), getattr(i, f))
    for key, (a, b) in pairs.items():
        if a != b:
            diffs.append(f"{key}: config says {a}, checkpoint has {b}")
    return diffs


def _square_root(n: int, key: str) -> int:
    root = math.isqrt(n)
    if root * root != n:
        raise ConfigError(f"{key} has {n} + 1 positions, not a square grid plus a class token")
    return root
