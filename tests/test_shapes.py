"""Built-in shapes data: determinism, held-out pairs, captions, rendering bounds, zero-shot tasks, export."""

from __future__ import annotations

import csv
import itertools
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.data import (
    ShapesDataset,
    ShapesSpec,
    build_dataset,
    export_shapes,
    make_shapes_sample,
    zero_shot_tasks,
)
from clipforge.data.shapes import (
    COUNT_WORDS,
    PATTERNS,
    POSITIONS,
    SHAPES,
    SIZES,
    caption_templates,
    colours,
    heldout_pairs,
    plural,
    render,
    seen_pairs,
    shapes_attributes,
    shapes_caption,
)
from clipforge.data.shapes_tasks import TASK_NAMES, prompt_templates

SPEC = ShapesSpec(n_train=300, n_val=60, n_heldout=60, eval_per_class=3)


def test_vocabulary_sizes() -> None:
    assert len(SHAPES) >= 8 and len(colours()) >= 8 and len(PATTERNS) == 4
    assert set(POSITIONS) == {"left", "right", "top", "bottom", "center"} and set(SIZES) == {"small", "large"}
    assert len(caption_templates()) >= 8
    assert {"circle", "square", "triangle", "star", "ring", "arrow", "diamond", "cross", "heart"} <= set(SHAPES)


def test_samples_are_deterministic_by_seed() -> None:
    for split in ("train", "val", "heldout"):
        for i in (0, 7, 123):
            a_img, a_cap, a_attr = make_shapes_sample(i, split=split, spec=SPEC)
            b_img, b_cap, b_attr = make_shapes_sample(i, split=split, spec=SPEC)
            assert a_img.tobytes() == b_img.tobytes() and a_cap == b_cap and a_attr == b_attr
    other = ShapesSpec(seed=1)
    assert any(
        make_shapes_sample(i, split="train", spec=SPEC)[0].tobytes()
        != make_shapes_sample(i, split="train", spec=other)[0].tobytes()
        for i in range(3)
    )
    train0 = make_shapes_sample(0, split="train", spec=SPEC)[0].tobytes()
    assert train0 != make_shapes_sample(0, split="val", spec=SPEC)[0].tobytes()


def test_image_size_is_configurable() -> None:
    img, _, _ = make_shapes_sample(0, split="train", spec=ShapesSpec(image_size=96))
    assert img.size == (96, 96) and img.mode == "RGB"
    with pytest.raises(ValueError, match="image_size"):
        ShapesSpec(image_size=16)
    with pytest.raises(ValueError, match="holdout_fraction"):
        ShapesSpec(holdout_fraction=0.9)
    with pytest.raises(ValueError, match="unknown shapes split"):
        make_shapes_sample(0, split="test", spec=SPEC)


def test_heldout_pairs_are_balanced_fixed_and_about_a_fifth() -> None:
    held = heldout_pairs(SPEC)
    n_colours, n_shapes = len(colours()), len(SHAPES)
    per_colour = round(0.2 * n_shapes)
    assert len(held) == n_colours * per_colour and len(set(held)) == len(held)
    assert 0.15 <= len(held) / (n_colours * n_shapes) <= 0.25
    assert Counter(c for c, _ in held) == Counter({c: per_colour for c in colours()})
    shape_counts = Counter(s for _, s in held)
    assert max(shape_counts.values()) < n_colours  # every shape is still seen in some colour
    assert held == heldout_pairs(ShapesSpec(seed=99))  # the data seed does not move them
    assert held != heldout_pairs(ShapesSpec(holdout_seed=1))
    assert set(held).isdisjoint(seen_pairs(SPEC))
    assert len(held) + len(seen_pairs(SPEC)) == n_colours * n_shapes
    assert heldout_pairs(ShapesSpec(holdout_fraction=0.0)) == ()


def caption_mentions(caption: str, colour: str, shape: str) -> bool:
    return re.search(rf"\b{colour} ({shape}|{plural(shape)})\b", caption) is not None


def test_heldout_pairs_never_appear_in_train_or_val() -> None:
    held = set(heldout_pairs(SPEC))
    train_pairs = set()
    for split, n in (("train", 3000), ("val", 500)):
        for i in range(n):
            a = shapes_attributes(i, split=split, spec=SPEC)
            caption = shapes_caption(a, i, split=split, spec=SPEC, epoch=i % 3)
            assert (a["colour"], a["shape"]) not in held
            assert not any(caption_mentions(caption, c, s) for c, s in held), caption
            train_pairs.add((a["colour"], a["shape"]))
    assert train_pairs == set(seen_pairs(SPEC))  # and every seen pair is used
    for i in range(300):
        assert tuple(shapes_attributes(i, split="heldout", spec=SPEC)[k] for k in ("colour", "shape")) in held
    for i in range(20):  # the attributes-only path agrees with the full sample
        img, caption, a = make_shapes_sample(i, split="train", spec=SPEC, epoch=2)
        assert a == shapes_attributes(i, split="train", spec=SPEC)
        assert caption == shapes_caption(a, i, split="train", spec=SPEC, epoch=2)


