"""Pair datasets: CSV/TSV, JSONL, folders, tar shards; bad rows and bad images are skipped and counted."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.data import build_dataset, describe_source, read_csv, read_jsonl
from clipforge.data.captions import clean_captions, pick_caption
from clipforge.data.shard_io import expand_braces
from clipforge.data.skips import Skip
from clipforge.data.webdataset import TarShards, assign_shards, list_shards, split_key


def to_tensor(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img.convert("RGB").resize((8, 8)))  # (8, 8, 3)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, color: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(color))
    return path


def reasons(skips: list[Skip]) -> list[str]:
    return [s.reason for s in skips]


# ---------------------------------------------------------------- CSV / TSV


def test_csv_pairs_with_paths_relative_to_the_csv(tmp_path: Path) -> None:
    write_png(tmp_path / "imgs" / "a.png", (255, 0, 0))
    write_png(tmp_path / "imgs" / "b.png", (0, 0, 255))
    (tmp_path / "data.csv").write_text('filepath,title\nimgs/a.png,a red square\nimgs/b.png,"blue, very blue"\n')
    ds = build_dataset(tmp_path / "data.csv", transform=to_tensor)
    assert len(ds) == 2 and ds.load_skips == []
    img, cap = ds[0]
    assert img.shape == (3, 8, 8) and cap == "a red square"
    assert torch.allclose(img[0], torch.ones(8, 8)) and img[2].max() == 0
    assert ds[1][1] == "blue, very blue"


def test_tsv_delimiter_from_extension_and_custom_keys(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png", (0, 255, 0))
    (tmp_path / "d.tsv").write_text("id\timg\tcap\n1\tx.png\tgreen, with a comma\n")
    ds = build_dataset(tmp_path / "d.tsv", transform=to_tensor, image_key="img", caption_key="cap")
    assert len(ds) == 1 and ds[0][1] == "green, with a comma"


def test_csv_explicit_delimiter(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png", (0, 255, 0))
    (tmp_path / "d.csv").write_text("filepath|title\nx.png|piped\n")
    ds = read_csv(tmp_path / "d.csv", transform=to_tensor, delimiter="|")
    assert ds[0][1] == "piped"


def test_csv_without_the_column_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "d.csv").write_text("path,caption\nx.png,hello\n")
    with pytest.raises(ValueError, match=r"d\.csv.*'filepath'.*columns are \['path', 'caption'\]"):
        build_dataset(tmp_path / "d.csv", transform=to_tensor)


def test_csv_malformed_rows_are_skipped_and_counted_with_file_line(tmp_path: Path) -> None:
    write_png(tmp_path / "ok.png", (1, 2, 3))
    csv_text = (
        "filepath,title\n"
        "ok.png,fine\n"  # line 2
        "ok.png\n"  # line 3: missing column
        "ok.png,   \n"  # line 4: empty caption
        ",no image\n"  # line 5: empty path
        "ok.png,also fine\n"  # line 6
    )
    (tmp_path / "d.csv").write_text(csv_text)
    ds = build_dataset(tmp_path / "d.csv", transform=to_tensor)
    assert len(ds) == 2
    assert reasons(ds.load_skips) == ["malformed_row", "empty_caption", "malformed_row"]
    assert [s.where for s in ds.load_skips] == [f"{tmp_path / 'd.csv'}:{n}" for n in (3, 4, 5)]


def test_bad_images_are_skips_not_crashes(tmp_path: Path) -> None:
    write_png(tmp_path / "ok.png", (10, 20, 30))
    (tmp_path / "corrupt.png").write_bytes(b"this is not an image at all")
    (tmp_path / "truncated.png").write_bytes(png_bytes((5, 5, 5), size=(64, 64))[:60])
    (tmp_path / "d.csv").write_text(
        "filepath,title\nok.png,good\ncorrupt.png,bad bytes\nmissing.png,gone\ntruncated.png,cut short\n"
    )
    ds = build_dataset(tmp_path / "d.csv", transform=to_tensor)
    out = [ds[i] for i in range(len(ds))]
    assert isinstance(out[0], tuple)
    assert [s.reason for s in out[1:]] == ["corrupt_image", "missing_image", "corrupt_image"]
    assert out[2].where == f"{tmp_path / 'd.csv'}:4"


# ---------------------------------------------------------------- JSONL


def test_jsonl_strings_lists_and_bad_lines(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", (9, 9, 9))
    lines = [
        json.dumps({"filepath": "a.png", "title": "one caption"}),  # 1
        json.dumps({"filepath": "a.png", "title": ["first", "second", ""]}),  # 2
        '{"filepath": "a.png", "title": "unterminated',  # 3 malformed json
        json.dumps(["not", "an", "object"]),  # 4
        json.dumps({"filepath": "a.png"}),  # 5 missing key
        json.dumps({"filepath": "a.png", "title": 42}),  # 6 not text
        json.dumps({"filepath": "a.png", "title": []}),  # 7 empty list
        "",  # blank lines are fine
        json.dumps({"filepath": "a.png", "title": "last"}),  # 9
    ]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    ds = build_dataset(tmp_path / "d.jsonl", transform=to_tensor)
    assert len(ds) == 3
    assert reasons(ds.load_skips) == [
        "malformed_json",
        "malformed_row",
        "malformed_row",
        "bad_caption",
        "empty_caption",
    ]
    assert [s.where.rsplit(":", 1)[1] for s in ds.load_skips] == ["3", "4", "5", "6", "7"]
    assert ds[1][1] in ("first", "second")
    all_caps = read_jsonl(tmp_path / "d.jsonl", transform=None, all_captions=True)
    assert all_caps[1][1] == ["first", "second"] and isinstance(all_caps[1][0], Image.Image)


def test_caption_choice_is_deterministic_per_seed_epoch_index(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", (9, 9, 9))
    caps = [f"caption {k}" for k in range(5)]
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"filepath": "a.png", "title": caps}) + "\n" for _ in range(20))
    )

    def captions(seed: int, epoch: int) -> list[str]:
        ds = read_jsonl(tmp_path / "d.jsonl", transform=to_tensor, seed=seed)
        ds.set_epoch(epoch)
        return [ds[i][1] for i in range(len(ds))]

    assert captions(0, 0) == captions(0, 0)
    assert captions(0, 0) != captions(0, 1)
    assert captions(0, 0) != captions(1, 0)
    assert len(set(captions(0, 0))) > 1  # different images pick different captions
    seen = {pick_caption(caps, seed=3, epoch=e, index=7) for e in range(50)}
    assert seen == set(caps)  # over epochs, every caption gets used


def test_clean_captions() -> None:
    assert clean_captions("  a  red\tcar ") == ["a red car"]
    assert clean_captions("one\n\n two \n", split_lines=True) == ["one", "two"]
    assert clean_captions("one\ntwo") == ["one two"]
    assert clean_captions("   ") == "empty_caption"
    assert clean_captions(3.5) == "bad_caption"
    assert clean_captions(["a", 1]) == "bad_caption"
    assert clean_captions({"caption": "x"}) == "bad_caption"


# ---------------------------------------------------------------- folders


def test_folder_of_images_with_txt_captions(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", (1, 1, 1))
    (tmp_path / "a.txt").write_text("a dark square\n")
    write_png(tmp_path / "sub" / "deep" / "b.jpg.png", (2, 2, 2))
    (tmp_path / "sub" / "deep" / "b.jpg.txt").write_text("first line\n\nsecond line\n")
    write_png(tmp_path / "sub" / "nocap.png", (3, 3, 3))  # no caption file
    write_png(tmp_path / "empty.png", (4, 4, 4))
    (tmp_path / "empty.txt").write_text("  \n")
    write_png(tmp_path / "latin.png", (5, 5, 5))
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9")  # not UTF-8
    (tmp_path / "notes.md").write_text("ignored")
    ds = build_dataset(tmp_path, transform=to_tensor)
    assert describe_source(tmp_path) == "folder"
    assert reasons(ds.load_skips) == ["missing_caption"]
    by_name = {ds.image_path(i).name: ds[i] for i in range(len(ds))}
    assert set(by_name) == {"a.png", "b.jpg.png", "empty.png", "latin.png"}
    assert by_name["a.png"][1] == "a dark square"
    assert by_name["b.jpg.png"][1] in ("first line", "second line")
    assert by_name["empty.png"].reason == "empty_caption"
    assert by_name["latin.png"].reason == "bad_caption"


# ---------------------------------------------------------------- tar shards


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def sample_members(key: str, caption: str = "", color: tuple[int, int, int] = (0, 0, 0)) -> list[tuple[str, bytes]]:
    return [(f"{key}.png", png_bytes(color)), (f"{key}.txt", (caption or f"caption of {key}").encode())]


def collect(ds) -> list:
    return list(iter(ds))


def test_tar_samples_grouped_by_key_with_txt_and_json_captions(tmp_path: Path) -> None:
    members = [
        *sample_members("000/a", "plain text"),
        ("000/b.jpg", png_bytes((255, 0, 0))),
        ("000/b.json", json.dumps({"caption": "from json"}).encode()),
        ("c.webp.png", png_bytes((0, 255, 0))),  # key "c", extension "webp.png" is not an image ext
        ("c.txt", b"no usable image"),
        ("d.png", png_bytes((0, 0, 255))),
        ("d.json", json.dumps({"text": ["t1", "t2"]}).encode()),
        ("e.png", b"corrupt image bytes"),
        ("e.txt", b"caption"),
        ("f.png", png_bytes((1, 1, 1))),  # no caption
        ("g.png", png_bytes((1, 1, 1))),
        ("g.json", b"{not json"),
        ("h.png", png_bytes((1, 1, 1))),
        ("h.json", json.dumps({"url": "x"}).encode()),
        ("i.png", png_bytes((1, 1, 1))),
        ("i.txt", b"\n  \n"),
    ]
    shard = write_tar(tmp_path / "s.tar", members)
    ds = build_dataset(shard, transform=to_tensor, shuffle_buffer=0)
    assert isinstance(ds, TarShards)
    out = collect(ds)
    good = [s for s in out if not isinstance(s, Skip)]
    assert [c for _, c in good[:2]] == ["plain text", "from json"]
    assert good[2][1] in ("t1", "t2") and len(good) == 3
    assert good[1][0].shape == (3, 8, 8) and good[1][0][0].min() == 1.0
    bad = {s.where.rsplit(":", 1)[1].split(".")[0]: s.reason for s in out if isinstance(s, Skip)}
    assert bad == {
        "c": "missing_image",
        "e": "corrupt_image",
        "f": "missing_caption",
        "g": "malformed_json",
        "h": "missing_caption",
        "i": "empty_caption",
    }


def test_truncated_tar_yields_what_came_before_and_counts_the_break(tmp_path: Path) -> None:
    members = [m for k in range(4) for m in sample_members(f"k{k}")]
    members[-2] = ("k3.png", png_bytes((7, 7, 7), size=(200, 200)))  # big member, cut in half
    raw = write_tar(tmp_path / "full.tar", members).read_bytes()
    cut = raw.index(b"k3.png") + 512 + 300
    (tmp_path / "cut.tar").write_bytes(raw[:cut])
    out = collect(TarShards([tmp_path / "cut.tar"], transform=to_tensor))
    assert [s[1] for s in out[:3]] == ["caption of k0", "caption of k1", "caption of k2"]
    assert len(out) == 4 and out[3].reason == "truncated_shard"


def test_missing_shard_is_a_skip_not_a_crash(tmp_path: Path) -> None:
    write_tar(tmp_path / "s0.tar", sample_members("a"))
    (tmp_path / "s1.tar").write_bytes(b"")  # exists, but not a tar
    ds = build_dataset(f"{tmp_path}/s{{0..2}}.tar", transform=to_tensor, shuffle_buffer=0)
    out = collect(ds)
    assert sorted(s.reason for s in out if isinstance(s, Skip)) == ["missing_shard", "truncated_shard"]
    assert sum(not isinstance(s, Skip) for s in out) == 1
    with pytest.raises(FileNotFoundError, match="no tar shard"):
        list_shards(f"{tmp_path}/nothing{{0..3}}.tar")


def test_split_key() -> None:
    assert split_key("dir/sub/abc.seg.PNG") == ("dir/sub/abc", "seg.png")
    assert split_key("abc.txt") == ("abc", "txt")
    assert split_key("noext") == ("noext", "")


def test_brace_expansion() -> None:
    assert expand_braces("s/{000..003}.tar") == [f"s/{i:03d}.tar" for i in range(4)]
    assert expand_braces("a{8..11}") == ["a8", "a9", "a10", "a11"]
    assert expand_braces("a{08..11}") == ["a08", "a09", "a10", "a11"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert expand_braces("x{0..10..5}") == ["x0", "x5", "x10"]
    assert expand_braces("x{3..1}") == ["x3", "x2", "x1"]
    assert expand_braces("{a,b{1..2}}c") == ["ac", "b1c", "b2c"]
    assert expand_braces("plain.tar") == ["plain.tar"]
    assert expand_braces("{abc}") == ["{abc}"]
    assert len(expand_braces("shards/{000000..000099}.tar")) == 100
    for bad in ("a{0..3", "a}b", "x{0..4..0}"):
        with pytest.raises(ValueError):
            expand_braces(bad)


@pytest.mark.parametrize("n_shards", [1, 3, 4, 7, 12])
@pytest.mark.parametrize("world_size,num_workers", [(1, 1), (1, 3), (2, 2), (3, 2)])
def test_shard_assignment_covers_every_sample_exactly_once(n_shards, world_size, num_workers) -> None:
    samples_per_shard = 5
    for epoch in range(2):
        seen = []
        for rank in range(world_size):
            for worker in range(num_workers):
                plan = assign_shards(
                    n_shards, rank=rank, world_size=world_size, worker=worker, num_workers=num_workers,
                    seed=0, epoch=epoch,
                )  # fmt: skip
                for shard, stride, offset in plan:
                    seen += [(shard, i) for i in range(samples_per_shard) if i % stride == offset]
        assert sorted(seen) == [(s, i) for s in range(n_shards) for i in range(samples_per_shard)]


def test_shard_order_is_shuffled_per_epoch_and_identical_across_ranks() -> None:
    def order(epoch: int, seed: int = 0) -> list[int]:
        return [p[0] for p in assign_shards(50, rank=0, world_size=1, worker=0, num_workers=1, seed=seed, epoch=epoch)]

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert order(0, seed=1) != order(0)
    assert sorted(order(3)) == list(range(50))


@pytest.mark.full_suite
def test_tar_dataloader_workers_and_ranks_see_every_sample_once(tmp_path: Path) -> None:
    # 3 shards of 4 samples, 2 ranks x 2 workers: fewer shards than workers, so shards are shared.
    keys = []
    for s in range(3):
        members = []
        for k in range(4):
            members += sample_members(f"s{s}k{k}", caption=f"s{s}k{k}")
            keys.append(f"s{s}k{k}")
        write_tar(tmp_path / f"shard-{s}.tar", members)
    for epoch in range(2):
        got = []
        for rank in range(2):
            ds = build_dataset(
                f"{tmp_path}/shard-{{0..2}}.tar", transform=to_tensor, rank=rank, world_size=2, seed=5,
                shuffle_buffer=3,
            )  # fmt: skip
            ds.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
            got += [caption for _, caption in loader]
        assert sorted(got) == sorted(keys)


def test_tar_shuffle_buffer_keeps_every_sample(tmp_path: Path) -> None:
    members = [m for k in range(20) for m in sample_members(f"k{k:02d}", caption=f"k{k:02d}")]
    write_tar(tmp_path / "s.tar", members)
    plain = [c for _, c in TarShards([tmp_path / "s.tar"], transform=to_tensor)]
    shuffled_ds = TarShards([tmp_path / "s.tar"], transform=to_tensor, shuffle_buffer=8)
    shuffled = [c for _, c in shuffled_ds]
    assert sorted(shuffled) == plain and shuffled != plain
    assert shuffled == [c for _, c in shuffled_ds]  # deterministic for a given seed and epoch


# ---------------------------------------------------------------- build_dataset


def test_build_dataset_picks_the_format(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("filepath,title\n")
    (tmp_path / "a.tsv").write_text("filepath\ttitle\n")
    (tmp_path / "a.jsonl").write_text("")
    write_tar(tmp_path / "tars" / "000.tar", sample_members("k"))
    (tmp_path / "imgs").mkdir()
    (tmp_path / "a.parquet").write_text("")
    assert describe_source(tmp_path / "a.csv") == "csv"
    assert describe_source(tmp_path / "a.tsv") == "csv"
    assert describe_source(tmp_path / "a.jsonl") == "jsonl"
    assert describe_source(tmp_path / "tars") == "tar"
    assert describe_source(tmp_path / "tars" / "000.tar") == "tar"
    assert describe_source(f"{tmp_path}/tars/{{000..001}}.tar") == "tar"
    assert describe_source(tmp_path / "imgs") == "folder"
    assert describe_source("shapes:train") == "shapes"
    with pytest.raises(ValueError, match="cannot tell the format"):
        describe_source(tmp_path / "a.parquet")
    with pytest.raises(FileNotFoundError):
        build_dataset(tmp_path / "nope.csv", transform=None)
    with pytest.raises(FileNotFoundError):
        describe_source(tmp_path / "nope")
    assert len(build_dataset(tmp_path / "a.csv", transform=None)) == 0
    assert len(collect(build_dataset(tmp_path / "tars", transform=None))) == 1
    shapes = build_dataset("shapes:val", transform=to_tensor)
    assert shapes[0][0].shape == (3, 8, 8) and isinstance(shapes[0][1], str)


def test_invalid_utf8_and_extra_columns_skip_the_row_not_the_file(tmp_path: Path) -> None:
    for i in range(3):
        write_png(tmp_path / f"{i}.png", (i * 80, 0, 0))
    (tmp_path / "d.csv").write_bytes(
        b"filepath,title\n0.png,a red square\n1.png,caf\xe9 bad byte\n2.png,a,caption,with,commas\n"
        b'2.png,"a, quoted caption"\n'
    )
    ds = read_csv(tmp_path / "d.csv", transform=to_tensor)
    assert len(ds) == 2 and reasons(ds.load_skips) == ["malformed_row", "malformed_row"]
    assert "invalid UTF-8" in ds.load_skips[0].detail and ds.load_skips[0].where.endswith(":3")
    assert "more columns" in ds.load_skips[1].detail and ds.load_skips[1].where.endswith(":4")
    assert ds[1][1] == "a, quoted caption"
    (tmp_path / "d.jsonl").write_bytes(
        b'{"filepath": "0.png", "title": "ok"}\n{"filepath": "1.png", "title": "\xff\xfe"}\n'
        b'{"filepath": "2.png", "title": "fine"}\n'
    )
    ds = read_jsonl(tmp_path / "d.jsonl", transform=to_tensor)
    assert len(ds) == 2 and reasons(ds.load_skips) == ["malformed_row"]
    assert ds.load_skips[0].where.endswith(":2") and "UTF-8" in ds.load_skips[0].detail


def test_eval_labelled_csv_skips_undecodable_and_overlong_rows(tmp_path: Path) -> None:
    from clipforge.eval.datasets import labelled_csv

    for i in range(3):
        write_png(tmp_path / f"{i}.png", (0, i * 80, 0))
    (tmp_path / "l.csv").write_bytes(b"filepath,label\n0.png,cat\n1.png,d\xf6g\n2.png,cat,extra\n2.png,dog\n")
    data = labelled_csv(tmp_path / "l.csv")
    assert len(data.skipped) == 2 and "UTF-8" in data.skipped[0] and "more columns" in data.skipped[1]
