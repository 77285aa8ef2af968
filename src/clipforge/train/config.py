"""Typed, strict training configuration, in sections.

A :class:`TrainConfig` says everything a run needs, one section per concern (in the manner of
torchtitan's job config): ``data``, ``model``, ``loss``, ``optim``, ``schedule``, ``compute``,
``distributed``, ``finetune``, ``checkpoint``, ``tracking`` and ``eval``. Each section validates
its own fields; :meth:`TrainConfig.validate` adds the checks that span sections.

Every field also has a *flat name*, unique over all sections: the ``clipforge train`` flag
(``--save-every``), the key of a recipe preset, and the key of a flat ``run.json`` as runs wrote
it before the sections existed. Mostly it is the field's own name; a field whose section makes a
prefix redundant records it (``checkpoint.every`` is ``save_every``, ``model.name`` is ``model``).
:meth:`TrainConfig.from_flat` builds a config from flat names, :meth:`TrainConfig.from_dict`
reads either form (``run.json`` is written nested), and errors name the flat parameter.

Batch sizes are *global*: ``batch_size`` pairs per optimiser step across all processes, split
evenly over ranks and then into ``accum_steps`` micro-batches. The same config therefore trains
the same model (same negatives, same steps) on 1 process or on 8.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from ..config import ConfigError, strict_from_dict
from .presets import apply_recipe, recipe_names
from .sections import (
    CheckpointSection,
    ComputeSection,
    DataSection,
    DistributedSection,
    EvalSection,
    FinetuneSection,
    LossSection,
    ModelSection,
    OptimSection,
    ScheduleSection,
    TrackingSection,
    flat_name,
    need,
)

__all__ = [
    "CheckpointSection",
    "ComputeSection",
    "DataSection",
    "DistributedSection",
    "EvalSection",
    "FinetuneSection",
    "LossSection",
    "ModelSection",
    "OptimSection",
    "ScheduleSection",
    "TrackingSection",
    "TrainConfig",
    "flat_field_names",
    "flat_field_section",
    "flat_field_type",
    "flatten",
]


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults train ``vit-tiny`` with the CLIP loss. Build one from flat names
    with :meth:`from_flat` (``TrainConfig.from_flat(data="pairs.csv", lr=1e-3)``), or from sections."""

    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimSection = field(default_factory=OptimSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    compute: ComputeSection = field(default_factory=ComputeSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    eval: EvalSection = field(default_factory=EvalSection)
    recipe: str | None = None  # the named preset (train/recipes/<name>.json) the fields were started from

    def __post_init__(self) -> None:
        for name, kind in _section_types().items():
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise TypeError(
                    f"TrainConfig({name}=...) takes a {kind.__name__}, got {value!r}; "
                    f"for flat field names use TrainConfig.from_flat({name}=..., ...)"
                )

    def validate(self) -> TrainConfig:
        """Every section's own checks, then those that span sections; returns ``self``."""
        for name in _section_types():
            getattr(self, name).validate()
        need(
            self.recipe is None or self.recipe in recipe_names(),
            f"unknown recipe {self.recipe!r}; known: {', '.join(recipe_names())}",
        )
        self._validate_across()
        return self

    def _validate_across(self) -> None:
        data, sched, tune, shard = self.data, self.schedule, self.finetune, self.distributed.shard
        need(
            data.samples_per_epoch is None or data.samples_per_epoch >= sched.batch_size,
            f"samples_per_epoch must be at least batch_size ({sched.batch_size}), got {data.samples_per_epoch!r}",
        )
        need(0 <= sched.min_lr <= self.optim.lr, "need lr > 0 and 0 <= min_lr <= lr")
        need(not (shard and tune.lora_rank), "shard with lora_rank is not supported yet")
        need(
            not (shard and self.compute.precision == "fp16"),
            "shard needs precision bf16 or fp32 (no fp16 loss scaling)",
        )
        need(not (self.optim.ema_decay and shard), "ema_decay with shard is not supported yet")
        need(not (self.loss.simclr_weight and shard), "simclr_weight with shard is not supported yet")
        need(not (tune.wise_ft < 1 and shard), "wise_ft with shard is not supported yet")
        need(
            tune.wise_ft == 1 or bool(self.model.init),
            "wise_ft < 1 interpolates with the starting weights: set `init=`",
        )
        need(
            not (self.loss.simclr_weight and tune.lock_image and not tune.lock_image_unlocked_blocks),
            "simclr_weight trains the image tower, which lock_image freezes (unlock blocks or drop one of them)",
        )

    def replace(self, **changes: Any) -> TrainConfig:
        """A validated copy with the given fields, by flat name (``cfg.replace(steps=10, lr=1e-3)``);
        to swap a whole section use ``dataclasses.replace(cfg, optim=...)``."""
        return TrainConfig.from_flat(**{**self.to_flat(), **changes}).validate()

    # ---------------------------------------------------------------- flat and nested forms

    def to_flat(self) -> dict[str, Any]:
        """Every field under its flat name (JSON values: tuples as lists)."""
        flat: dict[str, Any] = {"recipe": self.recipe}
        for section, name in _section_types().items():
            for f in dataclasses.fields(name):
                flat[flat_name(f)] = _jsonable(getattr(getattr(self, section), f.name))
        return flat

    def to_dict(self) -> dict[str, Any]:
        """The nested form: one object per section, and ``recipe``."""
        nested: dict[str, Any] = {"recipe": self.recipe}
        for section in _section_types():
            nested[section] = {k: _jsonable(v) for k, v in dataclasses.asdict(getattr(self, section)).items()}
        return nested

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_flat(cls, *, where: str = "train config", **fields: Any) -> TrainConfig:
        """The config with these flat-named fields (the names of the flags and of a flat run.json),
        the rest at their defaults. Not validated and no preset applied (``from_dict`` does both)."""
        where_of = _flat_fields()
        unknown = sorted(set(fields) - set(where_of) - {"recipe"})
        if unknown:
            raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(sorted(where_of))})")
        by_section: dict[str, dict[str, Any]] = {name: {} for name in _section_types()}
        for key, value in fields.items():
            if key != "recipe":
                section, name = where_of[key]
                by_section[section][name] = tuple(value) if isinstance(value, list) else value
        sections = {name: kind(**by_section[name]) for name, kind in _section_types().items()}
        return cls(**sections, recipe=fields.get("recipe"))

    @classmethod
    def from_recipe(cls, recipe: str, **fields: Any) -> TrainConfig:
        """The preset ``recipe`` (``train/recipes/<recipe>.json``) with the flat-named ``fields`` over it.
        (Setting ``recipe=`` in ``from_flat`` only records the name; this applies the preset.)"""
        return cls.from_dict({**{k: _jsonable(v) for k, v in fields.items()}, "recipe": recipe})

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "train config") -> TrainConfig:
        """The config ``data`` says, nested (``{"optim": {"lr": ...}}``, as run.json is written) or
        flat (``{"lr": ...}``, as flags, presets and older run.json files are); a ``recipe`` key
        first sets its preset's fields, and every other key of ``data`` overrides them. Validated."""
        return cls.from_flat(where=where, **apply_recipe(flatten(data, where=where), where=where)).validate()

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from e
        return cls.from_dict(data, where=str(path))


