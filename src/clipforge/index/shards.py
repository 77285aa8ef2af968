"""Scale-out embedding: each process embeds its slice of a folder into shard files; a merge loads them.

Under ``torchrun`` (or any launcher that sets ``RANK`` and ``WORLD_SIZE``), :func:`embed_shards`
lists the folder (the same sorted listing on every process, so no communication is needed), takes
every ``world_size``-th file starting at ``rank``, and writes its embeddings in parts of
``part_size`` images: ``part-w{W}-r{R}-{J}.npy`` ((n, E) float16/float32) plus a ``.json`` with the
model id, root, and per row the path, size, mtime and SHA-256 (and the files it skipped). The JSON
is written last, atomically: a part with its JSON is complete. A re-run skips parts already done for
the same model and files, so a killed job resumes. :func:`merge_shards` adds all parts of a
directory to an index database (``clipforge index --from-embeddings DIR``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from ..fileio import atomic_write, sweep_temporaries
from ..inference import Encoder
from ..progress import progress_bar
from .binding import encoder_binding
from .indexer import DEFAULT_MAX_PIXELS, ImageFiles, collate_items
from .protocol import Store
from .records import NewRow, SkipRow
from .scan import FileStat, walk_images

log = logging.getLogger(__name__)

SHARD_FORMAT = "clipforge.embeddings/1"


@dataclass
class MergeReport:
    parts: int = 0
    added: int = 0
    unchanged: int = 0
    skipped: list[SkipRow] = field(default_factory=list)


def _part_name(world_size: int, rank: int, part: int) -> str:
    return f"part-w{world_size:05d}-r{rank:05d}-{part:06d}"


def _describe(files: list[FileStat]) -> list[list]:
    return [[f.path, f.size, f.mtime_ns] for f in files]


def embed_shards(
    root: str | Path,
    encoder: Encoder,
    out_dir: str | Path,
    *,
    rank: int = 0,
    world_size: int = 1,
    part_size: int = 50_000,
    dtype: str = "float16",
    batch_size: int = 32,
    num_workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    include_hidden: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Embed this rank's slice of ``root`` into ``out_dir``; returns the part JSON paths."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, got {dtype!r}")
    root = Path(root).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # parts of a killed run: its temporaries (other ranks' live ones are younger than a minute)
    sweep_temporaries(out_dir, older_than_s=60.0)
    mine = walk_images(root, include_hidden=include_hidden).files[rank::world_size]
    workers = min(4, os.cpu_count() or 1) if num_workers is None else num_workers
    written = []
    bar = progress_bar(total=len(mine), desc=f"embed rank {rank}", unit="img", enabled=progress)
    for part, start in enumerate(range(0, len(mine), part_size)):
        files = mine[start : start + part_size]
        meta_path = out_dir / (_part_name(world_size, rank, part) + ".json")
        if _part_done(meta_path, encoder.model_id, root, files):
            bar.update(len(files))
            written.append(meta_path)
            continue
        rows, vectors, skipped = [], [], []
        loader = DataLoader(
            ImageFiles(root, files, encoder.transform, max_pixels=max_pixels),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=collate_items,
        )
        for items, pixels in loader:
            ok = [it for it in items if it["error"] is None]
            if ok:
                vectors.append(encoder.encode_pixels(pixels))  # (B_ok, E)
                rows += [[it["path"], it["size"], it["mtime_ns"], it["sha256"]] for it in ok]
            skipped += [[it["path"], it["size"], it["mtime_ns"], it["error"]] for it in items if it["error"]]
            bar.update(len(items))
        matrix = np.concatenate(vectors) if vectors else np.zeros((0, encoder.embed_dim), np.float32)
        npy_path = meta_path.with_suffix(".npy")
        atomic_write(npy_path, lambda tmp, m=matrix: _save_npy(tmp, m.astype(dtype)))
        meta = {
            "format": SHARD_FORMAT,
            **encoder_binding(encoder),  # so that `search` finds the model of a merged index, and encodes alike
            "dtype": dtype,
            "root": str(root),
            "rank": rank,
            "world_size": world_size,
            "part": part,
            "files": _describe(files),
            "rows": rows,
            "skipped": skipped,
        }
        atomic_write(meta_path, lambda tmp, m=meta: Path(tmp).write_text(json.dumps(m)))
        written.append(meta_path)
    bar.close()
    return written


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a path
        np.save(f, array)


def _part_done(meta_path: Path, model_id: str, root: Path, files: list[FileStat]) -> bool:
    if not meta_path.is_file() or not meta_path.with_suffix(".npy").is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    return (
        meta.get("model_id") == model_id
        and meta.get("root") == str(root)
        and meta.get("files") == _describe(files)
    )


def read_part(meta_path: str | Path) -> tuple[dict, np.ndarray]:
    """One part's metadata and (n, E) float32 embeddings, checked against each other."""
    meta_path = Path(meta_path)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{meta_path}: unreadable shard metadata ({e})") from e
    if meta.get("format") != SHARD_FORMAT:
        raise ValueError(f"{meta_path}: not a clipforge embeddings shard (format {meta.get('format')!r})")
    vectors = np.load(meta_path.with_suffix(".npy"), allow_pickle=False).astype(np.float32)
    if vectors.shape != (len(meta["rows"]), meta["embed_dim"]):
        raise ValueError(
            f"{meta_path}: {vectors.shape} embeddings for {len(meta['rows'])} rows "
            f"of dimension {meta['embed_dim']}"
        )
    return meta, vectors


