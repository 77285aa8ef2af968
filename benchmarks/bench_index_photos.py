"""Indexing a photo folder end to end: `clipforge index` vs `clip-retrieval inference`, same weights.

Generates a folder of camera-size (4032x3024) and web-size (1600x1200) JPEGs with real texture
(mosaics of scikit-image's sample photographs, rescaled, flipped and tinted, plus sensor-like
noise: libjpeg does real work on them, unlike flat colour), creates one random ViT-B-32 with
open_clip in the reference environment, converts it with `clipforge convert`, and times, as
separate processes started from the shell the way a user runs them:

* `clip-retrieval inference --clip_model open_clip:ViT-B-32/<state dict> --enable_text False --use_jit False`
  (which first runs a warm-up batch of ``--batch_size`` (256) random images through the model; the
  table says how long it took)
* `clipforge index` (defaults: reduced-size JPEG decode, bf16 where the CPU is fast at it)
* `clipforge index --exact-preprocess --precision fp32` (the reference pipeline, bit for bit)

then compares every image's embedding with clip-retrieval's (cosine, median and minimum). Process
start-up and model loading are inside the times: that is what a user waits for.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_index_photos.py --ref-python /work/venv-ref/bin/python
    ... --full      # the 150 + 150 image folder of the issue (several minutes on 2 cores)

The reference environment needs open_clip_torch and clip-retrieval (and, for clip-retrieval,
``setuptools<70``). The main environment needs scikit-image (for the sample photographs).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina",
           "brick", "grass", "gravel", "camera", "moon")

MAKE_MODEL = """
import sys, torch, open_clip
torch.manual_seed(0)
model = open_clip.create_model("ViT-B-32")
torch.save(model.state_dict(), sys.argv[1])
"""

READ_CLIP_RETRIEVAL = """
import sys, glob, numpy as np, pandas as pd
out = sys.argv[1]
emb = np.concatenate([np.load(f) for f in sorted(glob.glob(out + "/img_emb/*.npy"))])
meta = pd.concat([pd.read_parquet(f) for f in sorted(glob.glob(out + "/metadata/*.parquet"))])
np.savez(sys.argv[2], paths=np.array(meta["image_path"].tolist()), embeddings=emb.astype(np.float32))
"""


# -- the folder ----------------------------------------------------------------------------------
def sample_photos() -> list[np.ndarray]:
    """scikit-image's bundled photographs as (H, W, 3) uint8 arrays (grayscale ones tinted)."""
    try:
        from skimage import data
    except ImportError as e:
        raise SystemExit(f"this benchmark needs scikit-image for its sample photos ({e})") from None
    photos = []
    for i, name in enumerate(SOURCES):
        a = getattr(data, name)()
        if a.ndim == 2:
            tint = np.array([(1.0, 0.9, 0.75), (0.8, 0.95, 1.0), (1.0, 1.0, 0.85)][i % 3])
            a = (a[..., None] * tint).clip(0, 255)
        photos.append(np.ascontiguousarray(a[..., :3]).astype(np.uint8))
    return photos


