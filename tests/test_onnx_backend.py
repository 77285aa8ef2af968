"""ONNX Runtime backends: export once beside the checkpoint, fp32 equal to PyTorch, int8 close, CLI flags."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from search_fixtures import WordTokenizer, make_folder, save_tiny_checkpoint

from clipforge.inference import Encoder, model_id
from clipforge.inference.onnx_backend import OnnxModel, default_cache_dir, onnx_model

# Looked up, not imported: onnx (with ml_dtypes) takes ~1.3 s to import, and under xdist every
# worker collects this file, but only one runs it.
pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnxruntime", "onnx")),
    reason="the ONNX backends need onnxruntime and onnx (pip install 'clipforge[export]')",
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tiny_model):
    """The default tiny model, its own weights (seed 3), shared by the module."""
    return tiny_model(seed=3)


def _inputs(model, batch: int = 3):
    g = torch.Generator().manual_seed(0)
    size = model.config.vision.image_size
    images = torch.randn(batch, 3, size, size, generator=g)  # (B, 3, S, S)
    tokens = WordTokenizer(vocab_size=model.config.text.vocab_size, context_length=model.config.text.context_length)(
        ["a dog on a beach", "two red circles", "x"][:batch]
    )
    return images, tokens


@pytest.mark.full_suite
def test_fp32_backend_matches_pytorch_and_is_cached(model, tmp_path):
    mid = model_id(model)
    onnx = onnx_model(model, backend="onnx", model_id=mid, cache_dir=tmp_path)
    assert isinstance(onnx, OnnxModel)
    images, tokens = _inputs(model)
    with torch.inference_mode():
        torch.testing.assert_close(onnx.encode_image(images), model.encode_image(images), atol=1e-4, rtol=0)
        torch.testing.assert_close(onnx.encode_text(tokens), model.encode_text(tokens), atol=1e-4, rtol=0)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["model_id"] == mid and meta["files"]["fp32"] == ["image.fp32.onnx", "text.fp32.onnx"]
    stamp = (tmp_path / "image.fp32.onnx").stat().st_mtime_ns
    onnx_model(model, backend="onnx", model_id=mid, cache_dir=tmp_path)  # second time: no export
    assert (tmp_path / "image.fp32.onnx").stat().st_mtime_ns == stamp
    # the wrapper is the model everywhere else: config, scale, identity
    assert onnx.config is model.config and model_id(onnx) == mid
    assert torch.equal(onnx.scale_and_bias()[0], model.scale_and_bias()[0])


@pytest.mark.full_suite
def test_int8_backend_is_close_to_fp32(model, tmp_path):
    onnx = onnx_model(model, backend="onnx-int8", model_id=model_id(model), cache_dir=tmp_path)
    assert (tmp_path / "image.int8.onnx").stat().st_size < (tmp_path / "image.fp32.onnx").stat().st_size
    images, tokens = _inputs(model)
    with torch.inference_mode():
        cos_img = torch.nn.functional.cosine_similarity(onnx.encode_image(images), model.encode_image(images))
        cos_txt = torch.nn.functional.cosine_similarity(onnx.encode_text(tokens), model.encode_text(tokens))
    # A tiny random tower has few, large weights per channel: int8 costs it more than ViT-B-32, whose
    # cosine to fp32 benchmarks/bench_backends.py measures (>= 0.998 on images and captions).
    assert cos_img.min() > 0.99 and cos_txt.min() > 0.95
    assert not torch.equal(onnx.encode_image(images), model.encode_image(images))  # really quantized


@pytest.mark.full_suite
def test_files_of_other_weights_are_replaced(model, tmp_path, tiny_model):
    onnx_model(model, backend="onnx", model_id="cf:not-this-model", cache_dir=tmp_path)
    other = tiny_model(seed=4)
    onnx = onnx_model(other, backend="onnx", model_id=model_id(other), cache_dir=tmp_path)
    images, _ = _inputs(other)
    with torch.inference_mode():
        torch.testing.assert_close(onnx.encode_image(images), other.encode_image(images), atol=1e-4, rtol=0)
    assert json.loads((tmp_path / "meta.json").read_text())["model_id"] == model_id(other)


def test_unnormalised_and_gradient_calls_fall_back_to_pytorch(model, tmp_path):
    onnx = onnx_model(model, backend="onnx", model_id=model_id(model), cache_dir=tmp_path)
    images, _ = _inputs(model)
    raw = onnx.encode_image(images, normalize=False)
    assert torch.allclose(raw, model.encode_image(images, normalize=False))
    images.requires_grad_(True)
    onnx.encode_image(images).sum().backward()
    assert images.grad is not None


@pytest.mark.cuda
def test_unknown_backend_and_gpu_are_refused(model, tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        onnx_model(model, backend="openvino", model_id="x", cache_dir=tmp_path)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="run on the CPU"):
            onnx_model(model.cuda(), backend="onnx", model_id="x", cache_dir=tmp_path)


@pytest.mark.full_suite
def test_encoder_load_caches_beside_the_checkpoint(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    torch_enc = Encoder.load(ckpt, device="cpu", precision="fp32")
    enc = Encoder.load(ckpt, device="cpu", backend="onnx")
    assert default_cache_dir(ckpt, enc.model_id) == Path(f"{ckpt}.onnx")
    assert (Path(f"{ckpt}.onnx") / "image.fp32.onnx").is_file()
    assert enc.model_id == torch_enc.model_id  # an index built with either backend serves both
    texts = ["a dog on a beach", "a red circle"]
    np.testing.assert_allclose(enc.encode_texts(texts), torch_enc.encode_texts(texts), atol=1e-4)


@pytest.mark.full_suite
def test_cli_index_and_search_with_onnx_int8(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    folder = tmp_path / "photos"
    make_folder(folder, 6)
    db = tmp_path / "p.cfidx"
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "clipforge"]
    out = subprocess.run(
        [*cmd, "index", str(folder), "--model", str(ckpt), "--db", str(db), "--backend", "onnx-int8",
         "--no-progress", "--workers", "0", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["index"]["added"] == 6
    out = subprocess.run(
        [*cmd, "search", "a red circle", "--db", str(db), "--backend", "onnx-int8", "-k", "3", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 3
