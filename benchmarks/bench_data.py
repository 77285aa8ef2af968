"""Data pipeline throughput: shapes generation, and on-the-fly decoding vs the pre-decoded cache.

    python benchmarks/bench_data.py [--n 1000] [--workers 2]

Prints markdown tables; ratios compare against the peer measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from clipforge.config import PreprocessConfig
from clipforge.data import CachedPairs, Collator, ShapesSpec, build_cache, build_dataset, prepare_images
from clipforge.data.shapes import make_shapes_sample
from clipforge.data.transforms import image_transform


def tokens(texts: list[str]) -> torch.Tensor:
    return torch.zeros(len(texts), 77, dtype=torch.long)


def rate(fn, n: int) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def bench_shapes(n: int) -> None:
    spec = ShapesSpec(seed=123)
    cold = rate(lambda: [make_shapes_sample(i, split="train", spec=spec) for i in range(n)], n)
    warm = rate(lambda: [make_shapes_sample(i, split="train", spec=spec) for i in range(n, 2 * n)], n)
    print("| shapes generation (64x64, 1 process) | samples/s |\n|---|---|")
    print(f"| first {n} (mask cache filling) | {cold:,.0f} |\n| next {n} (warm) | {warm:,.0f} |\n")


def make_photos(root: Path, n: int) -> Path:
    """Smooth random JPEGs of 320x240 with a little noise, a CSV beside them."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    lines = ["filepath,title"]
    for i in range(n):
        a, b, c = rng.uniform(0.01, 0.05, size=3)
        base = np.stack([np.sin(a * xx + i), np.cos(b * yy), np.sin(c * (xx + yy))], axis=-1)
        img = ((base * 0.5 + 0.5) * 220 + rng.normal(0, 8, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"{i}.jpg", quality=90)
        lines.append(f"{i}.jpg,photo {i}")
    (root / "photos.csv").write_text("\n".join(lines) + "\n")
    return root / "photos.csv"


def epoch_rate(
    dataset, workers: int, pre: PreprocessConfig, epochs: int = 2, normalise: bool = True
) -> float:
    """Samples/s over ``epochs`` epochs (worker start-up included, as in training)."""
    loader = DataLoader(dataset, batch_size=64, num_workers=workers, collate_fn=Collator(tokens))

    def run() -> None:
        for _ in range(epochs):
            for batch in loader:
                if normalise:
                    prepare_images(batch.images, mean=pre.mean, std=pre.std)

    return rate(run, epochs * len(dataset))


def bench_cache(n: int, workers: int, size: int) -> None:
    pre = PreprocessConfig()
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = make_photos(Path(tmp), n)
        t = time.perf_counter()
        cache = build_cache(
            csv_path, Path(tmp) / "cache", image_size=size, preprocess=pre, num_workers=workers
        )
        build_s = time.perf_counter() - t
        fly = epoch_rate(build_dataset(csv_path, transform=image_transform(pre, size)), workers, pre)
        cached = epoch_rate(CachedPairs(cache), workers, pre)
        cached0 = epoch_rate(CachedPairs(cache), 0, pre)
        raw0 = epoch_rate(CachedPairs(cache), 0, pre, normalise=False)
    rows = [
        (f"on-the-fly decode + transform, {workers} workers", fly),
        (f"cache (memmap uint8, normalise per batch), {workers} workers", cached),
        ("cache, in the main process (0 workers)", cached0),
        ("cache, 0 workers, uint8 batches (normalised later on the GPU)", raw0),
        (f"cache build (once, {workers} workers)", n / build_s),
    ]
    print(f"| {n} JPEGs 320x240 -> {size}px, 2 epochs | samples/s | vs on-the-fly |\n|---|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:,.0f} | {value / fly:.2f}x |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench_shapes(args.n * 2)
    bench_cache(args.n, args.workers, args.size)


if __name__ == "__main__":
    main()
