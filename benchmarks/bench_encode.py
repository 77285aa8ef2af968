"""Image and text encoding throughput: clipforge vs open_clip vs Hugging Face, fp32 and bf16.

Runs every model in ONE process with the same torch build, so the ratios are like for like. open_clip
needs torchvision, which only imports beside torch 2.14.1, hence the separate environment:

    PYTHONPATH=src /work/venv-oc/bin/python benchmarks/bench_encode.py            # all peers
    PYTHONPATH=src .venv/bin/python benchmarks/bench_encode.py --peers clipforge,hf  # project env

Every model is built first; each round then times every (peer, mode) in turn, so a drift in the
machine's speed affects all peers alike. Prints a markdown table (items/s, median over rounds) and
the bf16-vs-fp32 cosine of our embeddings; ``--json`` also writes the rows, each with the device
its outputs were on (``scripts/gpu_check.sh`` fails when that is not the GPU). On a GPU:

    python benchmarks/bench_encode.py --device cuda --modes bf16 --peers clipforge,open_clip \
        --model RN50 --channels-last --sdpa flash --compile --json rn50.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # GPU kernels run asynchronously: time them to their end
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

    def __init__(self, dtype, model_name="ViT-B-32"):
        from clipforge import models

        self.model = models.create_model(model_name).eval().to(dtype)

    def image(self, x):
        return self.model.encode_image(x)

    def text(self, t):
        return self.model.encode_text(t)


class OpenCLIP(Peer):
    name = "open_clip"

    def __init__(self, dtype, autocast, model_name="ViT-B-32", device="cpu"):
        import open_clip

        self.model = open_clip.create_model(model_name).eval()
        self.ctx = torch.autocast(device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
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

    def __init__(self, dtype, autocast, model_name="ViT-B-32", device="cpu"):
        import transformers

        if model_name != "ViT-B-32":
            raise ImportError(f"the transformers peer is written for ViT-B-32 only, not {model_name}")

        cfg = transformers.CLIPConfig(
            text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                             max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu",
                             bos_token_id=49406, eos_token_id=49407, pad_token_id=0),
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                               image_size=224, patch_size=32, hidden_act="quick_gelu"),
            projection_dim=512,
        )
        self.model = transformers.CLIPModel(cfg).eval()
        self.ctx = torch.autocast(device, dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
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


def make(peer: str, mode: str, *, model: str = "ViT-B-32", device: str = "cpu") -> Peer:
    dtype = torch.bfloat16 if mode != "fp32" else torch.float32
    autocast = mode == "bf16-autocast"
    if peer == "clipforge":
        return Ours(dtype, model)
    return {"open_clip": OpenCLIP, "hf": HF}[peer](dtype, autocast, model, device)


def place(enc: Peer, args: argparse.Namespace) -> Peer:
    """Move ``enc`` to ``args.device`` (channels-last for a ResNet with ``--channels-last``) and
    compile its encoders with ``--compile``."""
    layout = torch.channels_last if args.channels_last and args.model.startswith("RN") else torch.contiguous_format
    enc.model = enc.model.to(args.device, memory_format=layout)
    image, text = enc.image, enc.text
    if args.compile:
        image, text = torch.compile(image), torch.compile(text)
    enc.image, enc.text = image, text
    return enc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peers", default="clipforge,open_clip,hf")
    p.add_argument("--model", default="ViT-B-32", help="architecture (both clipforge and open_clip name it)")
    p.add_argument("--modes", default="fp32,bf16,bf16-autocast", help="bf16-autocast: peers other than clipforge")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--compile", action="store_true", help="torch.compile each encoder (warm-up compiles)")
    p.add_argument("--channels-last", action="store_true", help="channels-last images and convolutions (ResNets)")
    p.add_argument("--sdpa", default="default", choices=["default", "flash"],
                   help="flash: fused attention kernels only (flash; memory-efficient where a mask rules "
                        "flash out); an attention call that would fall back to the math kernel fails")
    p.add_argument("--image-batch", type=int, default=32)
    p.add_argument("--text-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="rounds over all peers")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the rows and settings to this JSON file")
    return p


def attention_kernels(choice: str):
    if choice == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])


def main() -> None:
    args = build_parser().parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device cuda: torch {torch.__version__} sees no CUDA device")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    images = torch.randn(args.image_batch, 3, 224, 224, device=args.device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    texts = {
        "captions": tokens_for("captions", args.text_batch).to(args.device),
        "full-77": tokens_for("full", args.text_batch).to(args.device),
    }
    # Every (peer, mode) is built first, then the rounds go round all of them in turn: slow drifts of
    # the machine's speed (other jobs, clocks) hit every peer alike instead of whichever ran last.
    encoders: dict[tuple[str, str], Peer] = {}
    modes = args.modes.split(",")
    for peer in args.peers.split(","):
        for mode in [m for m in modes if peer != "clipforge" or m != "bf16-autocast"]:
            try:
                encoders[(peer, mode)] = place(make(peer, mode, model=args.model, device=args.device), args)
            except ImportError as e:
                print(f"skip {peer}: {e}")
                break
    jobs = {"img/s": (images, args.image_batch)} | {
        f"text/s ({kind})": (tok, args.text_batch) for kind, tok in texts.items()
    }
    samples: dict[tuple[str, str], dict[str, list[float]]] = {key: {j: [] for j in jobs} for key in encoders}
    devices: dict[tuple[str, str], str] = {}
    warm = slice(None) if args.compile else slice(0, 2)  # compiled: warm up at the timed shapes
    with torch.inference_mode(), attention_kernels(args.sdpa):
        for key, enc in encoders.items():  # warm-up (and compilation); where the outputs live
            out = enc.image(images[warm])
            enc.text(texts["captions"][warm])
            devices[key] = out.device.type
        for r in range(args.repeats):
            for key, enc in encoders.items():
                for job, (inputs, n) in jobs.items():
                    fn = enc.image if job == "img/s" else enc.text
                    samples[key][job].append(n / timed(lambda fn=fn, x=inputs: fn(x), repeats=1, warmup=0))
            print(f"round {r + 1}/{args.repeats} done", flush=True)
    rows = [
        {"peer": peer, "mode": mode, "device": devices[(peer, mode)]}
        | {job: statistics.median(v) for job, v in samples[(peer, mode)].items()}
        for peer, mode in encoders
    ]
    if "clipforge" in args.peers and {"fp32", "bf16"} <= set(modes):
        with torch.inference_mode():
            ref = make("clipforge", "fp32", model=args.model).model.to(args.device)
            low = make("clipforge", "bf16", model=args.model).model.to(args.device)
            low.load_state_dict({k: v.to(torch.bfloat16) for k, v in ref.state_dict().items()})
            ci = F.cosine_similarity(ref.encode_image(images[:8]), low.encode_image(images[:8].bfloat16()).float())
            ct = F.cosine_similarity(
                ref.encode_text(texts["captions"][:64]), low.encode_text(texts["captions"][:64]).float()
            )
        print(f"\nclipforge bf16 vs fp32 cosine: image min {ci.min().item():.5f}, text min {ct.min().item():.5f}")
    keys = list(rows[0])
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]) for k in keys) + " |")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        meta = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None}
        with open(args.json, "w") as f:
            json.dump({"benchmark": "encode", "settings": settings, **meta, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
