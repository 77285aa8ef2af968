"""open_clip models with a Hugging Face text tower (``xlm-roberta-base-ViT-B-32``,
``xlm-roberta-large-ViT-H-14``, ...) <-> clipforge: pure mappings.

open_clip builds them as a ``CustomTextCLIP`` whose text tower is an ``HFTextEncoder``: a transformers
encoder named by ``text_cfg.hf_model_name`` (under ``text.transformer.``), pooled by
``hf_pooler_type`` and projected by ``hf_proj_type`` (under ``text.proj``). clipforge computes the
RoBERTa family (``model_type`` ``xlm-roberta`` / ``roberta``) with its own blocks
(:class:`~clipforge.models.text_encoder.EncoderTextTower`, ``text.kind="roberta"``), and M2M100's encoder
(NLLB-CLIP's ``facebook/nllb-200-*`` text models: ``text.kind="m2m100"``, whose ``cls_pooler`` reads the
first token, as an encoder output has no pooler output):

- poolers: ``mean_pooler`` -> ``pool="mean"``, ``cls_pooler`` -> ``"cls"`` (transformers' tanh
  pooler on ``<s>``), ``cls_last_hidden_state_pooler`` -> ``"first"``;
- projections: ``mlp`` (open_clip's default) -> ``proj="mlp"``, ``linear`` -> ``"linear"``, none
  (only when the width is ``embed_dim``) -> ``"none"``.

The open_clip files record only the Hub name of the text model; its sizes come from the Hub's
``config.json``, which clipforge knows for the published towers (:data:`HF_TEXT_CONFIGS`), or from a
local folder holding that ``config.json`` (as open_clip itself accepts for ``hf_model_name``). The
image tower is open_clip's standard one, mapped by :mod:`.open_clip`, or a timm SigLIP ViT mapped by
:mod:`.open_clip_siglip` (NLLB-CLIP's ``nllb-clip-base-siglip`` / ``-large-siglip``: attention pooling,
no image projection, a logit bias; computed with the activation timm builds that tower with, exact
GELU for the original SigLIP towers they name, as open_clip trained them; LayerNorm eps 1e-6 in the
image tower, the text model's 1e-5 in the text tower). Nothing here imports open_clip or transformers.
The module is a :class:`~.adapters.FormatAdapter`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from ..config import ENCODER_KINDS, ConfigError, ModelConfig, PreprocessConfig, TextConfig
from . import open_clip, open_clip_siglip
from .adapters import StateDict, check_all_mapped, inverse, is_siglip_layout, move_renamed, take

# The fields clipforge reads from the config.json of the text models open_clip's published
# multilingual weights name (FacebookAI/xlm-roberta-base and -large on the Hub).
_XLMR = {"model_type": "xlm-roberta", "vocab_size": 250002, "max_position_embeddings": 514, "type_vocab_size": 1,
         "pad_token_id": 1, "layer_norm_eps": 1e-5, "hidden_act": "gelu"}  # fmt: skip
HF_TEXT_CONFIGS: dict[str, dict[str, Any]] = {
    "xlm-roberta-base": {**_XLMR, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                         "intermediate_size": 3072},  # fmt: skip
    "xlm-roberta-large": {**_XLMR, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                          "intermediate_size": 4096},  # fmt: skip
}
# facebook/nllb-200-distilled-600M and -1.3B (NLLB-CLIP's text models): their encoders' fields
_NLLB = {"model_type": "m2m_100", "vocab_size": 256206, "d_model": 1024, "encoder_attention_heads": 16,
         "max_position_embeddings": 1024, "pad_token_id": 1, "scale_embedding": True,
         "activation_function": "relu"}  # fmt: skip
HF_TEXT_CONFIGS["facebook/nllb-200-distilled-600M"] = {**_NLLB, "encoder_layers": 12, "encoder_ffn_dim": 4096}
HF_TEXT_CONFIGS["facebook/nllb-200-distilled-1.3B"] = {**_NLLB, "encoder_layers": 24, "encoder_ffn_dim": 8192}
_MODEL_TYPES = ("xlm-roberta", "roberta", "m2m_100")
_POOLERS = {"mean_pooler": "mean", "cls_pooler": "cls", "cls_last_hidden_state_pooler": "first"}
_PROJ = {"mlp": "mlp", "linear": "linear", None: "none"}
# text_cfg keys of an HF text tower: read here, or without effect on the computation.
_TEXT_READ = {"hf_model_name", "hf_pooler_type", "hf_proj_type", "context_length"}
_TEXT_IGNORED = {"hf_tokenizer_name", "hf_model_pretrained", "output_tokens", "tokenizer_kwargs", "tokenizer_mode",
                 "vocab_size", "width", "heads", "layers", "mlp_ratio", "pad_id", "eos_id"}  # fmt: skip
# A stand-in open_clip text tower, so that open_clip's adapter checks the image tower and the top level.
_STAND_IN_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}
_SIGLIP_IMAGE_EPS = 1e-6  # timm's ViT LayerNorms
_SIGLIP_TOP = {"embed_dim", "vision_cfg", "text_cfg", "custom_text", "init_logit_scale", "init_logit_bias",
               "cast_dtype", "output_dict"}  # fmt: skip

# config.json field names: ours -> each family's
_ROBERTA_NAMES = {"width": "hidden_size", "heads": "num_attention_heads", "layers": "num_hidden_layers",
                  "ffn": "intermediate_size"}  # fmt: skip
_M2M_NAMES = {"width": "d_model", "heads": "encoder_attention_heads", "layers": "encoder_layers",
              "ffn": "encoder_ffn_dim"}  # fmt: skip

# ours -> open_clip, whole keys and prefixes of the text tower.
_EXACT = {
    "text.token_embed.weight": "text.transformer.embeddings.word_embeddings.weight",
    "text.pos_embed": "text.transformer.embeddings.position_embeddings.weight",
    "text.proj_mlp.fc1.weight": "text.proj.0.weight",
    "text.proj_mlp.fc2.weight": "text.proj.2.weight",
}
_PREFIX = {
    "text.norm_embed.": "text.transformer.embeddings.LayerNorm.",
    "text.pooler.": "text.transformer.pooler.dense.",
}
_BLOCKS = {"text.transformer.blocks.": "text.transformer.encoder.layer."}
_INNER = {  # inside a block: ours -> transformers' (q/k/v are fused apart)
    "attn.proj.": "attention.output.dense.",
    "norm1.": "attention.output.LayerNorm.",
    "mlp.fc1.": "intermediate.dense.",
    "mlp.fc2.": "output.dense.",
    "norm2.": "output.LayerNorm.",
}
_TYPE_EMBED = "text.transformer.embeddings.token_type_embeddings.weight"
_BUFFERS = ("text.transformer.embeddings.position_ids", "text.transformer.embeddings.token_type_ids",
            "text.transformer.embed_positions.weights", "text.transformer.embed_positions._float_tensor")  # fmt: skip
# the M2M100 encoder (open_clip keeps only the encoder of the encoder-decoder model): ours -> transformers'
_M2M_EXACT = {
    "text.token_embed.weight": "text.transformer.embed_tokens.weight",
    "text.proj_mlp.fc1.weight": "text.proj.0.weight",
    "text.proj_mlp.fc2.weight": "text.proj.2.weight",
}
_M2M_PREFIX = {"text.norm_final.": "text.transformer.layer_norm."}
_M2M_BLOCKS = {"text.transformer.blocks.": "text.transformer.layers."}
_M2M_INNER = {
    "attn.proj.": "self_attn.out_proj.",
    "norm1.": "self_attn_layer_norm.",
    "mlp.fc1.": "fc1.",
    "mlp.fc2.": "fc2.",
    "norm2.": "final_layer_norm.",
}
_M2M_QKV = ("text.transformer.layers.", "self_attn.", ("q_proj", "k_proj", "v_proj"))
_ROBERTA_QKV = ("text.transformer.encoder.layer.", "attention.self.", ("query", "key", "value"))


def is_hf_text_config(cfg: dict[str, Any]) -> bool:
    """An open_clip model config whose text tower is a Hugging Face model (``text_cfg.hf_model_name``)."""
    return bool((cfg.get("text_cfg") or {}).get("hf_model_name"))


def is_open_clip_hf_text(keys: Any) -> bool:
    """open_clip weights with a transformers BERT-family or M2M100 text tower."""
    keys = {str(k) for k in keys}
    return bool(keys & {"text.transformer.embeddings.word_embeddings.weight", "text.transformer.embed_tokens.weight"})


def tokenizer_repo(cfg: dict[str, Any]) -> str | None:
    """The Hub repo of an open_clip model config's HF tokenizer (``text_cfg.hf_tokenizer_name``: the
    legacy short names of the published text models get their ``FacebookAI/`` owner), or None."""
    name = str((cfg.get("text_cfg") or {}).get("hf_tokenizer_name") or "")
    if name in ("xlm-roberta-base", "xlm-roberta-large"):
        return f"FacebookAI/{name}"
    parts = name.split("/")
    return name if len(parts) == 2 and all(parts) and not Path(name).exists() else None


def hf_text_config(name: str) -> dict[str, Any]:
    """The transformers ``config.json`` of text model ``name``: a published one clipforge knows (with
    or without its ``FacebookAI/`` owner), or a local folder holding it."""
    known = HF_TEXT_CONFIGS.get(name.removeprefix("FacebookAI/"))
    if known is not None:
        return dict(known)
    path = Path(name) / "config.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a transformers config must be a JSON object")
        return data
    raise ConfigError(
        f"text_cfg.hf_model_name {name!r} is neither a text model clipforge knows ({', '.join(HF_TEXT_CONFIGS)}) "
        "nor a folder with its transformers config.json"
    )


def text_config_from(t: dict[str, Any], hf: dict[str, Any], *, embed_dim: int) -> TextConfig:
    """Our text tower from open_clip's ``text_cfg`` and the transformers config it names."""
    unknown = sorted(set(t) - _TEXT_READ - _TEXT_IGNORED)
    if unknown:
        raise ConfigError(f"unknown open_clip option(s) text_cfg.{', text_cfg.'.join(unknown)} for an HF text tower")
    model_type = hf.get("model_type")
    if model_type not in _MODEL_TYPES:
        raise ConfigError(
            f"HF text model_type {model_type!r} is not supported (clipforge computes {', '.join(_MODEL_TYPES)})"
        )
    m2m = model_type == "m2m_100"
    fixed = (
        {"activation_function": "relu", "scale_embedding": True}
        if m2m
        else {"hidden_act": "gelu", "type_vocab_size": 1, "layer_norm_eps": 1e-5, "position_embedding_type": "absolute"}
    )
    for key, want in fixed.items():
        if hf.get(key, want) != want:
            raise ConfigError(f"HF text config {key}={hf[key]!r} is not supported (only {want!r})")
    pooler = t.get("hf_pooler_type", "mean_pooler")
    if m2m and pooler == "cls_pooler":  # an encoder's output has no pooler_output: open_clip reads <first token>
        pooler = "cls_last_hidden_state_pooler"
    if pooler not in _POOLERS:
        raise ConfigError(
            f"open_clip option text_cfg.hf_pooler_type={pooler!r} is not supported ({', '.join(_POOLERS)})"
        )
    proj_type = t.get("hf_proj_type", "mlp")
    if proj_type not in _PROJ:
        raise ConfigError(f"open_clip option text_cfg.hf_proj_type={proj_type!r} is not supported (mlp, linear, null)")
    names = _M2M_NAMES if m2m else _ROBERTA_NAMES
    missing = [hf_key for hf_key in (*names.values(), "vocab_size", "max_position_embeddings") if hf_key not in hf]
    if missing:
        raise ConfigError(f"HF text config ({model_type}) lacks {', '.join(missing)}")
    width, heads = int(hf[names["width"]]), int(hf[names["heads"]])
    if proj_type is None and width != embed_dim:
        raise ConfigError(f"text_cfg.hf_proj_type=null needs the text width {width} to equal embed_dim {embed_dim}")
    if width % heads:
        raise ConfigError(f"HF text hidden_size {width} is not a multiple of num_attention_heads {heads}")
    positions = int(hf["max_position_embeddings"]) + (2 if m2m else 0)  # M2M100's table has 2 extra rows
    return TextConfig(
        kind="m2m100" if m2m else "roberta", context_length=int(t.get("context_length", 77)),
        vocab_size=int(hf["vocab_size"]), width=width, layers=int(hf[names["layers"]]), head_width=width // heads,
        mlp_ratio=int(hf[names["ffn"]]) / width, causal=False, pool=_POOLERS[pooler],  # type: ignore[arg-type]
        pad_id=int(hf.get("pad_token_id", 1)), max_positions=positions, proj=_PROJ[proj_type],  # type: ignore[arg-type]
    )  # fmt: skip


