"""Write a clipforge model in other libraries' formats: a Hugging Face ``CLIPModel`` directory and an
open_clip directory (``open_clip_config.json`` + ``open_clip_model.safetensors``). ONNX is in :mod:`.onnx`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_write, atomic_write_text
from ..models import CLIP
from . import hf, open_clip
from .detect import OPEN_CLIP_CONFIG, OPEN_CLIP_WEIGHTS

EXPORT_FORMATS = ("hf", "open_clip", "onnx")


def export_hf(model: CLIP, out_dir: str | Path, *, tokenizer: Any | None = None) -> Path:
    """A directory that ``transformers.CLIPModel.from_pretrained`` and ``CLIPProcessor`` load:
    ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` and the tokenizer files
    (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``)."""
    out = Path(out_dir)
    cfg = model.config
    config = hf.config_to_hf(cfg)  # raises for ResNet towers and sigmoid-loss biases
    if tokenizer is not None:  # the text tower pools at the tokenizer's end token
        config["text_config"].update(bos_token_id=tokenizer.sot_token_id, eos_token_id=tokenizer.eot_token_id)
    config["torch_dtype"] = "float32"
    state = hf.to_hf(_cpu_state(model))
    out.mkdir(parents=True, exist_ok=True)
    _save_safetensors(state, out / "model.safetensors")
    _write_json(out / "config.json", config)
    _write_json(out / "preprocessor_config.json", hf.preprocess_to_hf(cfg))
    if tokenizer is not None:
        tokenizer.save_hf(out)
        _write_json(out / "tokenizer_config.json", _hf_tokenizer_config(cfg.text.context_length))
    return out


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
    out = Path(out_dir)
    cfg = model.config
    config = {
        "model_cfg": open_clip.config_to_open_clip(cfg),
        "preprocess_cfg": open_clip.preprocess_to_open_clip(cfg),
    }
    state = open_clip.to_open_clip(_cpu_state(model))
    out.mkdir(parents=True, exist_ok=True)
    _save_safetensors(state, out / OPEN_CLIP_WEIGHTS[0])
    _write_json(out / OPEN_CLIP_CONFIG, config)
    if tokenizer is not None:
        tokenizer.save_hf(out)
    return out


def _cpu_state(model: CLIP) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


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
        from .onnx import export_onnx

        return export_onnx(model, out, tokenizer=tokenizer).image_path.parent
    raise ValueError(f"unknown export format {to!r}; choose from {', '.join(EXPORT_FORMATS)}")
