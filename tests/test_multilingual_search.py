"""Multilingual search end to end, for two multilingual families: a (tiny, random) MetaCLIP 2 model
with its XLM-R-layout vocabulary, and open_clip's XLM-RoBERTa text tower (``xlm-roberta-*``: the
tiny golden model of tests/assets/families). ``clipforge index`` a folder, then ``clipforge search``
and the HTTP API (percent-encoded URLs) with queries in five scripts (CJK without spaces, Arabic
right-to-left, Devanagari, Cyrillic, Hangul) give the ranking of the reference's own embeddings for
the same weights and images (transformers' ``MetaClip2Model``, live; open_clip's, recorded by
tests/assets/families/make_golden_hf_text.py from its own preprocessing and tokenizer);
``clipforge classify`` ranks labels in those scripts as the reference does."""

import json
import shutil
import urllib.parse
from pathlib import Path

import pytest
import torch
from PIL import Image
from search_fixtures import write_image
from test_families_xlmr import XLMR_VOCAB
from test_families_xlmr import open_clip_folder as xlmr_open_clip_folder

from clipforge.api import load
from clipforge.cli.main import main
from clipforge.convert import convert
from clipforge.data.transforms import image_transform

pytestmark = pytest.mark.reference

QUERIES = ["一只猫在沙发上", "قطة على الشاطئ", "एक बिल्ली की तस्वीर", "кошка на пляже", "해변의 고양이"]
XLMR_SEARCH = Path(__file__).parent / "assets" / "families" / "xlmr_search"


def _index(root: Path, ckpt: Path, db: Path) -> None:
    code = main(["index", str(root), "--model", str(ckpt), "--db", str(db), "--no-progress", "--workers", "0"])
    assert code == 0


def _metaclip2(tmp: Path) -> dict:
    pytest.importorskip("transformers", reason="transformers is the reference implementation")
    from test_metaclip2 import metaclip2_folder

    ref, tok = metaclip2_folder(tmp / "hf", "gelu")
    ckpt = convert(tmp / "hf", tmp / "ck")
    root, db = tmp / "photos", tmp / "m.cfidx"
    root.mkdir()
    names = [f"p{i}.png" for i in range(8)]
    for i, name in enumerate(names):
        write_image(root / name, seed=i)
    _index(root, ckpt, db)
    # the reference ranking: transformers' embeddings of the same preprocessed pixels and of its own ids
    cfg = load(ckpt, device="cpu", precision="fp32").model.config
    transform = image_transform(cfg.preprocess, cfg.image_size)
    pixels = torch.stack([transform(Image.open(root / n).convert("RGB")) for n in names])
    with torch.no_grad():
        images = ref.get_image_features(pixel_values=pixels)
        images = images if isinstance(images, torch.Tensor) else images.pooler_output
        ids = tok(QUERIES, padding="max_length", truncation=True, max_length=16, return_tensors="pt")["input_ids"]
        texts = ref.get_text_features(input_ids=ids)
        texts = texts if isinstance(texts, torch.Tensor) else texts.pooler_output
    scores = torch.nn.functional.normalize(texts, dim=-1) @ torch.nn.functional.normalize(images, dim=-1).T
    order = scores.argsort(dim=1, descending=True)  # (queries, photos)
    want = {q: [names[j] for j in row.tolist()] for q, row in zip(QUERIES, order, strict=True)}
    labels = [[QUERIES[j] for j in col.tolist()] for col in scores.argsort(dim=0, descending=True).T]  # per photo
    return {"db": db, "want": want, "ckpt": ckpt, "root": root, "names": names, "labels": labels}


def _xlmr(tmp: Path) -> dict:
    golden = json.loads((XLMR_SEARCH / "ranking.json").read_text())
    assert golden["queries"] == QUERIES and golden["margin"] > 1e-4  # no near-ties for float noise to flip
    ckpt = convert(xlmr_open_clip_folder("xlmr_tiny", tmp / "oc"), tmp / "ck", vocab=XLMR_VOCAB)
    root, db = tmp / "photos", tmp / "x.cfidx"
    shutil.copytree(XLMR_SEARCH, root, ignore=shutil.ignore_patterns("*.json"))
    _index(root, ckpt, db)
    names = sorted(golden["labels"])
    labels = [golden["labels"][n] for n in names]
    return {"db": db, "want": golden["photos"], "ckpt": ckpt, "root": root, "names": names, "labels": labels}


@pytest.fixture(scope="module", params=["metaclip2", "xlm-roberta"])
def indexed(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"multilingual-{request.param}")
    found = _metaclip2(tmp) if request.param == "metaclip2" else _xlmr(tmp)
    assert len({tuple(v) for v in found["want"].values()}) > 1  # the queries rank the photos differently
    return found


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.full_suite
def test_cli_search_ranks_as_the_reference(indexed, query, capsys):
    capsys.readouterr()
    assert main(["search", query, "--db", str(indexed["db"]), "-k", "8", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["path"] for h in hits] == indexed["want"][query]


def test_http_api_takes_percent_encoded_queries(indexed):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clipforge.index import Encoder, ImageIndex
    from clipforge.serve import SearchService, create_app

    encoder = Encoder.load(indexed["ckpt"], device="cpu", precision="fp32", progress=False)
    service = SearchService(ImageIndex.open(indexed["db"], encoder=encoder))
    with TestClient(create_app(service), base_url="http://127.0.0.1") as client:
        for query in QUERIES:
            raw = client.get(f"/api/search?q={urllib.parse.quote(query)}&k=8")  # the URL as a browser sends it
            assert raw.status_code == 200, raw.text
            assert [h["path"] for h in raw.json()["hits"]] == indexed["want"][query]
            posted = client.post("/api/search", json={"text": query, "k": 8})
            assert [h["path"] for h in posted.json()["hits"]] == indexed["want"][query]


def test_cli_classify_ranks_labels_in_five_scripts_as_the_reference(indexed, tmp_path, capsys):
    templates = tmp_path / "plain.txt"
    templates.write_text("{}\n")  # the label itself: the reference embeds exactly that text
    image = indexed["root"] / indexed["names"][0]
    capsys.readouterr()
    code = main(["classify", str(image), "--labels", ",".join(QUERIES), "--templates", str(templates),
                 "--model", str(indexed["ckpt"]), "-k", str(len(QUERIES)), "--json"])  # fmt: skip
    assert code == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert [item["label"] for item in result["labels"]] == indexed["labels"][0]
