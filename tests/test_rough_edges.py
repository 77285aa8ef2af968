"""Rough edges users hit (issue 13, point 10): a merged index remembers its model, mismatch errors
name both models, faiss's loader chatter is quiet, --no-progress means no bar, and the models take
inputs from any device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from search_fixtures import make_folder, save_tiny_checkpoint
from train_helpers import write_pairs_csv, write_tiny_model

from clipforge.cli.main import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_search_on_a_merged_index_needs_no_model_flag(tmp_path, capsys):
    root, out_dir, db = tmp_path / "photos", tmp_path / "emb", tmp_path / "m.cfidx"
    make_folder(root, 4)
    ckpt = save_tiny_checkpoint(tmp_path / "tiny.safetensors")
    assert main(["embed", str(root), "--model", str(ckpt), "--out", str(out_dir), "--workers", "0",
                 "--device", "cpu", "--no-progress"]) == 0  # fmt: skip
    assert main(["index", "--from-embeddings", str(out_dir), "--db", str(db), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", "a red square", "--db", str(db), "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_model_mismatch_names_both_models(tmp_path, capsys):
    root, db = tmp_path / "photos", tmp_path / "p.cfidx"
    make_folder(root, 3)
    a = save_tiny_checkpoint(tmp_path / "run-a" / "model.safetensors", seed=0)  # every run's weights
    b = save_tiny_checkpoint(tmp_path / "run-b" / "model.safetensors", seed=1)  # have this file name
    base = ["--db", str(db), "--workers", "0", "--no-progress"]
    assert main(["index", str(root), "--model", str(a), *base]) == 0
    capsys.readouterr()
    assert main(["index", str(root), "--model", str(b), *base]) == 1
    err = capsys.readouterr().err
    assert str(a.resolve()) in err and str(b.resolve()) in err and err.count("[id ") == 2
    assert main(["search", "red", "--db", str(db), "--model", str(b)]) == 1
    err = capsys.readouterr().err
    assert str(a.resolve()) in err and str(b.resolve()) in err and "Traceback" not in err


@pytest.mark.full_suite
def test_faiss_loader_chatter_is_quiet(tmp_path):
    code = (
        "import logging; logging.basicConfig(level=logging.INFO)\n"
        "from clipforge.index.ann import _faiss\n_faiss()\nprint('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.stdout.strip() == "ok", done.stderr
    assert "AVX2" not in done.stderr and "faiss.loader" not in done.stderr


def test_no_progress_means_no_bpe_bar(tmp_path, capsys):
    data = write_pairs_csv(tmp_path / "data", n=16)
    model = write_tiny_model(tmp_path / "tiny.json")
    argv = ["train", "--data", str(data), "--model", str(model), "--tokenizer", "train", "--vocab-size", "560",
            "--steps", "1", "--batch-size", "8", "--warmup-steps", "1", "--out", str(tmp_path / "runs"),
            "--name", "r", "--workers", "0", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "BPE merges" not in captured.err + captured.out and "it/s" not in captured.err


def test_encoders_move_inputs_to_the_model_device_and_dtype(tiny_model):
    model = tiny_model()
    size = model.config.vision.image_size
    images = torch.rand(2, 3, size, size, dtype=torch.float64)  # not the model's dtype
    with torch.no_grad():
        assert model.encode_image(images).dtype == torch.float32
    meta = tiny_model().to("meta")  # stands in for a GPU: inputs stay on the CPU
    out = meta.encode_image(torch.rand(2, 3, size, size))
    assert out.device.type == "meta" and out.shape == (2, model.config.embed_dim)


def test_readme_example_runs_under_no_grad():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    example = text.split("```python", 1)[1].split("```", 1)[0]
    assert "with torch.no_grad():" in example and "import torch" in example
