"""A real browser (Debian's chromium driven by Playwright) uses the search page against a live server.

Needs ``pip install playwright`` and ``apt-get install chromium`` (no ``playwright install``: no
browser download). Skips with the reason when either is missing.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from search_fixtures import make_folder, tiny_encoder

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CLIPFORGE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_browser() -> None:
    """Skips without playwright, chromium or uvicorn."""
    pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("uvicorn", reason="uvicorn not installed (pip install 'clipforge[serve]')")


@contextlib.contextmanager
def _serving_app(app) -> Iterator[str]:
    """Serve ``app`` on a free loopback port from a thread; yields the page URL."""
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def _serving(base: Path, images: int) -> Iterator[tuple[str, Path]]:
    """Index ``images`` generated pictures under ``base`` and serve them; yields (page URL, photo
    folder). Skips without playwright, chromium or uvicorn."""
    _require_browser()
    from clipforge.index import ImageIndex, IndexStore, index_folder
    from clipforge.serve import SearchService, create_app

    root, db = base / "photos", base / "i.cfidx"
    make_folder(root, images)
    encoder = tiny_encoder()
    with IndexStore(db, create=True) as store:
        index_folder(root, store, encoder, num_workers=0, progress=False)
    with _serving_app(create_app(SearchService(ImageIndex.open(db, encoder=encoder)))) as url:
        yield url, root


@contextlib.contextmanager
def _chromium() -> Iterator:
    """Debian's chromium, headless, through Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with _serving(tmp_path_factory.mktemp("browser"), 10) as (url, root):
        yield {"url": url, "root": root}


@pytest.fixture()
def page(server):
    with _chromium() as browser:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        external = []
        page.on(
            "request",
            lambda r: external.append(r.url) if not r.url.startswith(("http://127.0.0.1", "blob:", "data:")) else None,
        )
        page.goto(server["url"])
        yield page
        assert errors == [], errors
        assert external == [], f"the page reached outside the server: {external}"


def loaded_thumbnails(page) -> int:
    return page.evaluate(
        "() => [...document.querySelectorAll('#results .hit img')].filter(i => i.complete && i.naturalWidth > 0).length"
    )


def test_typing_a_query_shows_result_thumbnails(page):
    page.wait_for_function("() => document.getElementById('status').textContent.includes('10 images')")
    page.fill("#q", "a dog on a beach")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .hit img")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results .hit img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert loaded_thumbnails(page) == 10  # top 24 of 10 images: all of them
    scores = page.eval_on_selector_all("#results .hit .score", "els => els.map(e => parseFloat(e.textContent))")
    assert scores == sorted(scores, reverse=True)
    assert "results in" in page.inner_text("#status")