def config_from(cfg: dict[str, Any], *, name: str = "", preprocess: dict[str, Any] | None = None) -> ModelConfig:
    """A clipforge config from an open_clip model config with an HF text tower; anything clipforge
    would compute differently is a :class:`ConfigError`."""
    t = dict(cfg.get("text_cfg") or {})
    if not t.get("hf_model_name"):
        raise ConfigError("an open_clip HF text tower needs text_cfg.hf_model_name")
    hf = hf_text_config(str(t["hf_model_name"]))
    text = text_config_from(t, hf, embed_dim=int(cfg["embed_dim"]))
    if open_clip_siglip.is_siglip_config(cfg):
        return _siglip_config_from(cfg, text, name=name, preprocess=preprocess)
    base = open_clip.config_from({**cfg, "text_cfg": _STAND_IN_TEXT}, name=name, preprocess=preprocess)
    return base.replace(text=text)


def _siglip_config_from(
    cfg: dict[str, Any], text: TextConfig, *, name: str, preprocess: dict[str, Any] | None
) -> ModelConfig:
    """A timm SigLIP image tower beside the HF text tower ``text`` (NLLB-CLIP's SigLIP variants)."""
    unknown = sorted(set(cfg) - _SIGLIP_TOP)
    if unknown:
        raise ConfigError(f"unknown open_clip option(s) {', '.join(unknown)} beside a timm SigLIP image tower")
    vision = open_clip_siglip.image_tower(cfg)
    if int(cfg.get("embed_dim", vision.width)) != vision.width:
        raise ConfigError(f"embed_dim {cfg['embed_dim']} differs from the image width {vision.width} (no projection)")
    timm_name = str(cfg["vision_cfg"]["timm_model_name"])
    return ModelConfig(
        embed_dim=vision.width,
        vision=dataclasses.replace(vision, norm_eps=_SIGLIP_IMAGE_EPS),
        text=text,
        act=open_clip_siglip.timm_act(timm_name),  # the image tower's: the text model has its own
        init_logit_scale=float(cfg.get("init_logit_scale", math.log(10))),
        init_logit_bias=float(cfg.get("init_logit_bias", -10.0)),
        preprocess=open_clip_siglip.preprocess_from(preprocess or {}, image_size=vision.image_size),
        name=name,
    ).validate()


