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
from ..data import (
    SHAPES_SOURCE,
    CachedPairs,
    ShapesSpec,
    build_cache,
    build_dataset,
    describe_source,
    shapes_split,
    zero_shot_tasks,
)
from ..data.augment import LIGHT_RATIO, LIGHT_SCALE, AugmentedPairs, PairAugment
from ..data.protocols import CaptionSource, load_skips_of
from ..data.shard_io import is_remote
from ..data.skips import no_usable_pairs
from ..data.transforms import image_transform
from ..data.webdataset import TarShards
from ..eval.clip_benchmark import BenchmarkImages, is_benchmark_dir, load_benchmark
from ..eval.datasets import LabelledDataset, load_labelled
from ..eval.prompts import load_templates
from ..models import CLIP, create_model, get_model_config
from ..pretrained import resolve_checkpoint
from ..tokenizer import get_tokenizer, tokenizer_from_metadata, train_bpe
from .config import TrainConfig
from .periodic_eval import EvalTask, RetrievalSet, materialize_retrieval, materialize_task

log = logging.getLogger(__name__)

SIGLIP_INIT_SCALE = math.log(10.0)
SIGLIP_INIT_BIAS = -10.0


def base_model_config(cfg: TrainConfig) -> tuple[ModelConfig, CheckpointInfo | None]:
    """The architecture before the tokenizer is known: from ``init``'s checkpoint or ``model``.
    The sigmoid loss starts from SigLIP's temperature and bias (scale 10, bias -10).
    ``patch_dropout`` is set on the ViT (a fine-tune uses the run's value, not the checkpoint's)."""
    if cfg.model.init:
        info = read_checkpoint_info(resolve_checkpoint(cfg.model.init))
        model_cfg = info.config
        if cfg.loss.kind == "siglip" and model_cfg.init_logit_bias is None:
            raise ValueError(f"`loss=\"siglip\"` needs a model with a logit bias; {cfg.model.init} has none")
        return _with_patch_dropout(model_cfg, cfg.model.patch_dropout, force=True, name=cfg.model.init), info
    model_cfg = get_model_config(cfg.model.name)
    if cfg.loss.kind == "siglip":
        model_cfg = model_cfg.replace(init_logit_scale=SIGLIP_INIT_SCALE, init_logit_bias=SIGLIP_INIT_BIAS)
    return _with_patch_dropout(model_cfg, cfg.model.patch_dropout, force=False, name=cfg.model.name), None


def _with_patch_dropout(model_cfg: ModelConfig, share: float, *, force: bool, name: str) -> ModelConfig:
    if share and model_cfg.vision.kind != "vit":
        kind = "FastViT" if model_cfg.vision.kind == "fastvit" else "ResNet"
        raise ValueError(f"`patch_dropout=` drops ViT patch tokens; {name} has a {kind} image tower (leave it at 0)")
    if not share and not force:  # the model config's own value (usually 0)
        return model_cfg
    if model_cfg.vision.kind != "vit":
        return model_cfg
    return model_cfg.replace(vision=dataclasses.replace(model_cfg.vision, patch_dropout=share))


def resolve_loss(loss: str, model_cfg: ModelConfig) -> str:
    """``auto`` -> the model's own objective: the sigmoid loss for models that carry a logit bias
    (SigLIP checkpoints given as ``init``, SigLIP configs), else the CLIP loss."""
    if loss != "auto":
        return loss
    return "siglip" if model_cfg.objective == "sigmoid" else "clip"


def pair_augment(cfg: TrainConfig, *, crop_size: int | None) -> PairAugment:
    """The run's per-sample augmentation (image: ``augment``; text: ``text_dropout``, ``shuffle_tags``)."""
    data = cfg.data
    return PairAugment(
        data.augment, crop_size=crop_size, text_dropout=data.text_dropout, shuffle_tags=data.shuffle_tags
    )


def build_train_dataset(cfg: TrainConfig, model_cfg: ModelConfig, *, rank: int, world_size: int) -> Dataset:
    """The training pairs: a pre-decoded cache when ``cfg.data.cache`` is set, else decoded on the fly
    with the train transform (random resized crop) at the model's image size; with the recipe's
    caption sampling and augmentation (:func:`pair_augment`) when the config asks for them. Data
    that holds less than one batch is an error naming the file and why its rows were skipped."""
    dataset = _train_pairs(cfg, model_cfg, rank=rank, world_size=world_size)
    check_enough_pairs(dataset, cfg)
    # the decode path crops in the transform (on the full image); the cache path crops here
    decoded = not (cfg.data.cache or shapes_split(cfg.data.source))
    return augmented(dataset, cfg, crop_size=None if decoded else model_cfg.vision.image_size)


