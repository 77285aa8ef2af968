"""CPU inference backends on ViT-B-32: ONNX Runtime fp32 / int8 vs PyTorch, with open_clip as the peer.

One random ViT-B-32 (seed 0) is built with clipforge; open_clip gets the same weights (converted
with ``clipforge.convert.open_clip``). In ONE process, each round times every (peer, mode) in turn
(batch 32 images; batch 32 captions), so drifts in the machine's speed hit all alike:

* open_clip fp32 and bf16 (weights cast to bfloat16), clipforge PyTorch fp32 and bf16,
* clipforge ``--backend onnx`` (ONNX Runtime, fp32) and ``--backend onnx-int8`` (int8 weights).

Accuracy of int8 against fp32, on real photographs (scikit-image's sample photos and any JPEGs in
``--photos``, each also as 5 crops, so a search has a few hundred candidates): cosine of image
embeddings (median, min), cosine of caption embeddings, and top-10 agreement of searches (text
queries and image queries) between the fp32 and the int8 index.

    PYTHONPATH=src /work/venv-ref/bin/python benchmarks/bench_backends.py --photos /usr/share/backgrounds

needs open_clip_torch (its own environment, like bench_encode.py) and onnxruntime + onnx; with
``--peers clipforge`` it runs in the project environment without open_clip.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from clipforge.data.images import ImageDecodeError, load_image
from clipforge.inference import image_transform, model_id
from clipforge.inference.onnx_backend import onnx_model
from clipforge.models import create_model
from clipforge.tokenizer import get_tokenizer

CAPTIONS = [
    "a photo of a dog", "two small striped red circles on the left of a large blue square",
    "a man riding a bicycle down a busy city street at night", "an aerial view of a harbour with boats",
    "a bowl of fruit on a wooden table", "a close-up photograph of a cat sleeping on a sofa",
    "people walking on the beach at sunset", "a plate of pasta with tomato sauce and basil",
    "an astronaut in an orange suit", "a cup of coffee on a saucer", "a mountain lake in the morning",
    "a rocket on the launch pad", "stars and galaxies in deep space", "a brick wall", "green grass",
    "a bridge over a river", "a dragonfly on a leaf", "a glass of red wine", "paint colours mixed on paper",
]


def timed_rounds(fns: dict[str, callable], *, rounds: int) -> dict[str, float]:
    """Median seconds per call of each fn, interleaved over ``rounds`` (one warm-up call each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def real_photos(folders: list[str], transform) -> torch.Tensor:
    """Preprocessed views (B, 3, S, S) of real photos: each whole and as 5 crops."""
    from PIL import Image

    images = []
    try:
        from skimage import data

        for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "brick", "grass",
                     "gravel", "camera", "moon", "coins", "horse", "page"):
            a = getattr(data, name)()
            images.append(Image.fromarray(a).convert("RGB"))
    except ImportError:
        pass
    for folder in folders:
        for path in sorted(Path(folder).glob("*.jp*g")):
            try:
                images.append(load_image(path, min_side=448).convert("RGB"))
            except ImageDecodeError:
                continue
    views = []
    for im in images:
        w, h = im.size
        boxes = [(0, 0, w, h), (0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h),
                 (w // 2, h // 2, w, h), (w // 4, h // 4, 3 * w // 4, 3 * h // 4)]
        views += [transform(im.crop(b)) for b in boxes]
    return torch.stack(views)


def topk_agreement(index_a, index_b, queries_a, queries_b, k: int = 10) -> float:
    """Mean |top-k(a) ∩ top-k(b)| / k over queries (each side searches its own index)."""
    top_a = np.argsort(-(queries_a @ index_a.T), axis=1)[:, :k]
    top_b = np.argsort(-(queries_b @ index_b.T), axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(top_a, top_b, strict=True)]))


