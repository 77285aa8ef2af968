"""Import any supported checkpoint as a clipforge model, and write it as a self-describing checkpoint.

``import_model`` detects the format (:mod:`.detect`), reads tensors safely (:mod:`.io`), builds the
config (from the source's own config, a given open_clip name/JSON, or the tensor shapes), maps the
names with the source's :class:`~.adapters.FormatAdapter` and loads them strictly, so a missing, left-over
or mis-shaped tensor is an error naming it. ``convert`` adds the tokenizer and provenance and saves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..checkpoint import load_state_dict_strict, save_checkpoint
from ..config import ACTIVATIONS, ENCODER_KINDS, ConfigError, ModelConfig
from ..fileio import sha256_file
from ..models import CLIP, get_model_config
from ..tokenizer import (
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerError,
    get_tokenizer,
    is_tokenizer_dir,
    tokenizer_from_dir,
)
from ..version import __version__
from . import (
    apple_mobileclip,
    hf,
    hf_siglip,
    open_clip,
    open_clip_eva,
    open_clip_hf_text,
    open_clip_mobileclip,
    open_clip_siglip,
    openai,
)
from .adapters import FormatAdapter
from .detect import CLIPFORGE_WEIGHTS, FORMATS, Detected, classify_keys, detect
from .io import ConvertError, read_tensors

log = logging.getLogger(__name__)
StateDict = dict[str, torch.Tensor]

# open_clip names that are also clipforge's named configs; "-quickgelu" selects QuickGELU.
QUICKGELU_SUFFIX = "-quickgelu"


class Imported(NamedTuple):
    model: CLIP  # float32, eval mode, on CPU
    format: str  # "openai", "open_clip" or "hf"
    provenance: dict[str, Any]
    vocab_dir: Path | None  # a tokenizer folder (CLIP BPE or SigLIP SentencePiece) that came with the source


def import_model(
    source: str | Path,
    *,
    format: str = "auto",
    model: str | Path | None = None,
    act: str | None = None,
    reparameterize: bool = True,
) -> Imported:
    """Read ``source`` (file or directory) as a clipforge model without executing anything in it.

    ``format``: ``auto`` | ``openai`` | ``open_clip`` | ``hf`` | ``apple_mobileclip`` (Apple's own
    MobileCLIP ``.pt`` files, e.g. ``mobileclip_s0.pt``). ``model``: an open_clip model name
    (``ViT-B-32``, ``ViT-B-32-quickgelu``, ...) or a config JSON (open_clip's or clipforge's) for
    open_clip checkpoints, whose files record no architecture. ``act`` (``gelu``|``quick_gelu``)
    overrides the activation. ``reparameterize`` (default) folds a MobileCLIP FastViT tower's
    train-time branches for inference (:meth:`~clipforge.models.CLIP.reparameterize`); ``False``
    keeps them, for fine-tuning or exporting back to open_clip.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; choose from {', '.join(FORMATS)}")
    if act is not None and act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; use {', '.join(ACTIVATIONS)}")
    start = time.perf_counter()
    found = detect(source)
    if found.format == "clipforge":
        raise ConvertError(f"{found.weights}: already a clipforge checkpoint; load it with clipforge.load")
    if found.format == "hf":
        _expect(format, "hf", source)
        if model is not None:
            raise ConvertError(f"{source}: a Hugging Face folder brings its own config.json: call without `model=`")
        cfg, sd = _read_hf_dir(found)
        fmt = "hf"
        if act is not None:
            cfg = cfg.replace(act=act)
    else:
        sd, fmt, cfg = _read_openai_layout(found, format=format, model=model, act=act)
    folder = Path(source)
    vocab_dir = folder if is_tokenizer_dir(folder) else None
    with torch.device("meta"):  # no random initialisation: every tensor comes from the source
        net = CLIP(cfg)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}  # fp16 sources -> fp32
    try:
        load_state_dict_strict(net, sd, source=str(found.weights), assign=True)
    except ValueError as e:
        raise ConvertError(str(e)) from e
    if reparameterize:
        net.eval().reparameterize()
    files = _weight_files(found)
    provenance = {
        "source": str(Path(source).resolve()),
        "format": fmt,
        "sha256": {f.name: sha256_file(f) for f in files},
        "converted_with": f"clipforge {__version__}",
    }
    if model is not None:
        provenance["model"] = str(model)
    log.info("imported %s (%s) in %.1fs", source, fmt, time.perf_counter() - start)
    return Imported(net.eval(), fmt, provenance, vocab_dir)


