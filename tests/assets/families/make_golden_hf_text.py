"""Generate the golden assets of open_clip's Hugging Face text towers (XLM-RoBERTa) for
tests/test_families_xlmr.py (run once, in the reference env, no network):

    /work/venv-ref/bin/python tests/assets/families/make_golden_hf_text.py   # open_clip 3.3.0, transformers 5.25

Each case is open_clip's own ``CustomTextCLIP``: its standard ViT image tower and an ``HFTextEncoder``
whose ``hf_model_name`` is a local folder holding a tiny ``XLMRobertaConfig`` (``hf_model_pretrained:
false``, so transformers builds it from the config with random weights and nothing is downloaded).
Every weight is then made non-trivial. The cases cover open_clip's poolers and projections:

    xlmr_tiny        mean_pooler, mlp proj (the xlm-roberta-* models' settings); the vocabulary of
                     tests/assets/sentencepiece/xlmr, whose tokenizer makes the multilingual token ids
    xlmr_cls_tiny    cls_pooler (transformers' tanh pooler on <s>), linear proj
    xlmr_first_tiny  cls_last_hidden_state_pooler (<s>'s features), no proj (width == embed_dim)
    nllb_tiny        a tiny M2M100Config (NLLB-CLIP's encoder: scaled embeddings, sinusoidal positions,
                     pre-norm ReLU blocks), cls_pooler (the first token: an encoder has no pooler), linear proj

Files per case (small: ~650 KB for the three):

    <case>.json                  {"model_cfg": open_clip's model config (hf_model_name: the folder's name),
                                  "hf_config": the XLMRobertaConfig as config.json holds it}
    <case>.safetensors           open_clip's state dict
    <case>.expected.safetensors  images, tokens and open_clip's normalised image and text features (fp32)

and ``xlmr_open_clip_tokens.json``: open_clip's ``HFTokenizer`` ids (its text clean-up, then the XLM-R
tokenizer of tests/assets/sentencepiece/xlmr) for texts the clean-up changes; ``xlmr_search/``: photos
and open_clip's rankings for multilingual queries (see :func:`search_golden`).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import torch
import transformers
from safetensors.torch import save_file
from transformers import M2M100Config, XLMRobertaConfig, XLMRobertaTokenizerFast

HERE = Path(__file__).parent
XLMR_VOCAB = HERE.parent / "sentencepiece" / "xlmr"
EMBED, IMAGE, CTX = 16, 16, 16
VISION = {"image_size": IMAGE, "layers": 2, "width": 16, "patch_size": 8, "head_width": 8}
TEXTS = [
    "a photo of a cat", "一只猫在沙发上", "قطة على الشاطئ", "एक बिल्ली की तस्वीर",
    "Katze 🐈 am Strand, sehr schön und lang!",
]  # fmt: skip
CASES = {  # case -> (vocab size, text width, pooler, proj)
    "xlmr_tiny": (4002, 16, "mean_pooler", "mlp"),
    "xlmr_cls_tiny": (520, 24, "cls_pooler", "linear"),
    "xlmr_first_tiny": (520, EMBED, "cls_last_hidden_state_pooler", None),
    # NLLB-CLIP's settings (nllb-clip-base): an M2M100 encoder, cls_pooler (its first token), linear proj
    "nllb_tiny": (520, 24, "cls_pooler", "linear"),
}


def tokens_for(case: str, vocab: int) -> torch.Tensor:
    if case == "xlmr_tiny":  # transformers' tokenizer, as open_clip's HFTokenizer calls it
        tok = XLMRobertaTokenizerFast.from_pretrained(str(XLMR_VOCAB))
        return tok(TEXTS, padding="max_length", truncation=True, max_length=CTX, return_tensors="pt")["input_ids"]
    tokens = torch.ones(3, CTX, dtype=torch.long)  # <pad> = 1
    first = vocab - 1 if case.startswith("nllb") else 0  # NLLB: a language code (the last ids); XLM-R: <s>
    for i, n in enumerate([3, CTX, 9]):  # first token, random ids, </s> = 2, padding
        tokens[i, 0], tokens[i, n - 1] = first, 2
        tokens[i, 1 : n - 1] = torch.randint(4, vocab, (n - 2,))
    return tokens


# Texts that open_clip's HFTokenizer cleans before transformers' tokenizer sees them (its default
# clean="whitespace": ftfy.fix_text, html.unescape twice, whitespace collapsed and stripped).
CLEANED_TEXTS = [
    "  a “quoted”   photo\tof\na cat  ", "fish &amp; chips", "caf\u00c3\u00a9 au lait", "ｆｕｌｌｗｉｄｔｈ  ＡＢＣ",
    "猫  と\u3000犬", "",
]  # fmt: skip


def open_clip_tokens() -> None:
    """``xlmr_open_clip_tokens.json``: open_clip's HFTokenizer ids for CLEANED_TEXTS (the test vocabulary)."""
    tok = open_clip.tokenizer.HFTokenizer(str(XLMR_VOCAB), context_length=CTX)
    ids = tok(CLEANED_TEXTS).tolist()
    record = {"context_length": CTX, "texts": CLEANED_TEXTS, "ids": ids}
    (HERE / "xlmr_open_clip_tokens.json").write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n")


