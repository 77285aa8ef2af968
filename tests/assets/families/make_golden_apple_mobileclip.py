"""Generate the Apple MobileCLIP-S0 golden assets for tests/test_families_mobileclip_s0.py (run once, in the
reference env, with Apple's ``mobileclip`` package on the path: it is not on PyPI).

    git clone https://github.com/apple/ml-mobileclip /tmp/ref-mobileclip    # commit 4144bb1f (Sep 2025)
    APPLE_MOBILECLIP=/tmp/ref-mobileclip /work/venv-ref/bin/python tests/assets/families/make_golden_apple_mobileclip.py

``apple_mobileclip_s0_tiny`` is Apple's own ``mobileclip.clip.CLIP`` for its ``mobileclip_s0.json`` config
(the MCT text tower: a RepMixer conv block, Transformer blocks, another RepMixer conv block,
bidirectional, read at the end token) with the sizes shrunk: the text tower through the config (width
32, 8 heads as Apple's, 2 Transformer layers, a 520-token vocabulary, 16-token context), the image tower
by building Apple's ``mci.FastViT`` with MCi0's design (``mobileclip/models/mci.py: mci0``) and smaller
stage depths and widths, given Apple's head (``GlobalPool2D``: average pooling, unbiased projection)
as ``MCi`` does. Every parameter is perturbed and every BatchNorm gets random running statistics, so
that folding them is exercised. Also recorded: the features after Apple's ``reparameterize_model`` and
that folded model's state dict (Apple's inference layout).

    <case>.json                  {"apple_cfg": Apple's model config (shrunk text_cfg), "tiny": the image
                                  tower's sizes as clipforge VisionConfig fields, "apple_commit"}
    <case>.safetensors           Apple's state dict (``image_encoder.model.*``, ``text_encoder.*``, ``logit_scale``)
    <case>.folded.safetensors    the state dict after Apple's ``reparameterize_model``
    <case>.expected.safetensors  images, tokens, Apple's normalised image and text features, and both after
                                 ``reparameterize_model`` (fp32)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import torch
from make_golden_mobileclip import CTX, EMBED, VOCAB, example_tokens, perturb
from safetensors.torch import save_file

APPLE = Path(os.environ.get("APPLE_MOBILECLIP", "/tmp/ref-mobileclip"))
sys.path.insert(0, str(APPLE))

from mobileclip.clip import CLIP  # noqa: E402  (Apple's package, from APPLE_MOBILECLIP)
from mobileclip.image_encoder import MCi  # noqa: E402
from mobileclip.models import mci  # noqa: E402
from mobileclip.modules.common.mobileone import reparameterize_model  # noqa: E402

HERE = Path(__file__).parent
CASE = "apple_mobileclip_s0_tiny"
IMAGE_SIZE, DEPTHS, WIDTH = 64, (1, 2, 1, 1), 8  # stage widths 8, 16, 32, 64: SE widths as Apple's rounding gives


def apple_commit() -> str:
    try:
        return subprocess.check_output(
            ["git", "-C", str(APPLE), "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "4144bb1f081a6bcb9bc9e6552dee3b29a9ef9855"  # the snapshot these assets were made from


def main() -> None:
    torch.manual_seed(0)
    cfg = json.loads((APPLE / "mobileclip" / "configs" / "mobileclip_s0.json").read_text())
    cfg = {**cfg, "embed_dim": EMBED, "text_cfg": {**cfg["text_cfg"], "context_length": CTX, "vocab_size": VOCAB,
                                                     "dim": 32, "n_transformer_layers": 2}}  # fmt: skip
    assert cfg["image_cfg"]["model_name"] == "mci0" and cfg["text_cfg"]["model_name"] == "mct"
    model = CLIP(cfg)
    trunk = mci.FastViT(
        list(DEPTHS), token_mixers=("repmixer", "repmixer", "repmixer", "attention"),
        embed_dims=[WIDTH << i for i in range(4)],
        pos_embs=[None, None, None, partial(mci.RepCPE, spatial_shape=(7, 7))],
        mlp_ratios=[3, 3, 3, 3], downsamples=[True] * 4, se_downsamples=[False, False, True, True],
    )  # fmt: skip  (mci0's arguments, shrunk)
    trunk.head = MCi._update_image_classifier(image_classifier=trunk.head, projection_dim=EMBED)
    model.image_encoder.model = trunk
    model.eval()
    perturb(model)
    images = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    tokens = example_tokens()
    folded = reparameterize_model(model)  # a folded copy
    with torch.no_grad():
        out = {
            "image_features": model.encode_image(images, normalize=True),
            "text_features": model.encode_text(tokens, normalize=True),
            "image_features_reparameterized": folded.encode_image(images, normalize=True),
            "text_features_reparameterized": folded.encode_text(tokens, normalize=True),
        }
    tiny = {"image_size": IMAGE_SIZE, "layers": list(DEPTHS), "width": WIDTH}
    info = {"apple_cfg": cfg, "tiny": tiny, "apple_commit": apple_commit()}
    (HERE / f"{CASE}.json").write_text(json.dumps(info, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(HERE / f"{CASE}.safetensors"))
    save_file({k: v.contiguous() for k, v in folded.state_dict().items()}, str(HERE / f"{CASE}.folded.safetensors"))
    save_file({"images": images, "tokens": tokens, **out}, str(HERE / f"{CASE}.expected.safetensors"))
    print(CASE, len(model.state_dict()), "tensors;", len(folded.state_dict()), "folded")


if __name__ == "__main__":
    main()
