import math

import pytest
import torch

from clipforge.models import CLIP
from clipforge.train.optim import build_optimizer, lr_at, no_weight_decay, param_groups


def test_schedule_warmup_then_cosine():
    kw = dict(base_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-5)
    lrs = [lr_at(s, **kw) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak
    assert lrs[9] == pytest.approx(1e-3)  # warm-up ends at the peak
    assert all(b > a for a, b in zip(lrs[:9], lrs[1:10], strict=True))  # linear rise
    assert lrs[10] == pytest.approx(1e-3)  # cosine starts at the peak
    assert lrs[60] == pytest.approx((1e-3 + 1e-5) / 2)  # half way down the cosine
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:], strict=False))  # then only decreases
    assert lr_at(110, **kw) == pytest.approx(1e-5)
    assert lr_at(500, **kw) == pytest.approx(1e-5)  # stays at the floor past the end
    mid = lr_at(35, **kw)
    assert mid == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 25 / 100)))


def test_schedule_without_warmup():
    assert lr_at(0, base_lr=2.0, warmup_steps=0, total_steps=10) == pytest.approx(2.0)
    assert lr_at(10, base_lr=2.0, warmup_steps=0, total_steps=10) == pytest.approx(0.0)


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_no_weight_decay_on_norms_biases_embeddings_and_temperature(kind, tiny_model_config):
    arch = {"vit": "vit-tiny", "resnet": "RN50"}[kind]
    cfg = tiny_model_config(arch, embed_dim=16, context_length=24, init_logit_bias=-10.0)
    model = CLIP(cfg)
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    assert decayed | plain == set(names.values()) and not decayed & plain
    for must_not in (
        "logit_scale",
        "logit_bias",
        "text.token_embed.weight",
        "text.pos_embed",
        "text.norm_final.weight",
        "text.norm_final.bias",
        "text.transformer.blocks.0.attn.qkv.bias",
    ):
        assert must_not in plain
    if kind == "vit":
        assert {"visual.cls_token", "visual.pos_embed", "visual.norm_pre.weight"} <= plain
        assert {
            "visual.patch_embed.weight",
            "visual.proj",
            "visual.transformer.blocks.0.mlp.fc1.weight",
        } <= decayed
    else:
        assert {"visual.attnpool.pos_embed", "visual.stem.1.weight"} <= plain  # a BatchNorm weight
        assert "visual.stem.0.weight" in decayed  # a conv kernel
    assert {"text.proj", "text.transformer.blocks.1.attn.proj.weight"} <= decayed
    assert all(no_weight_decay(n, p) for n, p in model.named_parameters() if p.ndim < 2)


def test_optimizer_skips_frozen_parameters(tiny_model):
    model = tiny_model(train=True)
    for p in model.visual.parameters():
        p.requires_grad_(False)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.2)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_opt for p in model.visual.parameters())
    assert all(id(p) in in_opt for p in model.text.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(model, lr=1e-3, weight_decay=0.2)


def test_optimizer_step_moves_weights(tiny_model):
    model = tiny_model(train=True)
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.0)
    before = model.text.proj.detach().clone()
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([[62, 5, 63, 0], [62, 7, 9, 63]]))
    (out.image_features @ out.text_features.T).sum().backward()
    opt.step()
    assert not torch.equal(before, model.text.proj.detach())
