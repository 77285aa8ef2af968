"""What the fast path (``models.fast_path``) buys: encode time with it and with the plain layers
(``fast_path.disabled()``), same model and inputs, calls interleaved so machine drift hits both.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_fast_path.py --model ViT-B-32 --batch 8 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from clipforge.models import create_model, fast_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, dtype=torch.bfloat16 if args.dtype == "bf16" else None).eval()
    cfg = model.config
    images = torch.randn(args.batch, 3, cfg.vision.image_size, cfg.vision.image_size)
    tokens = torch.randint(1, cfg.text.vocab_size - 1, (args.batch, cfg.text.context_length))  # (B, T)
    tokens[:, -1] = cfg.text.vocab_size - 1  # full-length texts: the end token last
    runs = {"image": lambda: model.encode_image(images), "text": lambda: model.encode_text(tokens)}
    times: dict[tuple[str, str], list[float]] = {(k, p): [] for k in runs for p in ("fast", "plain")}
    with torch.inference_mode():
        for r in range(args.rounds + 1):  # round 0 warms up
            for name, fn in runs.items():
                for path in ("fast", "plain") if r % 2 else ("plain", "fast"):
                    with fast_path.disabled() if path == "plain" else contextlib.nullcontext():
                        t = time.perf_counter()
                        fn()
                        if r:
                            times[name, path].append(time.perf_counter() - t)
    print(f"{args.model} batch {args.batch} {args.dtype}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print("| tower | fast ms | plain ms | plain / fast |\n|---|---|---|---|")
    for name in runs:
        fast, plain = (statistics.median(times[name, p]) * 1e3 for p in ("fast", "plain"))
        print(f"| {name} | {fast:.1f} | {plain:.1f} | {plain / fast:.2f}x |")


if __name__ == "__main__":
    main()
