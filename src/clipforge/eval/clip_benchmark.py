"""Datasets in LAION CLIP_benchmark's WebDataset layout (``wds_<name>`` folders).

Layout (as ``clip_benchmark_export_wds`` writes it, and as the ``clip-benchmark/wds_*`` Hub
repositories hold it)::

    wds_cifar10/
        classnames.txt                           one class name per line, in label order
        zeroshot_classification_templates.txt    one template per line, "{c}" marks the class name
        dataset_type.txt                         optional: "retrieval" (default: classification)
        test/nshards.txt                         number of shards N (else every *.tar of the split)
        test/0.tar ... test/{N-1}.tar            samples: an image (.webp/.png/.jpg/.jpeg) and
                                                 .cls (the integer label) or .txt (captions)

The root may be a local folder or a ``file://``/fsspec URL (``hf://datasets/<org>/wds_cifar10``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import IterableDataset

from ..data.images import ImageDecodeError, load_image
from ..data.pairs import is_image_extension
from ..data.shard_io import local_path, open_shard
from ..data.skips import CORRUPT_IMAGE, MISSING_IMAGE, Skip
from ..data.webdataset import tar_groups
from .prompts import check_template

log = logging.getLogger(__name__)

CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
DATASET_TYPE = "dataset_type.txt"
BAD_LABEL = "bad_label"

Kind = Literal["classification", "retrieval"]


@dataclass(frozen=True)
class BenchmarkSet:
    """One split of a CLIP_benchmark WebDataset: its shards and, for classification, its class
    names and templates (None when the folder has no such file)."""

    root: str
    name: str  # "cifar10" for ".../wds_cifar10"
    split: str
    kind: Kind
    shards: tuple[str, ...]
    classnames: tuple[str, ...] | None
    templates: tuple[str, ...] | None


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def _read_text(source: str) -> str | None:
    """The UTF-8 text of a local file or URL; None when it does not exist."""
    path = local_path(source)
    if path is not None:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    try:
        with open_shard(source) as f:
            return f.read().decode("utf-8")
    except FileNotFoundError:
        return None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def is_benchmark_dir(source: str | Path) -> bool:
    """A local folder with CLIP_benchmark metadata (classnames, templates or dataset type) and at
    least one split folder of tar shards."""
    path = local_path(str(source))
    if path is None or not path.is_dir():
        return False
    has_meta = any((path / f).is_file() for f in (CLASSNAMES, TEMPLATES, DATASET_TYPE))
    has_split = any(p.is_dir() and any(p.glob("*.tar")) for p in path.iterdir())
    return has_meta and has_split


def load_benchmark(root: str | Path, *, split: str = "test") -> BenchmarkSet:
    """Read the metadata of ``root``'s ``split``; errors name the missing file."""
    root = str(root).rstrip("/")
    name = root.rsplit("/", 1)[-1]
    name = name[len("wds_") :] if name.startswith("wds_") else name
    kind_text = _read_text(_join(root, DATASET_TYPE))
    kind = (kind_text or "classification").strip().lower()
    if kind not in ("classification", "retrieval"):
        raise ValueError(f"{_join(root, DATASET_TYPE)}: dataset type {kind!r} is not supported")
    count = _read_text(_join(root, split, "nshards.txt"))
    if count is not None:
        try:
            n = int(count.strip())
        except ValueError as e:
            raise ValueError(f"{_join(root, split, 'nshards.txt')}: not a shard count: {count[:40]!r}") from e
        shards = [_join(root, split, f"{i}.tar") for i in range(n)]
    else:
        folder = local_path(_join(root, split))
        if folder is None or not folder.is_dir():
            raise FileNotFoundError(f"{root}: no split {split!r} (expected {_join(root, split, 'nshards.txt')})")
        found = sorted(folder.glob("*.tar"), key=lambda p: (len(p.stem), p.stem))
        shards = [str(p) for p in found]
    if not shards:
        raise FileNotFoundError(f"{_join(root, split)}: no tar shards")
    classnames = templates = None
    if kind == "classification":
        text = _read_text(_join(root, CLASSNAMES))
        classnames = tuple(_lines(text)) if text is not None else None
        text = _read_text(_join(root, TEMPLATES))
        if text is not None:
            where = _join(root, TEMPLATES)
            templates = tuple(check_template(t, where=f"{where}:{i + 1}") for i, t in enumerate(_lines(text)))
    return BenchmarkSet(root, name, split, kind, tuple(shards), classnames, templates)  # type: ignore[arg-type]


class BenchmarkImages(IterableDataset):
    """``(transform(image), label)`` (classification) or ``(transform(image), [captions])``
    (retrieval) for every sample of a :class:`BenchmarkSet`, in shard order, or a :class:`Skip`.
    DataLoader workers take every ``num_workers``-th shard."""

    def __init__(self, bench: BenchmarkSet, *, transform: Callable | None) -> None:
        self.bench, self.transform = bench, transform

    def _sample(self, where: str, members: dict[str, bytes]) -> Any:
        image_ext = next((e for e in ("webp", "png", "jpg", "jpeg") if e in members), None)
        image_ext = image_ext or next((e for e in members if is_image_extension(e)), None)
        if image_ext is None:
            return Skip(MISSING_IMAGE, where, f"members: {sorted(members)}")
        target: Any
        if self.bench.kind == "retrieval":
            target = _lines(members.get("txt", b"").decode("utf-8", "replace"))
            if not target:
                return Skip(BAD_LABEL, f"{where}.txt", "no captions")
        else:
            try:
                target = int(members["cls"].decode("ascii").strip())
            except (KeyError, ValueError, UnicodeDecodeError) as e:
                return Skip(BAD_LABEL, f"{where}.cls", f"no integer label ({e!r})")
        try:
            image = load_image(members[image_ext])
            pixels = self.transform(image) if self.transform is not None else image
        except (ImageDecodeError, OSError, ValueError) as e:
            return Skip(CORRUPT_IMAGE, f"{where}.{image_ext}", str(e)[:200])
        return pixels, target

    def __iter__(self) -> Iterator[Any]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for shard in self.bench.shards[worker::workers]:
            for group in tar_groups(shard):
                yield group if isinstance(group, Skip) else self._sample(f"{shard}:{group[0]}", group[1])
