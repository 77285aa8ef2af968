"""``build_dataset``: pick the dataset class from what a source path looks like."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from clipforge.data.pairs import read_csv, read_folder, read_jsonl
from clipforge.data.shapes import ShapesDataset, ShapesSpec
from clipforge.data.shard_io import is_remote, local_path
from clipforge.data.webdataset import TarShards, list_shards

SHAPES_SOURCE = "shapes"


def shapes_split(source: str | Path) -> str | None:
    """The split a built-in shapes source names: ``"shapes"`` -> "train", ``"shapes:val"`` -> "val";
    None for any other source."""
    text = str(source)
    if text == SHAPES_SOURCE:
        return "train"
    if text.startswith(SHAPES_SOURCE + ":"):
        return text[len(SHAPES_SOURCE) + 1 :]
    return None


def describe_source(source: str | Path) -> str:
    """The format ``build_dataset`` will read: "csv", "jsonl", "folder", "tar" or "shapes"."""
    text = str(source)
    if shapes_split(text) is not None:
        return "shapes"
    if "{" in text or "::" in text or text.lower().endswith(".tar") or is_remote(text):
        return "tar"
    path = local_path(text) or Path(text)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".tab"):
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if path.is_dir():
        has_tars = any(path.glob("*.tar"))
        return "tar" if has_tars else "folder"
    if not path.exists():
        raise FileNotFoundError(f"data source {text!r} does not exist")
    raise ValueError(
        f"cannot tell the format of {text!r}: expected a .csv/.tsv, .jsonl, .tar, a brace pattern "
        f"like 'shards/{{000000..000099}}.tar', a folder, or 'shapes[:<split>]'"
    )


def build_dataset(
    source: str | Path,
    *,
    transform: Callable[[Image.Image], Any] | None,
    image_key: str = "filepath",
    caption_key: str = "title",
    delimiter: str | None = None,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer: int = 1000,
    all_captions: bool = False,
    resampled: bool = False,
    shapes: ShapesSpec | None = None,
    sample_captions: bool = False,
) -> Dataset:
    """An image-text dataset yielding ``(transform(image), caption)`` or a ``Skip``.

    - ``*.csv`` / ``*.tsv``: columns ``image_key`` and ``caption_key``; paths relative to the file.
    - ``*.jsonl``: objects with those keys; a caption may be a list (one picked per epoch).
    - a folder of images with same-named ``.txt`` captions (searched recursively).
    - ``*.tar``, a folder of ``.tar`` files, a brace pattern ``shards/{000000..000099}.tar``, a
      ``pipe:`` command or an object-store/Hub URL (:mod:`clipforge.data.shard_io`): WebDataset
      shards, streamed (an IterableDataset split over ``rank``/``world_size`` and DataLoader
      workers, shuffled within a ``shuffle_buffer``; ``resampled`` draws shards with replacement).
    - ``shapes`` (= ``shapes:train``) / ``shapes:val`` / ``shapes:heldout``: the built-in shapes
      data as the spec ``shapes`` says (default: :class:`~clipforge.data.shapes.ShapesSpec` with
      ``seed``).

    ``sample_captions``: several captions per image (a JSON list in a CSV cell, rows that repeat an
    image path, a JSONL list, the lines of a ``.txt``), cycled so each epoch uses one and every
    caption is used over as many epochs as the image has captions.

    Map-style datasets are split across ranks by the caller's sampler (``DistributedSampler``);
    ``rank``/``world_size`` only matter to tar shards.
    """
    split = shapes_split(source)
    if split is not None:
        return ShapesDataset(split, spec=shapes or ShapesSpec(seed=seed), transform=transform)
    kind = describe_source(source)
    common: dict[str, Any] = {
        "transform": transform,
        "seed": seed,
        "all_captions": all_captions,
        "sample_captions": sample_captions,
    }
    if kind == "tar":
        return TarShards(
            list_shards(source),
            rank=rank,
            world_size=world_size,
            shuffle_buffer=shuffle_buffer,
            resampled=resampled,
            **common,
        )
    if kind == "csv":
        return read_csv(source, image_key=image_key, caption_key=caption_key, delimiter=delimiter, **common)
    if kind == "jsonl":
        return read_jsonl(source, image_key=image_key, caption_key=caption_key, **common)
    return read_folder(source, **common)
