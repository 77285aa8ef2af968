"""Typed, strict training configuration.

A :class:`TrainConfig` says everything a run needs: the data, the model, the optimiser and its
schedule, precision, accumulation, locking, checkpointing and evaluation. It round-trips through
plain JSON (``run.json`` in the run directory); an unknown or misspelt key is an error naming it.

Batch sizes are *global*: ``batch_size`` pairs per optimiser step across all processes, split
evenly over ranks and then into ``accum_steps`` micro-batches. The same config therefore trains
the same model (same negatives, same steps) on 1 process or on 8.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
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


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults train ``vit-tiny`` with the CLIP loss."""

    # data
    data: str = ""  # csv/tsv/jsonl file, image folder, webdataset shards, or "shapes"
    val_data: str | None = None  # held-out pairs for periodic retrieval eval
    image_key: str = "filepath"
    caption_key: str = "title"
    cache: str | None = None  # directory of a pre-decoded uint8 image cache (built on first use)
    workers: int = 2
    shard_sampling: ShardSampling = "epoch"  # tar shards: "epoch" (each once per epoch) or "resampled"
    samples_per_epoch: int | None = None  # streamed data: an epoch is this many pairs (needed when resampled)
    # model and tokenizer
    model: str = "vit-tiny"  # a built-in name or a model-config JSON file
    init: str | None = None  # fine-tune from these weights: any model reference (clipforge.pretrained)
    tokenizer: TokenizerChoice = "openai"
    vocab_size: int = 1024  # only for tokenizer="train"
    loss: Loss = "auto"  # auto: the model's own objective (siglip for sigmoid-loss models, else clip)
    loss_chunk_size: int | None = None
    # optimisation
    steps: int = 1000  # optimiser steps in total
    batch_size: int = 128  # global pairs per optimiser step
    accum_steps: int = 1  # micro-batches per step (negatives still span the whole batch)
    lr: float = 5e-4
    min_lr: float = 0.0
    warmup_steps: int = 100
    weight_decay: float = 0.2
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    grad_clip: float | None = 1.0
    precision: Precision = "auto"
    device: str = "auto"
    seed: int = 0
    grad_checkpointing: bool = False
    shard: bool = False  # FSDP2: shard parameters, gradients and optimiser state over the ranks
    # locking (LiT)
    lock_image: bool = False
    lock_image_unlocked_blocks: int = 0  # with lock_image: leave the last N blocks (and the head) trainable
    # LoRA: low-rank adapters on the attention and MLP projections, merged into the saved weights
    lora_rank: int = 0  # 0: off (full fine-tuning)
    lora_alpha: float | None = None  # adapter scale alpha / rank (default alpha = rank)
    lora_towers: str = "image,text"
    # run directory, checkpoints, logging, eval
    out: str = "runs"
    name: str = ""  # run directory is out/name; "" picks a timestamped name
    save_every: int = 200
    keep_last: int = 2
    log_every: int = 10
    report_to: str = ""  # comma-separated experiment trackers: tensorboard, wandb, mlflow (JSONL always)
    project: str = "clipforge"  # W&B project / MLflow experiment
    eval_every: int = 0  # 0: evaluate only at the end
    eval_tasks: str | None = None  # comma-separated: "shapes", labelled folders/CSVs, CLIP_benchmark wds_<name> dirs
    eval_templates: str = "default"  # templates for eval sets that bring none (built-in name or file)
    eval_max_images: int | None = None  # at most this many images per user eval set (evenly spaced)
    regression_tolerance: float = 0.02  # warn when a fine-tune loses more zero-shot top-1 than this
    progress: bool = True
    # recipe components (docs/training.md, "Recipe components"); all off by default
    recipe: str | None = None  # a named preset (train/recipes/<name>.json) setting the fields below
    sample_captions: bool = False  # several captions per image, one per epoch, all of them over epochs
    augment: Augment = "none"  # light: mild random resized crop + caption-safe flip; strong: + colour jitter
    simclr_weight: float = 0.0  # SLIP: weight of an NT-Xent term on two augmented views of each image
    simclr_temperature: float = 0.1
    patch_dropout: float = 0.0  # FLIP: drop this share of the ViT's patch tokens in training
    ema_decay: float = 0.0  # exponential moving average of the weights (evaluated and saved); 0: off
    text_dropout: float = 0.0  # drop each tag (comma lists) or word with this probability
    shuffle_tags: bool = False  # shuffle the order of comma-separated tags
    label_smoothing: float = 0.0  # label smoothing of the InfoNCE targets
    wise_ft: float = 1.0  # fine-tuning: final = (1 - a) * init + a * trained (WiSE-FT); 1: off
    time_budget: str | None = None  # wall-clock budget ("25m", "90s", "1h", "1500"): sizes steps and schedule

    def validate(self) -> TrainConfig:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(f"train config: {msg}")

        need(bool(self.data), "data is required (a file, folder, shard pattern or 'shapes')")
        need(self.loss in ("auto", "clip", "siglip"), f"loss must be 'auto', 'clip' or 'siglip', got {self.loss!r}")
        need(
            self.shard_sampling in ("epoch", "resampled"),
            f"shard_sampling must be 'epoch' or 'resampled', got {self.shard_sampling!r}",
        )
        need(
            self.samples_per_epoch is None or self.samples_per_epoch >= self.batch_size,
            f"samples_per_epoch must be at least batch_size ({self.batch_size}), got {self.samples_per_epoch!r}",
        )
        need(
            self.shard_sampling == "epoch" or self.samples_per_epoch is not None,
            "shard_sampling='resampled' draws shards forever: set samples_per_epoch (pairs per epoch)",
        )
        need(self.eval_max_images is None or self.eval_max_images >= 1, "eval_max_images must be >= 1 or null")
        need(
            isinstance(self.lora_rank, int) and not isinstance(self.lora_rank, bool) and self.lora_rank >= 0,
            f"lora_rank must be a non-negative int, got {self.lora_rank!r}",
        )
        need(self.lora_alpha is None or self.lora_alpha > 0, "lora_alpha must be positive or null")
        need(not (self.shard and self.lora_rank), "shard with lora_rank is not supported yet")
        need(not (self.shard and self.precision == "fp16"), "shard needs precision bf16 or fp32 (no fp16 loss scaling)")
        need(not (self.lora_rank and self.lock_image), "lora_rank and lock_image cannot be combined (LoRA freezes all)")
        try:
            parse_towers(self.lora_towers)
        except ValueError as e:
            need(False, str(e))
        try:
            parse_report_to(self.report_to)
        except ValueError as e:
            need(False, str(e))
        need(self.regression_tolerance >= 0, "regression_tolerance must be >= 0")
        need(self.precision in ("auto", "fp32", "bf16", "fp16"), f"unknown precision {self.precision!r}")
        for key in ("steps", "batch_size", "accum_steps", "keep_last", "save_every", "log_every"):
            value = getattr(self, key)
            need(
                isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"{key} must be a positive int, got {value!r}",
            )
        for key in ("warmup_steps", "eval_every", "workers", "lock_image_unlocked_blocks"):
            value = getattr(self, key)
            need(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"{key} must be a non-negative int, got {value!r}",
            )
        need(
            self.batch_size % self.accum_steps == 0,
            f"batch_size {self.batch_size} is not divisible by accum_steps {self.accum_steps}",
        )
        need(self.lr > 0 and 0 <= self.min_lr <= self.lr, "need lr > 0 and 0 <= min_lr <= lr")
        need(self.weight_decay >= 0, "weight_decay must be >= 0")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), f"bad betas {self.betas}")
        need(self.grad_clip is None or self.grad_clip > 0, "grad_clip must be positive or null")
        need(self.loss_chunk_size is None or self.loss_chunk_size >= 1, "loss_chunk_size must be >= 1")
        need(isinstance(self.vocab_size, int) and self.vocab_size > 0, "vocab_size must be a positive int")
        need(
            not self.lock_image_unlocked_blocks or self.lock_image,
            "lock_image_unlocked_blocks needs lock_image",
        )
        self._validate_recipe(need)
        return self

    def _validate_recipe(self, need: Any) -> None:
        need(
            self.recipe is None or self.recipe in recipe_names(),
            f"unknown recipe {self.recipe!r}; known: {', '.join(recipe_names())}",
        )
        need(
            self.augment in ("none", "light", "strong"), f"augment must be none, light or strong, got {self.augment!r}"
        )
        need(self.simclr_weight >= 0, f"simclr_weight must be >= 0, got {self.simclr_weight!r}")
        need(self.simclr_temperature > 0, f"simclr_temperature must be > 0, got {self.simclr_temperature!r}")
        need(0 <= self.patch_dropout < 1, f"patch_dropout must be in [0, 1), got {self.patch_dropout!r}")
        need(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay!r}")
        need(0 <= self.text_dropout < 1, f"text_dropout must be in [0, 1), got {self.text_dropout!r}")
        need(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        need(0 <= self.wise_ft <= 1, f"wise_ft must be in [0, 1], got {self.wise_ft!r}")
        need(self.wise_ft == 1 or bool(self.init), "wise_ft < 1 interpolates with the starting weights: set `init=`")
        need(not (self.ema_decay and self.shard), "ema_decay with shard is not supported yet")
        need(not (self.simclr_weight and self.shard), "simclr_weight with shard is not supported yet")
        need(
            not (self.simclr_weight and self.lock_image and not self.lock_image_unlocked_blocks),
            "simclr_weight trains the image tower, which lock_image freezes (unlock blocks or drop one of them)",
        )
        need(not (self.wise_ft < 1 and self.lora_rank), "wise_ft with lora_rank is not supported yet")
        need(not (self.wise_ft < 1 and self.shard), "wise_ft with shard is not supported yet")
        if self.time_budget is not None:
            try:
                parse_duration(self.time_budget)
            except ValueError as e:
                need(False, f"time_budget: {e}")

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @property
    def time_budget_s(self) -> float | None:
        """``time_budget`` in seconds (None: no budget)."""
        return None if self.time_budget is None else parse_duration(self.time_budget)

    @classmethod
    def from_recipe(cls, recipe: str, **fields: Any) -> TrainConfig:
        """The preset ``recipe`` (``train/recipes/<recipe>.json``) with ``fields`` over it. (Setting
        ``recipe=`` on the constructor only records the name; this applies the preset.)"""
        return cls.from_dict({**{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()},
                              "recipe": recipe})

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "train config") -> TrainConfig:
        """The config ``data`` says; a ``recipe`` key first sets its preset's fields, and every
        other key of ``data`` overrides them."""
        return strict_from_dict(cls, apply_recipe(data, where=where), where).validate()

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from e
        return cls.from_dict(data, where=str(path))
