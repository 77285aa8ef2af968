"""The same `clipforge train` under torchrun: 2 gloo processes give the losses of 1 process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import write_pairs_csv, write_tiny_model

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _args(data: Path, model: Path, out: Path, name: str, *extra: str) -> list[str]:
    return [
        "-m",
        "clipforge",
        "train",
        "--data",
        str(data),
        "--model",
        str(model),
        "--tokenizer",
        "train",
        "--vocab-size",
        "600",
        "--steps",
        "6",
        "--batch-size",
        "16",
        "--warmup-steps",
        "2",
        "--lr",
        "2e-3",
        "--log-every",
        "1",
        "--save-every",
        "3",
        "--precision",
        "fp32",
        "--out",
        str(out),
        "--name",
        name,
        "--workers",
        "0",
        "--no-progress",
        *extra,
    ]


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_match_one(tmp_path):
    data = write_pairs_csv(tmp_path / "data", n=48)
    model = write_tiny_model(tmp_path / "tiny.json")
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, *_args(data, model, out, "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    # two processes, and each splits its half into 2 micro-batches (GradCache + DDP no_sync)
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            *_args(data, model, out, "two", "--accum-steps", "2"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]

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
