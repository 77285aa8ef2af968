"""Indexing a folder: decode in parallel workers, encode in batches, commit as we go.

One run of :func:`index_folder`:

1. lists the folder and diffs it against the store by (size, mtime) (:mod:`.scan`);
2. hashes, in this process, the files whose content may already be known: changed paths (a
   ``touch`` keeps its row) and new files with the size of a vanished row (a rename keeps its row
   and embedding: nothing is decoded or encoded for it);
3. in one transaction applies those moves and deletes rows whose files are gone;
4. decodes the remaining files in ``DataLoader`` workers (each worker reads the bytes once, hashes
   them, reads the photo's date, camera and size from its header, decodes and preprocesses),
   encodes them in batches while the workers decode the next ones, and commits every
   ``commit_every`` images. A file whose bytes match a stored row (a copy) gets that row's
   embedding, unencoded;
5. fills in the photo fields of rows that lack them (copies, merged shards, an index made before
   those fields existed) from the file headers, without decoding pixels.

Unless ``exact_preprocess``, large JPEGs are decoded at reduced size (libjpeg DCT scaling, see
:func:`clipforge.data.images.load_image`), keeping the shorter side at least twice the model's
input: the embeddings differ slightly from the reference preprocessing (docs/search.md gives the
measured cosine) and decoding a camera photo is about 4x cheaper.

Killing the process at any point loses at most the uncommitted batch: the next run sees those files
as new and finishes the job. Files that cannot be decoded are recorded with the reason and skipped
until they change.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.images import ImageDecodeError, decode_image, open_image
from ..data.photos import photo_info
from ..fileio import sha256_file
from ..inference import Encoder
from ..progress import progress_bar
from .binding import encoder_binding
from .protocol import Store
from .records import FileRow, NewRow, PhotoFields, SkipRow
from .scan import FileStat, FolderDiff, diff_folder, walk_images

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's default bomb limit


@dataclass
class IndexReport:
    """What one indexing run did."""

    root: str
    total: int = 0  # rows in the index afterwards
    added: int = 0  # newly embedded files
    reused: int = 0  # copies of stored content (embedding copied)
    renamed: int = 0  # moved files (row kept)
    touched: int = 0  # mtime changed, content not
    removed: int = 0  # rows of vanished files
    unchanged: int = 0
    skipped: list[SkipRow] = field(default_factory=list)  # all undecodable files (new and old)
    outside_links: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{self.total} images indexed from {self.root}: {self.added} embedded, "
            f"{self.reused} copies reused, {self.renamed} renamed, {self.touched} touched, "
            f"{self.removed} removed, {self.unchanged} unchanged, "
            f"{len(self.skipped)} skipped, {len(self.outside_links)} outside links not followed "
            f"({self.seconds:.1f} s)"
        )


class ImageFiles(Dataset):
    """Reads, hashes, decodes and preprocesses files in a worker; failures become records, not raises."""

    def __init__(
        self, root: str | Path, files: list[FileStat], transform, *, max_pixels: int, min_side: int | None = None
    ) -> None:
        self.root = Path(root)
        self.files = files
        self.transform = transform
        self.max_pixels = max_pixels
        self.min_side = min_side  # reduced-size JPEG decode down to this shorter side (None: full size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        f = self.files[i]
        item = {
            "path": f.path,
            "size": f.size,
            "mtime_ns": f.mtime_ns,
            "sha256": None,
            "info": None,
            "pixels": None,
            "error": None,
        }
        try:
            with open(self.root / f.path, "rb") as fh:
                st = os.fstat(fh.fileno())  # what we read is what we record
                data = fh.read()
            item.update(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=hashlib.sha256(data).hexdigest())
            label, handle = open_image(data, name=f.path, max_pixels=self.max_pixels)
            with handle:
                item["info"] = PhotoFields(*photo_info(handle, mtime_ns=st.st_mtime_ns))
                image = decode_image(handle, label, min_side=self.min_side)
            item["pixels"] = self.transform(image)  # (3, H, W)
        except Exception as e:  # any failure of one file is that file's skip reason
            reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
            item["error"] = str(reason)
        return item


def collate_items(items: list[dict]) -> tuple[list[dict], torch.Tensor | None]:
    """Keep the records; stack the pixels of the decodable ones → (B_ok, 3, H, W)."""
    ok = [it.pop("pixels") for it in items if it["pixels"] is not None]
    for it in items:
        it.pop("pixels", None)
    return items, (torch.stack(ok) if ok else None)


@dataclass(frozen=True)
class EmbedSettings:
    """How phase 4 decodes and encodes: DataLoader batches and workers, commit size, limits."""

    batch_size: int
    num_workers: int
    commit_every: int
    max_pixels: int
    min_side: int | None  # reduced-size JPEG decode down to this shorter side (None: full size)
    progress: bool


@dataclass
class Changes:
    """What hashing (phase 2) decided, for phase 3 to apply in one transaction and phase 4 to embed."""

    moves: list[tuple[int, FileStat]] = field(default_factory=list)  # (row id, new stat): kept rows
    copies: list[NewRow] = field(default_factory=list)  # new paths whose content is stored already
    to_embed: list[FileStat] = field(default_factory=list)  # files to decode and encode
    vanished: list[str] = field(default_factory=list)  # paths of rows whose file is gone
    touched: int = 0  # of ``moves``: same path, same bytes, new mtime
    renamed: int = 0  # of ``moves``: a gone row's bytes under a new path


@dataclass
class Embedded:
    """What phase 4 did: files encoded, and files whose bytes turned out to be stored already."""

    added: int = 0
    reused: int = 0


def index_folder(
    root: str | Path,
    store: Store,
    encoder: Encoder,
    *,
    rebuild: bool = False,
    dtype: str = "float32",
    batch_size: int = 32,
    num_workers: int | None = None,
    commit_every: int = 256,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    include_hidden: bool = False,
    exact_preprocess: bool = False,
    progress: bool = True,
) -> IndexReport:
    """Bring ``store`` up to date with the images under ``root`` (see the module docstring)."""
    t0 = time.perf_counter()
    root = Path(root).resolve()
    store.bind(**encoder_binding(encoder), root=root, dtype=dtype, rebuild=rebuild)
    # -- 1. list the folder and diff it against the store by (size, mtime) -----------------------
    listing = walk_images(root, include_hidden=include_hidden)
    stored = store.files()
    diff = diff_folder(listing.files, stored, store.skipped())
    changes = plan_changes(root, diff, stored, store, progress=progress)  # 2.
    apply_changes(store, changes, forget_skips=diff.skip_gone)  # 3.
    settings = EmbedSettings(
        batch_size=batch_size,
        num_workers=default_workers() if num_workers is None else num_workers,
        commit_every=commit_every,
        max_pixels=max_pixels,
        min_side=None if exact_preprocess else fast_decode_side(encoder.transform),
        progress=progress,
    )
    embedded = embed_files(root, changes.to_embed, store, encoder, settings)  # 4.
    fill_photo_info(store, root, max_pixels=max_pixels)  # 5.
    return IndexReport(
        str(root),
        total=store.count(),
        added=embedded.added,
        reused=len(changes.copies) + embedded.reused,
        renamed=changes.renamed,
        touched=changes.touched,
        removed=len(changes.vanished),
        unchanged=len(diff.unchanged),
        skipped=list(store.skipped().values()),
        outside_links=listing.outside_links,
        unreadable=listing.unreadable,
        seconds=time.perf_counter() - t0,
    )


def plan_changes(
    root: Path, diff: FolderDiff, stored: dict[str, FileRow], store: Store, *, progress: bool
) -> Changes:
    """Phase 2: hash the files whose content a stored row may already hold (changed paths, and new
    files with the size of a vanished row) and sort every changed or new file into a move (touched
    or renamed), a copy of stored content, or a file to embed."""
    gone_by_hash: dict[str, list[FileRow]] = {}
    for row in diff.gone:
        gone_by_hash.setdefault(row.sha256, []).append(row)
    gone_sizes = {row.size for row in diff.gone}
    changes = Changes()
    candidates = diff.changed + [f for f in diff.new if f.size in gone_sizes]
    known = {f.path for f in candidates}
    for f in progress_bar(candidates, desc="hashing", unit="file", enabled=progress and len(candidates) >= 100):
        try:
            digest = sha256_file(root / f.path)
        except OSError as e:
            log.warning("cannot read %s: %s", f.path, e)
            continue
        old = stored.get(f.path)
        if old is not None and old.sha256 == digest:  # touched: same bytes
            changes.moves.append((old.id, f))
            changes.touched += 1
        elif old is None and gone_by_hash.get(digest):  # renamed
            changes.moves.append((gone_by_hash[digest].pop().id, f))
            changes.renamed += 1
        elif (vector := store.embedding_of_hash(digest)) is not None:  # a copy of stored content
            changes.copies.append(NewRow(f.path, f.size, f.mtime_ns, digest, vector))
        else:
            changes.to_embed.append(f)
    changes.to_embed += [f for f in diff.new if f.path not in known]
    changes.to_embed.sort()
    moved_ids = {row_id for row_id, _ in changes.moves}
    changes.vanished = [row.path for row in diff.gone if row.id not in moved_ids]
    return changes


def apply_changes(store: Store, changes: Changes, *, forget_skips: list[str]) -> None:
    """Phase 3: moves, copies and deletions (and skip records of gone files), one transaction."""
    with store.transaction() as c:
        store.delete(c, changes.vanished)
        store.forget_skips(c, forget_skips)
        for row_id, f in changes.moves:
            store.move(c, row_id, path=f.path, size=f.size, mtime_ns=f.mtime_ns)
        store.insert(c, changes.copies)


def embed_files(
    root: Path, files: list[FileStat], store: Store, encoder: Encoder, settings: EmbedSettings
) -> Embedded:
    """Phase 4: decode ``files`` in DataLoader workers, encode them in batches while the workers
    decode the next ones, and commit every ``settings.commit_every`` rows."""
    embedded = Embedded()
    if not files:
        return embedded
    workers = settings.num_workers
    loader = DataLoader(
        ImageFiles(root, files, encoder.transform, max_pixels=settings.max_pixels, min_side=settings.min_side),
        batch_size=settings.batch_size,
        num_workers=workers,
        collate_fn=collate_items,
        pin_memory=encoder.device.type == "cuda",
        prefetch_factor=4 if workers else None,  # keep the model fed while files vary in size
    )
    pending: list[NewRow] = []
    skips: list[SkipRow] = []
    bar = progress_bar(total=len(files), desc="embedding", unit="img", enabled=settings.progress)
    for items, pixels in loader:
        rows, encoded = _embed_batch(items, pixels, store, encoder)
        pending += rows
        skips += _skip_rows(items)
        embedded.added += encoded
        embedded.reused += len(rows) - encoded
        bar.update(len(items))
        if len(pending) + len(skips) >= settings.commit_every:
            _commit(store, pending, skips)
    _commit(store, pending, skips)
    bar.close()
    return embedded


def _embed_batch(
    items: list[dict], pixels: torch.Tensor | None, store: Store, encoder: Encoder
) -> tuple[list[NewRow], int]:
    """The rows of a batch's decodable files, and how many of them were encoded (the others are
    copies of stored content and take the stored embedding)."""
    ok = [it for it in items if it["error"] is None]  # row i of ``pixels`` is ok[i]
    vectors = [store.embedding_of_hash(it["sha256"]) for it in ok]  # a copy: no encoding
    need = [i for i, v in enumerate(vectors) if v is None]
    if need:
        encoded = encoder.encode_pixels(pixels[need])  # (len(need), E)
        for i, vector in zip(need, encoded, strict=True):
            vectors[i] = vector
    rows = [
        NewRow(it["path"], it["size"], it["mtime_ns"], it["sha256"], vector, it["info"])
        for it, vector in zip(ok, vectors, strict=True)
    ]
    return rows, len(need)


def _skip_rows(items: list[dict]) -> list[SkipRow]:
    """The skip records of a batch's undecodable files (each logged)."""
    skips = []
    for it in items:
        if it["error"] is not None:
            log.warning("skipping %s: %s", it["path"], it["error"])
            skips.append(SkipRow(it["path"], it["size"], it["mtime_ns"], it["error"]))
    return skips


