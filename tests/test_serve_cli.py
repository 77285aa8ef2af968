"""`clipforge serve` as a real process on loopback: it starts, answers, survives garbage, stops."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from search_fixtures import make_folder, save_tiny_checkpoint

from clipforge.cli.main import main

httpx = pytest.importorskip("httpx", reason="httpx not installed")
pytest.importorskip("uvicorn", reason="uvicorn not installed (pip install 'clipforge[serve]')")

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.full_suite
def test_serve_command_end_to_end(tmp_path, capsys):
    root, db = tmp_path / "photos", tmp_path / "p.cfidx"
    make_folder(root, 5)
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    assert (
        main(["index", str(root), "--model", str(ckpt), "--db", str(db), "--workers", "0", "--no-progress"])
        == 0
    )
    capsys.readouterr()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clipforge",
            "serve",
            str(ckpt),
            "--db",
            str(db),
            "--port",
            str(port),
            "--device",
            "cpu",
            "--max-upload-mb",
            "0.5",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.1)
        assert httpx.get(f"{base}/api/health").json()["images"] == 5
        image = (root / "d0" / "img0003.bmp").read_bytes()
        r = httpx.post(f"{base}/api/search/image", params={"k": 2}, content=image)
        assert r.status_code == 200 and r.json()["hits"][0]["path"] == "d0/img0003.bmp"
        assert httpx.post(f"{base}/api/search/image", content=b"\0" * 600_000).status_code == 413
        assert (
            httpx.post(
                f"{base}/api/search", content=b"{oops", headers={"content-type": "application/json"}
            ).status_code
            == 422
        )
        with socket.create_connection(("127.0.0.1", port)) as raw:  # not even HTTP
            raw.sendall(b"\x16\x03\x01 garbage that is not a request\r\n\r\n")
            raw.recv(1024)
        assert httpx.get(f"{base}/").status_code == 200  # still serving
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