def config_to(cfg: ModelConfig) -> dict[str, Any]:
    """An open_clip model config for ``cfg``, whose text tower must be a published one (by its sizes)."""
    t = cfg.text
    if t.kind not in ENCODER_KINDS:
        raise ValueError("not a model with a Hugging Face text tower (text.kind='roberta' or 'm2m100')")
    if cfg.vision.kind == "vit" and not is_siglip_layout(cfg) and cfg.vision.uses_family_options:
        raise ValueError("open_clip export of an HF text tower beside an EVA-02 / PE-Core image tower is not supported")
    name = None
    for candidate, hf in HF_TEXT_CONFIGS.items():
        ours = text_config_from({"hf_pooler_type": _pooler_type(t), "hf_proj_type": _proj_type(t),
                                 "context_length": t.context_length}, hf, embed_dim=cfg.embed_dim)  # fmt: skip
        if ours == t:
            name = candidate
    if name is None:
        raise ValueError(
            f"open_clip builds HF text towers from a named transformers model; this one matches none of "
            f"{', '.join(HF_TEXT_CONFIGS)}"
        )
    out = _siglip_config_to(cfg) if is_siglip_layout(cfg) else open_clip.config_to(cfg.replace(text=TextConfig()))
    out["text_cfg"] = {"hf_model_name": name, "hf_tokenizer_name": name, "hf_pooler_type": _pooler_type(t),
                       "hf_proj_type": _proj_type(t), "context_length": t.context_length}  # fmt: skip
    return out


