"""bf16 autocast with gradient checkpointing trains on CPU (the recomputation uses the forward's
attention kernel), and equals the run without checkpointing."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import write_pairs_csv, write_tiny_model

from clipforge.train import TrainConfig
from clipforge.train.loop import fit


@pytest.mark.full_suite
def test_bf16_with_grad_checkpointing_matches_without(tmp_path):
    cfg = TrainConfig.from_flat(
        data=str(write_pairs_csv(tmp_path / "data", n=16)),
        model=str(write_tiny_model(tmp_path / "tiny.json", vocab_size=49408, context_length=16)),
        steps=2,
        batch_size=8,
        warmup_steps=1,
        precision="bf16",
        device="cpu",
        workers=0,
        out=str(tmp_path / "runs"),
        progress=False,
    )
    plain = fit(cfg.replace(name="plain"))
    ckpt = fit(cfg.replace(name="ckpt", grad_checkpointing=True))
    a, b = load_file(plain.model_path), load_file(ckpt.model_path)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4, msg=key)
