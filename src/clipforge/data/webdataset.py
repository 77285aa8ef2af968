"""WebDataset-style tar shards, read with the standard library (no ``webdataset`` dependency).

A shard is a plain tar file; members that share a key (the member path up to the first dot of its
file name: ``0001/abc.jpg`` and ``0001/abc.txt`` share ``0001/abc``) form one sample, made of an
image member (``.jpg``, ``.png``, ``.webp``...) and a caption: ``.txt`` (each non-empty line is one
caption) or ``.json`` (key ``"caption"`` or ``"text"``, a string or a list of strings).

Sharding: the shard list is shuffled per epoch by (seed, epoch), identically on every rank; then
the global workers (``rank * num_workers + worker_id``) take every ``total``-th shard. With fewer
shards than workers, the workers sharing a shard take every k-th sample of it. Either way each
sample is read by exactly one worker of one rank per epoch. Ranks may get different numbers of
samples; a distributed loop should run a fixed number of steps per epoch.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset

from clipforge.data.captions import clean_captions, cycle_caption, pick_caption
from clipforge.data.images import ImageDecodeError, load_image
from clipforge.data.pairs import is_image_extension
from clipforge.data.seeding import seed_all
from clipforge.data.shard_io import expand_urls, local_path, open_shard
from clipforge.data.skips import (
    BAD_CAPTION,
    CORRUPT_IMAGE,
    MALFORMED_JSON,
    MISSING_CAPTION,
    MISSING_IMAGE,
    MISSING_SHARD,
    TRUNCATED_SHARD,
    Skip,
)


def split_key(name: str) -> tuple[str, str]:
    """``"dir/abc.seg.png"`` → ``("dir/abc", "seg.png")`` (WebDataset's convention)."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def assign_shards(
    n_shards: int, *, rank: int, world_size: int, worker: int, num_workers: int, seed: int, epoch: int
) -> list[tuple[int, int, int]]:
    """The shards one worker reads this epoch, as ``(shard_index, stride, offset)``: the worker keeps
    the samples ``i`` of that shard with ``i % stride == offset``."""
    if not (0 <= rank < world_size and 0 <= worker < num_workers):
        raise ValueError(f"bad rank {rank}/{world_size} or worker {worker}/{num_workers}")
    order = np.random.default_rng([seed, epoch]).permutation(n_shards)
    total, me = world_size * num_workers, rank * num_workers + worker
    if n_shards >= total:
        return [(int(order[i]), 1, 0) for i in range(me, n_shards, total)]
    if n_shards == 0:
        return []
    sharers = list(range(me % n_shards, total, n_shards))  # global workers reading the same shard
    return [(int(order[me % n_shards]), len(sharers), sharers.index(me))]


def _captions_from(ext: str, data: bytes) -> list[str] | str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return BAD_CAPTION
    if ext == "txt":
        return clean_captions(text, split_lines=True)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return MALFORMED_JSON
    if isinstance(obj, dict):
        obj = obj.get("caption", obj.get("text"))
        if obj is None:
            return MISSING_CAPTION
    return clean_captions(obj)


def tar_groups(shard: str) -> Iterator[tuple[str, dict[str, bytes]] | Skip]:
    """``(key, {ext: bytes})`` for consecutive members of ``shard`` that share a key, streamed; a
    :class:`Skip` when the shard is missing or breaks off (the half-read group is dropped)."""
    key, members = None, {}
    try:
        with open_shard(shard) as stream, tarfile.open(fileobj=stream, mode="r|*") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                k, ext = split_key(info.name)
                if k != key and key is not None:
                    yield key, members
                    members = {}
                key = k
                f = tf.extractfile(info)
                members[ext] = f.read() if f is not None else b""
    except FileNotFoundError as e:
        yield Skip(MISSING_SHARD, shard, str(e))
        return
    except (tarfile.TarError, EOFError, OSError) as e:
        yield Skip(TRUNCATED_SHARD, f"{shard}:{key}" if key else shard, str(e)[:300])
        return
    if key is not None:
        yield key, members


