"""CLIP BPE tokenizer: OpenAI-exact ids (golden + live reference), clean-up, formats, training."""

from __future__ import annotations

import gzip
import json
import logging
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from clipforge.fileio import sha256_file
from clipforge.tokenizer import (
    Tokenizer,
    TokenizerError,
    ftfy_fast,
    get_tokenizer,
    train_bpe,
)
from clipforge.tokenizer.text import _pretokenizer, clean_chunks, clean_text, full_clean, pretokenize
from clipforge.tokenizer.vocab import (
    OPENAI_VOCAB_FILE,
    OPENAI_VOCAB_SHA256,
    base_tokens,
    byte_to_unicode,
    find_openai_vocab,
    packaged_openai_vocab,
    parse_merges,
)

ASSETS = Path(__file__).parent / "assets" / "tokenizer"
SPECIAL_WORDS = ("<start_of_text>", "<end_of_text>")


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    with gzip.open(ASSETS / "corpus.jsonl.gz", "rt", encoding="ascii") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def golden() -> list[list[int]]:
    data = np.load(ASSETS / "golden.npz")
    ends = np.cumsum(data["counts"])
    return [row.tolist() for row in np.split(data["ids"].astype(np.int64), ends[:-1])]


@pytest.fixture(scope="module")
def openai() -> Tokenizer:
    return Tokenizer.from_openai_vocab()  # shipped inside the package: never skipped


@pytest.fixture(scope="module")
def trained(corpus: list[str]) -> Tokenizer:
    return train_bpe(corpus[:3000], vocab_size=900, context_length=32, progress=False)


def pack(rows: list[list[int]], ctx: int, sot: int, eot: int) -> torch.Tensor:
    """open_clip's layout (checked against open_clip by make_golden.py)."""
    out = torch.zeros(len(rows), ctx, dtype=torch.long)
    for i, row in enumerate(rows):
        row = [sot] + row[: ctx - 2] + [eot]
        out[i, : len(row)] = torch.tensor(row)
    return out


def plain_rows(tok: Tokenizer, texts: list[str]) -> list[str]:
    """Texts that spell no special token (those put an end id mid-row, as OpenAI's does)."""
    return [t for t in texts if not any(w in SPECIAL_WORDS for w in pretokenize(clean_text(t)))]


# ----------------------------------------------------------------------------- OpenAI exactness


@pytest.mark.full_suite
def test_golden_ids_every_row(openai: Tokenizer, corpus: list[str], golden: list[list[int]]) -> None:
    assert len(corpus) == len(golden) >= 10_000
    mismatched = [
        i for i, (text, ids) in enumerate(zip(corpus, golden, strict=True)) if openai.encode(text) != ids
    ]
    assert not mismatched, f"{len(mismatched)} rows differ, first: {corpus[mismatched[0]]!r}"


@pytest.mark.parametrize("ctx", [77, 16, 5, 2])
@pytest.mark.full_suite
def test_golden_batch_truncation_padding_lengths(
    openai: Tokenizer, corpus: list[str], golden: list[list[int]], ctx: int
) -> None:
    tokens, lengths = openai.encode_batch(corpus, context_length=ctx)
    assert tokens.dtype == torch.long and tokens.shape == (len(corpus), ctx)
    assert torch.equal(tokens, pack(golden, ctx, openai.sot_token_id, openai.eot_token_id))
    expected = torch.tensor([min(len(ids), ctx - 2) + 2 for ids in golden])
    assert torch.equal(lengths, expected)
    assert (tokens[torch.arange(len(corpus)), lengths - 1] == openai.eot_token_id).all()
    assert torch.equal(openai(corpus, context_length=ctx), tokens)


def test_special_ids_and_sizes(openai: Tokenizer) -> None:
    assert (openai.vocab_size, openai.sot_token_id, openai.eot_token_id, openai.context_length) == (
        49408,
        49406,
        49407,
        77,
    )
    assert openai.encode("") == [] and openai.encode("a photo of a cat.") == [320, 1125, 539, 320, 2368, 269]
    assert openai("").tolist() == [[49406, 49407] + [0] * 75]
    # A caption spelling a special token gets its id, exactly as OpenAI's tokenizer does.
    assert openai.encode("x <end_of_text>") == openai.encode("x") + [openai.eot_token_id]


