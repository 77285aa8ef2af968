"""Model families against their reference implementations: image and text encoding throughput, same weights.

MobileCLIP S (FastViT / MCi image tower): clipforge with the train-time branches and folded
(``CLIP.reparameterize``, what loading by name gives), against open_clip + timm, which load **the
same weights** from clipforge's open_clip export (``local-dir:``) and are timed as loaded and after
``timm.utils.reparameterize_model``. Every BatchNorm gets random running statistics, so folding is
not trivially exact. The run first checks that the peers produce the same embeddings (max |diff|
printed), so the timings compare the same computation. Texts: the bidirectional text tower over
77-token rows (caption lengths, zero padding, which a bidirectional tower cannot skip).

Both peers run in ONE process of the reference environment (open_clip and timm need torchvision,
which loads only beside its own torch), with clipforge from the source tree:

    PYTHONPATH=src /work/venv-ref/bin/python benchmarks/bench_families.py                  # MobileCLIP-S2
    PYTHONPATH=src /work/venv-ref/bin/python benchmarks/bench_families.py --arch MobileCLIP2-S0 --repeats 5

One torch thread by default (the machine's 2 cores are shared with long trainings; one thread gives
stable ratios). Every (peer, mode) is built first and each round times all of them in turn, so
drifts of the machine's speed hit every peer alike. Prints a markdown table (items/s, median over
rounds) and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from clipforge.convert import export_open_clip
from clipforge.models import CLIP, create_model


def random_bn_statistics(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)


def caption_tokens(batch: int, context: int, vocab: int) -> torch.Tensor:
    """Rows like tokenised captions: start token, 8..20 random ids, end token (the largest id), zero padding."""
    tokens = torch.zeros(batch, context, dtype=torch.long)
    for i in range(batch):
        n = int(torch.randint(10, 23, ()))
        tokens[i, 0], tokens[i, n - 1] = vocab - 2, vocab - 1
        tokens[i, 1 : n - 1] = torch.randint(1, vocab - 2, (n - 2,))
    return tokens


def mobileclip_peers(arch: str) -> tuple[CLIP, dict[str, dict[str, Callable]]]:
    """(clipforge model with branches, {peer: {mode: encode function}}) over identical weights."""
    import open_clip
    from timm.utils.model import reparameterize_model

    branches = create_model(arch).eval()
    random_bn_statistics(branches)
    folded = create_model(arch).eval()
    folded.load_state_dict(branches.state_dict())
    folded.reparameterize()
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_open_clip(branches, Path(tmp) / "oc")  # open_clip's (train-time) layout
        ref = open_clip.create_model(f"local-dir:{folder}").eval()
    ref_folded = reparameterize_model(ref)  # a folded copy
    peers = {
        "clipforge": {"branches": branches.encode_image, "folded": folded.encode_image, "text": folded.encode_text},
        "open_clip + timm": {
            "branches": lambda x: ref.encode_image(x, normalize=True),
            "folded": lambda x: ref_folded.encode_image(x, normalize=True),
            "text": lambda t: ref.encode_text(t, normalize=True),
        },
    }
    return branches, peers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="MobileCLIP-S2", help="a clipforge MobileCLIP S architecture")
    p.add_argument("--image-batch", type=int, default=8)
    p.add_argument("--text-batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="rounds over all peers and modes")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, peers = mobileclip_peers(args.arch)
    size, t = model.config.image_size, model.config.text
    images = torch.rand(args.image_batch, 3, size, size)
    tokens = caption_tokens(args.text_batch, t.context_length, t.vocab_size)
    inputs = {"branches": images, "folded": images, "text": tokens}
    rounds: dict[tuple[str, str], list[float]] = {(peer, mode): [] for peer in peers for mode in inputs}
    with torch.inference_mode():
        out = {key: peers[key[0]][key[1]](inputs[key[1]]) for key in rounds}  # also the warm-up call
        for _ in range(args.repeats):
            for peer, mode in rounds:
                start = time.perf_counter()
                peers[peer][mode](inputs[mode])
                rounds[peer, mode].append(inputs[mode].shape[0] / (time.perf_counter() - start))
    diffs = {mode: max(float((out["clipforge", a] - out["open_clip + timm", mode]).abs().max())
                       for a in (("branches", "folded") if mode != "text" else ("text",)))
             for mode in inputs}  # fmt: skip
    rate = {key: statistics.median(v) for key, v in rounds.items()}
    import open_clip
    import timm

    print(f"{args.arch}: {size} px, image batch {args.image_batch}, text batch {args.text_batch} x "
          f"{t.context_length}, {args.threads} thread(s), {args.repeats} rounds; open_clip {open_clip.__version__}, "
          f"timm {timm.__version__}, torch {torch.__version__}")  # fmt: skip
    print("max |diff| of normalised embeddings, clipforge vs open_clip: "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))  # fmt: skip
    print("\n| encoder | branches (img/s) | folded (img/s) | folded / branches | text (/s) |")
    print("|---|---:|---:|---:|---:|")
    for peer in peers:
        b, f, x = rate[peer, "branches"], rate[peer, "folded"], rate[peer, "text"]
        print(f"| {peer} | {b:.2f} | {f:.2f} | {f / b:.2f}x | {x:.1f} |")
    ours, ref = "clipforge", "open_clip + timm"
    print(f"| clipforge / open_clip | {rate[ours, 'branches'] / rate[ref, 'branches']:.2f}x | "
          f"{rate[ours, 'folded'] / rate[ref, 'folded']:.2f}x | | {rate[ours, 'text'] / rate[ref, 'text']:.2f}x |")
    if max(diffs.values()) > 1e-4:
        sys.exit("the peers' embeddings differ: the timings would not compare the same computation")


if __name__ == "__main__":
    main()
