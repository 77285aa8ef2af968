"""``clipforge quickstart``: train a small CLIP on the built-in shapes data in about five minutes.

It learns a BPE vocabulary from the shapes captions, trains the ``quickstart_model.json`` model (a small
ModifiedResNet image tower: at this budget a ViT learns colour but not shape) with
``quickstart.json``'s settings, evaluates zero-shot accuracy on every shapes task (shape, colour,
pattern, count, position, and colour + shape on combinations never seen in training) and
retrieval R@1/5/10 on the val split, and writes ``eval.json``, ``report.md`` with its plots, and
the checkpoint into one run directory.

The number of steps adapts to the time budget: a few timed steps measure this machine's speed,
then the run takes as many steps as fit in the budget, but never fewer than ``MIN_STEPS`` (below
that the model is not yet good) nor more than ``MAX_STEPS``: on a slow or busy machine the run takes
longer rather than ending half-trained.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..device import parse_precision, resolve_device
from ..fileio import atomic_write_text
from ..models import create_model, get_model_config
from .config import TrainConfig
from .loop import fit
from .optim import build_optimizer
from .precision import autocast_for
from .report import summarise, write_report
from .setup import build_train_dataset, resolve_loss
from .step import make_loss_fn

MIN_STEPS = 600
MAX_STEPS = 1500
TRAIN_SHARE = 0.85  # of the budget; the rest is data set-up, evaluation and the report
# Pass marks shown in the report (the seen-combination ones are the quickstart's promise).
TARGETS = {"colour": 0.9, "shape": 0.9}


@dataclass(frozen=True)
class QuickstartResult:
    run_dir: Path
    eval_path: Path
    report_path: Path
    checkpoint: Path
    figures: dict[str, Any]


def quickstart_config(*, out: str | Path, name: str = "quickstart") -> TrainConfig:
    """The packaged quickstart settings, writing to ``out/name``."""
    package = resources.files("clipforge.train")
    data = json.loads(package.joinpath("quickstart.json").read_text())
    data["model"] = str(package.joinpath(data["model"]))
    return TrainConfig.from_dict({**data, "out": str(out), "name": name}, where="quickstart.json")


def measure_step_seconds(cfg: TrainConfig, *, steps: int = 3) -> float:
    """Seconds per optimiser step of ``cfg``'s model and batch on this machine: the median of a few
    steps on random data after one warm-up step, plus the time to make one real batch when the
    data is made in the training process (``workers=0``)."""
    model_cfg = get_model_config(cfg.model.name)
    data_s = 0.0
    if cfg.data.workers == 0:
        dataset = build_train_dataset(cfg, model_cfg, rank=0, world_size=1)
        n = min(cfg.schedule.batch_size, len(dataset) // 3)
        for i in range(2 * n):  # warm-up: the first samples fill the renderer's caches
            dataset[i]
        t0 = time.perf_counter()
        for i in range(2 * n, 3 * n):
            dataset[i]
        data_s = (time.perf_counter() - t0) * cfg.schedule.batch_size / max(n, 1)
    device = resolve_device(cfg.compute.device)
    model = create_model(model_cfg).to(device)
    opt = build_optimizer(model, lr=1e-4, weight_decay=0.0)
    autocast = autocast_for(device, parse_precision(cfg.compute.precision, device))
    loss_fn = make_loss_fn(resolve_loss(cfg.loss.kind, model_cfg), chunk_size=None, distributed=False)
    g = torch.Generator().manual_seed(0)
    size, ctx = model_cfg.vision.image_size, model_cfg.text.context_length
    images = torch.randn(cfg.schedule.batch_size, 3, size, size, generator=g).to(device)
    tokens = torch.randint(1, model_cfg.text.vocab_size - 2, (cfg.schedule.batch_size, ctx), generator=g)
    tokens[:, 12] = model_cfg.text.vocab_size - 1  # captions of ~12 tokens, like the shapes ones
    tokens = tokens.to(device)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with autocast():
            out = model(images, tokens)
            loss = loss_fn(out.image_features, out.text_features, out.logit_scale, out.logit_bias)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())  # wait for the device
        times.append(time.perf_counter() - t0)
    return sorted(times[1:])[len(times[1:]) // 2] + data_s


def plan_steps(step_seconds: float, minutes: float) -> int:
    """Steps that fit ``TRAIN_SHARE`` of ``minutes``, kept within [MIN_STEPS, MAX_STEPS]."""
    fit_in_budget = int(minutes * 60 * TRAIN_SHARE / max(step_seconds, 1e-6))
    return max(MIN_STEPS, min(MAX_STEPS, fit_in_budget))


def quickstart(
    *,
    out: str | Path = "runs",
    name: str = "quickstart",
    minutes: float = 5.0,
    steps: int | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> QuickstartResult:
    """Run the whole quickstart; ``steps`` skips the time calibration. ``overrides`` replaces
    TrainConfig fields (for tests: smaller batches)."""
    cfg = quickstart_config(out=out, name=name).replace(progress=progress, **(overrides or {}))
    run_dir = Path(cfg.checkpoint.out) / cfg.checkpoint.name
    if run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"{run_dir} already exists: pass another `out=`, or remove it")
    t_start = time.perf_counter()
    if steps is None:
        step_s = measure_step_seconds(cfg)
        steps = plan_steps(step_s, minutes)
        print(
            f"quickstart: {step_s:.2f} s per step of {cfg.schedule.batch_size} pairs here -> {steps} steps "
            f"(~{steps * step_s / 60:.1f} min of training)"
        )
    cfg = cfg.replace(steps=steps, warmup_steps=min(cfg.schedule.warmup_steps, max(steps // 10, 1)), save_every=steps)
    t_train = time.perf_counter()
    result = fit(cfg)
    train_seconds = time.perf_counter() - t_train


    figures = summarise(
        result.eval,
        steps=result.steps,
        batch_size=cfg.schedule.batch_size,
        train_seconds=train_seconds,
        total_seconds=time.perf_counter() - t_start,
        targets=TARGETS,
    )
    eval_path = result.run_dir / "eval.json"
    atomic_write_text(eval_path, json.dumps(figures, indent=2))
    report_path = write_report(result.run_dir, figures, model_path=result.model_path)
    figures["total_seconds"] = time.perf_counter() - t_start
    atomic_write_text(eval_path, json.dumps(figures, indent=2))
    return QuickstartResult(result.run_dir, eval_path, report_path, result.model_path, figures)
