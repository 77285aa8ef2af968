"""clipforge moderate IMAGES --model CKPT --policy policy.yaml: flag or pass each image.

Scores each image against the policy's flagged and benign descriptions; an image is flagged when a
flagged description's score reaches its threshold. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse

from . import _apps
from ._apps import add_model_args, add_output_args, emit_image_results, explanation_paths

HELP = "flag images that match a policy's flagged descriptions"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    add_model_args(p)
    p.add_argument("--policy", required=True, help="policy YAML (flagged/benign descriptions, thresholds)")
    add_output_args(p, explained="the matched description")


def run(args: argparse.Namespace) -> int:
    from ..eval.moderate import Moderator
    from ..eval.policy import load_policy

    policy = load_policy(args.policy)
    inputs, (model, tokenizer, transform) = _apps.find_images_and_load_model(args)
    paths = inputs.paths
    moderator = Moderator(model, tokenizer, policy, transform=transform)
    feats, failures = _apps.encode_found_images(args, inputs, model, transform)
    decisions = moderator.decide(moderator.scores_from_features(feats.features))
    results = [{"path": str(paths[i]), **d.to_dict()} for i, d in zip(feats.kept, decisions, strict=True)]
    if args.explain:
        _explain(args, model, transform, moderator, results)
    n_flagged = sum(d.flagged for d in decisions)
    if args.json:
        about = {"policy": args.policy, "mode": policy.mode, "flagged": n_flagged, "passed": len(decisions) - n_flagged}
        emit_image_results(args, about, results, failures)
        return 0
    for r in results:
        print(
            f"{r['decision'].upper():4}  score {r['score']:.3f}  margin {r['margin']:+.3f}  "
            f"{r['matched']!r}  {r['path']}"
        )
        if "explanation" in r:
            print(f"      heat map: {r['explanation']}")
    print(f"{n_flagged} flagged, {len(decisions) - n_flagged} passed, {len(failures)} skipped")
    return 0


def _explain(args, model, transform, moderator, results: list[dict]) -> None:
    from ..data.images import load_image
    from ..eval.explain import explain

    clf = moderator.classifier
    matched = [r["matched"] for r in results]
    outs = explanation_paths([r["path"] for r in results], matched, args.explain)
    for r, text, out in zip(results, matched, outs, strict=True):
        emb = clf.class_embeddings[clf.labels.index(text)]  # (E,)
        ex = explain(model, transform, load_image(r["path"]), emb, text=text, method=args.explain_method)
        r["explanation"] = str(ex.save(out))
