"""Searching a photo library by what else it knows: folder, date taken, type, similarity floor, pages."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from search_fixtures import StoreMaker, save_tiny_checkpoint, tiny_encoder

from clipforge.data.formats import register_optional_formats
from clipforge.index import ImageIndex, IndexStore, index_folder
from clipforge.index.store import PhotoFilter

# (relative path, EXIF date or None, camera make/model or None)
LIBRARY = [
    ("2019/summer/beach.jpg", "2019:07:04 10:00:00", ("Canon", "Canon EOS 5D")),
    ("2019/summer/dunes.jpg", "2019:07:05 11:30:00", ("Canon", "Canon EOS 5D")),
    ("2019/winter/snow.jpg", "2019:12:24 09:15:00", ("Apple", "iPhone 12")),
    ("2021/city.jpg", "2021:03:01 18:45:00", ("Apple", "iPhone 12")),
    ("2021/park.jpg", "2021:03:02 08:00:00", None),
    ("scans/old.png", None, None),  # no EXIF: the file time counts
    ("scans/older.png", None, None),
    ("top.jpg", "2020:01:01 00:00:00", None),
]
FILE_TIME = time.mktime((2018, 5, 6, 7, 8, 9, 0, 0, -1))


def write_photo(path: Path, seed: int, date: str | None, camera: tuple[str, str] | None) -> None:
    rng = np.random.default_rng(seed)
    pixels = np.kron(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), np.ones((12, 16, 1), np.uint8))
    image = Image.fromarray(pixels)  # 64 x 48
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png":
        image.save(path)
    else:
        exif = Image.Exif()
        if date:
            exif.get_ifd(0x8769)[0x9003] = date
        if camera:
            exif[0x010F], exif[0x0110] = camera
        image.save(path, "JPEG", quality=90, exif=exif.tobytes())
    os.utime(path, (FILE_TIME, FILE_TIME))


def make_library(root: Path) -> None:
    for seed, (rel, date, camera) in enumerate(LIBRARY):
        write_photo(root / rel, seed, date, camera)


@pytest.fixture(scope="module", params=["sqlite", "qdrant"])
def library(tmp_path_factory, request):
    """The library indexed into each kind of store (SQLite, embedded Qdrant)."""
    if request.param == "qdrant":
        pytest.importorskip("qdrant_client", reason="the Qdrant store needs the `qdrant` extra")
    base = tmp_path_factory.mktemp("library")
    root, stores = base / "photos", StoreMaker(request.param, base)
    make_library(root)
    encoder = tiny_encoder()
    with stores("p") as store:
        index_folder(root, store, encoder, num_workers=0, progress=False)
    index = ImageIndex.open(stores("p"), encoder=encoder)
    yield {"root": root, "open": lambda: stores("p"), "index": index, "encoder": encoder}
    index.store.close()
    stores.close_all()


def paths(hits) -> set[str]:
    return {h.path for h in hits}


def test_the_index_stores_date_camera_size_type_and_folder(library):
    details = library["index"].store.details_of(library["index"].store.files()[p].id for p, _, _ in LIBRARY)
    by_path = {d["path"]: d for d in details.values()}
    beach = by_path["2019/summer/beach.jpg"]
    assert beach["taken_at"] == "2019-07-04T10:00:00" and beach["taken_from"] == "exif"
    assert beach["camera"] == "Canon EOS 5D" and (beach["width"], beach["height"]) == (64, 48)
    assert beach["type"] == "jpeg" and beach["folder"] == "2019/summer"
    old = by_path["scans/old.png"]
    assert old["taken_at"] == "2018-05-06T07:08:09" and old["taken_from"] == "file" and old["type"] == "png"
    assert by_path["top.jpg"]["folder"] == ""


@pytest.mark.parametrize(
    "where,expected",
    [
        (PhotoFilter.make(folder="2019"), {"2019/summer/beach.jpg", "2019/summer/dunes.jpg", "2019/winter/snow.jpg"}),
        (PhotoFilter.make(folder="2019/summer/"), {"2019/summer/beach.jpg", "2019/summer/dunes.jpg"}),
        (PhotoFilter.make(folder="201"), set()),  # a folder, not a name prefix
        (PhotoFilter.make(taken_after="2019-07-05", taken_before="2019-12"), {"2019/summer/dunes.jpg",
                                                                              "2019/winter/snow.jpg"}),
        (PhotoFilter.make(taken_before="2019-07-04"), {"2019/summer/beach.jpg", "scans/old.png", "scans/older.png"}),
        (PhotoFilter.make(taken_after="2020"), {"top.jpg", "2021/city.jpg", "2021/park.jpg"}),
        (PhotoFilter.make(types="png"), {"scans/old.png", "scans/older.png"}),
        (PhotoFilter.make(folder="2021", types=["jpeg", "heic"], taken_after="2021-03-02"), {"2021/park.jpg"}),
    ],
)
def test_filters_restrict_the_candidates(library, where, expected):
    hits = library["index"].search(text="a photo", k=50, where=where)
    assert paths(hits) == expected
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_pages_and_similarity_floor(library):
    index = library["index"]
    everything = index.search(text="a photo", k=len(LIBRARY))
    pages = index.search(text="a photo", k=3) + index.search(text="a photo", k=3, offset=3)
    pages += index.search(text="a photo", k=3, offset=6)
    assert [h.id for h in pages] == [h.id for h in everything]
    floor = everything[3].score
    above = index.search(text="a photo", k=50, min_score=floor)
    assert [h.id for h in above] == [h.id for h in everything[:4]]
    assert index.search(text="a photo", k=5, offset=50) == []
    with pytest.raises(ValueError, match="offset"):
        index.search(text="a photo", k=5, offset=-1)
    with pytest.raises(ValueError, match="min_score"):
        index.search(text="a photo", k=5, min_score=2.0)


@pytest.mark.parametrize(
    "kwargs,message",
    [({"taken_after": "July 2019"}, "taken_after must be a date"), ({"taken_before": "2019-7-4"}, "taken_before"),
     ({"folder": "../etc"}, "folder must be relative")],
)
def test_bad_filters_are_refused_with_the_parameter_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PhotoFilter.make(**kwargs)


def test_an_index_of_the_first_schema_is_upgraded_and_filled_in(tmp_path):
    root, db = tmp_path / "photos", tmp_path / "old.cfidx"
    make_library(root)
    encoder = tiny_encoder()
    with IndexStore(db, create=True) as store:
        index_folder(root, store, encoder, num_workers=0, progress=False)
    # Make it look like an index written before the photo fields existed.
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE old AS SELECT id, path, size, mtime_ns, sha256, embedding FROM images; DROP TABLE images;"
        "ALTER TABLE old RENAME TO images; UPDATE meta SET value = 'clipforge.index/1' WHERE key = 'schema';"
    )
    conn.close()
    with IndexStore(db) as store:
        assert store.get_meta("schema") == "clipforge.index/2"
        assert len(store.rows_without_info()) == len(LIBRARY)
        report = index_folder(root, store, encoder, num_workers=0, progress=False)
        assert report.added == 0 and report.unchanged == len(LIBRARY)  # nothing re-embedded
        assert store.rows_without_info() == []
        hits = ImageIndex(store, encoder=encoder).search(text="x", k=10, where=PhotoFilter.make(types="png"))
        assert paths(hits) == {"scans/old.png", "scans/older.png"}


def test_heic_files_are_indexed_with_the_extra(tmp_path):
    pytest.importorskip("pillow_heif")
    if not register_optional_formats()["heif"]:
        pytest.skip("no HEIF support")
    root, db = tmp_path / "photos", tmp_path / "h.cfidx"
    make_library(root)
    Image.open(root / "top.jpg").save(root / "phone.heic", "HEIF")
    with IndexStore(db, create=True) as store:
        report = index_folder(root, store, tiny_encoder(), num_workers=0, progress=False)
        assert report.added == len(LIBRARY) + 1 and report.skipped == []
        hits = ImageIndex(store, encoder=tiny_encoder()).search(text="x", k=10, where=PhotoFilter.make(types="heic"))
        assert paths(hits) == {"phone.heic"}


# -- HTTP API ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(library):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.serve import SearchService, create_app

    service = SearchService(ImageIndex.open(library["open"](), encoder=library["encoder"]))
    with TestClient(create_app(service), base_url="http://127.0.0.1") as c:
        yield c


def test_api_filters_pages_and_facets(client):
    r = client.get("/api/search", params={"q": "a photo", "k": 50, "folder": "2019", "after": "2019-07-05"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert {h["path"] for h in hits} == {"2019/summer/dunes.jpg", "2019/winter/snow.jpg"}
    assert all(h["taken_at"] and h["type"] == "jpeg" and h["width"] == 64 for h in hits)
    r = client.get("/api/search", params=[("q", "a photo"), ("k", 50), ("type", "png"), ("type", "jpeg")])
    assert len(r.json()["hits"]) == len(LIBRARY)
    first = client.get("/api/search", params={"q": "a photo", "k": 4}).json()["hits"]
    second = client.get("/api/search", params={"q": "a photo", "k": 4, "offset": 4}).json()["hits"]
    everything = client.get("/api/search", params={"q": "a photo", "k": 8}).json()["hits"]
    assert [h["id"] for h in first + second] == [h["id"] for h in everything]
    floor = everything[1]["score"] - 1e-5  # the API rounds scores to 6 decimals
    r = client.post("/api/search", json={"text": "a photo", "k": 20, "min_score": floor, "type": ["jpeg", "png"]})
    assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in everything[:2]]
    facets = client.get("/api/filters").json()
    assert facets["types"] == ["jpeg", "png"]
    assert "2019/summer" in facets["folders"] and facets["taken_at"] == ["2018-05-06T07:08:09", "2021-03-02T08:00:00"]


def test_api_hits_carry_relevance_and_filter_by_it(client):
    everything = client.get("/api/search", params={"q": "a photo", "k": 8}).json()["hits"]
    relevance = [h["relevance"] for h in everything]
    assert all(0.0 <= r <= 1.0 for r in relevance) and relevance == sorted(relevance, reverse=True)
    cut = relevance[2] - 1e-4  # the API rounds relevance to 4 decimals
    r = client.get("/api/search", params={"q": "a photo", "k": 8, "min_relevance": cut})
    assert [h["id"] for h in r.json()["hits"]] == [h["id"] for h in everything if h["relevance"] >= cut]
    r = client.post("/api/search", json={"text": "a photo", "k": 8, "min_relevance": 1.0})
    assert r.status_code == 200 and r.json()["hits"] == []


def test_api_upload_search_takes_the_filters_too(client, library):
    buf = io.BytesIO()
    Image.open(library["root"] / "2021/city.jpg").save(buf, "PNG")
    r = client.post("/api/search/image", params={"k": 10, "folder": "scans"}, content=buf.getvalue())
    assert r.status_code == 200, r.text
    assert {h["path"] for h in r.json()["hits"]} == {"scans/old.png", "scans/older.png"}


@pytest.mark.parametrize(
    "params,status,needle",
    [({"after": "yesterday"}, 400, "after must be a date"), ({"min_score": 3}, 422, "min_score"),
     ({"offset": -1}, 422, "offset"), ({"folder": "../x"}, 400, "folder must be relative"),
     ({"min_relevance": 2}, 422, "min_relevance")],
)
def test_api_bad_filters_are_client_errors(client, params, status, needle):
    r = client.get("/api/search", params={"q": "a photo", **params})
    assert r.status_code == status and needle in r.text


# -- CLI -------------------------------------------------------------------------------------------
def test_cli_search_filters(tmp_path, capsys):
    from clipforge.cli.main import main

    root, db = tmp_path / "photos", tmp_path / "c.cfidx"
    make_library(root)
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    assert main(["index", str(root), "--model", str(ckpt), "--db", str(db), "--no-progress", "--workers", "0"]) == 0
    capsys.readouterr()
    code = main(["search", "a photo", "--db", str(db), "-k", "20", "--folder", "2019", "--taken-before", "2019-07",
                 "--json"])
    assert code == 0
    hits = json.loads(capsys.readouterr().out)
    assert {h["path"] for h in hits} == {"2019/summer/beach.jpg", "2019/summer/dunes.jpg"}
    assert hits[0]["camera"] == "Canon EOS 5D"
    assert main(["search", "a photo", "--db", str(db), "--taken-after", "soon"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("clipforge search: error: --taken-after must be a date") and "\n" not in err
