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
from typing import Any, Literal

from ..config import ConfigError, strict_from_dict
from .budget import parse_duration
from .lora import parse_towers
from .presets import apply_recipe, recipe_names
from .tracking import parse_report_to

Loss = Literal["auto", "clip", "siglip"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
ShardSampling = Literal["epoch", "resampled"]
Augment = Literal["none", "light", "strong"]
TokenizerChoice = str  # "openai", "train" (BPE learnt from the training captions) or a tokenizer path


def _flat(name: str) -> dict[str, str]:
    """Field metadata: the field's flat name (flag, preset key, flat run.json key) differs from its own."""
    return {"flat": name}


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(f"train config: {msg}")


def _is_int(value: Any, *, at_least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= at_least


def _positive(**values: Any) -> None:
    for key, value in values.items():
        _need(_is_int(value, at_least=1), f"{key} must be a positive int, got {value!r}")


def _non_negative(**values: Any) -> None:
    for key, value in values.items():
        _need(_is_int(value, at_least=0), f"{key} must be a non-negative int, got {value!r}")


@dataclass(frozen=True)
class DataSection:
    """The training pairs, how they are read, and how images and captions are varied."""

    source: str = field(default="", metadata=_flat("data"))  # csv/tsv/jsonl, image folder, shards, or "shapes"
    image_key: str = "filepath"
    caption_key: str = "title"
    cache: str | None = None  # directory of a pre-decoded uint8 image cache (built on first use)
    workers: int = 2
    shard_sampling: ShardSampling = "epoch"  # tar shards: "epoch" (each once per epoch) or "resampled"
    samples_per_epoch: int | None = None  # streamed data: an epoch is this many pairs (needed when resampled)
    sample_captions: bool = False  # several captions per image, one per epoch, all of them over epochs
    augment: Augment = "none"  # light: mild random resized crop + caption-safe flip; strong: + colour jitter
    text_dropout: float = 0.0  # drop each tag (comma lists) or word with this probability
    shuffle_tags: bool = False  # shuffle the order of comma-separated tags

    def validate(self) -> None:
        _need(bool(self.source), "data is required (a file, folder, shard pattern or 'shapes')")
        _need(
            self.shard_sampling in ("epoch", "resampled"),
            f"shard_sampling must be 'epoch' or 'resampled', got {self.shard_sampling!r}",
        )
        _need(
            self.shard_sampling == "epoch" or self.samples_per_epoch is not None,
            "shard_sampling='resampled' draws shards forever: set samples_per_epoch (pairs per epoch)",
        )
        _non_negative(workers=self.workers)
        _need(
            self.augment in ("none", "light", "strong"), f"augment must be none, light or strong, got {self.augment!r}"
        )
        _need(0 <= self.text_dropout < 1, f"text_dropout must be in [0, 1), got {self.text_dropout!r}")


@dataclass(frozen=True)
class ModelSection:
    """The architecture, its starting weights and tokenizer, and training-time model options."""

    name: str = field(default="vit-tiny", metadata=_flat("model"))  # a built-in name or a model-config JSON file
    init: str | None = None  # fine-tune from these weights: any model reference (clipforge.pretrained)
    tokenizer: TokenizerChoice = "openai"
    vocab_size: int = 1024  # only for tokenizer="train"
    patch_dropout: float = 0.0  # FLIP: drop this share of the ViT's patch tokens in training

    def validate(self) -> None:
        _need(isinstance(self.vocab_size, int) and self.vocab_size > 0, "vocab_size must be a positive int")
        _need(0 <= self.patch_dropout < 1, f"patch_dropout must be in [0, 1), got {self.patch_dropout!r}")


@dataclass(frozen=True)
class LossSection:
    """The objective and the terms added to it."""

    kind: Loss = field(default="auto", metadata=_flat("loss"))  # auto: the model's own (siglip for sigmoid models)
    chunk_size: int | None = field(default=None, metadata=_flat("loss_chunk_size"))
    label_smoothing: float = 0.0  # label smoothing of the InfoNCE targets
    simclr_weight: float = 0.0  # SLIP: weight of an NT-Xent term on two augmented views of each image
    simclr_temperature: float = 0.1

    def validate(self) -> None:
        _need(self.kind in ("auto", "clip", "siglip"), f"loss must be 'auto', 'clip' or 'siglip', got {self.kind!r}")
        _need(self.chunk_size is None or self.chunk_size >= 1, "loss_chunk_size must be >= 1")
        _need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        _need(self.simclr_weight >= 0, f"simclr_weight must be >= 0, got {self.simclr_weight!r}")
        _need(self.simclr_temperature > 0, f"simclr_temperature must be > 0, got {self.simclr_temperature!r}")


@dataclass(frozen=True)
class OptimSection:
    """AdamW, gradient clipping, and the moving average of the weights."""

    lr: float = 5e-4  # peak learning rate
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float | None = 1.0
    ema_decay: float = 0.0  # exponential moving average of the weights (evaluated and saved); 0: off

    def validate(self) -> None:
        _need(self.lr > 0, "need lr > 0 and 0 <= min_lr <= lr")
        _need(self.weight_decay >= 0, "weight_decay must be >= 0")
        _need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"bad betas {self.betas}")
        _need(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive or null")
        _need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay!r}")


@dataclass(frozen=True)
class ScheduleSection:
    """How long and in what steps: the step count or time budget, batches, the learning-rate curve, the seed."""

    steps: int = 1000  # optimiser steps in total
    batch_size: int = 128  # global pairs per optimiser step
    accum_steps: int = 1  # micro-batches per step (negatives still span the whole batch)
    warmup_steps: int = 100
    min_lr: float = 0.0  # the learning rate at the end of the cosine
    time_budget: str | None = None  # wall-clock budget ("25m", "90s", "1h", "1500"): sizes steps and schedule
    seed: int = 0

    def validate(self) -> None:
        _positive(steps=self.steps, batch_size=self.batch_size, accum_steps=self.accum_steps)
        _non_negative(warmup_steps=self.warmup_steps)
        _need(
            self.batch_size % self.accum_steps == 0,
            f"batch_size {self.batch_size} is not divisible by accum_steps {self.accum_steps}",
        )
        if self.time_budget is not None:
            try:
                parse_duration(self.time_budget)
            except ValueError as e:
                _need(False, f"time_budget: {e}")

    @property
    def time_budget_s(self) -> float | None:
        """``time_budget`` in seconds (None: no budget)."""
        return None if self.time_budget is None else parse_duration(self.time_budget)


@dataclass(frozen=True)
class ComputeSection:
    """Where and in what precision the steps run."""

    precision: Precision = "auto"
    device: str = "auto"
    grad_checkpointing: bool = False

    def validate(self) -> None:
        _need(self.precision in ("auto", "fp32", "bf16", "fp16"), f"unknown precision {self.precision!r}")


@dataclass(frozen=True)
class DistributedSection:
    """Several processes (torchrun): whether parameters are sharded."""

    shard: bool = False  # FSDP2: shard parameters, gradients and optimiser state over the ranks

    def validate(self) -> None:
        pass


@dataclass(frozen=True)
class FinetuneSection:
    """What is trained (LiT locking, LoRA adapters) and how the result is merged with the start (WiSE-FT)."""

    lock_image: bool = False
    lock_image_unlocked_blocks: int = 0  # with lock_image: leave the last N blocks (and the head) trainable
    lora_rank: int = 0  # 0: off (full fine-tuning)
    lora_alpha: float | None = None  # adapter scale alpha / rank (default alpha = rank)
    lora_towers: str = "image,text"
    wise_ft: float = 1.0  # final = (1 - a) * init + a * trained (WiSE-FT); 1: off

    def validate(self) -> None:
        _non_negative(lock_image_unlocked_blocks=self.lock_image_unlocked_blocks)
        _need(
            not self.lock_image_unlocked_blocks or self.lock_image, "lock_image_unlocked_blocks needs lock_image"
        )
        _need(_is_int(self.lora_rank, at_least=0), f"lora_rank must be a non-negative int, got {self.lora_rank!r}")
        _need(self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha must be positive or null")
        _need(
            not (self.lora_rank and self.lock_image), "lora_rank and lock_image cannot be combined (LoRA freezes all)"
        )
        try:
            parse_towers(self.lora_towers)
        except ValueError as e:
            _need(False, str(e))
        _need(0 <= self.wise_ft <= 1, f"wise_ft must be in [0, 1], got {self.wise_ft!r}")
        _need(not (self.wise_ft < 1 and self.lora_rank), "wise_ft with lora_rank is not supported yet")


@dataclass(frozen=True)
class CheckpointSection:
    """The run directory ``out/name`` and its step checkpoints."""

    out: str = "runs"
    name: str = ""  # run directory is out/name; "" picks a timestamped name
    every: int = field(default=200, metadata=_flat("save_every"))
    keep_last: int = 2

    def validate(self) -> None:
        _positive(keep_last=self.keep_last, save_every=self.every)


@dataclass(frozen=True)
class TrackingSection:
    """Logging: metrics.jsonl always, experiment trackers, the progress bar."""

    every: int = field(default=10, metadata=_flat("log_every"))
    report_to: str = ""  # comma-separated experiment trackers: tensorboard, wandb, mlflow (JSONL always)
    project: str = "clipforge"  # W&B project / MLflow experiment
    progress: bool = True

    def validate(self) -> None:
        _positive(log_every=self.every)
        try:
            parse_report_to(self.report_to)
        except ValueError as e:
            _need(False, str(e))


@dataclass(frozen=True)
class EvalSection:
    """Periodic and final evaluation: retrieval on held-out pairs, zero-shot sets, the regression check."""

    val_data: str | None = None  # held-out pairs for periodic retrieval eval
    every: int = field(default=0, metadata=_flat("eval_every"))  # 0: evaluate only at the end
    tasks: str | None = field(default=None, metadata=_flat("eval_tasks"))  # "shapes", folders/CSVs, wds_<name> dirs
    templates: str = field(default="default", metadata=_flat("eval_templates"))  # for sets that bring none
    max_images: int | None = field(default=None, metadata=_flat("eval_max_images"))  # per user set (evenly spaced)
    regression_tolerance: float = 0.02  # warn when a fine-tune loses more zero-shot top-1 than this

    def validate(self) -> None:
        _non_negative(eval_every=self.every)
        _need(self.max_images is None or self.max_images >= 1, "eval_max_images must be >= 1 or null")
        _need(self.regression_tolerance >= 0, "regression_tolerance must be >= 0")


Section = (
    DataSection | ModelSection | LossSection | OptimSection | ScheduleSection | ComputeSection
    | DistributedSection | FinetuneSection | CheckpointSection | TrackingSection | EvalSection
)


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
        _need(
            self.recipe is None or self.recipe in recipe_names(),
            f"unknown recipe {self.recipe!r}; known: {', '.join(recipe_names())}",
        )
        self._validate_across()
        return self

    def _validate_across(self) -> None:
        data, sched, tune, shard = self.data, self.schedule, self.finetune, self.distributed.shard
        _need(
            data.samples_per_epoch is None or data.samples_per_epoch >= sched.batch_size,
            f"samples_per_epoch must be at least batch_size ({sched.batch_size}), got {data.samples_per_epoch!r}",
        )
        _need(0 <= sched.min_lr <= self.optim.lr, "need lr > 0 and 0 <= min_lr <= lr")
        _need(not (shard and tune.lora_rank), "shard with lora_rank is not supported yet")
        _need(
            not (shard and self.compute.precision == "fp16"),
            "shard needs precision bf16 or fp32 (no fp16 loss scaling)",
        )
        _need(not (self.optim.ema_decay and shard), "ema_decay with shard is not supported yet")
        _need(not (self.loss.simclr_weight and shard), "simclr_weight with shard is not supported yet")
        _need(not (tune.wise_ft < 1 and shard), "wise_ft with shard is not supported yet")
        _need(
            tune.wise_ft == 1 or bool(self.model.init),
            "wise_ft < 1 interpolates with the starting weights: set `init=`",
        )
        _need(
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
                flat[_flat_name(f)] = _jsonable(getattr(getattr(self, section), f.name))
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
            named = {_flat_name(f): value[f.name] for f in dataclasses.fields(section) if f.name in value}
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
    return {_flat_name(f): (section, f.name) for section, kind in sections for f in dataclasses.fields(kind)}


def _flat_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("flat", f.name))


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
