"""`clipforge train` end to end on tiny data: sigmoid loss, eval, fine-tuning with LiT, --config."""

import json

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import train_args, write_pairs_csv, write_tiny_model

from clipforge.checkpoint import read_checkpoint_info
from clipforge.cli.main import main


def _base(data, model, out, name, *extra):
    return train_args(data, model, out, name, *extra, steps=4, batch_size=8, warmup_steps=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return write_pairs_csv(root / "data", n=32, bad=True), write_tiny_model(root / "tiny.json"), root / "runs"


def test_siglip_run_with_retrieval_eval(tiny, capsys):
    data, model, out = tiny
    assert (
        main(
            _base(
                data,
                model,
                out,
                "sig",
                "--loss",
                "siglip",
                "--val-data",
                str(data),
                "--eval-every",
                "2",
                "--precision",
                "bf16",
            )
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "final weights" in printed and "skipped 3 unusable" in printed
    run = out / "sig"
    info = read_checkpoint_info(run / "model.safetensors")
    assert info.config.init_logit_bias == -10.0  # SigLIP's initialisation
    assert info.tokenizer is not None and info.config.text.vocab_size == info.tokenizer["vocab_size"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4] and "logit_bias" in losses[0]
    assert all(0 <= r["data_wait"] <= 1 and r["samples_per_s"] > 0 for r in losses)
    evals = [r for r in rows if "eval/retrieval/text_to_image_R@1" in r]
    assert [r["step"] for r in evals] == [2, 4]
    assert (run / "checkpoints" / "best.safetensors").is_file()
    final = json.loads((run / "eval.json").read_text())
    assert final["step"] == 4 and "retrieval/image_to_text_R@10" in final


def test_fine_tune_with_locked_image_tower(tiny):
    data, model, out = tiny
    assert main(_base(data, model, out, "base")) == 0
    base = out / "base" / "model.safetensors"
    assert main(_base(data, model, out, "lit", "--init", str(base), "--lock-image", "--lr", "1e-2")) == 0
    before, after = load_file(base), load_file(out / "lit" / "model.safetensors")
    for key in before:
        if key.startswith("visual."):
            assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["text.proj"], after["text.proj"])
    # the fine-tuned checkpoint keeps the base model's tokenizer
    assert (
        read_checkpoint_info(base).tokenizer
        == read_checkpoint_info(out / "lit" / "model.safetensors").tokenizer
    )


def test_config_file_and_flag_precedence(tiny, tmp_path):
    data, model, out = tiny
    cfg = {
        "data": str(data),
        "model": str(model),
        "tokenizer": "train",
        "vocab_size": 600,
        "steps": 2,
        "batch_size": 8,
        "warmup_steps": 1,
        "out": str(out),
        "name": "fromfile",
        "workers": 0,
        "progress": False,
        "accum_steps": 2,
    }
    (tmp_path / "run.json").write_text(json.dumps(cfg))
    assert main(["train", "--config", str(tmp_path / "run.json"), "--steps", "3"]) == 0
    saved = json.loads((out / "fromfile" / "run.json").read_text())
    assert saved["schedule"]["steps"] == 3 and saved["schedule"]["accum_steps"] == 2  # the flag wins over the file
    (tmp_path / "bad.json").write_text(json.dumps({**cfg, "learning_rate": 1}))
    assert main(["train", "--config", str(tmp_path / "bad.json")]) == 1
