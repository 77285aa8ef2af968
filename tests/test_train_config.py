"""TrainConfig in sections: flat and nested forms agree, each section checks itself, and a run
folder written before the sections existed (a flat run.json) still resumes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from train_helpers import short_run, write_pairs_csv, write_tiny_model

from clipforge.checkpoint import load_weights
from clipforge.config import ConfigError
from clipforge.train.config import (
    CheckpointSection,
    FinetuneSection,
    OptimSection,
    ScheduleSection,
    TrainConfig,
    flat_field_names,
    flatten,
)
from clipforge.train.loop import fit

# run.json exactly as clipforge wrote it before TrainConfig had sections (TrainConfig.to_json of the
# flat dataclass: every field, sorted keys, indent 2), for short_run(data=..., model=..., name="old").
OLD_FLAT_RUN_JSON = """{
  "accum_steps": 1,
  "augment": "none",
  "batch_size": 8,
  "betas": [
    0.9,
    0.98
  ],
  "cache": null,
  "caption_key": "title",
  "data": "@DATA@",
  "device": "auto",
  "ema_decay": 0.0,
  "eps": 1e-06,
  "eval_every": 0,
  "eval_max_images": null,
  "eval_tasks": null,
  "eval_templates": "default",
  "grad_checkpointing": false,
  "grad_clip": 1.0,
  "image_key": "filepath",
  "init": null,
  "keep_last": 5,
  "label_smoothing": 0.0,
  "lock_image": false,
  "lock_image_unlocked_blocks": 0,
  "log_every": 1,
  "lora_alpha": null,
  "lora_rank": 0,
  "lora_towers": "image,text",
  "loss": "auto",
  "loss_chunk_size": null,
  "lr": 0.003,
  "min_lr": 0.0,
  "model": "@MODEL@",
  "name": "old",
  "out": "@OUT@",
  "patch_dropout": 0.0,
  "precision": "fp32",
  "progress": false,
  "project": "clipforge",
  "recipe": null,
  "regression_tolerance": 0.02,
  "report_to": "",
  "sample_captions": false,
  "samples_per_epoch": null,
  "save_every": 2,
  "seed": 0,
  "shard": false,
  "shard_sampling": "epoch",
  "shuffle_tags": false,
  "simclr_temperature": 0.1,
  "simclr_weight": 0.0,
  "steps": 4,
  "text_dropout": 0.0,
  "time_budget": null,
  "tokenizer": "train",
  "val_data": null,
  "vocab_size": 600,
  "warmup_steps": 1,
  "weight_decay": 0.2,
  "wise_ft": 1.0,
  "workers": 0
}"""


def _unusual() -> TrainConfig:
    """A valid config with a non-default value in every section (and a tuple, None and bools)."""
    return TrainConfig.from_flat(
        data="pairs.csv", val_data="val.csv", cache="c", samples_per_epoch=64, augment="light", shuffle_tags=True,
        model="vit-tiny", init="x.safetensors", tokenizer="train", patch_dropout=0.25,
        loss="siglip", loss_chunk_size=4, simclr_weight=0.5, betas=(0.8, 0.9), lr=1e-3, ema_decay=0.9,
        steps=7, batch_size=16, accum_steps=2, min_lr=1e-5, time_budget="90s", seed=3, precision="bf16",
        grad_checkpointing=True, lock_image=True, lock_image_unlocked_blocks=1, wise_ft=0.5, out="o", name="n",
        save_every=3, log_every=2, report_to="tensorboard", eval_every=5, eval_max_images=9, recipe="finetune",
    ).validate()  # fmt: skip


def test_flat_and_nested_forms_round_trip_losslessly(tmp_path) -> None:
    cfg = _unusual()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # nested -> nested
    assert TrainConfig.from_dict(cfg.to_flat()) == cfg  # flat -> nested
    assert TrainConfig.from_dict(cfg.to_dict()).to_flat() == cfg.to_flat()  # nested -> flat
    assert flatten(cfg.to_dict()) == cfg.to_flat()
    assert TrainConfig.from_flat(**cfg.to_flat()) == cfg
    path = tmp_path / "run.json"
    path.write_text(cfg.to_json())
    assert TrainConfig.from_json(path) == cfg and set(json.loads(path.read_text())) == {
        "data", "model", "loss", "optim", "schedule", "compute", "distributed", "finetune", "checkpoint",
        "tracking", "eval", "recipe",
    }  # fmt: skip
    assert cfg.optim.betas == (0.8, 0.9) and cfg.to_flat()["betas"] == [0.8, 0.9]
    # every flat name is one flag of `clipforge train`, one field of one section
    assert len(flat_field_names()) == len(set(flat_field_names())) == len(cfg.to_flat())
    assert (cfg.checkpoint.every, cfg.tracking.every, cfg.eval.every, cfg.model.name) == (3, 2, 5, "vit-tiny")


def test_old_flat_run_json_reads_as_the_same_config(tmp_path) -> None:
    old = json.loads(OLD_FLAT_RUN_JSON)
    cfg = TrainConfig.from_dict(old)
    assert cfg.to_flat() == old
    assert (cfg.data.source, cfg.model.name, cfg.optim.lr, cfg.checkpoint.every, cfg.tracking.every) == (
        "@DATA@", "@MODEL@", 0.003, 2, 1)


def test_unknown_twice_and_wrongly_typed_keys_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"train config\.optim.*learning_rate"):
        TrainConfig.from_dict({"data": "x", "optim": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="lr given twice"):
        TrainConfig.from_dict({"data": "x", "lr": 1e-3, "optim": {"lr": 1e-4}})
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_flat(learning_rate=1)
    with pytest.raises(TypeError, match=r"TrainConfig\.from_flat\(data="):
        TrainConfig(data="pairs.csv")  # flat names go through from_flat


def test_each_section_checks_itself_naming_the_flat_parameter() -> None:
    with pytest.raises(ConfigError, match="weight_decay"):
        OptimSection(weight_decay=-1).validate()
    with pytest.raises(ConfigError, match="divisible"):
        ScheduleSection(batch_size=10, accum_steps=3).validate()
    with pytest.raises(ConfigError, match="save_every must be a positive int"):
        CheckpointSection(every=0).validate()
    with pytest.raises(ConfigError, match="lock_image_unlocked_blocks needs lock_image"):
        FinetuneSection(lock_image_unlocked_blocks=2).validate()
    OptimSection().validate()
    # checks spanning sections are TrainConfig's
    base = TrainConfig.from_flat(data="x")
    with pytest.raises(ConfigError, match="min_lr"):
        dataclasses.replace(base, schedule=ScheduleSection(min_lr=1.0)).validate()
    with pytest.raises(ConfigError, match="set `init=`"):
        dataclasses.replace(base, finetune=FinetuneSection(wise_ft=0.5)).validate()


@pytest.mark.parametrize("form", ["nested", "flat"])
def test_cli_config_file_in_either_form_under_flags(tmp_path, form) -> None:
    import argparse

    from clipforge.cli.cmd_train import add_arguments, build_config

    cfg = _unusual()
    path = tmp_path / "run.json"
    path.write_text(cfg.to_json() if form == "nested" else json.dumps(cfg.to_flat()))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    given = build_config(parser.parse_args(["--config", str(path), "--lr", "0.01", "--save-every", "9"]))
    assert given == cfg.replace(lr=0.01, save_every=9)
    assert build_config(parser.parse_args(["--config", str(path)])) == cfg


def test_replace_takes_flat_names_and_validates() -> None:
    cfg = TrainConfig.from_flat(data="x").replace(lr=1e-3, save_every=7)
    assert cfg.optim.lr == 1e-3 and cfg.checkpoint.every == 7 and cfg.data.source == "x"
    with pytest.raises(ConfigError, match="divisible"):
        cfg.replace(batch_size=10, accum_steps=3)


def test_a_run_folder_with_a_flat_run_json_resumes(tmp_path) -> None:
    """One 4-step tiny run and its last 2 steps again: ~2.5 s (the issue's "old run folders resume")."""
    from clipforge.cli.main import main

    data = write_pairs_csv(tmp_path / "data", n=24)
    model = write_tiny_model(tmp_path / "m.json")
    cfg = short_run(tmp_path, data=str(data), model=str(model), tokenizer="train", vocab_size=600, lr=3e-3, name="old")
    first = fit(cfg)
    run = first.run_dir
    final = load_weights(first.model_path)
    for path in (run / "checkpoints").glob("step-000004.*"):  # as if killed after step 3
        path.unlink()
    first.model_path.unlink()
    kept = (run / "checkpoints" / "step-000002.safetensors").stat().st_mtime_ns
    # the run folder as clipforge wrote it before the sections: a flat run.json
    text = OLD_FLAT_RUN_JSON
    for token, value in (("@DATA@", str(data)), ("@MODEL@", str(model)), ("@OUT@", cfg.checkpoint.out)):
        text = text.replace(f'"{token}"', json.dumps(value))
    (run / "run.json").write_text(text)
    assert TrainConfig.from_json(run / "run.json") == cfg
    with pytest.raises(ValueError, match=r"differs from its run.json \(lr: 0.003 -> 0.001\)"):
        fit(cfg.replace(lr=1e-3), resume=True)  # the flat file is compared by flat names
    # the CLI takes every setting from the flat run.json and goes on from step 2
    assert main(["train", "--resume", "--out", cfg.checkpoint.out, "--name", "old"]) == 0
    assert (run / "checkpoints" / "step-000002.safetensors").stat().st_mtime_ns == kept  # resumed, not redone
    again = load_weights(first.model_path)
    assert all(torch.equal(final[k], again[k]) for k in final)
    assert TrainConfig.from_json(run / "run.json") == cfg  # rewritten nested, the same config
    assert "optim" in json.loads((run / "run.json").read_text())
