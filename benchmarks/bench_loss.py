"""Time (forward + backward) and peak memory of contrastive losses at large batch, on CPU.

Compares open_clip's ``ClipLoss`` / ``SigLipLoss`` (peers, run only where importable) with
clipforge's ``clip_loss`` (naive and chunked) and chunked ``siglip_loss``. Every case runs in a
fresh subprocess: peak memory is the peak resident set size during forward + backward minus the
resident size once the inputs exist (so it includes the two input-sized gradients). Cases that
cannot fit under the memory cap are not started (the machine is shared) and are reported as OOM.

Run it with an interpreter that has both torch and open_clip, so that all cases use the same torch:

    /work/venv-oc/bin/python benchmarks/bench_loss.py                  # N = 4k, 16k, 32k, 64k
    /work/venv-oc/bin/python benchmarks/bench_loss.py --sizes 4096 8192 # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
GIB = 1 << 30

# Rough peak working set, in N^2 float32 matrices, of the implementations that materialise the
# logits; measured at N = 8192 with this script (see docs/bench/loss.md) and rounded up.
MATERIALISED_MATRICES = {"open_clip ClipLoss": 4.5, "clipforge naive": 5.5, "open_clip SigLipLoss": 5.5}

IMPLS = {  # name -> (loss kind, materialises N^2)
    "open_clip ClipLoss": ("clip", True),
    "clipforge naive": ("clip", True),
    "clipforge chunked": ("clip", False),
    "open_clip SigLipLoss": ("siglip", True),
    "clipforge chunked siglip": ("siglip", False),
}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


def _child(impl: str, n: int, dim: int, chunk_size: int, cap_gib: float) -> dict:
    """Run one case in this (fresh) process and return its measurements."""
    sys.path.insert(0, str(SRC))
    import torch
    import torch.nn.functional as F

    def make_loss(impl: str):
        if impl.startswith("open_clip"):
            from open_clip.loss import ClipLoss, SigLipLoss

            if impl == "open_clip ClipLoss":
                return lambda i, t, s, b: ClipLoss()(i, t, s)
            return lambda i, t, s, b: SigLipLoss()(i, t, s, b)
        from clipforge.losses import clip_loss, siglip_loss

        if impl == "clipforge naive":
            return lambda i, t, s, b: clip_loss(i, t, s)
        if impl == "clipforge chunked":
            return lambda i, t, s, b: clip_loss(i, t, s, chunk_size=chunk_size)
        return lambda i, t, s, b: siglip_loss(i, t, s, b, chunk_size=chunk_size)

    def inputs(n: int):
        g = torch.Generator().manual_seed(0)
        img = F.normalize(torch.randn(n, dim, generator=g), dim=-1).requires_grad_()
        txt = F.normalize(torch.randn(n, dim, generator=g), dim=-1).requires_grad_()
        scale = torch.tensor(1 / 0.07, requires_grad=True)
        bias = torch.tensor(-10.0, requires_grad=True)
        return img, txt, scale, bias

    loss_fn = make_loss(impl)
    loss_fn(*inputs(256)).backward()  # warm-up: load kernels, allocate thread pools
    args = inputs(n)
    baseline = _status_kib("VmRSS") * 1024
    try:  # reset the peak-RSS counter (VmHWM) so it only covers what follows
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    limit = _status_kib("VmSize") * 1024 + int(cap_gib * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        start = time.perf_counter()
        loss = loss_fn(*args)
        loss.backward()
        seconds = time.perf_counter() - start
    except (MemoryError, RuntimeError) as err:
        return {"status": "OOM", "error": str(err).splitlines()[0][:200]}
    peak = _status_kib("VmHWM") * 1024
    return {"status": "ok", "seconds": seconds, "peak_bytes": peak - baseline, "loss": loss.item(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _has_open_clip(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import open_clip.loss"], capture_output=True)
    return probe.returncode == 0


def _run_case(python: str, impl: str, n: int, args: argparse.Namespace) -> dict:
    cap = min(args.mem_cap_gib, _available_bytes() / GIB - 1.0)
    if IMPLS[impl][1]:
        need = MATERIALISED_MATRICES[impl] * n * n * 4 / GIB
        if need > cap:
            return {"status": "OOM", "error": f"not started: needs ~{need:.0f} GiB > cap {cap:.1f} GiB"}
    cmd = [python, __file__, "--child", impl, str(n), "--dim", str(args.dim),
           "--chunk-size", str(args.chunk_size), "--mem-cap-gib", f"{cap:.2f}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        if proc.returncode < 0:  # killed: by the kernel's OOM killer most likely
            return {"status": "OOM", "error": f"killed by signal {-proc.returncode}"}
        raise RuntimeError(f"case {impl} N={n} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results: dict, sizes: list[int], impls: list[str]) -> str:
    lines = ["| loss | implementation | N | time (s) | ns / N² | time/N² vs open_clip | peak above inputs "
             "| loss value |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for impl in impls:
        kind = IMPLS[impl][0]
        peer = "open_clip ClipLoss" if kind == "clip" else "open_clip SigLipLoss"
        last_peer = None  # open_clip's ns/N² at the largest N it ran
        for n in sizes:
            r, p = results.get((impl, n)), results.get((peer, n))
            if p and p["status"] == "ok":
                last_peer = p["seconds"] / n / n * 1e9
            if r is None:
                continue
            if r["status"] != "ok":
                lines.append(f"| {kind} | {impl} | {n} | OOM | — | — | {r['error']} | — |")
                continue
            per = r["seconds"] / n / n * 1e9
            if p and p["status"] == "ok":
                ratio = f"{per / last_peer:.2f}×"
            elif last_peer is not None:
                ratio = f"{per / last_peer:.2f}× †"
            else:
                ratio = "—"
            peak = r["peak_bytes"] / GIB
            lines.append(f"| {kind} | {impl} | {n} | {r['seconds']:.1f} | {per:.1f} | {ratio} "
                         f"| {peak:.2f} GiB | {r['loss']:.4f} |")
    lines.append("")
    lines.append("† open_clip did not run at this N: ratio against its ns/N² at the largest N it ran.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768, 65536])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS), metavar="IMPL")
    parser.add_argument("--oc-python", default=sys.executable,
                        help="interpreter with open_clip installed (default: this one)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for clipforge cases")
    parser.add_argument("--mem-cap-gib", type=float, default=20.0, help="address-space cap per case")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per case")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--table-from", type=Path, help="only print the table of a previous --json file")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        impl, n = args.child
        print(json.dumps(_child(impl, int(n), args.dim, args.chunk_size, args.mem_cap_gib)))
        return

    if args.table_from:
        rows = json.loads(args.table_from.read_text())
        results = {(r.pop("impl"), r.pop("n")): r for r in rows}
        sizes = sorted({n for _, n in results})
        impls = [i for i in IMPLS if any(impl == i for impl, _ in results)]
        print(_table(results, sizes, impls))
        return

    from tqdm import tqdm

    impls = list(args.impls)
    if any(i.startswith("open_clip") for i in impls) and not _has_open_clip(args.oc_python):
        print(f"open_clip not importable with {args.oc_python}: peers skipped", file=sys.stderr)
        impls = [i for i in impls if not i.startswith("open_clip")]
    results = {}
    cases = [(impl, n) for n in args.sizes for impl in impls]
    for impl, n in tqdm(cases, desc="loss cases", file=sys.stderr):
        python = args.oc_python if impl.startswith("open_clip") else args.python
        results[(impl, n)] = _run_case(python, impl, n, args)
        r = results[(impl, n)]
        tqdm.write(f"{impl:26s} N={n:6d} " + (f"{r['seconds']:8.2f} s  peak +{r['peak_bytes'] / GIB:.2f} GiB"
                                              if r["status"] == "ok" else r["error"]), file=sys.stderr)
    print(f"d = {args.dim}, float32, chunk_size = {args.chunk_size}, {os.cpu_count()} CPUs\n")
    print(_table(results, args.sizes, impls))
    if args.json:
        rows = [{"impl": impl, "n": n, **r} for (impl, n), r in results.items()]
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
