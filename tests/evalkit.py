"""Helpers for the evaluation and application tests: a word-level stand-in tokenizer, hand-drawn
shape images and a small model trained on the shapes data (not a test module)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 200, 20)}


class WordTokenizer:
    """Whitespace words → ids; 0 pad, 1 start, the largest id ends the text (as the model expects)."""

    def __init__(self, vocab_size: int = 64, context_length: int = 16) -> None:
        self.vocab_size, self.context_length = vocab_size, context_length
        self.eot = vocab_size - 1

    def __call__(self, texts: list[str], context_length: int | None = None) -> torch.Tensor:
        ctx = context_length or self.context_length
        out = torch.zeros(len(texts), ctx, dtype=torch.long)
        for i, text in enumerate(texts):
            words = [2 + sum(map(ord, w)) % (self.vocab_size - 3) for w in text.lower().split()]
            ids = [1] + words[: ctx - 2] + [self.eot]
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def shape_image(shape: str = "circle", colour: str = "red", *, size: int = 64, box=None) -> Image.Image:
    image = Image.new("RGB", (size, size), (240, 240, 240))
    draw_shape(image, shape, colour, box or (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return image


def draw_shape(image: Image.Image, shape: str, colour: str, box) -> None:
    d, c = ImageDraw.Draw(image), COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=c)
    elif shape == "square":
        d.rectangle(box, fill=c)
    else:
        x0, y0, x1, y1 = box
        d.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=c)


# ---- a small model trained on the built-in shapes data (shared by the eval, apps and heat-map tests) -
# A ViT at the quickstart's input size, 64 px with 8 x 8 patches (an 8 x 8 token grid): the one model
# the tests that need *a* trained ViT share, the heat-map test at quickstart size included. (Until
# 2026-12 these tests trained a 32 px / patch-4 ViT and the heat-map test this one besides.)
SHAPES_MODEL = {
    "name": "eval-test-vit",
    "embed_dim": 64,
    "act": "gelu",
    "vision": {"kind": "vit", "image_size": 64, "patch_size": 8, "width": 64, "layers": 3, "head_width": 32},
    "text": {"context_length": 24, "vocab_size": 49408, "width": 64, "layers": 2, "head_width": 32},
}
SHAPES_STEPS = 100
SHAPES_BATCH = 128


def quickstart_resnet() -> dict:
    import json
    from importlib import resources

    return json.loads(resources.files("clipforge.train").joinpath("quickstart_model.json").read_text())


# ---- models the tests train, cached on disk across sessions ------------------------------------
TEST_CACHE_ENV = "CLIPFORGE_TEST_CACHE"
REPO = Path(__file__).resolve().parents[1]


def code_hash() -> str:
    """A hash of everything that can change a trained test model: the package's sources and data
    files, and this module (which holds the training recipes)."""
    h = hashlib.sha256()
    files = sorted(p for p in (REPO / "src" / "clipforge").rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for path in [*files, Path(__file__).resolve()]:
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def cached_model_dir(name: str, recipe: dict) -> Path:
    """Where a test model trained by ``recipe`` lives: ``$CLIPFORGE_TEST_CACHE`` (default
    ``.cache/test-models`` in the repository) / ``name-<hash of recipe and code>``. A change to the
    code or to the recipe gives a new folder, so a stale model is never used."""
    root = Path(os.environ.get(TEST_CACHE_ENV) or REPO / ".cache" / "test-models")
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode() + code_hash().encode()).hexdigest()[:16]
    return root / f"{name}-{key}"


@contextlib.contextmanager
def _exclusive(folder: Path):
    """One trainer per cached model across processes (parallel test workers wait for the first)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def train_shapes_model(
    name: str = "shapes-vit", *, model: dict = SHAPES_MODEL, steps: int = SHAPES_STEPS, batch_size: int = SHAPES_BATCH
):
    """Train ``model`` (default: a tiny ViT) for 100 steps of 128 shapes pairs with the library's
    training API and a BPE vocabulary learnt from the captions, evaluating the colour task at the end
    exactly as the training loop (and so ``quickstart``) does — once: the result is cached on disk
    (:func:`cached_model_dir`) and reused by later calls and sessions until the code or the recipe
    changes. Returns (checkpoint path, the loop's final evaluation dict). About 37 s on one core
    of a 2-core machine when it trains."""
    folder = cached_model_dir(name, {"model": model, "steps": steps, "batch_size": batch_size})
    ckpt, report = folder / "run" / "model.safetensors", folder / "fit_eval.json"
    with _exclusive(folder):
        if not (ckpt.is_file() and report.is_file()):
            building = folder.with_name(folder.name + ".partial")
            shutil.rmtree(building, ignore_errors=True)
            evaluation = _train_shapes(building, model=model, steps=steps, batch_size=batch_size)
            (building / "fit_eval.json").write_text(json.dumps(evaluation))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(building, folder)  # complete or absent: a killed run leaves only a .partial
    return ckpt, json.loads(report.read_text())