def test_argmax_is_end_token(openai: Tokenizer, corpus: list[str]) -> None:
    texts = plain_rows(openai, corpus[:3000])
    tokens, lengths = openai.encode_batch(texts)
    assert torch.equal(tokens.argmax(-1), lengths - 1)


def test_long_text_truncates_keeping_end(openai: Tokenizer) -> None:
    tokens, lengths = openai.encode_batch(["word " * 200, "short"], context_length=10)
    assert tokens[0].tolist() == [openai.sot_token_id] + [2653] * 8 + [openai.eot_token_id]
    assert lengths.tolist() == [10, 3]
    assert tokens[1, 3:].eq(0).all()


def test_context_length_defaults_and_errors(openai: Tokenizer) -> None:
    short = Tokenizer.from_merges(openai.merges, context_length=12)
    assert short("a cat").shape == (1, 12) and short(["a", "b"], context_length=20).shape == (2, 20)
    for bad in (1, 0, True, 7.0):
        with pytest.raises(TokenizerError, match="context_length"):
            openai("a cat", context_length=bad)
    with pytest.raises(TokenizerError, match="texts\\[1\\]"):
        openai(["ok", None])
    with pytest.raises(TokenizerError, match="texts\\[0\\]"):
        openai([b"bytes"])


def test_decode_round_trip(openai: Tokenizer, corpus: list[str]) -> None:
    for text in corpus[:2000]:
        words = pretokenize(clean_text(text))
        if any(w in SPECIAL_WORDS or "</w>" in w for w in words):
            continue
        assert openai.decode(openai.encode(text)) == "".join(w + " " for w in words), text
    row = openai("Hello, World!")[0]
    assert openai.decode(row[1 : int((row == openai.eot_token_id).nonzero()[0])]) == "hello , world ! "
    assert openai.decode(torch.tensor([openai.sot_token_id, 320])) == "<start_of_text>a "
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        openai.decode([49408])
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        openai.decode([-1])


def test_pickle_keeps_behaviour(openai: Tokenizer, corpus: list[str]) -> None:
    clone = pickle.loads(pickle.dumps(openai))
    assert torch.equal(clone(corpus[:500]), openai(corpus[:500]))
    openai.clear_cache()
    assert torch.equal(clone(corpus[:500]), openai(corpus[:500]))


@pytest.mark.reference
def test_live_open_clip(openai: Tokenizer, corpus: list[str]) -> None:
    tokenizer_module = pytest.importorskip("open_clip.tokenizer", reason="open_clip is not installed")
    reference = tokenizer_module.SimpleTokenizer()
    rng = random.Random(1)
    texts = rng.sample(corpus, 2000) + ["", "&amp;lt;b&amp;gt;", "ﬁ ＡＢＣ\u3000İ ΣΑΣ", "a\x0bb\x1cc\r\nd"]
    for ctx in (77, 9):
        assert torch.equal(openai(texts, context_length=ctx), reference(texts, context_length=ctx))
    for text in texts[:300]:
        ids = reference.encode(text)
        assert openai.decode(ids) == reference.decode(ids)


# ----------------------------------------------------------------------------- clean-up (no vocab)


@pytest.mark.full_suite
def test_clean_text_matches_reference_on_corpus(corpus: list[str]) -> None:
    diff = [t for t in corpus if clean_text(t) != full_clean(t)]
    assert not diff, f"{len(diff)} rows differ, first: {diff[0]!r}"


@pytest.mark.full_suite
def test_clean_chunks_equals_split_clean_text(corpus: list[str]) -> None:
    assert all(clean_chunks(t) == (clean_text(t).split(" ") if clean_text(t) else []) for t in corpus)
    # Lower-casing never creates or removes whitespace, for any code point ...
    spaces = []
    for cp in range(0x110000):
        c = chr(cp)
        assert any(x.isspace() for x in c.lower()) == c.isspace(), hex(cp)
        if c.isspace():
            spaces.append(c)
    # ... and final sigma looks no further than the next whitespace, whatever it is.
    for space in spaces + ["  \u2003"]:
        for text in (f"ΟΔΥΣ{space}ΣΕΥΣ", f"Σ{space}Α", f"ΑΣ{space}", f"ΑΣ.{space}Β", f"Α{space}Σ{space}Β"):
            assert " ".join(text.lower().split()) == " ".join(text.split()).lower(), repr(space)


