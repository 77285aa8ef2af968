"""Relevance benchmark: does one relevance cutoff separate matches better than one cosine cutoff?

A collection of generated shapes scenes (``--n`` images of the built-in shapes data, val split,
each with known attributes: shape, colour, pattern, count, ...) is embedded with a model trained
on that data and stored in an index database. Text queries of several kinds name one to three
attributes ("a red shape", "a circle", "a red circle", "two red shapes", "a striped red shape");
an image matches a query when it has every
attribute the query names. Each is phrased three ways ("a red circle", "a photo of a red circle",
"an image of a red circle"), as different people would type it. Kinds and phrasings shift the
scores of a query as a whole, the case where one cosine cutoff fails: the scores of one query's
matches sit where another query's non-matches do.

Image queries ("more like this": a train-split image, never in the collection) ask for the images
of the same colour, and of the same colour and shape. Every (query, image) pair gets the raw
cosine and the calibrated relevance of :class:`clipforge.index.ImageIndex`. For each score,
pooled over all queries, one fixed threshold: the best F1 with its precision and recall, the best
recall at precision >= 0.9, the best precision at recall >= 0.9, average precision of the pooled
ranking, and the F1 of a threshold chosen on half of the queries and applied to the other half
(2-fold over queries, both ways). Also the relevance cutoff 0.5 (1.5 standard deviations), text
and image queries apart, and the spread of the best threshold from query to query. Prints markdown.

    clipforge quickstart                       # or any checkpoint trained on the shapes data
    python benchmarks/bench_relevance.py --model runs/quickstart/model.safetensors --n 3000
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from clipforge.data.shapes import COUNT_WORDS, ShapesSpec, colours, make_shapes_sample, seen_pairs  # noqa: E402
from clipforge.data.shapes_render import PATTERNS, SHAPES  # noqa: E402
from clipforge.index import Encoder, ImageIndex, IndexStore  # noqa: E402
from clipforge.index.store import NewRow  # noqa: E402

TEMPLATES = ("{obj}", "a photo of {obj}", "an image of {obj}")  # people phrase a search many ways


def queries(spec: ShapesSpec, *, seed: int) -> list[tuple[str, str, dict]]:
    """(kind, text, the attributes it names): every colour and every shape alone, and samples of
    colour x shape, count x colour and pattern x colour, each phrased with every one of ``TEMPLATES``."""
    rng = np.random.default_rng(seed)
    objects = [("colour", f"a {c} shape", {"colour": c}) for c in colours()]
    objects += [("shape", f"a {s}", {"shape": s}) for s in SHAPES]
    pairs = seen_pairs(spec)
    for i in rng.choice(len(pairs), size=10, replace=False):
        c, s = pairs[int(i)]
        objects.append(("colour+shape", f"a {c} {s}", {"colour": c, "shape": s}))
    for c in rng.choice(list(colours()), size=5, replace=False):
        n = int(rng.integers(2, 4))
        objects.append(("count+colour", f"{COUNT_WORDS[n]} {c} shapes", {"count": n, "colour": str(c)}))
    for c in rng.choice(list(colours()), size=5, replace=False):
        p = [q for q in PATTERNS if q != "solid"][int(rng.integers(len(PATTERNS) - 1))]
        objects.append(("pattern+colour", f"a {p} {c} shape", {"pattern": p, "colour": str(c)}))
    return [(kind, t.format(obj=obj), named) for kind, obj, named in objects for t in TEMPLATES]


IMAGE_KINDS = {"image, same colour": ("colour",), "image, same colour and shape": ("colour", "shape")}


def image_queries(spec: ShapesSpec, n: int) -> list[tuple[str, object, dict]]:
    """("more like this") (kind, image, the attributes a match shares with it): ``n`` images of the
    train split (never in the collection), each asked for once per kind of ``IMAGE_KINDS``."""
    out = []
    for i in range(n):
        image, _, attrs = make_shapes_sample(i, split="train", spec=spec)
        out += [(kind, image, {k: attrs[k] for k in keys}) for kind, keys in IMAGE_KINDS.items()]
    return out


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall at every cutoff of the pooled ranking, and the cutoffs (scores)."""
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(labels[order])
    precision = tp / np.arange(1, len(order) + 1)
    recall = tp / max(int(labels.sum()), 1)
    return precision, recall, scores[order]


