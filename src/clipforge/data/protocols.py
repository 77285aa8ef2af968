"""What a pair source is, and the optional capabilities the trainer, the cache and eval use.

Every dataset ``build_dataset`` returns yields ``(image, caption)`` or a :class:`~.skips.Skip`:
map-style (:class:`~.pairs.PairsDataset`, :class:`~.shapes.ShapesDataset`,
:class:`~.cache.CachedPairs`) or streamed (:class:`~.webdataset.TarShards`). Beyond that, a source
may offer any of the capabilities below; callers test for one with ``isinstance(dataset, Epochal)``
(the protocols are runtime-checkable) instead of probing attribute names, so a new source states
what it supports by implementing the method, and a typo is a type error rather than a silent skip.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from clipforge.data.skips import Skip


@runtime_checkable
class Epochal(Protocol):
    """Its items depend on the epoch (a caption picked per epoch, a reshuffled stream): the loader
    calls ``set_epoch`` before each epoch, before the workers start."""

    def set_epoch(self, epoch: int) -> None: ...


@runtime_checkable
class Resumable(Protocol):
    """A stream that can restart mid-epoch: logical worker ``i`` skips ``skip[i]`` samples and
    physical worker ``w`` plays logical worker ``(w + rotate) % num_workers``."""

    def set_resume(self, *, skip: Sequence[int], rotate: int) -> None: ...


@runtime_checkable
class FileBacked(Protocol):
    """Knows every local file it reads, so a cache built from it can be fingerprinted."""

    def source_files(self) -> list[Path]: ...


@runtime_checkable
class ReportsLoadSkips(Protocol):
    """Rows dropped while the source was listed (a malformed CSV line, an empty caption), so the
    run summary and reports can count them beside the skips met while reading."""

    load_skips: list[Skip]


@runtime_checkable
class KeyedByImage(Protocol):
    """Map-style, with one image file per row: retrieval groups rows that share an image."""

    def __len__(self) -> int: ...

    def image_path(self, index: int) -> Path: ...


@runtime_checkable
class CaptionSource(Protocol):
    """Can list its captions without decoding images (to learn a BPE vocabulary quickly)."""

    def captions(self, limit: int) -> Iterator[str]: ...


def load_skips_of(dataset: object) -> list[Skip]:
    """The skips ``dataset`` recorded while it was listed (none if it does not report any)."""
    return list(dataset.load_skips) if isinstance(dataset, ReportsLoadSkips) else []
