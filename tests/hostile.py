"""Hostile inputs shared by the hardening tests and ``scripts/attack_serve.py``: a zip bomb shaped
like a torch checkpoint, connections that hang on a server; and the check every expected failure
must pass (one error line, no traceback)."""

from __future__ import annotations

import socket
import zipfile
from pathlib import Path

import torch


def zip_bomb(path: Path, *, inflated: int = 256 << 20) -> Path:
    """A torch-style zip whose data member deflates ``inflated`` zero bytes from a few MB."""
    good = path.with_name("good.pt")
    torch.save({"w": torch.zeros(2)}, good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w", compresslevel=1) as dst:
        for info in src.infolist():
            dst.writestr(info, src.read(info))
        info = zipfile.ZipInfo("good/data/bomb")
        info.compress_type = zipfile.ZIP_DEFLATED
        with dst.open(info, "w", force_zip64=True) as f:
            block = bytes(1 << 24)
            for _ in range(inflated // len(block)):
                f.write(block)
    return path


def open_hanging(port: int, n: int) -> list[socket.socket]:
    """``n`` connections: a third idle, a third with half-sent headers, a third with half-sent bodies."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 3 == 1:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        elif i % 3 == 2:
            s.sendall(
                b"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"text": '
            )
        socks.append(s)
    return socks


def one_line_error(err: str, *needles: str) -> str:
    """The one line of ``err`` (a command's stderr) that says "error", checked to hold every needle;
    fails on a traceback or on several error lines."""
    lines = [line for line in err.strip().splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
