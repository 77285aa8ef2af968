"""Generate the MobileCLIP golden assets for tests/test_families_mobileclip.py (run once, in the reference env).

    /work/venv-ref/bin/python tests/assets/families/make_golden_mobileclip.py     # open_clip 3.3.0, timm 1.0.31

Each case is open_clip's own ``CustomTextCLIP`` for a MobileCLIP model config (a bidirectional text
tower, ``no_causal_mask: true``, shrunk) whose image tower is open_clip's ``TimmModel`` with its timm
trunk replaced by a tiny one built by timm's registered model function (``fastvit_mci0`` for
MobileCLIP-S0..S2's design, ``fastvit_mci3`` for MobileCLIP2-S3/S4's: LayerNorm in attention, two
attention stages, no stem scale branch, no squeeze-excite), only the stage depths and widths shrunk.
As open_clip does for ``timm_pool: avg, timm_proj: null``, the trunk has ``num_classes=embed_dim``: its
head is the image projection. Every parameter is perturbed and every BatchNorm gets random running
statistics, so that folding them is exercised. Also recorded: the image features after timm's own
``reparameterize_model`` (the folded, inference form).

``mobileclip_b_tiny`` is MobileCLIP-B's design (timm ``vit_base_mci_224``: a ``VisionTransformer``
whose patch embedding is a three-conv ``ConvStem``, ``no_embed_class``, a causal text tower), built
the way timm's registered function builds it (its stem widths are fixed there) with the sizes shrunk.
``mobileclip2_l14_tiny`` is MobileCLIP2-L-14's: timm's ``vit_large_patch14_clip_224`` (OpenAI CLIP's
ViT layout: LayerNorm before the blocks, eps 1e-5, a class token) built by its registered function
with the sizes shrunk (make_golden.shrunk_timm), its head the biased image projection, and open_clip's
text tower run bidirectionally, as the config's ``no_causal_mask: true`` says.

Cases can be named on the command line to make only those (default: all).

    <case>.json                  {"model_cfg": open_clip's model config (the full-size timm name),
                                  "tiny": the trunk's sizes as clipforge VisionConfig fields,
                                  S cases: "timm_folded_keys", the state dict names after timm's
                                  reparameterize_model}
    <case>.safetensors           open_clip's state dict (``visual.trunk.*``, ``text.*``, ``logit_scale``)
    <case>.expected.safetensors  images, tokens, open_clip's normalised image and text features, and
                                 the image features after timm's reparameterize_model (fp32)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import open_clip
import timm
import torch
from make_golden import shrunk_timm
from safetensors.torch import save_file
from timm.models.vision_transformer_hybrid import ConvStem, _create_vision_transformer_hybrid
from timm.utils.model import reparameterize_model

HERE = Path(__file__).parent
EMBED, VOCAB, CTX = 24, 520, 16
CASES = {  # case -> (timm model, image size, stage depths, stem width, mlp ratio, full-size model config)
    "mobileclip_s_tiny": ("fastvit_mci0", 64, (1, 2, 1, 1), 4, 3.0, "MobileCLIP2-S0"),
    "mobileclip2_s3_tiny": ("fastvit_mci3", 64, (1, 1, 1, 1, 1), 4, 4.0, "MobileCLIP2-S3"),
}


VIT_B = ("mobileclip_b_tiny", 48, 2, 32, 2)  # case, image size, layers, width, heads
VIT_L = ("mobileclip2_l14_tiny", 28, 7, 2, 32, 2)  # case, image size, patch size, layers, width, heads


def perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for n, b in model.named_buffers():
            if n.endswith("running_mean"):
                b.normal_(0.0, 0.3)
            elif n.endswith("running_var"):
                b.uniform_(0.5, 2.0)


def example_tokens() -> torch.Tensor:
    tokens = torch.zeros(3, CTX, dtype=torch.long)
    for i, n in enumerate([3, CTX, 9]):  # start token, random ids, end token (the largest id), padding
        tokens[i, 0], tokens[i, n - 1] = VOCAB - 2, VOCAB - 1
        tokens[i, 1 : n - 1] = torch.randint(1, VOCAB - 2, (n - 2,))
    return tokens


def save(case: str, model, model_cfg: dict, tiny: dict, images: torch.Tensor, *, folded_keys: list[str] | None = None,
         **extra: torch.Tensor) -> None:
    tokens = example_tokens()
    with torch.no_grad():
        image = model.encode_image(images, normalize=True)
        text = model.encode_text(tokens, normalize=True)
    info = {"model_cfg": model_cfg, "tiny": tiny, **({"timm_folded_keys": folded_keys} if folded_keys else {})}
    (HERE / f"{case}.json").write_text(json.dumps(info, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(HERE / f"{case}.safetensors"))
    expected = {"images": images, "tokens": tokens, "image_features": image, "text_features": text, **extra}
    save_file(expected, str(HERE / f"{case}.expected.safetensors"))
    print(case, f"open_clip {open_clip.__version__}, timm {timm.__version__}", len(model.state_dict()), "tensors")


def make_vit_b() -> None:
    case, image_size, layers, width, heads = VIT_B
    torch.manual_seed(0)
    text_cfg = {"context_length": CTX, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 2}
    model_cfg = {**open_clip.get_model_config("MobileCLIP-B"), "embed_dim": EMBED, "text_cfg": text_cfg}
    model = open_clip.CustomTextCLIP(EMBED, model_cfg["vision_cfg"], model_cfg["text_cfg"])
    stem = ConvStem(channels=(width // 4, width // 4, width), stride=(4, 2, 2), kernel_size=(4, 2, 2), padding=0,
                    act_layer=torch.nn.GELU)  # fmt: skip
    model.visual.trunk = _create_vision_transformer_hybrid(
        "vit_base_mci_224", backbone=stem, embed_args=dict(proj=False), img_size=image_size, embed_dim=width,
        depth=layers, num_heads=heads, no_embed_class=True, num_classes=EMBED, global_pool="token",
    )  # fmt: skip
    model.eval()
    perturb(model)
    tiny = {"image_size": image_size, "layers": layers, "width": width, "head_width": width // heads}
    save(case, model, model_cfg, tiny, torch.randn(2, 3, image_size, image_size))


def make_vit_l() -> None:
    case, image_size, patch, layers, width, heads = VIT_L
    torch.manual_seed(0)
    text_cfg = {"context_length": CTX, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 2,
                "no_causal_mask": True}  # fmt: skip
    model_cfg = {**open_clip.get_model_config("MobileCLIP2-L-14"), "embed_dim": EMBED, "text_cfg": text_cfg}
    assert model_cfg["vision_cfg"]["timm_model_name"] == "vit_large_patch14_clip_224"
    with shrunk_timm(img_size=image_size, patch_size=patch, embed_dim=width, depth=layers, num_heads=heads):
        model = open_clip.CustomTextCLIP(EMBED, model_cfg["vision_cfg"], model_cfg["text_cfg"])
    model.eval()
    perturb(model)
    tiny = {"image_size": image_size, "patch_size": patch, "layers": layers, "width": width,
            "head_width": width // heads}  # fmt: skip
    save(case, model, model_cfg, tiny, torch.randn(2, 3, image_size, image_size))


def main(only: list[str]) -> None:
    if not only or VIT_B[0] in only:
        make_vit_b()
    if not only or VIT_L[0] in only:
        make_vit_l()
    for case, (name, image_size, depths, width, mlp_ratio, full) in CASES.items():
        if only and case not in only:
            continue
        torch.manual_seed(0)
        model_cfg = open_clip.get_model_config(full)
        model_cfg = {
            **model_cfg,
            "embed_dim": EMBED,
            "text_cfg": {"context_length": CTX, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 2,
                         "no_causal_mask": True},
        }  # fmt: skip
        assert model_cfg["vision_cfg"]["timm_model_name"] == name
        model = open_clip.CustomTextCLIP(EMBED, model_cfg["vision_cfg"], model_cfg["text_cfg"])
        model.visual.trunk = timm.create_model(
            name, pretrained=False, layers=depths, embed_dims=tuple(width << i for i in range(len(depths))),
            mlp_ratios=(mlp_ratio,) * len(depths), num_classes=EMBED, global_pool="avg",
        )  # fmt: skip
        model.eval()
        perturb(model)
        images = torch.randn(2, 3, image_size, image_size)
        folded_model = reparameterize_model(model)  # a folded copy
        with torch.no_grad():
            folded = folded_model.encode_image(images, normalize=True)
        tiny = {"image_size": image_size, "layers": list(depths), "width": width, "mlp_ratio": mlp_ratio}
        keys = sorted(folded_model.state_dict())
        save(case, model, model_cfg, tiny, images, folded_keys=keys, image_features_reparameterized=folded)

if __name__ == "__main__":
    main(sys.argv[1:])
