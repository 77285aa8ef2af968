"""clipforge eval zeroshot|retrieval|linear-probe DATA --model CKPT: evaluation as JSON.

zeroshot: accuracy of zero-shot classification on a labelled image set; retrieval: image-text
recall@1/5/10 both ways; linear-probe: logistic regression on frozen image embeddings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._apps import (
    add_language_arg,
    add_model_args,
    add_prompt_language_arg,
    emit_json,
    load_in_prompt_language,
    load_model,
    report_skips,
)

LABELLED_HELP = "a folder with one sub-folder per class, or a .csv/.tsv with image and label columns"
BENCHMARK_HELP = ", or a CLIP_benchmark WebDataset folder/URL (wds_<name>/ with classnames.txt and <split>/*.tar)"


HELP = "evaluate a model: zeroshot, retrieval, linear-probe"


def add_arguments(p: argparse.ArgumentParser) -> None:
    tasks = p.add_subparsers(dest="task", metavar="TASK", required=True)

    z = tasks.add_parser("zeroshot", help="zero-shot classification accuracy on a labelled image set")
    z.add_argument("data", help=LABELLED_HELP + BENCHMARK_HELP)
    _labelled_args(z)
    z.add_argument(
        "--templates",
        help="built-in template set (default, imagenet1k = OpenAI's 80, cifar, ...) or template file "
        "(default: a CLIP_benchmark set's own templates, else 'default')",
    )
    add_language_arg(z, of="the class names and templates")
    z.add_argument("--split", default="test", help="split folder of a CLIP_benchmark set")
    z.add_argument("--workers", type=int, default=0, help="image decoding processes (CLIP_benchmark sets)")
    z.add_argument("--plot", help="confusion-matrix PNG (default: beside --out as <out>.confusion.png)")

    r = tasks.add_parser("retrieval", help="image-text retrieval recall@1/5/10 both ways, mean/median rank")
    r.add_argument(
        "data",
        help="image-caption pairs: .csv/.tsv, .jsonl, a folder of images + .txt captions, tar shards, "
        "or a CLIP_benchmark retrieval set (wds_<name>/ with dataset_type.txt = retrieval)",
    )
    r.add_argument("--split", default="test", help="split folder of a CLIP_benchmark set")
    r.add_argument("--image-key", default="filepath", help="image column (CSV/JSONL)")
    r.add_argument("--caption-key", default="title", help="caption column (CSV/JSONL)")
    r.add_argument("--workers", type=int, default=0, help="image decoding processes")
    _common(r)

    lp = tasks.add_parser("linear-probe", help="logistic regression on frozen image embeddings")
    lp.add_argument("data", help=LABELLED_HELP + " (the test set when --train is given)")
    _labelled_args(lp)
    lp.add_argument("--train", help="training images (same classes); default: split DATA")
    lp.add_argument("--k-shot", type=int, help="k training images per class (few-shot)")
    lp.add_argument("--test-fraction", type=float, default=0.5, help="share of DATA held out when no --train")
    lp.add_argument("--val-fraction", type=float, default=0.2, help="share of training images used to pick C")
    lp.add_argument("--seed", type=int, default=0)
    lp.add_argument("--templates", help="also report zero-shot accuracy on the same test images")


def run(args: argparse.Namespace) -> int:
    task = {"zeroshot": run_zeroshot, "retrieval": run_retrieval, "linear-probe": run_linear_probe}[args.task]
    return task(args)


def _common(p: argparse.ArgumentParser) -> None:
    add_model_args(p, precision="fp32")
    p.add_argument("--out", help="write the results JSON here (default: print it)")


def _labelled_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--classnames",
        help="class names for the prompts: a file (one per line) or a built-in list (imagenet1k, cifar100, ...)",
    )
    add_prompt_language_arg(p, of="the built-in --templates set and --classnames list")
    p.add_argument("--image-key", default="filepath", help="image column of a CSV")
    p.add_argument("--label-key", default="label", help="label column of a CSV")
    _common(p)


def _load_data(args: argparse.Namespace, source: str, classnames: list[str] | None = None):
    from ..eval.datasets import load_labelled
    from ..eval.prompts import load_classnames

    if classnames is None and args.classnames:
        classnames = load_in_prompt_language(load_classnames, args.classnames, args)
    return load_labelled(source, classnames=classnames, image_key=args.image_key, label_key=args.label_key)


def _header(args: argparse.Namespace, model) -> dict:
    from ..inference import model_id

    return {
        "model": args.model,
        "model_name": model.config.name,
        "model_id": model_id(model),
        "data": args.data,
    }


def _is_benchmark(source: str) -> bool:
    from ..data.shard_io import is_remote
    from ..eval.clip_benchmark import is_benchmark_dir

    return is_benchmark_dir(source) or is_remote(source)


def _load_zeroshot_model(args: argparse.Namespace):
    """:func:`load_model`'s (model, tokenizer, transform), the tokenizer set to ``--language`` (NLLB-CLIP):
    a model without language codes, or a code it lacks, fails here, before any image is encoded."""
    from ..tokenizer import with_language

    model, tokenizer, transform = load_model(args)
    return model, with_language(tokenizer, args.language), transform


def run_zeroshot(args: argparse.Namespace) -> int:
    from ..eval.dataset_eval import zeroshot_benchmark, zeroshot_dataset
    from ..eval.plots import save_confusion_matrix
    from ..eval.prompts import load_classnames, load_templates

    extra: dict = {}
    if _is_benchmark(args.data):
        from ..eval.clip_benchmark import load_benchmark

        bench = load_benchmark(args.data, split=args.split)
        if bench.kind != "classification":
            raise ValueError(f"{args.data}: a {bench.kind} set; use `clipforge eval retrieval`")
        if args.prompt_language not in (None, "en") and not args.templates:
            raise ValueError(
                f"--prompt-language {args.prompt_language} needs --templates naming a built-in set (e.g. imagenet1k): "
                f"without it the templates of {args.data} (or 'default') are used as they are"
            )
        classnames = bench.classnames
        if args.classnames:
            classnames = load_in_prompt_language(load_classnames, args.classnames, args)
        if not classnames:
            raise ValueError(f"{args.data}: no classnames.txt; pass --classnames (a file or e.g. imagenet1k)")
        templates = bench.templates
        if args.templates:
            templates = load_in_prompt_language(load_templates, args.templates, args)
        templates_name = args.templates or ("dataset" if bench.templates else "default")
        templates = templates or load_templates("default")
        model, tokenizer, transform = _load_zeroshot_model(args)
        report = zeroshot_benchmark(
            model,
            tokenizer,
            transform,
            bench,
            templates=list(templates),
            classnames=list(classnames),
            batch_size=args.batch_size,
            workers=args.workers,
            progress=not args.no_progress,
        )
        extra = {"dataset": bench.name, "split": bench.split}
    else:
        templates_name = args.templates or "default"
        templates = load_in_prompt_language(load_templates, templates_name, args)
        data = _load_data(args, args.data)
        model, tokenizer, transform = _load_zeroshot_model(args)
        report = zeroshot_dataset(
            model,
            tokenizer,
            transform,
            data,
            templates,
            batch_size=args.batch_size,
            progress=not args.no_progress,
        )
    report_skips(report.failures)
    if args.prompt_language is not None:
        extra["prompt_language"] = args.prompt_language
    if args.language is not None:
        extra["language"] = args.language
    result = {**_header(args, model), **extra, "templates": templates_name, **report.to_dict()}
    plot = args.plot or (str(Path(args.out).with_suffix(".confusion.png")) if args.out else None)
    if plot:  # optional: the results are written whether or not the figure can be
        try:
            result["confusion_png"] = str(
                save_confusion_matrix(
                    report.confusion, report.classnames, plot, title=f"zero-shot: {Path(args.data).name}"
                )
            )
        except (ImportError, OSError, ValueError) as e:
            print(f"clipforge eval: note: no confusion-matrix plot ({e})", file=sys.stderr)
    emit_json(result, args.out)
    if args.out:
        print(f"zero-shot top-1 {result['top1']:.4f} on {result['n_images']} images -> {args.out}")
    return 0


def run_retrieval(args: argparse.Namespace) -> int:
    from ..eval.dataset_eval import retrieval_dataset

    source = args.data
    if _is_benchmark(args.data):
        from ..eval.clip_benchmark import load_benchmark

        bench = load_benchmark(args.data, split=args.split)
        if bench.kind != "retrieval":
            raise ValueError(f"{args.data}: a {bench.kind} set; use `clipforge eval zeroshot`")
        source = "::".join(bench.shards)
    model, tokenizer, transform = load_model(args)
    report = retrieval_dataset(
        model,
        tokenizer,
        transform,
        source,
        image_key=args.image_key,
        caption_key=args.caption_key,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.no_progress,
    )
    result = {**_header(args, model), **report.to_dict()}
    emit_json(result, args.out)
    if args.out:
        print(
            f"R@1 text->image {result['text_to_image_R@1']:.4f}, "
            f"image->text {result['image_to_text_R@1']:.4f} "
            f"({result['n_images']} images, {result['n_captions']} captions) -> {args.out}"
        )
    return 0


def run_linear_probe(args: argparse.Namespace) -> int:
    from ..eval.dataset_eval import linear_probe_dataset
    from ..eval.prompts import load_templates

    templates = load_in_prompt_language(load_templates, args.templates, args) if args.templates else None
    data = _load_data(args, args.data)
    train = _load_data(args, args.train, classnames=data.classnames) if args.train else None
    model, tokenizer, transform = load_model(args)
    report = linear_probe_dataset(
        model,
        transform,
        data,
        train=train,
        k_shot=args.k_shot,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        seed=args.seed,
        tokenizer=tokenizer if templates else None,
        templates=templates,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    report_skips(report.failures)
    result = {**_header(args, model), **report.to_dict()}
    emit_json(result, args.out)
    if args.out:
        print(f"linear probe top-1 {result['top1']:.4f} (C={result['C']:g}) -> {args.out}")
    return 0
