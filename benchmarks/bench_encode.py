"""Image and text encoding throughput: clipforge vs open_clip vs Hugging Face, fp32 and bf16.

Runs every model in ONE process with the same torch build, so the ratios are like for like. open_clip
needs torchvision, which only imports beside torch 2.14.1, hence the separate environment:

    PYTHONPATH=src /work/venv-oc/bin/python benchmarks/bench_encode.py            # all peers
    PYTHONPATH=src .venv/bin/python benchmarks/bench_encode.py --peers clipforge,hf  # project env

Every model is built first; each round then times every (peer, mode) in turn, so a drift in the
machine's speed affects all peers alike. Prints a markdown table (items/s, median over rounds) and
the bf16-vs-fp32 cosine of our embeddings.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F

CAPTIONS = [
    "a photo of a dog", "two small striped red circles on the left of a large blue square",
    "a man riding a bicycle down a busy city street at night", "an aerial view of a harbour with boats",
    "a bowl of fruit on a wooden table", "a close-up photograph of a cat sleeping on a sofa",
    "people walking on the beach at sunset", "a plate of pasta with tomato sauce and basil",
]


def timed(fn, *, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def tokens_for(kind: str, batch: int, context: int = 77) -> torch.Tensor:
    """Realistic captions (OpenAI-style ids from a fixed vocabulary-free scheme) or full-length rows."""
    g = torch.Generator().manual_seed(0)
    toks = torch.zeros(batch, context, dtype=torch.long)
    for i in range(batch):
        n = context if kind == "full" else 2 + len(CAPTIONS[i % len(CAPTIONS)].split()) + 2
        toks[i, 0] = 49406
        toks[i, 1 : n - 1] = torch.randint(1, 49000, (n - 2,), generator=g)
        toks[i, n - 1] = 49407
    return toks


class Peer:
    name = ""

    def image(self, x):  # -> (B, E)
        raise NotImplementedError

    def text(self, t):
        raise NotImplementedError


class Ours(Peer):
    name = "clipforge"

    def __init__(self, dtype):
        from clipforge import models

        self.model = models.create_model("ViT-B-32").eval().to(dtype)

    def image(self, x):
        return self.model.encode_image(x)

    def text(self, t):
        return self.model.encode_text(t)


class OpenCLIP(Peer):
    name = "open_clip"

    def __init__(self, dtype, autocast):
        import open_clip

        self.model = open_clip.create_model("ViT-B-32").eval()
        self.ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        if not autocast:
            self.model = self.model.to(dtype)
        self.dtype = torch.float32 if autocast else dtype

    def image(self, x):
        with self.ctx:
            return self.model.encode_image(x.to(self.dtype))

    def text(self, t):
        with self.ctx:
            return self.model.encode_text(t)


class HF(Peer):
    name = "transformers"

    def __init__(self, dtype, autocast):
        import transformers

        cfg = transformers.CLIPConfig(
            text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                             max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu",
                             bos_token_id=49406, eos_token_id=49407, pad_token_id=0),
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               image_size=224, patch_size=32, hidden_act="quick_gelu"),
            projection_dim=512,
        )
        self.model = transformers.CLIPModel(cfg).eval()
        self.ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        if not autocast:
            self.model = self.model.to(dtype)
        self.dtype = torch.float32 if autocast else dtype

    def image(self, x):
        with self.ctx:
            out = self.model.get_image_features(pixel_values=x.to(self.dtype))
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def text(self, t):
        with self.ctx:
            out = self.model.get_text_features(input_ids=t)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def make(peer: str, mode: str) -> Peer:
    dtype = torch.bfloat16 if mode != "fp32" else torch.float32
    autocast = mode == "bf16-autocast"
    if peer == "clipforge":
        return Ours(dtype)
    return {"open_clip": OpenCLIP, "hf": HF}[peer](dtype, autocast)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default="clipforge,open_clip,hf")
    p.add_argument("--image-batch", type=int, default=32)
    p.add_argument("--text-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="rounds over all peers")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.image_batch, 3, 224, 224)
    texts = {"captions": tokens_for("captions", args.text_batch), "full-77": tokens_for("full", args.text_batch)}
    # Every (peer, mode) is built first, then the rounds go round all of them in turn: slow drifts of
    # the machine's speed (other jobs, clocks) hit every peer alike instead of whichever ran last.
    encoders: dict[tuple[str, str], Peer] = {}
    for peer in args.peers.split(","):
        for mode in ["fp32", "bf16"] if peer == "clipforge" else ["fp32", "bf16", "bf16-autocast"]:
            try:
                encoders[(peer, mode)] = make(peer, mode)
            except ImportError as e:
                print(f"skip {peer}: {e}")
                break
    jobs = {"img/s": (images, args.image_batch)} | {
        f"text/s ({kind})": (tok, args.text_batch) for kind, tok in texts.items()
    }
    samples: dict[tuple[str, str], dict[str, list[float]]] = {key: {j: [] for j in jobs} for key in encoders}
    with torch.inference_mode():
        for enc in encoders.values():  # warm-up
            enc.image(images[:2])
            enc.text(texts["captions"][:2])
        for r in range(args.repeats):
            for key, enc in encoders.items():
                for job, (inputs, n) in jobs.items():
                    fn = enc.image if job == "img/s" else enc.text
                    samples[key][job].append(n / timed(lambda fn=fn, x=inputs: fn(x), repeats=1, warmup=0))
            print(f"round {r + 1}/{args.repeats} done", flush=True)
    rows = [
        {"peer": peer, "mode": mode} | {job: statistics.median(v) for job, v in samples[(peer, mode)].items()}
        for peer, mode in encoders
    ]
    if "clipforge" in args.peers:
        with torch.inference_mode():
            ref, low = make("clipforge", "fp32"), make("clipforge", "bf16")
            low.model.load_state_dict({k: v.to(torch.bfloat16) for k, v in ref.model.state_dict().items()})
            ci = F.cosine_similarity(ref.image(images[:8]), low.image(images[:8]).float()).min().item()
            ct = F.cosine_similarity(ref.text(texts["captions"][:64]), low.text(texts["captions"][:64]).float()).min()
        print(f"\nclipforge bf16 vs fp32 cosine: image min {ci:.5f}, text min {ct.item():.5f}")
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
