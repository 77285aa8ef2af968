"""Run directory: atomic step checkpoints, keep-last-K, latest complete step, strict config JSON."""

import json

import pytest
import torch

from clipforge.config import ConfigError
from clipforge.train.config import TrainConfig
from clipforge.train.metrics_log import MetricsLogger, read_metrics
from clipforge.train.run_dir import RunDir, rng_state, set_rng_state


def test_keep_last_and_latest_complete_step(tmp_path, tiny_model):
    run = RunDir(tmp_path, keep_last=2)
    model = tiny_model(train=True)
    for step in (10, 20, 30):
        run.save(step, model, tokenizer=None, state={"step": step}, provenance={})
    assert run.saved_steps() == [20, 30]
    assert run.load_state(30)["step"] == 30
    # a step whose state file never got written (killed in between) does not count
    run.weights_file(40).write_bytes(run.weights_file(30).read_bytes())
    assert run.latest_step() == 30
    assert not list(run.checkpoints.glob(".*.tmp"))  # no temporary files left behind


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(0)
    state = rng_state()
    torch.save(state, tmp_path / "s.pt")
    a = (torch.rand(3), np.random.rand(), random.random())
    set_rng_state(torch.load(tmp_path / "s.pt", weights_only=True))
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_metrics_truncate_after(tmp_path):
    m = MetricsLogger(tmp_path / "metrics.jsonl")
    for s in range(1, 6):
        m.log(s, {"loss": float(s)})
    m.truncate_after(3)
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_train_config_is_strict(tmp_path):
    cfg = TrainConfig.from_flat(data="pairs.csv", steps=10, batch_size=8)
    path = tmp_path / "run.json"
    path.write_text(cfg.to_json())
    assert TrainConfig.from_json(path) == cfg.validate()
    path.write_text(json.dumps({**cfg.to_dict(), "batchsize": 3}))
    with pytest.raises(ConfigError, match="batchsize"):
        TrainConfig.from_json(path)
    with pytest.raises(ConfigError, match="divisible"):
        cfg.replace(batch_size=10, accum_steps=3)
    with pytest.raises(ConfigError, match="data is required"):
        TrainConfig().validate()
    with pytest.raises(ConfigError, match="loss"):
        cfg.replace(loss="triplet")
