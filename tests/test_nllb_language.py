"""Per-query source-language codes of NLLB-CLIP tokenizers (issue #22): ``with_language`` gives
transformers' ``NllbTokenizer(src_lang=code)`` ids on the generated NLLB-layout vocabulary of
tests/assets/families (for each of its codes), survives metadata, pickling and ``save_hf``, refuses
unknown codes (with close matches) and tokenizers without codes; the code reaches the tokenizer from
``clipforge search`` / ``classify`` / ``serve`` / ``eval zeroshot`` (``--language``) and the HTTP API (``lang``), end to
end on the tiny NLLB-CLIP model of tests/assets/families."""

from __future__ import annotations

import json
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from search_fixtures import make_folder, tiny_encoder, write_image
from test_families_xlmr import ASSETS, NLLB_VOCAB, XLMR_VOCAB, open_clip_folder

from clipforge.cli.main import main
from clipforge.tokenizer import SentencePieceTokenizer, TokenizerError, get_tokenizer, with_language

CTX = 16
CODES = ("eng_Latn", "fra_Latn", "zho_Hans")  # the language codes of the generated vocabulary
GOLDEN = json.loads((ASSETS / "nllb_tokens.json").read_text())
TEXTS = GOLDEN["texts"]  # Latin, CJK, Arabic, Devanagari, Cyrillic, Hangul, emoji, clean-up cases, long


@pytest.fixture(scope="module")
def nllb() -> SentencePieceTokenizer:
    return SentencePieceTokenizer.from_hf_dir(NLLB_VOCAB, context_length=CTX)


def test_codes_come_from_the_vocabulary_and_switch_the_start_token(nllb):
    assert nllb.languages == CODES and nllb.language == "eng_Latn"
    chinese = nllb.with_language("zho_Hans")
    assert chinese.language == "zho_Hans" and nllb.language == "eng_Latn"  # the shared one is unchanged
    assert chinese._tk is nllb._tk  # the vocabulary is shared, not read again
    assert torch.equal(chinese(TEXTS), torch.tensor(GOLDEN["transformers_zho_Hans"]))
    assert torch.equal(with_language(nllb, "eng_Latn")(TEXTS), torch.tensor(GOLDEN["transformers"]))
    assert with_language(nllb, None) is nllb
    ids = {code: int(nllb.with_language(code)(["x"])[0, 0]) for code in CODES}
    assert sorted(ids.values()) == list(range(nllb.vocab_size - 3, nllb.vocab_size))  # the three code tokens


def test_ids_equal_transformers_nllb_tokenizer_for_every_code(nllb):
    transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")
    for code in nllb.languages:
        ref = transformers.NllbTokenizer.from_pretrained(str(NLLB_VOCAB), src_lang=code)
        want = ref(TEXTS, padding="max_length", truncation=True, max_length=CTX)["input_ids"]
        assert torch.equal(nllb.with_language(code)(TEXTS), torch.tensor(want)), code


def test_the_language_survives_metadata_pickling_and_save_hf(nllb, tmp_path):
    french = nllb.with_language("fra_Latn")
    want = french(TEXTS)
    again = SentencePieceTokenizer.from_metadata(french.to_metadata())  # the code is the bos_id
    assert again.language == "fra_Latn" and torch.equal(again(TEXTS), want)
    assert pickle.loads(pickle.dumps(french)).language == "fra_Latn"
    folder = french.save_hf(tmp_path / "fr")[0].parent
    assert json.loads((folder / "tokenizer_config.json").read_text())["src_lang"] == "fra_Latn"
    back = SentencePieceTokenizer.from_hf_dir(folder, context_length=CTX)
    assert back.language == "fra_Latn" and torch.equal(back(TEXTS), want)
    assert back.with_language("eng_Latn").languages == CODES


def test_an_unknown_code_is_an_error_with_close_matches(nllb):
    with pytest.raises(TokenizerError, match=r"`language='fra_latn'` is not one of this tokenizer's 3 language "
                                             r"codes \(close: fra_Latn"):  # fmt: skip
        nllb.with_language("fra_latn")
    with pytest.raises(TokenizerError, match=r"`language='de'` .*\(e\.g\. eng_Latn, fra_Latn, zho_Hans;"):
        with_language(nllb, "de")
    with pytest.raises(TokenizerError, match="must be a language code such as 'deu_Latn', got int"):
        with_language(nllb, 3)  # type: ignore[arg-type]


def test_tokenizers_without_language_codes_refuse_a_language():
    """CLIP's BPE and XLM-R's vocabulary (no codes; the language makes no difference to them): an error
    naming ``language``, rather than a code silently ignored."""
    xlmr = SentencePieceTokenizer.from_hf_dir(XLMR_VOCAB, context_length=CTX)
    assert xlmr.languages == () and xlmr.language is None
    for tok in (get_tokenizer("openai"), xlmr):
        with pytest.raises(TokenizerError, match=r"`language='deu_Latn'` was given, but only NLLB-CLIP tokenizers "
                                                 r"take a language .*leave `language=` out"):  # fmt: skip
            with_language(tok, "deu_Latn")
        assert with_language(tok, None) is tok


