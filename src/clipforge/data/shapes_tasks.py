"""Zero-shot classification tasks on the shapes data, defined as data.

Each task has class names, prompt templates (``shapes_prompts.txt``, one section per task) and a
labelled evaluation set whose images make the attribute unambiguous: one object for shape, colour
and pattern; any group for count and position. Classes are balanced (``eval_per_class`` images
each). Apart from the held-out task, every image uses a colour x shape pair seen in training.

- ``colour_shape_heldout``: classes are the held-out colour x shape pairs ("red circle"), images
  show only those pairs — the measure of compositional generalisation.
- ``colour_shape_seen``: the same number of seen pairs, drawn from training's distribution — the
  baseline that ``colour_shape_heldout`` is compared against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from clipforge.data.shapes import (
    COUNT_WORDS,
    POSITIONS,
    ShapesSpec,
    colours,
    heldout_pairs,
    read_data_file,
    render,
    sample_attributes,
    seen_pairs,
)
from clipforge.data.shapes_render import PATTERNS, SHAPES

TASK_NAMES = ("shape", "colour", "pattern", "count", "position", "colour_shape_heldout", "colour_shape_seen")
_TASK_STREAM = 1000  # rng stream ids for evaluation images, far from the split ids


@cache
def prompt_templates() -> dict[str, tuple[str, ...]]:
    """Task name → templates, from ``shapes_prompts.txt``."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in read_data_file("shapes_prompts.txt"):
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            sections[current] = []
        elif current is None:
            raise ValueError(f"shapes_prompts.txt: template {line!r} before any [section]")
        elif "{}" not in line:
            raise ValueError(f"shapes_prompts.txt: template {line!r} in [{current}] has no {{}}")
        else:
            sections[current].append(line)
    return {k: tuple(v) for k, v in sections.items()}


@dataclass(frozen=True)
class ZeroShotTask:
    """A zero-shot task: score ``templates`` x ``classnames`` against ``dataset`` images, whose
    items are ``(image, target)`` with ``target`` an index into ``classnames``."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    dataset: ShapesTaskSet

    @property
    def targets(self) -> list[int]:
        return self.dataset.targets


class ShapesTaskSet(Dataset):
    """Labelled images of one task: ``(transform(image), target)``; deterministic by spec.seed."""

    def __init__(
        self,
        attributes: list[dict[str, Any]],
        targets: list[int],
        *,
        spec: ShapesSpec,
        stream: int,
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        self.attributes, self.targets = attributes, targets
        self.spec, self.stream, self.transform = spec, stream, transform

    def __len__(self) -> int:
        return len(self.targets)

    def image(self, index: int) -> Image.Image:
        rng = np.random.default_rng([self.spec.seed, self.stream, index, 2])
        return render(self.attributes[index], image_size=self.spec.image_size, rng=rng)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.image(index)
        return (self.transform(image) if self.transform is not None else image), self.targets[index]


def _count_name(n: int) -> str:
    return f"{COUNT_WORDS[n]} shape{'s' if n > 1 else ''}"


def _pairs_with(pairs: tuple[tuple[str, str], ...], *, colour: str | None = None, shape: str | None = None):
    return tuple(p for p in pairs if (colour is None or p[0] == colour) and (shape is None or p[1] == shape))


def _task_items(name: str, spec: ShapesSpec, rng: np.random.Generator) -> tuple[tuple[str, ...], list[dict]]:
    seen = seen_pairs(spec)
    k = spec.eval_per_class
    if name in ("colour_shape_heldout", "colour_shape_seen"):
        held = heldout_pairs(spec)
        if name == "colour_shape_heldout":
            classes = held
        else:  # as many seen pairs as held-out ones, fixed by holdout_seed
            pick = np.random.default_rng([spec.holdout_seed, 104729]).choice(
                len(seen), len(held), replace=False
            )
            classes = tuple(seen[i] for i in sorted(pick))
        attrs = [
            sample_attributes(rng, (classes[i % len(classes)],), count=1) for i in range(k * len(classes))
        ]
        return tuple(f"{c} {s}" for c, s in classes), attrs
    if name == "shape":
        classes = tuple(SHAPES)
        attrs = [
            sample_attributes(rng, _pairs_with(seen, shape=classes[i % len(classes)]), count=1)
            for i in range(k * len(classes))
        ]
    elif name == "colour":
        classes = tuple(colours())
        attrs = [
            sample_attributes(rng, _pairs_with(seen, colour=classes[i % len(classes)]), count=1)
            for i in range(k * len(classes))
        ]
    elif name == "pattern":
        classes = tuple(PATTERNS)
        attrs = [
            sample_attributes(rng, seen, count=1, pattern=classes[i % len(classes)])
            for i in range(k * len(classes))
        ]
    elif name == "count":
        counts = tuple(COUNT_WORDS)
        attrs = [sample_attributes(rng, seen, count=counts[i % len(counts)]) for i in range(k * len(counts))]
        return tuple(_count_name(n) for n in counts), attrs
    elif name == "position":
        names = tuple(POSITIONS)
        attrs = [sample_attributes(rng, seen, position=names[i % len(names)]) for i in range(k * len(names))]
        return tuple(POSITIONS[p][3] for p in names), attrs
    else:
        raise ValueError(f"unknown shapes task {name!r}; expected one of {TASK_NAMES}")
    return classes, attrs


def _target_of(name: str, attrs: dict[str, Any], classnames: tuple[str, ...]) -> int:
    label = {
        "shape": attrs["shape"],
        "colour": attrs["colour"],
        "pattern": attrs["pattern"],
        "count": _count_name(attrs["count"]),
        "position": POSITIONS[attrs["position"]][3],
    }.get(name, f"{attrs['colour']} {attrs['shape']}")
    return classnames.index(label)


def zero_shot_tasks(
    spec: ShapesSpec,
    *,
    names: tuple[str, ...] = TASK_NAMES,
    transform: Callable[[Image.Image], Any] | None = None,
) -> list[ZeroShotTask]:
    """The shapes zero-shot tasks (all of :data:`TASK_NAMES` by default), deterministic by spec."""
    prompts = prompt_templates()
    tasks = []
    for name in names:
        stream = _TASK_STREAM + TASK_NAMES.index(name) if name in TASK_NAMES else -1
        if stream < 0:
            raise ValueError(f"unknown shapes task {name!r}; expected one of {TASK_NAMES}")
        if name.startswith("colour_shape") and not heldout_pairs(spec):
            continue  # nothing is held out (the seen task is sized like the held-out one)
        template_key = "colour_shape" if name.startswith("colour_shape") else name
        if template_key not in prompts:
            raise ValueError(f"shapes_prompts.txt has no [{template_key}] section")
        classnames, attrs = _task_items(name, spec, np.random.default_rng([spec.seed, stream]))
        targets = [_target_of(name, a, classnames) for a in attrs]
        dataset = ShapesTaskSet(attrs, targets, spec=spec, stream=stream, transform=transform)
        tasks.append(ZeroShotTask(name, classnames, prompts[template_key], dataset))
    return tasks
