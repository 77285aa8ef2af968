"""Peak memory per rank: ``clipforge train --shard`` (FSDP2) vs plain DDP, 2 gloo processes.

    PYTHONPATH=src python benchmarks/bench_fsdp_memory.py [--model ViT-L-14] [--image-size 224] \
        [--steps 3] [--batch-size 4]

Each mode runs the real ``clipforge train`` under ``torch.distributed.run --nproc-per-node 2`` on the
CPU (gloo) for a few steps (AdamW, fp32 weights, no step checkpoint before the end). Every rank
reports its peak resident memory (``VmHWM``) at the end of training, before the final checkpoint
is gathered and written, and its resident memory right after start-up (Python + torch), so the
difference is what the model, gradients, optimiser state and activations cost. DDP holds all of
them on every rank (plus its gradient buckets); FSDP holds 1/N of them plus one gathered block.
Prints a markdown table with the FSDP/DDP ratio. Both modes run with glibc's mmap threshold fixed
at 64 KiB (``MALLOC_MMAP_THRESHOLD_``): otherwise freed buffers (FSDP's gathered blocks) stay in the
heap and RSS shows what the allocator keeps rather than what the tensors need. Mind the machine's
free memory: DDP costs about 20 bytes per parameter per rank (ViT-L/14: ~8.8 GB per rank).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(report: Path, argv: list[str]) -> None:
    """One rank: train, and note the peak memory when the loop first asks for the weights to save."""
    from clipforge.cli.main import main
    from clipforge.train import loop

    start_kib = vm_kib("VmRSS")  # Python + torch + clipforge imported

    marks: dict = {"start_rss_mib": start_kib / 1024}
    original = loop._Trainer._weights

    def weights(self):  # the first save: training is over (save_every > steps)
        marks.setdefault("train_peak_mib", vm_kib("VmHWM") / 1024)
        marks.setdefault("train_s", time.perf_counter() - t0)
        return original(self)

    loop._Trainer._weights = weights
    t0 = time.perf_counter()
    code = main(argv)
    marks["final_peak_mib"] = vm_kib("VmHWM") / 1024
    rank = os.environ.get("RANK", "0")
    (report / f"rank{rank}.json").write_text(json.dumps(marks))
    sys.exit(code)


def write_data(root: Path, *, size: int, n: int) -> Path:
    import numpy as np
    from PIL import Image

    rows = ["filepath,title"]
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append(f"{i}.png,a photo of thing number {i}")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root / "pairs.csv"


def run(mode: str, args: argparse.Namespace, work: Path, model: Path, data: Path) -> list[dict]:
    report = work / f"report-{mode}"
    report.mkdir()
    train = ["train", "--data", str(data), "--model", str(model), "--steps", str(args.steps),
             "--batch-size", str(args.batch_size), "--warmup-steps", "1", "--save-every", "1000",
             "--log-every", "1", "--precision", "fp32", "--workers", "0", "--no-progress",
             "--out", str(work / "runs"), "--name", mode]  # fmt: skip
    if mode == "fsdp":
        train.append("--shard")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           __file__, "--child", str(report), "--", *train]  # fmt: skip
    env = {"MALLOC_MMAP_THRESHOLD_": "65536", **os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{mode} failed:\n{done.stderr[-3000:]}")
    return [json.loads((report / f"rank{r}.json").read_text()) for r in range(2)]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="ViT-L-14")
    p.add_argument("--image-size", type=int, default=None, help="override the model's image size")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, [a for a in args.rest if a != "--"])
        return
    sys.path.insert(0, SRC)
    from clipforge.models import create_model, get_model_config

    cfg = get_model_config(args.model)
    if args.image_size:
        cfg = cfg.replace(vision=dataclasses.replace(cfg.vision, image_size=args.image_size))
    n_params = sum(p.numel() for p in create_model(cfg).parameters())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = work / "model.json"
        model.write_text(json.dumps(cfg.to_dict()))
        (work / "data").mkdir()
        data = write_data(work / "data", size=cfg.vision.image_size, n=4 * args.batch_size)
        results = {mode: run(mode, args, work, model, data) for mode in ("ddp", "fsdp")}
    print(f"{args.model} ({n_params / 1e6:.0f} M parameters, image {cfg.vision.image_size} px), "
          f"2 gloo processes, batch {args.batch_size}, {args.steps} AdamW steps, fp32\n")  # fmt: skip
    print("| mode | rank | start-up RSS (MiB) | peak RSS in training (MiB) | training cost (MiB) "
          "| peak incl. final save (MiB) |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for mode, ranks in results.items():
        for r, m in enumerate(ranks):
            cost = m["train_peak_mib"] - m["start_rss_mib"]
            print(f"| {mode} | {r} | {m['start_rss_mib']:.0f} | {m['train_peak_mib']:.0f} | {cost:.0f} | "
                  f"{m['final_peak_mib']:.0f} |")  # fmt: skip
    ddp = max(m["train_peak_mib"] for m in results["ddp"])
    fsdp = max(m["train_peak_mib"] for m in results["fsdp"])
    print(f"\nFSDP / DDP peak RSS per rank in training: {fsdp / ddp:.2f}x "
          f"({fsdp:.0f} vs {ddp:.0f} MiB; 4 bytes x 4 copies of {n_params / 1e6:.0f} M parameters = "
          f"{16 * n_params / 2**20:.0f} MiB of weights, gradients and AdamW moments)")  # fmt: skip


if __name__ == "__main__":
    main()
