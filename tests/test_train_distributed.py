"""`clipforge train` under torchrun: 2 gloo processes give the losses of 1 process (DDP), and with
--shard (FSDP2) DDP's losses, resume exactly from the sharded checkpoints, and save one ordinary
self-describing model. One DDP run serves both comparisons (its torchrun is the cost of this file)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import train_args, write_pairs_csv, write_tiny_model

from clipforge.checkpoint import load_checkpoint

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _args(data: Path, model: Path, out: Path, name: str, *extra: str) -> list[str]:
    fixed = ("--lr", "2e-3", "--save-every", "3", "--precision", "fp32")
    args = train_args(data, model, out, name, *fixed, *extra, steps=6, batch_size=16, warmup_steps=2)
    return ["-m", "clipforge", *args]


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _torchrun(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(data, model, runs folder) after one DDP run, ``runs/two``: two processes, each splitting its
    half of every batch into 2 micro-batches (GradCache + DDP no_sync)."""
    root = tmp_path_factory.mktemp("ddp")
    data = write_pairs_csv(root / "data", n=48)
    model = write_tiny_model(root / "tiny.json")
    out = root / "runs"
    _torchrun(*_args(data, model, out, "two", "--accum-steps", "2"))
    return data, model, out


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_match_one(ddp_run):
    data, model, out = ddp_run
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, *_args(data, model, out, "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]

    a, b = _losses(out / "one"), _losses(out / "two")
    assert len(a) == len(b) == 6
    for step, (x, y) in enumerate(zip(a, b, strict=True), start=1):
        assert abs(x - y) <= 1e-4, f"step {step}: 1 process {x}, 2 processes {y}"
    assert a[-1] < a[0]  # it did learn
    wa, wb = load_file(out / "one" / "model.safetensors"), load_file(out / "two" / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-3, atol=1e-4, msg=key)
    # only rank 0 wrote: one metrics file, one set of checkpoints
    assert sorted(p.name for p in (out / "two" / "checkpoints").iterdir()) == [
        "step-000003.safetensors",
        "step-000003.state.pt",
        "step-000006.safetensors",
        "step-000006.state.pt",
    ]


@pytest.mark.slow
@pytest.mark.timeout(180)  # 4 torchruns (one of them the shared DDP run): ~40 s on a quiet 2-core machine
@pytest.mark.distributed
def test_fsdp_matches_ddp_and_resumes_exactly(ddp_run, tmp_path):
    data, model, out = ddp_run
    _torchrun(*_args(data, model, out, "fsdp", "--accum-steps", "2", "--shard", "--keep-last", "3"))

    a, b = _losses(out / "two"), _losses(out / "fsdp")
    assert len(a) == len(b) == 6
    for step, (x, y) in enumerate(zip(a, b, strict=True), start=1):
        assert abs(x - y) <= 1e-4, f"step {step}: DDP {x}, FSDP {y}"
    wa, wb = load_file(out / "two" / "model.safetensors"), load_file(out / "fsdp" / "model.safetensors")
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
