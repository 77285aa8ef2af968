"""Recipe data components: several captions per image (one per epoch, all over the epochs),
caption-safe image augmentation, tag/word augmentation, SimCLR views."""

from __future__ import annotations

import colorsys
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.data import CachedPairs, build_cache, build_dataset, read_csv, read_jsonl
from clipforge.data.augment import AugmentedPairs, PairAugment, jitter_colour, mentions_direction, resized_crop_uint8
from clipforge.data.captions import caption_list, cycle_caption
from clipforge.data.seeding import seed_all
from clipforge.data.text_augment import augment_caption
from clipforge.data.views import two_views
from clipforge.data.webdataset import TarShards


def _png(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (12, 14, 3), dtype=np.uint8)).save(path)


def _captions_over_epochs(dataset, index: int, epochs: int) -> list[str]:
    seen = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        seen.append(dataset[index][1])
    return seen


def test_cycle_caption_covers_every_caption_each_cycle_and_changes() -> None:
    caps = [f"caption {i}" for i in range(5)]
    for index in range(20):
        picks = [cycle_caption(caps, seed=3, epoch=e, index=index) for e in range(15)]
        for cycle in range(3):
            assert sorted(picks[5 * cycle : 5 * cycle + 5]) == sorted(caps)  # every caption once per 5 epochs
        assert len(set(picks[:2])) == 2  # consecutive epochs see different captions
    assert cycle_caption(caps, seed=3, epoch=7, index=4) == cycle_caption(caps, seed=3, epoch=7, index=4)
    orders = {tuple(cycle_caption(caps, seed=s, epoch=e, index=0) for e in range(5)) for s in range(10)}
    assert len(orders) > 1  # shuffled per seed, not a fixed rotation


def test_caption_list_cells() -> None:
    assert caption_list('["a dog", "a puppy"]') == ["a dog", "a puppy"]
    assert caption_list("[not json") == "[not json"
    assert caption_list("[1, 2]") == "[1, 2]"
    assert caption_list("a plain caption") == "a plain caption"


def test_csv_list_cells_and_grouped_rows(tmp_path: Path) -> None:
    for i in range(3):
        _png(tmp_path / f"{i}.png", i)
    (tmp_path / "pairs.csv").write_text(
        'filepath,title\n0.png,"[""zero a"", ""zero b"", ""zero c""]"\n1.png,one a\n1.png,one b\n2.png,two\n'
    )
    plain = read_csv(tmp_path / "pairs.csv", transform=None)
    assert len(plain) == 4  # without the flag: one pair per row, the list cell read as text
    assert plain[0][1] == '["zero a", "zero b", "zero c"]'
    sampled = read_csv(tmp_path / "pairs.csv", transform=None, sample_captions=True)
    assert len(sampled) == 3  # rows naming 1.png are one image
    assert sorted(_captions_over_epochs(sampled, 0, 3)) == ["zero a", "zero b", "zero c"]
    assert sorted(_captions_over_epochs(sampled, 1, 2)) == ["one a", "one b"]
    assert _captions_over_epochs(sampled, 2, 3) == ["two"] * 3


def test_jsonl_lists_and_grouped_lines(tmp_path: Path) -> None:
    for i in range(2):
        _png(tmp_path / f"{i}.png", i)
    lines = [
        {"filepath": "0.png", "title": ["a", "b", "c", "d"]},
        {"filepath": "1.png", "title": "x"},
        {"filepath": "1.png", "title": ["y", "z"]},
    ]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    assert len(read_jsonl(tmp_path / "p.jsonl", transform=None)) == 3
    ds = build_dataset(tmp_path / "p.jsonl", transform=None, sample_captions=True)
    assert len(ds) == 2
    assert sorted(_captions_over_epochs(ds, 0, 4)) == ["a", "b", "c", "d"]
    assert sorted(_captions_over_epochs(ds, 1, 3)) == ["x", "y", "z"]


def test_webdataset_several_captions(tmp_path: Path) -> None:
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tf:
        for name, data in [("k0.png", None), ("k0.txt", b"one\ntwo\nthree\n")]:
            if data is None:
                buf = io.BytesIO()
                Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, format="PNG")
                data = buf.getvalue()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    ds = TarShards([str(shard)], transform=None, sample_captions=True)
    seen = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        seen += [caption for _, caption in ds]
    assert sorted(seen) == ["one", "three", "two"]
    ds.augment = PairAugment("none", text_dropout=0.9)  # the run's augmentation, after the caption is picked
    ds.set_epoch(0)
    assert [c for _, c in ds][0] in ("one", "two", "three")


def test_cache_with_sample_captions(tmp_path: Path) -> None:
    for i in range(2):
        _png(tmp_path / f"{i}.png", i)
    (tmp_path / "pairs.csv").write_text('filepath,title\n0.png,"[""p"", ""q""]"\n1.png,r\n1.png,s\n')
    build_cache(tmp_path / "pairs.csv", tmp_path / "c", image_size=8, num_workers=0, progress=False,
                sample_captions=True)
    cached = CachedPairs(tmp_path / "c", sample_captions=True)
    assert len(cached) == 2
    assert sorted(_captions_over_epochs(cached, 0, 2)) == ["p", "q"]
    assert sorted(_captions_over_epochs(cached, 1, 2)) == ["r", "s"]


