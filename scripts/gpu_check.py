"""The GPU machine check that ``scripts/gpu_check.sh`` runs (set-up is the shell script's part).

Steps, each a subprocess with its own time limit inside one overall budget (default 570 s, so a
whole check fits a 10-minute command):

1. ``probe``: torch sees a CUDA device (else nothing else is run: it would all be on the CPU);
2. ``tests``: ``pytest -m cuda``, every test that exercises CUDA; a skip counts as a failure;
3. ``encode-*``: ``benchmarks/bench_encode.py``, clipforge against open_clip in bf16 with fused
   (flash) attention only, ``torch.compile`` off and on, ViT-B-32 and RN50 (channels-last);
4. ``train-*``: ``benchmarks/bench_train.py``, the same for a training step, compile off and on.

Prints ONE JSON summary on stdout (the steps' own output goes to log files in ``--out-dir``) and
exits 1 when anything failed, timed out, was skipped, ran without its open_clip reference, or ran
anywhere but on the GPU. ``--dry-run`` runs nothing: it checks the plan (the scripts exist, every
benchmark command parses with that benchmark's own flags, tests carry the ``cuda`` marker) and
prints the same summary with each step ``planned``; CI runs it (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("clipforge", "open_clip")


@dataclass
class Step:
    name: str
    argv: list[str]
    timeout_s: int
    kind: str  # probe, tests, encode, train
    facts: dict[str, Any] = field(default_factory=dict)  # what the step measures (model, compile...)
    report: str | None = None  # the JSON file a benchmark writes


def plan(python: str, out_dir: Path, only: set[str]) -> list[Step]:
    """Every step of the check, in order."""
    probe = (
        "import json, torch; ok = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
        "'cuda': torch.version.cuda, 'available': ok, 'gpu': torch.cuda.get_device_name() if ok else None}))"
    )
    steps = [Step("probe", [python, "-c", probe], 60, "probe")]
    if "tests" in only:
        junit = out_dir / "cuda-tests.xml"
        argv = [python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "--junitxml", str(junit), "tests"]
        steps.append(Step("tests", argv, 180, "tests", report=str(junit)))
    bench_encode = str(ROOT / "benchmarks" / "bench_encode.py")
    bench_train = str(ROOT / "benchmarks" / "bench_train.py")
    if "encode" in only:
        for model, layout in (("ViT-B-32", []), ("RN50", ["--channels-last"])):
            for compiled in (False, True):
                name = f"encode-{model}-compile-{'on' if compiled else 'off'}"
                report = str(out_dir / f"{name}.json")
                argv = [
                    python, bench_encode, "--device", "cuda", "--modes", "bf16", "--peers", ",".join(PEERS),
                    "--model", model, *layout, "--sdpa", "flash", "--image-batch", "256", "--text-batch", "1024",
                    "--repeats", "5", "--json", report, *(["--compile"] if compiled else []),
                ]  # fmt: skip
                facts = {"model": model, "compile": compiled, "channels_last": bool(layout), "sdpa": "flash"}
                steps.append(Step(name, argv, 150 if compiled else 60, "encode", facts, report))
    if "train" in only:
        for compiled in (False, True):
            name = f"train-vit-small-compile-{'on' if compiled else 'off'}"
            report = str(out_dir / f"{name}.json")
            argv = [
                python, bench_train, "--device", "cuda", "--precisions", "bf16", "--sdpa", "flash",
                "--steps", "20", "--rounds", "2", "--peer-python", python, "--json", report,
                *(["--compile"] if compiled else []),
            ]  # fmt: skip
            facts = {"model": "vit-small", "compile": compiled, "sdpa": "flash"}
            steps.append(Step(name, argv, 150 if compiled else 60, "train", facts, report))
    return steps


def check_plan(steps: list[Step]) -> list[str]:
    """What is wrong with the plan itself, found without a GPU."""
    problems = []
    makefile = (ROOT / "Makefile").read_text()
    if not re.search(r"^setup:", makefile, re.M) or "TORCH_SPEC" not in makefile:
        problems.append("Makefile: no `setup` target taking TORCH_SPEC (the set-up runs `make setup TORCH_SPEC=torch`)")
    parsers: dict[str, argparse.ArgumentParser] = {}
    for step in steps:
        if step.kind in ("encode", "train"):
            script = step.argv[1]
            if script not in parsers:
                parsers[script] = _benchmark_parser(Path(script))
            try:
                parsers[script].parse_args(step.argv[2:])
            except SystemExit:
                problems.append(f"{step.name}: {Path(script).name} does not accept {' '.join(step.argv[2:])}")
        if step.kind == "tests" and not _marked_cuda():
            problems.append("tests: no test is marked `cuda`: `pytest -m cuda` would check nothing")
    return problems


def _benchmark_parser(script: Path) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(f"_gpu_check_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the benchmarks do their work in main() only
    return module.build_parser()


def _marked_cuda() -> list[str]:
    return [p.name for p in sorted((ROOT / "tests").glob("test_*.py")) if "pytest.mark.cuda" in p.read_text()]


def run_step(step: Step, *, budget_left: float, out_dir: Path) -> dict[str, Any]:
    """Run one step with its output in ``out_dir/<name>.log``; its record for the summary."""
    timeout = min(step.timeout_s, budget_left)
    record: dict[str, Any] = {"name": step.name, "argv": step.argv, "timeout_s": round(timeout), **step.facts}
    if timeout < 10:
        return {**record, "status": "not run", "why": "the time budget is spent"}
    log = out_dir / f"{step.name}.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    t0 = time.monotonic()
    with open(log, "w") as f:
        try:
            done = subprocess.run(step.argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=env, timeout=timeout)
            status = "ok" if done.returncode == 0 else f"failed (exit {done.returncode})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
    record.update(status=status, seconds=round(time.monotonic() - t0, 1), log=str(log))
    if status != "ok":
        record["log_tail"] = log.read_text(errors="replace")[-1500:]
    return record


def judge(step: Step, record: dict[str, Any]) -> list[str]:
    """The problems a finished step shows: failures, skips, a missing reference, CPU fall-backs."""
    if record["status"] != "ok":
        return [f"{step.name}: {record['status']} (see {record.get('log', 'its log')})"]
    log = Path(record["log"]).read_text(errors="replace")
    if step.kind == "probe":
        facts = json.loads(log.strip().splitlines()[-1])
        record.update(facts)
        if facts["available"]:
            return []
        return [f"probe: torch {facts['torch']} sees no CUDA device: everything would run on the CPU"]
    if step.kind == "tests":
        suite = ET.parse(step.report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        record.update(counts)
        skipped = [c.get("name") for c in suite.iter("testcase") if c.find("skipped") is not None]
        failed = counts["failures"] + counts["errors"]
        problems = [f"tests: {failed} CUDA tests failed"] if failed else []
        if skipped:
            problems.append(f"tests: {len(skipped)} CUDA tests skipped on the GPU machine ({', '.join(skipped[:5])})")
        if counts["tests"] == 0:
            problems.append("tests: no CUDA test ran")
        return problems
    rows = json.loads(Path(step.report).read_text())["rows"]
    record["rows"] = rows
    problems = [
        f"{step.name}: {row['peer']} ran on {row['device']}, not the GPU (it fell back to the CPU)"
        for row in rows
        if row["device"] != "cuda"
    ]
    missing = sorted(set(PEERS) - {row["peer"] for row in rows})
    if missing:
        problems.append(f"{step.name}: no result for {', '.join(missing)} (is open_clip_torch installed?)")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="check the plan and print it; run nothing")
    ap.add_argument("--python", default=sys.executable, help="the interpreter with the CUDA build of torch")
    ap.add_argument("--setup", default="", help="the set-up command the shell script ran (for the summary)")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "gpu_check_out", help="logs and benchmark JSON")
    ap.add_argument("--only", default="tests,encode,train", help="which parts: tests, encode, train")
    ap.add_argument("--budget-s", type=float, default=570.0, help="all steps together stop by then")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    if not only <= {"tests", "encode", "train"}:
        ap.error(f"--only: unknown part(s) {', '.join(sorted(only - {'tests', 'encode', 'train'}))}")
    out_dir = args.out_dir.resolve()
    steps = plan(args.python, out_dir, only)
    summary: dict[str, Any] = {"mode": "dry-run" if args.dry_run else "run", "setup": args.setup or None}
    problems = check_plan(steps)
    records = []
    if args.dry_run:
        records = [
            {"name": s.name, "argv": s.argv, "timeout_s": s.timeout_s, "status": "planned", **s.facts} for s in steps
        ]
        summary["cuda_tests_in"] = _marked_cuda()
    elif not problems:
        out_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + args.budget_s
        for step in steps:
            print(f"gpu_check: {step.name}", file=sys.stderr, flush=True)
            record = run_step(step, budget_left=deadline - time.monotonic(), out_dir=out_dir)
            found = judge(step, record)
            problems += found
            records.append(record)
            if step.kind == "probe" and found:
                break  # no GPU: everything else would run on the CPU
    summary.update(ok=not problems, problems=problems, steps=records)
    print(json.dumps(summary, indent=1))
    if problems:
        print("gpu_check: FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