def check_enough_pairs(dataset: Dataset, cfg: TrainConfig) -> None:
    """A map-style training set must hold at least one batch (streamed data is not counted ahead)."""
    if isinstance(dataset, IterableDataset):
        return
    n = len(dataset)
    if n == 0:
        columns = describe_source(cfg.data.source) in ("csv", "jsonl")
        raise no_usable_pairs(str(cfg.data.source), load_skips_of(dataset), columns=columns)
    if n < cfg.schedule.batch_size:
        raise ValueError(
            f"{cfg.data.source}: {n} usable image-caption pairs, fewer than one batch "
            f"(`batch_size={cfg.schedule.batch_size}`): "
            "lower it or add data"
        )


def augmented(dataset: Dataset, cfg: TrainConfig, *, crop_size: int | None) -> Dataset:
    """``dataset`` with the run's per-sample augmentation (none asked: ``dataset`` itself, the
    plain hot path). ``crop_size``: images are already at the model's size, crop them here. A
    dataset passed to ``fit`` gets it too: its images must then be uint8 ``(H, W, 3)``."""
    if not (cfg.data.augment != "none" or cfg.data.text_dropout or cfg.data.shuffle_tags):
        return dataset
    augment = pair_augment(cfg, crop_size=crop_size if cfg.data.augment != "none" else None)
    if isinstance(dataset, TarShards):
        dataset.augment = augment  # applied after the caption is picked, under the sample's seed
        return dataset
    if isinstance(dataset, IterableDataset):
        raise ValueError("`augment=`, `text_dropout=` and `shuffle_tags=` need a map-style dataset or tar shards")
    return AugmentedPairs(dataset, augment)


def _train_pairs(cfg: TrainConfig, model_cfg: ModelConfig, *, rank: int, world_size: int) -> Dataset:
    size = model_cfg.vision.image_size
    split = shapes_split(cfg.data.source)
    source = f"{SHAPES_SOURCE}:{split}" if split else cfg.data.source
    uint8 = cfg.data.augment != "none"  # augmentation works on uint8 pixels; batches are normalised on the device
    if split and not cfg.data.cache:  # rendered at the model's size: no resampling, same look as the eval sets
        return build_dataset(
            source,
            transform=image_transform(model_cfg.preprocess, size, train=False, uint8=uint8),
            shapes=_shapes_spec(model_cfg),
        )
    if cfg.data.cache:
        if rank == 0:
            build_cache(
                source,
                cfg.data.cache,
                image_size=size,
                preprocess=model_cfg.preprocess,
                image_key=cfg.data.image_key,
                caption_key=cfg.data.caption_key,
                num_workers=cfg.data.workers,
                progress=cfg.tracking.progress,
                sample_captions=cfg.data.sample_captions,
            )
        if world_size > 1:
            torch.distributed.barrier()
        return CachedPairs(cfg.data.cache, seed=cfg.schedule.seed, sample_captions=cfg.data.sample_captions)
    if uint8:
        transform = image_transform(model_cfg.preprocess, size, train=True, scale=LIGHT_SCALE, ratio=LIGHT_RATIO,
                                    uint8=True)
    else:
        transform = image_transform(model_cfg.preprocess, size, train=True)
    return build_dataset(
        source,
        transform=transform,
        image_key=cfg.data.image_key,
        caption_key=cfg.data.caption_key,
        seed=cfg.schedule.seed,
        rank=rank,
        world_size=world_size,
        resampled=cfg.data.shard_sampling == "resampled",
        sample_captions=cfg.data.sample_captions,
    )


def _shapes_spec(model_cfg: ModelConfig) -> ShapesSpec:
    """The built-in shapes data as a run trains and evaluates on it: drawn at the model's image size,
    with the default data seed whatever the run's seed (which only shuffles it), so runs compare."""
    return ShapesSpec(image_size=model_cfg.vision.image_size)


def training_captions(dataset: Dataset, *, limit: int = 10_000) -> Iterator[str]:
    """Up to ``limit`` captions of the training data (evenly spread), for learning a BPE vocabulary.
    (Reading a caption decodes its image too; a few thousand captions cover a domain's words.)"""
    inner = getattr(dataset, "dataset", dataset)
    if isinstance(inner, CaptionSource):  # captions without decoding the images
        yield from inner.captions(limit)
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


def build_tokenizer(cfg: TrainConfig, *, dataset: Dataset, context_length: int, init: CheckpointInfo | None) -> Any:
    """The run's tokenizer: the ``init`` checkpoint's own, a BPE learnt from the training captions
    (``tokenizer="train"``), OpenAI's vocabulary (``"openai"``), or one from a path."""
    if init is not None and init.tokenizer is not None:
        if cfg.model.tokenizer not in ("openai", "train"):
            log.warning("fine-tuning keeps the checkpoint's tokenizer; ignoring tokenizer=%r", cfg.model.tokenizer)
        return tokenizer_from_metadata(init.tokenizer)
    if cfg.model.tokenizer == "train":
        captions = list(training_captions(dataset))
        if not captions:
            raise ValueError(f"no usable captions in {cfg.data.source} to learn a vocabulary from")
        log.info(
            "learning a %d-token BPE vocabulary from %d training captions", cfg.model.vocab_size, len(captions)
        )
        return train_bpe(
            captions, vocab_size=cfg.model.vocab_size, context_length=context_length, progress=cfg.tracking.progress
        )
    return get_tokenizer(cfg.model.tokenizer, context_length=context_length)


