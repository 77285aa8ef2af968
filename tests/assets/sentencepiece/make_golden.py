"""Generate the SigLIP / SigLIP 2 tokenizer assets and the reference ids.

No real SigLIP or Gemma vocabulary can be downloaded here (and no PyPI package we found ships one),
so this script builds representative ones from the tokenizer test corpus (tests/assets/tokenizer):

    siglip/   spiece.model (SentencePiece Unigram, SigLIP's special layout: <pad>=0 </s>=1 <unk>=2)
              + tokenizer_config.json as on the Hub (SiglipTokenizer, eos = pad = "</s>")
    siglip2/  tokenizer.json (Gemma's layout: <pad>=0 <eos>=1 <bos>=2 <unk>=3 <mask>=4, 256 byte-fallback
              tokens, BPE, spaces as "\u2581", no pre-tokenisation) + tokenizer_config.json as on the Hub
              (GemmaTokenizer, add_bos_token=false)
    xlmr/     tokenizer.json (XLM-R's layout, as MetaCLIP 2's XLM-V: SentencePiece Unigram with NFKC's
              precompiled charsmap, <s>=0 <pad>=1 </s>=2 <unk>=3, pieces shifted by one, <mask> last), made by
              transformers' XLMRobertaTokenizer from a trained spm model + tokenizer_config.json
    golden.npz  xlmr: transformers' XLMRobertaTokenizer (AutoTokenizer on xlmr/) ids, as siglip below;
              siglip, siglip2: (rows, CTX) uint16 ids from transformers' SiglipTokenizer and
              Siglip2Tokenizer with padding="max_length", truncation=True, max_length=CTX;
              siglip2_big_vision: big_vision's SigLIP 2 text recipe for the released checkpoints,
              ``lower(key="text")|tok(length=CTX, model="gemma", bos="no", eos="sticky")`` (see
              big_vision_ids), the Gemma pieces from transformers' GemmaTokenizer on the same folder;
              rows: the corpus rows the references can encode (not lone surrogates) + special-token texts.

Run from the repository root (needs transformers, sentencepiece, protobuf):

    PYTHONPATH=src .venv/bin/python tests/assets/sentencepiece/make_golden.py
"""

from __future__ import annotations

import gzip
import io
import json
import re
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parent / "tokenizer" / "corpus.jsonl.gz"
CTX = 24  # short enough that long captions are truncated, long enough for most to be padded
EXTRA = [
    "a </s> cat", "</s>cat", "cat</s>", "<unk> dog", " </s> ", "\u2581cat", "a\u2581b", "A Photo OF a CAT!!",
    "a <eos> cat", "<bos>cat", "x <pad> y", "it's e.g. 3.5 m/s", "\u00c9COLE \u03a3\u039f\u03a6\u039f\u03a3",
]
_SURROGATE = re.compile("[\ud800-\udfff]")


def corpus_rows() -> list[str]:
    rows = [json.loads(line) for line in gzip.open(CORPUS, "rt", encoding="utf-8")]
    return [r for r in rows + EXTRA if not _SURROGATE.search(r)]