def test_captions_describe_the_image() -> None:
    counts_seen, positions_mentioned = Counter(), 0
    mentioned = Counter()  # attribute -> captions naming it
    for i in range(400):
        _, caption, a = make_shapes_sample(i, split="train", spec=SPEC)
        counts_seen[a["count"]] += 1
        words = caption.split()
        noun = a["shape"] if a["count"] == 1 else plural(a["shape"])
        generic = "shape" if a["count"] == 1 else "shapes"
        # The noun phrase ends in the shape's name (or "shape"), with the colour, when named, just before.
        match = re.search(rf"\b(?:({a['colour']}) )?({noun}|{generic})\b", caption)
        assert match, caption
        assert match.group(1) or match.group(2) != generic, f"'{generic}' without a colour: {caption}"
        assert not any(c in words for c in colours() if c != a["colour"]), caption
        assert not any(s in words for s in SHAPES if s != a["shape"]), caption
        mentioned["colour"] += a["colour"] in words
        mentioned["shape"] += match.group(2) == noun
        if a["count"] > 1:
            assert f"{COUNT_WORDS[a['count']]} " in caption
        else:
            assert re.search(r"\b(a|an|one) \w", caption)
        for name, (_, _, _, phrase) in POSITIONS.items():
            if phrase in caption:
                assert name == a["position"], caption
                positions_mentioned += 1
        if a["pattern"] != "solid":
            assert not any(p in caption for p in PATTERNS if p not in (a["pattern"], "solid")), caption
        other_size = "large" if a["size"] == "small" else "small"
        assert other_size not in caption
    # Captions are partial descriptions: each attribute is named often, but not always.
    assert 0.5 * 400 < mentioned["colour"] < 0.9 * 400 and 0.8 * 400 < mentioned["shape"] < 400, mentioned
    assert set(counts_seen) == {1, 2, 3} and positions_mentioned > 150
    example = [make_shapes_sample(i, split="train", spec=SPEC)[1] for i in range(50)]
    assert len(set(example)) == 50
    assert (
        make_shapes_sample(5, split="train", spec=SPEC, epoch=0)[1]
        != make_shapes_sample(5, split="train", spec=SPEC, epoch=1)[1]
        or make_shapes_sample(6, split="train", spec=SPEC, epoch=0)[1]
        != make_shapes_sample(6, split="train", spec=SPEC, epoch=1)[1]
    )


@pytest.mark.parametrize("image_size", [32, 64])
def test_every_layout_stays_inside_the_image(image_size: int) -> None:
    """Border pixels stay background, and objects of a group do not touch each other."""
    rng = np.random.default_rng(0)
    for size, count, position in itertools.product(SIZES, COUNT_WORDS, POSITIONS):
        for shape in ("square", "circle"):
            attrs = {
                "shape": shape,
                "colour": "red",
                "pattern": "solid",
                "size": size,
                "count": count,
                "position": position,
            }
            arr = np.asarray(render(attrs, image_size=image_size, rng=rng)).astype(int)
            bg = arr[0, 0]
            border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
            assert (np.abs(border - bg).max(axis=1) <= 1).all(), (size, count, position)
            # count connected objects: label the foreground with a tiny flood fill
            fg = np.abs(arr - bg).max(axis=2) > 40
            assert n_components(fg) == count, (size, count, position, shape)


def n_components(mask: np.ndarray) -> int:
    seen = np.zeros_like(mask)
    n = 0
    for y, x in zip(*np.nonzero(mask), strict=True):
        if seen[y, x]:
            continue
        n += 1
        stack = [(y, x)]
        while stack:
            cy, cx = stack.pop()
            if 0 <= cy < mask.shape[0] and 0 <= cx < mask.shape[1] and mask[cy, cx] and not seen[cy, cx]:
                seen[cy, cx] = True
                stack += [(cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)]
    return n


def test_colours_and_positions_show_in_the_pixels() -> None:
    rng = np.random.default_rng(1)
    for position, (ax, ay, _, _) in POSITIONS.items():
        attrs = {
            "shape": "circle",
            "colour": "blue",
            "pattern": "solid",
            "size": "large",
            "count": 1,
            "position": position,
        }
        arr = np.asarray(render(attrs, image_size=64, rng=rng)).astype(int)
        fg = np.abs(arr - arr[0, 0]).max(axis=2) > 40
        ys, xs = np.nonzero(fg)
        assert abs(xs.mean() / 64 - ax) < 0.06 and abs(ys.mean() / 64 - ay) < 0.06, position
        blue = arr[fg].mean(axis=0)
        assert blue[2] > 150 and blue[0] < 100


