"""`clipforge train --init` on a SigLIP checkpoint fine-tunes with the sigmoid loss by default and
keeps the checkpoint's SentencePiece tokenizer."""

import json
from pathlib import Path

import pytest
from train_helpers import write_pairs_csv

from clipforge.checkpoint import read_checkpoint_info, save_checkpoint
from clipforge.cli.main import main
from clipforge.tokenizer import SentencePieceTokenizer

TOKENIZER = Path(__file__).parent / "assets" / "sentencepiece" / "siglip2"


@pytest.fixture(scope="module")
def siglip_checkpoint(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("siglip-train")
    tok = SentencePieceTokenizer.from_hf_dir(TOKENIZER, context_length=16)
    model = tiny_model("siglip-tiny", vocab_size=tok.vocab_size, train=True)
    path = save_checkpoint(root / "base.safetensors", model, tokenizer=tok)
    return root, write_pairs_csv(root / "data", n=24), path


@pytest.mark.parametrize("loss,sigmoid", [(None, True), ("chunked", True), ("clip", False)])
def test_init_from_siglip_fine_tunes_with_the_sigmoid_loss(siglip_checkpoint, loss, sigmoid):
    root, data, base = siglip_checkpoint
    name = f"ft-{loss}"
    args = ["train", "--data", str(data), "--init", str(base), "--steps", "3", "--batch-size", "8",
            "--warmup-steps", "1", "--out", str(root / "runs"), "--name", name, "--workers", "0",
            "--no-progress", "--log-every", "1", "--precision", "fp32"]
    extra = {None: [], "chunked": ["--loss-chunk-size", "3"], "clip": ["--loss", "clip"]}[loss]
    assert main(args + extra) == 0
    run = root / "runs" / name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert len(losses) == 3
    biases = {r["logit_bias"] for r in losses}
    assert (len(biases) > 1) == sigmoid  # the bias only learns under the sigmoid loss
    info = read_checkpoint_info(run / "model.safetensors")
    assert info.tokenizer["kind"] == "sentencepiece" and info.config.objective == "sigmoid"
