"""Generate the open_clip golden assets for tests/test_convert_golden.py (run ONCE, in the reference env).

    PYTHONPATH=src /work/venv-oc/bin/python tests/assets/convert/make_golden.py

Each case is a small random-weight open_clip model with the structure of a real one (patch size,
stage depths, activation) and its outputs on fixed inputs, computed by open_clip itself:

    <case>.json                 open_clip model config
    <case>.safetensors / .pt    the checkpoint, in open_clip's (= OpenAI's) parameter names
    <case>.expected.safetensors images, tokens and open_clip's normalised image/text features

CI then checks clipforge's conversion against open_clip's recorded numbers without open_clip installed.
Weights and images are rounded to float16 (halving the files); the references are computed in float32
from exactly those rounded values.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

HERE = Path(__file__).parent
VOCAB = 520  # room for a small trained BPE tokenizer (512 byte tokens + merges + 2 specials)
CTX = 16

CASES = {
    # ViT-B-32 structure (patch 32, GELU, 2 heads), tiny widths.
    "vit_b32": dict(
        embed_dim=32,
        vision_cfg=dict(image_size=64, layers=2, width=32, patch_size=32, head_width=16),
        text_cfg=dict(context_length=CTX, vocab_size=VOCAB, width=32, heads=2, layers=2),
    ),
    # RN50 structure (stages 3-4-6-3, attention pooling), tiny widths.
    "rn50": dict(
        embed_dim=32,
        vision_cfg=dict(image_size=64, layers=[3, 4, 6, 3], width=4, head_width=32),
        text_cfg=dict(context_length=CTX, vocab_size=VOCAB, width=32, heads=2, layers=2),
    ),
    # OpenAI's release format: QuickGELU, 64-wide heads, float16 weights, traced TorchScript archive.
    "openai_vit": dict(
        embed_dim=32,
        quick_gelu=True,
        vision_cfg=dict(image_size=32, layers=1, width=64, patch_size=16, head_width=64),
        text_cfg=dict(context_length=CTX, vocab_size=VOCAB, width=64, heads=1, layers=1),
    ),
}


def randomize(model: torch.nn.Module) -> None:
    """Non-trivial values everywhere (LayerNorm/BatchNorm affine and running stats included), fp16-exact."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn_like(b))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand_like(b))
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(t.half().float())


def inputs(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(2, 3, image_size, image_size).half().float()
    tokens = torch.zeros(3, CTX, dtype=torch.long)
    for i, n in enumerate([3, CTX, 9]):  # shortest, full-length and middle texts
        tokens[i, 0] = VOCAB - 2
        tokens[i, 1 : n - 1] = torch.randint(1, VOCAB - 2, (n - 2,))
        tokens[i, n - 1] = VOCAB - 1
    return images, tokens


def expected(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {
            "images": images.half(),
            "tokens": tokens,
            "image_features": model.encode_image(images, normalize=True),
            "text_features": model.encode_text(tokens, normalize=True),
        }


def main() -> None:
    torch.manual_seed(0)
    meta = {"open_clip": open_clip.__version__, "torch": torch.__version__}
    for case, cfg in CASES.items():
        model = open_clip.CLIP(**cfg).eval()
        randomize(model)
        images, tokens = inputs(cfg["vision_cfg"]["image_size"])
        ref = expected(model, images, tokens)
        (HERE / f"{case}.json").write_text(json.dumps(cfg, indent=2) + "\n")
        save_file(ref, str(HERE / f"{case}.expected.safetensors"), metadata=meta)
        if case == "openai_vit":
            # Like OpenAI's files: a traced TorchScript archive of a float16 model, and the plain state dict
            # with OpenAI's extra tensors.
            model.half()
            traced = torch.jit.trace_module(
                model, {"encode_image": (images.half(),), "encode_text": (tokens,)}, check_trace=False
            )
            traced.save(str(HERE / f"{case}.jit.pt"))
            sd = dict(model.state_dict())
            sd.update(
                input_resolution=torch.tensor(32),
                context_length=torch.tensor(CTX),
                vocab_size=torch.tensor(VOCAB),
            )
            torch.save(sd, HERE / f"{case}.pt")
        else:
            save_file(
                {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()},
                str(HERE / f"{case}.safetensors"),
            )
    total = sum(f.stat().st_size for f in HERE.iterdir() if f.suffix != ".py")
    print(f"wrote golden assets to {HERE} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