# Multilingual search: queries in five scripts (CJK without spaces, Arabic right to left, Devanagari,
# Cyrillic, Hangul), as tests/test_multilingual_search.py sends them.
QUERIES = ["一只猫在沙发上", "قطة على الشاطئ", "एक बिल्ली की तस्वीर", "кошка на пляже", "해변의 고양이"]


def search_golden(model: torch.nn.Module) -> None:
    """``xlmr_search/``: eight small photos (random 4 x 4 colour blocks, 40 x 32 PNG) and ``ranking.json``:
    the order of the photos for each query, and of the queries for each photo, by open_clip's own
    embeddings (its preprocessing of the files, its HFTokenizer's ids) for the xlmr_tiny weights."""
    from PIL import Image

    folder = HERE / "xlmr_search"
    folder.mkdir(exist_ok=True)
    names = [f"p{i}.png" for i in range(8)]
    for i, name in enumerate(names):
        blocks = torch.randint(0, 256, (4, 4, 3), generator=torch.Generator().manual_seed(i), dtype=torch.uint8)
        pixels = blocks.repeat_interleave(8, dim=0).repeat_interleave(10, dim=1)  # (32, 40, 3)
        Image.fromarray(pixels.numpy()).save(folder / name)
    preprocess = open_clip.image_transform(IMAGE, is_train=False)
    tok = open_clip.tokenizer.HFTokenizer(str(XLMR_VOCAB), context_length=CTX)
    with torch.no_grad():
        images = model.encode_image(torch.stack([preprocess(Image.open(folder / n).convert("RGB")) for n in names]),
                                    normalize=True)  # fmt: skip
        texts = model.encode_text(tok(QUERIES), normalize=True)
    scores = texts @ images.T  # (queries, photos)
    by_query = scores.argsort(dim=1, descending=True)  # (queries, photos)
    by_photo = scores.argsort(dim=0, descending=True).T  # (photos, queries)
    record = {
        "queries": QUERIES,
        "photos": {q: [names[j] for j in row.tolist()] for q, row in zip(QUERIES, by_query, strict=True)},
        "labels": {n: [QUERIES[j] for j in col.tolist()] for n, col in zip(names, by_photo, strict=True)},
        "margin": float((scores.sort(dim=1).values.diff(dim=1)).min()),  # the closest two scores of a query
    }
    (folder / "ranking.json").write_text(json.dumps(record, ensure_ascii=False, indent=1) + "\n")


