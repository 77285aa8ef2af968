"""Generate the EVA-02 / PE-Core golden assets for tests/test_families_eva.py (run once, with timm).

    PYTHONPATH=src:/path/to/timm python tests/assets/families/make_golden.py

Each case is a random-weight timm ``Eva`` image tower built by timm's own registered model function
(``eva02_base_patch16_clip_224``, ``vit_pe_core_base_patch16_224``) with only the sizes made tiny, so
every family option (RoPE layout and grid, SwiGLU, sub-LN, attention pool, norms) is timm's. As
open_clip's ``TimmModel`` does with ``timm_proj: null``, the trunk is created with
``num_classes=embed_dim`` and the family's ``global_pool``; its output is the image embedding.

    <case>.safetensors           the tower in open_clip's names (``visual.trunk.*``) plus a standard open_clip
                                 text tower (random, written by clipforge: it is not what is checked here)
    <case>.json                  the clipforge config of the same tiny architecture
    <case>.expected.safetensors  images and timm's image embeddings (float32)
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import save_file

from clipforge.config import ModelConfig, TextConfig, VisionConfig
from clipforge.convert import open_clip, open_clip_eva
from clipforge.convert.open_clip_eva import _custom_text_name
from clipforge.models import CLIP

HERE = Path(__file__).parent
EMBED, IMAGE, PATCH, WIDTH, HEADS = 24, 32, 8, 32, 2
CASES = {  # case -> (timm model, family, the rope reference grid to use)
    "eva02_tiny": ("eva02_base_patch16_clip_224", "eva02", 6),  # 4 x 4 patches rescaled to EVA's reference grid
    "pe_core_tiny": ("vit_pe_core_base_patch16_224", "pe_core", 4),
}


def main() -> None:
    for case, (name, family, ref) in CASES.items():
        torch.manual_seed(0)
        pool = "token" if family == "eva02" else "map"
        trunk = timm.create_model(
            name, pretrained=False, img_size=IMAGE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS,
            ref_feat_shape=(ref, ref), num_classes=EMBED, global_pool=pool,
        ).eval()  # fmt: skip
        with torch.no_grad():
            for p in trunk.parameters():
                p.add_(0.05 * torch.randn_like(p))
        vision = VisionConfig(
            image_size=IMAGE, patch_size=PATCH, width=WIDTH, layers=2, head_width=WIDTH // HEADS, rope_ref_grid=ref,
            **open_clip_eva.FAMILY_OPTIONS[family],
        )  # fmt: skip
        text = TextConfig(context_length=16, vocab_size=520, width=32, layers=2, head_width=16)
        cfg = ModelConfig(embed_dim=EMBED, vision=vision, text=text, name=case).validate()
        text_sd = {k: v for k, v in CLIP(cfg).state_dict().items() if not k.startswith("visual.")}
        sd = {f"visual.trunk.{k}": v for k, v in trunk.state_dict().items()}
        sd |= {_custom_text_name(k): v for k, v in open_clip.state_dict_to(text_sd).items()}
        images = torch.randn(3, 3, IMAGE, IMAGE)
        with torch.no_grad():
            embeddings = trunk(images)  # (3, EMBED)
        save_file({k: v.contiguous() for k, v in sd.items()}, str(HERE / f"{case}.safetensors"))
        save_file({"images": images, "image_features": embeddings}, str(HERE / f"{case}.expected.safetensors"))
        (HERE / f"{case}.json").write_text(cfg.to_json() + "\n")
        print(case, timm.__version__, len(sd), "tensors")


if __name__ == "__main__":
    main()
