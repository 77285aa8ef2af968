"""Shared plumbing of the evaluation and application commands (eval, classify, caption, moderate):
model flags, image inputs with per-file skip reports, JSON output, explanation file names."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..fileio import atomic_write_text

MODEL_HELP = (
    "the model: a clipforge checkpoint, an OpenAI .pt, an open_clip or Hugging Face folder, a pretrained "
    "name (e.g. ViT-B-32/openai; list: clipforge models --pretrained) or a Hub id (hf-hub:org/repo for "
    "open_clip repos, org/repo for transformers repos)"
)


#: The shared model-loading options, each declared once (``add_*_arg``) with one help text.
DEVICE_HELP = "auto (CUDA when available; cuda:LOCAL_RANK under torchrun), cpu, cuda, cuda:1 ..."
PRECISION_HELP = (
    "auto, fp32, bf16 or fp16. auto is bf16 on GPUs and on CPUs with AVX512-BF16/AMX, else fp32; the "
    "same on every command ($CLIPFORGE_CPU_BF16=1/0 overrides the CPU probe)"
)
BACKEND_HELP = (
    "torch; onnx or onnx-int8: ONNX Runtime on the CPU with float32 or int8 weights, exported once and "
    "cached beside the checkpoint (needs clipforge[export])"
)
BACKENDS = ("torch", "onnx", "onnx-int8")
LANGUAGE_HELP = (
    "NLLB-CLIP models only: the language of {of}, as a code such as deu_Latn, zho_Hans, fra_Latn (an ISO "
    "639-3 language and an ISO 15924 script; default: the tokenizer's own, usually eng_Latn)"
)
PROMPT_LANGUAGE_HELP = (
    "the language of {of}, as an ISO 639-1 code such as de, ja, zh (default: en). Only built-in sets come in "
    "languages (imagenet1k's templates in 89, its class names in ar, it, ja, zh: see docs/evaluation.md); a "
    "file is read as it is. NLLB-CLIP models also take the tokenizer's code where the command has --language: "
    "--language deu_Latn --prompt-language de"
)
FROM_INDEX = "the one the index was built with"


def add_model_arg(p: argparse.ArgumentParser, *, required: bool = True, default_says: str = "") -> None:
    says = f" (default: {default_says})" if default_says else ""
    p.add_argument("--model", required=required, help=MODEL_HELP + says)


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def add_precision_arg(p: argparse.ArgumentParser, *, default: str | None = "auto", default_says: str = "") -> None:
    """``--precision``; ``default=None`` with ``default_says`` for a default decided at run time."""
    p.add_argument("--precision", default=default, help=f"{PRECISION_HELP} (default: {default_says or default})")


def add_backend_arg(p: argparse.ArgumentParser, *, default: str | None = "torch", default_says: str = "") -> None:
    says = default_says or default
    p.add_argument("--backend", choices=BACKENDS, default=default, help=f"{BACKEND_HELP} (default: {says})")


def add_language_arg(p: argparse.ArgumentParser, *, of: str = "the texts") -> None:
    """``--language CODE``: the source-language code that ``of`` are tokenized with (NLLB-CLIP)."""
    p.add_argument("--language", metavar="CODE", default=None, help=LANGUAGE_HELP.format(of=of))


def add_prompt_language_arg(p: argparse.ArgumentParser, *, of: str) -> None:
    """``--prompt-language CODE``: the language (ISO 639-1) of the built-in template and class-name
    sets ``of`` names; read them with :func:`load_in_prompt_language`."""
    p.add_argument("--prompt-language", metavar="CODE", default=None, help=PROMPT_LANGUAGE_HELP.format(of=of))


def load_in_prompt_language(
    load: Callable[..., list[str]], name: str, args: argparse.Namespace, **kwargs: Any
) -> list[str]:
    """``load(name, language=args.prompt_language, **kwargs)`` for ``load_templates`` or
    ``load_classnames``: a language the built-in set is not in is said as ``--prompt-language``'s."""
    from ..eval.prompts import PromptLanguageError

    try:
        return load(name, language=args.prompt_language, **kwargs)
    except PromptLanguageError as e:
        e.parameter = "prompt_language"  # the library's `language=` is this flag, not --language (NLLB)
        raise