def import_tokenizer(imported: Imported, *, vocab: str | Path | Any | None = None) -> Any:
    """The tokenizer for an imported model: ``vocab`` if given (a vocabulary file/folder or a
    ``Tokenizer``), else the source's own files, else OpenAI's vocabulary (a clear error if absent)."""
    ctx = imported.model.config.text.context_length
    if vocab is None and imported.vocab_dir is None and imported.model.config.text.kind in ENCODER_KINDS:
        raise ConvertError(
            "a model with an XLM-RoBERTa / NLLB text tower needs its SentencePiece vocabulary, and the source carries "
            'none clipforge reads: pass `vocab="FOLDER"` with the text model\'s tokenizer.json + tokenizer_config.json '
            "(e.g. FacebookAI/xlm-roberta-base's)"
        )
    if vocab is None and imported.vocab_dir is None and imported.model.config.text.pool == "eos":
        raise ConvertError(
            "a MetaCLIP 2 model (text read at eos_id) needs its own multilingual vocabulary, and the source "
            'carries none clipforge reads: pass `vocab="FOLDER"` with its tokenizer.json + tokenizer_config.json '
            "(XLMRobertaTokenizer)"
        )
    try:
        if isinstance(vocab, (Tokenizer, SentencePieceTokenizer)):
            tok = vocab
        elif vocab is not None:
            tok = get_tokenizer(str(vocab), context_length=ctx)
        elif imported.vocab_dir is not None:
            tok = tokenizer_from_dir(imported.vocab_dir, context_length=ctx)
        else:
            tok = get_tokenizer("openai", context_length=ctx)
    except (TokenizerError, FileNotFoundError, OSError, ImportError) as e:
        what = (
            "given vocabulary"
            if vocab is not None
            else ("source's tokenizer files" if imported.vocab_dir else "default OpenAI vocabulary")
        )
        hint = (
            ""
            if vocab is not None
            else (
                " The source carries no usable vocabulary: pass vocab=\"PATH\" (OpenAI's "
                "bpe_simple_vocab_16e6.txt.gz, or a folder with vocab.json + merges.txt, SigLIP's "
                "spiece.model or SigLIP 2's tokenizer.json)."
            )
        )
        raise ConvertError(f"cannot load the {what}: {e}.{hint}") from e
    if (
        imported.format == "open_clip"
        and imported.model.config.text.kind in ENCODER_KINDS
        and isinstance(tok, SentencePieceTokenizer)
        and tok.clean == "none"
        and not isinstance(vocab, SentencePieceTokenizer)
    ):  # open_clip's HFTokenizer cleans the text (ftfy, html.unescape, whitespace) before the XLM-R tokenizer
        tok = tok.with_clean("whitespace")
    model_vocab = imported.model.config.text.vocab_size
    if tok.vocab_size > model_vocab:
        raise ConvertError(
            f"the tokenizer has {tok.vocab_size} tokens but the model's embedding only {model_vocab}"
        )
    if tok.vocab_size != model_vocab:
        log.warning(
            "tokenizer has %d tokens, the model %d: check the vocabulary", tok.vocab_size, model_vocab
        )
    return tok


def convert(
    source: str | Path,
    out: str | Path,
    *,
    format: str = "auto",
    model: str | Path | None = None,
    act: str | None = None,
    vocab: str | Path | None = None,
    reparameterize: bool = True,
) -> Path:
    """Convert ``source`` into a clipforge checkpoint at ``out`` (a ``.safetensors`` file, or a
    directory that receives ``model.safetensors``). Returns the written path. ``reparameterize``: as
    for :func:`import_model` (MobileCLIP S towers are written folded unless it is False)."""
    imported = import_model(source, format=format, model=model, act=act, reparameterize=reparameterize)
    tokenizer = import_tokenizer(imported, vocab=vocab)
    out = Path(out)
    path = out if out.suffix == ".safetensors" else out / CLIPFORGE_WEIGHTS
    return save_checkpoint(path, imported.model, tokenizer=tokenizer, provenance=imported.provenance)


