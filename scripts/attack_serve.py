"""Rerun issue 13's attacks against a local `clipforge serve` and against the checkpoint readers.

Everything stays on 127.0.0.1 and every step is bounded in count and time. The script builds a
random-weight model (``--arch``, default ``vit-tiny``; the text tower costs what real weights
would), indexes ``--images`` generated pictures with `clipforge index`, starts `clipforge serve`
as a subprocess (defaults of the real command), then:

1. opens ``--hanging`` connections (a third idle, a third with half-sent headers, a third with a
   half-sent JSON body) and, while they hang on, times ``/api/health`` and ``/api/search``;
2. posts a ``--body-mb`` JSON body to ``/api/search`` (status; the server's RSS before and after);
3. posts 6,000 labels to ``/api/classify`` (status, time) while timing a search;
4. asks for ids >= 2**63 on every id route (statuses);
5. reads a hostile ``.pt`` whose member inflates to 1 GiB (peak RSS growth of a fresh process);
6. reads a safetensors file whose header nests 100,000 levels (the error).

    PYTHONPATH=src python scripts/attack_serve.py            # markdown figures on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
sys.path.insert(0, str(SRC))
sys.path.insert(0, str(ROOT / "tests"))  # the hostile inputs the tests use
from hostile import open_hanging, zip_bomb  # noqa: E402

CAPTIONS = ["a red circle", "a blue square", "a dog on a beach", "a cat on a sofa", "two green triangles"]


def build_checkpoint(path: Path, arch: str) -> Path:
    import torch

    from clipforge.checkpoint import save_checkpoint
    from clipforge.models import create_model, get_model_config
    from clipforge.tokenizer import get_tokenizer

    torch.manual_seed(0)
    cfg = get_model_config(arch)
    return save_checkpoint(
        path, create_model(cfg).eval(), tokenizer=get_tokenizer("openai", context_length=cfg.text.context_length)
    )


def write_images(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        blocks = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((16, 16, 1), dtype=np.uint8))
        (root / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / f"d{i % 3}" / f"{i:04d}.png")


def rss_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def request(port: int, method: str, path: str, body: bytes | None = None, headers=None, timeout=30.0):
    """(status, seconds) of one request on a fresh connection (status -1: transport failure)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        r.read()
        return r.status, time.monotonic() - t0
    except (OSError, http.client.HTTPException):
        return -1, time.monotonic() - t0
    finally:
        conn.close()


@contextlib.contextmanager
def server(ckpt: Path, db: Path, port: int):
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "clipforge", "serve", str(ckpt), "--db", str(db), "--port", str(port),
           "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while request(port, "GET", "/api/health", timeout=2)[0] != 200:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode()[-2000:])
            if time.monotonic() > deadline:
                raise TimeoutError("server did not come up in 120 s")
            time.sleep(0.2)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def summary(times: list[float]) -> str:
    ms = sorted(1000 * t for t in times)
    return f"median {statistics.median(ms):.1f} ms, max {ms[-1]:.1f} ms (n={len(ms)})"


def attack_slow_clients(port: int, n: int, rounds: int) -> list[str]:
    socks = open_hanging(port, n)
    try:
        health, search, statuses = [], [], set()
        for i in range(rounds):
            s, t = request(port, "GET", "/api/health", timeout=10)
            statuses.add(s)
            health.append(t)
            s, t = request(port, "GET", f"/api/search?q=a+red+circle+{i}&k=5", timeout=10)
            statuses.add(s)
            search.append(t)
        t0 = time.monotonic()
        closed = 0
        for s in socks:  # how long until the server drops them (header/body timeouts)
            s.settimeout(max(0.1, 30 - (time.monotonic() - t0)))
            with contextlib.suppress(OSError):
                while s.recv(4096):
                    pass
                closed += 1
        dropped = time.monotonic() - t0
    finally:
        for s in socks:
            s.close()
    return [
        f"| {n} idle/half-sent connections: health | {summary(health)}; the first, while the server takes "
        f"them in: {1000 * health[0]:.0f} ms; statuses {sorted(statuses)} |",
        f"| ... search meanwhile | {summary(search)} |",
        f"| ... closed by the server | {closed}/{n} within {dropped:.1f} s |",
    ]


def attack_big_body(port: int, pid: int, mb: int) -> list[str]:
    before = rss_kb(pid)
    body = b'{"text": "a", "pad": "' + b"x" * (mb * 1024 * 1024) + b'"}'
    status, took = request(port, "POST", "/api/search", body, {"Content-Type": "application/json"}, timeout=60)
    after, peak = rss_kb(pid), rss_kb(pid, "VmHWM")
    return [f"| {mb} MB JSON body to POST /api/search | status {status} in {1000 * took:.0f} ms; server RSS "
            f"{before / 1024:.0f} -> {after / 1024:.0f} MB (peak {peak / 1024:.0f} MB) |"]  # fmt: skip