def test_direction_words() -> None:
    assert mentions_direction("a dog on the LEFT of a cat")
    assert mentions_direction("the rightmost car")
    assert mentions_direction("turning counter-clockwise")
    assert not mentions_direction("a red car on a bridge")


def _asymmetric() -> torch.Tensor:
    img = torch.zeros(16, 16, 3, dtype=torch.uint8)
    img[:, :8] = torch.tensor([200, 30, 30], dtype=torch.uint8)  # red on the left half
    img[:, 8:] = torch.tensor([30, 30, 200], dtype=torch.uint8)  # blue on the right half
    return img


def _flipped(out: torch.Tensor) -> bool:
    return bool(out[:, 0, 2].float().mean() > out[:, 0, 0].float().mean())  # blue now on the left


@pytest.mark.parametrize("level", ["light", "strong"])
def test_flip_never_contradicts_left_right_captions(level: str) -> None:
    aug = PairAugment(level)
    flips_left = flips_plain = 0
    for seed in range(60):
        seed_all(seed, 0, 0)
        out, cap = aug(_asymmetric(), "a red square on the left")
        flips_left += _flipped(out)
        assert cap == "a red square on the left"
        seed_all(seed, 0, 0)
        flips_plain += _flipped(aug(_asymmetric(), "a red and a blue square")[0])
    assert flips_left == 0
    assert 15 < flips_plain < 45  # about half of the others are flipped


def test_augmentation_is_deterministic_per_seed_and_off_by_default() -> None:
    img = torch.randint(0, 256, (20, 20, 3), dtype=torch.uint8)
    aug = PairAugment("strong", crop_size=16)
    seed_all(1, 2, 3)
    a = aug(img, "x")[0]
    seed_all(1, 2, 3)
    b = aug(img, "x")[0]
    assert torch.equal(a, b) and a.shape == (16, 16, 3) and a.dtype == torch.uint8
    none = PairAugment("none")
    assert not none.active and none(img, "x")[0] is img


def test_resized_crop_uint8_keeps_a_constant_image() -> None:
    img = torch.full((20, 30, 3), 77, dtype=torch.uint8)
    out = resized_crop_uint8(img, size=16, scale=(0.7, 1.0), ratio=(0.75, 4 / 3))
    assert out.shape == (16, 16, 3) and bool((out == 77).all())


def test_colour_jitter_keeps_hue() -> None:
    colours = torch.tensor([[180, 40, 40], [40, 150, 60], [50, 60, 170], [160, 140, 30], [120, 50, 140]])
    img = colours.to(torch.uint8).view(1, 5, 3).expand(4, 5, 3).contiguous()
    out = jitter_colour(img, brightness=1.15, contrast=0.85, saturation=1.2)
    for before, after in zip(img[0], out[0], strict=True):
        h0 = colorsys.rgb_to_hsv(*(before.float() / 255).tolist())[0]
        h1 = colorsys.rgb_to_hsv(*(after.float() / 255).tolist())[0]
        assert abs(h0 - h1) < 0.02, (before, after)


def test_tag_and_word_augmentation() -> None:
    tags = "dog, beach, sunset, sand, waves"
    outs = set()
    for seed in range(40):
        seed_all(seed)
        out = augment_caption(tags, dropout=0.0, shuffle_tags=True)
        assert sorted(out.split(", ")) == sorted(tags.split(", "))  # shuffled, none lost
        outs.add(out)
    assert len(outs) > 5
    for seed in range(40):
        seed_all(seed)
        kept = augment_caption(tags, dropout=0.99)
        assert kept and set(kept.split(", ")) <= set(tags.split(", "))  # never empty
        seed_all(seed)
        words = augment_caption("a small red square", dropout=0.5, shuffle_tags=True)
        assert words and all(w in "a small red square".split() for w in words.split())
        # sentences keep their word order
        order = [ "a small red square".split().index(w) for w in words.split()]
        assert order == sorted(order)


def test_augmented_pairs_passes_skips_and_augments_text() -> None:
    from clipforge.data.skips import Skip

    class Two(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return Skip("missing image", "x") if i else (torch.zeros(4, 4, 3, dtype=torch.uint8), "a, b, c")

    ds = AugmentedPairs(Two(), PairAugment("none", shuffle_tags=True))
    assert isinstance(ds[1], Skip)
    assert sorted(ds[0][1].split(", ")) == ["a", "b", "c"]


def test_simclr_views_are_seeded_and_differ() -> None:
    images = torch.randn(4, 3, 16, 16)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    a1, a2 = two_views(images, mean=mean, std=std, generator=torch.Generator().manual_seed(0))
    b1, _ = two_views(images, mean=mean, std=std, generator=torch.Generator().manual_seed(0))
    assert a1.shape == images.shape and torch.equal(a1, b1)
    assert not torch.allclose(a1, a2)