def resolve_model_config(model: str | Path) -> ModelConfig:
    """An open_clip model name (``RN50``, ``ViT-B-32-quickgelu``), an open_clip config JSON (plain or
    ``open_clip_config.json`` with ``model_cfg``) or a clipforge config JSON."""
    path = Path(model)
    if path.suffix == ".json" or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such model config")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from e
        if isinstance(data, dict) and "model_cfg" in data:  # open_clip_config.json
            return _open_clip_adapter(data["model_cfg"]).config_from(
                data["model_cfg"], preprocess=data.get("preprocess_cfg"), name=path.parent.name
            )
        if isinstance(data, dict) and "vision_cfg" in data:  # open_clip/model_configs/*.json
            return _open_clip_adapter(data).config_from(data, name=path.stem)
        return ModelConfig.from_dict(data)
    name = str(model)
    quick = name.endswith(QUICKGELU_SUFFIX)
    base = name[: -len(QUICKGELU_SUFFIX)] if quick else name
    try:
        cfg = get_model_config(base)
    except ConfigError as e:
        raise ConfigError(
            f"{e}. For other open_clip models pass their config JSON as `model=\"CONFIG.json\"` "
            f"(open_clip/model_configs/{name}.json)"
        ) from e
    # open_clip's names: "-quickgelu" selects QuickGELU, its absence GELU (SigLIP's keep their tanh GELU)
    act = "quick_gelu" if quick else ("gelu" if cfg.act == "quick_gelu" else cfg.act)
    return cfg.replace(act=act, name=name)


def _open_clip_adapter(model_cfg: dict[str, Any]) -> FormatAdapter:
    if open_clip_hf_text.is_hf_text_config(model_cfg):
        return open_clip_hf_text
    if open_clip_eva.is_eva_config(model_cfg):
        return open_clip_eva
    if open_clip_mobileclip.is_mobileclip_config(model_cfg):
        return open_clip_mobileclip
    return open_clip_siglip if open_clip_siglip.is_siglip_config(model_cfg) else open_clip


def _expect(requested: str, found: str, source: str | Path) -> None:
    if requested not in ("auto", found):
        raise ConvertError(f"{source}: looks like a {found} checkpoint, not {requested}")


def _read_openai_layout(
    found: Detected, *, format: str, model: str | Path | None, act: str | None
) -> tuple[StateDict, str, ModelConfig]:
    """A weights file (or open_clip folder) in OpenAI's names -> (our state dict, format, config)."""
    assert found.weights is not None
    sd, kind = read_tensors(found.weights)
    layout = classify_keys(sd)
    if layout == "hf":
        raise ConvertError(
            f"{found.weights}: Hugging Face weights; convert the model directory (with its config.json)"
        )
    if layout == "apple_mobileclip":
        return _read_apple_mobileclip(found, sd, format=format, model=model, act=act)
    if format == "apple_mobileclip":
        raise ConvertError(f"{found.weights}: not an Apple MobileCLIP checkpoint (no image_encoder.model.* tensors)")
    if layout == "clipforge":
        raise ConvertError(
            f"{found.weights}: clipforge parameter names without clipforge metadata; "
            "re-save it with clipforge.checkpoint.save_checkpoint"
        )
    if layout != "openai_layout":
        raise ConvertError(
            f"{found.weights}: no CLIP parameters found (first keys: {', '.join(list(sd)[:5])})"
        )
    if open_clip_hf_text.is_open_clip_hf_text(sd):
        return _read_open_clip_hf_text(found, sd, format=format, model=model, act=act)
    if open_clip_eva.is_open_clip_eva(sd):
        return _read_open_clip_timm(found, sd, format=format, model=model, adapter=open_clip_eva)
    if open_clip_mobileclip.is_open_clip_mobileclip(sd):
        return _read_open_clip_timm(found, sd, format=format, model=model, adapter=open_clip_mobileclip)
    if open_clip_siglip.is_open_clip_siglip(sd):
        return _read_open_clip_timm(found, sd, format=format, model=model, adapter=open_clip_siglip)
    openai_like = kind == "torchscript" or openai.has_openai_markers(sd)
    if found.format == "open_clip":
        _expect(format, "open_clip", found.weights)
        fmt = "open_clip"
        model = found.config if model is None else model
    elif format == "auto":
        if openai_like:  # OpenAI's own file: QuickGELU even when a config is given for the shapes
            fmt = "openai"
        elif model is not None or act is not None:
            fmt = "open_clip"
        else:
            raise ConvertError(
                f"{found.weights}: an OpenAI/open_clip-layout state dict that does not record its "
                'activation. Say what it is: `format="openai"` (OpenAI\'s release: QuickGELU), or '
                '`model="NAME"` or `model="CONFIG.json"` (open_clip), or `act="gelu"` or `act="quick_gelu"`'
            )
    else:
        if format == "hf":
            raise ConvertError(
                f"{found.weights}: OpenAI/open_clip weights, not a Hugging Face model directory"
            )
        fmt = format
    if fmt == "openai" and act is None:
        act = "quick_gelu"  # OpenAI trained every released model with QuickGELU
    sd = openai.clean(sd)
    try:
        inferred = openai.infer_config(sd, act=act or "gelu", exact_heads=model is None)
        if model is not None:
            cfg = resolve_model_config(model)
            diffs = openai.compare_configs(cfg, inferred)
            if diffs:
                raise ConfigError(f"{found.weights} does not match model config {model}: " + "; ".join(diffs))
            if act is not None:
                cfg = cfg.replace(act=act)
            if inferred.init_logit_bias is not None and cfg.init_logit_bias is None:
                cfg = cfg.replace(init_logit_bias=inferred.init_logit_bias)
        elif fmt == "open_clip" and act is None:
            raise ConfigError(
                'open_clip checkpoints do not record their activation: pass `model="NAME"`, '
                '`model="CONFIG.json"`, `act="gelu"` or `act="quick_gelu"`'
            )
        else:
            cfg = inferred
    except ConfigError as e:
        raise ConvertError(f"{found.weights}: {e}") from e
    return open_clip.state_dict_from(sd), fmt, cfg


