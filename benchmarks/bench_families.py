"""Model families against their reference implementations: image and text encoding throughput, same weights.

MobileCLIP S (FastViT / MCi image tower): clipforge with the train-time branches and folded
(``CLIP.reparameterize``, what loading by name gives), against open_clip + timm in the reference env
(a subprocess: open_clip's ``local-dir:`` loader on clipforge's open_clip export of the SAME random
weights, timed as loaded and after ``timm.utils.reparameterize_model``). Every BatchNorm gets random
running statistics so folding is not trivially exact. The run first checks that all four produce
the same embeddings (max |diff| printed), so the timings compare the same computation. Texts: the
bidirectional text tower over 77-token rows (real-caption lengths, zero padding, which a
bidirectional tower cannot skip):

    PYTHONPATH=src .venv/bin/python benchmarks/bench_families.py                       # MobileCLIP-S2, 1 thread
    PYTHONPATH=src .venv/bin/python benchmarks/bench_families.py --arch MobileCLIP2-S0 --repeats 5

One torch thread by default (the machine's 2 cores are shared with long trainings; one thread gives
stable ratios). Rounds alternate: one clipforge round (every mode), then one reference process (load,
one warm-up call, one timed round), so slow drifts of the machine hit both peers. Prints a markdown
table (images/s, median over rounds) and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from clipforge.convert import export_open_clip
from clipforge.models import create_model

# Run by the reference env's python: argv = folder, inputs.safetensors, out.safetensors, repeats, threads.
REFERENCE = r"""
import json, statistics, sys, time
import open_clip, timm, torch
from safetensors.torch import load_file, save_file
from timm.utils.model import reparameterize_model
folder, inputs, out, repeats, threads = sys.argv[1:6]
torch.set_num_threads(int(threads))
data = load_file(inputs)
images, tokens = data["images"], data["tokens"]
model = open_clip.create_model("local-dir:" + folder).eval()
folded = reparameterize_model(model)
times, feats = {}, {}
with torch.inference_mode():
    for name, m in (("branches", model), ("folded", folded)):
        feats[name] = m.encode_image(images, normalize=True)
    feats["text"] = model.encode_text(tokens, normalize=True)
    rounds = {"branches": [], "folded": [], "text": []}
    for _ in range(int(repeats)):
        for name, m in (("branches", model), ("folded", folded)):
            t = time.perf_counter(); m.encode_image(images, normalize=True)
            rounds[name].append(images.shape[0] / (time.perf_counter() - t))
        t = time.perf_counter(); model.encode_text(tokens, normalize=True)
        rounds["text"].append(tokens.shape[0] / (time.perf_counter() - t))
save_file(feats, out)
print(json.dumps({k: statistics.median(v) for k, v in rounds.items()}))
print(f"open_clip {open_clip.__version__}, timm {timm.__version__}, torch {torch.__version__}", file=sys.stderr)
"""


def random_bn_statistics(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 2.0)


def time_rounds(fns: dict, inputs: dict[str, torch.Tensor], repeats: int) -> dict[str, list[float]]:
    """Items/s of each ``fns[name](inputs[name])``, one value per round, all names in turn each round."""
    rounds: dict[str, list[float]] = {name: [] for name in fns}
    with torch.inference_mode():
        for _ in range(repeats):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(inputs[name])
                rounds[name].append(inputs[name].shape[0] / (time.perf_counter() - start))
    return rounds


def caption_tokens(batch: int, context: int, vocab: int) -> torch.Tensor:
    """Rows like tokenised captions: start token, 8..20 random ids, end token (the largest id), zero padding."""
    tokens = torch.zeros(batch, context, dtype=torch.long)
    for i in range(batch):
        n = int(torch.randint(10, 23, ()))
        tokens[i, 0], tokens[i, n - 1] = vocab - 2, vocab - 1
        tokens[i, 1 : n - 1] = torch.randint(1, vocab - 2, (n - 2,))
    return tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="MobileCLIP-S2", help="a clipforge MobileCLIP S architecture")
    p.add_argument("--image-batch", type=int, default=8)
    p.add_argument("--text-batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="rounds per peer and mode")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ref-python", default="/work/venv-ref/bin/python", help="the reference env's python")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    branches = create_model(args.arch).eval()
    random_bn_statistics(branches)
    size = branches.config.image_size
    images = torch.rand(args.image_batch, 3, size, size)
    t = branches.config.text
    tokens = caption_tokens(args.text_batch, t.context_length, t.vocab_size)
    inputs = {"branches": images, "folded": images, "text": tokens}
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_open_clip(branches, Path(tmp) / "oc")  # before folding: open_clip's layout
        folded = create_model(args.arch).eval()
        folded.load_state_dict(branches.state_dict())
        folded.reparameterize()
        fns = {"branches": lambda x: branches.encode_image(x), "folded": lambda x: folded.encode_image(x),
               "text": lambda t: folded.encode_text(t)}  # fmt: skip
        with torch.inference_mode():
            ours = {name: fn(inputs[name]) for name, fn in fns.items()}
        save_file({"images": images, "tokens": tokens}, str(Path(tmp) / "inputs.safetensors"))
        out = Path(tmp) / "ref.safetensors"
        ours_rounds: dict[str, list[float]] = {name: [] for name in fns}
        ref_rounds: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(args.repeats):  # alternate: one clipforge round, one reference process (warm-up + one round)
            for name, values in time_rounds(fns, inputs, 1).items():
                ours_rounds[name] += values
            proc = subprocess.run(
                [args.ref_python, "-c", REFERENCE, str(folder), str(Path(tmp) / "inputs.safetensors"), str(out),
                 "1", str(args.threads)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            for name, value in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                ref_rounds[name].append(value)
        ref = load_file(str(out))
    rates = {name: statistics.median(v) for name, v in ours_rounds.items()}
    ref_rates = {name: statistics.median(v) for name, v in ref_rounds.items()}
    pairs = [(a, b) for a in ("branches", "folded") for b in ("branches", "folded")] + [("text", "text")]
    diffs = {f"{a} vs open_clip {b}": float((ours[a] - ref[b]).abs().max()) for a, b in pairs}
    print(f"{args.arch}: {size} px, batch {args.image_batch}, {args.threads} thread(s); {proc.stderr.strip()}")
    print("max |diff| of normalised embeddings: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    print("\n| image encoder | branches (img/s) | folded (img/s) | folded / branches |")
    print("|---|---|---|---|")
    for name, r in (("clipforge", rates), ("open_clip + timm", ref_rates)):
        print(f"| {name} | {r['branches']:.2f} | {r['folded']:.2f} | {r['folded'] / r['branches']:.2f}x |")
    print(f"| clipforge / open_clip | {rates['branches'] / ref_rates['branches']:.2f}x | "
          f"{rates['folded'] / ref_rates['folded']:.2f}x | |")  # fmt: skip
    print(f"\ntext encoder, batch {args.text_batch} x {t.context_length} tokens: clipforge {rates['text']:.1f}/s, "
          f"open_clip {ref_rates['text']:.1f}/s, ratio {rates['text'] / ref_rates['text']:.2f}x")
    if max(diffs.values()) > 1e-4:
        sys.exit("the peers' embeddings differ: the timings would not compare the same computation")


if __name__ == "__main__":
    main()
