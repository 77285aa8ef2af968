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
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import IterableDataset

from clipforge.data.captions import clean_captions, pick_caption
from clipforge.data.images import ImageDecodeError, load_image
from clipforge.data.pairs import is_image_extension
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

_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?$")


def _matching_brace(pattern: str, start: int) -> int:
    depth = 0
    for i in range(start, len(pattern)):
        if pattern[i] == "{":
            depth += 1
        elif pattern[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError(f"unbalanced '{{' in {pattern!r}")


def _split_top_commas(body: str) -> list[str]:
    parts, depth, last = [], 0, 0
    for i, ch in enumerate(body):
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(body[last:i])
            last = i + 1
    return parts + [body[last:]]


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion, in order: ``a{00..02}`` → a00 a01 a02 (zero padding kept from
    the endpoints), ``{x,y}`` → x y, ``{0..10..5}`` → 0 5 10; several and nested groups combine."""
    start = pattern.find("{")
    if start < 0:
        if "}" in pattern:
            raise ValueError(f"unbalanced '}}' in {pattern!r}")
        return [pattern]
    end = _matching_brace(pattern, start)
    head, body, tail = pattern[:start], pattern[start + 1 : end], pattern[end + 1 :]
    m = _RANGE.match(body)
    if m:
        lo, hi, step = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
        if step <= 0:
            raise ValueError(f"brace range step must be positive in {pattern!r}")
        padded = any(len(g.lstrip("-")) > 1 and g.lstrip("-").startswith("0") for g in m.group(1, 2))
        width = max(len(m.group(1)), len(m.group(2))) if padded else 0
        direction = 1 if hi >= lo else -1
        options = [str(v).zfill(width) for v in range(lo, hi + direction, step * direction)]
    else:
        alternatives = _split_top_commas(body)
        if len(alternatives) == 1:  # "{abc}" is literal, as in bash
            options = ["{" + alt + "}" for alt in expand_braces(body)]
        else:
            options = [o for alt in alternatives for o in expand_braces(alt)]
    rest = expand_braces(tail)
    return [head + o + r for o in options for r in rest]


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


class TarShards(IterableDataset):
    """Iterates ``(transform(image), caption)`` (or a :class:`Skip`) over tar shards, split across
    DataLoader workers and distributed ranks. Call :meth:`set_epoch` before each epoch."""

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
    ) -> None:
        if not shards:
            raise ValueError("no tar shards given")
        self.shards = [str(s) for s in shards]
        self.transform = transform
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle_buffer = shuffle_buffer
        self.all_captions = all_captions
        self.epoch = 0
        self.load_skips: list[Skip] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def source_files(self) -> list[Path]:
        return [Path(s) for s in self.shards]

    def _groups(self, shard: str) -> Iterator[tuple[str, dict[str, bytes]] | Skip]:
        """(key, {ext: bytes}) for consecutive members with the same key; a Skip if the shard breaks."""
        key, members = None, {}
        try:
            with tarfile.open(shard, mode="r|*") as tf:
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
            yield Skip(TRUNCATED_SHARD, f"{shard}:{key}" if key else shard, str(e))
            return  # the half-read group is dropped with the shard's tail
        if key is not None:
            yield key, members

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
        return pixels, pick_caption(
            captions, seed=self.seed, epoch=self.epoch, index=zlib.crc32(key.encode())
        )

    def _worker_groups(self) -> Iterator[tuple[str, str, dict[str, bytes]] | Skip]:
        """This worker's raw samples, ``(shard, key, {ext: bytes})``, in shard order."""
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
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
            for group in self._groups(shard):
                if isinstance(group, Skip):
                    if offset == 0:  # report a broken shard once, not once per sharer
                        yield group
                    continue
                if n % stride == offset:
                    yield (shard, *group)
                n += 1

    def _shuffled(self, groups: Iterator[Any]) -> Iterator[Any]:
        """Reservoir-style shuffle of still-encoded samples (bytes are small; decoded tensors are not)."""
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
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
        groups = self._worker_groups()
        if self.shuffle_buffer > 1:
            groups = self._shuffled(groups)
        for g in groups:
            yield g if isinstance(g, Skip) else self._sample(*g)


def list_shards(source: str | Path) -> list[str]:
    """The shard files named by a brace pattern, a single ``.tar`` or a folder of ``.tar`` files."""
    text = str(source)
    if "{" in text:
        shards = expand_braces(text)
    elif Path(text).is_dir():
        shards = sorted(str(p) for p in Path(text).glob("*.tar"))
    else:
        shards = [text]
    missing = [s for s in shards if not Path(s).is_file()]
    if len(missing) == len(shards):
        raise FileNotFoundError(
            f"no tar shard found for {text!r} (first looked for {shards[0] if shards else text})"
        )
    return shards
