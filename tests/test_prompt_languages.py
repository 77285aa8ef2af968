"""Built-in prompt templates and class names in other languages (``eval/templates/<lang>/``,
``eval/classnames/<lang>/``, from clip_benchmark): every shipped file loads and matches its English
set, an unknown language is one clear error, and ``--prompt-language`` reaches the texts that
``classify`` and ``eval zeroshot`` encode."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest
from PIL import Image
from test_eval_benchmark import write_benchmark

from clipforge.checkpoint import save_checkpoint
from clipforge.cli.main import main
from clipforge.eval import zeroshot
from clipforge.eval.prompts import (
    PromptLanguageError,
    builtin_classnames,
    builtin_templates,
    classname_languages,
    load_classnames,
    load_templates,
    template_languages,
)
from clipforge.tokenizer import get_tokenizer

EVAL = Path(str(resources.files("clipforge.eval")))
CURATED_TEMPLATES = {"ar": 55, "it": 49, "ja": 37, "zh": 80}  # clip_benchmark's own sets; the rest: 80, NLLB's
CLASSNAME_LANGUAGES = ["en", "ar", "it", "ja", "zh"]


def _language_files(kind: str) -> list[Path]:
    return sorted(p for p in (EVAL / kind).glob("*/*.txt"))


def test_the_shipped_languages():
    imagenet = template_languages("imagenet1k")
    assert imagenet[0] == "en" and len(imagenet) == 90 and {"de", "fr", "ja", "zh", "ar", "sw"} <= set(imagenet)
    assert classname_languages("imagenet1k") == CLASSNAME_LANGUAGES
    assert template_languages("default") == ["en"] and classname_languages("cifar100") == ["en"]
    for kind in ("templates", "classnames"):
        folders = [p for p in (EVAL / kind).iterdir() if p.is_dir() and p.name != "__pycache__"]
        assert folders and all(re.fullmatch(r"[a-z]{2}", p.name) for p in folders), kind  # ISO 639-1
        notice = (EVAL / kind / "NOTICE.md").read_text(encoding="utf-8")
        assert "clip_benchmark" in notice and "MIT License" in notice
        assert all(re.search(rf"\b{p.name}\b", notice) for p in folders), kind  # every language's source named
    assert "babel" not in " ".join(p.name.lower() for p in EVAL.rglob("*"))


@pytest.mark.parametrize("kind", ["templates", "classnames"])
def test_every_language_file_loads_like_its_english_set(kind):
    files = _language_files(kind)
    assert len(files) == (89 if kind == "templates" else 4)
    for path in files:
        name, language = path.stem, path.parent.name
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# ") and "Source: " in lines[1], path  # where it came from
        entries = [line for line in lines if not line.startswith("#")]
        assert all(e and e == " ".join(e.split()) for e in entries), path  # no blank or padded lines
        if kind == "templates":
            assert name in builtin_templates()
            loaded = load_templates(name, language=language)
            assert len(loaded) == CURATED_TEMPLATES.get(language, 80), path
            assert all("{c}" not in t for t in loaded)  # written {} as the English files
        else:
            assert name in builtin_classnames()
            loaded = load_classnames(name, language=language)
            assert len(loaded) == len(load_classnames(name)), path  # the same classes, in the same order
        assert loaded == entries


def test_translated_class_names_keep_imagenet_order():
    english = load_classnames("imagenet1k")
    assert load_classnames("imagenet1k", language="zh")[:2] == ["丁鲷", "金鱼"]  # tench, goldfish
    assert load_classnames("imagenet1k", language="ja")[1] == "金魚"
    assert load_classnames("imagenet1k", language="en") == english == load_classnames("imagenet1k", language=None)
    german = load_templates("imagenet1k", language="de")
    assert german[0] == "ein schlechtes Foto von einem {} ." and len(german) == len(load_templates("imagenet1k"))


def test_a_language_a_set_is_not_in_is_one_clear_error(tmp_path):
    with pytest.raises(PromptLanguageError) as e:
        load_templates("imagenet1k", language="xx")
    message = str(e.value)
    assert message.startswith("`language='xx'`: the built-in template set 'imagenet1k' is not in that language")
    assert "(it is in en, af, am, ar," in message
    default = r"'default' is not in that language \(it is in en\); in de: imagenet1k"
    with pytest.raises(PromptLanguageError, match=default):
        load_templates("default", language="de")
    names = r"'imagenet1k' is not in that language \(it is in en, ar, it, ja, zh\)$"
    with pytest.raises(PromptLanguageError, match=names):
        load_classnames("imagenet1k", language="de")  # German templates exist, German class names do not
    with pytest.raises(PromptLanguageError, match="languages are ISO 639-1 codes, as de or ja"):
        load_classnames("imagenet1k", language="deu_Latn")  # NLLB's code is --language's, not this one's
    assert isinstance(PromptLanguageError("xx", "why"), ValueError)
    own = tmp_path / "mine.txt"
    own.write_text("eine Zeichnung von {}\n", encoding="utf-8")
    assert load_templates(own, language="de") == ["eine Zeichnung von {}"]  # a file is read as it is


def _one_error_line(argv: list[str], capsys) -> str:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_cli_names_the_prompt_language_flag(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    line = _one_error_line(["classify", str(image), "--model", "unused", "--labels", "a,b", "--templates",
                            "imagenet1k", "--prompt-language", "xx"], capsys)  # fmt: skip
    assert line.startswith("clipforge classify: error: --prompt-language xx: the built-in template set 'imagenet1k'")
    assert "--language" not in line.replace("--prompt-language", "")  # not NLLB's tokenizer flag
    line = _one_error_line(["classify", str(image), "--model", "unused", "--labels-file", "imagenet1k",
                            "--prompt-language", "de", "--language", "deu_Latn"], capsys)  # fmt: skip
    assert line.startswith("clipforge classify: error: --prompt-language de: the built-in class-name list")
    line = _one_error_line(["eval", "zeroshot", str(tmp_path), "--model", "unused", "--templates", "cifar",
                            "--prompt-language", "ja"], capsys)  # fmt: skip
    assert line == (
        "clipforge eval: error: --prompt-language ja: the built-in template set 'cifar' is not in that language "
        "(it is in en); in ja: imagenet1k"
    )
    bench = write_benchmark(tmp_path)  # brings its own (English) templates: the language needs --templates
    line = _one_error_line(["eval", "zeroshot", str(bench), "--model", "unused", "--prompt-language", "ja"], capsys)
    assert line.startswith("clipforge eval: error: --prompt-language ja needs --templates naming a built-in set")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model) -> Path:
    model = tiny_model(seed=0, embed_dim=16, vocab_size=49408)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(path, model, tokenizer=get_tokenizer("openai", context_length=16))


@pytest.fixture
def encoded(monkeypatch) -> list[str]:
    """Every text the zero-shot classifiers encode (``clipforge.eval.zeroshot.encode_texts``)."""
    texts: list[str] = []
    real = zeroshot.encode_texts

    def recording(model, tokenizer, batch, **kwargs):
        texts.extend(batch)
        return real(model, tokenizer, batch, **kwargs)

    monkeypatch.setattr(zeroshot, "encode_texts", recording)
    return texts


def _prompts(labels: list[str], templates: list[str]) -> list[str]:
    return [zeroshot.fill_template(t, label) for label in labels for t in templates]


@pytest.mark.full_suite
def test_classify_encodes_the_templates_of_the_prompt_language(checkpoint, encoded, tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    argv = ["classify", str(image), "--model", str(checkpoint), "--labels", "Hund,Katze", "--templates", "imagenet1k",
            "--precision", "fp32", "--json", "--no-progress"]  # fmt: skip
    assert main([*argv, "--prompt-language", "de"]) == 0
    assert json.loads(capsys.readouterr().out)["labels"] == ["Hund", "Katze"]
    german = load_templates("imagenet1k", language="de")
    assert encoded == _prompts(["Hund", "Katze"], german)
    assert "ein schlechtes Foto von einem Hund ." in encoded
    encoded.clear()
    assert main(argv) == 0  # no flag: English, as before
    assert encoded == _prompts(["Hund", "Katze"], load_templates("imagenet1k"))


@pytest.mark.full_suite
def test_eval_zeroshot_encodes_the_templates_of_the_prompt_language(checkpoint, encoded, tmp_path):
    for colour, rgb in (("rosso", (220, 30, 30)), ("blu", (30, 60, 220))):
        (tmp_path / "data" / colour).mkdir(parents=True)
        Image.new("RGB", (32, 32), rgb).save(tmp_path / "data" / colour / "0.png")
    out = tmp_path / "r.json"
    argv = ["eval", "zeroshot", str(tmp_path / "data"), "--model", str(checkpoint), "--templates", "imagenet1k",
            "--prompt-language", "it", "--precision", "fp32", "--no-progress", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["prompt_language"] == "it" and result["templates"] == "imagenet1k" and result["n_images"] == 2
    assert encoded == _prompts(["blu", "rosso"], load_templates("imagenet1k", language="it"))


# -- the HTTP API: `prompt_lang` per request, the server's default (serve --prompt-language) ---------------------
def _service(tmp_path: Path, **options):
    """A search service over three photos indexed with the tiny stand-in encoder (no NLLB codes)."""
    from search_fixtures import make_folder, tiny_encoder

    from clipforge.index import ImageIndex, IndexStore, index_folder
    from clipforge.serve import SearchService

    root, db = tmp_path / "photos", tmp_path / "i.cfidx"
    if not db.exists():
        make_folder(root, 3)
        with IndexStore(db, create=True) as store:
            index_folder(root, store, tiny_encoder(), num_workers=0, progress=False)
    return SearchService(ImageIndex.open(db, encoder=tiny_encoder()), **options)


def _client(service):
    from fastapi.testclient import TestClient

    from clipforge.serve import create_app

    return TestClient(create_app(service), base_url="http://127.0.0.1")


def _scores(service, labels: list[str], templates: list[str], image_id: int) -> dict[str, float]:
    """What a classifier built directly with ``templates`` gives the indexed image ``image_id``."""
    import torch

    from clipforge.eval.classifier import ZeroShotClassifier

    enc = service.encoder
    clf = ZeroShotClassifier(enc.model, enc.tokenizer, labels, templates)
    features = torch.from_numpy(service.index.store.embedding_of(image_id))[None]  # (1, E)
    return dict(zip(labels, clf.scores_from_features(features)[0].tolist(), strict=True))


@pytest.mark.full_suite
def test_http_classify_encodes_the_templates_of_prompt_lang(tmp_path, encoded):
    pytest.importorskip("fastapi")
    service = _service(tmp_path)
    labels, german = ["Hund", "Katze"], load_templates("imagenet1k", language="de")
    some_id = next(iter(service.index.store.files().values()))[0]
    png = next((tmp_path / "photos").rglob("*.png")).read_bytes()
    with _client(service) as client:
        listed = client.get("/api/prompt-languages").json()
        assert listed["prompt_language"] == "en" and listed["templates"] == "default"
        assert list(listed["prompt_languages"])[0] == "en" and listed["prompt_languages"]["de"] == ["imagenet1k"]
        assert set(listed["prompt_languages"]["en"]) == set(builtin_templates())
        assert client.get("/api/languages").json() == {"language": None, "languages": []}  # NLLB's: apart
        body = {"id": some_id, "labels": labels, "templates": "imagenet1k", "prompt_lang": "de"}
        r = client.post("/api/classify/indexed", json=body)
        assert r.status_code == 200, r.text
        assert encoded == _prompts(labels, german)
        want = _scores(service, labels, german, some_id)
        assert {x["label"]: x["score"] for x in r.json()["labels"]} == pytest.approx(want, abs=1e-5)
        encoded.clear()
        params = {"labels": "Hund,Katze", "templates": "imagenet1k", "prompt_lang": "ja"}
        assert client.post("/api/classify", params=params, content=png).status_code == 200
        assert encoded == _prompts(labels, load_templates("imagenet1k", language="ja"))
        encoded.clear()
        assert client.post("/api/classify/indexed", json={"id": some_id, "labels": labels}).status_code == 200
        assert encoded == _prompts(labels, load_templates("default"))  # none named: English, as before
        # a language the set is not in: 400, one line naming prompt_lang (not lang), on both routes
        for r, starts in [
            (client.post("/api/classify/indexed", json={**body, "prompt_lang": "xx"}),
             "`prompt_lang='xx'`: the built-in template set 'imagenet1k' is not in that language"),
            (client.post("/api/classify", params={**params, "prompt_lang": "xx"}, content=png),
             "`prompt_lang='xx'`: the built-in template set 'imagenet1k' is not in that language"),
            (client.post("/api/classify/indexed", json={"id": some_id, "labels": labels, "prompt_lang": "de"}),
             "`prompt_lang='de'`: the built-in template set 'default' is not in that language (it is in en); in de:"),
            (client.post("/api/classify", params={"labels": "a,b", "prompt_lang": "deu_Latn"}, content=png),
             "`prompt_lang='deu_Latn'`: the built-in template set 'default'"),
        ]:  # fmt: skip
            detail = r.json()["detail"]
            assert r.status_code == 400 and "\n" not in detail and detail.startswith(starts), (r.status_code, detail)
        assert "ISO 639-1" in detail  # NLLB's code is lang's, not prompt_lang's


@pytest.mark.full_suite
def test_the_servers_prompt_language_is_the_default(tmp_path, encoded):
    pytest.importorskip("fastapi")
    service = _service(tmp_path, templates="imagenet1k", prompt_language="de")
    labels = ["Hund", "Katze"]
    some_id = next(iter(service.index.store.files().values()))[0]
    with _client(service) as client:
        listed = client.get("/api/prompt-languages").json()
        assert listed["prompt_language"] == "de" and listed["templates"] == "imagenet1k"
        assert client.post("/api/classify/indexed", json={"id": some_id, "labels": labels}).status_code == 200
        assert encoded == _prompts(labels, load_templates("imagenet1k", language="de"))
        encoded.clear()
        r = client.post("/api/classify/indexed", json={"id": some_id, "labels": labels, "prompt_lang": "en"})
        assert r.status_code == 200 and encoded == _prompts(labels, load_templates("imagenet1k"))
        r = client.post("/api/classify/indexed", json={"id": some_id, "labels": labels, "templates": "default"})
        detail = r.json()["detail"]
        assert r.status_code == 400 and detail.startswith("`prompt_lang='de'`: the built-in template set 'default'")
        assert detail.endswith("(the server's default prompt_lang: name one the set is in)")
    with pytest.raises(PromptLanguageError, match=r"^`prompt_language='de'`: the built-in template set 'default'"):
        _service(tmp_path, prompt_language="de")  # refused at start, not at the first request


@pytest.mark.full_suite
def test_eval_zeroshot_language_needs_an_nllb_model(checkpoint, tmp_path, capsys):
    """``--language`` is NLLB-CLIP's tokenizer code: a model without codes refuses it, one line naming it."""
    (tmp_path / "data" / "a").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(tmp_path / "data" / "a" / "0.png")
    line = _one_error_line(["eval", "zeroshot", str(tmp_path / "data"), "--model", str(checkpoint), "--precision",
                            "fp32", "--no-progress", "--language", "deu_Latn"], capsys)  # fmt: skip
    assert line.startswith("clipforge eval: error: --language deu_Latn was given, but only NLLB-CLIP tokenizers take")
