"""What a run needs, built from its :class:`TrainConfig`: model config, tokenizer, model, data, eval sets."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset

from ..checkpoint import CheckpointInfo, load_state_dict_strict, load_weights, read_checkpoint_info
from ..config import ModelConfig
from ..models import CLIP, create_model, get_model_config
from ..pretrained import resolve_checkpoint
from .config import TrainConfig
from .evaluation import EvalTask, RetrievalSet, materialize_retrieval, materialize_task

log = logging.getLogger(__name__)

SHAPES = "shapes"
SIGLIP_INIT_SCALE = math.log(10.0)
SIGLIP_INIT_BIAS = -10.0


def base_model_config(cfg: TrainConfig) -> tuple[ModelConfig, CheckpointInfo | None]:
    """The architecture before the tokenizer is known: from ``--init``'s checkpoint or ``--model``.
    The sigmoid loss starts from SigLIP's temperature and bias (scale 10, bias -10)."""
    if cfg.init:
        info = read_checkpoint_info(resolve_checkpoint(cfg.init))
        model_cfg = info.config
        if cfg.loss == "siglip" and model_cfg.init_logit_bias is None:
            raise ValueError(f"--loss siglip needs a model with a logit bias; {cfg.init} has none")
        return model_cfg, info
    model_cfg = get_model_config(cfg.model)
    if cfg.loss == "siglip":
        model_cfg = model_cfg.replace(init_logit_scale=SIGLIP_INIT_SCALE, init_logit_bias=SIGLIP_INIT_BIAS)
    return model_cfg, None


def _shapes_split(data: str) -> str | None:
    """``"shapes"`` -> "train", ``"shapes:val"`` -> "val"; anything else -> None."""
    if data == SHAPES:
        return "train"
    if data.startswith(SHAPES + ":"):
        return data.split(":", 1)[1]
    return None


def build_train_dataset(cfg: TrainConfig, model_cfg: ModelConfig, *, rank: int, world_size: int) -> Dataset:
    """The training pairs: a pre-decoded cache when ``cfg.cache`` is set, else decoded on the fly
    with the train transform (random resized crop) at the model's image size."""
    from ..data import CachedPairs, build_cache, build_dataset
    from ..data.transforms import image_transform

    size = model_cfg.vision.image_size
    split = _shapes_split(cfg.data)
    source = f"{SHAPES}:{split}" if split else cfg.data
    if split and not cfg.cache:  # rendered at the model's size: no resampling, same look as the eval sets
        from ..data import ShapesDataset, ShapesSpec

        return ShapesDataset(
            split,
            spec=ShapesSpec(image_size=size),
            transform=image_transform(model_cfg.preprocess, size, train=False),
        )
    if cfg.cache:
        if rank == 0:
            build_cache(
                source,
                cfg.cache,
                image_size=size,
                preprocess=model_cfg.preprocess,
                image_key=cfg.image_key,
                caption_key=cfg.caption_key,
                num_workers=cfg.workers,
            )
        if world_size > 1:
            torch.distributed.barrier()
        return CachedPairs(cfg.cache, seed=cfg.seed)
    transform = image_transform(model_cfg.preprocess, size, train=True)
    return build_dataset(
        source,
        transform=transform,
        image_key=cfg.image_key,
        caption_key=cfg.caption_key,
        seed=cfg.seed,
        rank=rank,
        world_size=world_size,
    )