def merge_shards(
    store: Store,
    shard_dir: str | Path,
    *,
    model_id: str | None = None,
    rebuild: bool = False,
    commit_every: int = 10_000,
) -> MergeReport:
    """Add every part in ``shard_dir`` to ``store`` (one model and root for all parts; rows already
    stored with the same content are left alone)."""
    parts = sorted(Path(shard_dir).glob("part-*.json"))
    if not parts:
        raise FileNotFoundError(f"{shard_dir}: no embedding shards (part-*.json) found")
    report = MergeReport(parts=len(parts))
    first, _ = read_part(parts[0])
    if model_id is not None and first["model_id"] != model_id:
        raise ValueError(f"{parts[0]}: embedded with model {first['model_id']}, not {model_id}")
    store.bind(
        model_id=first["model_id"],
        embed_dim=first["embed_dim"],
        root=first["root"],
        dtype="float32" if first["dtype"] == "float32" else "float16",
        model_name=first.get("model_name", ""),
        model_path=first.get("model_path", ""),
        precision=first.get("precision", ""),
        backend=first.get("backend", ""),
        rebuild=rebuild,
    )
    existing = store.files()
    pending: list[NewRow] = []
    for path in parts:
        meta, vectors = read_part(path)
        for key in ("model_id", "root", "embed_dim"):
            if meta[key] != first[key]:
                raise ValueError(f"{path}: {key} {meta[key]!r} differs from {parts[0].name}'s {first[key]!r}")
        for (rel, size, mtime_ns, sha), vector in zip(meta["rows"], vectors, strict=True):
            row = existing.get(rel)
            if row is not None and (row.size, row.mtime_ns, row.sha256) == (size, mtime_ns, sha):
                report.unchanged += 1
                continue
            pending.append(NewRow(rel, size, mtime_ns, sha, vector))
            if len(pending) >= commit_every:
                report.added += _flush(store, pending)
        skips = [SkipRow(*s) for s in meta["skipped"]]
        report.skipped += skips
        with store.transaction() as c:
            store.record_skips(c, skips)
    report.added += _flush(store, pending)
    return report


def _flush(store: Store, rows: list[NewRow]) -> int:
    n = len(rows)
    if rows:
        with store.transaction() as c:
            store.insert(c, rows)
        rows.clear()
    return n
