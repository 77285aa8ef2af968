"""SigLIP B/16 encoding throughput: clipforge vs transformers' SiglipModel, fp32 and bf16, one process.

Both peers hold the SAME random weights (ours exported through clipforge's SiglipModel mapping), and
the run first checks that their embeddings agree, so the timings compare the same computation:

    PYTHONPATH=src .venv/bin/python benchmarks/bench_siglip.py                 # 3 rounds, 1 thread
    PYTHONPATH=src .venv/bin/python benchmarks/bench_siglip.py --repeats 5 --threads 2

Images: ViT-B-16-SigLIP at 224 px (196 patch tokens, attention-pooled). Texts: 64 tokens, the full
context, as SigLIP always pads (``padding="max_length"``), so there is no padding to skip.
One torch thread by default: this machine's 2 cores are shared, and one thread gives stable ratios
(with 2 threads a neighbour's job lands on one peer's rounds). Every (peer, mode) is built first and
each round times all of them in turn, so drifts of the machine's speed hit every peer alike.
Prints a markdown table (items/s, median over rounds) and clipforge / transformers ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

ARCH = "ViT-B-16-SigLIP"


def build(dtype: torch.dtype):
    """(clipforge model, transformers SiglipModel) with identical weights, eval mode, in ``dtype``."""
    import transformers

    from clipforge.convert import hf_siglip
    from clipforge.models import create_model

    ours = create_model(ARCH).eval()
    ref = transformers.SiglipModel(transformers.SiglipConfig(**{
        k: v for k, v in hf_siglip.config_to_hf(ours.config).items() if k not in ("model_type", "architectures")
    })).eval()  # fmt: skip
    ref.load_state_dict(hf_siglip.to_hf(ours.state_dict()), strict=False)  # strict=False: position_ids buffers
    return ours.to(dtype), ref.to(dtype)


def pooled(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def encoders(ours, ref, dtype):
    return {
        "clipforge": (lambda x: ours.encode_image(x), lambda t: ours.encode_text(t)),
        "transformers": (
            lambda x: F.normalize(pooled(ref.get_image_features(pixel_values=x.to(dtype))), dim=-1),
            lambda t: F.normalize(pooled(ref.get_text_features(input_ids=t)), dim=-1),
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-batch", type=int, default=8)
    p.add_argument("--text-batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="rounds over all peers")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.image_batch, 3, 224, 224)
    texts = torch.randint(2, 32000, (args.text_batch, 64))
    texts[:, 8:] = 1  # short captions padded with </s> (= pad) to the full context, as SiglipTokenizer does
    runs = {}
    with torch.inference_mode():
        for mode, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            torch.manual_seed(0)
            ours, ref = build(dtype)
            peers = encoders(ours, ref, dtype)
            a, b = peers["clipforge"], peers["transformers"]
            ci = F.cosine_similarity(a[0](images[:2]).float(), b[0](images[:2]).float()).min().item()
            ct = F.cosine_similarity(a[1](texts[:4]).float(), b[1](texts[:4]).float()).min().item()
            print(f"{mode}: clipforge vs transformers embedding cosine: image min {ci:.6f}, text min {ct:.6f}")
            for name, fns in peers.items():
                runs[(name, mode)] = fns
        samples = {key: {"img/s": [], "text/s": []} for key in runs}
        for fns in runs.values():  # warm-up
            fns[0](images[:1])
            fns[1](texts[:1])
        for r in range(args.repeats):
            for key, (image_fn, text_fn) in runs.items():
                t = time.perf_counter()
                image_fn(images)
                samples[key]["img/s"].append(args.image_batch / (time.perf_counter() - t))
                t = time.perf_counter()
                text_fn(texts)
                samples[key]["text/s"].append(args.text_batch / (time.perf_counter() - t))
            print(f"round {r + 1}/{args.repeats} done", flush=True)
    med = {key: {job: statistics.median(v) for job, v in jobs.items()} for key, jobs in samples.items()}
    print(f"\n{ARCH}, image batch {args.image_batch}, text batch {args.text_batch} x 64 tokens, "
          f"{args.threads} thread(s), median of {args.repeats} rounds\n")
    print("| peer | mode | img/s | text/s |\n|---|---|---|---|")
    for (peer, mode), m in med.items():
        print(f"| {peer} | {mode} | {m['img/s']:.2f} | {m['text/s']:.2f} |")
    print("\n| mode | images: clipforge / transformers | texts: clipforge / transformers |\n|---|---|---|")
    for mode in ("fp32", "bf16"):
        ours, theirs = med[("clipforge", mode)], med[("transformers", mode)]
        print(f"| {mode} | {ours['img/s'] / theirs['img/s']:.2f}x | {ours['text/s'] / theirs['text/s']:.2f}x |")


if __name__ == "__main__":
    main()
