"""The service under hostile clients (issue 13, points 1-3), on a real uvicorn server on 127.0.0.1.

Bounded: 300 hanging connections, header/body timeouts of 1 s, every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import logging
import socket
import threading
import time

import pytest
from hostile import open_hanging
from PIL import Image
from search_fixtures import make_folder, tiny_encoder

pytest.importorskip("fastapi", reason="fastapi not installed (pip install 'clipforge[serve]')")
pytest.importorskip("uvicorn", reason="uvicorn not installed (pip install 'clipforge[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from clipforge.index import ImageIndex, IndexStore, index_folder  # noqa: E402
from clipforge.serve import SearchService, create_app  # noqa: E402
from clipforge.serve.runner import build_server, run_server  # noqa: E402
from clipforge.serve.security import host_name, is_loopback  # noqa: E402

TOKEN = "s3cret-token-123"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    root, db = base / "photos", base / "i.cfidx"
    make_folder(root, 6)
    encoder = tiny_encoder()
    with IndexStore(db, create=True) as store:
        index_folder(root, store, encoder, num_workers=0, progress=False)
    svc = SearchService(ImageIndex.open(db, encoder=encoder))
    yield svc
    svc.close()


@contextlib.contextmanager
def live_server(app, **options):
    """uvicorn on an ephemeral loopback port in a thread; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = build_server(app, host="127.0.0.1", port=port, log_level="warning", **options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def timed_request(port: int, method: str, path: str, body: bytes | None = None, headers=None):
    """(status, json, seconds) of one request on a fresh connection, 5 s at most."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    t0 = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, json.loads(data or b"null"), time.monotonic() - t0
    finally:
        conn.close()


def closed_within(s: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing ``s`` (None: still open after ``seconds``)."""
    s.settimeout(seconds)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return data


# -- 1. idle and half-sent connections -------------------------------------------------------------
@pytest.mark.full_suite
def test_hanging_clients_do_not_lock_out_real_ones(service):
    app = create_app(service, body_timeout_s=1.0)
    with live_server(app, header_timeout_s=1.0) as port:
        assert timed_request(port, "GET", "/api/health")[0] == 200
        socks = open_hanging(port, 300)
        time.sleep(0.5)  # the server takes the burst of 300 in (~0.3 s of its time on this machine)
        try:
            for _ in range(3):  # while all 300 hang on: health and search answer within a second
                status, body, took = timed_request(port, "GET", "/api/health")
                assert status == 200 and body["status"] == "ok" and took < 1.0, (status, took)
                status, body, took = timed_request(port, "GET", "/api/search?q=red&k=2")
                assert status == 200 and len(body["hits"]) == 2 and took < 1.0, (status, took)
            # then the server drops them: idle/half-headers closed silently, half-bodies answered 408
            for i, s in enumerate(socks):
                sent = closed_within(s, 10.0)
                assert sent is not None, f"connection {i} still open"
                if i % 3 == 2:
                    assert b" 408 " in sent.split(b"\r\n", 1)[0]
                else:
                    assert sent == b""
        finally:
            for s in socks:
                s.close()
        assert timed_request(port, "GET", "/api/health")[0] == 200


@pytest.mark.full_suite
def test_keep_alive_connection_gets_a_header_deadline_for_its_next_request(service):
    with live_server(create_app(service), header_timeout_s=1.0, timeout_keep_alive=30) as port:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        with s:
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = b""
            while not first.endswith(b"}"):  # the whole JSON answer
                first += s.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            s.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127")  # ... and never finishes
            assert closed_within(s, 5.0) == b""


@pytest.mark.full_suite
def test_connection_cap_closes_the_excess_only(service):
    with live_server(create_app(service), max_connections=20, header_timeout_s=30) as port:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(20)]
        try:
            extra = socket.create_connection(("127.0.0.1", port), timeout=5)
            with extra:
                assert closed_within(extra, 5.0) == b""  # refused: closed at once
            for s in socks[:5]:
                s.close()
            time.sleep(0.3)
            assert timed_request(port, "GET", "/api/health")[0] == 200
        finally:
            for s in socks:
                s.close()


def test_running_request_limit_answers_503(service):
    c = TestClient(create_app(service, max_active=0), base_url="http://127.0.0.1")
    r = c.get("/api/health")
    assert r.status_code == 503 and "busy" in r.json()["detail"]
    r = c.post("/api/search", json={"text": "red"})
    assert r.status_code == 503


# -- 2. access control ---------------------------------------------------------------------------
def test_host_allow_list(service):
    app = create_app(service)
    for base in ("http://127.0.0.1", "http://localhost:8000", "http://[::1]:8000"):
        assert TestClient(app, base_url=base).get("/api/health").status_code == 200
    for host in ("evil.example", "127.0.0.1.evil.example", ""):
        r = TestClient(app, base_url="http://127.0.0.1").get("/api/health", headers={"host": host})
        assert r.status_code == 400 and "not allowed" in r.json()["detail"]
    app = create_app(service, allowed_hosts=["photos.lan"])
    assert TestClient(app, base_url="http://photos.lan:8000").get("/").status_code == 200
    assert TestClient(app, base_url="http://127.0.0.1").get("/").status_code == 400
    assert TestClient(create_app(service, allowed_hosts=["*"]), base_url="http://x.y").get("/").status_code == 200


