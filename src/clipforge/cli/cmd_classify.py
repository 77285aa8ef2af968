"""clipforge classify IMAGES... --model CKPT --labels a,b,c: zero-shot labels for each image.

Ranks the labels for each image (template-ensembled zero-shot classification).
"""

from __future__ import annotations

import argparse

from . import _apps
from ._apps import (
    add_language_arg,
    add_model_args,
    add_output_args,
    add_prompt_language_arg,
    emit_image_results,
    explanation_paths,
    load_in_prompt_language,
)

HELP = "zero-shot classify images against labels"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    add_model_args(p)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--labels", help="comma-separated labels, e.g. cat,dog,bird")
    group.add_argument(
        "--labels-file", help="file with one label per line, or a built-in class-name list (imagenet1k, cifar100, ...)"
    )
    p.add_argument("--templates", default="default", help="built-in template set or template file")
    add_language_arg(p, of="the labels and templates")
    add_prompt_language_arg(p, of="the built-in --templates set and --labels-file list")
    p.add_argument("-k", "--top-k", type=int, default=5, help="labels shown per image")
    p.add_argument(
        "--mode",
        choices=("softmax", "sigmoid"),
        default=None,
        help="softmax: one distribution over labels; sigmoid: independent probabilities (sigmoid-loss "
        "models such as SigLIP). Default: the model's own objective",
    )
    add_output_args(p, explained="the top label for each image")


def run(args: argparse.Namespace) -> int:
    from ..eval.classifier import ZeroShotClassifier
    from ..eval.prompts import load_classnames, load_templates, parse_labels

    labels = (
        parse_labels(args.labels)
        if args.labels is not None
        else load_in_prompt_language(load_classnames, args.labels_file, args, what="labels")
    )
    templates = load_in_prompt_language(load_templates, args.templates, args)
    if args.top_k < 1:
        raise ValueError(f"-k must be at least 1, got {args.top_k}")
    inputs, (model, tokenizer, transform) = _apps.find_images_and_load_model(args)
    paths = inputs.paths
    clf = ZeroShotClassifier(model, tokenizer, labels, templates, transform=transform, language=args.language)
    feats, failures = _apps.encode_found_images(args, inputs, model, transform)
    mode = args.mode or model.config.objective
    ranked = clf.rank(clf.scores_from_features(feats.features, mode=mode), k=args.top_k)
    results = [
        {"path": str(paths[i]), "labels": [{"label": lab, "score": s} for lab, s in r]}
        for i, r in zip(feats.kept, ranked, strict=True)
    ]
    if args.explain:
        _explain(args, model, transform, clf, results)
    if args.json:
        emit_image_results(args, {"mode": mode, "labels": labels}, results, failures)
        return 0
    for r in results:
        print(r["path"])
        for item in r["labels"]:
            print(f"  {item['score']:7.4f}  {item['label']}")
        if "explanation" in r:
            print(f"  heat map: {r['explanation']}")
    return 0


def _explain(args, model, transform, clf, results: list[dict]) -> None:
    from ..data.images import load_image
    from ..eval.explain import explain

    tops = [r["labels"][0]["label"] for r in results]
    outs = explanation_paths([r["path"] for r in results], tops, args.explain)
    for r, label, out in zip(results, tops, outs, strict=True):
        emb = clf.class_embeddings[clf.labels.index(label)]  # (E,) the template-ensembled label
        ex = explain(model, transform, load_image(r["path"]), emb, text=label, method=args.explain_method)
        r["explanation"] = str(ex.save(out))