def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", default="open_clip,clipforge", help="comma-separated: open_clip, clipforge")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--photos", action="append", default=[], help="folder of real JPEG photos (repeatable)")
    ap.add_argument("--torch-bf16", action="store_true", help="also time clipforge's PyTorch model in bf16")
    ap.add_argument("--cache", default=None, help="ONNX cache folder (default: a temp dir; export takes minutes)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    model = create_model("ViT-B-32").eval()
    mid = model_id(model)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="bench_backends_"))
    t = time.perf_counter()
    onnx32 = onnx_model(model, backend="onnx", model_id=mid, cache_dir=cache, threads=threads)
    onnx8 = onnx_model(model, backend="onnx-int8", model_id=mid, cache_dir=cache, threads=threads)
    print(f"ONNX files ready in {time.perf_counter() - t:.0f} s ({cache})")
    bf16 = None
    if args.torch_bf16:
        bf16 = create_model("ViT-B-32").eval()
        bf16.load_state_dict(model.state_dict())
        bf16 = bf16.to(torch.bfloat16)

    peers = {"clipforge torch fp32": model, "clipforge onnx (fp32)": onnx32, "clipforge onnx-int8": onnx8}
    if args.torch_bf16:
        peers["clipforge torch bf16"] = bf16
    if "open_clip" in args.peers:
        import open_clip

        from clipforge.convert.open_clip import to_open_clip

        oc = open_clip.create_model("ViT-B-32").eval()
        oc.load_state_dict(to_open_clip(model.state_dict()))
        oc_bf16 = open_clip.create_model("ViT-B-32").eval()
        oc_bf16.load_state_dict(oc.state_dict())
        peers = {"open_clip fp32": _OpenClip(oc, torch.float32), "open_clip bf16": _OpenClip(oc_bf16.to(torch.bfloat16),
                                                                                            torch.bfloat16), **peers}

    images = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    tokens = get_tokenizer("openai")([CAPTIONS[i % len(CAPTIONS)] for i in range(args.batch)])
    with torch.inference_mode():
        img_s = timed_rounds({n: (lambda m=m: m.encode_image(images)) for n, m in peers.items()}, rounds=args.rounds)
        txt_s = timed_rounds({n: (lambda m=m: m.encode_text(tokens)) for n, m in peers.items()}, rounds=args.rounds)
    ref_name = next(n for n in ("open_clip bf16", "clipforge torch bf16", "clipforge torch fp32") if n in peers)
    print(f"\nViT-B-32, batch {args.batch}, {threads} threads; ratio = speed / {ref_name}'s\n")
    print("| peer, mode | images/s | ratio | captions/s | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name in peers:
        print(f"| {name} | {args.batch / img_s[name]:.1f} | {img_s[ref_name] / img_s[name]:.2f} | "
              f"{args.batch / txt_s[name]:.1f} | {txt_s[ref_name] / txt_s[name]:.2f} |")

    # -- accuracy of int8 on real photos ------------------------------------------------------------
    pixels = real_photos(args.photos, image_transform(model.config))
    captions = get_tokenizer("openai")(CAPTIONS)
    with torch.inference_mode():
        f32 = torch.cat([model.encode_image(b) for b in pixels.split(32)])
        i8 = torch.cat([onnx8.encode_image(b) for b in pixels.split(32)])
        o32 = torch.cat([onnx32.encode_image(b) for b in pixels.split(32)])
        t32, t8 = model.encode_text(captions), onnx8.encode_text(captions)
    c_img, c_txt, c_o32 = cos(i8, f32), cos(t8, t32), cos(o32, f32)
    n = len(pixels)
    off_diag = (f32 @ f32.T)[~torch.eye(n, dtype=torch.bool)]
    a32, a8 = f32.numpy(), i8.numpy()
    text_agree = topk_agreement(a32, a8, t32.numpy(), t8.numpy())
    image_agree = topk_agreement(a32, a8, a32, a8)  # every view as a query (itself included on both sides)
    print(f"\nint8 vs fp32 on {n} views of {n // 6} real photos and {len(CAPTIONS)} captions:")
    print(f"- image embeddings: cosine median {c_img.median():.5f}, min {c_img.min():.5f}")
    print(f"- caption embeddings: cosine median {c_txt.median():.5f}, min {c_txt.min():.5f}")
    print(f"- top-10 agreement: text queries {text_agree:.3f}, image queries {image_agree:.3f}")
    print(f"- onnx fp32 vs torch fp32 images: cosine min {c_o32.min():.6f}")
    print(f"- for scale: cosine between two different views, median {off_diag.median():.4f} (random weights)")


class _OpenClip:
    def __init__(self, model, dtype: torch.dtype) -> None:
        self.model, self.dtype = model, dtype

    def encode_image(self, x):
        return self.model.encode_image(x.to(self.dtype))

    def encode_text(self, t):
        return self.model.encode_text(t)


if __name__ == "__main__":
    main()