def flatten(data: dict[str, Any], *, where: str = "train config") -> dict[str, Any]:
    """``data`` with every section object (``"optim": {"lr": ...}``) spelt as flat keys (``"lr"``);
    flat keys pass through. A field given both ways, or unknown in its section, is an error."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(data).__name__}")
    sections = _section_types()
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in sections and isinstance(value, dict):
            section = strict_from_dict(sections[key], value, f"{where}.{key}")  # strict keys
            named = {flat_name(f): value[f.name] for f in dataclasses.fields(section) if f.name in value}
        else:
            named = {key: value}
        twice = sorted(set(named) & set(flat))
        if twice:
            raise ConfigError(f"{where}: {', '.join(twice)} given twice (flat and in its section)")
        flat.update(named)
    return flat


def flat_field_names() -> tuple[str, ...]:
    """Every flat field name (flags, presets, flat run.json keys), in section order, ``recipe`` last."""
    return (*_flat_fields(), "recipe")


def flat_field_section(name: str) -> str | None:
    """The section holding the field with flat name ``name`` (None: ``recipe``, beside the sections)."""
    return None if name == "recipe" else _flat_fields()[name][0]


def flat_field_type(name: str) -> Any:
    """The type hint of the field with flat name ``name``."""
    if name == "recipe":
        return typing.get_type_hints(TrainConfig)["recipe"]
    section, field_name = _flat_fields()[name]
    return typing.get_type_hints(_section_types()[section])[field_name]


@cache
def _section_types() -> dict[str, type]:
    return {f.name: f.default_factory for f in dataclasses.fields(TrainConfig) if f.name != "recipe"}  # type: ignore[misc]


@cache
def _flat_fields() -> dict[str, tuple[str, str]]:
    """flat name -> (section, field name)."""
    sections = _section_types().items()
    return {flat_name(f): (section, f.name) for section, kind in sections for f in dataclasses.fields(kind)}


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
