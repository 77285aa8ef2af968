"""How faithful are the heat maps? Contrast on the named object in two-object shapes images.

For each image (a solid red circle beside another shape of another colour, drawn by the shapes
renderer) and the text "a red circle", every explanation method's map (scaled to [0, 1]) is
averaged inside the red circle and outside it. A faithful map is brighter inside: the table gives
the mean and the worst inside-minus-outside contrast, and on how many images it was positive.

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


def two_object_image(seed: int, *, size: int = 128) -> tuple[Image.Image, np.ndarray]:
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
    return Image.fromarray(out.astype(np.uint8)), masks[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a clipforge checkpoint trained on the shapes data")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--text", default="a red circle")
    args = ap.parse_args()
    model, tokenizer, transform = load(args.model)
    text = encode_texts(model, tokenizer, [args.text])[0]
    size = model.config.vision.image_size
    methods = ["gradient", "gradcam"] + (["patch"] if isinstance(model.visual, VisionTransformer) else [])
    contrast: dict[str, list[float]] = {m: [] for m in methods}
    for seed in range(args.images):
        image, mask = two_object_image(seed)
        small = (
            np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.BILINEAR))
            > 127
        )
        x = transform(image)
        for m in methods:
            heat = heat_map(model, x, text, method=m).numpy()
            contrast[m].append(float(heat[small].mean() - heat[~small].mean()))
    print(
        f"model `{args.model}` ({model.config.name or 'unnamed'}), text {args.text!r}, {args.images} images\n"
    )
    print("| method | mean contrast | worst contrast | brighter on the object |")
    print("|---|---:|---:|---:|")
    for m in methods:
        v = np.array(contrast[m])
        star = " (auto)" if m == AUTO_METHOD else ""
        print(f"| {m}{star} | {v.mean():+.3f} | {v.min():+.3f} | {(v > 0).sum()}/{len(v)} |")


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
