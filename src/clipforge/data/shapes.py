"""Built-in "shapes" data: procedural image-caption pairs, generated in code, deterministic by seed.

Each image holds a group of 1-3 identical objects on a neutral grey background, described by six
attributes: shape (10 kinds), colour (10, from ``shapes_colours.txt``), pattern (solid, striped,
polka-dot, checkered), size (small, large), count (1-3) and position of the group (left, right,
top, bottom, center). Captions come from ``shapes_templates.txt``, e.g. "two small striped red
circles on the left" or "a photo of a green polka-dot square".

A fixed set of colour x shape pairs (``holdout_fraction`` of them, every colour losing the same
number of shapes) never appears in the train or val splits; the "heldout" split shows only those
pairs, so zero-shot accuracy on them measures compositional generalisation (see ``shapes_tasks``).

Image ``index`` of a split is a pure function of (seed, split, index); its caption also depends on
the epoch (``ShapesDataset.set_epoch``), so several epochs see several phrasings of one image.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from clipforge.data.shapes_render import PATTERNS, SHAPES, object_masks, second_color, stamp
from clipforge.fileio import atomic_write
from clipforge.progress import progress_bar

SIZES = {"small": 0.09, "large": 0.14}  # object radius as a fraction of the image side
GAP = 0.035  # space between objects of a group, fraction of the image side
MIN_GAP_PX = 1.5
EDGE_PX = 1.0  # objects keep this far from the image border
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
# position → (anchor x, anchor y as fractions of the side, the group's axis, caption phrase)
POSITIONS: dict[str, tuple[float, float, str, str]] = {
    "left": (0.2, 0.5, "vertical", "on the left"),
    "right": (0.8, 0.5, "vertical", "on the right"),
    "top": (0.5, 0.2, "horizontal", "at the top"),
    "bottom": (0.5, 0.8, "horizontal", "at the bottom"),
    "center": (0.5, 0.5, "horizontal", "in the center"),
}
ANGLES = tuple(np.linspace(-0.2, 0.2, 9).round(4).tolist())  # object rotations (radians)
SPLITS = {"train": 0, "val": 1, "heldout": 2}
# How often a caption names each attribute (see ``describe``); "solid" is the pattern of a plain object.
MENTION_PROB = {"shape": 0.9, "colour": 0.6, "size": 0.5, "pattern": 0.6, "solid": 0.2}


def read_data_file(name: str) -> list[str]:
    """Non-empty, non-comment lines of a data file shipped in this package."""
    text = resources.files("clipforge.data").joinpath(name).read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@cache
def colours() -> dict[str, tuple[int, int, int]]:
    """Colour name → RGB, from ``shapes_colours.txt``."""
    table = {}
    for lineno, line in enumerate(read_data_file("shapes_colours.txt"), start=1):
        parts = line.split()
        if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts[1:]):
            raise ValueError(f"shapes_colours.txt: entry {lineno} must be 'name R G B', got {line!r}")
        table[parts[0]] = (int(parts[1]), int(parts[2]), int(parts[3]))
    return table


@cache
def caption_templates() -> tuple[str, ...]:
    templates = tuple(read_data_file("shapes_templates.txt"))
    for t in templates:
        if "{obj}" not in t:
            raise ValueError(f"shapes_templates.txt: template {t!r} has no {{obj}}")
    return templates


@dataclass(frozen=True)
class ShapesSpec:
    """What to generate. ``holdout_seed`` fixes the held-out colour x shape pairs independently of
    ``seed``, so runs with different data seeds are evaluated on the same held-out pairs."""

    n_train: int = 50_000
    n_val: int = 2_000
    n_heldout: int = 2_000
    image_size: int = 64
    seed: int = 0
    holdout_fraction: float = 0.2
    holdout_seed: int = 0
    eval_per_class: int = 40  # images per class in each zero-shot task

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"shapes image_size must be >= 32, got {self.image_size}")
        if not 0.0 <= self.holdout_fraction <= 0.5:
            raise ValueError(f"holdout_fraction must be in [0, 0.5], got {self.holdout_fraction}")
        if min(self.n_train, self.n_val, self.n_heldout, self.eval_per_class) < 0:
            raise ValueError("sample counts must be >= 0")

    def size_of(self, split: str) -> int:
        _split_id(split)
        return {"train": self.n_train, "val": self.n_val, "heldout": self.n_heldout}[split]


def _split_id(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown shapes split {split!r}; expected one of {sorted(SPLITS)}")
    return SPLITS[split] + 1


@cache
def heldout_pairs(spec: ShapesSpec) -> tuple[tuple[str, str], ...]:
    """The (colour, shape) pairs that never appear in train/val, sorted. Each colour loses exactly
    ``round(holdout_fraction * n_shapes)`` shapes, spread evenly over the shapes."""
    names_c, names_s = list(colours()), list(SHAPES)
    per_colour = round(spec.holdout_fraction * len(names_s))
    if per_colour == 0:
        return ()
    rng = np.random.default_rng([spec.holdout_seed, 7919])
    c_order, s_order = rng.permutation(len(names_c)), rng.permutation(len(names_s))
    offsets = rng.choice(len(names_s), size=per_colour, replace=False)
    pairs = {
        (names_c[c_order[i]], names_s[s_order[(i + int(o)) % len(names_s)]])
        for i in range(len(names_c))
        for o in offsets
    }
    return tuple(sorted(pairs))


@cache
def seen_pairs(spec: ShapesSpec) -> tuple[tuple[str, str], ...]:
    held = set(heldout_pairs(spec))
    return tuple((c, s) for c in colours() for s in SHAPES if (c, s) not in held)


def sample_attributes(
    rng: np.random.Generator, pairs: tuple[tuple[str, str], ...], **fixed: Any
) -> dict[str, Any]:
    """Random attributes with the colour x shape pair drawn from ``pairs``; ``fixed`` overrides."""
    colour, shape = pairs[int(rng.integers(len(pairs)))]
    attrs = {
        "shape": shape,
        "colour": colour,
        "pattern": list(PATTERNS)[int(rng.integers(len(PATTERNS)))],
        "size": list(SIZES)[int(rng.integers(len(SIZES)))],
        "count": int(rng.integers(1, 4)),
        "position": list(POSITIONS)[int(rng.integers(len(POSITIONS)))],
    }
    attrs.update(fixed)
    return attrs


def render(attrs: dict[str, Any], *, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the group described by ``attrs`` (small random jitter in place, angle, colour shade)."""
    side = float(image_size)
    canvas = np.full((image_size, image_size, 3), rng.uniform(110, 150), dtype=np.float32)  # (H, W, 3)
    base = np.array(colours()[attrs["colour"]], dtype=np.float64)
    color = tuple(np.clip(base + rng.uniform(-12, 12, size=3), 0, 255))
    ax, ay, axis, _ = POSITIONS[attrs["position"]]
    n, r = attrs["count"], SIZES[attrs["size"]] * side
    # Layout in whole pixels, so every object of a group has the same sub-pixel phase and the gaps
    # are exact: `step` between centres, shrunk only if the group would not fit in the image.
    step = math.ceil(2 * r + max(GAP * side, MIN_GAP_PX))
    if n > 1:
        step = min(step, int((side - 2 * EDGE_PX - 2 * r) // (n - 1)))
    half_span = (n - 1) * step / 2 + r  # from the group's centre to its outer edge, along the axis
    lo_along, hi_along = math.ceil(half_span + EDGE_PX), math.floor(side - half_span - EDGE_PX)
    lo_across, hi_across = math.ceil(r + EDGE_PX), math.floor(side - r - EDGE_PX)
    g_along = round(((ay if axis == "vertical" else ax) + rng.uniform(-0.02, 0.02)) * side)
    g_across = round(((ax if axis == "vertical" else ay) + rng.uniform(-0.02, 0.02)) * side)
    g_along = min(max(g_along, lo_along), hi_along)
    phase = float(rng.integers(4))  # pattern offset, in pixels (quantised: masks are cached)
    second = second_color(color)
    for i in range(n):
        along = g_along + round((i - (n - 1) / 2) * step)
        across = min(max(g_across + round(rng.uniform(-0.02, 0.02) * side), lo_across), hi_across)
        cx, cy = (across, along) if axis == "vertical" else (along, across)
        angle = ANGLES[int(rng.integers(len(ANGLES)))]
        masks = object_masks(attrs["shape"], r, angle, attrs["pattern"], phase, side / 64.0)
        stamp(canvas, masks, cx=cx, cy=cy, color=color, second=second)
    return Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8))


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "sh", "ch")) else "s")


