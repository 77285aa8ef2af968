"""Pair sources state their capabilities through the protocols of ``clipforge.data.protocols``;
the shapes data comes through ``build_dataset`` like every other source."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from clipforge.data import SHAPES_SOURCE, CachedPairs, ShapesDataset, ShapesSpec, build_dataset, shapes_split
from clipforge.data.cache import build_cache
from clipforge.data.protocols import (
    CaptionSource,
    Epochal,
    FileBacked,
    KeyedByImage,
    ReportsLoadSkips,
    Resumable,
    load_skips_of,
)
from clipforge.data.shapes import shapes_attributes, shapes_caption
from clipforge.train.setup import training_captions

CAPABILITIES = (Epochal, Resumable, FileBacked, ReportsLoadSkips, KeyedByImage, CaptionSource)


def _png(path: Path, color: tuple[int, int, int]) -> Path:
    Image.new("RGB", (8, 8), color).save(path)
    return path


def _csv(tmp_path: Path) -> Path:
    _png(tmp_path / "a.png", (255, 0, 0))
    _png(tmp_path / "b.png", (0, 0, 255))
    f = tmp_path / "pairs.csv"
    f.write_text("filepath,title\na.png,a red square\nb.png,\nb.png,a blue square\n")
    return f


def _tar(tmp_path: Path) -> Path:
    path = tmp_path / "shard-0.tar"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 255, 0)).save(buf, format="PNG")
    with tarfile.open(path, "w") as tar:
        for name, data in (("k0.png", buf.getvalue()), ("k0.txt", b"a green square")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _capabilities(dataset: object) -> set[str]:
    return {p.__name__ for p in CAPABILITIES if isinstance(dataset, p)}


def test_each_source_states_exactly_its_capabilities(tmp_path: Path) -> None:
    pairs = build_dataset(_csv(tmp_path), transform=None)
    assert _capabilities(pairs) == {"Epochal", "FileBacked", "ReportsLoadSkips", "KeyedByImage"}
    assert [s.reason for s in load_skips_of(pairs)] == ["empty_caption"]  # the row with no caption

    shards = build_dataset(_tar(tmp_path), transform=None)
    assert _capabilities(shards) == {"Epochal", "Resumable", "FileBacked", "ReportsLoadSkips"}

    shapes = build_dataset("shapes:val", transform=None)
    assert _capabilities(shapes) == {"Epochal", "CaptionSource", "ReportsLoadSkips"}
    assert load_skips_of(shapes) == [] and load_skips_of(object()) == []


def test_shapes_source_names_and_spec() -> None:
    assert shapes_split(SHAPES_SOURCE) == "train" and shapes_split("shapes:heldout") == "heldout"
    assert shapes_split("shapes.csv") is None and shapes_split("my_shapes:val") is None
    bare = build_dataset("shapes", transform=None, seed=3)
    assert isinstance(bare, ShapesDataset) and bare.split == "train" and bare.spec.seed == 3
    spec = ShapesSpec(image_size=48, n_val=5)
    sized = build_dataset("shapes:val", transform=None, seed=3, shapes=spec)
    assert sized.spec is spec and len(sized) == 5 and sized[0][0].size == (48, 48)
    with pytest.raises(ValueError, match="split"):
        build_dataset("shapes:nope", transform=None)


def test_shapes_captions_without_drawing_match_the_items() -> None:
    ds = ShapesDataset("val", spec=ShapesSpec(n_val=6))
    listed = list(ds.captions(4))
    assert listed == [ds[i][1] for i in range(4)]
    assert listed[1] == shapes_caption(shapes_attributes(1, split="val", spec=ds.spec), 1, split="val", spec=ds.spec)
    assert len(list(ds.captions(100))) == 6
    assert list(training_captions(ds, limit=3)) == listed[:3]


def test_cache_reads_files_and_load_skips_through_the_protocols(tmp_path: Path) -> None:
    cache = build_cache(_csv(tmp_path), tmp_path / "cache", image_size=8, num_workers=0, progress=False)
    cached = CachedPairs(cache)
    assert isinstance(cached, Epochal) and isinstance(cached, ReportsLoadSkips)
    assert [s.reason for s in load_skips_of(cached)] == ["empty_caption"]
    assert len(cached) == 2