def nllb_tokenizer() -> None:
    """``nllb_vocab/``: a small NLLB-layout tokenizer (a BPE with Metaspace, as NLLB's, trained on a few
    multilingual texts; three language codes as special tokens; no real NLLB vocabulary can be had
    here) saved by transformers' ``NllbTokenizer``; ``nllb_tokens.json``: its ids (``src_lang``
    eng_Latn, then zho_Hans) and open_clip's ``HFTokenizer`` ids (its clean-up first) for test texts."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import NllbTokenizer

    corpus = [*TEXTS, *QUERIES, "une photo d'un chat", "the quick brown fox jumps over the lazy dog"] * 10
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    bpe.train_from_iterator(corpus, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    folder = HERE / "nllb_vocab"
    languages = ["eng_Latn", "fra_Latn", "zho_Hans"]
    tok = NllbTokenizer(vocab=model["vocab"], merges=merges, additional_special_tokens=languages)
    tok.save_pretrained(folder)
    texts = [*TEXTS, *QUERIES, *CLEANED_TEXTS, "the quick brown fox jumps over the lazy dog " * 3]
    ref = NllbTokenizer.from_pretrained(folder)
    ids = ref(texts, padding="max_length", truncation=True, max_length=CTX)["input_ids"]
    chinese = NllbTokenizer.from_pretrained(folder, src_lang="zho_Hans")
    zh_ids = chinese(texts, padding="max_length", truncation=True, max_length=CTX)["input_ids"]
    oc_ids = open_clip.tokenizer.HFTokenizer(str(folder), context_length=CTX)(texts).tolist()
    record = {"context_length": CTX, "texts": texts, "transformers": ids, "transformers_zho_Hans": zh_ids,
              "open_clip": oc_ids}  # fmt: skip
    (HERE / "nllb_tokens.json").write_text(json.dumps(record, ensure_ascii=False) + "\n")


def nllb_config(vocab: int, width: int) -> M2M100Config:
    """A tiny M2M100 model (NLLB's design); open_clip keeps only the encoder of the encoder-decoder."""
    return M2M100Config(
        vocab_size=vocab, d_model=width, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=4 * width,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=8, max_position_embeddings=CTX + 4,
        scale_embedding=True, activation_function="relu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
        decoder_start_token_id=2,
    )  # fmt: skip


def main() -> None:
    open_clip_tokens()
    nllb_tokenizer()
    for case, (vocab, width, pooler, proj) in CASES.items():
        torch.manual_seed(0)
        if case.startswith("nllb"):
            hf = nllb_config(vocab, width)
        else:
            hf = XLMRobertaConfig(
                vocab_size=vocab, hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=4 * width, max_position_embeddings=CTX + 4, type_vocab_size=1,
                layer_norm_eps=1e-5, hidden_act="gelu", pad_token_id=1, bos_token_id=0, eos_token_id=2,
            )  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / f"{case}_hf"
            hf.save_pretrained(folder)
            hf_config = json.loads((folder / "config.json").read_text())
            text_cfg = {"hf_model_name": str(folder), "hf_tokenizer_name": str(folder), "hf_model_pretrained": False,
                        "hf_pooler_type": pooler, "hf_proj_type": proj, "context_length": CTX}  # fmt: skip
            model = open_clip.CustomTextCLIP(EMBED, VISION, text_cfg)
        model.eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        images = torch.randn(3, 3, IMAGE, IMAGE)
        tokens = tokens_for(case, vocab)
        with torch.no_grad():
            image = model.encode_image(images, normalize=True)
            text = model.encode_text(tokens, normalize=True)
        model_cfg = {"embed_dim": EMBED, "vision_cfg": VISION, "text_cfg": {**text_cfg, "hf_model_name": f"{case}_hf",
                     "hf_tokenizer_name": f"{case}_hf"}}  # fmt: skip
        record = {"model_cfg": model_cfg, "hf_config": hf_config}
        (HERE / f"{case}.json").write_text(json.dumps(record, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(HERE / f"{case}.safetensors"))
        expected = {"images": images, "tokens": tokens, "image_features": image, "text_features": text}
        save_file(expected, str(HERE / f"{case}.expected.safetensors"))
        if case == "xlmr_tiny":
            search_golden(model)
        print(case, f"open_clip {open_clip.__version__}, transformers {transformers.__version__}",
              len(model.state_dict()), "tensors")  # fmt: skip


if __name__ == "__main__":
    main()
