"""scripts/gpu_check.sh: its CPU dry-run plans the GPU check, and a real run fails loudly off the GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["gpu_check"]


@pytest.mark.full_suite
def test_dry_run_prints_the_plan_as_json() -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--python", sys.executable], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)  # stdout is the JSON summary alone
    assert summary["mode"] == "dry-run" and summary["ok"] is True and summary["problems"] == []
    steps = {s["name"]: s for s in summary["steps"]}
    assert {s["status"] for s in steps.values()} == {"planned"}
    assert list(steps)[:2] == ["probe", "tests"]
    assert "-m" in steps["tests"]["argv"] and "cuda" in steps["tests"]["argv"]
    assert "test_cuda.py" in summary["cuda_tests_in"]
    encode = [s for name, s in steps.items() if name.startswith("encode-")]
    train = [s for name, s in steps.items() if name.startswith("train-")]
    assert {(s["model"], s["compile"]) for s in encode} == {(m, c) for m in ("ViT-B-32", "RN50") for c in (False, True)}
    assert {s["compile"] for s in train} == {False, True}
    for s in encode + train:
        argv = " ".join(s["argv"])
        assert "--device cuda" in argv and "--sdpa flash" in argv and "bf16" in argv
        assert ("--compile" in s["argv"]) == s["compile"]
        assert "clipforge,open_clip" in argv or "--peer-python" in argv  # always against open_clip
    assert all(s["channels_last"] == (s["model"] == "RN50") for s in encode)


def test_dry_run_rejects_a_flag_the_benchmark_does_not_have(gpu_check, monkeypatch, capsys) -> None:
    real_plan = gpu_check.plan

    def typo(*args, **kwargs):
        steps = real_plan(*args, **kwargs)
        steps[-1].argv.append("--channel-last")
        return steps

    monkeypatch.setattr(gpu_check, "plan", typo)
    assert gpu_check.main(["--dry-run"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is False and "does not accept" in summary["problems"][0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without a GPU")
@pytest.mark.full_suite
def test_without_a_gpu_a_real_run_stops_at_the_probe(gpu_check, tmp_path, capsys) -> None:
    assert gpu_check.main(["--python", sys.executable, "--out-dir", str(tmp_path)]) == 1
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert [s["name"] for s in summary["steps"]] == ["probe"]  # nothing else ran, on the CPU or anywhere
    assert "sees no CUDA device" in summary["problems"][0] and "FAILED" in out.err


def test_cpu_rows_a_missing_peer_and_skipped_tests_are_problems(gpu_check, tmp_path) -> None:
    report = tmp_path / "encode.json"
    report.write_text(json.dumps({"rows": [{"peer": "clipforge", "mode": "bf16", "device": "cpu", "img/s": 1.0}]}))
    (tmp_path / "encode.log").write_text("")
    step = gpu_check.Step("encode-x", [], 60, "encode", report=str(report))
    problems = gpu_check.judge(step, {"status": "ok", "log": str(tmp_path / "encode.log")})
    assert any("fell back to the CPU" in p for p in problems)
    assert any("no result for open_clip" in p for p in problems)

    junit = tmp_path / "t.xml"
    junit.write_text(
        '<testsuites><testsuite tests="2" failures="0" errors="0" skipped="1">'
        '<testcase name="test_a"/><testcase name="test_b"><skipped message="needs CUDA"/></testcase>'
        "</testsuite></testsuites>"
    )
    step = gpu_check.Step("tests", [], 60, "tests", report=str(junit))
    problems = gpu_check.judge(step, {"status": "ok", "log": str(tmp_path / "encode.log")})
    assert problems == ["tests: 1 CUDA tests skipped on the GPU machine (test_b)"]
    failed = gpu_check.judge(step, {"status": "timed out after 60 s", "log": "x.log"})
    assert failed == ["tests: timed out after 60 s (see x.log)"]