def _siglip_config_to(cfg: ModelConfig) -> dict[str, Any]:
    """open_clip's model config (but ``text_cfg``) for a timm SigLIP image tower: timm's named tower of
    ``cfg.vision``'s sizes, computed with its activation and LayerNorm eps, else ``ValueError``."""
    vision_cfg = open_clip_siglip.timm_tower_to(cfg.vision)
    name = vision_cfg["timm_model_name"]
    want = dataclasses.replace(open_clip_siglip.image_tower({"vision_cfg": vision_cfg}), norm_eps=_SIGLIP_IMAGE_EPS)
    if dataclasses.replace(cfg.vision, patch_dropout=0.0) != want or cfg.act != open_clip_siglip.timm_act(name):
        raise ValueError(
            f"open_clip's {name} is a SigLIP ViT with {open_clip_siglip.timm_act(name)} and LayerNorm eps "
            f"{_SIGLIP_IMAGE_EPS}; this image tower (act {cfg.act!r}) differs"
        )
    out: dict[str, Any] = {"embed_dim": cfg.embed_dim, "custom_text": True, "vision_cfg": vision_cfg}
    if cfg.init_logit_bias is not None:
        out["init_logit_bias"] = cfg.init_logit_bias
    return out


def _pooler_type(t: TextConfig) -> str:
    return inverse(_POOLERS)[t.pool]


