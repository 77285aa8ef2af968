"""--report-to: TensorBoard, W&B (offline) and MLflow (local file store) receive the JSONL's scalars."""

from __future__ import annotations

import json
import sys

import pytest
from train_helpers import write_pairs_csv, write_tiny_model

from clipforge.optional import MissingExtra
from clipforge.train import TrainConfig
from clipforge.train.loop import fit
from clipforge.train.metrics_log import read_metrics
from clipforge.train.tracking import parse_report_to


def wandb_history(path) -> list[dict]:
    """The history rows of a W&B offline ``.wandb`` file (a LevelDB-style log of protobuf records:
    a 7-byte file header, 32 KiB blocks, records split into chunks with a 7-byte header each)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    raw, pos, block, chunk, rows = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(raw):
        left = block - pos % block
        _, n, kind = struct.unpack("<IHB", raw[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if n == 0 and kind == 0:  # block padding
            pos += left
            continue
        chunk += raw[pos + 7 : pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows


def _cfg(tmp_path, **kw) -> TrainConfig:
    return TrainConfig.from_flat(
        data=str(write_pairs_csv(tmp_path / "data", n=16)),
        model=str(write_tiny_model(tmp_path / "tiny.json", vocab_size=49408, context_length=16)),
        steps=3,
        batch_size=8,
        warmup_steps=1,
        log_every=1,
        save_every=2,
        precision="fp32",
        workers=0,
        out=str(tmp_path / "runs"),
        name="run",
        progress=False,
        **kw,
    )


def test_report_to_names_are_checked():
    assert parse_report_to("wandb, mlflow,wandb") == ["wandb", "mlflow"]
    with pytest.raises(ValueError, match="unknown tracker"):
        TrainConfig.from_flat(data="shapes", report_to="comet").validate()


@pytest.mark.full_suite
def test_missing_extra_is_an_install_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(MissingExtra, match=r"pip install 'clipforge\[wandb\]'"):
        fit(_cfg(tmp_path, report_to="wandb"))
    from clipforge.cli.main import main

    cfg = _cfg(tmp_path)
    args = [
        "train",
        "--data",
        cfg.data.source,
        "--model",
        cfg.model.name,
        "--out",
        cfg.checkpoint.out,
        "--steps",
        "1",
        "--batch-size",
        "8",
        "--name",
        "cli",
    ]
    assert main([*args, "--report-to", "wandb", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--report-to wandb needs wandb" in err[0] and "clipforge[wandb]" in err[0]


@pytest.mark.full_suite
def test_tensorboard_wandb_offline_and_mlflow_file_store_get_the_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'clipforge[wandb]')")
    mlflow = pytest.importorskip("mlflow", reason="mlflow not installed (pip install 'clipforge[mlflow]')")
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install 'clipforge[tensorboard]')")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = _cfg(tmp_path, report_to="tensorboard,wandb,mlflow", project="cf-test")
    run_dir = fit(cfg.replace(steps=2)).run_dir
    fit(cfg, resume=True)  # the same W&B / MLflow runs continue
    losses = {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}
    assert sorted(losses) == [1, 2, 3]
    ids = json.loads((run_dir / "tracking.json").read_text())

    # MLflow: every logged step of the loss, the config as params, one run
    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "runs" / "mlruns").resolve().as_uri())
    history = {m.step: m.value for m in client.get_metric_history(ids["mlflow"], "loss")}
    assert history == pytest.approx(losses)
    run = client.get_run(ids["mlflow"])
    assert json.loads(run.data.params["lr"]) == cfg.optim.lr and run.info.run_name == "run"
    experiment = client.get_experiment_by_name("cf-test")
    assert len(client.search_runs([experiment.experiment_id])) == 1

    # W&B offline: the run (one id, continued on resume) holds the loss of every step
    runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(ids["wandb"]) for r in runs)
    history = {}
    for r in runs:
        for item in wandb_history(next(r.glob("run-*.wandb"))):
            if "loss" in item:
                history[item["_step"]] = item["loss"]
    assert history == pytest.approx(losses)

    # TensorBoard: the same loss values at the same steps
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = {}
    for events in (run_dir / "tensorboard").iterdir():
        acc = EventAccumulator(str(events))
        acc.Reload()
        tb.update({e.step: e.value for e in acc.Scalars("loss")})
    assert tb == pytest.approx(losses)
