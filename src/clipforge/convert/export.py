"""Write a clipforge model in other libraries' formats: a Hugging Face ``CLIPModel`` directory and an
open_clip directory (``open_clip_config.json`` + ``open_clip_model.safetensors``). ONNX is in :mod:`.onnx`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..config import ENCODER_KINDS
from ..fileio import atomic_write, atomic_write_text
from ..models import CLIP
from . import hf, hf_siglip, open_clip, open_clip_eva, open_clip_hf_text, open_clip_mobileclip, open_clip_siglip
from .adapters import FormatAdapter, is_siglip_layout
from .detect import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS
from .onnx import export_onnx

EXPORT_FORMATS = ("hf", "open_clip", "onnx")
HF_TOKENIZER_CONFIG = "tokenizer_config.json"


def export_hf(model: CLIP, out_dir: str | Path, *, tokenizer: Any | None = None) -> Path:
    """A directory that ``transformers.CLIPModel.from_pretrained`` and ``CLIPProcessor`` load:
    ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` and the tokenizer files
    (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``).

    SigLIP-layout models are written as a ``SiglipModel`` that ``AutoProcessor`` loads with a
    ``SiglipImageProcessor`` and the tokenizer's own files (``spiece.model`` or ``tokenizer.json``)."""
    cfg = model.config
    siglip = is_siglip_layout(cfg)
    adapter: FormatAdapter = hf_siglip if siglip else hf
    config = adapter.config_to(cfg)  # raises for what the class cannot hold (ResNet towers, a logit bias, ...)
    if tokenizer is not None:
        config["text_config"].update(_hf_token_ids(tokenizer, siglip=siglip))
        if cfg.text.eos_id is not None and config["text_config"]["eos_token_id"] != cfg.text.eos_id:
            raise ValueError(
                f"the tokenizer's end token {config['text_config']['eos_token_id']} is not the one the model "
                f"reads its text features at (text.eos_id {cfg.text.eos_id})"
            )
    config["torch_dtype"] = "float32"
    out = _write(
        model,
        out_dir,
        adapter,
        weights="model.safetensors",
        configs={"config.json": config, "preprocessor_config.json": adapter.preprocess_to(cfg)},
    )
    if tokenizer is not None:
        written = tokenizer.save_hf(out)
        if not any(Path(f).name == HF_TOKENIZER_CONFIG for f in written):  # a CLIP BPE vocabulary
            _write_json(out / HF_TOKENIZER_CONFIG, _hf_tokenizer_config(cfg.text.context_length))
    return out


def _hf_token_ids(tokenizer: Any, *, siglip: bool) -> dict[str, int]:
    """The special tokens HF's text tower reads: CLIP's its start and end (it pools at the end token),
    SigLIP's its padding and end."""
    if siglip:
        return {"pad_token_id": getattr(tokenizer, "pad_id", 0), "eos_token_id": tokenizer.eot_token_id}
    return {"bos_token_id": tokenizer.sot_token_id, "eos_token_id": tokenizer.eot_token_id}


def _hf_tokenizer_config(context_length: int) -> dict[str, Any]:
    """Lets ``AutoTokenizer`` read ``vocab.json`` + ``merges.txt`` with CLIP's special tokens."""
    return {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": context_length,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "processor_class": "CLIPProcessor",
    }


def export_open_clip(model: CLIP, out_dir: str | Path, *, tokenizer: Any | None = None) -> Path:
    """A directory open_clip loads with ``create_model_and_transforms("local-dir:OUT")``.

    open_clip then tokenizes with OpenAI's vocabulary; the tokenizer's own files (``vocab.json`` +
    ``merges.txt``) are written beside it for clipforge and other readers."""
    cfg = model.config
    adapter: FormatAdapter = open_clip_siglip if is_siglip_layout(cfg) else open_clip  # SigLIP: a timm tower
    if cfg.vision.kind == "vit" and cfg.vision.uses_family_options:
        adapter = open_clip_eva  # EVA-02 / PE-Core: a timm Eva tower
    if cfg.text.kind in ENCODER_KINDS:
        adapter = open_clip_hf_text  # a transformers XLM-R / M2M100 text tower (HFTextEncoder)
    if cfg.vision.kind == "fastvit":
        adapter = open_clip_mobileclip  # MobileCLIP S: a timm FastVit tower
    config = {"model_cfg": adapter.config_to(cfg), "preprocess_cfg": adapter.preprocess_to(cfg)}
    out = _write(model, out_dir, adapter, weights=OPEN_CLIP_WEIGHTS[0], configs={OPEN_CLIP_CONFIG: config})
    if tokenizer is not None:
        tokenizer.save_hf(out)
    return out


def _write(
    model: CLIP, out_dir: str | Path, adapter: FormatAdapter, *, weights: str, configs: dict[str, dict[str, Any]]
) -> Path:
    """``model``'s parameters in ``adapter``'s names as ``out_dir/weights``, and each JSON of ``configs``."""
    out = Path(out_dir)
    state = adapter.state_dict_to({k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()})
    out.mkdir(parents=True, exist_ok=True)
    _save_safetensors(state, out / weights)
    for name, data in configs.items():
        _write_json(out / name, data)
    return out


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def export(model: CLIP, out: str | Path, *, to: str, tokenizer: Any | None = None) -> Path:
    """Write ``model`` as ``to`` (``hf``, ``open_clip`` or ``onnx``) into the directory ``out``."""
    if to == "hf":
        return export_hf(model, out, tokenizer=tokenizer)
    if to == "open_clip":
        return export_open_clip(model, out, tokenizer=tokenizer)
    if to == "onnx":
        return export_onnx(model, out, tokenizer=tokenizer).image_path.parent
    raise ValueError(f"unknown export format {to!r}; choose from {', '.join(EXPORT_FORMATS)}")
