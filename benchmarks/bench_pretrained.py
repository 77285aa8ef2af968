"""Loading a model by pretrained name or Hub id, once it is cached, vs loading the cached clipforge
checkpoint directly (target: the name within 1.2x of the file).

A random ViT-B-32 (QuickGELU) is written as an OpenAI-layout float16 ``.pt`` and served from a local
HTTP server on 127.0.0.1 under a temporary registry name, and as an open_clip folder laid out in a
Hugging Face Hub cache. Each is fetched and converted once (timed, for information), then the
second-and-later loads are timed against ``clipforge.load(<cached .safetensors>)``, interleaved over
rounds so drift hits both alike. fp32 on CPU, no network:

    PYTHONPATH=src .venv/bin/python benchmarks/bench_pretrained.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test server and Hub layout

from hub_fixtures import FileServer, hub_repo  # noqa: E402

import clipforge  # noqa: E402
from clipforge.convert.export import export_open_clip  # noqa: E402
from clipforge.convert.open_clip import to_open_clip  # noqa: E402
from clipforge.models import create_model, get_model_config  # noqa: E402
from clipforge.pretrained import registry, resolve_model  # noqa: E402


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.update(CLIPFORGE_CACHE=str(root / "cf"), HF_HUB_CACHE=str(root / "hf"))
        model = create_model(get_model_config("ViT-B-32").replace(act="quick_gelu")).eval()
        sd = {k: v.half() if v.is_floating_point() else v for k, v in to_open_clip(model.state_dict()).items()}
        markers = {"input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
                   "vocab_size": torch.tensor(49408)}  # fmt: skip
        torch.save({**sd, **markers}, root / "ViT-B-32.pt")
        export_open_clip(model, root / "oc")
        hub_repo(root / "hf", "bench/vit-b-32", root / "oc")
        payload = (root / "ViT-B-32.pt").read_bytes()
        server = FileServer(payload, name="ViT-B-32.pt")
        rows = []
        with server.running():
            entry = {"architecture": "ViT-B-32", "act": "quick_gelu", "format": "openai", "url": server.url,
                     "sha256": hashlib.sha256(payload).hexdigest()}  # fmt: skip
            registry._registry()["ViT-B-32/bench"] = registry._entry("ViT-B-32/bench", entry)
            for name, label in (("ViT-B-32/bench", "pretrained name (URL source)"),
                                ("hf-hub:bench/vit-b-32", "Hub id (open_clip repo, HF_HUB_OFFLINE=1)")):  # fmt: skip
                if name.startswith("hf-hub:"):
                    os.environ["HF_HUB_OFFLINE"] = "1"
                first = _timed(lambda n=name: clipforge.load(n, device="cpu", precision="fp32", progress=False))
                cached = resolve_model(name).path
                by_name, direct = [], []
                for _ in range(args.rounds):
                    by_name.append(_timed(lambda n=name: clipforge.load(n, device="cpu", precision="fp32")))
                    direct.append(_timed(lambda p=cached: clipforge.load(p, device="cpu", precision="fp32")))
                rows.append((label, first, statistics.median(by_name), statistics.median(direct)))
    print("| reference | first load (fetch + convert) | later loads | cached checkpoint directly | ratio |")
    print("|---|---:|---:|---:|---:|")
    for label, first, named, direct in rows:
        print(f"| {label} | {first:.2f} s | {named:.3f} s | {direct:.3f} s | **{named / direct:.2f}×** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
