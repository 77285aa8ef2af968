"""clipforge train: every TrainConfig field is a flag by its flat name (--batch-size 256); or --config run.json.

Precedence: built-in defaults < the --recipe preset < --config file (or, with --resume, the run's
own run.json) < flags given on the command line. Run it under torchrun for several processes/nodes.
"""

from __future__ import annotations

import argparse
import os
import types
import typing
from pathlib import Path
from typing import Any

from ._apps import DEVICE_HELP, PRECISION_HELP

HELP = "train or fine-tune a CLIP model"
FIELD_HELP = {
    "data": "training pairs: .csv/.tsv, .jsonl, image folder, 'shapes', or tar shards: "
    "'shards/{000..099}.tar', 'pipe:CMD', s3:// gs:// hf:// https:// URLs ('a::b' joins patterns)",
    "val_data": "held-out pairs for retrieval eval, or a CLIP_benchmark retrieval set "
    "(default: shapes' val split when training on shapes)",
    "image_key": "CSV/JSONL column holding the image path",
    "caption_key": "CSV/JSONL column holding the caption(s)",
    "cache": "directory for a pre-decoded uint8 image cache (built on first use)",
    "workers": "DataLoader worker processes decoding images",
    "shard_sampling": "tar shards: 'epoch' (every shard once per epoch) or 'resampled' (with replacement)",
    "samples_per_epoch": "streamed data: pairs per epoch (required with --shard-sampling resampled)",
    "model": "architecture: a built-in name (clipforge models) or a model-config JSON file",
    "init": "fine-tune from these weights (their tokenizer is kept): a clipforge checkpoint, an OpenAI .pt, an "
    "open_clip or Hugging Face folder, a pretrained name (clipforge models --pretrained) or a Hub id",
    "tokenizer": "'openai', 'train' (learn a BPE vocabulary from the training captions) or a tokenizer path",
    "vocab_size": "vocabulary size for --tokenizer train",
    "loss": "auto (the model's own objective: siglip for SigLIP models), clip (softmax InfoNCE) "
    "or siglip (pairwise sigmoid)",
    "loss_chunk_size": "exact linear-memory loss in tiles of this size (huge batches)",
    "steps": "optimiser steps in total",
    "batch_size": "GLOBAL pairs per step, over all processes and accumulation micro-batches",
    "accum_steps": "micro-batches per step; negatives still span the whole batch (GradCache)",
    "lr": "peak learning rate",
    "min_lr": "learning rate at the end of the cosine",
    "warmup_steps": "linear warm-up steps",
    "weight_decay": "AdamW weight decay (never on norms, biases, embeddings, logit scale/bias)",
    "betas": "AdamW betas",
    "eps": "AdamW epsilon",
    "grad_clip": "clip the gradient norm at this value",
    "precision": PRECISION_HELP + " (autocast: weights and optimiser stay float32)",
    "device": DEVICE_HELP,
    "seed": "seed of the initialisation and the data order",
    "grad_checkpointing": "recompute activations in the backward pass (less memory)",
    "shard": "FSDP2 under torchrun: shard weights, gradients and AdamW state over the processes (large towers)",
    "lock_image": "LiT: freeze the image tower",
    "lock_image_unlocked_blocks": "with --lock-image: keep the last N blocks and the head trainable",
    "lora_rank": "LoRA: train rank-r adapters on the attention and MLP projections only (0: full fine-tuning)",
    "lora_alpha": "LoRA scale alpha/rank (default alpha = rank)",
    "lora_towers": "towers that get adapters: image,text (comma-separated)",
    "out": "parent directory of run directories",
    "name": "run directory name (default: a timestamp; with --resume, the newest run)",
    "save_every": "checkpoint every N steps",
    "keep_last": "keep the last K step checkpoints (plus best and final)",
    "log_every": "log metrics every N steps",
    "report_to": "experiment trackers, comma-separated: tensorboard, wandb, mlflow (metrics.jsonl is always written)",
    "project": "W&B project / MLflow experiment name",
    "eval_every": "evaluate every N steps (0: only at the end)",
    "eval_tasks": "zero-shot sets to evaluate, comma-separated: 'shapes', labelled image folders or CSVs, "
    "CLIP_benchmark wds_<name> folders",
    "eval_templates": "templates for eval sets without their own: a built-in set (default, imagenet1k...) or a file",
    "eval_max_images": "evaluate at most this many images of each user eval set",
    "regression_tolerance": "fine-tuning: warn when zero-shot top-1 falls more than this below the starting model",
    "progress": "show a progress bar",
    "recipe": "a named preset of the recipe fields (small-data, finetune); flags given override it",
    "sample_captions": "several captions per image (JSON-list CSV cells, rows repeating an image, JSONL lists, "
    "lines of .txt): one per epoch, every caption over the epochs",
    "augment": "image augmentation: none, light (mild random resized crop + flip unless the caption says "
    "left/right), strong (light + brightness/contrast/saturation jitter that keeps hues)",
    "simclr_weight": "SLIP: weight of an NT-Xent loss on two augmented views of each image (0: off)",
    "simclr_temperature": "temperature of the SimCLR term",
    "patch_dropout": "FLIP: drop this share of the ViT's patch tokens in training (0: off)",
    "ema_decay": "keep an exponential moving average of the weights, evaluated and saved as the model (0: off)",
    "text_dropout": "drop each comma-separated tag (or word) of a caption with this probability",
    "shuffle_tags": "shuffle the order of comma-separated tags",
    "label_smoothing": "label smoothing of the InfoNCE targets (clip loss)",
    "wise_ft": "fine-tuning: final weights = (1 - a) * starting + a * fine-tuned (WiSE-FT; 1: off)",
    "time_budget": "train for this wall-clock time (25m, 90s, 1h, seconds): sizes --steps and the schedule",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..train.config import TrainConfig, flat_field_names, flat_field_section, flat_field_type

    p.add_argument("--config", type=Path, default=None, help="a run.json / TrainConfig JSON file (by section or flat)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out/--name from its latest checkpoint"
    )
    defaults = TrainConfig().to_flat()
    groups: dict[str, Any] = {}  # one --help group per TrainConfig section
    for name in flat_field_names():
        section = flat_field_section(name)
        if section is None:
            group = p
        elif section in groups:
            group = groups[section]
        else:
            group = groups[section] = p.add_argument_group(f"{section} (TrainConfig.{section})")
        default = tuple(defaults[name]) if isinstance(defaults[name], list) else defaults[name]
        help_text = f"{FIELD_HELP.get(name, '')} (default: {default!r})"
        kind = _arg_kind(flat_field_type(name))
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=argparse.SUPPRESS, help=help_text, **kind)


