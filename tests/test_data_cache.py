"""Pre-decoded memmap cache: build, reuse, stale detection, equality with on-the-fly decoding."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from clipforge.config import PreprocessConfig
from clipforge.data import CachedPairs, Collator, build_cache, prepare_images
from clipforge.data.cache import ToUint8, read_manifest
from clipforge.data.images import load_image
from clipforge.data.transforms import image_transform, normalize_uint8

SIZE = 16


def noise_png(path: Path, seed: int, size: tuple[int, int] = (23, 31)) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    rows = []
    for i in range(7):
        noise_png(root / f"{i}.png", i, size=(23 + i, 31 - i))
        rows.append({"filepath": f"{i}.png", "title": [f"img {i} a", f"img {i} b"] if i % 2 else f"img {i}"})
    (root / "bad.png").write_bytes(b"not a png")
    rows.append({"filepath": "bad.png", "title": "corrupt"})
    rows.append({"filepath": "5.png", "title": ""})  # empty caption, skipped while loading
    (root / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root / "d.jsonl"


def test_cache_equals_on_the_fly_decoding(source: Path, tmp_path: Path) -> None:
    pre = PreprocessConfig()
    cache = build_cache(source, tmp_path / "cache", image_size=SIZE, preprocess=pre, num_workers=0)
    manifest = read_manifest(cache)
    assert manifest["count"] == 7 and manifest["shape"] == [7, SIZE, SIZE, 3]
    assert manifest["skipped"] == {"empty_caption": 1, "corrupt_image": 1}
    ds = CachedPairs(cache)
    assert len(ds) == 7 and sorted(s.reason for s in ds.load_skips) == ["corrupt_image", "empty_caption"]
    eval_transform = image_transform(pre, SIZE, train=False)
    for i in range(7):
        pixels, caption = ds[i]
        assert pixels.dtype == torch.uint8 and pixels.shape == (SIZE, SIZE, 3)
        assert caption.startswith(f"img {i}")
        img = load_image(source.parent / f"{i}.png")
        assert np.array_equal(pixels.numpy(), ToUint8(pre, SIZE)(img))
        on_the_fly = eval_transform(img)  # (3, H, W) normalised float
        from_cache = normalize_uint8(pixels[None], pre.mean, pre.std)[0]
        # uint8 storage rounds to the nearest level: at most half a level off (exact when the
        # transform resizes in uint8, as PIL does)
        half_level = 0.5 / 255 / min(pre.std) + 1e-5
        torch.testing.assert_close(from_cache, on_the_fly, atol=half_level, rtol=0)


def test_squash_mode_is_a_different_cache(source: Path, tmp_path: Path) -> None:
    shortest = build_cache(source, tmp_path / "a", image_size=SIZE, num_workers=0)
    squash = build_cache(
        source,
        tmp_path / "b",
        image_size=SIZE,
        preprocess=PreprocessConfig(resize_mode="squash"),
        num_workers=0,
    )
    a, b = CachedPairs(shortest)[0][0], CachedPairs(squash)[0][0]
    assert not torch.equal(a, b)
    assert read_manifest(squash)["fingerprint"] != read_manifest(shortest)["fingerprint"]


def test_fresh_cache_is_reused_and_stale_cache_rebuilt(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build_cache(source, cache, image_size=SIZE, num_workers=0)
    first = read_manifest(cache)
    manifest_mtime = (cache / "manifest.json").stat().st_mtime_ns
    build_cache(source, cache, image_size=SIZE, num_workers=0)
    assert (cache / "manifest.json").stat().st_mtime_ns == manifest_mtime  # reused, not rebuilt

    img0 = source.parent / "0.png"
    noise_png(img0, 1234, size=(23, 31))
    st = img0.stat()
    os.utime(img0, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    build_cache(source, cache, image_size=SIZE, num_workers=0)
    second = read_manifest(cache)
    assert second["fingerprint"] != first["fingerprint"]
    expected = ToUint8(PreprocessConfig(), SIZE)(load_image(img0))
    assert np.array_equal(CachedPairs(cache)[0][0].numpy(), expected)
    assert not (cache / first["images"]).exists()  # the stale data files are gone
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        ["manifest.json", second["images"], second["captions"]]
    )

    build_cache(source, cache, image_size=SIZE + 2, num_workers=0)  # other settings: rebuilt
    assert read_manifest(cache)["shape"] == [7, SIZE + 2, SIZE + 2, 3]


def test_parallel_build_matches_serial_build(source: Path, tmp_path: Path) -> None:
    serial = build_cache(source, tmp_path / "s", image_size=SIZE, num_workers=0)
    parallel = build_cache(source, tmp_path / "p", image_size=SIZE, num_workers=2, batch_size=2)
    a, b = CachedPairs(serial), CachedPairs(parallel)
    assert len(a) == len(b)
    for i in range(len(a)):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]


def test_cache_of_tar_shards(tmp_path: Path) -> None:
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tf:
        for k in range(3):
            noise_png(tmp_path / "tmp.png", k)
            for name, data in (
                (f"k{k}.png", (tmp_path / "tmp.png").read_bytes()),
                (f"k{k}.txt", f"cap {k}".encode()),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    cache = build_cache(shard, tmp_path / "cache", image_size=SIZE, num_workers=0)
    ds = CachedPairs(cache)
    assert sorted(ds[i][1] for i in range(len(ds))) == ["cap 0", "cap 1", "cap 2"]


def flipped(a: np.ndarray, flip: bool) -> np.ndarray:
    return a[:, ::-1] if flip else a


def test_crop_and_flip_on_uint8_are_deterministic(source: Path, tmp_path: Path) -> None:
    cache = build_cache(source, tmp_path / "cache", image_size=SIZE, num_workers=0)
    full = CachedPairs(cache)[3][0].numpy()
    centre = CachedPairs(cache, crop_size=12)[3][0].numpy()
    assert np.array_equal(centre, full[2:14, 2:14])
    aug = CachedPairs(cache, crop_size=12, random_crop=True, flip=True, seed=1)
    crops = []
    for epoch in range(12):
        aug.set_epoch(epoch)
        x = aug[3][0].numpy()
        assert x.shape == (12, 12, 3) and x.dtype == np.uint8
        assert np.array_equal(x, aug[3][0].numpy())  # same epoch, same crop
        found = [
            (top, left, f)
            for top in range(5)
            for left in range(5)
            for f in (False, True)
            if np.array_equal(x, flipped(full[top : top + 12, left : left + 12], f))
        ]
        assert found, "an augmented image must be a crop (maybe flipped) of the cached one"
        crops.append(found[0])
    assert len(set(crops)) > 3 and {f for _, _, f in crops} == {False, True}
    with pytest.raises(ValueError, match="larger than the cached"):
        CachedPairs(cache, crop_size=SIZE + 1)


def test_cached_batches_through_a_dataloader(source: Path, tmp_path: Path) -> None:
    cache = build_cache(source, tmp_path / "cache", image_size=SIZE, num_workers=0)
    ds = CachedPairs(cache)
    tok = lambda texts: torch.zeros(len(texts), 3, dtype=torch.long)
    batches = list(DataLoader(ds, batch_size=4, num_workers=2, collate_fn=Collator(tok)))
    assert [len(b) for b in batches] == [4, 3]
    assert batches[0].images.dtype == torch.uint8 and batches[0].images.shape == (4, SIZE, SIZE, 3)
    x = prepare_images(batches[0].images, mean=(0.5,) * 3, std=(0.5,) * 3, device="cpu")
    assert x.shape == (4, 3, SIZE, SIZE) and x.min() >= -1 and x.max() <= 1


def test_not_a_cache_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no clipforge cache"):
        CachedPairs(tmp_path)
