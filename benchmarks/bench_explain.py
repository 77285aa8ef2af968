"""How faithful are the heat maps? Contrast on the named object in two-object shapes images.

For each image (a solid red circle beside another shape of another colour, drawn by the shapes
renderer) and the text "a red circle", every explanation method's map (scaled to [0, 1]) is
averaged over the red circle, over the other shape, and over the background. A faithful map is
brighter on the circle than on the other shape (the hard part) and than on the background: the
table gives the mean and the worst of each difference, and on how many images it was positive.

    python benchmarks/bench_explain.py --model runs/quickstart/model.safetensors [--images 16]

Needs a model trained on the shapes data (``clipforge quickstart`` makes one).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from clipforge.api import load
from clipforge.data.shapes import render
from clipforge.eval.explain import AUTO_METHOD, heat_map
from clipforge.eval.zeroshot import encode_texts
from clipforge.models.vit import VisionTransformer


def two_object_image(seed: int, *, size: int = 128) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """The image, the red circle's mask and the other shape's mask (same as tests/evalkit.py)."""
    red_left = seed % 2 == 0
    other = ("square", "triangle", "star", "heart")[seed % 4]
    colour = ("blue", "green", "yellow", "purple")[(seed // 2) % 4]
    objects = [
        ("circle", "red", "left" if red_left else "right"),
        (other, colour, "right" if red_left else "left"),
    ]
    layers, masks = [], []
    for k, (shape, col, where) in enumerate(objects):
        attrs = {
            "shape": shape,
            "colour": col,
            "pattern": "solid",
            "size": "large",
            "count": 1,
            "position": where,
        }
        img = np.asarray(render(attrs, image_size=size, rng=np.random.default_rng([seed, k + 1]))).astype(
            np.int32
        )
        layers.append(img)
        masks.append(np.abs(img - img[0, 0]).sum(-1) > 30)  # (H, W) object pixels
    out = layers[0].copy()
    out[masks[1]] = layers[1][masks[1]]
    return Image.fromarray(out.astype(np.uint8)), masks[0], masks[1] & ~masks[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a clipforge checkpoint trained on the shapes data")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--text", default="a red circle")
    args = ap.parse_args()
    model, tokenizer, transform = load(args.model)
    text = encode_texts(model, tokenizer, [args.text])[0]
    size = model.config.vision.image_size
    methods = ["gradcam", "gradient"] + (["patch"] if isinstance(model.visual, VisionTransformer) else [])
    vs_other: dict[str, list[float]] = {m: [] for m in methods}
    vs_background: dict[str, list[float]] = {m: [] for m in methods}

    def shrink(mask: np.ndarray) -> np.ndarray:  # (H, W) -> (size, size), as the model sees it
        return (
            np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR))
            > 127
        )

    for seed in range(args.images):
        image, target, other = two_object_image(seed)
        target, other = shrink(target), shrink(other)
        background = ~(target | other)
        x = transform(image)
        for m in methods:
            heat = heat_map(model, x, text, method=m).numpy()
            vs_other[m].append(float(heat[target].mean() - heat[other].mean()))
            vs_background[m].append(float(heat[target].mean() - heat[background].mean()))
    print(
        f"model `{args.model}` ({model.config.name or 'unnamed'}), text {args.text!r}, {args.images} images\n"
    )
    print("| method | circle − other shape (mean / worst / positive) | circle − background (same) |")
    print("|---|---|---|")
    for m in methods:
        cells = []
        for values in (vs_other[m], vs_background[m]):
            v = np.array(values)
            cells.append(f"{v.mean():+.3f} / {v.min():+.3f} / {(v > 0).sum()} of {len(v)}")
        star = " (auto)" if m == AUTO_METHOD else ""
        print(f"| {m}{star} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
