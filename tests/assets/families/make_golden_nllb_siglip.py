"""Generate the golden assets of NLLB-CLIP's SigLIP variants for tests/test_families_nllb_siglip.py (run
once, in the reference env, no network):

    /work/venv-ref/bin/python tests/assets/families/make_golden_nllb_siglip.py
    # open_clip 3.3.0, timm 1.0.31, transformers 5.25

Each case is open_clip's own ``CustomTextCLIP`` for its ``nllb-clip-base-siglip`` /
``nllb-clip-large-siglip`` model config with only the sizes shrunk: the text tower an ``HFTextEncoder``
over a tiny ``M2M100Config`` in a local folder (``cls_pooler``, ``linear`` projection, as
make_golden_hf_text.py's ``nllb_tiny``), the image tower open_clip's ``TimmModel`` holding the tower
timm's registered function builds (``vit_base_patch16_siglip_384``, ``vit_so400m_patch14_siglip_384``)
with smaller sizes (make_golden.shrunk_timm), so its activation (for these towers timm's default, exact
GELU), LayerNorm eps, attention pool, missing projection and the logit bias are timm's and open_clip's.
The large case keeps a patch size that does not divide the image (30 px, 7-pixel patches: the last 2
pixels are dropped, as 384 % 14 are at full size) and So400m's MLP ratio. Every weight is made
non-trivial, and the image MLPs' first layers are scaled up so that their GELUs see inputs of order 1-3,
where exact and tanh GELU differ (up to 3e-4): the golden then tells the two apart.

    <case>.json                  {"model_cfg": open_clip's model config (the full-size timm name;
                                  hf_model_name: the text folder's name), "hf_config": the M2M100Config as
                                  config.json holds it, "tiny": the image tower's sizes as clipforge
                                  VisionConfig fields}
    <case>.safetensors           open_clip's state dict
    <case>.expected.safetensors  images, tokens and open_clip's normalised image and text features (fp32)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import timm
import torch
import transformers
from make_golden import shrunk_timm
from make_golden_hf_text import CTX, nllb_config, tokens_for
from safetensors.torch import save_file

HERE = Path(__file__).parent
VOCAB, TEXT_WIDTH, WIDTH, HEADS, LAYERS = 520, 24, 32, 2, 2
CASES = {  # case -> (open_clip model config, image size, patch size)
    "nllb_siglip_base_tiny": ("nllb-clip-base-siglip", 32, 8),
    "nllb_siglip_large_tiny": ("nllb-clip-large-siglip", 30, 7),
}
GELU_INPUT_SCALE = 8.0


def main() -> None:
    for case, (name, image_size, patch) in CASES.items():
        torch.manual_seed(0)
        full = open_clip.get_model_config(name)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / f"{case}_hf"
            nllb_config(VOCAB, TEXT_WIDTH).save_pretrained(folder)
            hf_config = json.loads((folder / "config.json").read_text())
            text_cfg = {**full["text_cfg"], "hf_model_name": str(folder), "hf_tokenizer_name": str(folder),
                        "hf_model_pretrained": False, "context_length": CTX}  # fmt: skip
            with shrunk_timm(img_size=image_size, patch_size=patch, embed_dim=WIDTH, depth=LAYERS, num_heads=HEADS):
                model = open_clip.CustomTextCLIP(WIDTH, full["vision_cfg"], text_cfg,
                                                 init_logit_bias=full["init_logit_bias"])  # fmt: skip
        model.eval()
        trunk = model.visual.trunk
        act = trunk.blocks[0].mlp.act
        assert isinstance(act, torch.nn.GELU) and act.approximate == "none", act  # timm's default for these towers
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
            for mlp in [*(b.mlp for b in trunk.blocks), trunk.attn_pool.mlp]:
                mlp.fc1.weight.mul_(GELU_INPUT_SCALE)
        images = torch.randn(3, 3, image_size, image_size)
        tokens = tokens_for(case, VOCAB)
        with torch.no_grad():
            image = model.encode_image(images, normalize=True)
            text = model.encode_text(tokens, normalize=True)
        model_cfg = {**full, "embed_dim": WIDTH, "text_cfg": {**text_cfg, "hf_model_name": f"{case}_hf",
                     "hf_tokenizer_name": f"{case}_hf"}}  # fmt: skip
        hidden = trunk.blocks[0].mlp.fc1.out_features
        tiny = {"image_size": image_size, "patch_size": patch, "width": WIDTH, "layers": LAYERS,
                "head_width": WIDTH // HEADS, "mlp_ratio": hidden / WIDTH}  # fmt: skip
        record = {"model_cfg": model_cfg, "hf_config": hf_config, "tiny": tiny}
        (HERE / f"{case}.json").write_text(json.dumps(record, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(HERE / f"{case}.safetensors"))
        expected = {"images": images, "tokens": tokens, "image_features": image, "text_features": text}
        save_file(expected, str(HERE / f"{case}.expected.safetensors"))
        print(case, f"open_clip {open_clip.__version__}, timm {timm.__version__}, transformers "
              f"{transformers.__version__}", len(model.state_dict()), "tensors")  # fmt: skip


if __name__ == "__main__":
    main()
