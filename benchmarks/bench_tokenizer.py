"""Captions per second: clipforge's tokenizer vs open_clip's SimpleTokenizer (and HF's CLIPTokenizerFast).

Corpora: the golden test corpus (tests/assets/tokenizer/corpus.jsonl.gz, 12,000 varied captions,
a third of them unicode/HTML/control-character edge cases), its plain-ASCII rows, and the corpus
repeated to 100,000 rows. Every tokenizer encodes each corpus in batches of ``--batch`` to
(B, 77) int64 tensors:

* cold: a freshly built tokenizer, one pass (its caches start empty);
* warm: a second pass with the same tokenizer (caches full, as in a long training run).

Each measurement is repeated ``--repeats`` times, the implementations interleaved, and the median
wall-clock rate is reported (the machine is shared: re-run and compare ratios, not absolute rates).
Our ids are checked against open_clip's on every row; HF's agreement is reported (it differs by
design: no ftfy/HTML clean-up and an extra GPT-2 split).

Run in the reference environment (it has open_clip; our package comes from src/):

    /work/venv-oc/bin/python benchmarks/bench_tokenizer.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from clipforge.tokenizer import Tokenizer, get_tokenizer  # noqa: E402

CORPUS = ROOT / "tests" / "assets" / "tokenizer" / "corpus.jsonl.gz"
Encoder = Callable[[list[str]], torch.Tensor]


def load_corpora() -> dict[str, list[str]]:
    with gzip.open(CORPUS, "rt", encoding="ascii") as f:
        corpus = [json.loads(line) for line in f]
    ascii_rows = [t for t in corpus if t.isascii() and "&" not in t and t.isprintable()]
    return {
        f"golden corpus ({len(corpus):,})": corpus,
        f"plain-ASCII rows ({len(ascii_rows):,})": ascii_rows,
        "golden corpus x8.3 (100,000)": (corpus * 9)[:100_000],
    }


def _fresh(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.clear_cache()  # also the process-wide ftfy cache: "cold" really starts empty
    return tokenizer


def make_builders(with_hf: bool) -> dict[str, Callable[[], Encoder]]:
    from open_clip.tokenizer import SimpleTokenizer

    ours_template = get_tokenizer("openai")  # read the vocabulary once; copies start with no caches
    merges = ours_template.merges
    builders: dict[str, Callable[[], Encoder]] = {
        "open_clip SimpleTokenizer": lambda: SimpleTokenizer(),
        "clipforge Tokenizer": lambda: _fresh(Tokenizer.from_merges(merges)),
    }
    if with_hf:
        try:
            from transformers import CLIPTokenizerFast
        except ImportError:
            print("transformers not importable: skipping CLIPTokenizerFast")
        else:
            hf_dir = tempfile.mkdtemp(prefix="clipforge-bench-")
            ours_template.save_hf(hf_dir)

            def build_hf() -> Encoder:
                hf = CLIPTokenizerFast.from_pretrained(hf_dir)
                return lambda texts: hf(
                    [_utf8_safe(t) for t in texts],
                    padding="max_length",
                    truncation=True,
                    max_length=77,
                    return_tensors="pt",
                )["input_ids"]

            builders["HF CLIPTokenizerFast"] = build_hf
    return builders


def _utf8_safe(text: str) -> str:
    """Rust cannot take lone surrogates (a few corpus rows): replace them as ftfy would."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def run_pass(encode: Encoder, texts: list[str], batch: int) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = [encode(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    elapsed = time.perf_counter() - start
    return len(texts) / elapsed, torch.cat(out)


def unpadded_agreement(a: torch.Tensor, b: torch.Tensor, eot: int) -> float:
    """Fraction of rows whose ids up to and including the end token agree."""
    ends_a, ends_b = (a == eot).int().argmax(1), (b == eot).int().argmax(1)
    same = [
        bool(ea == eb and torch.equal(a[i, : ea + 1], b[i, : eb + 1]))
        for i, (ea, eb) in enumerate(zip(ends_a.tolist(), ends_b.tolist(), strict=True))
    ]
    return sum(same) / len(same)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--no-hf", action="store_true", help="skip Hugging Face's CLIPTokenizerFast")
    args = parser.parse_args()

    corpora = load_corpora()
    builders = make_builders(with_hf=not args.no_hf)
    eot = get_tokenizer("openai").eot_token_id
    rows = []
    for corpus_name, texts in corpora.items():
        rates: dict[tuple[str, str], list[float]] = {}
        outputs: dict[str, torch.Tensor] = {}
        for _ in range(args.repeats):
            for name, build in builders.items():  # interleaved: load changes hit all alike
                encode = build()
                cold, out = run_pass(encode, texts, args.batch)
                warm, _ = run_pass(encode, texts, args.batch)
                rates.setdefault((name, "cold"), []).append(cold)
                rates.setdefault((name, "warm"), []).append(warm)
                outputs[name] = out
        reference = outputs["open_clip SimpleTokenizer"]
        if not torch.equal(outputs["clipforge Tokenizer"], reference):
            bad = (outputs["clipforge Tokenizer"] != reference).any(1).sum().item()
            raise SystemExit(f"{corpus_name}: clipforge ids differ from open_clip on {bad} rows")
        for mode in ("cold", "warm"):
            base = statistics.median(rates[("open_clip SimpleTokenizer", mode)])
            for name in builders:
                rate = statistics.median(rates[(name, mode)])
                if name == "clipforge Tokenizer":
                    agree = "100% (identical)"
                elif name == "open_clip SimpleTokenizer":
                    agree = "reference"
                else:
                    agree = f"{100 * unpadded_agreement(outputs[name], reference, eot):.1f}%"
                rows.append((corpus_name, mode, name, rate, rate / base, agree))

    print(
        f"\nbatch {args.batch}, context 77, median of {args.repeats} interleaved runs, "
        f"torch {torch.__version__}\n"
    )
    print("| corpus | pass | tokenizer | captions/s | vs open_clip | ids equal to open_clip |")
    print("|---|---|---|---:|---:|---|")
    for corpus_name, mode, name, rate, ratio, agree in rows:
        print(f"| {corpus_name} | {mode} | {name} | {rate:,.0f} | {ratio:.1f}x | {agree} |")


if __name__ == "__main__":
    main()