def _train_shapes(folder: Path, *, model: dict, steps: int, batch_size: int) -> dict:
    from clipforge.api import image_transform
    from clipforge.data import ShapesSpec, zero_shot_tasks
    from clipforge.models import get_model_config
    from clipforge.train.config import TrainConfig
    from clipforge.train.loop import fit
    from clipforge.train.periodic_eval import materialize_task

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(model))
    model_cfg = get_model_config(str(folder / "model.json"))
    spec = ShapesSpec(image_size=model_cfg.vision.image_size)
    (colour,) = zero_shot_tasks(spec, names=("colour",), transform=image_transform(model_cfg))
    cfg = TrainConfig.from_flat(
        data="shapes", model=str(folder / "model.json"), tokenizer="train", vocab_size=1024,
        steps=steps, batch_size=batch_size, lr=2e-3, warmup_steps=20, weight_decay=0.1, precision="fp32",
        device="cpu", workers=0, out=str(folder), name="run", save_every=10_000, progress=False,
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is much faster on a busy 2-core machine
    try:
        result = fit(cfg, eval_sets=([materialize_task(colour)], None))
    finally:
        torch.set_num_threads(threads)
    return result.eval


def two_object_image(seed: int, *, size: int = 128):
    """A large solid red circle and another solid shape of another colour, side by side, drawn by the
    shapes renderer. Returns (image, mask of the red circle, mask of the other shape), masks (H, W)."""
    import numpy as np

    from clipforge.data.shapes import render

    red_left = seed % 2 == 0
    other = ("square", "triangle", "star", "heart")[seed % 4]
    colour = ("blue", "green", "yellow", "purple")[(seed // 2) % 4]
    a = {"shape": "circle", "colour": "red", "pattern": "solid", "size": "large", "count": 1,
         "position": "left" if red_left else "right"}  # fmt: skip
    b = {"shape": other, "colour": colour, "pattern": "solid", "size": "large", "count": 1,
         "position": "right" if red_left else "left"}  # fmt: skip
    img_a = np.asarray(render(a, image_size=size, rng=np.random.default_rng([seed, 1]))).astype(np.int32)
    img_b = np.asarray(render(b, image_size=size, rng=np.random.default_rng([seed, 2]))).astype(np.int32)
    mask_a = np.abs(img_a - img_a[0, 0]).sum(-1) > 30  # (H, W) object pixels differ from the background
    mask_b = np.abs(img_b - img_b[0, 0]).sum(-1) > 30
    out = img_a.copy()
    out[mask_b] = img_b[mask_b]
    return Image.fromarray(out.astype(np.uint8)), mask_a, mask_b & ~mask_a


HIT_SCENES = 60


def hit_rate(loaded, method: str = "auto") -> float:
    """Share of ``HIT_SCENES`` two-object scenes where the heat map of the named object's text (from
    ``loaded``: (model, tokenizer, transform)) is brighter on that object than on the other one and
    than on the background (means over the scene's own pixels)."""
    from clipforge.data.shapes_scenes import heat_contrast, two_object_scene
    from clipforge.eval.explain import explain
    from clipforge.eval.zeroshot import encode_texts

    model, tokenizer, transform = loaded
    hits = 0
    for seed in range(HIT_SCENES):
        scene = two_object_scene(seed)
        text = encode_texts(model, tokenizer, [scene.text])[0]
        heat = explain(model, transform, scene.image, text, text=scene.text, method=method).heat_on_image()
        vs_other, vs_background = heat_contrast(heat, scene)
        hits += vs_other > 0 and vs_background > 0
    return hits / HIT_SCENES
