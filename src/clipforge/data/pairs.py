"""Map-style image-text pair datasets: a CSV/TSV file, a JSONL file, or a folder of images with
same-named ``.txt`` captions.

The index is read once at construction; rows that cannot be used (a missing column, a bad JSON
line, an empty caption) are skipped there, kept in ``dataset.load_skips`` naming ``file:line``,
and logged once. Images are decoded in ``__getitem__``; a missing or undecodable image returns a
:class:`~clipforge.data.skips.Skip` instead of ``(image, caption)``.

Paths and captions live in packed byte tables rather than lists of Python strings, so DataLoader
workers forked from a process holding millions of rows do not slowly copy them all (touching a
Python object writes its reference count, which un-shares its memory page).
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from clipforge.data.captions import caption_list, clean_captions, cycle_caption, pick_caption
from clipforge.data.images import IMAGE_EXTENSIONS, ImageDecodeError, load_image
from clipforge.data.skips import (
    BAD_CAPTION,
    CORRUPT_IMAGE,
    MALFORMED_JSON,
    MALFORMED_ROW,
    MISSING_CAPTION,
    MISSING_IMAGE,
    Skip,
    log_load_skips,
)

Transform = Callable[[Image.Image], Any]
Sample = tuple[Any, str] | tuple[Any, list[str]] | Skip


_SURROGATES = re.compile("[\udc80-\udcff]")


@cache
def _image_extensions() -> frozenset[str]:
    return frozenset(e.lower().lstrip(".") for e in IMAGE_EXTENSIONS)


def is_image_extension(ext: str) -> bool:
    """``"jpg"``, ``".JPG"``... is one of ``IMAGE_EXTENSIONS`` (whichever way those are spelt)."""
    return ext.lower().lstrip(".") in _image_extensions()


class StringTable:
    """An immutable list of strings stored as one UTF-8 blob plus offsets (fork-friendly)."""

    def __init__(self, items: Sequence[str]) -> None:
        encoded = [s.encode("utf-8") for s in items]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=self._offsets[1:])
        self._blob = np.frombuffer(b"".join(encoded), dtype=np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int) -> str:
        return self._blob[self._offsets[i] : self._offsets[i + 1]].tobytes().decode("utf-8")


class PairsDataset(Dataset):
    """``(transform(image), caption)`` pairs from an in-memory index.

    Each row has one or more captions (or, for folders, a caption file read on access); with
    several, one is chosen per epoch from (seed, epoch, index) — call :meth:`set_epoch` before each
    epoch (DataLoader workers must not be persistent, so they pick up the new epoch).
    ``all_captions=True`` returns the full list instead (used to build a cache).
    ``sample_captions=True`` cycles through an image's captions so that every ``k`` consecutive
    epochs see each of its ``k`` captions once (:func:`~clipforge.data.captions.cycle_caption`).
    """

    def __init__(
        self,
        *,
        images: Sequence[str],
        captions: Sequence[str],
        wheres: Sequence[str],
        transform: Transform | None,
        seed: int = 0,
        all_captions: bool = False,
        load_skips: Sequence[Skip] = (),
        source: str = "",
        sample_captions: bool = False,
    ) -> None:
        if not (len(images) == len(captions) == len(wheres)):
            raise ValueError("images, captions and wheres must have the same length")
        self._images = StringTable(images)
        self._captions = StringTable(captions)  # "\n"-joined captions; "" = read <image stem>.txt
        self._wheres = StringTable(wheres)
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.all_captions = all_captions
        self.load_skips = list(load_skips)
        self.source = source
        self.sample_captions = sample_captions

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._images)

    def image_path(self, index: int) -> Path:
        return Path(self._images[index])

    def source_files(self) -> list[Path]:
        """Every file this dataset reads (for a cache fingerprint)."""
        files = [Path(self.source)] if self.source and Path(self.source).is_file() else []
        files += [Path(self._images[i]) for i in range(len(self))]
        files += [
            Path(self._images[i]).with_suffix(".txt") for i in range(len(self)) if not self._captions[i]
        ]
        return files

    def _captions_of(self, index: int) -> list[str] | Skip:
        joined = self._captions[index]
        if joined:
            return joined.split("\n")
        txt = Path(self._images[index]).with_suffix(".txt")
        try:
            text = txt.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Skip(MISSING_CAPTION, str(txt))
        except (UnicodeDecodeError, OSError) as e:
            return Skip(BAD_CAPTION, str(txt), str(e))
        caps = clean_captions(text, split_lines=True)
        return Skip(caps, str(txt)) if isinstance(caps, str) else caps

    def __getitem__(self, index: int) -> Sample:
        captions = self._captions_of(index)
        if isinstance(captions, Skip):
            return captions
        path = self._images[index]
        try:
            image = load_image(path)
            pixels = self.transform(image) if self.transform is not None else image
        except FileNotFoundError:
            return Skip(MISSING_IMAGE, self._wheres[index], path)
        except (ImageDecodeError, OSError, ValueError) as e:
            if not os.path.exists(path):
                return Skip(MISSING_IMAGE, self._wheres[index], path)
            return Skip(CORRUPT_IMAGE, self._wheres[index], str(e)[:200])
        if self.all_captions:
            return pixels, captions
        pick = cycle_caption if self.sample_captions else pick_caption
        return pixels, pick(captions, seed=self.seed, epoch=self.epoch, index=index)


def _resolve(base: Path, value: str) -> str:
    p = Path(value)
    return str(p if p.is_absolute() else base / p)


@dataclass
class _Rows:
    """The rows of an index file as they are read: kept (image path, "\n"-joined captions, where)
    and skipped, each naming ``file:line``."""

    base: Path  # relative image paths are relative to this folder
    images: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        self.skips.append(Skip(reason, where, detail))

    def add(self, raw_image: Any, raw_caption: Any, *, where: str) -> None:
        if not isinstance(raw_image, str) or not raw_image.strip():
            self.skip(MALFORMED_ROW, where, "image path is empty or not a string")
            return
        caps = clean_captions(raw_caption)
        if isinstance(caps, str):
            self.skip(caps, where)
            return
        self.images.append(_resolve(self.base, raw_image.strip()))
        self.captions.append("\n".join(caps))
        self.wheres.append(where)

    def grouped(self) -> None:
        """Merge the rows that name the same image into one row holding all their captions
        (first occurrence's position and ``file:line``)."""
        first: dict[str, int] = {}
        images: list[str] = []
        captions: list[list[str]] = []
        wheres: list[str] = []
        for image, joined, where in zip(self.images, self.captions, self.wheres, strict=True):
            if image in first:
                captions[first[image]].append(joined)
                continue
            first[image] = len(images)
            images.append(image)
            captions.append([joined])
            wheres.append(where)
        self.images, self.wheres = images, wheres
        self.captions = ["\n".join(c) for c in captions]

    def dataset(
        self,
        source: Path,
        *,
        transform: Transform | None,
        seed: int,
        all_captions: bool,
        sample_captions: bool = False,
    ) -> PairsDataset:
        log_load_skips(str(source), self.skips)
        if sample_captions:
            self.grouped()
        return PairsDataset(
            images=self.images,
            captions=self.captions,
            wheres=self.wheres,
            transform=transform,
            seed=seed,
            all_captions=all_captions,
            load_skips=self.skips,
            source=str(source),
            sample_captions=sample_captions,
        )


def has_undecodable(*values: Any) -> bool:
    """Whether text read with ``errors="surrogateescape"`` held bytes that are not UTF-8."""
    return any(isinstance(v, str) and _SURROGATES.search(v) for v in values)


def read_csv(
    path: str | Path,
    *,
    transform: Transform | None,
    image_key: str = "filepath",
    caption_key: str = "title",
    delimiter: str | None = None,
    seed: int = 0,
    all_captions: bool = False,
    sample_captions: bool = False,
) -> PairsDataset:
    """A CSV (``,``) or TSV (``\\t``; picked from the extension unless ``delimiter`` is given) with a
    header row. Image paths are relative to the file's folder. A file without the named columns is
    an error; a row missing a value is skipped and counted. ``sample_captions``: a caption cell
    holding a JSON list is several captions, and rows naming the same image are one image with all
    their captions (one used per epoch)."""
    path = Path(path)
    if delimiter is None:
        delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    rows = _Rows(path.parent)
    # invalid UTF-8 bytes survive as lone surrogates, so one bad row is skipped, not the whole file
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [k for k in (image_key, caption_key) if k not in header]
        if missing:
            raise KeyError(
                f"{path}: no column {', '.join(map(repr, missing))} in the header; columns are {header} "
                f"(choose others with image_key= / caption_key=, or the delimiter with delimiter=)"
            )
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if row.get(image_key) is None or row.get(caption_key) is None:
                rows.skip(MALFORMED_ROW, where, "row has fewer columns than the header")
                continue
            if None in row:  # DictReader's restkey: values beyond the header
                detail = "row has more columns than the header (an unquoted delimiter in the caption?)"
                rows.skip(MALFORMED_ROW, where, detail)
                continue
            if has_undecodable(row[image_key], row[caption_key]):
                rows.skip(MALFORMED_ROW, where, "invalid UTF-8")
                continue
            caption = caption_list(row[caption_key]) if sample_captions else row[caption_key]
            rows.add(row[image_key], caption, where=where)
    return rows.dataset(
        path, transform=transform, seed=seed, all_captions=all_captions, sample_captions=sample_captions
    )


def read_jsonl(
    path: str | Path,
    *,
    transform: Transform | None,
    image_key: str = "filepath",
    caption_key: str = "title",
    seed: int = 0,
    all_captions: bool = False,
    sample_captions: bool = False,
) -> PairsDataset:
    """One JSON object per line; the caption may be a string or a list of strings (one is picked
    per epoch). Image paths are relative to the file's folder. Bad lines are skipped and counted.
    ``sample_captions``: lines naming the same image are one image with all their captions."""
    path = Path(path)
    rows = _Rows(path.parent)
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            if has_undecodable(line):
                rows.skip(MALFORMED_ROW, where, "invalid UTF-8")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                rows.skip(MALFORMED_JSON, where, str(e))
                continue
            if not isinstance(obj, dict) or image_key not in obj or caption_key not in obj:
                rows.skip(MALFORMED_ROW, where, f"needs an object with keys {image_key!r}, {caption_key!r}")
                continue
            rows.add(obj[image_key], obj[caption_key], where=where)
    return rows.dataset(
        path, transform=transform, seed=seed, all_captions=all_captions, sample_captions=sample_captions
    )


def read_folder(
    root: str | Path,
    *,
    transform: Transform | None,
    seed: int = 0,
    all_captions: bool = False,
    sample_captions: bool = False,
) -> PairsDataset:
    """Every image under ``root`` (recursively, sorted) with its caption in ``<same name>.txt``;
    each non-empty line of the ``.txt`` is one caption. Images without a ``.txt`` are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    rows = _Rows(root)
    for p in sorted(root.rglob("*")):
        if not is_image_extension(p.suffix) or not p.is_file():
            continue
        if not p.with_suffix(".txt").is_file():
            rows.skip(MISSING_CAPTION, str(p), "no .txt caption file beside it")
            continue
        rows.images.append(str(p))
        rows.captions.append("")  # "" = read <image stem>.txt on access
        rows.wheres.append(str(p))
    return rows.dataset(
        root, transform=transform, seed=seed, all_captions=all_captions, sample_captions=sample_captions
    )
