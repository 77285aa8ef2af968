"""A short `clipforge quickstart` (a few steps) writes every promised file and figure."""

import json

import pytest

from clipforge.cli.main import main


@pytest.mark.slow
def test_short_quickstart_writes_eval_report_and_checkpoint(tmp_path, capsys):
    from clipforge.train import quickstart as qs

    r = qs.quickstart(
        out=tmp_path, name="qs", steps=3, progress=False, overrides={"batch_size": 32, "log_every": 1}
    )
    run = tmp_path / "qs"
    assert r.run_dir == run and r.report_path == run / "report.md" and r.eval_path == run / "eval.json"
    for name in (
        "model.safetensors",
        "eval.json",
        "report.md",
        "metrics.jsonl",
        "run.json",
        "tokenizer.json",
        "loss.png",
        "accuracy.png",
        "similarity.png",
    ):
        assert (run / name).is_file(), name
    figures = json.loads((run / "eval.json").read_text())
    assert figures["steps"] == 3 and figures["batch_size"] == 32
    tasks = {"shape", "colour", "pattern", "count", "position", "colour_shape_heldout", "colour_shape_seen"}
    assert set(figures["zeroshot"]) == tasks
    for acc in figures["zeroshot"].values():
        assert 0.0 <= acc["top1"] <= 1.0 and 0.0 < acc["chance"] < 1.0
    for k in (1, 5, 10):
        for d in ("text_to_image", "image_to_text"):
            assert 0.0 <= figures["retrieval"][f"{d}_R@{k}"] <= 1.0
    assert set(figures["checks"]) >= {"colour top1 >= 90%", "shape top1 >= 90%"}
    report = (run / "report.md").read_text()
    assert "colour_shape_heldout" in report and "![Training loss](loss.png)" in report

    from PIL import Image

    for png in ("loss.png", "accuracy.png", "similarity.png"):
        with Image.open(run / png) as im:
            assert im.size[0] > 100 and im.size[1] > 100

    from clipforge.api import load

    loaded = load(r.checkpoint)  # the checkpoint carries its learnt tokenizer
    assert loaded.tokenizer.vocab_size == loaded.model.config.text.vocab_size


def test_quickstart_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "qs").mkdir()
    (tmp_path / "qs" / "eval.json").write_text("{}")
    assert main(["quickstart", "--out", str(tmp_path), "--name", "qs", "--steps", "1"]) == 1
    assert "already exists" in capsys.readouterr().err


def test_plan_steps_is_bounded():
    from clipforge.train.quickstart import MAX_STEPS, MIN_STEPS, plan_steps

    assert plan_steps(0.25, 5.0) == int(5 * 60 * 0.85 / 0.25)
    assert plan_steps(100.0, 5.0) == MIN_STEPS  # slow machine: take longer rather than stop half-trained
    assert plan_steps(0.001, 5.0) == MAX_STEPS