def _read_open_clip_timm(
    found: Detected, sd: StateDict, *, format: str, model: str | Path | None, adapter: Any
) -> tuple[StateDict, str, ModelConfig]:
    """open_clip with a timm image tower (SigLIP, EVA-02, PE-Core, MobileCLIP's FastViT): the config
    comes from its ``open_clip_config.json``, a given config JSON or a clipforge name
    (``ViT-B-16-SigLIP``, ``EVA02-B-16``, ``MobileCLIP-S2``); the files record no other."""
    _expect(format, "open_clip", found.weights or "")
    eva, mobile = adapter is open_clip_eva, adapter is open_clip_mobileclip
    family, example = ("EVA-02 / PE-Core", "EVA02-B-16") if eva else ("SigLIP", "ViT-B-16-SigLIP")
    if mobile:
        family, example = "MobileCLIP FastViT", "MobileCLIP-S2"
    model = found.config if model is None else model
    if model is None:
        raise ConvertError(
            f"{found.weights}: open_clip {family} weights without their open_clip_config.json: pass "
            f'`model="NAME"` (e.g. {example}) or `model="CONFIG.json"`'
        )
    try:
        cfg = resolve_model_config(model)
    except ConfigError as e:
        raise ConvertError(f"{found.weights}: {e}") from e
    if mobile:
        fits = cfg.vision.kind == "fastvit"
        if fits and open_clip_mobileclip.is_folded(sd) != cfg.vision.reparameterized:  # timm-folded weights
            cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, reparameterized=not cfg.vision.reparameterized))
    elif eva:
        fits = cfg.vision.kind == "vit" and cfg.vision.uses_family_options
    else:
        fits = cfg.vision.kind == "vit" and cfg.vision.pool == "map" and not cfg.vision.uses_family_options
    if not fits:
        article = "an" if eva else "a"
        raise ConvertError(f"{found.weights}: {family} weights, but {model} is not {article} {family} architecture")
    return adapter.state_dict_from(sd), "open_clip", cfg