def f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    return 2 * p * r / np.maximum(p + r, 1e-12)


def at_threshold(scores: np.ndarray, labels: np.ndarray, cut: float) -> tuple[float, float, float]:
    kept = scores >= cut
    tp = int(np.sum(kept & labels))
    p = tp / max(int(kept.sum()), 1)
    r = tp / max(int(labels.sum()), 1)
    return p, r, float(f1(np.array(p), np.array(r)))


def summary(scores: np.ndarray, labels: np.ndarray) -> dict:
    p, r, cuts = pr_curve(scores, labels)
    best = int(np.argmax(f1(p, r)))
    ap = float(np.sum(p * labels[np.argsort(-scores, kind="stable")]) / max(int(labels.sum()), 1))
    return {
        "threshold": float(cuts[best]),
        "precision": float(p[best]),
        "recall": float(r[best]),
        "f1": float(f1(p, r)[best]),
        "recall@P>=0.9": float(np.max(r[p >= 0.9], initial=0.0)),
        "precision@R>=0.9": float(np.max(p[r >= 0.9], initial=0.0)),
        "ap": ap,
    }


def cross_query_f1(scores: list[np.ndarray], labels: list[np.ndarray]) -> float:
    """Mean F1 on one half of the queries at the best-F1 threshold of the other half (both ways)."""
    halves = [list(range(0, len(scores), 2)), list(range(1, len(scores), 2))]
    out = []
    for fit, test in (halves, halves[::-1]):
        cut = summary(np.concatenate([scores[i] for i in fit]), np.concatenate([labels[i] for i in fit]))["threshold"]
        s, y = np.concatenate([scores[i] for i in test]), np.concatenate([labels[i] for i in test])
        out.append(at_threshold(s, y, cut)[2])
    return float(np.mean(out))