def describe(attrs: dict[str, Any], *, rng: np.random.Generator) -> str:
    """A caption for ``attrs`` naming a random subset of the attributes (``MENTION_PROB``): the
    shape (else "shape"), colour, size and pattern each only sometimes; the count as a number word
    for groups; the position when the template has a slot for it.

    Partial captions matter. If every caption named every attribute, almost every image in a batch
    would already differ from the others in colour, pattern, count or position, and the
    contrastive loss would never need the shape; captions that leave attributes out make the
    images they could match share those attributes, and make prompts like "a photo of a circle"
    look like training captions."""
    n = attrs["count"]
    noun = attrs["shape"] if rng.random() < MENTION_PROB["shape"] else "shape"
    words = [attrs["size"]] if rng.random() < MENTION_PROB["size"] else []
    pattern = attrs["pattern"]
    if rng.random() < MENTION_PROB["pattern" if pattern != "solid" else "solid"]:
        words.append(pattern)
    if rng.random() < MENTION_PROB["colour"] or noun == "shape":  # "a shape" alone says nothing
        words.append(attrs["colour"])
    words.append(plural(noun) if n > 1 else noun)
    if n > 1:
        det = COUNT_WORDS[n]
    elif rng.random() < 0.15:
        det = "one"
    else:
        det = "an" if words[0][0] in "aeiou" else "a"
    templates = caption_templates()
    template = templates[int(rng.integers(len(templates)))]
    return template.format(obj=f"{det} {' '.join(words)}", where=POSITIONS[attrs["position"]][3])