def _read_apple_mobileclip(
    found: Detected, sd: StateDict, *, format: str, model: str | Path | None, act: str | None
) -> tuple[StateDict, str, ModelConfig]:
    """Apple's own MobileCLIP checkpoint (``mobileclip_s0.pt``, ...): the architecture is read from the
    tensor shapes; a given ``model`` (a clipforge name such as ``MobileCLIP-S0``, or a config JSON:
    clipforge's or Apple's ``mobileclip/configs/*.json``) must agree with them and then names it."""
    _expect(format, "apple_mobileclip", found.weights or "")
    try:
        inferred = apple_mobileclip.infer_config(sd, name=Path(found.weights or "").stem)
        cfg = inferred
        if model is not None:
            cfg = _apple_model_config(model)
            diffs = apple_mobileclip.same_architecture(cfg, inferred)
            if diffs:
                raise ConfigError(f"does not match model config {model}: " + "; ".join(diffs))
            cfg = cfg.replace(  # the file says which towers it holds folded
                vision=dataclasses.replace(cfg.vision, reparameterized=inferred.vision.reparameterized),
                text=dataclasses.replace(cfg.text, reparameterized=inferred.text.reparameterized),
            )
        if act is not None:
            cfg = cfg.replace(act=act)
    except ConfigError as e:
        raise ConvertError(f"{found.weights}: {e}") from e
    return apple_mobileclip.state_dict_from(sd), "apple_mobileclip", cfg


def _apple_model_config(model: str | Path) -> ModelConfig:
    path = Path(model)
    if path.suffix == ".json" and path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from e
        if isinstance(data, dict) and "image_cfg" in data:  # Apple's mobileclip/configs/*.json
            return apple_mobileclip.config_from(data, name=path.stem)
    return resolve_model_config(model)


def _read_open_clip_hf_text(
    found: Detected, sd: StateDict, *, format: str, model: str | Path | None, act: str | None
) -> tuple[StateDict, str, ModelConfig]:
    """open_clip with a Hugging Face (XLM-RoBERTa) text tower: the config comes from its
    ``open_clip_config.json``, a given config JSON or a clipforge name (``xlm-roberta-base-ViT-B-32``)."""
    _expect(format, "open_clip", found.weights or "")
    model = found.config if model is None else model
    if model is None:
        raise ConvertError(
            f"{found.weights}: open_clip weights with a Hugging Face text tower, without their open_clip_config.json: "
            'pass `model="NAME"` (e.g. xlm-roberta-base-ViT-B-32) or `model="CONFIG.json"`'
        )
    try:
        cfg = resolve_model_config(model)
        if act is not None:
            cfg = cfg.replace(act=act)
    except ConfigError as e:
        raise ConvertError(f"{found.weights}: {e}") from e
    if cfg.text.kind not in ENCODER_KINDS:
        raise ConvertError(f"{found.weights}: weights with an XLM-RoBERTa / NLLB text tower, but {model} has none")
    return open_clip_hf_text.fit_to(open_clip_hf_text.state_dict_from(sd), cfg), "open_clip", cfg


def _read_hf_dir(found: Detected) -> tuple[ModelConfig, StateDict]:
    assert found.config is not None and found.weights is not None
    folder = found.config.parent
    pp_file = folder / "preprocessor_config.json"
    try:
        data = json.loads(found.config.read_text())
        adapter: FormatAdapter = hf_siglip if hf_siglip.is_siglip(data) else hf
        pp = json.loads(pp_file.read_text()) if pp_file.is_file() else None
        cfg = adapter.config_from(data, name=folder.name, preprocess=pp)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{folder}: cannot map the Hugging Face config: {e}") from e
    sd: StateDict = {}
    for f in _weight_files(found):
        part, _ = read_tensors(f)
        sd.update(part)
    return cfg, adapter.state_dict_from(sd)


def _weight_files(found: Detected) -> list[Path]:
    """The files that hold the tensors (the shards of a sharded Hugging Face checkpoint)."""
    assert found.weights is not None
    if found.weights.name.endswith(".index.json"):
        try:
            index = json.loads(found.weights.read_text())
            names = sorted(set(index["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise ConvertError(f"{found.weights}: invalid shard index ({e})") from e
        return [found.weights.parent / n for n in names]
    return [found.weights]


def load_source(
    source: str | Path,
    *,
    format: str = "auto",
    model: str | Path | None = None,
    act: str | None = None,
    vocab: str | Path | Any | None = None,
) -> tuple[CLIP, Any]:
    """(model, tokenizer) for any supported non-clipforge source, converted in memory."""
    imported = import_model(source, format=format, model=model, act=act)
    return imported.model, import_tokenizer(imported, vocab=vocab)
