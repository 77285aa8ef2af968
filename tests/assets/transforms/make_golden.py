"""Regenerate the golden preprocessing data for tests/test_transforms.py.

Run with the reference environment (open_clip + torchvision), from the repository root:

    /work/venv-oc/bin/python tests/assets/transforms/make_golden.py

It writes deterministic small test images of many sizes and modes into this folder, then the
tensors open_clip's ``image_transform`` produces for them (eval at sizes 32 and 64, squash,
bilinear, and seeded train crops) into ``golden.npz``. The test compares clipforge against these.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
SEED = 20240601

# name -> open_clip image_transform keyword arguments (eval). The key is what the test rebuilds.
EVAL_CONFIGS: dict[str, dict] = {
    "shortest-bicubic-32": dict(image_size=32),
    "shortest-bicubic-64": dict(image_size=64),
    "shortest-bilinear-32": dict(image_size=32, interpolation="bilinear"),
    "squash-bicubic-32-half": dict(image_size=32, resize_mode="squash", mean=(0.5,) * 3, std=(0.5,) * 3),
}
TRAIN_IMAGES = ("rgb_1000x677.jpg", "rgb_3x500.png", "rgba_37x53.png", "p_61x40.png", "rgb_225x224.png")
TRAIN_SEEDS = (0, 1, 2)


def smooth_rgb(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 with gradients, a few discs and mild noise: compresses well, has edges."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.stack(
        [
            255 * x / max(width - 1, 1),
            255 * y / max(height - 1, 1),
            127.5 + 127.5 * np.sin((x + 2 * y) / max(width, height) * 6.0),
        ],
        axis=-1,
    )
    for _ in range(4):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.1, 0.4) * max(width, height)
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 3, size=img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def png_rgb16(path: Path, pixels: np.ndarray) -> None:
    """Write a 16-bit-per-channel RGB PNG by hand (Pillow cannot): (H, W, 3) uint16."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[r].astype(">u2").tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def make_images(rng: np.random.Generator) -> list[str]:
    names: list[str] = []

    def save(name: str, image: Image.Image, **kwargs) -> None:
        image.save(HERE / name, **kwargs)
        names.append(name)

    for w, h in [(1, 1), (3, 500), (500, 3), (225, 224), (224, 225), (32, 32), (20, 13)]:
        save(f"rgb_{w}x{h}.png", Image.fromarray(smooth_rgb(w, h, rng)))
    save("rgb_1000x677.jpg", Image.fromarray(smooth_rgb(1000, 677, rng)), quality=80)
    save("rgb_50x40.webp", Image.fromarray(smooth_rgb(50, 40, rng)), lossless=True)

    rgba = np.dstack([smooth_rgb(37, 53, rng), rng.integers(0, 256, (53, 37), dtype=np.uint8)])
    rgba[:10, :10, 3] = 0  # fully transparent corner: premultiplied resize must not leak its colour
    save("rgba_37x53.png", Image.fromarray(rgba))

    save("p_61x40.png", Image.fromarray(smooth_rgb(61, 40, rng)).quantize(colors=37))
    frames = [Image.fromarray(smooth_rgb(29, 31, rng)).quantize(colors=16) for _ in range(2)]
    frames[0].save(
        HERE / "p_anim_29x31.gif", save_all=True, append_images=frames[1:], transparency=0, duration=50
    )
    names.append("p_anim_29x31.gif")

    la = np.dstack([smooth_rgb(45, 30, rng)[..., 0], rng.integers(0, 256, (30, 45), dtype=np.uint8)])
    save("la_45x30.png", Image.fromarray(la))
    save("l_50x71.png", Image.fromarray(smooth_rgb(50, 71, rng)[..., 1]))
    save("1_64x33.png", Image.fromarray(smooth_rgb(64, 33, rng)[..., 2]).convert("1"))
    save("cmyk_40x48.jpg", Image.fromarray(smooth_rgb(40, 48, rng)).convert("CMYK"), quality=90)

    gray16 = (smooth_rgb(48, 36, rng)[..., 0].astype(np.uint16) * 257) ^ rng.integers(
        0, 256, (36, 48)
    ).astype(np.uint16)
    save("i16_48x36.png", Image.fromarray(gray16))
    png_rgb16(HERE / "rgb16_30x22.png", smooth_rgb(30, 22, rng).astype(np.uint16) * 257 + 128)
    names.append("rgb16_30x22.png")
    ints = smooth_rgb(33, 47, rng)[..., 0].astype(np.int32) * 2 - 60  # -60..450: Pillow clips to 0..255
    save("i_33x47.tif", Image.fromarray(ints))
    floats = smooth_rgb(30, 30, rng)[..., 1].astype(np.float32) * 1.3 - 20.25
    save("f_30x30.tif", Image.fromarray(floats))

    # EXIF orientation 6 ("rotate 90 CW to display"): stored 40 wide, 24 tall, displayed 24 x 40.
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif_rot6_40x24.jpg", Image.fromarray(smooth_rgb(40, 24, rng)), quality=90, exif=exif.tobytes())
    return names


def main() -> None:
    rng = np.random.default_rng(SEED)
    names = make_images(rng)
    arrays: dict[str, np.ndarray] = {}
    modes = {}
    for name in names:
        with Image.open(HERE / name) as image:
            image.load()
            modes[name] = image.mode
            for config, kwargs in EVAL_CONFIGS.items():
                transform = open_clip.image_transform(is_train=False, **kwargs)
                arrays[f"{name}|{config}"] = transform(image).numpy().astype(np.float32)
            if name in TRAIN_IMAGES:
                transform = open_clip.image_transform(32, is_train=True)
                for seed in TRAIN_SEEDS:
                    torch.manual_seed(seed)
                    arrays[f"{name}|train-32-seed{seed}"] = transform(image).numpy().astype(np.float32)
    np.savez_compressed(HERE / "golden.npz", **arrays)
    meta = {
        "generator": "tests/assets/transforms/make_golden.py",
        "open_clip": open_clip.__version__,
        "torch": torch.__version__,
        "pillow": Image.__version__,
        "modes": modes,
        "eval_configs": EVAL_CONFIGS,
        "train": {"images": list(TRAIN_IMAGES), "seeds": list(TRAIN_SEEDS), "image_size": 32},
    }
    (HERE / "golden.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    print(f"{len(names)} images, {len(arrays)} tensors, folder {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