def _ftfy_sensitive_text(rng: random.Random, pool: list[str]) -> str:
    ascii_bits = [
        "a",
        "b",
        "Z",
        " ",
        "  ",
        ".",
        ",",
        "!",
        "?",
        "'",
        "<",
        ">",
        "&",
        "&amp;",
        "&lt;",
        "&EACUTE;",
        "\n",
        "\r\n",
        "\t",
        "1",
        "x",
        "the",
        "caf",
        "\x1b[1m",
        "\x00",
    ]
    return "".join(
        rng.choice(pool) if rng.random() < 0.45 else rng.choice(ascii_bits) for _ in range(rng.randint(1, 14))
    )


def test_ftfy_shortcut_equals_ftfy_on_random_text() -> None:
    ftfy = pytest.importorskip("ftfy")
    plan = ftfy_fast._plan()
    assert plan is not None, "the installed ftfy 6.x should get the shortcut"
    named = sorted(ftfy_fast.chars_named_in(ftfy.badness.BADNESS_RE.pattern))
    pool = named + [
        chr(c)
        for c in (
            0x80,
            0x85,
            0x92,
            0x9D,
            0xFB01,
            0xFF21,
            0xFF0E,
            0x3000,
            0x2018,
            0x2019,
            0x201C,
            0x02BC,
            0x2028,
            0xFEFF,
            0x206A,
            0xD83D,
            0xDE00,
            0x0301,
            0x0308,
            0x00E9,
            0x00C3,
            0x00C2,
            0x4E00,
            0x1F600,
            0x05D0,
            0x0627,
            0xFF06,
        )
    ]
    rng = random.Random(0)
    texts = [_ftfy_sensitive_text(rng, pool) for _ in range(3000)]
    texts += ["cafÃ©", "â€™", "Ã¼ber", "voilÃ le", "caf\u00e9 \u00c3 ", "œ!", "x×²", "\u00c3 "]
    diff = [t for t in texts if ftfy_fast.fix_text(t) != ftfy.fix_text(t)]
    assert not diff, f"{len(diff)} texts differ, first: {diff[0]!r}"


def test_ftfy_detector_windows_are_sound() -> None:
    """The shortcut searches only windows around characters BADNESS_RE names: every alternative of
    the regex must require such a character, and no match may be longer than the window."""
    ftfy = pytest.importorskip("ftfy")
    parser = pytest.importorskip("re._parser", reason="CPython's regex parser is needed to inspect ftfy")
    pattern = ftfy.badness.BADNESS_RE
    tree = parser.parse(pattern.pattern, pattern.flags)
    ((op, (_, alternatives)),) = tree.data
    assert op == parser.BRANCH

    def named_only(item: tuple) -> bool:
        kind, arg = item
        if kind == parser.LITERAL:
            return arg >= 128
        if kind == parser.IN:
            return all(
                (k == parser.LITERAL and a >= 128) or (k == parser.RANGE and a[0] >= 128) for k, a in arg
            )
        return False

    for alternative in alternatives:
        assert any(named_only(item) for item in alternative.data), alternative
    assert ftfy_fast._plan().window == tree.getwidth()[1] == 7


