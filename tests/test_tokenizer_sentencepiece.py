"""SigLIP / SigLIP 2 / XLM-R (MetaCLIP 2) tokenizers: reference ids on a varied multilingual corpus
(golden asset made by transformers' SiglipTokenizer / Siglip2Tokenizer / XLMRobertaTokenizer, and
big_vision's SigLIP 2 text recipe), metadata round trips, Hugging Face files, errors."""

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clipforge.tokenizer import (
    SentencePieceTokenizer,
    Tokenizer,
    TokenizerError,
    get_tokenizer,
    tokenizer_from_metadata,
)

pytest.importorskip("sentencepiece", reason="SigLIP's spiece.model needs sentencepiece (clipforge[siglip])")

ASSETS = Path(__file__).parent / "assets" / "sentencepiece"
KINDS = ("siglip", "siglip2", "xlmr")
GOLDEN = np.load(ASSETS / "golden.npz")
CTX = GOLDEN["siglip"].shape[1]
# The Hub's SigLIP 2 folders (GemmaTokenizer) are read with big_vision's recipe for the released weights.
GOLDEN_KEY = {"siglip": "siglip", "siglip2": "siglip2_big_vision", "xlmr": "xlmr"}


def golden_rows() -> list[str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", ASSETS / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.corpus_rows()


ROWS = golden_rows()


def tokenizer(kind: str, ctx: int = CTX) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.from_hf_dir(ASSETS / kind, context_length=ctx)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.full_suite
def test_reference_ids_on_the_corpus(kind):
    want = GOLDEN[GOLDEN_KEY[kind]].astype(np.int64)
    assert len(want) == len(ROWS) > 10_000
    got = tokenizer(kind)(ROWS).numpy()
    bad = np.flatnonzero((got != want).any(axis=1))
    assert not len(bad), [(ROWS[i][:60], want[i].tolist(), got[i].tolist()) for i in bad[:5]]


@pytest.mark.full_suite
def test_transformers_siglip2_rules_stay_available():
    """clean="lower" without an end token is transformers' Siglip2Tokenizer, id for id."""
    bv = tokenizer("siglip2")
    meta = {**bv.to_metadata(), "clean": "lower", "add_eos": False}
    tok = tokenizer_from_metadata(meta)
    want = GOLDEN["siglip2"].astype(np.int64)
    got = tok(ROWS).numpy()
    bad = np.flatnonzero((got != want).any(axis=1))
    assert not len(bad), [(ROWS[i][:60], want[i].tolist(), got[i].tolist()) for i in bad[:5]]


def test_text_rules():
    sig, sig2 = tokenizer("siglip"), tokenizer("siglip2")
    # SigLIP: lower-cased, punctuation dropped, end token, padded with </s> (= pad) to the context
    assert sig(["A Cat!!"])[0].tolist() == sig(["a cat"])[0].tolist()
    row = sig(["a cat"])[0].tolist()
    assert row[len(sig.encode("a cat"))] == sig.eos_id == sig.pad_id == 1 and len(row) == CTX
    # SigLIP 2 (big_vision): A-Z lower-cased only, no bos, the end token <eos> = 1, padded with <pad> = 0
    assert sig2(["A Cat!!"])[0].tolist() == sig2(["a cat!!"])[0].tolist() != sig2(["a cat"])[0].tolist()
    assert sig2.clean == "lower_ascii" and not sig2.add_bos and sig2.add_eos
    n = len(sig2.encode("a cat"))
    row = sig2(["a cat"])[0]
    assert row[n] == sig2.eos_id == 1 and row[n + 1 :].eq(0).all() and sig2.pad_id == 0
    assert sig2.encode("\u00c9cole \u03a3") != sig2.encode("\u00e9cole \u03c3")  # tf.strings.lower: ASCII only
    # truncation keeps the end token (big_vision's eos="sticky")
    long = " ".join(["photo"] * 100)
    for tok in (sig, sig2):
        tokens, lengths = tok.encode_batch([long, "a"])
        assert tokens[0, -1] == tok.eos_id and lengths.tolist() == [CTX, len(tok.encode("a")) + 1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.full_suite
def test_metadata_round_trip_and_pickle(kind):
    tok = tokenizer(kind)
    meta = json.loads(json.dumps(tok.to_metadata()))
    again = tokenizer_from_metadata(meta)
    assert isinstance(again, SentencePieceTokenizer)
    assert torch.equal(again(ROWS[:300]), tok(ROWS[:300]))
    assert torch.equal(pickle.loads(pickle.dumps(tok))(ROWS[:50]), tok(ROWS[:50]))
    with pytest.raises(TokenizerError, match="keys"):
        tokenizer_from_metadata({k: v for k, v in meta.items() if k != "clean"})
    with pytest.raises(TokenizerError, match="vocab_size"):
        tokenizer_from_metadata({**meta, "vocab_size": 5})
    with pytest.raises(TokenizerError, match="unknown tokenizer kind"):
        tokenizer_from_metadata({**meta, "kind": "wordpiece"})
    with pytest.raises(TokenizerError, match="kind"):
        Tokenizer.from_metadata(meta)  # the CLIP BPE class refuses other kinds


@pytest.mark.parametrize("kind", KINDS)
def test_get_tokenizer_reads_the_folders_and_save_hf_round_trips(kind, tmp_path):
    tok = get_tokenizer(ASSETS / kind, context_length=CTX)
    assert isinstance(tok, SentencePieceTokenizer)
    tok.save_hf(tmp_path)
    again = get_tokenizer(tmp_path, context_length=CTX)
    assert torch.equal(again(ROWS[:500]), tok(ROWS[:500]))


@pytest.mark.reference
@pytest.mark.parametrize("kind", KINDS)
def test_saved_files_give_transformers_the_same_ids(kind, tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = tokenizer(kind)
    if kind == "siglip2":  # transformers cannot hold big_vision's recipe: its Siglip2Tokenizer rules can
        ours = tokenizer_from_metadata({**ours.to_metadata(), "clean": "lower", "add_eos": False})
    ours.save_hf(tmp_path)
    ref = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in ROWS[:200:7] + ["A Photo OF a CAT!!"]:
        want = ref(text, padding="max_length", truncation=True, max_length=CTX)["input_ids"]
        assert ours([text])[0].tolist() == want, text


@pytest.mark.reference
def test_where_transformers_differs_from_big_vision_on_siglip2():
    """transformers 5.x reads a Hub SigLIP 2 folder (GemmaTokenizer) with left padding, no end token and
    no lower-casing; clipforge follows big_vision. Pinned so a change in transformers is noticed."""
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(ASSETS / "siglip2", padding_side="left")
    text = "A Photo OF a CAT"
    theirs = ref(text, padding="max_length", max_length=CTX)["input_ids"]
    ours = tokenizer("siglip2")([text])[0].tolist()
    body = ref(text.lower(), add_special_tokens=False)["input_ids"]
    assert ours == body + [1] + [0] * (CTX - len(body) - 1)
    assert theirs != ours and theirs[-1] != 1 and theirs[0] == 0  # left-padded, no <eos>


def test_decode():
    sig2 = tokenizer("siglip2")
    assert sig2.decode(sig2(["a photo of a cat"])[0]) == "a photo of a cat"
    sig = tokenizer("siglip")
    assert sig.decode(sig(["A photo, of a cat!"])[0]) == "a photo of a cat"
    with pytest.raises(TokenizerError, match="outside"):
        sig.decode([10**6])


def test_bad_inputs(tmp_path):
    tok = tokenizer("siglip")
    with pytest.raises(TokenizerError, match="str"):
        tok([b"bytes"])
    assert tok(["\ud800 lone surrogate"]).shape == (1, CTX)  # replaced, not a crash
    with pytest.raises(TokenizerError, match="SiglipTokenizer folder without spiece.model"):
        shutil.copy(ASSETS / "siglip" / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
        SentencePieceTokenizer.from_hf_dir(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(TokenizerError, match="not a SentencePiece tokenizer clipforge reads"):
        SentencePieceTokenizer.from_hf_dir(tmp_path)
    with pytest.raises(TokenizerError, match="no tokenizer files|tokenizer directory"):
        get_tokenizer(tmp_path / "nowhere")