def _proj_type(t: TextConfig) -> str | None:
    return {v: k for k, v in _PROJ.items()}[t.proj]


def preprocess_from(pp: dict[str, Any], *, image_size: int) -> PreprocessConfig:
    return open_clip.preprocess_from(pp, image_size=image_size)


preprocess_to = open_clip.preprocess_to


def state_dict_from(sd: StateDict) -> StateDict:
    """open_clip state dict with an HF (XLM-R or M2M100) text tower -> clipforge's. Unknown keys keep their
    names (the strict loader then names them); transformers' position buffers are dropped."""
    text = {k: v for k, v in sd.items() if k.startswith("text.") and k not in _BUFFERS}
    image = {k: v for k, v in sd.items() if not k.startswith("text.")}  # and logit_scale / logit_bias
    image_adapter = open_clip_siglip if open_clip_siglip.is_open_clip_siglip(image) else open_clip
    out = image_adapter.state_dict_from(image)
    m2m = "text.transformer.embed_tokens.weight" in text
    exact, prefixes, blocks, inner = _tables(m2m)
    mapped, rest = take(text, inverse(exact))
    out.update(mapped)
    if _TYPE_EMBED in rest and rest[_TYPE_EMBED].shape[0] == 1:  # one token type: its row is a constant
        out["text.type_embed"] = rest.pop(_TYPE_EMBED).reshape(-1)  # (1, W) -> (W,)
    if "text.proj.weight" in rest:  # a linear projection: Linear (E, W) -> our (W, E)
        out["text.proj"] = rest.pop("text.proj.weight").t().contiguous()
    _fuse_qkv(rest, out, *(_M2M_QKV if m2m else _ROBERTA_QKV))
    move_renamed(rest, out, inverse(prefixes), inverse(blocks), inverse(inner))
    return out | rest