def test_dataset_and_transform() -> None:
    ds = ShapesDataset("val", spec=SPEC, transform=lambda im: torch.from_numpy(np.asarray(im).copy()))
    assert len(ds) == 60 and len(ShapesDataset("train", spec=SPEC)) == 300
    x, caption = ds[3]
    assert x.shape == (64, 64, 3) and caption == make_shapes_sample(3, split="val", spec=SPEC)[1]
    ds.set_epoch(2)
    assert ds[3][1] == make_shapes_sample(3, split="val", spec=SPEC, epoch=2)[1]
    with pytest.raises(IndexError):
        ds[60]
    assert isinstance(ShapesDataset("heldout", spec=SPEC)[0][0], Image.Image)


def test_zero_shot_tasks_are_well_formed() -> None:
    tasks = zero_shot_tasks(SPEC)
    assert [t.name for t in tasks] == list(TASK_NAMES)
    held = set(heldout_pairs(SPEC))
    prompts = prompt_templates()
    for t in tasks:
        assert len(t.classnames) >= 3 and len(set(t.classnames)) == len(t.classnames)
        assert t.templates and all("{}" in tpl for tpl in t.templates)
        assert t.templates == prompts["colour_shape" if t.name.startswith("colour_shape") else t.name]
        assert Counter(t.targets) == Counter({k: SPEC.eval_per_class for k in range(len(t.classnames))})
        ds = t.dataset
        for i, a in enumerate(ds.attributes):
            label = t.classnames[ds.targets[i]]
            pair = (a["colour"], a["shape"])
            if t.name == "colour_shape_heldout":
                assert pair in held and label == f"{a['colour']} {a['shape']}"
            else:
                assert pair not in held
            if t.name in ("shape", "colour", "pattern"):
                assert a["count"] == 1 and label == a[t.name]
            if t.name == "count":
                assert label.startswith(COUNT_WORDS[a["count"]] + " ")
            if t.name == "position":
                assert label == POSITIONS[a["position"]][3]
        img, target = ds[0]
        assert img.size == (64, 64) and target == ds.targets[0]
        assert ds[0][0].tobytes() == img.tobytes()
    by_name = {t.name: t for t in tasks}
    assert set(by_name["colour_shape_heldout"].classnames) == {f"{c} {s}" for c, s in held}
    seen_task = {tuple(n.split()) for n in by_name["colour_shape_seen"].classnames}
    assert len(seen_task) == len(held) and seen_task.isdisjoint(held)
    one = zero_shot_tasks(SPEC, names=("count",), transform=lambda im: torch.zeros(2))[0]
    assert one.dataset[0][0].shape == (2,)
    with pytest.raises(ValueError, match="unknown shapes task"):
        zero_shot_tasks(SPEC, names=("size",))
    assert [t.name for t in zero_shot_tasks(ShapesSpec(holdout_fraction=0.0, eval_per_class=1))] == list(
        TASK_NAMES[:5]
    )


def test_export_writes_a_csv_dataset(tmp_path: Path) -> None:
    spec = ShapesSpec(n_train=5, n_val=2, n_heldout=3)
    paths = export_shapes(tmp_path / "shapes", spec)
    assert set(paths) == {"train", "val", "heldout"}
    with open(paths["train"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and rows[0]["filepath"] == "train/000000.png"
    img, caption, attrs = make_shapes_sample(4, split="train", spec=spec)
    assert (
        rows[4]["title"] == caption
        and rows[4]["shape"] == attrs["shape"]
        and rows[4]["count"] == str(attrs["count"])
    )
    assert Image.open(tmp_path / "shapes" / rows[4]["filepath"]).convert("RGB").tobytes() == img.tobytes()
    ds = build_dataset(paths["heldout"], transform=None)
    assert (
        len(ds) == 3
        and ds.load_skips == []
        and ds[2][1] == make_shapes_sample(2, split="heldout", spec=spec)[1]
    )


def test_two_object_scenes_have_disjoint_masks_on_their_objects():
    from clipforge.data.shapes import colours
    from clipforge.data.shapes_scenes import heat_contrast, two_object_scene

    for seed in range(20):
        scene = two_object_scene(seed, image_size=64)
        again = two_object_scene(seed, image_size=64)
        assert np.array_equal(np.asarray(scene.image), np.asarray(again.image)) and scene.text == again.text
        article, colour, shape = scene.text.split()
        assert article in ("a", "an") and colour in colours()
        assert scene.target.sum() > 100 and scene.other.sum() > 100 and not (scene.target & scene.other).any()
        pixels = np.asarray(scene.image).astype(int)
        assert np.abs(np.median(pixels[scene.target], 0) - colours()[colour]).max() < 20  # the named colour
        assert np.abs(np.median(pixels[scene.other], 0) - colours()[colour]).max() > 40
        heat = scene.target.astype(float)  # a perfect map: +1 against both
        assert heat_contrast(heat, scene) == (1.0, 1.0)
