"""Do the heat maps land on the named object? Hit rates on two-object shapes scenes, and their cost.

Each scene (``clipforge.data.shapes_scenes``) holds two solid objects of different colours and
shapes on opposite sides; the text names one ("a red circle"). Every method's map, placed on the
scene at its own resolution (128 px), is averaged over the named object, the other object and
the background. A **hit** is a map brighter on the named object than on the other one *and* than
on the background. Also shown: on how many scenes most of the hottest 5 % of pixels lie on the
named object (the peak lands on it), the mean contrasts, and the milliseconds per map.

    python benchmarks/bench_explain.py --model runs/quickstart/model.safetensors [--scenes 300]

Needs a model trained on the shapes data (``clipforge quickstart`` makes one).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from clipforge.api import load
from clipforge.data.shapes_scenes import heat_contrast, two_object_scene
from clipforge.eval.explain import AUTO_METHOD, explain
from clipforge.eval.zeroshot import encode_texts
from clipforge.models.vit import VisionTransformer


def peak_on_target(heat: np.ndarray, target: np.ndarray, *, share: float = 0.05) -> bool:
    """Whether most of the hottest ``share`` of pixels lie on the target."""
    hottest = heat >= np.quantile(heat, 1.0 - share)  # (H, W)
    return bool(target[hottest].mean() > 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a clipforge checkpoint trained on the shapes data")
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--methods", default=None, help="comma-separated (default: every one the tower has)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer, transform = load(args.model, precision="fp32")
    vit = isinstance(model.visual, VisionTransformer)
    methods = args.methods.split(",") if args.methods else ["window", "gradcam", "gradient"] + (["patch"] * vit)
    texts: dict[str, torch.Tensor] = {}
    rows: dict[str, list[tuple[float, float, bool]]] = {m: [] for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for seed in range(args.scenes):
        scene = two_object_scene(seed)
        if scene.text not in texts:
            texts[scene.text] = encode_texts(model, tokenizer, [scene.text])[0]
        for m in methods:
            t0 = time.perf_counter()
            ex = explain(model, transform, scene.image, texts[scene.text], text=scene.text, method=m)
            heat = ex.heat_on_image()
            seconds[m] += time.perf_counter() - t0
            d_other, d_background = heat_contrast(heat, scene)
            rows[m].append((d_other, d_background, peak_on_target(heat, scene.target)))
    name = model.config.name or "unnamed"
    print(f"model `{args.model}` ({name}), {args.scenes} scenes, {torch.get_num_threads()} threads\n")
    print(
        "| method | hit (> other and > background) | > other | > background | peak on it "
        "| mean named − other / − background | ms per map |"
    )
    print("|---|---|---|---|---|---|---|")
    for m in methods:
        a = np.array(rows[m])
        hit = ((a[:, 0] > 0) & (a[:, 1] > 0)).mean()
        star = " (auto)" if m == AUTO_METHOD else ""
        print(
            f"| {m}{star} | {hit:.1%} | {(a[:, 0] > 0).mean():.1%} | {(a[:, 1] > 0).mean():.1%} | "
            f"{a[:, 2].mean():.1%} | {a[:, 0].mean():+.3f} / {a[:, 1].mean():+.3f} | "
            f"{1000 * seconds[m] / args.scenes:.1f} |"
        )


if __name__ == "__main__":
    main()