def _attributes(index: int, split: str, spec: ShapesSpec) -> tuple[np.random.Generator, dict[str, Any]]:
    pairs = heldout_pairs(spec) if split == "heldout" else seen_pairs(spec)
    if not pairs:
        raise ValueError(
            f"split {split!r} has no colour x shape pairs (holdout_fraction={spec.holdout_fraction})"
        )
    rng = np.random.default_rng([spec.seed, _split_id(split), index])
    return rng, sample_attributes(rng, pairs)  # the same rng goes on to draw the image


def shapes_attributes(index: int, *, split: str, spec: ShapesSpec) -> dict[str, Any]:
    """Attributes of sample ``index`` without drawing it (cheap, for statistics and tests)."""
    return _attributes(index, split, spec)[1]


def shapes_caption(attrs: dict[str, Any], index: int, *, split: str, spec: ShapesSpec, epoch: int = 0) -> str:
    """The caption of sample ``index`` (with attributes ``attrs``) in ``epoch``."""
    return describe(attrs, rng=np.random.default_rng([spec.seed, _split_id(split), index, epoch, 1]))


def make_shapes_sample(
    index: int, *, split: str, spec: ShapesSpec, epoch: int = 0
) -> tuple[Image.Image, str, dict[str, Any]]:
    """Image, caption and attributes of sample ``index`` of ``split`` ("train", "val", "heldout")."""
    rng, attrs = _attributes(index, split, spec)
    image = render(attrs, image_size=spec.image_size, rng=rng)
    return image, shapes_caption(attrs, index, split=split, spec=spec, epoch=epoch), attrs


class ShapesDataset(Dataset):
    """``(transform(image), caption)`` for one split of the shapes data (PIL image without transform)."""

    def __init__(
        self,
        split: str = "train",
        *,
        spec: ShapesSpec | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.spec = spec or ShapesSpec()
        _split_id(split)
        self.split = split
        self.transform = transform
        self.epoch = 0
        self.load_skips: list = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.spec.size_of(self.split)

    def captions(self, limit: int) -> Iterator[str]:
        """The first ``limit`` captions of the split, without drawing the images."""
        for i in range(min(limit, len(self))):
            attrs = shapes_attributes(i, split=self.split, spec=self.spec)
            yield shapes_caption(attrs, i, split=self.split, spec=self.spec)

    def __getitem__(self, index: int) -> tuple[Any, str]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        image, caption, _ = make_shapes_sample(index, split=self.split, spec=self.spec, epoch=self.epoch)
        return (self.transform(image) if self.transform is not None else image), caption


def export_shapes(
    out_dir: str | Path, spec: ShapesSpec, *, splits: tuple[str, ...] = ("train", "val", "heldout")
) -> dict[str, Path]:
    """Write each split as ``<split>.csv`` (columns ``filepath``, ``title`` and the attributes) plus
    PNGs under ``<split>/``, the format ``build_dataset`` reads. Returns split → CSV path."""
    out = Path(out_dir)
    written = {}
    for split in splits:
        (out / split).mkdir(parents=True, exist_ok=True)
        n = spec.size_of(split)
        digits = max(6, len(str(max(n - 1, 0))))

        def write_split(tmp: str, split: str = split, n: int = n, digits: int = digits) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                writer.writerow(["filepath", "title", "shape", "colour", "pattern", "size", "count", "position"])
                for i in progress_bar(range(n), desc=f"shapes {split}", unit="img", leave=False):
                    image, caption, a = make_shapes_sample(i, split=split, spec=spec)
                    rel = f"{split}/{i:0{digits}d}.png"
                    image.save(out / rel)
                    attributes = [a[k] for k in ("shape", "colour", "pattern", "size", "count", "position")]
                    writer.writerow([rel, caption, *attributes])

        written[split] = atomic_write(out / f"{split}.csv", write_split)  # the CSV last: it names the PNGs
    return written


def grid(images: list[Image.Image], *, columns: int = 8) -> Image.Image:
    """Tile images into one picture (for looking at the data)."""
    w, h = images[0].size
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * w, rows * h), (255, 255, 255))
    for i, im in enumerate(images):
        sheet.paste(im, ((i % columns) * w, (i // columns) * h))
    return sheet
