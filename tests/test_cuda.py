"""On a CUDA device: the towers agree with the CPU, and a mixed-precision training step runs there.

Skipped without CUDA; ``scripts/gpu_check.sh`` runs every test marked ``cuda`` on a GPU machine and
fails when any of them is skipped (a skip there means the work fell back to the CPU).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from factories import tiny_model
from train_helpers import random_tokens

from clipforge.train.accumulation import forward_backward
from clipforge.train.precision import autocast_for
from clipforge.train.step import make_loss_fn

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
ARCHITECTURES = ["vit-tiny", "rn-tiny", "siglip-tiny"]


def _inputs(model) -> tuple[torch.Tensor, torch.Tensor]:
    size = model.config.vision.image_size
    tokens = random_tokens(4, vocab_size=model.config.text.vocab_size, context_length=model.config.text.context_length)
    return torch.randn(4, 3, size, size), tokens


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_cuda_towers_match_the_cpu(arch: str) -> None:
    model = tiny_model(arch, seed=0)
    images, tokens = _inputs(model)
    with torch.no_grad():
        want = model.encode_image(images), model.encode_text(tokens)
        model = model.cuda()
        got = model.encode_image(images.cuda()), model.encode_text(tokens.cuda())
        assert all(g.device.type == "cuda" for g in got)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g.cpu(), w, atol=1e-4, rtol=1e-4)
        low = model.to(torch.bfloat16)
        halves = low.encode_image(images.cuda().bfloat16()), low.encode_text(tokens.cuda())
        for h, w in zip(halves, want, strict=True):
            assert F.cosine_similarity(h.float().cpu(), w).min() > 0.98


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_bf16_training_step_runs_on_cuda(arch: str) -> None:
    device = torch.device("cuda")
    model = tiny_model(arch, seed=0, train=True).to(device)
    images, tokens = _inputs(model)
    kind = "siglip" if model.logit_bias is not None else "clip"
    loss = forward_backward(
        model,
        [(images.to(device), tokens.to(device))],
        make_loss_fn(kind, chunk_size=None, distributed=False),
        autocast=autocast_for(device, torch.bfloat16),
    )
    assert loss.device.type == "cuda" and torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and g.device.type == "cuda" and torch.isfinite(g).all() for g in grads)
