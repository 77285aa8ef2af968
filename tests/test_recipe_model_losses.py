"""Recipe components in the model and the losses: FLIP patch dropout, label-smoothed InfoNCE, NT-Xent."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from clipforge.config import ConfigError, ModelConfig, VisionConfig
from clipforge.losses import clip_loss, nt_xent_loss
from clipforge.models import create_model, get_model_config
from clipforge.models.vit import drop_patches


def test_drop_patches_keeps_the_class_token_and_the_share() -> None:
    B, N, W = 5, 16, 4
    tokens = torch.arange(B * (1 + N), dtype=torch.float32).view(B, 1 + N, 1).expand(B, 1 + N, W)
    out = drop_patches(tokens, keep=round(0.75 * N), prefix=1)  # (B, 1 + 12, W)
    assert out.shape == (B, 1 + 12, W)
    assert torch.equal(out[:, 0], tokens[:, 0])  # the class token, first
    kept_sets = set()
    for b in range(B):
        ids = out[b, 1:, 0].tolist()
        assert len(set(ids)) == 12 and ids == sorted(ids)  # distinct patches of this image, in order
        assert all(tokens[b, 1, 0] <= i <= tokens[b, N, 0] for i in ids)
        kept_sets.add(tuple(i - tokens[b, 0, 0].item() for i in ids))
    assert len(kept_sets) > 1  # random per image


def _vit(p: float) -> torch.nn.Module:
    cfg = get_model_config("vit-tiny")
    cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, image_size=32, layers=1, patch_dropout=p),
                      text=dataclasses.replace(cfg.text, layers=1))
    torch.manual_seed(0)
    return create_model(cfg)


def test_patch_dropout_only_in_training() -> None:
    model = _vit(0.5)
    images = torch.randn(2, 3, 32, 32)
    visual = model.visual
    model.eval()
    assert visual.embed(images).shape[1] == 1 + 16  # eval: all 4 x 4 patches
    a = model.encode_image(images)
    reference = _vit(0.0).eval()
    assert torch.allclose(a, reference.encode_image(images), atol=1e-6)  # no effect in eval
    model.train()
    assert visual.embed(images).shape[1] == 1 + 8
    assert model.encode_image(images).shape == a.shape


def test_patch_dropout_is_a_vit_option() -> None:
    with pytest.raises(ConfigError, match="patch_dropout"):
        VisionConfig(kind="resnet", layers=(1, 1, 1, 1), width=8, image_size=64, patch_dropout=0.5).validate()
    with pytest.raises(ConfigError, match="patch_dropout"):
        VisionConfig(patch_dropout=1.0).validate()
    old = get_model_config("vit-tiny").to_dict()
    del old["vision"]["patch_dropout"]  # a config saved before the option existed
    assert ModelConfig.from_dict(old).vision.patch_dropout == 0.0


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.4])
def test_label_smoothing_equals_cross_entropy_with_smoothing(eps: float) -> None:
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(7, 5, generator=g), dim=-1)
    txt = F.normalize(torch.randn(7, 5, generator=g), dim=-1)
    scale = 12.0
    logits = scale * img @ txt.T
    target = torch.arange(7)
    expected = 0.5 * (
        F.cross_entropy(logits, target, label_smoothing=eps) + F.cross_entropy(logits.T, target, label_smoothing=eps)
    )
    assert torch.allclose(clip_loss(img, txt, scale, label_smoothing=eps), expected, atol=1e-6)
    chunked = clip_loss(img, txt, scale, label_smoothing=eps, chunk_size=3)
    assert torch.allclose(chunked, expected, atol=1e-5)


def test_label_smoothing_gradients_match_in_the_tiled_kernel() -> None:
    g = torch.Generator().manual_seed(1)
    a0, b0 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    grads = []
    for chunk in (None, 2):
        a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        clip_loss(a, b, 5.0, label_smoothing=0.2, chunk_size=chunk).backward()
        grads.append((a.grad, b.grad))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5) and torch.allclose(grads[0][1], grads[1][1], atol=1e-5)


def test_label_smoothing_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        clip_loss(torch.randn(2, 3), torch.randn(2, 3), 1.0, label_smoothing=1.0)


def _naive_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    n2, n = len(z), z1.shape[0]
    total = 0.0
    for a in range(n2):
        positive = (a + n) % n2
        denominator = sum(torch.exp(z[a] @ z[b] / t) for b in range(n2) if b != a)
        total = total - torch.log(torch.exp(z[a] @ z[positive] / t) / denominator)
    return total / n2


def test_nt_xent_equals_a_naive_implementation() -> None:
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    for t in (0.1, 0.5):
        assert torch.allclose(nt_xent_loss(z1, z2, temperature=t), _naive_nt_xent(z1, z2, t), atol=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent_loss(z1[:1], z2[:1])