def build_store(path: Path, vectors: np.ndarray, model_id: str) -> IndexStore:
    store = IndexStore(path, create=True)
    store.bind(model_id=model_id, embed_dim=vectors.shape[1], root=path.parent)
    with store.transaction() as c:
        store.insert(c, [NewRow(f"scene{i:06d}.png", 1, 1, f"h{i}", v) for i, v in enumerate(vectors)])
    return store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a clipforge checkpoint trained on the shapes data")
    ap.add_argument("--n", type=int, default=3000, help="images in the collection (default: 3000)")
    ap.add_argument("--sample", type=int, default=2048, help="calibration sample size (default: 2048)")
    ap.add_argument("--image-queries", type=int, default=30, help="query images (default: 30, each of 2 kinds)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    encoder = Encoder.load(args.model, device="cpu", precision="fp32", progress=False)
    spec = ShapesSpec(image_size=max(32, encoder.model.config.vision.image_size), n_val=args.n, seed=args.seed)
    attrs, vectors = [], []
    for start in range(0, args.n, 256):
        batch = [make_shapes_sample(i, split="val", spec=spec) for i in range(start, min(args.n, start + 256))]
        attrs += [a for _, _, a in batch]
        vectors.append(encoder.encode_images([im for im, _, _ in batch]))
    vectors = np.concatenate(vectors)  # (N, E)
    texts = queries(spec, seed=args.seed)
    images = image_queries(spec, args.image_queries)
    qs = [(kind, text, named) for kind, text, named in texts] + [(k, "(image)", named) for k, _, named in images]
    query_vectors = np.concatenate(
        [encoder.encode_texts([t for _, t, _ in texts]), encoder.encode_images([im for _, im, _ in images])]
    )  # (Q, E)
    t_embed = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(Path(tmp) / "scenes.cfidx", vectors, encoder.model_id)
        index = ImageIndex(store, calibration_sample=args.sample)
        cos, rel, lab, kinds = [], [], [], []
        for (kind, _, named), q in zip(qs, query_vectors, strict=True):
            hits = index.search_vector(q, k=args.n)
            rows = [int(h.path[5:11]) for h in hits]
            cos.append(np.array([h.score for h in hits]))
            rel.append(np.array([h.relevance for h in hits]))
            lab.append(np.array([all(attrs[i][k] == v for k, v in named.items()) for i in rows]))
            kinds.append(kind)
        store.close()

    print(f"# Relevance vs cosine on {args.n} shapes scenes, {len(texts)} text and {len(images)} image queries\n")
    cpu = platform.processor() or platform.machine()
    print(f"model {args.model}; calibration sample {min(args.sample, args.n)}; {cpu}; embedding {t_embed:.1f} s\n")
    print("| query kind | queries | share of images matching (mean) |")
    print("|---|---:|---:|")
    for kind in dict.fromkeys(kinds):
        sel = [i for i, k in enumerate(kinds) if k == kind]
        print(f"| {kind} | {len(sel)} | {np.mean([lab[i].mean() for i in sel]):.2%} |")
    pooled_l = np.concatenate(lab)
    rows = {"cosine": summary(np.concatenate(cos), pooled_l), "relevance": summary(np.concatenate(rel), pooled_l)}
    cross = {"cosine": cross_query_f1(cos, lab), "relevance": cross_query_f1(rel, lab)}
    print("\nOne threshold for every query (pooled over all query-image pairs):\n")
    print("| score | best threshold | precision | recall | F1 | F1, threshold from the other half of the queries "
          "| recall at P >= 0.9 | precision at R >= 0.9 | average precision |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in rows.items():
        print(f"| {name} | {s['threshold']:.4f} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | "
              f"{cross[name]:.3f} | {s['recall@P>=0.9']:.3f} | {s['precision@R>=0.9']:.3f} | "
              f"{s['ap']:.3f} |")  # fmt: skip
    p, r, f = at_threshold(np.concatenate(rel), pooled_l, 0.5)
    print(f"| relevance, the fixed cutoff 0.5 | 0.5 | {p:.3f} | {r:.3f} | {f:.3f} | {f:.3f} | | | |")
    for group, sel in (("text", [i for i, k in enumerate(kinds) if not k.startswith("image")]),
                       ("image", [i for i, k in enumerate(kinds) if k.startswith("image")])):  # fmt: skip
        y = np.concatenate([lab[i] for i in sel])
        c = summary(np.concatenate([cos[i] for i in sel]), y)
        rr = summary(np.concatenate([rel[i] for i in sel]), y)
        print(f"| {group} queries only: cosine | {c['threshold']:.4f} | {c['precision']:.3f} | {c['recall']:.3f} | "
              f"{c['f1']:.3f} | | | | {c['ap']:.3f} |")  # fmt: skip
        print(f"| {group} queries only: relevance | {rr['threshold']:.4f} | {rr['precision']:.3f} | "
              f"{rr['recall']:.3f} | {rr['f1']:.3f} | | | | {rr['ap']:.3f} |")  # fmt: skip
    per_query = [summary(c, y)["threshold"] for c, y in zip(cos, lab, strict=True) if y.any()]
    per_query_rel = [summary(c, y)["threshold"] for c, y in zip(rel, lab, strict=True) if y.any()]
    print(f"\nBest threshold of each query on its own: cosine {np.min(per_query):.3f} to {np.max(per_query):.3f} "
          f"(median {np.median(per_query):.3f}); relevance {np.min(per_query_rel):.3f} to "
          f"{np.max(per_query_rel):.3f} (median {np.median(per_query_rel):.3f}).")  # fmt: skip
    print("\n| query kind | best-F1 threshold, cosine | F1 at it | best-F1 threshold, relevance | F1 at it |")
    print("|---|---:|---:|---:|---:|")
    for kind in dict.fromkeys(kinds):
        sel = [i for i, k in enumerate(kinds) if k == kind]
        c = summary(np.concatenate([cos[i] for i in sel]), np.concatenate([lab[i] for i in sel]))
        rr = summary(np.concatenate([rel[i] for i in sel]), np.concatenate([lab[i] for i in sel]))
        print(f"| {kind} | {c['threshold']:.4f} | {c['f1']:.3f} | {rr['threshold']:.4f} | {rr['f1']:.3f} |")


if __name__ == "__main__":
    main()