def textured_image(photos: list[np.ndarray], width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A mosaic of 2x2 to 4x3 tiles cut from the sample photos at random scales, with noise."""
    cols, rows = int(rng.integers(2, 5)), int(rng.integers(2, 4))
    canvas = Image.new("RGB", (width, height))
    xs = np.linspace(0, width, cols + 1).astype(int)
    ys = np.linspace(0, height, rows + 1).astype(int)
    for r in range(rows):
        for c in range(cols):
            w, h = xs[c + 1] - xs[c], ys[r + 1] - ys[r]
            src = Image.fromarray(photos[int(rng.integers(len(photos)))])
            scale = max(w / src.width, h / src.height) * float(rng.uniform(1.0, 1.6))
            src = src.resize((max(w, round(src.width * scale)), max(h, round(src.height * scale))),
                             Image.Resampling.BILINEAR)
            left, top = int(rng.integers(0, src.width - w + 1)), int(rng.integers(0, src.height - h + 1))
            tile = src.crop((left, top, left + w, top + h))
            if rng.random() < 0.5:
                tile = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            canvas.paste(tile, (int(xs[c]), int(ys[r])))
    pixels = np.asarray(canvas, dtype=np.int16)
    noise = rng.normal(0, 6, size=(height, width, 1)).astype(np.int16)  # luminance noise, like a sensor
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def make_folder(folder: Path, *, camera: int, web: int, seed: int = 0) -> None:
    photos = sample_photos()
    rng = np.random.default_rng(seed)
    jobs = [("camera", i, 4032, 3024) for i in range(camera)] + [("web", i, 1600, 1200) for i in range(web)]
    for kind, i, w, h in jobs:
        path = folder / kind / f"{kind}_{i:04d}.jpg"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        textured_image(photos, w, h, rng).save(path, "JPEG", quality=90)


# -- runs ----------------------------------------------------------------------------------------
def run(cmd: list[str], *, env: dict | None = None, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed (exit {proc.returncode}); see {log}")
    return seconds


def clipforge_embeddings(db: Path, folder: Path) -> dict[str, np.ndarray]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from clipforge.index import IndexStore

    with IndexStore(db) as store:
        ids, vectors, _ = store.load_embeddings()
        paths = store.paths_of(ids)
    return {str(folder / paths[int(i)]): v for i, v in zip(ids, vectors, strict=True)}


def agreement(ours: dict[str, np.ndarray], ref_npz: Path) -> tuple[float, float, int]:
    ref = np.load(ref_npz)
    cos = []
    for path, v in zip(ref["paths"], ref["embeddings"], strict=True):
        mine = ours.get(str(Path(str(path)).resolve()))
        if mine is None:
            continue
        cos.append(float(np.dot(mine, v) / (np.linalg.norm(mine) * np.linalg.norm(v))))
    if not cos:
        raise SystemExit("no image is in both outputs: check the two logs")
    return statistics.median(cos), min(cos), len(cos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref-python", default="/work/venv-ref/bin/python", help="python of the reference env")
    ap.add_argument("--camera", type=int, default=30, help="camera-size JPEGs (default 30)")
    ap.add_argument("--web", type=int, default=30, help="web-size JPEGs (default 30)")
    ap.add_argument("--full", action="store_true", help="150 + 150 images, the issue's folder")
    ap.add_argument("--work", default=None, help="keep the folder and outputs here (default: a temp dir)")
    ap.add_argument("--skip-exact", action="store_true", help="do not time the exact-preprocessing run")
    ap.add_argument("--cr-batch-size", type=int, default=None, help="clip-retrieval --batch_size (default: 256)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.full:
        args.camera, args.web = 150, 150
    ref_python = Path(args.ref_python)
    ref_bin = ref_python.parent
    if not (ref_bin / "clip-retrieval").exists():
        raise SystemExit(f"{ref_bin}: no clip-retrieval (pip install clip-retrieval open_clip_torch 'setuptools<70')")

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_index_photos_"))
    work.mkdir(parents=True, exist_ok=True)
    folder = (work / f"photos_{args.camera}_{args.web}").resolve()
    t = time.perf_counter()
    make_folder(folder, camera=args.camera, web=args.web)
    megabytes = sum(f.stat().st_size for f in folder.rglob("*.jpg")) / 1e6
    print(f"folder: {folder} ({args.camera} x 4032x3024 + {args.web} x 1600x1200 JPEG, "
          f"{megabytes:.0f} MB, made in {time.perf_counter() - t:.0f} s)")

    state_dict = work / "open_clip_ViT-B-32.pt"
    if not state_dict.exists():
        subprocess.run([str(ref_python), "-c", MAKE_MODEL, str(state_dict)], check=True)
    ckpt = work / "clipforge_ViT-B-32"
    py = sys.executable
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    if not ckpt.exists():
        subprocess.run([py, "-m", "clipforge", "convert", str(state_dict), str(ckpt), "--model", "ViT-B-32"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
    ckpt_file = next(ckpt.glob("*.safetensors")) if ckpt.is_dir() else ckpt

    results: dict[str, dict] = {}
    cr_out = work / "clip_retrieval_out"
    subprocess.run(["rm", "-rf", str(cr_out)], check=True)
    results["clip-retrieval"] = {"seconds": run(
        [str(ref_bin / "clip-retrieval"), "inference", "--input_dataset", str(folder), "--output_folder",
         str(cr_out), "--clip_model", f"open_clip:ViT-B-32/{state_dict}", "--enable_text", "False",
         "--use_jit", "False", *(["--batch_size", str(args.cr_batch_size)] if args.cr_batch_size else [])],
        log=work / "clip_retrieval.log",
    )}
    warmup = re.search(r"done warming up in ([0-9.]+)s", (work / "clip_retrieval.log").read_text())
    if warmup:  # clip-retrieval first runs one batch of --batch_size random images through the model
        results["clip-retrieval"]["warmup_seconds"] = float(warmup.group(1))
    ref_npz = work / "clip_retrieval.npz"
    subprocess.run([str(ref_python), "-c", READ_CLIP_RETRIEVAL, str(cr_out), str(ref_npz)], check=True)

    runs = {"clipforge": []}
    if not args.skip_exact:
        runs["clipforge --exact-preprocess --precision fp32"] = ["--exact-preprocess", "--precision", "fp32"]
    for name, extra in runs.items():
        db = work / f"{name.split()[0]}{len(extra)}.cfidx"
        for p in db.parent.glob(db.name + "*"):
            p.unlink()
        seconds = run([py, "-m", "clipforge", "index", str(folder), "--model", str(ckpt_file), "--db", str(db),
                       "--no-progress", *extra], env=env, log=work / f"{db.stem}.log")
        med, low, n = agreement(clipforge_embeddings(db, folder), ref_npz)
        results[name] = {"seconds": seconds, "cosine_median": med, "cosine_min": low, "images": n}

    base = results["clip-retrieval"]["seconds"]
    n_images = args.camera + args.web
    if args.json:
        print(json.dumps({"images": n_images, "results": results}, indent=2))
        return
    print(f"\n{n_images} images, same random ViT-B-32, {os.cpu_count()} CPU cores\n")
    print("| run | seconds | img/s | speed-up vs clip-retrieval | cosine to clip-retrieval (median / min) |")
    print("|---|---:|---:|---:|---|")
    for name, r in results.items():
        cos = f"{r['cosine_median']:.5f} / {r['cosine_min']:.5f}" if "cosine_median" in r else "—"
        print(f"| `{name}` | {r['seconds']:.1f} | {n_images / r['seconds']:.1f} | {base / r['seconds']:.2f}x | {cos} |")
    if "warmup_seconds" in results["clip-retrieval"]:
        w = results["clip-retrieval"]["warmup_seconds"]
        print(f"\nclip-retrieval's warm-up pass (one batch of random images) took {w:.1f} s of its {base:.1f} s; "
              f"without it clipforge is {(base - w) / results['clipforge']['seconds']:.2f}x faster")


if __name__ == "__main__":
    main()
