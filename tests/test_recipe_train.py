"""Recipe components in training: EMA, time budget, presets, WiSE-FT, and every flag end to end."""

from __future__ import annotations

import json
import time

import pytest
import torch
from convert_utils import VOCAB, small_tokenizer
from train_helpers import ColourPairs, short_run, write_pairs_csv, write_tiny_model

from clipforge.checkpoint import load_weights, save_checkpoint
from clipforge.cli.cmd_train import add_arguments, build_config
from clipforge.config import ConfigError
from clipforge.train import TrainConfig
from clipforge.train.budget import TimeBudget, parse_duration
from clipforge.train.ema import EMA
from clipforge.train.loop import fit
from clipforge.train.presets import recipe_fields, recipe_names

# ---------------------------------------------------------------- EMA


def _ema_closed_form(p0: torch.Tensor, values: list[torch.Tensor], decays: list[float]) -> torch.Tensor:
    """e_k = prod_t d_t * p0 + sum_i (1 - d_i) prod_{t > i} d_t * p_i."""
    k = len(values)
    total = p0 * torch.tensor(decays).prod()
    for i in range(k):
        total = total + (1 - decays[i]) * torch.tensor(decays[i + 1 :]).prod() * values[i]
    return total


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_equals_its_closed_form_after_k_steps(warmup: bool) -> None:
    model = torch.nn.Linear(3, 2)
    frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
    model.register_parameter("frozen", frozen)
    p0 = model.weight.detach().clone()
    ema = EMA(model, decay=0.9, warmup=warmup)
    assert ema.names == ["weight", "bias"]  # frozen parameters are not averaged
    values = []
    g = torch.Generator().manual_seed(0)
    for _ in range(7):
        with torch.no_grad():
            model.weight.copy_(torch.randn(2, 3, generator=g))
        values.append(model.weight.detach().clone())
        ema.update(model)
    decays = [ema.decay_at(t) for t in range(1, 8)]
    if not warmup:
        assert decays == [0.9] * 7
    else:
        assert decays[0] == pytest.approx(2 / 11) and max(decays) <= 0.9
    expected = _ema_closed_form(p0, values, decays)
    assert torch.allclose(ema.shadow[0], expected, atol=1e-6)
    trained = model.weight.detach().clone()
    with ema.swapped(model):
        assert torch.allclose(model.weight, expected, atol=1e-6)
    assert torch.equal(model.weight, trained)  # restored after
    copy = EMA(model, decay=0.9, warmup=warmup)
    copy.load_state_dict(ema.state_dict())
    assert copy.updates == 7 and torch.equal(copy.shadow[0], ema.shadow[0])


# ---------------------------------------------------------------- time budget


def test_parse_duration() -> None:
    assert parse_duration("25m") == 1500
    assert parse_duration("90s") == 90
    assert parse_duration("1h") == 3600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1500") == 1500
    assert parse_duration(2.5) == 2.5
    for bad in ("", "soon", "-5", "0", "5x", "m5"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_time_budget_plans_from_the_measured_step_time(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    budget = TimeBudget(60.0, warmup=2, measure=3, reserve=0.0)
    budget.start()
    for step, seconds in enumerate([5.0, 3.0, 1.0, 1.0, 1.0], start=1):  # two slow warm-up steps
        now[0] += seconds
        planned = budget.step_done(step, seconds)
    assert planned and budget.step_time == 1.0
    assert budget.planned == 5 + (60 - 11)  # 11 s spent; 49 more one-second steps fit
    now[0] += 20.0  # an evaluation
    assert budget.replan(5) and budget.planned == 5 + 29
    now[0] = 100.0 + 59.5
    assert budget.out_of_time()
    again = TimeBudget(60.0)
    again.load_state_dict(budget.state_dict())
    assert again.planned == budget.planned and again.elapsed_before == pytest.approx(59.5)
    longer = TimeBudget(120.0)  # resumed with a longer budget: a new plan after the next step
    longer.load_state_dict(budget.state_dict())
    longer.start()
    now[0] += 1.0
    assert longer.step_done(35, 1.0) and longer.planned == 35 + int(120 - 60.5 - 0.03 * 120)  # 3 % reserve


# ---------------------------------------------------------------- config and presets


def test_new_fields_are_off_by_default_and_old_run_json_loads() -> None:
    old = TrainConfig.from_flat(data="shapes").to_flat()  # the flat run.json of older runs
    new_keys = ("recipe", "sample_captions", "augment", "simclr_weight", "patch_dropout", "ema_decay",
                "text_dropout", "shuffle_tags", "label_smoothing", "time_budget", "wise_ft")
    for key in new_keys:
        del old[key]
    cfg = TrainConfig.from_dict(old)
    assert (cfg.data.augment, cfg.optim.ema_decay, cfg.data.sample_captions, cfg.schedule.time_budget,
            cfg.finetune.wise_ft) == ("none", 0.0, False, None, 1.0)


def test_recipes_are_data_and_explicit_fields_win() -> None:
    assert {"small-data", "finetune"} <= set(recipe_names())
    cfg = TrainConfig.from_dict({"data": "shapes", "recipe": "small-data", "ema_decay": 0.5})
    assert cfg.data.sample_captions and cfg.loss.simclr_weight == 1.0 and cfg.model.patch_dropout == 0.5
    assert cfg.optim.ema_decay == 0.5
    assert recipe_fields("finetune")["wise_ft"] < 1
    with pytest.raises(ConfigError, match="unknown recipe"):
        TrainConfig.from_dict({"data": "shapes", "recipe": "nope"})
    with pytest.raises(ConfigError, match="set `init=`"):
        TrainConfig.from_dict({"data": "shapes", "recipe": "finetune"})


def test_cli_flags_override_the_preset() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--data", "shapes", "--recipe", "small-data", "--augment", "strong", "--time-budget",
                              "90s", "--patch-dropout", "0.25", "--no-sample-captions"])
    cfg = build_config(args)
    assert (cfg.data.augment, cfg.loss.simclr_weight, cfg.data.sample_captions, cfg.schedule.time_budget_s,
            cfg.model.patch_dropout) == (
        "strong", 1.0, False, 90.0, 0.25)


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"augment": "heavy"}, "augment"),
        ({"patch_dropout": 1.0}, "patch_dropout"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"time_budget": "soon"}, "time_budget"),
        ({"label_smoothing": -0.1}, "label_smoothing"),
        ({"ema_decay": 0.9, "shard": True}, "not supported"),
        ({"simclr_weight": 1.0, "lock_image": True}, "freezes"),
    ],
)
def test_bad_recipe_values_name_the_field(fields, match) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_flat(data="shapes", **fields).validate()


