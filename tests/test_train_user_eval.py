"""Periodic evaluation during training on user eval sets (CLIP_benchmark folder, labelled folder,
retrieval pairs), and the zero-shot regression check of a fine-tune against its starting model."""

from __future__ import annotations

import json

import pytest
from test_eval_benchmark import checkpoint, write_benchmark  # noqa: F401 (a fixture)
from train_helpers import write_pairs_csv

from clipforge.cli.main import main
from clipforge.train import TrainConfig
from clipforge.train.loop import fit
from clipforge.train.metrics_log import read_metrics


@pytest.mark.full_suite
def test_fine_tune_reports_user_eval_sets_and_regression(tmp_path, checkpoint, caplog):  # noqa: F811
    bench = write_benchmark(tmp_path)
    pairs = write_pairs_csv(tmp_path / "pairs", n=24)
    cfg = TrainConfig.from_flat(
        data=str(pairs),
        init=str(checkpoint),
        val_data=str(pairs),
        eval_tasks=f"{bench},{tmp_path / 'folder'}",
        eval_templates="simple",
        eval_every=2,
        regression_tolerance=0.0,
        steps=4,
        batch_size=8,
        lr=5e-3,
        warmup_steps=1,
        precision="fp32",
        workers=0,
        out=str(tmp_path / "runs"),
        name="ft",
        progress=False,
    )
    result = fit(cfg)
    rows = read_metrics(result.run_dir / "metrics.jsonl")
    start = next(r for r in rows if any(k.startswith("start/") for k in r))
    evals = [r for r in rows if "eval/zeroshot/colours/top1" in r]
    assert start["step"] == 0 and [r["step"] for r in evals] == [2, 4]
    for r in evals:
        for task in ("colours", "folder"):
            delta = r[f"eval/zeroshot/{task}/top1"] - start[f"start/zeroshot/{task}/top1"]
            assert r[f"eval/regression/{task}/top1_delta"] == pytest.approx(delta)
        assert "eval/retrieval/text_to_image_R@1" in r and "eval/regression/mean_top1_delta" in r
    # the starting model's figures are what `clipforge eval` says of the checkpoint
    for task, source, extra in (("colours", bench, []), ("folder", tmp_path / "folder", ["--templates", "simple"])):
        out = tmp_path / f"{task}.json"
        assert main(["eval", "zeroshot", str(source), "--model", str(checkpoint), "--out", str(out),
                     "--precision", "fp32", "--no-progress", *extra]) == 0  # fmt: skip
        assert json.loads(out.read_text())["top1"] == pytest.approx(start[f"start/zeroshot/{task}/top1"], abs=1e-6)


def test_eval_max_images_takes_evenly_spaced_images(tmp_path):
    import torch

    from clipforge.eval.features import encode_labelled

    class Model:
        config = type("C", (), {"embed_dim": 2})
        device = torch.device("cpu")

        def encode_image(self, x):
            return x.flatten(1)[:, :2] + 1

    items = [(torch.full((1, 2, 1), float(i)), i) for i in range(30)]
    _, targets, _ = encode_labelled(Model(), items, limit=6)
    assert targets == [0, 5, 10, 15, 20, 25]


def test_bad_eval_task_is_a_clear_error(tmp_path):
    cfg = TrainConfig.from_flat(
        data="shapes", eval_tasks=str(tmp_path / "nothing"), steps=1, batch_size=4, out=str(tmp_path)
    )
    with pytest.raises(FileNotFoundError, match="nothing"):
        fit(cfg)
