"""Generate the EVA-02 / PE-Core golden assets for tests/test_families_eva.py (run once, in the reference env).

    /work/venv-ref/bin/python tests/assets/families/make_golden.py     # open_clip 3.3.0, timm 1.0.31

Each case is open_clip's own ``CustomTextCLIP`` with a tiny standard text tower and, as its image tower,
open_clip's ``TimmModel`` whose timm trunk is replaced by a tiny one built by timm's registered model
function (``eva02_base_patch16_clip_224``, ``vit_pe_core_base_patch16_224``) with only the sizes
shrunk, so every family option (RoPE layout and grid, SwiGLU, sub-LN, attention pool, norms) is
timm's. As open_clip does for ``timm_proj: null``, the trunk has ``num_classes=embed_dim`` and the
family's ``global_pool``: its head is the image projection. Every weight is made non-trivial.

    <case>.json                  {"model_cfg": open_clip's model config (the full-size timm name),
                                  "tiny": the trunk's sizes as clipforge VisionConfig fields}
    <case>.safetensors           open_clip's state dict (``visual.trunk.*``, ``text.*``, ``logit_scale``)
    <case>.expected.safetensors  images, tokens and open_clip's normalised image and text features (fp32)
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip
import timm
import torch
from safetensors.torch import save_file

HERE = Path(__file__).parent
EMBED, IMAGE, PATCH, WIDTH, HEADS, LAYERS = 24, 32, 8, 32, 2, 2
VOCAB, CTX = 520, 16
CASES = {  # case -> (timm model, open_clip timm_pool, the rope reference grid the tiny trunk uses)
    "eva02_tiny": ("eva02_base_patch16_clip_224", "token", 6),  # 4 x 4 patches rescaled to a 6 x 6 grid
    "pe_core_tiny": ("vit_pe_core_base_patch16_224", "map", 4),  # PE's reference grid is its own grid
}


@contextlib.contextmanager
def shrunk_timm(**sizes: Any) -> Iterator[None]:
    """While open_clip builds a model, timm's ``create_model`` adds ``sizes`` (img_size, embed_dim, depth, ...)
    to its call: open_clip's own ``TimmModel`` then holds timm's registered tower, only smaller, built with
    the pooling and head open_clip asks for (no full-size tower is made first)."""
    real = timm.create_model

    def create(name: str, **kwargs: Any) -> torch.nn.Module:
        return real(name, **kwargs, **sizes)

    timm.create_model = create
    try:
        yield
    finally:
        timm.create_model = real


def main() -> None:
    for case, (name, pool, ref) in CASES.items():
        torch.manual_seed(0)
        model_cfg = {
            "embed_dim": EMBED,
            "vision_cfg": {"image_size": 224, "timm_model_name": name, "timm_model_pretrained": False,
                           "timm_pool": pool, "timm_proj": None},
            "text_cfg": {"context_length": CTX, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 2},
            "custom_text": True,
        }  # fmt: skip
        model = open_clip.CustomTextCLIP(EMBED, model_cfg["vision_cfg"], model_cfg["text_cfg"])
        model.visual.trunk = timm.create_model(
            name, pretrained=False, img_size=IMAGE, patch_size=PATCH, embed_dim=WIDTH, depth=LAYERS,
            num_heads=HEADS, ref_feat_shape=(ref, ref), num_classes=EMBED, global_pool=pool,
        )  # fmt: skip
        model.eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        images = torch.randn(3, 3, IMAGE, IMAGE)
        tokens = torch.zeros(3, CTX, dtype=torch.long)
        for i, n in enumerate([3, CTX, 9]):  # start token, random ids, end token (the largest id), padding
            tokens[i, 0], tokens[i, n - 1] = VOCAB - 2, VOCAB - 1
            tokens[i, 1 : n - 1] = torch.randint(1, VOCAB - 2, (n - 2,))
        with torch.no_grad():
            image = model.encode_image(images, normalize=True)
            text = model.encode_text(tokens, normalize=True)
        tiny = {"image_size": IMAGE, "patch_size": PATCH, "width": WIDTH, "layers": LAYERS,
                "head_width": WIDTH // HEADS, "rope_ref_grid": ref}  # fmt: skip
        (HERE / f"{case}.json").write_text(json.dumps({"model_cfg": model_cfg, "tiny": tiny}, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(HERE / f"{case}.safetensors"))
        expected = {"images": images, "tokens": tokens, "image_features": image, "text_features": text}
        save_file(expected, str(HERE / f"{case}.expected.safetensors"))
        print(case, f"open_clip {open_clip.__version__}, timm {timm.__version__}", len(model.state_dict()), "tensors")


if __name__ == "__main__":
    main()
