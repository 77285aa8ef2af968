"""The sections of a :class:`~.config.TrainConfig`, one frozen dataclass per concern, each checking its own fields.

A field whose section makes a prefix redundant records the *flat name* it has as a flag, a recipe
key and a key of a flat run.json (``CheckpointSection.every`` is ``save_every``): ``flat_as``.
Errors name that flat parameter, which the CLI says as its flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import ConfigError
from .budget import parse_duration
from .lora import parse_towers
from .tracking import parse_report_to

Loss = Literal["auto", "clip", "siglip"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
ShardSampling = Literal["epoch", "resampled"]
Augment = Literal["none", "light", "strong"]
TokenizerChoice = str  # "openai", "train" (BPE learnt from the training captions) or a tokenizer path


def flat_as(name: str) -> dict[str, str]:
    """Field metadata: the field's flat name (flag, preset key, flat run.json key) differs from its own."""
    return {"flat": name}


def need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(f"train config: {msg}")


def _is_int(value: Any, *, at_least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= at_least


def _positive(**values: Any) -> None:
    for key, value in values.items():
        need(_is_int(value, at_least=1), f"{key} must be a positive int, got {value!r}")


def _non_negative(**values: Any) -> None:
    for key, value in values.items():
        need(_is_int(value, at_least=0), f"{key} must be a non-negative int, got {value!r}")


@dataclass(frozen=True)
class DataSection:
    """The training pairs, how they are read, and how images and captions are varied."""

    source: str = field(default="", metadata=flat_as("data"))  # csv/tsv/jsonl, image folder, shards, or "shapes"
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
        need(bool(self.source), "data is required (a file, folder, shard pattern or 'shapes')")
        need(
            self.shard_sampling in ("epoch", "resampled"),
            f"shard_sampling must be 'epoch' or 'resampled', got {self.shard_sampling!r}",
        )
        need(
            self.shard_sampling == "epoch" or self.samples_per_epoch is not None,
            "shard_sampling='resampled' draws shards forever: set samples_per_epoch (pairs per epoch)",
        )
        _non_negative(workers=self.workers)
        need(
            self.augment in ("none", "light", "strong"), f"augment must be none, light or strong, got {self.augment!r}"
        )
        need(0 <= self.text_dropout < 1, f"text_dropout must be in [0, 1), got {self.text_dropout!r}")


@dataclass(frozen=True)
class ModelSection:
    """The architecture, its starting weights and tokenizer, and training-time model options."""

    name: str = field(default="vit-tiny", metadata=flat_as("model"))  # a built-in name or a model-config JSON file
    init: str | None = None  # fine-tune from these weights: any model reference (clipforge.pretrained)
    tokenizer: TokenizerChoice = "openai"
    vocab_size: int = 1024  # only for tokenizer="train"
    patch_dropout: float = 0.0  # FLIP: drop this share of the ViT's patch tokens in training

    def validate(self) -> None:
        need(isinstance(self.vocab_size, int) and self.vocab_size > 0, "vocab_size must be a positive int")
        need(0 <= self.patch_dropout < 1, f"patch_dropout must be in [0, 1), got {self.patch_dropout!r}")


@dataclass(frozen=True)
class LossSection:
    """The objective and the terms added to it."""

    kind: Loss = field(default="auto", metadata=flat_as("loss"))  # auto: the model's own (siglip for sigmoid models)
    chunk_size: int | None = field(default=None, metadata=flat_as("loss_chunk_size"))
    label_smoothing: float = 0.0  # label smoothing of the InfoNCE targets
    simclr_weight: float = 0.0  # SLIP: weight of an NT-Xent term on two augmented views of each image
    simclr_temperature: float = 0.1

    def validate(self) -> None:
        need(self.kind in ("auto", "clip", "siglip"), f"loss must be 'auto', 'clip' or 'siglip', got {self.kind!r}")
        need(self.chunk_size is None or self.chunk_size >= 1, "loss_chunk_size must be >= 1")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        need(self.simclr_weight >= 0, f"simclr_weight must be >= 0, got {self.simclr_weight!r}")
        need(self.simclr_temperature > 0, f"simclr_temperature must be > 0, got {self.simclr_temperature!r}")


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
        need(self.lr > 0, "need lr > 0 and 0 <= min_lr <= lr")
        need(self.weight_decay >= 0, "weight_decay must be >= 0")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"bad betas {self.betas}")
        need(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive or null")
        need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay!r}")


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
        need(
            self.batch_size % self.accum_steps == 0,
            f"batch_size {self.batch_size} is not divisible by accum_steps {self.accum_steps}",
        )
        if self.time_budget is not None:
            try:
                parse_duration(self.time_budget)
            except ValueError as e:
                need(False, f"time_budget: {e}")

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
        need(self.precision in ("auto", "fp32", "bf16", "fp16"), f"unknown precision {self.precision!r}")


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
        need(
            not self.lock_image_unlocked_blocks or self.lock_image, "lock_image_unlocked_blocks needs lock_image"
        )
        need(_is_int(self.lora_rank, at_least=0), f"lora_rank must be a non-negative int, got {self.lora_rank!r}")
        need(self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha must be positive or null")
        need(
            not (self.lora_rank and self.lock_image), "lora_rank and lock_image cannot be combined (LoRA freezes all)"
        )
        try:
            parse_towers(self.lora_towers)
        except ValueError as e:
            need(False, str(e))
        need(0 <= self.wise_ft <= 1, f"wise_ft must be in [0, 1], got {self.wise_ft!r}")
        need(not (self.wise_ft < 1 and self.lora_rank), "wise_ft with lora_rank is not supported yet")


@dataclass(frozen=True)
class CheckpointSection:
    """The run directory ``out/name`` and its step checkpoints."""

    out: str = "runs"
    name: str = ""  # run directory is out/name; "" picks a timestamped name
    every: int = field(default=200, metadata=flat_as("save_every"))
    keep_last: int = 2

    def validate(self) -> None:
        _positive(keep_last=self.keep_last, save_every=self.every)


@dataclass(frozen=True)
class TrackingSection:
    """Logging: metrics.jsonl always, experiment trackers, the progress bar."""

    every: int = field(default=10, metadata=flat_as("log_every"))
    report_to: str = ""  # comma-separated experiment trackers: tensorboard, wandb, mlflow (JSONL always)
    project: str = "clipforge"  # W&B project / MLflow experiment
    progress: bool = True

    def validate(self) -> None:
        _positive(log_every=self.every)
        try:
            parse_report_to(self.report_to)
        except ValueError as e:
            need(False, str(e))


@dataclass(frozen=True)
class EvalSection:
    """Periodic and final evaluation: retrieval on held-out pairs, zero-shot sets, the regression check."""

    val_data: str | None = None  # held-out pairs for periodic retrieval eval
    every: int = field(default=0, metadata=flat_as("eval_every"))  # 0: evaluate only at the end
    tasks: str | None = field(default=None, metadata=flat_as("eval_tasks"))  # "shapes", folders/CSVs, wds_<name> dirs
    templates: str = field(default="default", metadata=flat_as("eval_templates"))  # for sets that bring none
    max_images: int | None = field(default=None, metadata=flat_as("eval_max_images"))  # per user set (evenly spaced)
    regression_tolerance: float = 0.02  # warn when a fine-tune loses more zero-shot top-1 than this

    def validate(self) -> None:
        _non_negative(eval_every=self.every)
        need(self.max_images is None or self.max_images >= 1, "eval_max_images must be >= 1 or null")
        need(self.regression_tolerance >= 0, "regression_tolerance must be >= 0")


def flat_name(f: Any) -> str:
    """The flat name of a section's dataclass field ``f``."""
    return str(f.metadata.get("flat", f.name))
