"""Drawing for the built-in shapes data: anti-aliased shapes and fill patterns as numpy masks.

A shape is a boolean function of normalised coordinates ``(u, v)`` (the object's radius is 1,
``v`` points down); a pattern is a boolean function of pixel coordinates (True = main colour).
An object is rendered on a 4x supersampled patch (cached: angles and pattern phases are quantised)
and alpha-composited onto the image, so generation costs little more than drawing the random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache, lru_cache

import numpy as np

SUPERSAMPLE = 4
ShapeFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _regular_polygon(n: int, *, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    a = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)  # (n, 2), first vertex up


@cache
def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    outer = _regular_polygon(points)
    inner_v = _regular_polygon(points, radius=inner, phase=-math.pi / 2 + math.pi / points)
    return np.stack([outer, inner_v], axis=1).reshape(2 * points, 2)  # (2n, 2) alternating


@cache
def _cross(arm: float = 0.3, reach: float = 0.9) -> np.ndarray:
    a, r = arm, reach
    return np.array(
        [
            (-a, -r),
            (a, -r),
            (a, -a),
            (r, -a),
            (r, a),
            (a, a),
            (a, r),
            (-a, r),
            (-a, a),
            (-r, a),
            (-r, -a),
            (-a, -a),
        ]
    )


@cache
def _arrow(shaft: float = 0.25, head: float = 0.7, neck: float = 0.15) -> np.ndarray:
    """A right-pointing arrow: a shaft from the left edge to ``neck``, then a triangular head."""
    return np.array(
        [(-0.95, -shaft), (neck, -shaft), (neck, -head), (0.95, 0.0), (neck, head), (neck, shaft), (-0.95, shaft)]
    )


def in_polygon(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd rule point-in-polygon test, vectorised over the points."""
    inside = np.zeros(u.shape, dtype=bool)
    xj, yj = verts[-1]
    for xi, yi in verts:
        crosses = (yi > v) != (yj > v)
        x_at = (xj - xi) * (v - yi) / ((yj - yi) if yj != yi else 1e-12) + xi
        inside ^= crosses & (u < x_at)
        xj, yj = xi, yi
    return inside


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = 1.15 * u, -1.15 * v + 0.2  # the classic curve (x²+y²-1)³ = x²y³, y up
    r = x * x + y * y - 1
    return r * r * r - x * x * y * y * y <= 0


def _crescent(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + (v + 0.1) ** 2 > 0.75**2)


SHAPES: dict[str, ShapeFn] = {
    "circle": lambda u, v: u * u + v * v <= 0.95**2,
    "square": lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= 0.78,
    "triangle": lambda u, v: in_polygon(u, v + 0.15, _regular_polygon(3, radius=1.05)),
    "star": lambda u, v: in_polygon(u, v + 0.05, _star()),
    "ring": lambda u, v: (u * u + v * v <= 0.95**2) & (u * u + v * v > 0.5**2),
    "arrow": lambda u, v: in_polygon(u, v, _arrow()),
    "diamond": lambda u, v: np.abs(u) / 0.75 + np.abs(v) <= 1.0,
    "cross": lambda u, v: in_polygon(u, v, _cross()),
    "heart": _heart,
    "crescent": _crescent,
}
"""Shape name → mask function. The names are the vocabulary of captions and zero-shot classes.
Every shape must stay recognisable at the smallest size (a radius of ~6 px in a 64 px image): a
hexagon or a pentagon that small is a circle, so there are none."""


def _stripes(x: np.ndarray, y: np.ndarray, q: float) -> np.ndarray:
    return ((x + y) / (6.0 * q)) % 1.0 < 0.5


def _dots(x: np.ndarray, y: np.ndarray, q: float) -> np.ndarray:
    s = 5.0 * q
    dx, dy = (x % s) - s / 2, (y % s) - s / 2
    return dx * dx + dy * dy > (1.5 * q) ** 2


def _checks(x: np.ndarray, y: np.ndarray, q: float) -> np.ndarray:
    c = 3.0 * q
    return (np.floor(x / c) + np.floor(y / c)) % 2 == 0


PATTERNS: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray] | None] = {
    "solid": None,
    "striped": _stripes,
    "polka-dot": _dots,
    "checkered": _checks,
}
"""Pattern name → mask of the main colour (``q`` = pixels per 1/64 of the image side)."""


def second_color(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """The pattern's other colour: a darker shade of a light colour, a lighter tint of a dark one."""
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    if lum > 140:
        return tuple(0.5 * c for c in rgb)  # type: ignore[return-value]
    return tuple(c + 0.5 * (255 - c) for c in rgb)  # type: ignore[return-value]


@lru_cache(maxsize=16384)
def object_masks(
    shape: str, radius: float, angle: float, pattern: str, phase: float, q: float
) -> tuple[np.ndarray, np.ndarray]:
    """Coverage of one object on a square patch of side ``2 * ceil(radius) + 2`` pixels, centred on
    the patch: ``alpha`` (the shape) and ``main`` (the part in the main colour; ``alpha - main`` is
    in the pattern's other colour), both float32 ``(P, P)`` in [0, 1]. Cached: callers quantise the
    angle and phase, so a few thousand entries cover a whole dataset."""
    half = math.ceil(radius) + 1
    p, ss = 2 * half, SUPERSAMPLE
    t = (np.arange(p * ss) + 0.5) / ss - half  # sub-pixel centres, object centre at 0
    x, y = np.meshgrid(t, t)  # (P*ss, P*ss)
    c, s = math.cos(angle), math.sin(angle)
    u, v = (c * x + s * y) / radius, (-s * x + c * y) / radius  # rotate into the shape's frame
    inside = SHAPES[shape](u, v)
    fill = PATTERNS[pattern]
    main = inside if fill is None else inside & fill(x + phase, y + phase, q)
    alpha = inside.reshape(p, ss, p, ss).mean(axis=(1, 3), dtype=np.float32)  # (P, P)
    main_f = main.reshape(p, ss, p, ss).mean(axis=(1, 3), dtype=np.float32)
    alpha.setflags(write=False)
    main_f.setflags(write=False)
    return alpha, main_f


def stamp(
    canvas: np.ndarray,
    masks: tuple[np.ndarray, np.ndarray],
    *,
    cx: int,
    cy: int,
    color: tuple[float, float, float],
    second: tuple[float, float, float],
) -> None:
    """Alpha-composite an object (from :func:`object_masks`) centred on the pixel corner
    ``(cx, cy)`` onto ``canvas`` (float32 ``(H, W, 3)``, modified in place; parts outside the canvas
    are cut off)."""
    alpha, main = masks
    p = alpha.shape[0]
    h, w, _ = canvas.shape
    left, top = cx - p // 2, cy - p // 2
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + p, w), min(top + p, h)
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]  # (ph, pw, 1)
    m = main[y0 - top : y1 - top, x0 - left : x1 - left, None]
    patch = canvas[y0:y1, x0:x1]
    patch *= 1.0 - a
    patch += m * np.asarray(color, np.float32) + (a - m) * np.asarray(second, np.float32)