def default_workers() -> int:
    """Decoding processes: one per core, at most 4 (the model runs in the main process meanwhile)."""
    return max(1, min(4, os.cpu_count() or 1))


def fast_decode_side(transform) -> int | None:
    """The shorter side a reduced-size decode must keep: twice the model's input (None if unknown)."""
    size = getattr(transform, "image_size", None)
    return 2 * int(size) if size else None


def fill_photo_info(store: Store, root: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Read date, camera, size and type from the headers of rows that lack them; returns how many."""
    missing = store.rows_without_info()
    filled: list[tuple[int, PhotoFields]] = []
    for row in missing:
        try:
            label, handle = open_image(root / row.path, name=row.path, max_pixels=max_pixels)
            with handle:
                filled.append((row.id, PhotoFields(*photo_info(handle, mtime_ns=row.mtime_ns))))
        except (ImageDecodeError, OSError) as e:
            log.warning("cannot read the photo fields of %s: %s", row.path, e)
    if filled:
        with store.transaction() as c:
            for row_id, info in filled:
                store.set_info(c, row_id, info)
    return len(filled)


def _commit(store: Store, rows: list[NewRow], skips: list[SkipRow]) -> None:
    if not rows and not skips:
        return
    with store.transaction() as c:
        store.insert(c, rows)
        store.record_skips(c, skips)
    rows.clear()
    skips.clear()