def _arg_kind(hint: Any) -> dict[str, Any]:
    """argparse options for a TrainConfig field's type."""
    args = typing.get_args(hint)
    optional = type(None) in args and (typing.get_origin(hint) in (typing.Union, types.UnionType))
    if optional:
        hint = next(a for a in args if a is not type(None))
    if hint is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(hint) is typing.Literal:
        return {"choices": list(typing.get_args(hint))}
    if typing.get_origin(hint) is tuple:
        return {"type": typing.get_args(hint)[0], "nargs": len(typing.get_args(hint)), "metavar": "X"}
    base = hint if hint in (int, float) else str
    if optional:
        return {"type": lambda s, base=base: None if s.lower() in ("none", "null") else base(s)}
    return {"type": base}


def build_config(args: argparse.Namespace) -> Any:
    """Defaults < the recipe preset < --config (or the resumed run's run.json) < flags."""
    import json

    from ..train.config import TrainConfig, flat_field_names, flatten
    from ..train.loop import resolve_run_dir

    given = {name: getattr(args, name) for name in flat_field_names() if hasattr(args, name)}
    where = str(args.config) if args.config else "train options"
    base: dict[str, Any] = {}
    if args.config is not None:
        base = flatten(json.loads(args.config.read_text()), where=where)  # nested or flat keys
    elif args.resume:
        probe = TrainConfig.from_flat(**{k: v for k, v in given.items() if k in ("out", "name")})
        run_json = resolve_run_dir(probe, resume=True) / "run.json"
        if run_json.is_file():
            base = flatten(json.loads(run_json.read_text()), where=str(run_json))
            base["name"] = run_json.parent.name
    merged = {**base, **{k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}}
    return TrainConfig.from_dict(merged, where=where)


def run(args: argparse.Namespace) -> int:
    from ..train.loop import fit

    cfg = build_config(args)
    result = fit(cfg, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only the main process reports
        return 0
    print(f"run directory: {result.run_dir}")
    print(f"final weights: {result.model_path}")
    if result.eval:
        print(f"evaluation:    {result.run_dir / 'eval.json'}")
    if result.skipped:
        print(f"skipped {result.skipped} unusable training samples (see the log above)")
    return 0