def add_model_args(p: argparse.ArgumentParser, *, precision: str = "auto") -> None:
    """The model flags of the evaluation and application commands."""
    add_model_arg(p)
    add_device_arg(p)
    add_precision_arg(p, default=precision)
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_backend_arg(p)


def add_output_args(p: argparse.ArgumentParser, *, explained: str) -> None:
    """``--json``, and ``--explain DIR`` / ``--explain-method``: a heat map of ``explained`` per image."""
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--explain", metavar="DIR", help=f"write a heat map PNG of {explained}")
    p.add_argument(
        "--explain-method",
        default="auto",
        choices=("auto", "window", "gradcam", "gradient", "patch"),
        help="how the heat map is made (auto: window; see docs/evaluation.md)",
    )


def load_model(args: argparse.Namespace):
    """``clipforge.api.Loaded`` (model, tokenizer, transform) for the parsed model flags."""
    from ..api import load

    return load(
        args.model,
        device=args.device,
        precision=args.precision,
        progress=not args.no_progress,
        backend=getattr(args, "backend", "torch"),
    )


def find_images_and_load_model(args: argparse.Namespace):
    """The image inputs (:func:`clipforge.eval.datasets.find_images` of ``args.images``) and
    :func:`load_model`'s (model, tokenizer, transform): the images are found first, so that a wrong
    path fails before the model loads."""
    from ..eval.datasets import find_images

    found = find_images(args.images)
    return found, load_model(args)


def encode_found_images(args: argparse.Namespace, found, model, transform):
    """Encode the images ``found`` (:func:`clipforge.eval.datasets.find_images`) with the model
    flags' batch size; every skipped input (unreadable, a link out of the folder) is reported on
    stderr. Returns (features, skipped ``(path, reason)`` pairs); none readable is an error."""
    from ..eval.features import encode_image_files

    feats = encode_image_files(
        model, transform, found.paths, batch_size=args.batch_size, progress=not args.no_progress
    )
    failures = found.skipped + feats.failures
    report_skips(failures)
    if not feats.kept:
        raise ValueError("none of the images could be read")
    return feats, failures


def skipped_json(failures: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"path": p, "reason": r} for p, r in failures]


def emit_image_results(
    args: argparse.Namespace, about: dict[str, Any], results: list[dict], failures: list[tuple[str, str]]
) -> None:
    """The ``--json`` report of an image command (classify, caption, moderate): the model, ``about``
    (what the images were scored against), one result per image, and the skipped inputs."""
    emit_json({"model": args.model, **about, "results": results, "skipped": skipped_json(failures)})


def report_skips(failures: list[tuple[str, str]]) -> None:
    for path, reason in failures:
        print(f"skipped {path}: {reason}", file=sys.stderr)


def emit_json(payload: dict[str, Any], out: str | None = None) -> None:
    """Print ``payload`` as JSON, or write it to ``out`` (folders created)."""
    text = json.dumps(payload, indent=2, ensure_ascii=False)
    if out is None:
        print(text)
        return
    atomic_write_text(Path(out), text + "\n")


def slug(text: str, *, limit: int = 40) -> str:
    """A file-name-safe short form of a label: ``"a red object"`` → ``"a-red-object"``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:limit] or "text"


def explanation_paths(images: list[str], texts: list[str], folder: str | Path) -> list[Path]:
    """One PNG name per (image, text) in ``folder``: ``<stem>.<text>.png``, made unique when two
    images share a stem."""
    folder = Path(folder)
    names, used = [], set()
    for image, text in zip(images, texts, strict=True):
        base = f"{Path(image).stem}.{slug(text)}"
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        names.append(folder / f"{name}.png")
    return names