def training_captions(dataset: Dataset, *, limit: int = 10_000) -> Iterator[str]:
    """Up to ``limit`` captions of the training data (evenly spread), for learning a BPE vocabulary.
    (Reading a caption decodes its image too; a few thousand captions cover a domain's words.)"""
    from ..data.shapes import ShapesDataset, shapes_attributes, shapes_caption

    inner = getattr(dataset, "dataset", dataset)
    if isinstance(inner, ShapesDataset):  # captions without drawing the images
        spec, split = inner.spec, inner.split
        for i in range(min(limit, len(inner))):
            yield shapes_caption(shapes_attributes(i, split=split, spec=spec), i, split=split, spec=spec)
        return
    if isinstance(inner, IterableDataset):
        for i, item in enumerate(inner):
            if i >= limit:
                return
            if isinstance(item, tuple):
                yield str(item[1])
        return
    n = len(inner)
    stride = max(n // limit, 1)
    for i in range(0, n, stride):
        item = inner[i]
        if isinstance(item, tuple):
            yield str(item[1])


def build_tokenizer(
    cfg: TrainConfig, *, dataset: Dataset, context_length: int, init: CheckpointInfo | None
) -> Any:
    """The run's tokenizer: the ``--init`` checkpoint's own, a BPE learnt from the training captions
    (``tokenizer="train"``), OpenAI's vocabulary (``"openai"``), or one from a path."""
    from ..tokenizer import Tokenizer, get_tokenizer, train_bpe

    if init is not None and init.tokenizer is not None:
        if cfg.tokenizer not in ("openai", "train"):
            log.warning("fine-tuning keeps the checkpoint's tokenizer; ignoring tokenizer=%r", cfg.tokenizer)
        return Tokenizer.from_metadata(init.tokenizer)
    if cfg.tokenizer == "train":
        captions = list(training_captions(dataset))
        if not captions:
            raise ValueError(f"no usable captions in {cfg.data} to learn a vocabulary from")
        log.info(
            "learning a %d-token BPE vocabulary from %d training captions", cfg.vocab_size, len(captions)
        )
        return train_bpe(captions, vocab_size=cfg.vocab_size, context_length=context_length)
    return get_tokenizer(cfg.tokenizer, context_length=context_length)


def final_model_config(model_cfg: ModelConfig, tokenizer: Any) -> ModelConfig:
    """The architecture with the text tower sized for the tokenizer's vocabulary."""
    if tokenizer.vocab_size == model_cfg.text.vocab_size:
        return model_cfg
    return model_cfg.replace(text=dataclasses.replace(model_cfg.text, vocab_size=tokenizer.vocab_size))


def build_model(cfg: TrainConfig, model_cfg: ModelConfig, *, device: torch.device) -> CLIP:
    """A model initialised from ``cfg.seed`` (every rank the same), or ``cfg.init``'s weights."""
    torch.manual_seed(cfg.seed)
    model = create_model(model_cfg)
    if cfg.init:
        init = resolve_checkpoint(cfg.init)
        load_state_dict_strict(model, load_weights(init), source=str(init))
    model.set_grad_checkpointing(cfg.grad_checkpointing)
    return model.to(device)


def build_eval_sets(
    cfg: TrainConfig, model_cfg: ModelConfig, *, workers: int = 0
) -> tuple[list[EvalTask], RetrievalSet | None]:
    """Zero-shot tasks (``eval_tasks="shapes"``: every built-in shapes task) and the held-out
    retrieval pairs (``val_data``; for ``data="shapes"`` its val split), decoded once."""
    from ..data.transforms import image_transform

    transform = image_transform(model_cfg.preprocess, model_cfg.vision.image_size, train=False)
    tasks: list[EvalTask] = []
    if cfg.eval_tasks == SHAPES:
        from ..data import ShapesSpec, zero_shot_tasks

        spec = ShapesSpec(image_size=model_cfg.vision.image_size)
        tasks = [materialize_task(t, workers=workers) for t in zero_shot_tasks(spec, transform=transform)]
    elif cfg.eval_tasks:
        raise ValueError(f"unknown eval_tasks {cfg.eval_tasks!r}; the built-in set is 'shapes'")
    val_source = cfg.val_data or (f"{SHAPES}:val" if _shapes_split(cfg.data) else None)
    retrieval = None
    if val_source:
        from ..data import ShapesDataset, ShapesSpec, build_dataset

        split = _shapes_split(val_source)
        if split:
            val = ShapesDataset(
                split, spec=ShapesSpec(image_size=model_cfg.vision.image_size), transform=transform
            )
        else:
            val = build_dataset(
                val_source,
                transform=transform,
                image_key=cfg.image_key,
                caption_key=cfg.caption_key,
                seed=cfg.seed,
            )
        retrieval = materialize_retrieval(val, workers=workers)
    return tasks, retrieval
