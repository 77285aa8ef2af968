"""Pre-decoded image cache: decode and resize every image once, train many epochs from a memmap.

``build_cache`` runs the eval-mode :func:`~clipforge.data.transforms.image_transform` (resize by
the shortest side + centre crop, or squash, as ``preprocess`` says) over a dataset in parallel
DataLoader workers, turns each result back into uint8 pixels, and writes:

- ``images-<id>.u8``: a raw uint8 array ``(N, H, W, 3)`` (read with ``numpy.memmap``);
- ``captions-<id>.jsonl``: every caption of each image, one JSON list per line;
- ``manifest.json``: source, settings, count, the skipped samples, and a fingerprint of the
  source files (path, size, mtime) and settings. A cache whose fingerprint no longer matches is
  stale and is rebuilt.

Data files are written under temporary names and renamed; the manifest is replaced last, so a
reader sees the old cache or the new one, never half of one. :class:`CachedPairs` then returns
``(uint8 (H, W, 3) tensor, caption)``; random crop / flip happen on uint8, and normalisation is
done per batch on the device (``collate.prepare_images``). Multi-epoch training stops being
decode-bound.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from clipforge.config import PreprocessConfig
from clipforge.data.build import build_dataset
from clipforge.data.captions import cycle_caption, mix_seed, pick_caption
from clipforge.data.pairs import StringTable
from clipforge.data.protocols import FileBacked, load_skips_of
from clipforge.data.skips import Skip, log_load_skips
from clipforge.data.transforms import image_transform
from clipforge.fileio import atomic_write, atomic_write_text

CACHE_FORMAT = 1
MANIFEST = "manifest.json"


class ToUint8:
    """The eval transform, returned as uint8 ``(H, W, 3)``: pixels the model would see, undone
    from normalisation (exact up to float rounding). A class, so workers can pickle it."""

    def __init__(self, preprocess: PreprocessConfig, image_size: int) -> None:
        self.transform = image_transform(preprocess, image_size, train=False)
        self.mean = torch.tensor(preprocess.mean).view(3, 1, 1)
        self.std = torch.tensor(preprocess.std).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> np.ndarray:
        x = self.transform(image)  # (3, H, W) float, normalised
        pixels = ((x * self.std + self.mean) * 255.0).round().clamp(0, 255)
        return pixels.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()  # (H, W, 3)


def fingerprint(files: Sequence[Path], settings: dict[str, Any]) -> str:
    """SHA-256 of the settings and each file's path, size and modification time."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{f}\0missing\n".encode())
    return h.hexdigest()


