"""ONNX Runtime inference on the CPU: float32, or int8 weights (dynamic quantization).

:func:`onnx_model` exports a model's image and text encoders once (``clipforge.convert.onnx``),
optionally quantizes their matrix-multiply weights to int8 per output channel (activations stay
float and are quantized per batch at run time; attention's activation-by-activation products stay
float), and caches the files *beside the checkpoint* in ``<checkpoint>.onnx/`` (or, where that
folder cannot be written, in clipforge's cache under the model id). A ``meta.json`` there records
the model id the files were made from; files made from other weights are re-exported, never used.

The result, :class:`OnnxModel`, stands in for the PyTorch model: ``encode_image`` and
``encode_text`` run in ONNX Runtime; everything else (config, logit scale, state dict, and any
call that needs gradients or unnormalised features) goes to the PyTorch model it wraps. So the
zero-shot classifier, search and the server use it unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..convert.onnx import IMAGE_FILE, META_FILE, TEXT_FILE, export_onnx
from ..fileio import atomic_write_text, replace_durably
from ..models import CLIP
from ..pretrained.resolve import cache_dir

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")
INSTALL_HINT = "pip install 'clipforge[export]'"
_FILES = {
    "fp32": ("image.fp32.onnx", "text.fp32.onnx"),
    "int8": ("image.int8.onnx", "text.int8.onnx"),
}
_EXPORT_LOCK = threading.Lock()


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"the ONNX Runtime backends need onnxruntime and onnx ({e}): {INSTALL_HINT}") from e
    return onnxruntime


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def default_cache_dir(checkpoint: str | os.PathLike | None, model_id: str) -> Path:
    """``<checkpoint>.onnx/`` when that folder can be made and written, else the user cache."""
    if checkpoint is not None:
        beside = Path(f"{os.fspath(checkpoint).rstrip(os.sep)}.onnx")
        try:
            beside.mkdir(parents=True, exist_ok=True)
            if os.access(beside, os.W_OK):
                return beside
        except OSError:
            pass

    return cache_dir() / "onnx" / model_id.replace(":", "-")


def export_cached(model: CLIP, *, model_id: str, cache_dir: str | Path, weights: str = "fp32") -> tuple[Path, Path]:
    """(image, text) ONNX files of ``model`` with ``weights`` "fp32" or "int8", exported on first use."""
    if weights not in _FILES:
        raise ValueError(f"weights must be 'fp32' or 'int8', got {weights!r}")
    _onnxruntime()
    out = Path(cache_dir)
    image_file, text_file = (out / name for name in _FILES[weights])
    meta_path = out / "meta.json"
    with _EXPORT_LOCK:
        meta = _read_meta(meta_path)
        if meta.get("model_id") != model_id:  # another model's files (or none): start afresh
            for name in (*_FILES["fp32"], *_FILES["int8"]):
                (out / name).unlink(missing_ok=True)
            meta = {"model_id": model_id, "files": {}}
        if not (image_file.is_file() and text_file.is_file()):
            out.mkdir(parents=True, exist_ok=True)
            fp32_image, fp32_text = (out / name for name in _FILES["fp32"])
            if not (fp32_image.is_file() and fp32_text.is_file()):
                log.info("exporting %s to ONNX in %s (once)", model_id, out)
                _export_fp32(model, out)
            if weights == "int8":
                log.info("quantizing the ONNX encoders to int8 weights (once)")
                for src, dst in ((fp32_image, image_file), (fp32_text, text_file)):
                    _quantize_int8(src, dst)
            meta["files"][weights] = [image_file.name, text_file.name]
            atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    return image_file, text_file


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _export_fp32(model: CLIP, out: Path) -> None:
    tmp = out / ".export"
    export_onnx(model, tmp, verify=False)
    for src, dst in ((IMAGE_FILE, _FILES["fp32"][0]), (TEXT_FILE, _FILES["fp32"][1])):
        replace_durably(tmp / src, out / dst)
    (tmp / META_FILE).unlink(missing_ok=True)
    for leftover in tmp.iterdir():
        leftover.unlink()
    tmp.rmdir()


def _quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic quantization: int8 weights per output channel for MatMul/Gemm with constant weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = dst.with_name(dst.name + ".tmp")
    root = logging.getLogger()  # the quantizer logs advice on the root logger; keep the CLI quiet
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(
            str(src),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Gemm"],
            extra_options={"MatMulConstBOnly": True},  # attention's activation products stay float
        )
    finally:
        root.setLevel(level)
    replace_durably(tmp, dst)


def session(path: str | Path, *, threads: int | None = None):
    """An ONNX Runtime CPU session with all graph optimisations and ``threads`` intra-op threads."""
    ort = _onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxModel:
    """A :class:`~clipforge.models.CLIP` whose encoders run in ONNX Runtime (see the module docstring)."""

    def __init__(self, model: CLIP, image_session, text_session, *, backend: str) -> None:
        self._torch = model
        self._image = image_session
        self._text = text_session
        self.backend = backend

    def encode_image(self, images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Preprocessed images (B, 3, H, W) -> (B, E) float32, unit norm."""
        if not normalize or torch.is_grad_enabled() and images.requires_grad:
            return self._torch.encode_image(images, normalize=normalize)
        x = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())  # (B, 3, H, W)
        return torch.from_numpy(self._image.run(None, {"images": x})[0])  # (B, E)

    def encode_text(self, tokens: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Token ids (B, T) -> (B, E) float32, unit norm."""
        if not normalize:
            return self._torch.encode_text(tokens, normalize=normalize)
        ids = tokens.detach().to("cpu", torch.int64).numpy()  # (B, T)
        if getattr(self._torch.text, "skip_padding", False) and self._torch.text.causal and ids.size:
            # As the PyTorch tower does: features are read at the end token under causal attention,
            # so the padding after the longest text cannot matter. Cut it.
            rows = self._torch.text.read_rows(torch.from_numpy(ids))  # (B,)
            ids = ids[:, : int(rows.max()) + 1]  # (B, T') with T' = longest real text
        return torch.from_numpy(self._text.run(None, {"tokens": np.ascontiguousarray(ids)})[0])  # (B, E)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32  # what the sessions take and return

    def eval(self) -> OnnxModel:
        return self

    def __getattr__(self, name: str) -> Any:  # config, scale_and_bias, state_dict, logit_scale, ...
        if name.startswith("__") or name in ("_torch", "_image", "_text"):
            raise AttributeError(name)
        return getattr(self._torch, name)

    def __repr__(self) -> str:
        return f"OnnxModel({self.backend}, {self._torch.config.name or 'unnamed'})"


def onnx_model(
    model: CLIP,
    *,
    backend: str,
    model_id: str,
    checkpoint: str | os.PathLike | None = None,
    cache_dir: str | Path | None = None,
    threads: int | None = None,
) -> OnnxModel:
    """``model`` with its encoders in ONNX Runtime (``backend`` "onnx" or "onnx-int8")."""
    check_backend(backend)
    if backend == "torch":
        raise ValueError("onnx_model needs backend 'onnx' or 'onnx-int8'")
    if model.device.type != "cpu":
        raise ValueError(f"the ONNX Runtime backends run on the CPU; the model is on {model.device} (use device='cpu')")
    out = Path(cache_dir) if cache_dir is not None else default_cache_dir(checkpoint, model_id)
    weights = "int8" if backend == "onnx-int8" else "fp32"
    image_file, text_file = export_cached(model, model_id=model_id, cache_dir=out, weights=weights)
    return OnnxModel(
        model, session(image_file, threads=threads), session(text_file, threads=threads), backend=backend
    )
