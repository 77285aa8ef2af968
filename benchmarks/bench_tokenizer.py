"""Captions per second: clipforge's tokenizer vs open_clip's SimpleTokenizer (and HF's CLIPTokenizerFast).

Corpora: the golden test corpus (tests/assets/tokenizer/corpus.jsonl.gz, 12,000 varied captions,
a third of them unicode/HTML/control-character edge cases), its plain-ASCII rows, and the corpus
repeated to 100,000 rows. Every tokenizer encodes each corpus in batches of ``--batch`` to
(B, 77) int64 tensors:

* cold: a freshly built tokenizer, one pass (its caches start empty; the 100k corpus gets only
  this pass, whose later rows find warm caches as in a long training run);
* warm: a second pass with the same tokenizer (caches full).

Each measurement is repeated ``--repeats`` times, the implementations interleaved, and the median
rate is reported, per second of process CPU time (robust on a shared machine; HF's Rust threads
are all counted) and per second of wall-clock time.
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


def run_pass(encode: Encoder, texts: list[str], batch: int) -> tuple[float, float, torch.Tensor]:
    """Captions per second of wall-clock and of process CPU time, and the ids."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = [encode(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return len(texts) / wall, len(texts) / cpu, torch.cat(out)  # the concatenation is not timed


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
    torch.set_num_threads(1)  # tokenizers are single-threaded; keep torch's pool out of CPU time

    corpora = load_corpora()
    builders = make_builders(with_hf=not args.no_hf)
    eot = get_tokenizer("openai").eot_token_id
    rows = []
    for corpus_name, texts in corpora.items():
        modes = ("cold",) if len(texts) > 50_000 else ("cold", "warm")  # 100k: one long pass
        rates: dict[tuple[str, str], list[tuple[float, float]]] = {}
        outputs: dict[str, torch.Tensor] = {}
        for _ in range(args.repeats):
            for name, build in builders.items():  # interleaved: load changes hit all alike
                encode = build()
                for mode in modes:
                    wall, cpu, outputs[name] = run_pass(encode, texts, args.batch)
                    rates.setdefault((name, mode), []).append((wall, cpu))
        reference = outputs["open_clip SimpleTokenizer"]
        if not torch.equal(outputs["clipforge Tokenizer"], reference):
            bad = (outputs["clipforge Tokenizer"] != reference).any(1).sum().item()
            raise SystemExit(f"{corpus_name}: clipforge ids differ from open_clip on {bad} rows")
        for mode in modes:
            base = [
                statistics.median(r[k] for r in rates[("open_clip SimpleTokenizer", mode)]) for k in (0, 1)
            ]
            for name in builders:
                wall, cpu = (statistics.median(r[k] for r in rates[(name, mode)]) for k in (0, 1))
                if name == "clipforge Tokenizer":
                    agree = "100% (identical)"
                elif name == "open_clip SimpleTokenizer":
                    agree = "reference"
                else:
                    agree = f"{100 * unpadded_agreement(outputs[name], reference, eot):.1f}%"
                rows.append((corpus_name, mode, name, cpu, cpu / base[1], wall, wall / base[0], agree))

    print(
        f"\nbatch {args.batch}, context 77, median of {args.repeats} interleaved runs, "
        f"torch {torch.__version__}\n"
    )
    print(
        "| corpus | pass | tokenizer | captions/CPU-s | vs open_clip | captions/s wall | vs open_clip | ids |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|")
    for corpus_name, mode, name, cpu, cpu_ratio, wall, wall_ratio, agree in rows:
        print(
            f"| {corpus_name} | {mode} | {name} | {cpu:,.0f} | {cpu_ratio:.1f}x | {wall:,.0f} | "
            f"{wall_ratio:.1f}x | {agree} |"
        )


if __name__ == "__main__":
    main()
