"""SIGKILL at any moment + --resume gives bit-identical final weights to an uninterrupted run."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import train_args, write_pairs_csv, write_tiny_model

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _cmd(data: Path, model: Path, out: Path, name: str, *extra: str) -> list[str]:
    fixed = ("--accum-steps", "2", "--lr", "3e-3", "--save-every", "2", "--precision", "fp32")
    args = train_args(data, model, out, name, *fixed, *extra, steps=14, batch_size=8, warmup_steps=3)
    return [sys.executable, "-m", "clipforge", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}


def _run(cmd):
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_sigkill_then_resume_gives_identical_weights(tmp_path):
    data = write_pairs_csv(tmp_path / "data", n=40, bad=True)
    model = write_tiny_model(tmp_path / "tiny.json")
    out = tmp_path / "runs"
    straight = _run(_cmd(data, model, out, "straight"))
    assert "skipped 3 unusable" in straight.stdout  # missing image, empty caption, broken image

    rng = random.Random(0)
    ckpts = out / "killed" / "checkpoints"
    kills = 0
    for wait_for_step in (4, 8):
        # resume (the first time: start) with a different worker count, and kill it at a random moment
        extra = ["--resume", "--workers", "1"] if kills else []
        proc = subprocess.Popen(
            _cmd(data, model, out, "killed", *extra),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 300
        # Older checkpoints are pruned (--keep-last), so wait for any state at or past the step.
        while not any(int(p.name[5:11]) >= wait_for_step for p in ckpts.glob("step-*.state.pt")):
            if proc.poll() is not None:
                break  # finished before that step was seen: nothing left to kill this round
            assert time.time() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1
    _run(_cmd(data, model, out, "killed", "--resume"))

    a = load_file(out / "straight" / "model.safetensors")
    b = load_file(out / "killed" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after kill + resume"
    # the metrics of the resumed run hold each step once, as in the straight run
    import json

    def losses(name):
        rows = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if "loss" in r]

    assert losses("killed") == losses("straight")


@pytest.mark.slow
def test_resume_refuses_a_changed_config(tmp_path):
    data = write_pairs_csv(tmp_path / "data", n=24)
    model = write_tiny_model(tmp_path / "tiny.json")
    out = tmp_path / "runs"
    cmd = _cmd(data, model, out, "r")
    cmd[cmd.index("--steps") + 1] = "2"
    _run(cmd)
    changed = _cmd(data, model, out, "r", "--resume", "--lr", "1e-2")
    done = subprocess.run(changed, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1 and "lr" in done.stderr and "cannot resume" in done.stderr
    again = subprocess.run(
        _cmd(data, model, out, "r"), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 1 and "--resume" in again.stderr
