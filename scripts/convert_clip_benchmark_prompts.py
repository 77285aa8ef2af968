"""Write clipforge's non-English prompt templates and class names from a clip_benchmark wheel.

    python scripts/convert_clip_benchmark_prompts.py clip_benchmark-1.6.2-py2.py3-none-any.whl

clip_benchmark (MIT, https://github.com/LAION-AI/CLIP_benchmark) ships, in ``clip_benchmark/datasets/``:

* ``{ar,cn,it,jp}_classnames.json`` and ``{ar,cn,it,jp}_zeroshot_classification_templates.json``:
  ImageNet-1k class names (all 1000, in label order) and prompt templates, per language;
* ``nllb_dist13b_prompts.json``: OpenAI's 80 ImageNet templates machine-translated (NLLB-200
  distilled 1.3B) into 89 languages, keyed by upper-case ISO 639-1 code.

They become ``src/clipforge/eval/templates/<lang>/imagenet1k.txt`` and
``src/clipforge/eval/classnames/<lang>/imagenet1k.txt`` (``<lang>``: ISO 639-1; clip_benchmark's
``cn`` / ``jp`` are ``zh`` / ``ja``), one entry per line under a ``#`` header naming the source,
plus a ``NOTICE.md`` in each of the two folders. A language with its own curated templates (ar, it,
ja, zh) keeps those, not the machine translation. Entries are stripped, runs of white space become one
space (the NLLB translations pad the placeholder with spaces) and ``{c}`` is written ``{}``; order and
repeats are kept, so an ensemble is the one clip_benchmark averages.

``babel_imagenet.json`` is not used: its labels cover only part of ImageNet-1k in every language but
English (at best 973 of 1000, Finnish) and come from BabelNet, whose licence is non-commercial.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "src" / "clipforge" / "eval"
SOURCE = "clip_benchmark/datasets/"
SET = "imagenet1k"
CURATED = {"ar": "ar", "it": "it", "ja": "jp", "zh": "cn"}  # ISO 639-1 -> clip_benchmark's file prefix
N_CLASSES = 1000
N_NLLB_TEMPLATES = 80


def _clean(entry: str) -> str:
    text = " ".join(entry.split()).replace("{c}", "{}")
    if not text or text.startswith("#"):
        raise ValueError(f"entry {entry!r} would not survive as a line of a clipforge list")
    return text


def _write(path: Path, header: list[str], entries: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {h}" for h in header] + [_clean(e) for e in entries]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def convert(wheel: Path, out: Path, version: str) -> dict[str, list[str]]:
    """Write the files under ``out`` (``.../clipforge/eval``); the languages of each kind."""
    with zipfile.ZipFile(wheel) as z:

        def load(name: str):
            return json.loads(z.read(SOURCE + name).decode("utf-8"))

        nllb = load("nllb_dist13b_prompts.json")
        curated = {
            lang: (load(f"{src}_classnames.json")[SET], load(f"{src}_zeroshot_classification_templates.json")[SET])
            for lang, src in CURATED.items()
        }
    where = f"clip_benchmark {version} (MIT; https://github.com/LAION-AI/CLIP_benchmark)"
    done: dict[str, list[str]] = {"templates": [], "classnames": []}
    for lang, (names, templates) in sorted(curated.items()):
        if len(names) != N_CLASSES:
            raise ValueError(f"{CURATED[lang]}_classnames.json: {len(names)} ImageNet-1k names, expected {N_CLASSES}")
        src = CURATED[lang]
        _write(
            out / "classnames" / lang / f"{SET}.txt",
            [f"ImageNet-1k class names ({lang}), in label order (WordNet id order), as the English list.",
             f"Source: {src}_classnames.json of {where}; see ../NOTICE.md."],
            names,
        )  # fmt: skip
        _write(
            out / "templates" / lang / f"{SET}.txt",
            [f"ImageNet-1k prompt templates ({lang}); {{}} marks the class name.",
             f"Source: {src}_zeroshot_classification_templates.json of {where}; see ../NOTICE.md."],
            templates,
        )  # fmt: skip
        done["classnames"].append(lang)
        done["templates"].append(lang)
    for code, templates in sorted(nllb.items()):
        lang = code.lower()
        if lang == "en" or lang in curated:
            continue
        if len(templates) != N_NLLB_TEMPLATES:
            raise ValueError(f"nllb_dist13b_prompts.json: {code} has {len(templates)} templates, not 80")
        _write(
            out / "templates" / lang / f"{SET}.txt",
            [f"OpenAI's 80 ImageNet-1k prompt templates, machine-translated ({lang}) by NLLB-200 distilled 1.3B; "
             "{} marks the class name.",
             f"Source: nllb_dist13b_prompts.json ({code}) of {where}; see ../NOTICE.md."],
            templates,
        )  # fmt: skip
        done["templates"].append(lang)
    done["templates"].sort()
    _notice(out, done, version)
    return done


def _notice(out: Path, done: dict[str, list[str]], version: str) -> None:
    nllb = [lang for lang in done["templates"] if lang not in CURATED]
    licence = (
        "## Licence\n\nclip_benchmark is distributed under the MIT License:\n\n"
        "    MIT License\n\n    Copyright (c) 2022, Mehdi Cherti\n\n"
        "    Permission is hereby granted, free of charge, to any person obtaining a copy\n"
        "    of this software and associated documentation files (the \"Software\"), to deal\n"
        "    in the Software without restriction, including without limitation the rights\n"
        "    to use, copy, modify, merge, publish, distribute, sublicense, and/or sell\n"
        "    copies of the Software, and to permit persons to whom the Software is\n"
        "    furnished to do so, subject to the following conditions:\n\n"
        "    The above copyright notice and this permission notice shall be included in all\n"
        "    copies or substantial portions of the Software.\n\n"
        "    THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR\n"
        "    IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,\n"
        "    FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE\n"
        "    AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER\n"
        "    LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,\n"
        "    OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE\n"
        "    SOFTWARE.\n"
    )
    origins = (
        "clip_benchmark credits the Chinese names and templates to Chinese CLIP "
        "(https://github.com/OFA-Sys/Chinese-CLIP), the Japanese ones to rinna's japanese-clip "
        "(https://github.com/rinnakk/japanese-clip) and @mkshing, and the Arabic ones to @KhalidAlt; it names "
        "no origin for the Italian ones."
    )
    common = (
        f"The files in the language folders here (`<lang>/imagenet1k.txt`, `<lang>` an ISO 639-1 code) were "
        f"converted from clip_benchmark {version} (https://github.com/LAION-AI/CLIP_benchmark, "
        "`clip_benchmark/datasets/`) by `scripts/convert_clip_benchmark_prompts.py`: entries stripped, runs of "
        "white space made one space, `{c}` written `{}`; order and repeats kept. The English files at the top of "
        "this folder are not from these sources.\n\n"
    )
    templates = (
        "# Non-English prompt templates: sources\n\n" + common
        + "| languages | file in clip_benchmark | what |\n|---|---|---|\n"
        + "| " + ", ".join(sorted(CURATED)) + " | `{ar,it,jp,cn}_zeroshot_classification_templates.json` "
        "(`imagenet1k`) | curated ImageNet templates (ja from `jp`, zh from `cn`) |\n"
        + "| " + ", ".join(nllb) + " | `nllb_dist13b_prompts.json` | OpenAI's 80 ImageNet templates, "
        "machine-translated with NLLB-200 distilled 1.3B |\n\n" + origins + "\n\n" + licence
    )  # fmt: skip
    classnames = (
        "# Non-English class names: sources\n\n" + common
        + "| languages | file in clip_benchmark | what |\n|---|---|---|\n"
        + "| " + ", ".join(done["classnames"]) + " | `{ar,it,jp,cn}_classnames.json` (`imagenet1k`) | "
        "the 1000 ImageNet-1k class names in label order (ja from `jp`, zh from `cn`) |\n\n"
        + origins + "\n\n" + licence
    )  # fmt: skip
    (out / "templates" / "NOTICE.md").write_text(templates, encoding="utf-8")
    (out / "classnames" / "NOTICE.md").write_text(classnames, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wheel", type=Path, help="clip_benchmark-<version>-py2.py3-none-any.whl")
    p.add_argument("--out", type=Path, default=EVAL, help="the clipforge/eval folder (default: this checkout's)")
    args = p.parse_args()
    version = args.wheel.name.split("-")[1] if args.wheel.name.startswith("clip_benchmark-") else "(unknown)"
    done = convert(args.wheel, args.out, version)
    for kind, langs in done.items():
        print(f"{kind}: {len(langs)} languages: {' '.join(langs)}")


if __name__ == "__main__":
    main()
