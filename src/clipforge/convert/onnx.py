"""ONNX export: separate image and text encoders, dynamic batch (and text length), checked with onnxruntime.

``image_encoder.onnx``: ``images`` float32 (B, 3, S, S), preprocessed -> ``image_embeds`` (B, E), normalised.
``text_encoder.onnx``: ``tokens`` int64 (B, T), T <= context length -> ``text_embeds`` (B, E), L2-normalised.
The text tower's padding skip (a data-dependent slice) is switched off while exporting, so the graph
handles any T; outputs are unchanged because attention is causal. ``clipforge_onnx.json`` records the
model config (preprocessing, context length) next to them.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..fileio import atomic_write_text
from ..models import CLIP
from ..optional import require
from .io import ConvertError

IMAGE_FILE, TEXT_FILE, META_FILE = "image_encoder.onnx", "text_encoder.onnx", "clipforge_onnx.json"


class OnnxExport(NamedTuple):
    image_path: Path
    text_path: Path
    max_abs_diff: float | None  # onnxruntime vs PyTorch on random inputs (None when not verified)


class _Encoder(nn.Module):
    """One encoder of ``model`` as a module of its own, for the exporter: ``method`` is
    ``"encode_image"`` (images (B, 3, H, W)) or ``"encode_text"`` (tokens (B, T)) -> (B, E)."""

    def __init__(self, model: CLIP, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.method)(inputs)


def export_onnx(
    model: CLIP,
    out_dir: str | Path,
    *,
    tokenizer: Any | None = None,
    opset: int = 17,
    verify: bool = True,
    atol: float = 1e-4,
) -> OnnxExport:
    """Export both encoders of ``model`` (as float32 on CPU) to ``out_dir``; with ``verify`` run them in
    onnxruntime and raise if any output differs from PyTorch's by more than ``atol``."""
    require("onnx", extra="export", purpose="ONNX export")  # the legacy exporter imports it
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model).float().cpu().eval()
    if hasattr(net.text, "skip_padding"):  # the causal CLIP tower's; an XLM-R encoder has none
        net.text.skip_padding = False  # a data-dependent slice would freeze the traced text length
    cfg = net.config
    size, ctx = cfg.vision.image_size, cfg.text.context_length
    images = torch.randn(2, 3, size, size)
    tokens = _example_tokens(2, ctx, ctx, vocab=cfg.text.vocab_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter
        _export(_Encoder(net, "encode_image"), images, out / IMAGE_FILE, names=("images", "image_embeds"), opset=opset)
        _export(_Encoder(net, "encode_text"), tokens, out / TEXT_FILE, names=("tokens", "text_embeds"), opset=opset,
                input_axes={1: "length"})
    meta = {
        "config": cfg.to_dict(),
        "image_encoder": {
            "file": IMAGE_FILE,
            "input": "images float32 (B, 3, H, W), preprocessed",
            "output": "image_embeds float32 (B, E), L2-normalised",
        },
        "text_encoder": {
            "file": TEXT_FILE,
            "input": f"tokens int64 (B, T), T <= {ctx}",
            "output": "text_embeds float32 (B, E), L2-normalised",
        },
    }
    atomic_write_text(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save_hf(out)
    diff = verify_onnx(model, out, atol=atol) if verify else None
    return OnnxExport(out / IMAGE_FILE, out / TEXT_FILE, diff)


def _export(encoder: nn.Module, example: torch.Tensor, path: Path, *, names: tuple[str, str], opset: int,
            input_axes: dict[int, str] | None = None) -> None:
    """One encoder as an ONNX graph from input ``names[0]`` to output ``names[1]``, with a dynamic batch
    (and the input's ``input_axes``)."""
    inp, outp = names
    torch.onnx.export(
        encoder,
        (example,),
        str(path),
        dynamo=False,
        opset_version=opset,
        input_names=[inp],
        output_names=[outp],
        dynamic_axes={inp: {0: "batch", **(input_axes or {})}, outp: {0: "batch"}},
    )


def verify_onnx(model: CLIP, out_dir: str | Path, *, atol: float = 1e-4, seed: int = 0) -> float:
    """Largest |onnxruntime - PyTorch| over random batches of two sizes and two text lengths."""
    ort = require("onnxruntime", extra="export", purpose="checking ONNX files")
    out = Path(out_dir)
    net = copy.deepcopy(model).float().cpu().eval()
    cfg = net.config
    gen = torch.Generator().manual_seed(seed)
    image_sess = ort.InferenceSession(str(out / IMAGE_FILE), providers=["CPUExecutionProvider"])
    text_sess = ort.InferenceSession(str(out / TEXT_FILE), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for batch in (1, 3):
            images = torch.randn(batch, 3, cfg.vision.image_size, cfg.vision.image_size, generator=gen)
            got = image_sess.run(None, {"images": images.numpy()})[0]
            worst = max(worst, float((torch.from_numpy(got) - net.encode_image(images)).abs().max()))
            for length in (cfg.text.context_length, max(2, cfg.text.context_length // 2)):
                tokens = _example_tokens(
                    batch, length, cfg.text.context_length, vocab=cfg.text.vocab_size, gen=gen
                )
                got = text_sess.run(None, {"tokens": tokens.numpy()})[0]
                worst = max(worst, float((torch.from_numpy(got) - net.encode_text(tokens)).abs().max()))
    if worst > atol:
        raise ConvertError(f"ONNX outputs differ from PyTorch by {worst:.2e} (> {atol:.0e})")
    return worst


def _example_tokens(
    batch: int, length: int, ctx: int, *, vocab: int, gen: torch.Generator | None = None
) -> torch.Tensor:
    """(batch, length) ids: start token, random text of varied length, end token (the largest id), zeros."""
    tokens = torch.zeros(batch, length, dtype=torch.long)
    for i in range(batch):
        n = int(torch.randint(2, min(length, ctx) + 1, (1,), generator=gen))
        tokens[i, 0] = vocab - 2
        tokens[i, 1 : n - 1] = torch.randint(1, vocab - 2, (n - 2,), generator=gen)
        tokens[i, n - 1] = vocab - 1
    return tokens