def final_model_config(model_cfg: ModelConfig, tokenizer: Any) -> ModelConfig:
    """The architecture with the text tower sized for the tokenizer's vocabulary."""
    if tokenizer.vocab_size == model_cfg.text.vocab_size:
        return model_cfg
    return model_cfg.replace(text=dataclasses.replace(model_cfg.text, vocab_size=tokenizer.vocab_size))


def build_model(cfg: TrainConfig, model_cfg: ModelConfig, *, device: torch.device) -> CLIP:
    """A model initialised from ``cfg.schedule.seed`` (every rank the same), or ``cfg.model.init``'s weights."""
    torch.manual_seed(cfg.schedule.seed)
    model = create_model(model_cfg)
    if cfg.model.init:
        init = resolve_checkpoint(cfg.model.init)
        load_state_dict_strict(model, load_weights(init), source=str(init))
    model.set_grad_checkpointing(cfg.compute.grad_checkpointing)
    return model.to(device)


def build_eval_sets(
    cfg: TrainConfig, model_cfg: ModelConfig, *, workers: int = 0
) -> tuple[list[EvalTask], RetrievalSet | None]:
    """Zero-shot tasks named by ``eval_tasks`` (comma-separated: ``shapes`` for every built-in shapes
    task, a labelled image folder or CSV, a CLIP_benchmark ``wds_<name>`` folder or URL) and the
    held-out retrieval pairs (``val_data`` in any data format or a CLIP_benchmark retrieval set;
    for ``data="shapes"`` its val split). Shapes and retrieval pairs are decoded once; user
    zero-shot sets are read at each evaluation (at most ``eval_max_images`` images)."""
    transform = image_transform(model_cfg.preprocess, model_cfg.vision.image_size, train=False)
    tasks: list[EvalTask] = []
    for item in [t.strip() for t in (cfg.eval.tasks or "").split(",") if t.strip()]:
        if item == SHAPES_SOURCE:
            spec = _shapes_spec(model_cfg)
            tasks += [materialize_task(t, workers=workers) for t in zero_shot_tasks(spec, transform=transform)]
        else:
            task = user_eval_task(item, transform=transform, templates=cfg.eval.templates, limit=cfg.eval.max_images)
            taken = {t.name for t in tasks}
            name = task.name if task.name not in taken else f"{task.name}-{len(tasks)}"
            tasks.append(dataclasses.replace(task, name=name))
    val_source = cfg.eval.val_data or (f"{SHAPES_SOURCE}:val" if shapes_split(cfg.data.source) else None)
    retrieval = None
    if val_source:
        if is_benchmark_dir(val_source):
            bench = load_benchmark(val_source)
            if bench.kind != "retrieval":
                raise ValueError(f"val_data {val_source} is a classification set: name it in eval_tasks")
            val_source = "::".join(bench.shards)
        val = build_dataset(
            val_source,
            transform=transform,
            image_key=cfg.data.image_key,
            caption_key=cfg.data.caption_key,
            seed=cfg.schedule.seed,
            shuffle_buffer=0,
            shapes=_shapes_spec(model_cfg) if shapes_split(val_source) else None,
        )
        retrieval = materialize_retrieval(val, workers=workers)
    return tasks, retrieval


def user_eval_task(source: str, *, transform: Any, templates: str, limit: int | None) -> EvalTask:
    """A zero-shot task from a CLIP_benchmark folder/URL (its own class names and templates) or a
    labelled folder / CSV (class names from its sub-folders or labels, ``templates``)."""
    from pathlib import Path


    if is_benchmark_dir(source) or is_remote(source):
        bench = load_benchmark(source)
        if bench.kind != "classification":
            raise ValueError(f"eval task {source} is a {bench.kind} set: pass it as val_data")
        if not bench.classnames:
            raise ValueError(f"eval task {source}: no classnames.txt")
        return EvalTask(
            bench.name,
            bench.classnames,
            bench.templates or tuple(load_templates(templates)),
            dataset=BenchmarkImages(bench, transform=transform),
            limit=limit,
        )
    data = load_labelled(source)
    return EvalTask(
        Path(source).stem,
        tuple(data.classnames),
        tuple(load_templates(templates)),
        dataset=LabelledDataset(data, transform=transform),
        limit=limit,
    )
