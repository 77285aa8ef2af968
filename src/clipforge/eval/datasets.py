"""Labelled image sets for evaluation, and image paths given on a command line.

Two layouts of a labelled set:

* an **image folder** with one sub-folder per class (``root/<class name>/*.png``); the class names
  are the sub-folder names in sorted order (or the order of a given class-name list);
* a **CSV/TSV file** with an image column and a label column (``filepath,label`` by default);
  relative image paths are relative to the file's folder; a label is a class name, or an integer
  index into the given class names.

Rows that cannot be used are reported with ``file:line`` and skipped; images are not opened here
(an unreadable image is reported and skipped when features are computed).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from torch.utils.data import Dataset

from ..data.images import ImageDecodeError, load_image
from ..data.pairs import check_columns, has_undecodable
from ..data.skips import CORRUPT_IMAGE, Skip
from ..data.walk import walk_images

log = logging.getLogger(__name__)


@dataclass
class LabelledImages:
    """Image paths with integer labels into ``classnames``."""

    paths: list[Path]
    labels: list[int]
    classnames: list[str]
    source: str
    skipped: list[str] = field(default_factory=list)  # "file:line: reason" for each unusable row

    def __len__(self) -> int:
        return len(self.paths)


def load_labelled(
    source: str | Path,
    *,
    classnames: list[str] | None = None,
    image_key: str = "filepath",
    label_key: str = "label",
) -> LabelledImages:
    """An image folder (sub-folder per class) or a ``.csv``/``.tsv`` file with labels.

    ``classnames`` (the names put into prompts): for a folder, either a list containing every
    sub-folder name (matched by name; the list sets the order), or exactly one name per sub-folder
    in sorted order (a renaming, e.g. WordNet ids → words). For a CSV, label names must be in the
    list, and integer labels index it."""
    source = Path(source)
    if source.is_dir():
        data = image_folder(source, classnames=classnames)
    elif source.suffix.lower() in (".csv", ".tsv"):
        data = labelled_csv(source, classnames=classnames, image_key=image_key, label_key=label_key)
    elif not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    else:
        raise ValueError(f"{source}: expected a folder with one sub-folder per class, or a .csv/.tsv file")
    if not data.paths:
        raise ValueError(f"{source}: no labelled images found")
    return data


def image_folder(root: str | Path, *, classnames: list[str] | None = None) -> LabelledImages:
    """``root/<class>/<image>``; see :func:`load_labelled` for how ``classnames`` applies."""
    root = Path(root)
    found: dict[str, list[Path]] = {}  # class folder -> its image files
    for f in walk_images(root).files:  # links never leave the tree; links to folders are not classes
        if "/" in f.path:
            found.setdefault(f.path.split("/", 1)[0], []).append(root / f.path)
    for p in sorted(root.iterdir()):
        if not p.name.startswith(".") and p.name not in found and p.is_dir():
            log.warning("%s: %r holds no image files (or is a link): not a class", root, p.name)
    folders = sorted(found)
    if not folders:
        raise ValueError(
            f"{root}: no class sub-folders holding images (expected {root}/<class name>/<image files>)"
        )
    if classnames is None:
        names, index = folders, {f: i for i, f in enumerate(folders)}
    elif all(f in classnames for f in folders):
        names, index = list(classnames), {f: classnames.index(f) for f in folders}
    elif len(classnames) == len(folders):
        names, index = list(classnames), {f: i for i, f in enumerate(folders)}
        log.info("%s: class names given by position for the %d sorted sub-folders", root, len(folders))
    else:
        raise ValueError(
            f"{root}: {len(folders)} class sub-folders but {len(classnames)} class names, and not every "
            "sub-folder is named in the list"
        )
    paths, labels = [], []
    for folder in folders:
        files = found[folder]
        paths += files
        labels += [index[folder]] * len(files)
    return LabelledImages(paths, labels, names, str(root))


def labelled_csv(
    path: str | Path,
    *,
    classnames: list[str] | None = None,
    image_key: str = "filepath",
    label_key: str = "label",
) -> LabelledImages:
    """A CSV (or TSV, by extension) with a header naming ``image_key`` and ``label_key``.

    Labels are class names or integer indices. Without ``classnames`` the classes are the sorted
    set of names, or ``"0" … "max"`` for integer labels."""
    path = Path(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:  # bad bytes: row skipped
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        check_columns(path, header, {"image_key": image_key, "label_key": label_key}, delimiter=delimiter)
        rows = [(reader.line_num, row) for row in reader]
    raw: list[tuple[int, Path, str]] = []
    skipped = []
    for line, row in rows:
        if None in row:
            skipped.append(f"{path}:{line}: more columns than the header")
            continue
        if has_undecodable(row.get(image_key), row.get(label_key)):
            skipped.append(f"{path}:{line}: invalid UTF-8")
            continue
        image, label = (row.get(image_key) or "").strip(), (row.get(label_key) or "").strip()
        if not image or not label:
            skipped.append(f"{path}:{line}: empty {(image_key if not image else label_key)!r}")
            continue
        image_path = Path(image) if Path(image).is_absolute() else path.parent / image
        raw.append((line, image_path, label))
    integer = bool(raw) and all(label.isdigit() for _, _, label in raw)
    if classnames is not None:
        names = list(classnames)
    elif integer:
        names = [str(i) for i in range(max(int(label) for _, _, label in raw) + 1)]
    else:
        names = sorted({label for _, _, label in raw})
    index = {name: i for i, name in enumerate(names)}
    paths, labels = [], []
    for line, image_path, label in raw:
        if integer and int(label) < len(names):
            labels.append(int(label))
        elif not integer and label in index:
            labels.append(index[label])
        else:
            skipped.append(f"{path}:{line}: label {label!r} is not one of the {len(names)} classes")
            continue
        paths.append(image_path)
    for reason in skipped[:5]:
        log.warning("skipped row %s", reason)
    if len(skipped) > 5:
        log.warning("skipped %d more rows of %s", len(skipped) - 5, path)
    return LabelledImages(paths, labels, names, str(path), skipped)


# Why an entry of a folder given on the command line is not used (the reasons of ``skipped`` lists).
OUTSIDE_LINK = "link points outside the folder (not followed)"
UNLISTABLE = "cannot be listed or read"


class ImageInputs(NamedTuple):
    paths: list[Path]  # image files, folders expanded (sorted)
    skipped: list[tuple[str, str]]  # (path, reason): links out of a folder, entries that cannot be listed


def find_images(inputs: list[str | Path], *, recursive: bool = True) -> ImageInputs:
    """Files and folders from a command line → image files (folders expanded, sorted), and the
    entries of those folders that were not used, with why.

    A named file is kept whatever its extension (so that an unreadable one is reported when it is
    opened); a missing path is a FileNotFoundError. Inside a folder, links are followed only to
    files within it (never out of the tree, never into a directory: no loops); a link out of it is
    listed in ``skipped``."""
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            listing = walk_images(p)
            found += [p / f.path for f in listing.files if recursive or "/" not in f.path]
            for names, reason in ((listing.outside_links, OUTSIDE_LINK), (listing.unreadable, UNLISTABLE)):
                skipped += [(str(p / name), reason) for name in names if recursive or "/" not in name]
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    if not found:
        more = f", and {len(skipped) - 1} more" if len(skipped) > 1 else ""
        not_used = f" (not used: {skipped[0][0]}: {skipped[0][1]}{more})" if skipped else ""
        raise ValueError(f"no image files in {', '.join(map(str, inputs))}{not_used}")
    return ImageInputs(found, skipped)


def collect_images(inputs: list[str | Path], *, recursive: bool = True) -> list[Path]:
    """The image files of :func:`find_images` (without the entries it skipped)."""
    return find_images(inputs, recursive=recursive).paths


class LabelledDataset(Dataset):
    """``(transform(image), label)`` for each image of a :class:`LabelledImages`, or a :class:`Skip`
    naming an unreadable file (a map-style dataset for DataLoaders)."""

    def __init__(self, data: LabelledImages, *, transform: Callable | None) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        path = self.data.paths[i]
        try:
            image = load_image(path)
            pixels = self.transform(image) if self.transform is not None else image
        except (ImageDecodeError, OSError, ValueError) as e:
            return Skip(CORRUPT_IMAGE, str(path), getattr(e, "reason", str(e))[:200])
        return pixels, self.data.labels[i]
