"""Two-object shapes scenes with known masks: ground truth for "where is the named object?".

Each scene holds two large solid objects of the built-in shapes data, of different colours and
different shapes, on opposite sides of the image (left/right or top/bottom), drawn by the shapes
renderer. One of them is named ("a red circle"); an explanation of that text should be brighter
on it than on the other object and than on the background. Used by the heat-map tests and
``benchmarks/bench_explain.py``. Scene ``seed`` is a pure function of (seed, image_size, spec).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from clipforge.data.shapes import ShapesSpec, render, seen_pairs

# Opposite placements of the named object and the other one.
PLACEMENTS: tuple[tuple[str, str], ...] = (("left", "right"), ("right", "left"), ("top", "bottom"), ("bottom", "top"))
_MASK_THRESHOLD = 30  # Σ|RGB − background| above which a pixel belongs to an object


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    text: str  # names the target object, e.g. "a red circle"
    target: np.ndarray  # (H, W) bool, the named object's pixels
    other: np.ndarray  # (H, W) bool, the other object's pixels

    @property
    def background(self) -> np.ndarray:
        return ~(self.target | self.other)  # (H, W)


def two_object_scene(seed: int, *, image_size: int = 128, spec: ShapesSpec | None = None) -> Scene:
    """Scene ``seed``: both objects' colour x shape pairs are ones the training split shows
    (``spec``'s seen pairs), differing in colour and in shape."""
    pairs = seen_pairs(spec or ShapesSpec())
    rng = np.random.default_rng([seed, 5381])
    a = pairs[int(rng.integers(len(pairs)))]
    others = [p for p in pairs if p[0] != a[0] and p[1] != a[1]]
    b = others[int(rng.integers(len(others)))]
    where_a, where_b = PLACEMENTS[int(rng.integers(len(PLACEMENTS)))]
    layers, masks = [], []
    for k, ((colour, shape), where) in enumerate(((a, where_a), (b, where_b))):
        attrs = {"shape": shape, "colour": colour, "pattern": "solid", "size": "large", "count": 1, "position": where}
        img = np.asarray(render(attrs, image_size=image_size, rng=np.random.default_rng([seed, k + 1])))
        img = img.astype(np.int32)  # (H, W, 3)
        layers.append(img)
        masks.append(np.abs(img - img[0, 0]).sum(axis=-1) > _MASK_THRESHOLD)  # (H, W)
    out = layers[0].copy()
    out[masks[1]] = layers[1][masks[1]]
    article = "an" if a[0][0] in "aeiou" else "a"
    return Scene(Image.fromarray(out.astype(np.uint8)), f"{article} {a[0]} {a[1]}", masks[0] & ~masks[1], masks[1])


def heat_contrast(heat: np.ndarray, scene: Scene) -> tuple[float, float]:
    """Mean heat (H, W, at the scene's resolution) on the named object minus its mean on the other
    object, and minus its mean on the background."""
    on_target = float(heat[scene.target].mean())
    return on_target - float(heat[scene.other].mean()), on_target - float(heat[scene.background].mean())