def build_siglip(rows: list[str], out: Path) -> None:
    import sentencepiece as spm

    train = [r for r in rows[:4000] if r.strip() and "\n" not in r]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train), model_writer=buf, vocab_size=1500, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
        character_coverage=0.98, minloglevel=2, input_sentence_size=4000, seed_sentencepiece_size=20000,
        num_threads=1,
    )
    out.mkdir(exist_ok=True)
    (out / "spiece.model").write_bytes(buf.getvalue())
    config = {"tokenizer_class": "SiglipTokenizer", "model_max_length": 64, "do_lower_case": True,
              "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def build_siglip2(rows: list[str], out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]
    tk = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tk.normalizer = normalizers.Replace(" ", "\u2581")
    tk.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")  # training only
    trainer = trainers.BpeTrainer(vocab_size=1800, special_tokens=specials, min_frequency=2,
                                  show_progress=False, limit_alphabet=300)
    tk.train_from_iterator([r.lower() for r in rows[:4000]], trainer)
    tk.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")  # Gemma's: a no-op
    tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    out.mkdir(exist_ok=True)
    tk.save(str(out / "tokenizer.json"))
    config = {"tokenizer_class": "GemmaTokenizer", "model_max_length": 64, "add_bos_token": False,
              "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
              "padding_side": "right"}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def reference_ids(tokenizer, rows: list[str]) -> np.ndarray:
    ids = [tokenizer(r, padding="max_length", truncation=True, max_length=CTX)["input_ids"] for r in rows]
    return np.asarray(ids, dtype=np.uint16)


def big_vision_ids(tokenizer, rows: list[str]) -> np.ndarray:
    """big_vision's pipeline, step by step: ``lower`` is ``tf.strings.lower`` (default encoding '':
    ASCII A-Z only); ``tok`` encodes without a start token and appends the end token; ``eos="sticky"``
    keeps it when the text is too long (``tokens[:CTX - 1] + [eos]``); then right padding with the
    tokenizer's pad id (``pp/proj/paligemma/ops.py``: ``tok``, ``tolen``)."""
    lower = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
    out = np.full((len(rows), CTX), tokenizer.pad_token_id, dtype=np.uint16)
    for i, row in enumerate(rows):
        ids = tokenizer(row.translate(lower), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = ids if len(ids) <= CTX else ids[: CTX - 1] + ids[-1:]
        out[i, : len(ids)] = ids
    return out


def build_xlmr(rows: list[str], out: Path) -> None:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2
    from transformers import XLMRobertaTokenizer

    train = [r for r in rows[:6000] if r.strip() and "\n" not in r]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(train), model_writer=buf, vocab_size=4000, model_type="unigram",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=0.995, minloglevel=2,
        input_sentence_size=6000, seed_sentencepiece_size=50000, num_threads=1, normalization_rule_name="nmt_nfkc",
    )  # fmt: skip
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(buf.getvalue())
    # fairseq's layout, as XLM-R's own conversion: four specials, the spm pieces after <unk>/<s>/</s>, <mask>
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p.piece, p.score) for p in proto.pieces[3:]] + [("<mask>", 0.0)]
    tok = XLMRobertaTokenizer(vocab=vocab, _spm_precompiled_charsmap=proto.normalizer_spec.precompiled_charsmap)
    tok.model_max_length = 77
    tok.save_pretrained(out)


def add_xlmr() -> None:
    """Add the ``xlmr`` vocabulary and ``xlmr`` ids to golden.npz (the other vocabularies are kept)."""
    from transformers import AutoTokenizer

    rows = corpus_rows()
    build_xlmr(rows, HERE / "xlmr")
    golden = dict(np.load(HERE / "golden.npz"))
    golden["xlmr"] = reference_ids(AutoTokenizer.from_pretrained(HERE / "xlmr"), rows)
    np.savez_compressed(HERE / "golden.npz", **golden)
    print({k: v.shape for k, v in golden.items()})


def add_big_vision() -> None:
    """Add ``siglip2_big_vision`` to an existing golden.npz (the vocabularies are kept as they are)."""
    from transformers import GemmaTokenizer

    golden = dict(np.load(HERE / "golden.npz"))
    golden["siglip2_big_vision"] = big_vision_ids(GemmaTokenizer.from_pretrained(HERE / "siglip2"), corpus_rows())
    np.savez_compressed(HERE / "golden.npz", **golden)
    print({k: v.shape for k, v in golden.items()})


def main() -> None:
    from transformers import Siglip2Tokenizer, SiglipTokenizer

    rows = corpus_rows()
    build_siglip(rows, HERE / "siglip")
    build_siglip2(rows, HERE / "siglip2")
    golden = {
        "siglip": reference_ids(SiglipTokenizer.from_pretrained(HERE / "siglip"), rows),
        "siglip2": reference_ids(Siglip2Tokenizer.from_pretrained(HERE / "siglip2"), rows),
    }
    np.savez_compressed(HERE / "golden.npz", **golden)
    add_big_vision()
    add_xlmr()


if __name__ == "__main__":
    import sys

    {"big_vision": add_big_vision, "xlmr": add_xlmr}.get(" ".join(sys.argv[1:]), main)()