# -- end to end: a converted tiny NLLB-CLIP model, an index, the CLI and the HTTP API -----------------


def nllb_indexed(tmp: Path) -> dict:
    """The tiny NLLB-CLIP model converted under ``tmp``, six photos indexed with it (fp32) by the CLI,
    an fp32 encoder of it and the photos' stored embeddings and ids (by path)."""
    from clipforge.convert import convert
    from clipforge.index import Encoder, IndexStore

    ckpt = convert(open_clip_folder("nllb_tiny", tmp / "oc"), tmp / "ck", vocab=NLLB_VOCAB)
    root, db = tmp / "photos", tmp / "n.cfidx"
    for i in range(6):
        write_image(root / f"p{i}.png", seed=i)
    args = ["index", str(root), "--model", str(ckpt), "--db", str(db), "--no-progress", "--workers", "0"]
    assert main([*args, "--precision", "fp32"]) == 0
    encoder = Encoder.load(ckpt, device="cpu", precision="fp32", progress=False)
    with IndexStore(db) as store:
        ids = {path: i for path, (i, *_rest) in store.files().items()}
        images = {path: store.embedding_of(i) for path, i in ids.items()}
    return {"ckpt": ckpt, "db": db, "root": root, "encoder": encoder, "images": images, "ids": ids}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    return nllb_indexed(tmp_path_factory.mktemp("nllb-language"))


def _scores(indexed, text: str, language: str | None) -> dict[str, float]:
    """The cosine of ``text`` (tokenized with ``language``'s code) with each indexed photo."""
    query = indexed["encoder"].encode_texts([text], language=language)[0]  # (E,)
    return {path: float(emb @ query) for path, emb in indexed["images"].items()}


def _check_hits(hits: list[dict], want: dict[str, float]) -> None:
    assert len(hits) == len(want)
    assert all(abs(h["score"] - want[h["path"]]) <= 1e-5 for h in hits), (hits, want)


QUERY = "une photo d'un chat"


def test_the_code_changes_the_embedding(indexed):
    french, english = _scores(indexed, QUERY, "fra_Latn"), _scores(indexed, QUERY, None)
    assert english == _scores(indexed, QUERY, "eng_Latn")  # the model's own code
    assert max(abs(french[p] - english[p]) for p in french) > 1e-3  # so the tests below can tell them apart


def test_cli_search_and_classify_take_the_language(indexed, tmp_path, capsys):
    capsys.readouterr()
    assert main(["search", QUERY, "--db", str(indexed["db"]), "-k", "6", "--json", "--language", "fra_Latn"]) == 0
    _check_hits(json.loads(capsys.readouterr().out), _scores(indexed, QUERY, "fra_Latn"))

    from clipforge.eval.classifier import ZeroShotClassifier

    labels = ["un chat", "un chien", "une voiture"]
    templates = tmp_path / "plain.txt"
    templates.write_text("{}\n")
    image = indexed["root"] / "p0.png"
    args = ["classify", str(image), "--labels", ",".join(labels), "--templates", str(templates), "--model",
            str(indexed["ckpt"]), "--precision", "fp32", "-k", "3", "--json", "--no-progress"]  # fmt: skip
    enc = indexed["encoder"]
    features = torch.from_numpy(indexed["images"]["p0.png"])[None]  # (1, E)
    for language in ("fra_Latn", "zho_Hans"):
        assert main([*args, "--language", language]) == 0
        got = {x["label"]: x["score"] for x in json.loads(capsys.readouterr().out)["results"][0]["labels"]}
        clf = ZeroShotClassifier(enc.model, enc.tokenizer, labels, ["{}"], language=language)
        want = dict(zip(labels, clf.scores_from_features(features)[0].tolist(), strict=True))
        assert got == pytest.approx(want, abs=1e-4), language