def test_longest_match_is_the_widest_match_or_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one reader of CPython's private regex parser: widths it must get right, and the answer
    (None: search whole segments) when the parser is missing or changed."""
    assert ftfy_fast._longest_match(re.compile("ab?c")) == 3
    assert ftfy_fast._longest_match(re.compile("[\u00c0-\u00ff]{2}x|y")) == 3
    assert ftfy_fast._longest_match(re.compile("a+")) is None  # unbounded
    assert ftfy_fast._longest_match(re.compile("a{64}")) is None  # too wide to be worth windows

    def broken(name: str) -> None:
        raise ImportError(name)

    monkeypatch.setattr(ftfy_fast.importlib, "import_module", broken)
    assert ftfy_fast._longest_match(re.compile("ab")) is None


def test_ascii_pretokenizer_equals_unicode_pattern() -> None:
    rng = random.Random(0)
    pieces = [chr(c) for c in range(128)] + [
        "'s",
        "'S",
        "'ll",
        "'LL",
        "<start_of_text>",
        "<END_OF_TEXT>",
        "  ",
    ]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 30))) for _ in range(5000)]
    unicode_pattern = _pretokenizer()
    assert all(pretokenize(t) == unicode_pattern.findall(t) for t in texts)


def test_pretokenize_keeps_specials_and_contractions() -> None:
    assert pretokenize("it's <end_of_text>!! 2023 café") == [
        "it",
        "'s",
        "<end_of_text>",
        "!!",
        "2",
        "0",
        "2",
        "3",
        "café",
    ]
    assert pretokenize("!!<end_of_text>") == ["!!<", "end", "_", "of", "_", "text", ">"]


# ----------------------------------------------------------------------------- vocabulary files


def test_byte_table_and_base_tokens() -> None:
    table = byte_to_unicode()
    assert len(set(table)) == 256 and table[ord("a")] == "a" and table[ord(" ")] == "Ġ"
    tokens = base_tokens()
    assert tokens[0] == "!" and tokens[187] == "ÿ" and tokens[188] == chr(256) and tokens[256] == "!</w>"


def test_hf_files_round_trip(trained: Tokenizer, tmp_path: Path) -> None:
    vocab_json, merges_txt = trained.save_hf(tmp_path)
    vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
    assert vocab["<|startoftext|>"] == trained.sot_token_id and vocab["<|endoftext|>"] == trained.eot_token_id
    again = Tokenizer.from_hf_files(vocab_json, merges_txt, context_length=32)
    assert again.to_metadata() == trained.to_metadata()
    assert get_tokenizer(tmp_path, context_length=32).to_metadata() == trained.to_metadata()


def test_hf_files_must_agree(trained: Tokenizer, tmp_path: Path) -> None:
    vocab_json, merges_txt = trained.save_hf(tmp_path)
    vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
    a, b = list(vocab)[600:602]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    vocab_json.write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(TokenizerError, match="vocab.json: token .* has id"):
        Tokenizer.from_hf_files(vocab_json, merges_txt)
    vocab.pop(a)
    vocab_json.write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(TokenizerError, match="tokens but"):
        Tokenizer.from_hf_files(vocab_json, merges_txt)
    merges_txt.write_text("#version: 0.2\na b c\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="merges.txt: line 2"):
        Tokenizer.from_hf_files(vocab_json, merges_txt)
    with pytest.raises(TokenizerError, match="not a known token"):
        Tokenizer.from_merges([("ab", "c")])
    with pytest.raises(TokenizerError, match="rebuilds existing token"):
        Tokenizer.from_merges([("a", "b"), ("a", "b")])


@pytest.mark.reference
def test_hf_fast_tokenizer_agrees_on_plain_captions(
    openai: Tokenizer, corpus: list[str], tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers", reason="transformers is not installed")
    openai.save_hf(tmp_path)
    hf = transformers.CLIPTokenizerFast.from_pretrained(tmp_path)
    # HF's CLIP tokenizer has no ftfy/HTML clean-up and splits punctuation runs differently, so we
    # compare on simple captions only (letters, digits, single punctuation).
    texts = [t for t in corpus if re.fullmatch(r"[A-Za-z0-9 ,.?]*", t) and not re.search(r"[,.?]{2}", t)]
    assert len(texts) > 1000
    ours = openai(texts)
    theirs = hf(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")["input_ids"]
    mask = torch.arange(77) < openai.encode_batch(texts)[1][:, None]
    assert torch.equal(ours[mask], theirs[mask])


def test_metadata_round_trip(trained: Tokenizer) -> None:
    meta = trained.to_metadata()
    assert set(meta) == {"kind", "context_length", "vocab_size", "merges"}
    assert all(isinstance(v, (str, int)) for v in meta.values())
    again = Tokenizer.from_metadata(json.loads(json.dumps(meta)))
    assert again.to_metadata() == meta and again.merges == trained.merges and again.context_length == 32
    with pytest.raises(TokenizerError, match="keys"):
        Tokenizer.from_metadata({k: v for k, v in meta.items() if k != "merges"})
    with pytest.raises(TokenizerError, match="kind"):
        Tokenizer.from_metadata({**meta, "kind": "sentencepiece"})
    with pytest.raises(TokenizerError, match="vocab_size"):
        Tokenizer.from_metadata({**meta, "vocab_size": 49408})


def test_openai_metadata_round_trip(openai: Tokenizer) -> None:
    again = Tokenizer.from_metadata(openai.to_metadata())
    assert again.merges == openai.merges and again.vocab_size == 49408


def test_vocab_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLIPFORGE_VOCAB", raising=False)
    assert find_openai_vocab() == packaged_openai_vocab()  # the default needs no download
    monkeypatch.setenv("CLIPFORGE_VOCAB", str(tmp_path / "missing.txt.gz"))
    with pytest.raises(TokenizerError, match=re.escape(str(tmp_path / "missing.txt.gz"))):
        find_openai_vocab()
    with pytest.raises(TokenizerError, match="missing.txt.gz"):
        get_tokenizer("openai")
    (tmp_path / OPENAI_VOCAB_FILE).write_bytes(gzip.compress(b"header\nx y\n"))
    monkeypatch.setenv("CLIPFORGE_VOCAB", str(tmp_path / OPENAI_VOCAB_FILE))
    assert find_openai_vocab() == tmp_path / OPENAI_VOCAB_FILE
    with pytest.raises(TokenizerError, match="merges, CLIP needs 48894"):
        get_tokenizer("openai")
    with pytest.raises(TokenizerError, match="unknown tokenizer"):
        get_tokenizer(str(tmp_path / "nope"))


def test_packaged_vocab_is_openais_file() -> None:
    path = packaged_openai_vocab()
    assert sha256_file(path) == OPENAI_VOCAB_SHA256
    assert (path.parent / "LICENSE-openai-vocab.txt").is_file()  # MIT notice travels with it


def test_parse_merges_skips_header_and_blank_tail() -> None:
    assert parse_merges("#version: 0.2\na b\nab c\n\n") == [("a", "b"), ("ab", "c")]


# ----------------------------------------------------------------------------- training


def test_training_layout_and_round_trip(trained: Tokenizer, corpus: list[str]) -> None:
    assert trained.vocab_size == 900 and trained.eot_token_id == 899 and trained.sot_token_id == 898
    texts = plain_rows(trained, corpus[3000:4000])
    tokens, lengths = trained.encode_batch(texts)
    assert tokens.shape == (len(texts), 32) and int(tokens.max()) == trained.eot_token_id
    assert torch.equal(tokens.argmax(-1), lengths - 1)  # end token is the largest id
    for text in texts[:300]:
        words = pretokenize(clean_text(text))
        if not any("</w>" in w for w in words):
            assert trained.decode(trained.encode(text)) == "".join(w + " " for w in words)
    assert len(trained.encode("a photo of a dog")) < len("a photo of a dog")  # merges are used


def test_training_is_deterministic_and_checked(corpus: list[str], caplog: pytest.LogCaptureFixture) -> None:
    first = train_bpe(corpus[:500], vocab_size=700, progress=False)
    second = train_bpe(list(corpus[:500]), vocab_size=700, progress=False)
    assert first.merges == second.merges and len(first.merges) == 700 - 514
    with caplog.at_level(logging.WARNING):
        few = train_bpe(["a cat", "a cat", "a dog"], vocab_size=600, min_frequency=2, progress=False)
    assert few.vocab_size < 600 and "only" in caplog.text
    assert train_bpe([], vocab_size=514, progress=False).vocab_size == 514
    with pytest.raises(TokenizerError, match="at least 514"):
        train_bpe(["a"], vocab_size=513)
    with pytest.raises(TokenizerError, match="texts\\[1\\]"):
        train_bpe(["a", 3], vocab_size=600)