def test_dropping_an_image_searches_by_image_and_classify_panel_works(page, server):
    data = (server["root"] / "d1" / "img0004.gif").read_bytes()
    page.wait_for_function("() => document.getElementById('status').textContent.includes('images indexed')")
    transfer = page.evaluate_handle(
        """(b64) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], "query.gif", { type: "image/gif" }));
            return dt;
        }""",
        base64.b64encode(data).decode(),
    )
    page.dispatch_event("body", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#results .hit")
    first = page.inner_text("#results .hit figcaption")
    assert "d1/img0004.gif" in first and first.startswith("1.000")

    page.click("#results .hit:nth-child(2)")
    page.fill("#labels", "red, green, blue")
    page.click("#classify")
    page.wait_for_selector("#labels-out li")
    rows = page.eval_on_selector_all("#labels-out li", "els => els.map(e => e.textContent)")
    assert len(rows) == 3 and all("%" in r for r in rows)


# -- a photo library: filters, "load more", the query in the URL -----------------------------------
@pytest.fixture(scope="module")
def library_server(tmp_path_factory):
    with _serving(tmp_path_factory.mktemp("browser-library"), 30) as (url, _):  # d0, d1, d2: ten each, six formats
        yield {"url": url}


def _hit_paths(page) -> list[str]:
    return page.eval_on_selector_all("#results .hit img", "els => els.map(e => e.alt)")


def test_filters_load_more_and_the_query_in_the_url(library_server):
    url = library_server["url"]
    with _chromium() as browser:
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("() => document.getElementById('status').textContent.includes('30 images')")
        page.wait_for_function("() => document.querySelectorAll('#folder option').length === 4")  # all + 3

        # load more: 12, 24, then the last 6 and no more button
        page.select_option("#k", "12")
        page.fill("#q", "a colourful picture")
        page.press("#q", "Enter")
        page.wait_for_function("() => document.querySelectorAll('#results .hit').length === 12")
        assert page.is_visible("#more")
        page.click("#more")
        page.wait_for_function("() => document.querySelectorAll('#results .hit').length === 24")
        page.click("#more")
        page.wait_for_function("() => document.querySelectorAll('#results .hit').length === 30")
        assert not page.is_visible("#more")
        paths = _hit_paths(page)
        assert len(set(paths)) == 30  # pages do not repeat
        scores = page.eval_on_selector_all("#results .hit .score", "els => els.map(e => parseFloat(e.textContent))")
        assert scores == sorted(scores, reverse=True)

        # a folder and a type filter
        page.select_option("#folder", "d1")
        page.wait_for_function("() => document.querySelectorAll('#results .hit').length === 10")
        assert all(p.startswith("d1/") for p in _hit_paths(page))
        page.select_option("#type", "jpeg")  # d1 holds .jpg and .bmp files
        page.wait_for_function(
            "() => { const hits = [...document.querySelectorAll('#results .hit img')];"
            " return hits.length > 0 && hits.every(i => i.alt.endsWith('.jpg')); }"
        )
        jpegs = _hit_paths(page)
        assert len(jpegs) == 5 and all(p.startswith("d1/") for p in jpegs)

        # the search is in the URL: reloading it restores the query, the filters and the results
        assert "q=a+colourful+picture" in page.url and "folder=d1" in page.url and "type=jpeg" in page.url
        fresh = browser.new_page()
        fresh.goto(page.url)
        fresh.wait_for_function("() => document.querySelectorAll('#results .hit').length > 0")
        assert fresh.input_value("#q") == "a colourful picture"
        assert fresh.input_value("#folder") == "d1" and fresh.input_value("#type") == "jpeg"
        assert sorted(_hit_paths(fresh)) == sorted(jpegs)

        # a minimum similarity above every score empties the page; the status says so
        page.select_option("#type", "")
        page.fill("#min-score", "0.9999")
        page.press("#min-score", "Enter")
        page.wait_for_function("() => document.getElementById('status').textContent.startsWith('0 results')")
        assert "min_score=0.9999" in page.url

        # each hit shows its relevance; a minimum relevance of 1 empties the page too
        page.fill("#min-score", "")
        page.press("#min-score", "Enter")
        page.wait_for_function("() => document.querySelectorAll('#results .hit .relevance').length > 0")
        page.fill("#min-relevance", "1")
        page.press("#min-relevance", "Enter")
        page.wait_for_function("() => document.getElementById('status').textContent.startsWith('0 results')")
        assert "min_relevance=1" in page.url and "min_score" not in page.url
        assert errors == [], errors


# -- multilingual search: queries in five scripts, the reference's ranking ------------------------
# MetaCLIP 2's ranking comes from transformers live; XLM-R's was recorded from open_clip
@pytest.fixture(scope="module", params=[pytest.param("metaclip2", marks=pytest.mark.reference), "xlm-roberta"])
def multilingual_server(request, tmp_path_factory):
    """A folder indexed by ``clipforge index`` with a tiny multilingual model (tests/test_multilingual_search.py's
    MetaCLIP 2 and XLM-R fixtures) and the reference's ranking of the photos per query, served."""
    _require_browser()
    import test_multilingual_search as multilingual

    from clipforge.index import Encoder, ImageIndex
    from clipforge.serve import SearchService, create_app

    tmp = tmp_path_factory.mktemp(f"browser-{request.param}")
    found = multilingual._metaclip2(tmp) if request.param == "metaclip2" else multilingual._xlmr(tmp)
    encoder = Encoder.load(found["ckpt"], device="cpu", precision="fp32", progress=False)
    with _serving_app(create_app(SearchService(ImageIndex.open(found["db"], encoder=encoder)))) as url:
        yield {"url": url, "want": found["want"], "queries": multilingual.QUERIES}


def test_queries_in_five_scripts_rank_as_the_reference_and_stay_in_the_url(multilingual_server):
    """CJK without spaces, Arabic (right to left), Devanagari, Cyrillic and Hangul, each entered as an
    input method commits it (one input event, then Enter): the page shows the photos in the order of
    the reference model's own embeddings, keeps the query in its URL (percent-encoded UTF-8), and a
    fresh page opened at that URL restores the query and the same ranking."""
    want, n = multilingual_server["want"], len(next(iter(multilingual_server["want"].values())))
    shown = f"() => document.querySelectorAll('#results .hit').length === {n}"
    with _chromium() as browser:
        errors = []
        for query in multilingual_server["queries"]:
            page = browser.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(multilingual_server["url"])
            page.wait_for_function("() => document.getElementById('status').textContent.includes('images indexed')")
            page.focus("#q")
            page.keyboard.insert_text(query)
            page.keyboard.press("Enter")
            page.wait_for_function(shown)
            assert _hit_paths(page) == want[query], query
            assert page.input_value("#q") == query
            rtl = page.eval_on_selector("#q", "e => e.matches(':dir(rtl)')")
            assert rtl == (query == "قطة على الشاطئ"), query  # the Arabic query is laid out right to left

            assert page.url.isascii() and urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)["q"] == [query]
            fresh = browser.new_page()
            fresh.goto(page.url)
            fresh.wait_for_function(shown)
            assert fresh.input_value("#q") == query and _hit_paths(fresh) == want[query], query
            page.close()
            fresh.close()
        assert errors == [], errors


