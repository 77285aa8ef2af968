"""The HTTP API through FastAPI's TestClient: every endpoint, and hostile requests (4xx, still serving)."""

from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from search_fixtures import make_folder, png_bomb, tiny_encoder, write_image

pytest.importorskip("fastapi", reason="fastapi not installed (pip install 'clipforge[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from clipforge.index import ImageIndex, IndexStore, index_folder  # noqa: E402
from clipforge.serve import SearchService, create_app  # noqa: E402

MAX_UPLOAD = 1_000_000

POLICY = """\
threshold: 0.4
flagged:
  - a red object
benign:
  - a blue object
  - a green object
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("serve")
    root, db = base / "photos", base / "i.cfidx"
    make_folder(root, 8)
    write_image(base / "outside.png", 99)
    encoder = tiny_encoder()
    with IndexStore(db, create=True) as store:
        index_folder(root, store, encoder, num_workers=0, progress=False)
    (base / "policy.yaml").write_text(POLICY)
    from clipforge.eval.policy import load_policy

    service = SearchService(ImageIndex.open(db, encoder=encoder), policy=load_policy(base / "policy.yaml"))
    client = TestClient(create_app(service, max_upload_bytes=MAX_UPLOAD), base_url="http://127.0.0.1")
    ids = {p: i for p, (i, *_rest) in IndexStore(db).files().items()}
    return {
        "root": root,
        "db": db,
        "base": base,
        "client": client,
        "service": service,
        "ids": ids,
        "encoder": encoder,
    }


def assert_alive(client):
    r = client.get("/api/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


# -- endpoints -------------------------------------------------------------------------------------
def test_health_page_and_openapi(env):
    c = env["client"]
    h = c.get("/api/health").json()
    assert h["images"] == 8 and h["search"] == "exact" and h["moderation"] is True
    page = c.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text and "/static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
    for name, kind in [("app.js", "javascript"), ("style.css", "css")]:
        r = c.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert "http://" not in r.text and "https://" not in r.text
    spec = c.get("/openapi.json").json()
    assert {
        "/api/search",
        "/api/search/image",
        "/api/classify",
        "/api/moderate",
        "/api/embed/text",
        "/api/health",
        "/api/thumb/{image_id}",
    } <= set(spec["paths"])
    assert c.get("/docs").status_code == 200


def test_text_search(env):
    c = env["client"]
    r = c.get("/api/search", params={"q": "a dog on a beach", "k": 3})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert len(hits) == 3 and {"id", "path", "score"} <= set(hits[0])
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert c.post("/api/search", json={"text": "a dog on a beach", "k": 3}).json()["hits"] == hits


def test_more_like_this_and_image_upload_search(env):
    c, ids, root = env["client"], env["ids"], env["root"]
    target = "d1/img0004.gif"
    hits = c.post("/api/search", json={"id": ids[target], "k": 2}).json()["hits"]
    assert hits[0]["id"] == ids[target] and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    r = c.post("/api/search/image", params={"k": 3}, content=(root / target).read_bytes())
    assert r.status_code == 200 and r.json()["hits"][0]["path"] == target
    both = c.post(
        "/api/search/image",
        params={"k": 3, "text": "a dog", "image_weight": 0.9},
        content=(root / target).read_bytes(),
    )
    assert both.status_code == 200 and both.json()["hits"][0]["path"] == target


def test_classify_moderate_embed(env):
    c, ids, root, enc = env["client"], env["ids"], env["root"], env["encoder"]
    image = (root / "d0" / "img0000.png").read_bytes()
    r = c.post("/api/classify", params={"labels": "red, blue,green", "k": 3}, content=image)
    assert r.status_code == 200
    labels = r.json()["labels"]
    assert sorted(x["label"] for x in labels) == ["blue", "green", "red"]
    assert sum(x["score"] for x in labels) == pytest.approx(1.0, abs=1e-4)
    by_id = c.post(
        "/api/classify/indexed",
        json={"id": ids["d0/img0000.png"], "labels": ["red", "blue", "green"], "k": 3},
    ).json()["labels"]
    assert [x["label"] for x in by_id] == [x["label"] for x in labels]
    assert (
        c.post(
            "/api/classify", params={"labels": "a,b", "templates": "../../etc/passwd"}, content=image
        ).status_code
        == 400
    )
    assert c.post("/api/classify", params={"labels": "a,a"}, content=image).status_code == 400

    m = c.post("/api/moderate", content=image).json()
    assert m["decision"] in ("flag", "pass") and set(m["scores"]) == {
        "a red object",
        "a blue object",
        "a green object",
    }
    assert (
        c.post("/api/moderate/indexed", json={"id": ids["d0/img0000.png"]}).json()["decision"]
        == m["decision"]
    )

    e = c.post("/api/embed/text", json={"texts": ["a dog", "a cat"]}).json()
    vectors = np.array(e["embeddings"])
    assert vectors.shape == (2, enc.embed_dim) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    img = np.array(c.post("/api/embed/image", content=image).json()["embedding"])
    stored = env["service"].index.store.embedding_of(ids["d0/img0000.png"])
    np.testing.assert_allclose(img, stored, atol=1e-4)


def test_moderation_off_without_policy(env):
    service = SearchService(ImageIndex.open(env["db"], encoder=env["encoder"]))
    c = TestClient(create_app(service), base_url="http://127.0.0.1")
    r = c.post("/api/moderate", content=(env["root"] / "d0" / "img0000.png").read_bytes())
    assert r.status_code == 501 and "--policy" in r.json()["detail"]


def test_thumbnails_and_originals_by_id(env):
    c, ids, root = env["client"], env["ids"], env["root"]
    for image_id in ids.values():
        r = c.get(f"/api/thumb/{image_id}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.content[:2] == b"\xff\xd8"
    r = c.get(f"/api/image/{ids['d0/img0000.png']}")
    assert r.status_code == 200 and r.content == (root / "d0" / "img0000.png").read_bytes()


# -- hostile requests --------------------------------------------------------------------------------
def test_oversized_uploads_are_refused(env):
    c = env["client"]
    big = os.urandom(MAX_UPLOAD + 1)
    for path in ("/api/search/image", "/api/embed/image", "/api/moderate", "/api/classify?labels=a,b"):
        r = c.post(path, content=big)
        assert r.status_code == 413, (path, r.status_code)

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(40):
            yield b"\x00" * 65536

    r = c.post("/api/search/image", content=chunks())
    assert r.status_code == 413
    r = c.post("/api/search/image", content=b"x", headers={"content-length": "99999999999"})
    assert r.status_code in (400, 413)
    assert_alive(c)


@pytest.mark.full_suite
def test_decompression_bomb_is_refused_before_decoding(env):
    c = env["client"]
    bomb = png_bomb(10_000, 10_000)  # 100 megapixels in ~100 kB
    assert len(bomb) < MAX_UPLOAD
    for path in ("/api/search/image", "/api/embed/image", "/api/classify?labels=a,b"):
        r = c.post(path, content=bomb)
        assert r.status_code == 413 and "pixel" in r.json()["detail"], (path, r.text)
    assert_alive(c)


def test_bad_images_are_400(env):
    c = env["client"]
    good = (env["root"] / "d0" / "img0000.png").read_bytes()
    for body in (b"not an image", good[: len(good) // 2], b"\x89PNG\r\n\x1a\n" + b"\x00" * 50):
        r = c.post("/api/search/image", content=body)
        assert r.status_code == 400, r.text
    assert c.post("/api/search/image", content=b"").status_code == 400
    assert_alive(c)


@pytest.mark.parametrize(
    "url",
    [
        "/api/thumb/..%2F..%2F..%2Fetc%2Fpasswd",
        "/api/thumb/%2Fetc%2Fpasswd",
        "/api/thumb/../../etc/passwd",
        "/api/thumb/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/thumb/1%2F..%2F..%2Fetc%2Fpasswd",
        "/api/thumb/-1",
        "/api/thumb/999999",
        "/api/thumb/1.5",
        "/api/image/..%2F..%2Foutside.png",
        "/api/image/%2Fetc%2Fpasswd",
        "/api/image/0",
        "/static/..%2Fapp.py",
        "/static/%2e%2e%2fservice.py",
        "/static/../../../etc/passwd",
        "/static/%2Fetc%2Fpasswd",
    ],
)
def test_path_traversal_attempts_get_4xx(env, url):
    c = env["client"]
    r = c.get(url)
    assert 400 <= r.status_code < 500, (url, r.status_code)
    assert b"root:" not in r.content and b"import" not in r.content
    assert_alive(c)


def test_tampered_rows_and_swapped_links_do_not_escape_the_root(env, tmp_path):
    root, base = env["root"], env["base"]
    db = tmp_path / "t.cfidx"
    with IndexStore(db, create=True) as store:
        index_folder(root, store, env["encoder"], num_workers=0, progress=False)
    write_image(root / "swap.png", 5)
    with IndexStore(db) as store:
        index_folder(root, store, env["encoder"], num_workers=0, progress=False)
        swap_id = store.files()["swap.png"].id
    with sqlite3.connect(db) as conn:  # a database edited by someone else
        conn.execute("UPDATE images SET path = '../outside.png' WHERE id = (SELECT MIN(id) FROM images)")
        evil_id = conn.execute("SELECT MIN(id) FROM images").fetchone()[0]
        conn.execute(
            "UPDATE images SET path = ? WHERE id = (SELECT MAX(id) FROM images WHERE id != ?)",
            (str(base / "outside.png"), swap_id),
        )
        abs_id = conn.execute("SELECT MAX(id) FROM images WHERE id != ?", (swap_id,)).fetchone()[0]
    try:
        (root / "swap.png").unlink()
        os.symlink(base / "outside.png", root / "swap.png")  # a link swapped in after indexing
        app = create_app(SearchService(ImageIndex.open(db, encoder=env["encoder"])))
        c = TestClient(app, base_url="http://127.0.0.1")
        for image_id in (evil_id, abs_id, swap_id):
            for kind in ("thumb", "image"):
                r = c.get(f"/api/{kind}/{image_id}")
                assert r.status_code == 404, (kind, image_id, r.status_code)
        assert_alive(c)
    finally:
        (root / "swap.png").unlink()


@pytest.mark.parametrize(
    "body,status",
    [
        (b"{not json", 422),
        (b'{"text": "a dog", "k": "many"}', 422),
        (b'{"text": "a dog", "k": 0}', 422),
        (b'{"text": "a dog", "k": 100000}', 400),
        (b'{"text": "' + b"x" * 5000 + b'"}', 422),
        (b'{"text": 5}', 422),
        (b"[]", 422),
        (b'{"k": 3}', 400),
        (b'{"id": 123456789}', 404),
        (b"\xff\xfe\x00garbage", 422),
    ],
)
def test_malformed_json_gets_4xx_and_the_server_keeps_serving(env, body, status):
    c = env["client"]
    r = c.post("/api/search", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert "detail" in r.json()
    assert_alive(c)
    assert c.get("/api/search", params={"q": "still works", "k": 1}).status_code == 200


def test_other_malformed_requests(env):
    c = env["client"]
    assert c.post("/api/classify/indexed", json={"id": 1, "labels": []}).status_code == 422
    assert c.post("/api/classify/indexed", json={"id": 1}).status_code == 422
    assert c.post("/api/embed/text", json={"texts": []}).status_code == 422
    assert c.post("/api/embed/text", json={"texts": [""]}).status_code == 422
    assert c.post("/api/embed/text", json={"texts": ["a"] * 1000}).status_code == 422
    assert c.get("/api/search").status_code == 422
    assert c.get("/api/search", params={"q": "x", "k": -3}).status_code == 422
    assert c.post("/api/classify", content=b"abc").status_code == 422  # labels missing
    assert c.get("/api/nope").status_code == 404
    assert c.delete("/api/health").status_code == 405
    assert_alive(c)


@pytest.mark.full_suite
def test_concurrent_requests_are_safe(env):
    c, root = env["client"], env["root"]
    image = (root / "d1" / "img0004.gif").read_bytes()
    expected_text = c.get("/api/search", params={"q": "a cat", "k": 5}).json()["hits"]

    def job(i):
        if i % 3 == 0:
            r = c.get("/api/search", params={"q": "a cat", "k": 5})
            return r.status_code, r.json()["hits"] == expected_text
        if i % 3 == 1:
            r = c.post("/api/search/image", params={"k": 1}, content=image)
            return r.status_code, r.json()["hits"][0]["path"] == "d1/img0004.gif"
        r = c.get(f"/api/thumb/{env['ids']['d1/img0004.gif']}")
        return r.status_code, r.content[:2] == b"\xff\xd8"

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(job, range(96)))
    assert all(code == 200 and ok for code, ok in results)


def test_text_batcher_batches_concurrent_queries_and_matches_direct_encoding(env):
    from clipforge.serve.batching import TextBatcher

    enc = env["encoder"]
    batcher = TextBatcher(enc, max_batch=8)
    texts = [f"query number {i}" for i in range(40)]
    try:
        with ThreadPoolExecutor(16) as pool:
            vectors = list(pool.map(batcher.encode, texts))
        direct = enc.encode_texts(texts)
        np.testing.assert_allclose(np.stack(vectors), direct, atol=1e-5)
        assert batcher.texts == 40 and batcher.batches < 40  # some queries shared a call
    finally:
        batcher.close()

    class Broken:
        def encode_texts(self, texts):
            raise RuntimeError("model exploded")

    broken = TextBatcher(Broken())
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            broken.encode("x")
        with pytest.raises(RuntimeError, match="exploded"):  # the worker survived the first error
            broken.encode("y")
    finally:
        broken.close()


def test_server_follows_a_concurrent_indexing_run(tmp_path):
    root, db = tmp_path / "photos", tmp_path / "i.cfidx"
    make_folder(root, 3)
    encoder = tiny_encoder()
    with IndexStore(db, create=True) as store:
        index_folder(root, store, encoder, num_workers=0, progress=False)
    service = SearchService(ImageIndex.open(db, encoder=encoder))
    service.index.refresh_seconds = 0.0
    c = TestClient(create_app(service), base_url="http://127.0.0.1")
    assert c.get("/api/health").json()["images"] == 3
    write_image(root / "new.png", 42)
    with IndexStore(db) as store:  # another writer (as `clipforge index` in another process would be)
        index_folder(root, store, encoder, num_workers=0, progress=False)
    import time

    deadline = time.monotonic() + 20
    while c.get("/api/health").json()["images"] != 4:
        c.get("/api/search", params={"q": "anything", "k": 1})  # searches trigger the background refresh
        assert time.monotonic() < deadline, "the server never saw the new image"
        time.sleep(0.05)
    r = c.post("/api/search/image", params={"k": 1}, content=(root / "new.png").read_bytes())
    assert r.json()["hits"][0]["path"] == "new.png"
    service.close()
