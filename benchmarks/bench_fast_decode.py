"""Reduced-size JPEG decoding on real photographs: time saved, and what it changes in the embeddings.

For every JPEG photo found (scikit-image's sample photos re-encoded as JPEG, plus the folders given
with ``--photos``, e.g. Debian's wallpaper photos in /usr/share/backgrounds), decodes it twice, at
full size (the reference, ``clipforge index --exact-preprocess``) and at reduced size (the indexing
default: libjpeg DCT scaling keeping the shorter side >= 2x the model input), preprocesses both for
ViT-B-32 (224 px) and compares:

* decode + preprocess time per image (CPU seconds of this process, so other load matters less),
* cosine between the two preprocessed pixel tensors (model-independent),
* cosine between the two embeddings of one random ViT-B-32 (fp32), next to the cosine between
  embeddings of *different* photos for scale (random weights map all photos close together).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_fast_decode.py --photos /usr/share/backgrounds
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from clipforge.data.images import load_image
from clipforge.inference import image_transform
from clipforge.models import create_model

SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "motorcycle_left")


def photo_files(folders: list[str]) -> list[tuple[str, bytes]]:
    out = []
    try:
        from skimage import data

        for name in SKIMAGE:
            try:
                a = getattr(data, name)()
            except (AttributeError, OSError, ValueError):  # not bundled in this version
                continue
            buf = io.BytesIO()
            Image.fromarray(a).convert("RGB").save(buf, "JPEG", quality=92)
            out.append((f"skimage:{name}", buf.getvalue()))
    except ImportError:
        pass
    for folder in folders:
        for path in sorted(Path(folder).iterdir()):
            if path.suffix.lower() in (".jpg", ".jpeg"):
                out.append((str(path), path.read_bytes()))
    return out


def cpu_ms(fn, repeats: int = 2) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.process_time()
        result = fn()
        best = min(best, time.process_time() - start)
    return best * 1e3, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", action="append", default=[], help="folder of real JPEG photos (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = create_model("ViT-B-32").eval()
    transform = image_transform(model.config)
    min_side = 2 * model.config.vision.image_size
    rows = []
    exact_px, fast_px = [], []
    for name, data in photo_files(args.photos):
        t_exact, exact = cpu_ms(lambda d=data: transform(load_image(d)))
        t_fast, fast = cpu_ms(lambda d=data: transform(load_image(d, min_side=min_side)))
        size = Image.open(io.BytesIO(data)).size
        pix = float(torch.nn.functional.cosine_similarity(exact.double().flatten(), fast.double().flatten(), dim=0))
        rows.append((name, size, t_exact, t_fast, pix))
        exact_px.append(exact)
        fast_px.append(fast)
    if not rows:
        raise SystemExit("no photos found: install scikit-image or pass --photos DIR")
    with torch.inference_mode():
        e = torch.cat([model.encode_image(b) for b in torch.stack(exact_px).split(16)])
        f = torch.cat([model.encode_image(b) for b in torch.stack(fast_px).split(16)])
    emb = torch.nn.functional.cosine_similarity(e, f).tolist()
    others = (e @ e.T)[~torch.eye(len(e), dtype=torch.bool)]

    print("| photo | size | exact ms | fast ms | pixel cosine | embedding cosine |")
    print("|---|---|---:|---:|---:|---:|")
    for (name, size, te, tf, pix), c in zip(rows, emb, strict=True):
        print(f"| {Path(name).name} | {size[0]}x{size[1]} | {te:.0f} | {tf:.0f} | {pix:.5f} | {c:.5f} |")
    big = [r for r in rows if min(r[1]) >= 2 * min_side]  # the ones actually decoded at reduced size
    print(f"\n{len(rows)} photos ({len(big)} large enough for a reduced decode, shorter side >= {2 * min_side}):")
    print(f"- decode + preprocess, CPU ms per photo, median: exact {statistics.median(r[2] for r in rows):.0f}, "
          f"fast {statistics.median(r[3] for r in rows):.0f} "
          f"(reduced ones: {statistics.median(r[2] for r in big):.0f} -> {statistics.median(r[3] for r in big):.0f})"
          if big else "")
    print(f"- pixel cosine fast vs exact: median {statistics.median(r[4] for r in rows):.5f}, "
          f"min {min(r[4] for r in rows):.5f}")
    print(f"- embedding cosine fast vs exact (random ViT-B-32, fp32): median {statistics.median(emb):.5f}, "
          f"min {min(emb):.5f}")
    print(f"- for scale: embedding cosine between different photos, median {others.median():.4f}, "
          f"max {others.max():.4f}")


if __name__ == "__main__":
    main()