# ---------------------------------------------------------------- end to end


@pytest.fixture()
def run_cfg(tmp_path):
    data = write_pairs_csv(tmp_path / "data", n=24)
    model = write_tiny_model(tmp_path / "m.json")
    return short_run(tmp_path, data=str(data), model=str(model), tokenizer="train", vocab_size=600, lr=3e-3)


@pytest.mark.slow  # three tiny runs (~15 s on 2 shared cores)
def test_every_component_trains_saves_and_resumes_bit_exactly(run_cfg) -> None:
    cfg = run_cfg.replace(
        sample_captions=True,
        augment="strong",
        simclr_weight=0.5,
        patch_dropout=0.5,
        ema_decay=0.9,
        text_dropout=0.2,
        shuffle_tags=True,
        label_smoothing=0.1,
        val_data=run_cfg.data.source,
    )
    straight = fit(cfg.replace(name="straight"))
    raw, final = load_weights(straight.run_dir / "model-raw.safetensors"), load_weights(straight.model_path)
    assert any(not torch.equal(raw[k], final[k]) for k in raw)  # the saved model is the EMA, not the raw weights
    records = [json.loads(line) for line in (straight.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("simclr_loss" in r for r in records) and straight.eval
    cut = fit(cfg.replace(name="cut"))
    for path in (cut.run_dir / "checkpoints").glob("step-000004.*"):  # as if killed after step 3
        path.unlink()
    resumed = fit(cfg.replace(name="cut"), resume=True)
    again = load_weights(resumed.model_path)
    assert all(torch.equal(final[k], again[k]) for k in final)


class _FakeClock:
    """The budget's clock, advanced by the test: each training step "takes" ``pace`` seconds."""

    def __init__(self) -> None:
        self.now, self.pace = 1000.0, 1.0


@pytest.mark.slow  # ~20 tiny training steps (10-20 s on 2 shared cores)
def test_time_budget_stops_on_time_with_a_final_checkpoint(run_cfg, monkeypatch) -> None:
    from clipforge.train import budget as budget_module
    from clipforge.train import loop

    clock = _FakeClock()
    monkeypatch.setattr(budget_module.TimeBudget, "now", staticmethod(lambda: clock.now))
    real_step = loop._Trainer._step

    def timed_step(self, step, batch):
        clock.now += clock.pace if step < 12 else 2 * clock.pace  # the machine slows down after step 12
        return real_step(self, step, batch)

    monkeypatch.setattr(loop._Trainer, "_step", timed_step)
    budget = 24.0
    cfg = run_cfg.replace(name="budget", time_budget=f"{budget}s", steps=100_000, save_every=100_000,
                              batch_size=4, warmup_steps=2)
    result = fit(cfg, train_dataset=ColourPairs(32, size=16))
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    plans = [r for r in records if "budget/planned_steps" in r]
    # warm-up 3 steps, 5 timed at 1 s: at 8 s, 24 - 8 - 3 % reserve fits 15 more one-second steps
    assert plans[0]["step"] == 8 and plans[0]["budget/planned_steps"] == 8 + 15
    assert plans[-1]["budget/planned_steps"] < plans[0]["budget/planned_steps"]  # replanned at the slower pace
    done = [r for r in records if "budget/steps" in r][-1]
    assert done["budget/steps"] == result.steps
    assert budget - 2 * clock.pace - 0.03 * budget <= done["budget/elapsed_s"] <= budget  # on time, not early
    assert (result.run_dir / "checkpoints" / f"step-{result.steps:06d}.state.pt").is_file()  # a final checkpoint
    assert result.model_path.is_file()
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs[-1] < 0.2 * max(lrs)  # the cosine was sized to the budget: it has come down by the end
    assert TrainConfig.from_json(result.run_dir / "run.json").schedule.time_budget == "24.0s"  # recorded in the config


@pytest.mark.full_suite
def test_wise_ft_interpolates_with_the_starting_weights(run_cfg, tmp_path, tiny_model) -> None:
    init = save_checkpoint(tmp_path / "init.safetensors", tiny_model(seed=0, vocab_size=VOCAB, embed_dim=16),
                           tokenizer=small_tokenizer())
    cfg = run_cfg.replace(name="wise", init=str(init), wise_ft=0.5, steps=2, model="vit-tiny")
    result = fit(cfg)
    start = load_weights(init)
    tuned = load_weights(result.run_dir / "model-finetuned.safetensors")
    final = load_weights(result.model_path)
    assert any(not torch.equal(start[k], tuned[k]) for k in start)
    for key in final:
        torch.testing.assert_close(final[key], (start[key] + tuned[key]) / 2)


def test_components_that_do_not_fit_are_errors(run_cfg, tmp_path) -> None:
    rn = write_tiny_model(tmp_path / "rn.json")
    rn_cfg = json.loads(rn.read_text())
    from factories import tiny_model_config

    rn.write_text(json.dumps(tiny_model_config("rn-tiny", embed_dim=16, context_length=24).to_dict()))
    with pytest.raises(ValueError, match="patch_dropout.*ResNet"):
        fit(run_cfg.replace(name="rn", model=str(rn), patch_dropout=0.5))
    assert rn_cfg  # the ViT config it replaced
    with pytest.raises(ValueError, match="label_smoothing"):
        fit(run_cfg.replace(name="sig", loss="siglip", label_smoothing=0.1))


def test_from_recipe_applies_the_preset() -> None:
    cfg = TrainConfig.from_recipe("small-data", data="shapes", augment="strong")
    assert cfg.recipe == "small-data" and cfg.data.sample_captions and cfg.data.augment == "strong"


def test_augmentation_reaches_the_decode_and_the_cache_paths(run_cfg, tmp_path) -> None:
    from clipforge.data.augment import LIGHT_SCALE, AugmentedPairs
    from clipforge.data.pairs import PairsDataset
    from clipforge.models import get_model_config
    from clipforge.train.setup import build_train_dataset

    model_cfg = get_model_config(run_cfg.model.name)
    size = model_cfg.vision.image_size
    plain = build_train_dataset(run_cfg, model_cfg, rank=0, world_size=1)
    assert isinstance(plain, PairsDataset)  # components off: the dataset as before, float images
    assert plain[0][0].dtype == torch.float32
    for cache in (None, str(tmp_path / "cache")):
        cfg = run_cfg.replace(augment="light", cache=cache, progress=False)
        ds = build_train_dataset(cfg, model_cfg, rank=0, world_size=1)
        assert isinstance(ds, AugmentedPairs)
        image, caption = ds[0]
        assert image.dtype == torch.uint8 and image.shape == (size, size, 3) and caption
        if cache is None:
            assert ds.dataset.transform.scale == LIGHT_SCALE and ds.augment.crop_size is None
        else:
            assert ds.augment.crop_size == size  # cached pixels: the crop happens on them


def test_a_given_dataset_gets_the_text_augmentation(run_cfg) -> None:
    from clipforge.data.augment import AugmentedPairs
    from clipforge.train.setup import augmented

    data = ColourPairs(8, size=16)
    assert augmented(data, run_cfg, crop_size=16) is data  # nothing asked: untouched
    wrapped = augmented(data, run_cfg.replace(text_dropout=0.5), crop_size=16)
    assert isinstance(wrapped, AugmentedPairs) and wrapped.augment.crop_size is None
    words = set(data[0][1].split())
    assert set(wrapped[0][1].split()) <= words
