"""LiT: locked image-tower weights (and BatchNorm statistics) stay bit-identical through training."""

import pytest
import torch
from train_helpers import random_tokens

from clipforge.models import CLIP
from clipforge.train.accumulation import forward_backward
from clipforge.train.lit import lock_image_tower, set_train_mode
from clipforge.train.optim import build_optimizer
from clipforge.train.step import make_loss_fn


def _train(model, frozen, steps=3, size=16):
    opt = build_optimizer(model, lr=1e-2, weight_decay=0.1)  # decay would move any weight it saw
    loss_fn = make_loss_fn("clip", chunk_size=None, distributed=False)
    for s in range(steps):
        set_train_mode(model, frozen)
        forward_backward(model, [(torch.randn(6, 3, size, size), random_tokens(6, seed=s))], loss_fn)
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("kind", ["vit", "resnet"])
@pytest.mark.parametrize("unlocked", [0, 1])
def test_locked_weights_stay_bit_identical(kind, unlocked, tiny_model_config):
    arch, vision = {"vit": ("vit-tiny", {}), "resnet": ("RN50", {"layers": (1, 1, 1, 2)})}[kind]  # 2 blocks last
    cfg = tiny_model_config(arch, embed_dim=16, context_length=24, vision=vision)  # random_tokens: 24 tokens
    model = CLIP(cfg)
    size = cfg.vision.image_size
    frozen = lock_image_tower(model, unlocked_blocks=unlocked)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, frozen, size=size)
    after = model.state_dict()

    if kind == "vit":
        last = f"visual.transformer.blocks.{cfg.vision.layers - 1}."
        trainable = (last, "visual.norm_post", "visual.proj") if unlocked else ()
    else:
        trainable = ("visual.layer4.1.", "visual.attnpool") if unlocked else ()
    for key, value in after.items():
        if not key.startswith("visual."):
            continue
        if key.startswith(trainable):
            if value.is_floating_point() and "running" not in key and value.dtype != torch.long:
                assert not torch.equal(value, before[key]) or "bn" in key, f"{key} should train"
        else:
            assert torch.equal(value, before[key]), f"locked {key} changed"
    # the text tower trains
    assert not torch.equal(after["text.proj"], before["text.proj"])
    if kind == "resnet":  # running statistics of the locked BatchNorms did not move
        assert torch.equal(after["visual.stem.1.running_mean"], before["visual.stem.1.running_mean"])
        assert int(after["visual.stem.1.num_batches_tracked"]) == 0
        if unlocked:
            assert int(after["visual.layer4.1.bn1.num_batches_tracked"]) == 3


def test_unlocked_blocks_bounds(tiny_model):
    model = tiny_model(train=True)
    with pytest.raises(ValueError, match="unlocked_blocks"):
        lock_image_tower(model, unlocked_blocks=3)