def test_token_required_on_every_route_when_set(service):
    app = create_app(service, token=TOKEN)
    c = TestClient(app, base_url="http://127.0.0.1")
    for path in ("/", "/api/health", "/api/search?q=red", "/api/thumb/1", "/static/app.js", "/docs"):
        r = c.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
    assert c.post("/api/search", json={"text": "red"}).status_code == 401
    assert c.get("/api/health", headers={"authorization": "Bearer wrong-token-xx"}).status_code == 401
    assert c.get("/api/health", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    # a browser: /?token=... once sets an HttpOnly SameSite cookie; later requests carry it
    browser = TestClient(app, base_url="http://127.0.0.1")
    r = browser.get(f"/?token={TOKEN}")
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert browser.get("/api/search?q=red&k=1").status_code == 200
    with pytest.raises(ValueError, match="token"):
        create_app(service, token="short")


def test_non_loopback_bind_without_token_warns(service, monkeypatch, caplog):
    ran = []

    class FakeServer:
        def __init__(self, app, **options):
            self.options = options

        def run(self):
            ran.append(self.options)

    monkeypatch.setattr("clipforge.serve.runner.build_server", FakeServer)
    with caplog.at_level(logging.WARNING, logger="clipforge.serve.runner"):
        run_server(create_app(service), host="0.0.0.0")
    assert "without an access token" in caplog.text and ran
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="clipforge.serve.runner"):
        run_server(create_app(service, token=TOKEN), host="0.0.0.0")
        run_server(create_app(service), host="127.0.0.1")
    assert "without an access token" not in caplog.text


def test_host_helpers():
    assert host_name("LocalHost:8000") == "localhost" and host_name("[::1]:80") == "::1"
    assert host_name("example.com.") == "example.com" and host_name("::1") == "::1"
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("photos.lan")


# -- 3. sizes, label counts, ids -----------------------------------------------------------------
def test_json_body_limit(service):
    c = TestClient(create_app(service, max_json_bytes=10_000), base_url="http://127.0.0.1")
    big = json.dumps({"text": "red", "pad": "x" * 20_000})
    r = c.post("/api/search", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: cut off while streaming
        yield b'{"text": "red", "pad": "'
        for _ in range(50):
            yield b"x" * 1000
        yield b'"}'

    r = c.post("/api/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert c.post("/api/search", json={"text": "red", "k": 1}).status_code == 200


def test_label_limits(service):
    c = TestClient(create_app(service), base_url="http://127.0.0.1")
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, format="PNG")
    labels = ",".join(str(i) for i in range(6000))
    t0 = time.monotonic()
    r = c.post("/api/classify", params={"labels": labels}, content=buf.getvalue())
    assert r.status_code == 422 and "at most 100" in r.json()["detail"]
    assert time.monotonic() - t0 < 5  # refused before any encoding
    r = c.post("/api/classify", params={"labels": "red," + "x" * 300}, content=buf.getvalue())
    assert r.status_code == 422
    r = c.post("/api/classify/indexed", json={"id": 1, "labels": [f"l{i}" for i in range(101)]})
    assert r.status_code == 422
    assert c.post("/api/classify", params={"labels": "red,blue"}, content=buf.getvalue()).status_code == 200
    with pytest.raises(ValueError, match="at most 100"):
        service.classify([f"l{i}" for i in range(101)], image_id=1)


@pytest.mark.parametrize("big", [2**63, 2**64 + 5, 10**30, -(2**63) - 1])
def test_huge_ids_are_4xx(service, big):
    c = TestClient(create_app(service), base_url="http://127.0.0.1", raise_server_exceptions=False)
    for r in (
        c.get(f"/api/thumb/{big}"),
        c.get(f"/api/image/{big}"),
        c.post("/api/search", json={"id": big}),
        c.post("/api/classify/indexed", json={"id": big, "labels": ["a"]}),
        c.post("/api/moderate/indexed", json={"id": big}),
    ):
        assert 400 <= r.status_code < 500 and "detail" in r.json(), r.text
    store = service.index.store
    assert store.path_of(big) is None and store.embedding_of(big) is None and store.paths_of([big]) == {}


def test_serve_command_wires_token_and_allowed_hosts(service, monkeypatch, capsys):
    from clipforge.cli import cmd_serve

    served = {}
    monkeypatch.setattr(SearchService, "from_paths", classmethod(lambda cls, *a, **kw: service))
    monkeypatch.setattr(cmd_serve, "open_store_from_args", lambda args: args.db)  # no index file needed
    monkeypatch.setattr("clipforge.serve.run_server", lambda app, **kw: served.update(app=app, **kw))
    monkeypatch.setenv("CLIPFORGE_TOKEN", TOKEN)
    from clipforge.cli.main import main

    assert main(["serve", "ckpt", "--db", "x.cfidx", "--host", "192.168.1.20", "--allow-host", "photos.lan"]) == 0
    c = TestClient(served["app"], base_url="http://photos.lan:8000")
    assert c.get("/api/health").status_code == 401  # the token from the environment is required
    assert c.get("/api/health", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    c = TestClient(served["app"], base_url="http://192.168.1.20:8000")  # the bound address is allowed
    assert c.get("/api/health", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    c = TestClient(served["app"], base_url="http://evil.example")
    assert c.get("/api/health", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 400
    assert served["host"] == "192.168.1.20" and TOKEN not in capsys.readouterr().out
    names = cmd_serve.allowed_hosts("0.0.0.0", [])
    assert "localhost" in names and "0.0.0.0" not in names