# -- NLLB-CLIP: the language menu --------------------------------------------------------------------
def test_the_language_menu_is_kept_in_the_url_and_reaches_the_api(tmp_path, page):
    """A model with language codes (the tiny NLLB-CLIP of tests/test_nllb_language.py) gets a menu of
    them; the page URL's ``lang`` selects it, every search sends it, a choice re-runs the search and
    goes into the URL. A model without codes (the ``page`` fixture's server) shows no menu."""
    page.wait_for_function("() => document.getElementById('status').textContent.includes('images indexed')")
    assert page.is_hidden("#lang")
    from test_nllb_language import QUERY, nllb_indexed

    from clipforge.index import ImageIndex
    from clipforge.serve import SearchService, create_app

    found = nllb_indexed(tmp_path)
    with _serving_app(create_app(SearchService(ImageIndex.open(found["db"], encoder=found["encoder"])))) as url:
        nllb = page.context.browser.new_page()  # the same browser
        errors, sent = [], []
        nllb.on("pageerror", lambda e: errors.append(str(e)))
        nllb.on("request", lambda r: sent.append(r.url) if "/api/search" in r.url else None)
        nllb.goto(f"{url}?{urllib.parse.urlencode({'q': QUERY, 'lang': 'fra_Latn'})}")
        nllb.wait_for_function("() => document.querySelectorAll('#results .hit').length === 6")
        nllb.wait_for_function("() => document.getElementById('lang').options.length === 4")
        assert nllb.is_visible("#lang") and nllb.input_value("#lang") == "fra_Latn"
        options = nllb.eval_on_selector_all("#lang option", "els => els.map(e => [e.value, e.textContent])")
        assert options == [["", "eng_Latn (default)"], ["eng_Latn", "eng_Latn"], ["fra_Latn", "fra_Latn"],
                           ["zho_Hans", "zho_Hans"]]  # fmt: skip
        assert all("lang=fra_Latn" in u for u in sent) and sent
        with nllb.expect_response(lambda r: "/api/search" in r.url and "lang=zho_Hans" in r.url) as answer:
            nllb.select_option("#lang", "zho_Hans")
        assert answer.value.status == 200
        assert "lang=zho_Hans" in urllib.parse.urlsplit(nllb.url).query
        assert errors == [], errors


# -- the prompt language of the classify panel ----------------------------------------------------------------
def test_the_prompt_language_menu_is_kept_in_the_url_and_reaches_classify(page, server):
    """The built-in templates come in more than English, so the classify panel has a menu of their
    languages (``/api/prompt-languages``); the page URL's ``prompt_lang`` selects it, a classification
    sends it (with a template set in that language, the server's being English only) and a choice
    goes into the URL. It is not the ``lang`` menu, which stays hidden for this model."""
    from clipforge.eval.prompts import template_languages

    page.goto(f"{server['url']}?{urllib.parse.urlencode({'q': 'a dog', 'prompt_lang': 'de'})}")
    page.wait_for_selector("#results .hit")
    page.wait_for_function("(n) => document.getElementById('prompt-lang').options.length === n",
                           arg=len(template_languages("imagenet1k")) + 1)  # fmt: skip
    assert page.is_visible("#prompt-lang") and page.input_value("#prompt-lang") == "de" and page.is_hidden("#lang")
    options = page.eval_on_selector_all("#prompt-lang option", "els => els.map(e => [e.value, e.textContent])")
    assert options[:2] == [["", "en (default)"], ["en", "en"]] and ["de", "de (imagenet1k)"] in options
    page.click("#results .hit:nth-child(1)")
    page.fill("#labels", "Hund, Katze")
    with page.expect_request(lambda r: "/api/classify/indexed" in r.url) as sent:
        page.click("#classify")
    body = sent.value.post_data_json
    assert isinstance(body.pop("id"), int)
    assert body == {"labels": ["Hund", "Katze"], "k": 2, "prompt_lang": "de", "templates": "imagenet1k"}
    page.wait_for_selector("#labels-out li")
    assert page.eval_on_selector_all("#labels-out li", "els => els.length") == 2
    page.select_option("#prompt-lang", "ja")
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)["prompt_lang"] == ["ja"]
