"""What a format adapter is, and the renaming tools the adapters share.

An adapter maps one foreign layout to clipforge and back, as pure functions with no I/O:
:mod:`.hf` (``CLIPModel``), :mod:`.hf_siglip` (``SiglipModel``), :mod:`.open_clip` (OpenAI's
layout) and :mod:`.open_clip_siglip` (open_clip's timm-tower SigLIP). Each of those modules is itself
a :class:`FormatAdapter`: its functions have the protocol's names, and ``isinstance(hf,
FormatAdapter)`` holds. :mod:`.sources` picks one from the source's config or parameter names,
:mod:`.export` from the model's layout (:func:`is_siglip_layout`); both then call it without knowing which it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from ..config import ModelConfig, PreprocessConfig

StateDict = dict[str, torch.Tensor]


@runtime_checkable
class FormatAdapter(Protocol):
    """One foreign layout <-> clipforge. ``config_from``/``preprocess_from`` raise ``ValueError``
    (or its subclass ``ConfigError``) for anything clipforge would compute differently;
    ``config_to``/``state_dict_to`` raise ``ValueError`` for a model the format cannot hold."""

    def config_from(
        self, data: dict[str, Any], *, name: str = "", preprocess: dict[str, Any] | None = None
    ) -> ModelConfig:
        """A clipforge config from the format's model config; ``preprocess`` is the format's own
        preprocessing config (``None``: the format's defaults)."""
        ...

    def config_to(self, cfg: ModelConfig) -> dict[str, Any]:
        """The format's model config for ``cfg``."""
        ...

    def preprocess_from(self, pp: dict[str, Any], *, image_size: int) -> PreprocessConfig:
        """The format's preprocessing config -> ours, for a model taking ``image_size`` pixels."""
        ...

    def preprocess_to(self, cfg: ModelConfig) -> dict[str, Any]:
        """The format's preprocessing config reproducing ``cfg.preprocess``."""
        ...

    def state_dict_from(self, sd: StateDict) -> StateDict:
        """The format's parameters -> ours. Keys without a rule are kept, so the strict loader names them."""
        ...

    def state_dict_to(self, sd: StateDict) -> StateDict:
        """Our parameters -> the format's."""
        ...


def is_siglip_layout(cfg: ModelConfig) -> bool:
    """A ViT read by attention pooling: the formats hold it in their SigLIP classes."""
    return cfg.vision.kind == "vit" and cfg.vision.pool == "map"


def refuse_family_options(cfg: ModelConfig, target: str) -> None:
    """``ValueError`` when ``cfg``'s image tower uses EVA-02 / PE-Core options or is MobileCLIP's
    FastViT, or its text tower is an XLM-RoBERTa / NLLB encoder or MobileCLIP-S0's MCT, which ``target``
    cannot hold."""
    if cfg.text.kind == "mct":
        raise ValueError(
            f"{target} has no MobileCLIP-S0 MCT text tower (nor has open_clip): keep it a clipforge checkpoint"
        )
    if cfg.text.kind != "clip":  # first: NLLB-CLIP's SigLIP variants set an image-tower option too (its eps)
        raise ValueError(f"{target} has no XLM-RoBERTa / NLLB text tower; export it to open_clip")
    if cfg.vision.kind == "fastvit":
        raise ValueError(f"{target} has no MobileCLIP FastViT image tower; export it to open_clip")
    if cfg.vision.kind == "vit" and cfg.vision.uses_family_options:
        raise ValueError(
            f"{target} has no EVA-02 / PE-Core image tower (RoPE, SwiGLU, sub-LN, MobileCLIP-B's conv stem, ...); "
            "export it to open_clip"
        )


def inverse(names: Mapping[str, str]) -> dict[str, str]:
    return {v: k for k, v in names.items()}


def take(sd: StateDict, names: Mapping[str, str]) -> tuple[StateDict, StateDict]:
    """``(renamed, rest)``: the entries of ``sd`` that ``names`` lists, under their new names
    ``names[key]``, and a copy of all the others for the next rules."""
    rest = dict(sd)
    return {new: rest.pop(old) for old, new in names.items() if old in rest}, rest


def weights_and_biases(modules: Mapping[str, str]) -> dict[str, str]:
    """``{"a.weight": "b.weight", "a.bias": "b.bias"}`` for each module ``a -> b`` (LayerNorms, Linears)."""
    return {f"{a}.{p}": f"{b}.{p}" for a, b in modules.items() for p in ("weight", "bias")}


def rename_prefix(key: str, prefixes: Mapping[str, str]) -> str | None:
    """``key`` with its first matching prefix replaced (``src -> dst``), or None when none matches."""
    for src, dst in prefixes.items():
        if key.startswith(src):
            return dst + key[len(src) :]
    return None


def rename_in_blocks(key: str, blocks: Mapping[str, str], inner: Mapping[str, str]) -> str | None:
    """``{src}{i}.{a}...`` -> ``{dst}{i}.{b}...`` for a stack of blocks ``src -> dst`` and a parameter
    ``a -> b`` inside a block; None when ``key`` is in no listed block or names no listed parameter."""
    for src, dst in blocks.items():
        if key.startswith(src):
            idx, _, tail = key[len(src) :].partition(".")
            for a, b in inner.items():
                if tail.startswith(a):
                    return f"{dst}{idx}.{b}{tail[len(a) :]}"
    return None


def move_renamed(
    rest: StateDict, out: StateDict, prefixes: Mapping[str, str], blocks: Mapping[str, str], inner: Mapping[str, str]
) -> None:
    """Move every key of ``rest`` that :func:`rename_prefix` (first) or :func:`rename_in_blocks` renames
    into ``out`` under its new name; the others stay in ``rest``."""
    for key in list(rest):
        name = rename_prefix(key, prefixes) or rename_in_blocks(key, blocks, inner)
        if name is not None:
            out[name] = rest.pop(key)


def check_all_mapped(rest: StateDict, target: str) -> None:
    """The keys left in ``rest`` once every rule has run have no name in ``target``."""
    if rest:
        raise ValueError(f"no {target} name for: {', '.join(sorted(rest))}")


def take_timm_trunk_pooling(rest: StateDict, out: StateDict) -> None:
    """Move a timm image trunk's position table and attention-pool weights (open_clip's SigLIP and
    EVA / PE-Core towers) from ``rest`` into ``out`` under clipforge's names, q and kv fused."""
    if "visual.trunk.pos_embed" in rest:
        pos = rest.pop("visual.trunk.pos_embed")
        out["visual.pos_embed"] = pos.reshape(-1, pos.shape[-1])  # (1, N, C) -> (N, C)
    if "visual.trunk.attn_pool.latent" in rest:
        out["visual.attn_pool.probe"] = rest.pop("visual.trunk.attn_pool.latent").reshape(-1)
    for kind in ("weight", "bias"):
        q, kv = f"visual.trunk.attn_pool.q.{kind}", f"visual.trunk.attn_pool.kv.{kind}"
        if q in rest and kv in rest:
            out[f"visual.attn_pool.attn.qkv.{kind}"] = torch.cat([rest.pop(q), rest.pop(kv)])  # (3C, ...)