class TarShards(IterableDataset):
    """Iterates ``(transform(image), caption)`` (or a :class:`Skip`) over tar shards, split across
    DataLoader workers and distributed ranks. Call :meth:`set_epoch` before each epoch.

    ``resampled=False`` (epoch mode): each epoch reads every shard once (see :func:`assign_shards`).
    ``resampled=True``: each worker draws shards with replacement, forever, from a stream seeded by
    (seed, epoch, rank, worker); the reader decides how many samples make an epoch.

    ``sample_captions`` cycles through a sample's captions over the epochs (every one once per
    ``k`` epochs); ``augment`` (set by the trainer), if any, maps ``(image, caption)`` after the
    caption is picked, under the sample's seed.

    Exact resume (:meth:`set_resume`): worker ``w`` of the next epoch's loader plays the *logical*
    worker ``(w + rotate) % num_workers`` and skips the first ``skip[logical]`` samples of its
    stream without decoding them. Every sample's augmentation is seeded from its position, so
    the samples after the skip are the same tensors an uninterrupted run produces.
    """

    def __init__(
        self,
        shards: Sequence[str | Path],
        *,
        transform: Callable[[Image.Image], Any] | None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 0,
        all_captions: bool = False,
        resampled: bool = False,
        sample_captions: bool = False,
    ) -> None:
        if not shards:
            raise ValueError("no tar shards given")
        self.shards = [str(s) for s in shards]
        self.transform = transform
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.all_captions = all_captions
        self.resampled = resampled
        self.sample_captions = sample_captions
        self.augment: Callable[[Any, str], tuple[Any, str]] | None = None  # (pixels, caption) -> augmented
        self.epoch = 0
        self.skip: list[int] = []
        self.rotate = 0
        self.load_skips: list[Skip] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_resume(self, *, skip: Sequence[int], rotate: int) -> None:
        """Before the loader starts: logical worker ``i`` skips ``skip[i]`` samples; physical worker
        ``w`` plays logical worker ``(w + rotate) % num_workers``. ``skip=()`` starts from the top."""
        self.skip, self.rotate = [int(n) for n in skip], int(rotate)

    def source_files(self) -> list[Path]:
        return [p for s in self.shards if (p := local_path(s)) is not None]

    def _worker(self) -> tuple[int, int]:
        """(logical worker id, number of workers) of the calling DataLoader worker."""
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return (worker + self.rotate) % num_workers, num_workers

    def _sample(self, shard: str, key: str, members: dict[str, bytes]) -> Any:
        where = f"{shard}:{key}"
        image_ext = next((e for e in members if is_image_extension(e)), None)
        if image_ext is None:
            return Skip(MISSING_IMAGE, where, f"members: {sorted(members)}")
        cap_ext = "txt" if "txt" in members else "json" if "json" in members else None
        if cap_ext is None:
            return Skip(MISSING_CAPTION, where)
        captions = _captions_from(cap_ext, members[cap_ext])
        if isinstance(captions, str):
            return Skip(captions, f"{where}.{cap_ext}")
        try:
            image = load_image(members[image_ext])
            pixels = self.transform(image) if self.transform is not None else image
        except (ImageDecodeError, OSError, ValueError) as e:
            return Skip(CORRUPT_IMAGE, f"{where}.{image_ext}", str(e)[:200])
        if self.all_captions:
            return pixels, captions
        pick = cycle_caption if self.sample_captions else pick_caption
        caption = pick(captions, seed=self.seed, epoch=self.epoch, index=zlib.crc32(key.encode()))
        return self.augment(pixels, caption) if self.augment is not None else (pixels, caption)

    def _worker_groups(self, worker: int, num_workers: int) -> Iterator[tuple[str, str, dict[str, bytes]] | Skip]:
        """This worker's raw samples, ``(shard, key, {ext: bytes})``, in shard order."""
        if self.resampled:
            rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker, 0x5A3D])
            while True:
                shard = self.shards[int(rng.integers(len(self.shards)))]
                for group in tar_groups(shard):
                    yield group if isinstance(group, Skip) else (shard, *group)
        plan = assign_shards(
            len(self.shards),
            rank=self.rank,
            world_size=self.world_size,
            worker=worker,
            num_workers=num_workers,
            seed=self.seed,
            epoch=self.epoch,
        )
        for shard_index, stride, offset in plan:
            shard = self.shards[shard_index]
            n = 0
            for group in tar_groups(shard):
                if isinstance(group, Skip):
                    if offset == 0:  # report a broken shard once, not once per sharer
                        yield group
                    continue
                if n % stride == offset:
                    yield (shard, *group)
                n += 1

    def _shuffled(self, groups: Iterator[Any], worker: int) -> Iterator[Any]:
        """Reservoir-style shuffle of still-encoded samples (bytes are small; decoded tensors are not)."""
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        buffer: list[Any] = []
        for g in groups:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(g)
                continue
            i = int(rng.integers(len(buffer)))
            yield buffer[i]
            buffer[i] = g
        rng.shuffle(buffer)
        yield from buffer

    def __iter__(self) -> Iterator[Any]:
        worker, num_workers = self._worker()
        groups = self._worker_groups(worker, num_workers)
        if self.shuffle_buffer > 1:
            groups = self._shuffled(groups, worker)
        skip = self.skip[worker] if worker < len(self.skip) else 0
        for n, g in enumerate(groups):
            if n < skip:  # resuming: already consumed by the interrupted run; not decoded
                continue
            if isinstance(g, Skip):
                yield g
                continue
            seed_all(self.seed, self.epoch, self.rank, worker, n)
            yield self._sample(*g)


def list_shards(source: str | Path) -> list[str]:
    """The shard sources named by a brace pattern (``::`` joins several), a single ``.tar``, a
    ``pipe:`` command, a URL, or a folder of ``.tar`` files. Local shards must exist (at least one)."""
    text = str(source)
    folder = local_path(text)
    if "{" in text or "::" in text:
        shards = expand_urls(text)
    elif folder is not None and folder.is_dir():
        shards = sorted(str(p) for p in folder.glob("*.tar"))
    else:
        shards = [text]
    local = [p for s in shards if (p := local_path(s)) is not None]
    if shards and len(local) == len(shards) and not any(p.is_file() for p in local):
        raise FileNotFoundError(f"no tar shard found for {text!r} (first looked for {shards[0] if shards else text})")
    if not shards:
        raise FileNotFoundError(f"no tar shard found for {text!r}")
    return shards
