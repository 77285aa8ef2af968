"""The Qdrant store beyond the suites shared with SQLite: store URLs, an unreachable server, the
payload indexes, repair of an interrupted write, the CLI end to end, and two servers on one store."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from search_fixtures import make_folder, save_tiny_checkpoint, tiny_encoder, write_image

from clipforge.index import ImageIndex, index_folder
from clipforge.index.qdrant import QdrantStore, QdrantStoreError, QdrantTarget
from clipforge.index.qdrant_payload import PAYLOAD_INDEXES, date_period, taken_seconds
from clipforge.index.records import NewRow, PhotoFilter
from clipforge.index.stores import open_store, parse_store

qdrant_client = pytest.importorskip("qdrant_client", reason="the Qdrant store needs the `qdrant` extra")


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_store(name: str = "c") -> QdrantStore:
    return QdrantStore(QdrantTarget(None, ":memory:", name), create=True)


# -- naming a store --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec,target",
    [
        ("qdrant://db.example:7000/photos", QdrantTarget("http://db.example:7000", None, "photos")),
        ("qdrant://db.example/photos", QdrantTarget("http://db.example:6333", None, "photos")),
        ("qdrants://cluster.cloud:6333/team-photos", QdrantTarget("https://cluster.cloud:6333", None, "team-photos")),
        ("qdrant://[::1]:6333/p", QdrantTarget("http://[::1]:6333", None, "p")),
        ("qdrants://c.cloud/p?shards=4&replicas=2", QdrantTarget("https://c.cloud:6333", None, "p", 4, 2)),
        ("qdrant+local:/data/q", QdrantTarget(None, "/data/q", "clipforge")),
        ("qdrant+local:rel/q#mine", QdrantTarget(None, "rel/q", "mine")),
    ],
)
def test_store_urls(spec, target):
    parsed = parse_store(spec)
    assert parsed.kind == "qdrant" and parsed.qdrant == target


def test_paths_stay_sqlite_files(tmp_path):
    assert parse_store(tmp_path / "a.cfidx").sqlite_path == tmp_path / "a.cfidx"
    assert parse_store("sqlite:x/y.cfidx").sqlite_path.as_posix() == "x/y.cfidx"
    assert parse_store("photos.cfidx").kind == "sqlite"


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("qdrant://host:6333", "names no collection"),
        ("qdrant://host:6333/", "names no collection"),
        ("qdrant://:6333/c", "names no host"),
        ("qdrant://host:port/c", "port must be a number"),
        ("qdrant://host:99999/c", "port must be a number"),
        ("qdrant://key@host/c", "do not put credentials"),
        ("qdrant://host/c?x=1", "only ?shards=N&replicas=M"),
        ("qdrant://host/c?shards=0", "only ?shards=N&replicas=M"),
        ("qdrant://host/c?shards=2&shards=3", "only ?shards=N&replicas=M"),
        ("qdrant://host/c#x", "unexpected #fragment"),
        ("qdrant://host/a/b", "not a usable collection name"),
        ("qdrant://host/c__meta", "not a usable collection name"),
        ("http://host:6333/c", "unknown store scheme 'http'"),
        ("qdrant:host/c", "is not a store URL"),
        ("qdrant+local:", "names no folder"),
        ("", "is empty"),
    ],
)
def test_bad_store_urls_are_one_clear_error(spec, needle):
    with pytest.raises(ValueError, match="store=") as e:
        parse_store(spec)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_a_missing_embedded_store_is_refused_and_not_made(tmp_path):
    with pytest.raises(QdrantStoreError, match="no index there yet"):
        open_store(f"qdrant+local:{tmp_path / 'nothing'}")
    assert not (tmp_path / "nothing").exists()
    open_store(f"qdrant+local:{tmp_path / 'made'}", create=True).close()
    open_store(f"qdrant+local:{tmp_path / 'made'}").close()  # now there


def test_an_api_key_for_an_index_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match="qdrant_api_key"):
        open_store(tmp_path / "x.cfidx", create=True, qdrant_api_key="secret")


def test_an_unreachable_server_is_one_clear_error():
    port = closed_port()
    with pytest.raises(QdrantStoreError, match=f"cannot reach the Qdrant server at http://127.0.0.1:{port}"):
        open_store(f"qdrant://127.0.0.1:{port}/photos", timeout=1)


def test_cli_unreachable_server_and_bad_url_are_one_line(capsys):
    from clipforge.cli.main import main

    port = closed_port()
    assert main(["search", "a dog", "--store", f"qdrant://127.0.0.1:{port}/photos", "--qdrant-timeout", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("clipforge search: error: qdrant://127.0.0.1:") and "cannot reach" in err
    assert "\n" not in err and "Traceback" not in err
    assert main(["search", "a dog", "--store", "qdrant://localhost:6333"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "clipforge search: error: --store qdrant://localhost:6333 names no collection: "
        "write qdrant://HOST:PORT/COLLECTION"
    )
    assert main(["search", "a dog", "--store", "qdrant+local:x", "--db", "y.cfidx"]) == 1
    assert "not both" in capsys.readouterr().err


# -- the collection --------------------------------------------------------------------------------
def test_payload_indexes_for_the_filters_and_the_sync(monkeypatch):
    store = QdrantStore(QdrantTarget(None, ":memory:", "c", shards=3, replicas=2), create=True)
    made, created = {}, {}
    real, real_create = store._client.create_payload_index, store._client.create_collection

    def create(name, **kw):
        created[name] = kw
        return real_create(name, **kw)

    monkeypatch.setattr(store._client, "create_collection", create)

    def record(collection, key, schema, **kw):
        made[key] = schema
        return real(collection, key, schema, **kw)

    monkeypatch.setattr(store._client, "create_payload_index", record)
    store.bind(model_id="m", embed_dim=4, root="/photos")
    assert (created["c"]["shard_number"], created["c"]["replication_factor"]) == (3, 2)
    assert set(made) == set(PAYLOAD_INDEXES) >= {"folders", "taken_ts", "type", "path", "sha256"}
    assert made["taken_ts"].range is True  # date ranges and the date facets' ordering need a range index
    store.close()


def test_a_foreign_collection_is_refused_untouched():
    store = memory_store("mine")
    client = store._client
    client.create_collection("theirs", vectors_config=qdrant_client.models.VectorParams(
        size=2, distance=qdrant_client.models.Distance.DOT))  # fmt: skip
    client.upsert("theirs", [qdrant_client.models.PointStruct(id=1, vector=[1.0, 0.0], payload={"x": 1})])
    store.collection, store.meta_collection = "theirs", "theirs__meta"
    with pytest.raises(QdrantStoreError, match="exists but is not a clipforge index"):
        store._open(create=True)
    assert client.count("theirs").count == 1 and not client.collection_exists("theirs__meta")
    store.close()


def test_an_interrupted_replace_is_repaired_by_the_next_sync():
    store = memory_store()
    store.bind(model_id="m", embed_dim=3, root="/photos")
    v = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    with store.transaction() as c:
        store.insert(c, [NewRow("a.png", 1, 1, "h1", v), NewRow("b.png", 1, 1, "h2", v)])
    # What a kill between writing a file's new point and deleting its old one leaves: two rows of a.png.
    point = qdrant_client.models.PointStruct(id=10, vector=v.tolist(), payload={
        "path": "a.png", "size": 2, "mtime_ns": 2, "sha256": "h3"})  # fmt: skip
    store._client.upsert(store.collection, [point])
    assert store.count() == 3
    rows = store.files()
    assert rows["a.png"] == (10, "a.png", 2, 2, "h3") and store.count() == 2


def test_ids_are_never_reused_and_the_fingerprint_follows_changes():
    store = memory_store()
    store.bind(model_id="m", embed_dim=2, root="/photos")
    v = np.array([0.6, 0.8], dtype=np.float32)
    with store.transaction() as c:
        store.insert(c, [NewRow(f"{i}.png", 1, 1, f"h{i}", v) for i in range(3)])
    first = store.fingerprint()
    assert first == (3, 3, "m")
    with store.transaction() as c:
        store.delete(c, ["2.png"])
    assert store.fingerprint() == (2, 3, "m")
    with store.transaction() as c:
        store.insert(c, [NewRow("2.png", 1, 1, "h9", v)])
    assert store.files()["2.png"].id == 4 and store.fingerprint() == (3, 4, "m")
    with pytest.raises(RuntimeError), store.transaction() as c:  # a failing block writes nothing
        store.insert(c, [NewRow("x.png", 1, 1, "hx", v)])
        raise RuntimeError("stop")
    assert "x.png" not in store.files()


@pytest.mark.parametrize(
    "bound,start,end",
    [
        ("2021", "2021-01-01T00:00:00", "2022-01-01T00:00:00"),
        ("2021-12", "2021-12-01T00:00:00", "2022-01-01T00:00:00"),
        ("2021-07-31", "2021-07-31T00:00:00", "2021-08-01T00:00:00"),
        ("2021-07-04T18:30", "2021-07-04T18:30:00", "2021-07-04T18:31:00"),
        ("2021-07-04 18:30:15", "2021-07-04T18:30:15", "2021-07-04T18:30:16"),
    ],
)
def test_date_bounds_are_periods(bound, start, end):
    assert date_period(bound, name="taken_before") == (taken_seconds(start), taken_seconds(end))


def test_an_impossible_date_names_the_parameter():
    store = memory_store()
    store.bind(model_id="m", embed_dim=2, root="/photos")
    with pytest.raises(ValueError, match="taken_after='2021-13'"):
        store.ids_matching(PhotoFilter.make(taken_after="2021-13"))


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.full_suite
def test_cli_index_search_and_merge_into_a_local_qdrant_store(tmp_path, capsys):
    """Index and search through `--store qdrant+local:`: the same hits as the SQLite file; embedding
    shards of `clipforge embed` load into it too."""
    from clipforge.cli.main import main

    root = tmp_path / "photos"
    make_folder(root, 8)
    ckpt = str(save_tiny_checkpoint(tmp_path / "tiny.safetensors"))
    common = ["--model", ckpt, "--no-progress", "--workers", "0", "--json"]
    stores = {"sqlite": ["--db", str(tmp_path / "i.cfidx")], "qdrant": ["--store", f"qdrant+local:{tmp_path / 'q'}"]}
    results = {}
    for kind, where in stores.items():
        assert main(["index", str(root), *where, *common]) == 0
        assert json.loads(capsys.readouterr().out)["index"]["added"] == 8
        assert main(["search", "a red circle", *where, "-k", "5", "--folder", "d1", "--json"]) == 0
        results[kind] = json.loads(capsys.readouterr().out)
    assert [h["path"] for h in results["qdrant"]] == [h["path"] for h in results["sqlite"]]
    assert {h["folder"] for h in results["qdrant"]} == {"d1"}
    for a, b in zip(results["qdrant"], results["sqlite"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        assert a["relevance"] == pytest.approx(b["relevance"], abs=1e-3)

    out = tmp_path / "emb"
    assert main(["embed", str(root), "--model", ckpt, "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    merged = f"qdrant+local:{tmp_path / 'm'}"
    assert main(["index", "--from-embeddings", str(out), "--store", merged, "--json", "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["merged"]["added"] == 8 and report["search"] == {"kind": "qdrant", "count": 8}


def test_two_servers_on_one_store_agree_and_page_across_each_other(tmp_path):
    """Replicas behind one address: any of them answers any page of a ranking, the same relevance,
    and both follow a running index. (Two clients of one embedded collection share its object here;
    on a server they would be two connections.)"""
    pytest.importorskip("fastapi")
    from clipforge.index.search import SearchPage
    from clipforge.serve.service import SearchQuery, SearchService

    root = tmp_path / "photos"
    make_folder(root, 10)
    enc = tiny_encoder()
    shared = memory_store("photos")
    index_folder(root, shared, enc, num_workers=0, progress=False)
    a, b = (SearchService(ImageIndex(shared, encoder=enc, refresh_seconds=0.0)) for _ in range(2))
    try:

        def page(service, offset, k=4):
            return service.search(SearchQuery(text="a dog", page=SearchPage(k=k, offset=offset)))

        everything = page(a, 0, k=10)
        assert page(a, 0) + page(b, 4) + page(a, 8) == everything  # ids, scores and relevance alike
        assert a.filters() == b.filters() and a.health()["images"] == b.health()["images"] == 10
        first = everything[0]["id"]
        assert a.thumbnail(first) == b.thumbnail(first)
        write_image(root / "late.png", 99)
        index_folder(root, shared, enc, num_workers=0, progress=False)
        for service in (a, b):
            service.index.refresh(force=True)
        assert page(a, 0, k=11) == page(b, 0, k=11) and len(page(b, 0, k=11)) == 11
    finally:
        a.close()
        b.close()
        shared.close()


def test_a_store_failure_while_serving_is_a_503_that_names_no_address(monkeypatch):
    """Qdrant down mid-flight: the request is answered 503 (the proxy tries another server), the
    store's internal address stays in the server's log."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.serve import SearchService, create_app

    store, enc = memory_store("photos"), tiny_encoder()
    store.bind(model_id=enc.model_id, embed_dim=enc.embed_dim, root="/photos")
    with store.transaction() as c:
        store.insert(c, [NewRow("a.png", 1, 1, "h", enc.encode_texts(["a red circle"])[0])])
    service = SearchService(ImageIndex(store, encoder=enc))

    def down(*args, **kwargs):
        raise ConnectionError("[Errno 111] Connection refused")

    with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
        assert client.get("/api/search", params={"q": "a dog"}).status_code == 200
        monkeypatch.setattr(store._client, "query_points", down)
        r = client.get("/api/search", params={"q": "a dog"})
        assert r.status_code == 503 and r.json() == {"detail": "the search store is unavailable; try again shortly"}
    service.close()
    store.close()


def test_a_rebuild_killed_half_way_leaves_an_empty_store_the_next_run_fills(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    make_folder(root, 4)
    store, old, new = memory_store(), tiny_encoder(seed=0), tiny_encoder(seed=1)
    index_folder(root, store, old, num_workers=0, progress=False)

    def killed(*args, **kwargs):
        raise QdrantStoreError("killed")  # the process dies after dropping the old rows

    with monkeypatch.context() as patch:
        patch.setattr(store, "_create_rows_collection", killed)
        with pytest.raises(QdrantStoreError, match="killed"):
            index_folder(root, store, new, rebuild=True, num_workers=0, progress=False)
    assert store.model_id is None and store.count() == 0 and store.files() == {}
    with pytest.raises(ValueError, match="is empty"):
        ImageIndex(store, encoder=new)
    report = index_folder(root, store, new, num_workers=0, progress=False)  # no --rebuild needed
    assert report.added == 4 and store.model_id == new.model_id
    assert ImageIndex(store, encoder=new).search(image=root / "d0" / "img0000.png", k=1)[0].path == "d0/img0000.png"
    store.close()
