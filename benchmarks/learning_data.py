"""Real image-text data for the learning benchmark: emoji drawn in four art styles, from npm packages.

    PYTHONPATH=src python benchmarks/learning_data.py [--cache DIR] [--size 64]

Everything comes from packages, by name and pinned version, fetched at set-up time with ``npm pack``
into a cache folder (``$CLIPFORGE_CACHE/learning-data``; nothing here is committed):

- the pictures: the Iconify sets ``@iconify-json/twemoji``, ``noto``, ``fluent-emoji-flat`` and
  ``openmoji`` (SVG bodies + a code-point map), rendered to PNG with ``cairosvg`` (Debian's
  ``libcairo2``) on a white background;
- the words: ``emojibase-data`` (label, tags, group, subgroup) and ``emojilib`` (keywords).

One concept (an emoji, skin-tone variants and the "component" group left out) is drawn once per
style; its five captions do not name the style (see :func:`captions_of`). Training uses three
styles; **openmoji is the held-out domain**, never trained on: its pictures are the retrieval set
and the zero-shot sets (emoji group, 9 classes; emoji subgroup, ~100 classes). Files written::

    train.jsonl            {"filepath", "captions": [5 captions]}   one row per image
    train_flat.csv         filepath,title                           one row per (image, caption)
    heldout.jsonl          {"filepath", "captions": [...]}          openmoji, for retrieval
    heldout_group.csv      filepath,label                           openmoji, zero-shot (group)
    heldout_subgroup.csv   filepath,label                           openmoji, zero-shot (subgroup)
    manifest.json          package versions, counts, sizes

The prompt templates of the zero-shot tasks are in ``learning_prompts.txt`` beside this file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

from PIL import Image

from clipforge.pretrained.resolve import cache_dir

STYLE_PACKAGES = {
    "twemoji": "@iconify-json/twemoji@1.2.5",
    "noto": "@iconify-json/noto@1.2.9",
    "fluent-emoji-flat": "@iconify-json/fluent-emoji-flat@1.2.6",
    "openmoji": "@iconify-json/openmoji@1.2.29",
}
WORD_PACKAGES = {"emojibase-data": "emojibase-data@17.0.0", "emojilib": "emojilib@4.0.3"}
TRAIN_STYLES = ("twemoji", "noto", "fluent-emoji-flat")
HELDOUT_STYLE = "openmoji"
FORMAT_VERSION = 1  # bump when the captions or the files change: a cached build is then rebuilt
PROMPTS = Path(__file__).with_name("learning_prompts.txt")


@dataclass(frozen=True)
class Concept:
    hexcode: str  # emojibase's, e.g. "1F600"
    label: str
    tags: tuple[str, ...]
    keywords: tuple[str, ...]
    group: str
    subgroup: str


def captions_of(c: Concept) -> list[str]:
    """Five captions of one concept, from name-like to tag-like; none names the art style."""
    tags = ", ".join(c.tags) or c.label
    keywords = ", ".join(k.replace("_", " ") for k in c.keywords) or tags
    return [
        f"an emoji of {c.label}",
        c.label,
        tags,
        keywords,
        f"{c.label}, a {c.subgroup} emoji from {c.group}",
    ]


def _npm_fetch(spec: str, dest: Path) -> Path:
    """``npm pack`` one package into ``dest`` and unpack it; returns the package folder."""
    name = spec.rsplit("@", 1)[0].lstrip("@").replace("/", "-")
    folder = dest / name
    if (folder / "package" / "package.json").is_file():
        return folder / "package"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["npm", "pack", spec, "--pack-destination", str(dest), "--json"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    except FileNotFoundError:
        sys.exit("learning_data: npm not found; install Node.js (Debian: apt-get install npm)")
    except subprocess.CalledProcessError as e:
        sys.exit(f"learning_data: npm pack {spec} failed: {e.stderr.strip()[-300:]}")
    tgz = dest / json.loads(done.stdout)[0]["filename"].replace("@", "").replace("/", "-")
    with tarfile.open(tgz) as tar:
        tar.extractall(folder, filter="data")
    tgz.unlink()
    return folder / "package"


def load_concepts(emojibase: Path, emojilib: Path) -> list[Concept]:
    """Every fully-qualified emoji with a group (skin tones and "component" excluded)."""
    data = json.loads((emojibase / "en" / "data.json").read_text(encoding="utf-8"))
    messages = json.loads((emojibase / "en" / "messages.json").read_text(encoding="utf-8"))
    groups = {g["order"]: g["message"] for g in messages["groups"]}
    subgroups = {s["order"]: s["key"].replace("-", " ") for s in messages["subgroups"]}
    keywords = json.loads((emojilib / "dist" / "emoji-en-US.json").read_text(encoding="utf-8"))
    out = []
    for e in data:
        if e.get("group") is None or groups.get(e["group"]) == "components":
            continue
        words = keywords.get(e["emoji"]) or keywords.get(e["emoji"].replace("\ufe0f", "")) or []
        out.append(
            Concept(
                hexcode=e["hexcode"],
                label=e["label"],
                tags=tuple(e.get("tags", ())),
                keywords=tuple(words[1:]),  # the first keyword is the snake_case name
                group=groups[e["group"]],
                subgroup=subgroups[e["subgroup"]],
            )
        )
    return out


def _icon_svgs(package: Path) -> dict[str, str]:
    """Emojibase hexcode (upper case, as written there) -> a standalone SVG document."""
    icons = json.loads((package / "icons.json").read_text(encoding="utf-8"))
    chars = json.loads((package / "chars.json").read_text(encoding="utf-8"))
    default_w, default_h = icons.get("width", 16), icons.get("height", 16)
    aliases = icons.get("aliases", {})

    def svg(name: str) -> str | None:
        for _ in range(4):  # aliases may chain
            if name in icons["icons"]:
                break
            name = aliases.get(name, {}).get("parent", "")
        icon = icons["icons"].get(name)
        if icon is None:
            return None
        w, h = icon.get("width", default_w), icon.get("height", default_h)
        left, top = icon.get("left", 0), icon.get("top", 0)
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {w} {h}">{icon["body"]}</svg>'
        )

    out = {}
    for code, name in chars.items():
        doc = svg(name)
        if doc is not None:
            out[code.lower()] = doc
    return out


def _find(svgs: dict[str, str], hexcode: str) -> str | None:
    code = hexcode.lower()
    return svgs.get(code) or svgs.get(code.replace("-fe0f", ""))


def _render(job: tuple[str, str, int]) -> str | None:
    """SVG -> RGB PNG of ``size`` px on white; returns an error message or None."""
    import cairosvg  # lazy: the rendering dependency of the benchmark only

    svg, path, size = job
    try:
        png = cairosvg.svg2png(bytestring=svg.encode(), output_width=size, output_height=size)
    except Exception as e:  # a malformed icon is skipped, not fatal
        return f"{path}: {type(e).__name__}: {e}"
    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    Image.alpha_composite(canvas, rgba).convert("RGB").save(path)
    return None


def build(root: Path | None = None, *, size: int = 64, workers: int = 2) -> Path:
    """Fetch, render and write the benchmark's files under ``root``; returns the data folder.

    A finished build (its manifest names the same packages, size and format) is reused."""
    root = Path(root) if root is not None else cache_dir() / "learning-data"
    data = root / f"emoji-{size}px"
    key = {"format": FORMAT_VERSION, "size": size, "packages": {**STYLE_PACKAGES, **WORD_PACKAGES}}
    manifest = data / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("key") == key:
        return data
    npm = root / "npm"
    concepts = load_concepts(
        _npm_fetch(WORD_PACKAGES["emojibase-data"], npm), _npm_fetch(WORD_PACKAGES["emojilib"], npm)
    )
    rows: dict[str, list[tuple[str, Concept]]] = {}
    jobs = []
    for style, spec in STYLE_PACKAGES.items():
        svgs = _icon_svgs(_npm_fetch(spec, npm))
        (data / style).mkdir(parents=True, exist_ok=True)
        rows[style] = []
        for c in concepts:
            svg = _find(svgs, c.hexcode)
            if svg is None:
                continue
            rel = f"{style}/{c.hexcode}.png"
            rows[style].append((rel, c))
            jobs.append((svg, str(data / rel), size))
    try:
        import cairosvg  # noqa: F401  (checked once here: each worker imports it again)
    except (ImportError, OSError) as e:  # OSError: the package is there, Debian's libcairo2 is not
        sys.exit(f"learning_data: cannot render SVGs ({e}); pip install cairosvg and apt-get install libcairo2")
    with Pool(workers) as pool:
        errors = [e for e in pool.imap(_render, jobs, chunksize=64) if e]
    bad = {Path(e.split(":")[0]).relative_to(data).as_posix() for e in errors}
    for e in errors[:5]:
        print(f"learning_data: skipped {e}", file=sys.stderr)
    rows = {s: [(rel, c) for rel, c in r if rel not in bad] for s, r in rows.items()}
    _write(data, rows)
    counts = {s: len(r) for s, r in rows.items()}
    manifest.write_text(json.dumps({"key": key, "images": counts, "skipped": len(errors)}, indent=1))
    return data


def _write(data: Path, rows: dict[str, list[tuple[str, Concept]]]) -> None:
    train = [(rel, c) for s in TRAIN_STYLES for rel, c in rows[s]]
    with open(data / "train.jsonl", "w", encoding="utf-8") as f:
        for rel, c in train:
            f.write(json.dumps({"filepath": rel, "captions": captions_of(c)}) + "\n")
    with open(data / "train_flat.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "title"])
        for rel, c in train:
            w.writerows([rel, cap] for cap in captions_of(c))
    held = rows[HELDOUT_STYLE]
    with open(data / "heldout.jsonl", "w", encoding="utf-8") as f:
        for rel, c in held:
            f.write(json.dumps({"filepath": rel, "captions": captions_of(c)}) + "\n")
    for task in ("group", "subgroup"):
        with open(data / f"heldout_{task}.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["filepath", "label"])
            w.writerows([rel, getattr(c, task)] for rel, c in held)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=None, help="root folder (default: $CLIPFORGE_CACHE/learning-data)")
    ap.add_argument("--size", type=int, default=64, help="rendered image side in pixels")
    ap.add_argument("--workers", type=int, default=2, help="rendering processes")
    args = ap.parse_args()
    data = build(args.cache, size=args.size, workers=args.workers)
    print(data)
    print((data / "manifest.json").read_text())


if __name__ == "__main__":
    main()
