"""clipforge export CKPT OUT --to hf|open_clip|onnx: write a model in another library's format.

Export CKPT (a clipforge checkpoint, or any source 'clipforge convert' reads) into the folder OUT.
"""

from __future__ import annotations

import argparse

from ._apps import MODEL_HELP

HELP = "export a model to a Hugging Face folder, an open_clip folder or ONNX encoders"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("ckpt", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("out", help="output folder")
    p.add_argument("--to", required=True, choices=["hf", "open_clip", "onnx"], help="target format")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-verify", action="store_true", help="ONNX: skip the onnxruntime comparison")


def run(args: argparse.Namespace) -> int:
    from ..convert.export import export
    from ..inference import LazyTokenizer, load_model
    from ..tokenizer import TokenizerError

    model, tokenizer, _, _ = load_model(args.ckpt, device="cpu", precision="fp32")
    try:
        tokenizer = tokenizer.get() if isinstance(tokenizer, LazyTokenizer) else tokenizer
    except TokenizerError as e:
        print(f"note: no tokenizer files are written ({e})")
        tokenizer = None
    if args.to == "onnx":
        from ..convert.onnx import export_onnx

        result = export_onnx(
            model, args.out, tokenizer=tokenizer, opset=args.opset, verify=not args.no_verify
        )
        print(f"wrote {result.image_path} and {result.text_path}")
        if result.max_abs_diff is not None:
            print(f"  onnxruntime matches PyTorch: max abs diff {result.max_abs_diff:.1e}")
        return 0
    out = export(model, args.out, to=args.to, tokenizer=tokenizer)
    print(f"wrote {args.to} model to {out}")
    return 0