def test_cli_names_the_flag_for_a_bad_code(indexed, capsys):
    capsys.readouterr()
    assert main(["search", QUERY, "--db", str(indexed["db"]), "--language", "fra_latn"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clipforge search: error: --language fra_latn is not one of")
    assert "close: fra_Latn" in err[0]
    pytest.importorskip("fastapi")
    assert main(["serve", str(indexed["ckpt"]), "--db", str(indexed["db"]), "--language", "deu_Latn"]) == 1
    err = capsys.readouterr().err.strip().splitlines()  # refused before serving
    assert len(err) == 1 and err[0].startswith("clipforge serve: error: --language deu_Latn is not one of")


def test_http_api_takes_lang(indexed):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.index import ImageIndex
    from clipforge.serve import SearchService, create_app

    french, some_id = _scores(indexed, QUERY, "fra_Latn"), indexed["ids"]["p0.png"]
    service = SearchService(ImageIndex.open(indexed["db"], encoder=indexed["encoder"]))
    with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
        assert client.get("/api/languages").json() == {"language": "eng_Latn", "languages": list(CODES)}
        r = client.get("/api/search", params={"q": QUERY, "k": 6, "lang": "fra_Latn"})
        assert r.status_code == 200, r.text
        _check_hits(r.json()["hits"], french)
        plain = client.get("/api/search", params={"q": QUERY, "k": 6}).json()["hits"]
        _check_hits(plain, _scores(indexed, QUERY, None))
        posted = client.post("/api/search", json={"text": QUERY, "k": 6, "lang": "fra_Latn"})
        _check_hits(posted.json()["hits"], french)
        png = (indexed["root"] / "p1.png").read_bytes()
        both = client.post("/api/search/image", params={"text": QUERY, "k": 6, "lang": "fra_Latn"}, content=png)
        image = indexed["images"]["p1.png"]
        query = indexed["encoder"].encode_texts([QUERY], language="fra_Latn")[0] + image
        query /= np.linalg.norm(query)
        _check_hits(both.json()["hits"], {p: float(e @ query) for p, e in indexed["images"].items()})
        embedded = client.post("/api/embed/text", json={"texts": [QUERY], "lang": "zho_Hans"}).json()["embeddings"]
        want = indexed["encoder"].encode_texts([QUERY], language="zho_Hans")
        np.testing.assert_allclose(np.array(embedded), want, atol=1e-5)
        for route, kwargs in [
            ("/api/classify", {"params": {"labels": "chat,chien", "lang": "fra_Latn"}, "content": png}),
            ("/api/classify/indexed", {"json": {"id": some_id, "labels": ["chat", "chien"], "lang": "fra_Latn"}}),
        ]:
            assert client.post(route, **kwargs).status_code == 200, route
        # a bad code: 400, one line naming the query parameter, on every route that takes one
        for r in [
            client.get("/api/search", params={"q": QUERY, "lang": "fra_latn"}),
            client.post("/api/search", json={"text": QUERY, "lang": "fra_latn"}),
            client.post("/api/search", json={"id": some_id, "lang": "fra_latn"}),  # no text: still checked
            client.post("/api/search/image", params={"lang": "fra_latn"}, content=png),
            client.post("/api/classify", params={"labels": "a,b", "lang": "fra_latn"}, content=png),
            client.post("/api/classify/indexed", json={"id": some_id, "labels": ["a", "b"], "lang": "fra_latn"}),
            client.post("/api/embed/text", json={"texts": ["a"], "lang": "fra_latn"}),
        ]:
            detail = r.json()["detail"]
            assert r.status_code == 400 and "\n" not in detail, (r.status_code, detail)
            assert detail.startswith("`lang='fra_latn'` is not one of") and "close: fra_Latn" in detail
        assert client.get("/api/health").status_code == 200
    # the server's default language: queries that name none
    chinese = SearchService(ImageIndex.open(indexed["db"], encoder=indexed["encoder"]), language="zho_Hans")
    with TestClient(create_app(chinese), base_url="http://127.0.0.1") as client:
        assert client.get("/api/languages").json()["language"] == "zho_Hans"
        hits = client.get("/api/search", params={"q": QUERY, "k": 6}).json()["hits"]
        _check_hits(hits, _scores(indexed, QUERY, "zho_Hans"))
        _check_hits(client.get("/api/search", params={"q": QUERY, "k": 6, "lang": "fra_Latn"}).json()["hits"], french)
    with pytest.raises(TokenizerError, match="`language='zho_hans'`"):
        SearchService(ImageIndex.open(indexed["db"], encoder=indexed["encoder"]), language="zho_hans")


def test_http_lang_for_a_model_without_codes_is_400(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.index import ImageIndex, IndexStore, index_folder
    from clipforge.serve import SearchService, create_app

    root, db = tmp_path / "photos", tmp_path / "i.cfidx"
    make_folder(root, 3)
    encoder = tiny_encoder()  # a CLIP-style stand-in tokenizer: no language codes
    with IndexStore(db, create=True) as store:
        index_folder(root, store, encoder, num_workers=0, progress=False)
    service = SearchService(ImageIndex.open(db, encoder=encoder))
    with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
        assert client.get("/api/languages").json() == {"language": None, "languages": []}
        assert client.get("/api/search", params={"q": "a dog"}).status_code == 200
        r = client.get("/api/search", params={"q": "a dog", "lang": "deu_Latn"})
        assert r.status_code == 400
        assert r.json()["detail"].startswith("`lang='deu_Latn'` was given, but only NLLB-CLIP tokenizers take")


def test_text_batcher_encodes_each_language_apart():
    from clipforge.serve.batching import TextBatcher

    calls: list[tuple[str | None, list[str]]] = []
    started, release = threading.Event(), threading.Event()

    class Recording:
        def encode_texts(self, texts, *, language=None):
            calls.append((language, list(texts)))
            started.set()
            release.wait(10)  # hold the worker so that the next queries queue up together
            return np.array([[float(len(t)), 0.0 if language is None else float(len(language))] for t in texts])

    batcher = TextBatcher(Recording())
    try:
        first = threading.Thread(target=batcher.encode, args=("warm",))
        first.start()
        started.wait(10)
        results: dict[str, np.ndarray] = {}
        queued = [("a", None), ("bb", "fra_Latn"), ("ccc", None), ("dddd", "fra_Latn"), ("e", "zho_Hans")]
        threads = []
        for n, (text, lang) in enumerate(queued, 1):  # queued one after another behind the held call
            threads.append(threading.Thread(
                target=lambda t=text, lang=lang: results.__setitem__(t, batcher.encode(t, language=lang))
            ))  # fmt: skip
            threads[-1].start()
            while batcher._queue.qsize() < n:
                time.sleep(0.005)
        release.set()
        for t in [first, *threads]:
            t.join(10)
    finally:
        release.set()
        batcher.close()
    assert calls == [(None, ["warm"]), (None, ["a", "ccc"]), ("fra_Latn", ["bb", "dddd"]), ("zho_Hans", ["e"])]
    assert {t: v.tolist() for t, v in results.items()} == {
        "a": [1.0, 0.0], "bb": [2.0, 8.0], "ccc": [3.0, 0.0], "dddd": [4.0, 8.0], "e": [1.0, 8.0],
    }  # fmt: skip


@pytest.mark.full_suite
def test_eval_zeroshot_takes_the_language(indexed, tmp_path, monkeypatch):
    """``eval zeroshot --language``: the class embeddings are those of ``ZeroShotClassifier(language=)``."""
    import clipforge.eval.dataset_eval as dataset_eval
    from clipforge.eval.classifier import ZeroShotClassifier

    built: list[torch.Tensor] = []
    real = dataset_eval.build_classifier

    def recording(*args, **kwargs):
        built.append(real(*args, **kwargs).float().cpu())  # (C, E)
        return built[-1]

    monkeypatch.setattr(dataset_eval, "build_classifier", recording)
    for i, name in enumerate(("chat", "chien")):
        (tmp_path / "data" / name).mkdir(parents=True)
        (tmp_path / "data" / name / "0.png").write_bytes((indexed["root"] / f"p{i}.png").read_bytes())
    templates = tmp_path / "plain.txt"
    templates.write_text("une photo de {}\n")
    argv = ["eval", "zeroshot", str(tmp_path / "data"), "--model", str(indexed["ckpt"]), "--templates", str(templates),
            "--precision", "fp32", "--no-progress", "--out", str(tmp_path / "r.json")]  # fmt: skip
    enc = indexed["encoder"]
    for language in ("fra_Latn", None):
        assert main(argv + (["--language", language] if language else [])) == 0
        assert json.loads((tmp_path / "r.json").read_text()).get("language") == language
        want = ZeroShotClassifier(enc.model, enc.tokenizer, ["chat", "chien"], ["une photo de {}"], language=language)
        torch.testing.assert_close(built[-1], want.class_embeddings, atol=1e-5, rtol=0)
    assert (built[0] - built[1]).abs().max() > 1e-3  # the code changed the text embeddings


def test_serve_takes_a_prompt_language(indexed, monkeypatch, capsys):
    """``serve --templates imagenet1k --prompt-language de`` reaches the service (and the page's list);
    a prompt language the server's set is not in is refused at start, one line naming the flag."""
    pytest.importorskip("fastapi")
    import clipforge.serve

    apps = []
    monkeypatch.setattr(clipforge.serve, "run_server", lambda app, **options: apps.append(app))
    argv = ["serve", str(indexed["ckpt"]), "--db", str(indexed["db"]), "--language", "fra_Latn"]
    assert main([*argv, "--templates", "imagenet1k", "--prompt-language", "de"]) == 0
    service = apps[0].state.service
    assert (service.language, service.templates, service.prompt_language) == ("fra_Latn", "imagenet1k", "de")
    assert service.prompt_languages()["prompt_language"] == "de"
    capsys.readouterr()
    assert main([*argv, "--prompt-language", "de"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["clipforge serve: error: --prompt-language de: the built-in template set 'default' is not in that "
                   "language (it is in en); in de: imagenet1k"]  # fmt: skip