def read_manifest(cache_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(cache_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _settings(
    source: str | Path,
    preprocess: PreprocessConfig,
    image_size: int,
    image_key: str,
    caption_key: str,
    sample_captions: bool = False,
) -> dict[str, Any]:
    grouping = {"sample_captions": True} if sample_captions else {}  # absent when off: old caches stay valid
    return {
        **grouping,
        "format": CACHE_FORMAT,
        "source": str(source),
        "image_size": image_size,
        "resize_mode": preprocess.resize_mode,
        "interpolation": preprocess.interpolation,
        "image_key": image_key,
        "caption_key": caption_key,
    }


@dataclass(frozen=True)
class CacheFiles:
    """The data files of one build, named after its fingerprint (so a rebuild never overwrites the
    files a reader of the previous manifest may have open)."""

    images: str  # images-<tag>.u8
    captions: str  # captions-<tag>.jsonl

    @classmethod
    def of(cls, fp: str) -> CacheFiles:
        tag = fp[:16]
        return cls(f"images-{tag}.u8", f"captions-{tag}.jsonl")


@dataclass
class CacheContents:
    """What a build wrote: how many images, and the samples it skipped (the dataset's own load
    skips first, then those met while decoding)."""

    count: int = 0
    skips: list[Skip] = field(default_factory=list)


def build_cache(
    source: str | Path,
    cache_dir: str | Path,
    *,
    image_size: int,
    preprocess: PreprocessConfig | None = None,
    image_key: str = "filepath",
    caption_key: str = "title",
    delimiter: str | None = None,
    num_workers: int = 2,
    batch_size: int = 64,
    force: bool = False,
    progress: bool = True,
    sample_captions: bool = False,
) -> Path:
    """Build (or reuse, when its fingerprint still matches) the cache of ``source`` in
    ``cache_dir``; returns ``cache_dir``. ``source`` is anything ``build_dataset`` reads;
    ``preprocess`` (default OpenAI's) gives the resize mode and interpolation. ``sample_captions``
    reads several captions per image (JSON-list CSV cells, rows repeating an image path), as
    ``build_dataset`` does; read such a cache with ``CachedPairs(sample_captions=True)``."""
    cache_dir = Path(cache_dir)
    preprocess = preprocess or PreprocessConfig()
    dataset = build_dataset(
        source,
        transform=ToUint8(preprocess, image_size),
        image_key=image_key,
        caption_key=caption_key,
        delimiter=delimiter,
        shuffle_buffer=0,
        all_captions=True,
        sample_captions=sample_captions,
    )
    settings = _settings(source, preprocess, image_size, image_key, caption_key, sample_captions)
    fp = fingerprint(dataset.source_files() if isinstance(dataset, FileBacked) else [], settings)
    old = read_manifest(cache_dir)
    if not force and old is not None and old.get("fingerprint") == fp:
        return cache_dir

    cache_dir.mkdir(parents=True, exist_ok=True)
    files = CacheFiles.of(fp)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=list)
    total = None if isinstance(dataset, IterableDataset) else len(dataset)
    bar = tqdm(
        loader,
        desc=f"caching {Path(str(source)).name}",
        total=None if total is None else -(-total // batch_size),
        unit="batch",
        disable=not progress,
    )
    contents = CacheContents(skips=load_skips_of(dataset))
    _write_data(cache_dir, files, bar, contents)
    manifest = _manifest(settings, fp, files, contents, preprocess=preprocess, image_size=image_size)
    atomic_write_text(cache_dir / MANIFEST, json.dumps(manifest, indent=1))
    if old is not None:
        _remove_replaced(cache_dir, old, files)
    return cache_dir


def _write_data(cache_dir: Path, files: CacheFiles, batches: Iterable[list], contents: CacheContents) -> None:
    """Both data files, atomically (the manifest, written after, is what makes them valid),
    counting the images and collecting the skips into ``contents``."""

    def stream(tmp_images: str, tmp_captions: str) -> None:
        with open(tmp_images, "wb") as fi, open(tmp_captions, "w", encoding="utf-8") as fc:
            for batch in batches:
                for sample in batch:
                    if isinstance(sample, Skip):
                        contents.skips.append(sample)
                        continue
                    pixels, captions = sample
                    fi.write(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
                    fc.write(json.dumps(captions, ensure_ascii=False) + "\n")
                    contents.count += 1

    atomic_write(
        cache_dir / files.images,
        lambda ti: atomic_write(cache_dir / files.captions, lambda tc: stream(ti, tc)),
    )


def _manifest(
    settings: dict[str, Any],
    fp: str,
    files: CacheFiles,
    contents: CacheContents,
    *,
    preprocess: PreprocessConfig,
    image_size: int,
) -> dict[str, Any]:
    """What ``manifest.json`` says of a build: its settings and fingerprint, files, shape, skips
    and the normalisation the cached pixels were undone from."""
    return {
        **settings,
        "fingerprint": fp,
        "count": contents.count,
        "shape": [contents.count, image_size, image_size, 3],
        "images": files.images,
        "captions": files.captions,
        "skipped": dict(Counter(s.reason for s in contents.skips)),
        "skips": [[s.reason, s.where, s.detail] for s in contents.skips],
        "mean": list(preprocess.mean),
        "std": list(preprocess.std),
    }


def _remove_replaced(cache_dir: Path, old: dict[str, Any], files: CacheFiles) -> None:
    """The previous build's data files, unless this build reused their names."""
    for name in (old.get("images"), old.get("captions")):
        if name and name not in (files.images, files.captions):
            (cache_dir / name).unlink(missing_ok=True)


class CachedPairs(Dataset):
    """``(uint8 (H, W, 3) tensor, caption)`` from a cache made by :func:`build_cache`.

    ``crop_size`` smaller than the cached size takes a ``random_crop`` (else centre) window;
    ``flip`` mirrors half the images horizontally (not for captions that say left/right). The
    crop, flip and caption choice are functions of (seed, epoch, index): call :meth:`set_epoch`.
    ``sample_captions`` cycles through each image's captions (every caption once per ``k`` epochs).
    """

    def __init__(
        self,
        cache_dir: str | Path,
        *,
        seed: int = 0,
        crop_size: int | None = None,
        random_crop: bool = False,
        flip: bool = False,
        sample_captions: bool = False,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.sample_captions = sample_captions
        manifest = read_manifest(self.cache_dir)
        if manifest is None or manifest.get("format") != CACHE_FORMAT:
            raise FileNotFoundError(f"{self.cache_dir} holds no clipforge cache (build it with build_cache)")
        self.manifest = manifest
        self.shape = tuple(manifest["shape"])  # (N, H, W, 3)
        with open(self.cache_dir / manifest["captions"], encoding="utf-8") as f:
            self._captions = StringTable(["\n".join(json.loads(line)) for line in f])
        if len(self._captions) != self.shape[0]:
            raise ValueError(
                f"{self.cache_dir}: {len(self._captions)} caption rows for {self.shape[0]} images"
            )
        size = self.shape[1]
        self.crop_size = crop_size or size
        if self.crop_size > size:
            raise ValueError(f"crop_size {self.crop_size} is larger than the cached images ({size})")
        self.seed, self.random_crop, self.flip = seed, random_crop, flip
        self.epoch = 0
        self.load_skips = [Skip(*s) for s in manifest.get("skips", [])]
        log_load_skips(f"{self.cache_dir} (at build)", self.load_skips)
        self._images: np.memmap | None = None  # opened lazily, once per worker process

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:  # never pickle the memmap into workers
        return {**self.__dict__, "_images": None}

    def pixels(self, index: int) -> np.ndarray:
        if self._images is None:
            path = self.cache_dir / self.manifest["images"]
            self._images = np.memmap(path, dtype=np.uint8, mode="c", shape=self.shape)  # copy-on-write
        return self._images[index]  # (H, W, 3)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        img = self.pixels(index)
        size, crop = self.shape[1], self.crop_size
        r = mix_seed(self.seed, self.epoch, index, 17)
        if crop < size:
            if self.random_crop:
                top, left = (r >> 8) % (size - crop + 1), (r >> 24) % (size - crop + 1)
            else:
                top = left = (size - crop) // 2
            img = img[top : top + crop, left : left + crop]  # (crop, crop, 3)
        if self.flip and r & 1:
            img = img[:, ::-1]
        captions = self._captions[index].split("\n")
        pick = cycle_caption if self.sample_captions else pick_caption
        caption = pick(captions, seed=self.seed, epoch=self.epoch, index=index)
        return torch.from_numpy(np.ascontiguousarray(img)), caption