def attack_labels(port: int, n: int) -> list[str]:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, format="PNG")
    labels = ",".join(str(i) for i in range(n))
    status, took = request(port, "POST", f"/api/classify?labels={labels}", buf.getvalue(), timeout=60)
    s2, t2 = request(port, "GET", "/api/search?q=a+blue+square&k=5", timeout=60)
    return [f"| {n} labels to POST /api/classify | status {status} in {1000 * took:.0f} ms; a search right after: "
            f"status {s2} in {1000 * t2:.0f} ms |"]  # fmt: skip


def attack_ids(port: int) -> list[str]:
    out = {}
    for big in (2**63, 2**64 + 5):
        for method, path, body in (
            ("GET", f"/api/thumb/{big}", None),
            ("GET", f"/api/image/{big}", None),
            ("POST", "/api/search", {"id": big}),
            ("POST", "/api/classify/indexed", {"id": big, "labels": ["a"]}),
            ("POST", "/api/moderate/indexed", {"id": big}),
        ):
            data = None if body is None else json.dumps(body).encode()
            status, _ = request(port, method, path, data, {"Content-Type": "application/json"})
            out[f"{method} {path.split('/')[2]}"] = status
    return [f"| ids 2**63 and 2**64+5 on every id route | statuses {sorted(set(out.values()))} |"]


def attack_checkpoints(tmp: Path) -> list[str]:
    bomb = zip_bomb(tmp / "bomb.pt", inflated=1 << 30)
    code = (
        "import resource, sys, time\n"
        "from clipforge.convert import ConvertError, read_tensors\n"
        "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "read_tensors(sys.argv[2]); base = peak(); t0 = time.monotonic()\n"
        "try:\n    read_tensors(sys.argv[1]); print('ACCEPTED')\n"
        "except ConvertError as e:\n    print('REFUSED', str(e).split(': ', 1)[1][:90])\n"
        "print(f'{base} {peak()} {time.monotonic() - t0:.3f}')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code, str(bomb), str(tmp / "good.pt")], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip
    verdict, figures = done.stdout.strip().splitlines()[-2:]
    base, peak, took = figures.split()
    header = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    deep = tmp / "deep.safetensors"
    deep.write_bytes(len(header).to_bytes(8, "little") + header)
    code = (
        "import sys\nfrom clipforge.convert import read_tensors\n"
        "try:\n    read_tensors(sys.argv[1])\nexcept Exception as e:\n    print(type(e).__name__ + ':', e)\n"
    )
    deep_out = subprocess.run([sys.executable, "-c", code, str(deep)], capture_output=True, text=True,
                              timeout=120, env=env).stdout.strip()  # fmt: skip
    return [
        f"| hostile .pt, member inflating to 1 GiB ({bomb.stat().st_size / 1e6:.1f} MB file) | {verdict} in "
        f"{float(took) * 1000:.1f} ms; peak RSS {int(base) / 1024:.0f} -> {int(peak) / 1024:.0f} MB |",
        f"| safetensors header nested 100,000 deep | {deep_out.replace(str(deep), 'deep.safetensors')[:140]} |",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="vit-tiny", help="architecture of the random-weight model")
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--hanging", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=10, help="health+search requests while they hang on")
    ap.add_argument("--body-mb", type=int, default=200)
    ap.add_argument("--labels", type=int, default=6000)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="attack-serve-") as d:
        tmp = Path(d)
        ckpt = build_checkpoint(tmp / "model.safetensors", args.arch)
        write_images(tmp / "photos", args.images)
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        subprocess.run([sys.executable, "-m", "clipforge", "index", str(tmp / "photos"), "--model", str(ckpt),
                        "--db", str(tmp / "p.cfidx"), "--workers", "0", "--no-progress", "--device", "cpu"],
                       check=True, env=env, stdout=subprocess.DEVNULL, timeout=600)  # fmt: skip
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        rows = ["| attack | result |", "|---|---|"]
        with server(ckpt, tmp / "p.cfidx", port) as proc:
            rows += [f"| baseline health / search | {summary([request(port, 'GET', '/api/health')[1]])} / "
                     f"{summary([request(port, 'GET', '/api/search?q=dog&k=5')[1]])} |"]  # fmt: skip
            rows += attack_slow_clients(port, args.hanging, args.rounds)
            rows += attack_big_body(port, proc.pid, args.body_mb)
            rows += attack_labels(port, args.labels)
            rows += attack_ids(port)
            alive = request(port, "GET", "/api/health")[0]
            rows += [f"| server still answering afterwards | health status {alive} |"]
        rows += attack_checkpoints(tmp)
    print(f"model {args.arch} (random weights), {args.images} indexed images, `clipforge serve` defaults\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