def _tables(m2m: bool) -> tuple[dict[str, str], dict[str, str], dict[str, str], dict[str, str]]:
    """(whole keys, prefixes, block stacks, names inside a block) of one family: ours -> open_clip."""
    if m2m:
        return _M2M_EXACT, _M2M_PREFIX, _M2M_BLOCKS, _M2M_INNER
    return _EXACT, _PREFIX, _BLOCKS, _INNER


def fit_to(sd: StateDict, cfg: ModelConfig) -> StateDict:
    """Drop transformers' pooler from ``sd`` (ours) when ``cfg`` does not read it: open_clip's older
    checkpoints carry it with every pooler type."""
    if cfg.text.pool == "cls":
        return sd
    return {k: v for k, v in sd.items() if not k.startswith("text.pooler.")}


def state_dict_to(sd: StateDict) -> StateDict:
    """clipforge state dict (an encoder text tower) -> open_clip ``CustomTextCLIP`` with an ``HFTextEncoder``."""
    text = {k: v for k, v in sd.items() if k.startswith("text.")}
    image = {k: v for k, v in sd.items() if k not in text}
    out = (open_clip_siglip if "visual.attn_pool.probe" in image else open_clip).state_dict_to(image)
    m2m = "text.norm_final.weight" in text
    exact, prefixes, blocks, inner = _tables(m2m)
    mapped, rest = take(text, exact)
    out.update(mapped)
    if "text.type_embed" in rest:
        out[_TYPE_EMBED] = rest.pop("text.type_embed").reshape(1, -1)
    if "text.proj" in rest:
        out["text.proj.weight"] = rest.pop("text.proj").t().contiguous()  # (W, E) -> (E, W)
    _split_qkv(rest, out, *(_M2M_QKV if m2m else _ROBERTA_QKV))
    move_renamed(rest, out, prefixes, blocks, inner)
    check_all_mapped(rest, "open_clip HF text tower")
    return {k: v.contiguous() for k, v in out.items()}


def _fuse_qkv(rest: StateDict, out: StateDict, prefix: str, attn: str, qkv: tuple[str, str, str]) -> None:
    """transformers' separate q/k/v projections (``{prefix}{i}.{attn}{q|k|v}.``) -> one ``qkv`` per block."""
    ours = "text.transformer.blocks."
    blocks = sorted({k[len(prefix) :].split(".")[0] for k in rest if k.startswith(prefix) and f".{attn}{qkv[0]}." in k})
    for i in blocks:
        for kind in ("weight", "bias"):
            q, k, v = (rest.pop(f"{prefix}{i}.{attn}{n}.{kind}") for n in qkv)
            out[f"{ours}{i}.attn.qkv.{kind}"] = torch.cat([q, k, v])  # (3W, W) / (3W,)


def _split_qkv(rest: StateDict, out: StateDict, prefix: str, attn: str, qkv: tuple[str, str, str]) -> None:
    ours = "text.transformer.blocks."
    for key in [k for k in rest if k.startswith(ours) and ".attn.qkv." in k]:
        i, kind = key[len(ours) :].split(".")[0], key.rsplit(".", 1)[1]
        for n, part in zip(qkv, rest.pop(key).chunk(3), strict=True):
            out[f"{prefix}{i}.{attn}{n}.{kind}"] = part
