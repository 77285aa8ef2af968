"""Conversion time of a ViT-B-32-sized checkpoint (151M parameters): clipforge vs the peers' own loaders.

One random ViT-B-32 (QuickGELU) is written as an OpenAI-style float16 TorchScript archive, an OpenAI-layout
state dict and a Hugging Face folder; each is converted to a clipforge checkpoint (read, map, strict load,
sha256 of the source, save) and the peers load the same files in the same process:

    PYTHONPATH=src /work/venv-oc/bin/python benchmarks/bench_convert.py   # + open_clip (real traced archive)
    PYTHONPATH=src /work/venv/bin/python benchmarks/bench_convert.py      # clipforge + transformers

Prints a markdown table of median wall-clock seconds and peer / clipforge ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from clipforge.api import load
from clipforge.convert import convert, export_hf, import_model
from clipforge.convert.open_clip import to_open_clip
from clipforge.models import create_model, get_model_config


def timed(fn, *, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _Holder(nn.Module):
    """A scriptable module tree holding tensors under OpenAI's names (when open_clip is not installed)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def write_torchscript(openai_sd: dict[str, torch.Tensor], path: Path) -> str:
    try:
        import open_clip
    except ImportError:
        root = _Holder()
        for name, tensor in openai_sd.items():
            *parents, leaf = name.split(".")
            module = root
            for p in parents:
                if not hasattr(module, p):
                    module.add_module(p, _Holder())
                module = getattr(module, p)
            module.register_buffer(leaf, tensor)
        torch.jit.script(root).save(str(path))
        return "module tree (scripted)"
    model = open_clip.create_model("ViT-B-32-quickgelu").eval()
    model.load_state_dict({k: v.float() for k, v in openai_sd.items() if k in model.state_dict()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(
            model,
            {
                "encode_image": (torch.randn(1, 3, 224, 224),),
                "encode_text": (torch.zeros(1, 77, dtype=torch.long),),
            },
            check_trace=False,
        )
    traced.half().save(str(path))
    return "open_clip ViT-B-32 (traced, fp16)"


def small_tokenizer():
    from clipforge.tokenizer import Tokenizer, get_tokenizer

    try:
        return get_tokenizer("openai")
    except Exception:  # noqa: BLE001 - any missing vocabulary: time with a minimal one
        return Tokenizer.from_merges([], context_length=77)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = create_model(get_model_config("ViT-B-32").replace(act="quick_gelu")).eval()
    tok = small_tokenizer()
    openai_sd = {k: v.half() for k, v in to_open_clip(model.state_dict()).items()}
    openai_sd.update(
        input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408)
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        archive_kind = write_torchscript(openai_sd, tmp / "ViT-B-32.pt")
        torch.save(openai_sd, tmp / "openai_state_dict.pt")
        export_hf(model, tmp / "hf", tokenizer=tok)
        mb = (tmp / "ViT-B-32.pt").stat().st_size / 1e6

        def ours(src: str, name: str):
            return lambda: convert(tmp / src, tmp / f"out_{name}", vocab=tok)

        t_jit = timed(ours("ViT-B-32.pt", "jit"), repeats=args.repeats)
        t_import = timed(lambda: import_model(tmp / "ViT-B-32.pt"), repeats=args.repeats)
        t_sd = timed(ours("openai_state_dict.pt", "sd"), repeats=args.repeats)
        t_hf = timed(ours("hf", "hf"), repeats=args.repeats)
        t_load = timed(lambda: load(tmp / "out_jit"), repeats=args.repeats)

        peer_jit = peer_hf = None
        try:
            import open_clip

            def open_clip_load():  # open_clip.load_openai_model's steps (torch.jit.load runs the archive)
                sd = torch.jit.load(str(tmp / "ViT-B-32.pt"), map_location="cpu").state_dict()
                sd.pop("attn_mask", None)  # a buffer of open_clip's traced model that OpenAI's files lack
                return open_clip.model.build_model_from_openai_state_dict(sd, cast_dtype=None).float()

            if archive_kind.startswith("open_clip"):
                peer_jit = timed(open_clip_load, repeats=args.repeats)
        except ImportError:
            pass
        try:
            import transformers

            peer_hf = timed(lambda: transformers.CLIPModel.from_pretrained(tmp / "hf"), repeats=args.repeats)
        except ImportError:
            pass

    def row(task, ours_s, peer, peer_s):
        ratio = f"{peer_s / ours_s:.2f}" if peer_s else "-"
        rows.append(
            f"| {task} | {ours_s:.2f} | {peer or '-'} | {f'{peer_s:.2f}' if peer_s else '-'} | {ratio} |"
        )

    row(
        f"OpenAI TorchScript .pt ({mb:.0f} MB, {archive_kind}) -> clipforge checkpoint",
        t_jit,
        "open_clip load_openai_model path (torch.jit.load)",
        peer_jit,
    )
    row("same archive, in-memory import only (import_model)", t_import, None, None)
    row("OpenAI-layout fp16 state dict -> clipforge checkpoint", t_sd, None, None)
    row(
        "Hugging Face folder -> clipforge checkpoint", t_hf, "transformers CLIPModel.from_pretrained", peer_hf
    )
    row("load the converted clipforge checkpoint", t_load, None, None)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| task | clipforge s | peer | peer s | peer / clipforge |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
