"""--shard (FSDP2) under torchrun: 2 gloo processes give DDP's losses, resume exactly from the
sharded checkpoints, and save one ordinary self-describing model."""

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_train_ddp import _args, _losses
from train_helpers import write_pairs_csv, write_tiny_model

from clipforge.checkpoint import load_checkpoint

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


def _rows(run) -> list[dict]:
    import json

    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _torchrun(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.timeout(180)  # 56 s on a quiet 2-core machine, much of it waiting on processes
@pytest.mark.distributed
def test_fsdp_matches_ddp_and_resumes_exactly(tmp_path):
    data = write_pairs_csv(tmp_path / "data", n=48)
    model = write_tiny_model(tmp_path / "tiny.json")
    out = tmp_path / "runs"
    _torchrun(*_args(data, model, out, "ddp", "--accum-steps", "2"))
    _torchrun(*_args(data, model, out, "fsdp", "--accum-steps", "2", "--shard", "--keep-last", "3"))

    a, b = _losses(out / "ddp"), _losses(out / "fsdp")
    assert len(a) == len(b) == 6
    for step, (x, y) in enumerate(zip(a, b, strict=True), start=1):
        assert abs(x - y) <= 1e-4, f"step {step}: DDP {x}, FSDP {y}"
    wa, wb = load_file(out / "ddp" / "model.safetensors"), load_file(out / "fsdp" / "model.safetensors")
    assert wa.keys() == wb.keys()  # the gathered, unsharded weights under the usual names
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-3, atol=1e-4, msg=key)
    model_, info = load_checkpoint(out / "fsdp" / "model.safetensors")  # one self-describing checkpoint
    assert info.provenance["step"] == 6
    ckpts = sorted(p.name for p in (out / "fsdp" / "checkpoints").iterdir())
    assert "step-000003.dcp" in ckpts and not any(n.endswith(".tmp") for n in ckpts)

    # as if killed after step 5: only step 3's checkpoint is left; resume from the shards
    shutil.copytree(out / "fsdp", out / "cut")
    for p in (out / "cut" / "checkpoints").glob("step-000006*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (out / "cut" / "model.safetensors").unlink()
    _torchrun(*_args(data, model, out, "cut", "--accum-steps", "2", "--shard", "--keep-last", "3", "--resume"))
    wc = load_file(out / "cut" / "model.safetensors")
    for key in wb:
        assert torch.equal(wb[key], wc[key]), f"{key} differs after resuming from the shards"
    assert _losses(out / "cut") == b

    # bf16 autocast + gradient checkpointing + periodic zero-shot eval (every rank computes it)
    labelled = tmp_path / "labelled"
    for i, png in enumerate(sorted((data.parent / "img").glob("*.png"))[:8]):
        (labelled / ("ab"[i % 2])).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, labelled / "ab"[i % 2] / png.name)
    extra = [
        "--shard",
        "--grad-checkpointing",
        "--precision",
        "bf16",
        "--eval-tasks",
        str(labelled),
        "--eval-every",
        "3",
    ]
    _torchrun(*_args(data, model, out, "bf16", *extra))
    rows = [r for r in _rows(out / "bf16") if "eval/zeroshot/labelled/top1" in r]
    assert [r["step"] for r in rows] == [3, 6] and (out / "bf16" / "checkpoints" / "best.safetensors").is_file()
