"""The training loop: ``fit(cfg)`` trains a CLIP model and returns where the results are.

Each step takes the rank's batch for this step (a pure function of seed and step), moves it to the
device, sets the scheduled learning rate and runs one :class:`~.step.OptimizerStep` (accumulated
forward + backward with the negatives of the whole global batch, clip, AdamW). Every ``save_every``
steps the main process writes an atomic checkpoint (weights + optimiser/RNG state, :mod:`.train_state`);
``resume=True`` continues from the latest one, bit-exactly. Evaluations run every ``eval_every``.

Recipe components (all off by default): an EMA of the weights (:mod:`.ema`: evaluated, saved as
``model.safetensors``; the trained weights as ``model-raw.safetensors``), SLIP's SimCLR term
(:mod:`.simclr`), WiSE-FT with the starting weights at the end (``model-finetuned.safetensors``
keeps the weights before it), and a wall-clock budget (:mod:`.budget`) that sizes the step count
and the schedule.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..checkpoint import load_weights, save_checkpoint
from ..data import Collator, SkipStats, prepare_images
from ..data.protocols import load_skips_of
from ..device import parse_precision
from ..fileio import atomic_write_text
from ..pretrained import resolve_checkpoint
from ..tokenizer import tokenizer_from_metadata
from .batches import StreamPosition, TrainData
from .budget import TimeBudget
from .config import TrainConfig
from .distributed import (
    DistInfo,
    all_reduce_mean,
    all_reduce_min_int,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    wrap_ddp,
)
from .ema import EMA, ema_weights
from .lit import lock_image_tower, set_train_mode
from .lora import apply_lora, parse_towers
from .merge import wise_ft_into
from .metrics_log import MetricsLogger, Progress
from .optim import build_optimizer, lr_at, set_lr
from .periodic_eval import EvalTask, RetrievalSet, evaluate, headline, regression_report
from .precision import autocast_for, step_kernels_for
from .run_dir import RunDir, check_resumable, resolve_run_dir
from .setup import (
    augmented,
    base_model_config,
    build_eval_sets,
    build_model,
    build_tokenizer,
    build_train_dataset,
    final_model_config,
    resolve_loss,
)
from .sharding import shard_model
from .simclr import SimCLRTerm
from .step import OptimizerStep, make_loss_fn
from .tracking import open_trackers
from .train_state import RunParts, RunRecords, restore_step, save_step, saved_weights

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    model_path: Path  # the final weights (a clipforge checkpoint)
    steps: int
    eval: dict[str, float]  # the final evaluation (empty when there is nothing to evaluate on)
    skipped: int  # training samples skipped as unusable


def fit(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    train_dataset: Dataset | None = None,
    eval_sets: tuple[list[EvalTask], RetrievalSet | None] | None = None,
) -> FitResult:
    """Train according to ``cfg``; under torchrun, every process calls this (only rank 0 writes).

    ``train_dataset`` (map-style or iterable, items ``(image, caption)`` or a ``Skip``) replaces
    ``cfg.data.source`` (the config's augmentation applies to it too: uint8 ``(H, W, 3)`` images);
    ``eval_sets`` replaces the zero-shot tasks / retrieval pairs built from the config.
    """
    cfg.validate()
    dist_info = init_distributed(cfg.compute.device)
    try:
        return _Trainer(cfg, dist_info, resume=resume, train_dataset=train_dataset, eval_sets=eval_sets).run()
    finally:
        cleanup_distributed(dist_info)


class _Trainer:
    """One run, built in named steps: run folder -> data -> tokenizer -> model -> optimisation ->
    evaluation sets -> batches and logs -> the saved state (on resume) -> the optimiser step."""

    def __init__(
        self,
        cfg: TrainConfig,
        info: DistInfo,
        *,
        resume: bool,
        train_dataset: Dataset | None,
        eval_sets: tuple[list[EvalTask], RetrievalSet | None] | None,
    ) -> None:
        self.cfg, self.info = cfg, info
        budget_s = cfg.schedule.time_budget_s  # the budget's clock runs from here: setup, steps, saves, evaluations
        self.budget = TimeBudget(budget_s) if budget_s is not None else None
        if self.budget is not None:
            self.budget.start()
        self._open_run_dir(resume=resume)
        if cfg.model.init:  # the main process downloads/converts (once, into the cache); the others then find it
            broadcast_object(str(resolve_checkpoint(cfg.model.init)) if info.is_main else None, info)
        # model config -> data -> tokenizer (may learn from the data) -> final model config -> model
        model_cfg, init_info = base_model_config(cfg)
        self._build_data(model_cfg, train_dataset)
        self.tokenizer = self._tokenizer(model_cfg, init_info)
        self.model_cfg = final_model_config(model_cfg, self.tokenizer)
        self._build_model()
        self._build_optimisation()
        self.eval_sets = (
            eval_sets
            if eval_sets is not None
            else (build_eval_sets(cfg, self.model_cfg) if info.is_main or self.sharded else ([], None))
        )
        self._build_batches_and_logs()
        self.best: tuple[str, float] | None = None
        self.baseline: dict[str, float] | None = None  # zero-shot results of the starting model (--init)
        self.stream_positions: list | None = None
        if self.start_step is not None:
            self._restore(self.start_step)
        self.optimizer_step = self._optimizer_step()

    # ------------------------------------------------------------------ set-up steps

    def _open_run_dir(self, *, resume: bool) -> None:
        """The run folder (rank 0 names it), its latest step when resuming, and a check that a
        resumed run keeps its config; leftovers of an interrupted save are removed."""
        cfg, info = self.cfg, self.info
        path = Path(broadcast_object(str(resolve_run_dir(cfg, resume=resume)) if info.is_main else None, info))
        self.rundir = RunDir(path, keep_last=cfg.checkpoint.keep_last)
        self.start_step = self.rundir.latest_step() if resume else None
        if resume and self.rundir.config_file.is_file():
            check_resumable(TrainConfig.from_json(self.rundir.config_file), cfg, path)
        elif not resume and self.rundir.latest_step() is not None:
            raise FileExistsError(f"{path} already holds checkpoints: pass `resume=True`, or choose another `name=`")
        if info.is_main:
            for p in self.rundir.sweep():
                log.info("removed %s, left by an interrupted save", p)

    def _build_data(self, model_cfg, train_dataset: Dataset | None) -> None:
        """The training pairs (with the run's augmentation); ``run.json`` is written once they are
        known to be usable, so a run refused for its data leaves no folder."""
        cfg, info = self.cfg, self.info
        self.dataset = (
            augmented(train_dataset, cfg, crop_size=model_cfg.vision.image_size)
            if train_dataset is not None
            else build_train_dataset(cfg, model_cfg, rank=info.rank, world_size=info.world_size)
        )
        if info.is_main:
            atomic_write_text(self.rundir.config_file, cfg.to_json())

    def _build_model(self) -> None:
        """The model on the device, with LoRA adapters, locked towers and FSDP2 sharding as asked."""
        cfg, info, tune = self.cfg, self.info, self.cfg.finetune
        self.model = build_model(cfg, self.model_cfg, device=info.device)
        self.lora = bool(tune.lora_rank)
        if self.lora:
            towers = parse_towers(tune.lora_towers)
            n = apply_lora(self.model, rank=tune.lora_rank, alpha=tune.lora_alpha, towers=towers)
            log.info("LoRA rank %d on %d projections (%s)", tune.lora_rank, n, tune.lora_towers)
        self.frozen = (
            lock_image_tower(self.model, unlocked_blocks=tune.lock_image_unlocked_blocks) if tune.lock_image else []
        )
        self.sharded = cfg.distributed.shard
        if self.sharded:  # FSDP2 before the optimiser, which must see the sharded parameters
            shard_model(self.model, info)

    def _build_optimisation(self) -> None:
        """AdamW (with the SimCLR head's groups when on), the EMA, precision and the loss."""
        cfg, info, optim = self.cfg, self.info, self.cfg.optim
        self.optimizer = build_optimizer(
            self.model, lr=optim.lr, weight_decay=optim.weight_decay, betas=tuple(optim.betas), eps=optim.eps
        )
        self.simclr = self._simclr() if cfg.loss.simclr_weight else None
        self.ema = EMA(self.model, decay=optim.ema_decay) if optim.ema_decay else None
        self.dtype = parse_precision(cfg.compute.precision, info.device)
        self.autocast = autocast_for(info.device, self.dtype)
        self.scaler = torch.amp.GradScaler(info.device.type) if self.dtype == torch.float16 else None
        self.loss_kind = resolve_loss(cfg.loss.kind, self.model_cfg)

    def _build_batches_and_logs(self) -> None:
        """The rank's batches, the skip counts, the metrics log and the experiment trackers."""
        cfg, info = self.cfg, self.info
        self.skips = SkipStats()
        self.data = TrainData(
            self.dataset,
            collate=Collator(self.tokenizer),
            global_batch=cfg.schedule.batch_size,
            seed=cfg.schedule.seed,
            rank=info.rank,
            world_size=info.world_size,
            workers=cfg.data.workers,
            pin_memory=info.device.type == "cuda",
            epoch_batches=cfg.data.samples_per_epoch // cfg.schedule.batch_size if cfg.data.samples_per_epoch else None,
        )
        trackers = (
            open_trackers(
                cfg.tracking.report_to, run_dir=self.rundir.path, config=cfg.to_flat(), project=cfg.tracking.project
            )
            if info.is_main and cfg.tracking.report_to
            else []
        )
        self.metrics = MetricsLogger(self.rundir.metrics_file, enabled=info.is_main, trackers=trackers)
        if self.start_step is None:
            self.metrics.truncate_after(0)  # a fresh start: drop records of an earlier attempt

    def _optimizer_step(self) -> OptimizerStep:
        cfg, info = self.cfg, self.info
        return OptimizerStep(
            model=self.model,
            wrapped=self.model if self.sharded else wrap_ddp(self.model, info),
            optimizer=self.optimizer,
            loss_fn=make_loss_fn(
                self.loss_kind,
                chunk_size=cfg.loss.chunk_size,
                distributed=info.distributed,
                label_smoothing=cfg.loss.label_smoothing,
            ),
            info=info,
            autocast=self.autocast,
            kernels=step_kernels_for(info.device, self.dtype),
            scaler=self.scaler,
            sharded=self.sharded,
            accum_steps=cfg.schedule.accum_steps,
            grad_clip=cfg.optim.grad_clip,
            aux=self.simclr,
            aux_weight=cfg.loss.simclr_weight,
        )

    def _simclr(self) -> SimCLRTerm:
        """SLIP's image term: a head of the run's own (its AdamW groups join the optimiser)."""
        if self.info.distributed:
            raise ValueError("`simclr_weight=` with several processes is not supported yet (run it on one)")
        return SimCLRTerm.for_run(
            self.optimizer,
            embed_dim=self.model_cfg.embed_dim,
            preprocess=self.model_cfg.preprocess,
            weight_decay=self.cfg.optim.weight_decay,
            temperature=self.cfg.loss.simclr_temperature,
            seed=self.cfg.schedule.seed,
            device=self.info.device,
        )

    def _tokenizer(self, model_cfg, init_info):
        if self.rundir.tokenizer_file.is_file() and self.start_step is not None:
            return tokenizer_from_metadata(json.loads(self.rundir.tokenizer_file.read_text()))
        tokenizer = None
        if self.info.is_main:  # learning a vocabulary is deterministic, but do it once
            tokenizer = build_tokenizer(
                self.cfg, dataset=self.dataset, init=init_info, context_length=model_cfg.text.context_length
            )
            atomic_write_text(self.rundir.tokenizer_file, json.dumps(tokenizer.to_metadata()))
        meta = broadcast_object(tokenizer.to_metadata() if tokenizer is not None else None, self.info)
        return tokenizer if tokenizer is not None else tokenizer_from_metadata(meta)

    # ------------------------------------------------------------------ checkpoints

    def _parts(self) -> RunParts:
        """The live objects whose state a step checkpoint saves."""
        return RunParts(
            model=self.model,
            optimizer=self.optimizer,
            skips=self.skips,
            scaler=self.scaler,
            ema=self.ema,
            simclr_head=self.simclr.head if self.simclr is not None else None,
            budget=self.budget,
            lora=self.lora,
            sharded=self.sharded,
        )

    def _stream_positions(self) -> list[Any] | None:
        """Streamed data: every rank's position in its shards (collective); else as resumed."""
        if not self.data.iterable:
            return self.stream_positions
        positions = [self.data.position.to_dict()]
        if self.info.distributed:
            gathered: list[Any] = [None] * self.info.world_size
            torch.distributed.all_gather_object(gathered, positions[0])
            positions = gathered
        return positions

    def _save(self, step: int) -> None:
        records = RunRecords(stream_positions=self._stream_positions(), best=self.best, baseline=self.baseline)
        provenance = {"run": str(self.rundir.path), "step": step, "train_config": self.cfg.to_dict()}
        save_step(
            self.rundir, self._parts(), step, records, tokenizer=self.tokenizer, provenance=provenance, info=self.info
        )

    def _weights(self) -> dict[str, torch.Tensor] | None:
        return saved_weights(self._parts())

    def _restore(self, step: int) -> None:
        records = restore_step(self.rundir, self._parts(), step, device=self.info.device)
        self.stream_positions, self.best, self.baseline = records.stream_positions, records.best, records.baseline
        self.metrics.truncate_after(step)
        log.info("resumed %s at step %d", self.rundir.path, step)

    # ------------------------------------------------------------------ one step

    def _step(self, step: int, batch: Any) -> torch.Tensor | None:
        self.skips.update(batch.skipped, batch.skip_notes, batch.skip_keys)  # every epoch: files can vanish
        n = all_reduce_min_int(len(batch), self.info)  # ranks must hold equal batches for the gathered loss
        if n == 0:
            log.warning("step %d: every sample of the batch was skipped; no update", step)
            return None
        dev, pre = self.info.device, self.model_cfg.preprocess
        images = prepare_images(batch.images[:n], mean=pre.mean, std=pre.std, device=dev)  # (n, 3, H, W)
        tokens = batch.tokens[:n].to(dev, non_blocking=True)  # (n, T)
        total, warmup = self._schedule()
        set_lr(
            self.optimizer,
            lr_at(
                step, base_lr=self.cfg.optim.lr, warmup_steps=warmup, total_steps=total, min_lr=self.cfg.schedule.min_lr
            ),
        )
        loss = self.optimizer_step(images, tokens, step=step)
        if self.ema is not None:
            self.ema.update(self.model)
        return loss

    def _schedule(self) -> tuple[int, int]:
        """(total steps, warm-up steps) of the learning-rate schedule (a time budget's plan)."""
        if self.budget is None:
            return self.cfg.schedule.steps, self.cfg.schedule.warmup_steps
        return self.budget.schedule(steps=self.cfg.schedule.steps, warmup_steps=self.cfg.schedule.warmup_steps)

    def _total_steps(self) -> int:
        return self._schedule()[0]

    def _measuring(self) -> bool:
        return self.budget is not None and self.budget.measuring

    def _eval_weights(self, *, in_place: bool = False) -> contextlib.AbstractContextManager:
        """The weights an evaluation or a saved model uses: the EMA when it is on (``in_place``:
        whatever the model holds now)."""
        return ema_weights(None if in_place else self.ema, self.model)

    # ------------------------------------------------------------------ the run

    def _evaluate_start(self) -> None:
        """Fine-tuning: the starting model's zero-shot results, the reference of every later
        evaluation's ``regression/*`` figures (kept in the checkpoints, so a resume keeps it)."""
        tasks, _ = self.eval_sets
        if (self.info.is_main or self.sharded) and self.cfg.model.init and tasks and self.baseline is None:
            self.baseline = evaluate(
                self.model, self.tokenizer, tasks=tasks, autocast=self.autocast, workers=self.cfg.data.workers
            )
            self.metrics.log(0, {f"start/{k}": v for k, v in self.baseline.items()})
            set_train_mode(self.model, self.frozen)

    def _evaluate(self, step: int, *, in_place: bool = False) -> dict[str, float]:
        """Evaluate the EMA weights when on (``in_place``: the model's weights as they are now)."""
        tasks, retrieval = self.eval_sets
        results: dict[str, float] = {}
        if (self.info.is_main or self.sharded) and (tasks or retrieval is not None):  # sharded: every rank computes
            with self._eval_weights(in_place=in_place):
                results = evaluate(
                    self.model,
                    self.tokenizer,
                    tasks=tasks,
                    retrieval=retrieval,
                    autocast=self.autocast,
                    workers=self.cfg.data.workers,
                )
            if self.baseline:
                tolerance = self.cfg.eval.regression_tolerance
                deltas, dropped = regression_report(results, self.baseline, tolerance=tolerance)
                results.update(deltas)
                if dropped:
                    log.warning(
                        "step %d: zero-shot top-1 fell more than %.3f below the starting model: %s",
                        step,
                        self.cfg.eval.regression_tolerance,
                        "; ".join(dropped),
                    )
            self.metrics.log(step, {f"eval/{k}": v for k, v in results.items()})
            top = headline(results)
            if top is not None and (self.best is None or top[1] > self.best[1]):
                self.best = (top[0], top[1])
                # EMA / WiSE-FT (never sharded): the weights evaluated are not the step's file, keep them
                if self.info.is_main and (self.ema is not None or self.cfg.finetune.wise_ft < 1):
                    with self._eval_weights(in_place=in_place):
                        self._save_model(self.rundir.best_model, step, self._weights())
                    self.rundir.save_best(step, *top, copy=False)
                elif self.info.is_main:
                    self.rundir.save_best(step, *top)
        barrier(self.info)
        set_train_mode(self.model, self.frozen)
        return results

    def run(self) -> FitResult:
        cfg, info = self.cfg, self.info
        step = self.start_step or 0
        self._evaluate_start()
        set_train_mode(self.model, self.frozen)
        progress = Progress(
            total=self._total_steps(),
            initial=step,
            enabled=cfg.tracking.progress and info.is_main,
            every=cfg.tracking.every,
        )
        self.progress = progress
        position = None
        if self.data.iterable and self.stream_positions:
            position = StreamPosition.from_dict(self.stream_positions[info.rank])
        batches = self.data.batches(step, position=position)
        results: dict[str, float] = {}
        evaluated = saved = -1
        try:
            while step < self._total_steps() or self._measuring():
                if self.budget is not None:
                    self.budget.begin_step()
                t0 = time.perf_counter()
                batch = next(batches)
                waited = time.perf_counter() - t0
                loss = self._step(step, batch)
                step += 1
                stop = self._budget_tick(step)
                last = stop or (step >= self._total_steps() and not self._measuring())
                progress.count(samples=len(batch) * info.world_size, data_wait=waited)
                if step % cfg.tracking.every == 0 or last:
                    progress.set_loss(self._log(step, loss, progress))
                progress.update()
                is_eval = bool(cfg.eval.every) and step % cfg.eval.every == 0
                if step % cfg.checkpoint.every == 0 or last or is_eval:
                    self._save(step)
                    saved = step
                if is_eval:
                    results = self._evaluate(step)
                    evaluated = step
                    progress.write(_summary(step, results))
                if self.budget is not None and not last and (is_eval or step % cfg.checkpoint.every == 0
                                                             or self.budget.due(step)):
                    self._replan(step)  # time spent off the steps, or a changed pace: fit the plan to what is left
                if stop:
                    break
        finally:
            progress.close()
        if saved != step and step > (self.start_step or 0):  # a budget's new plan ended the run at this step
            self._save(step)
        results = self._finish(step, results, evaluated)
        skips = self._skip_summary()
        if info.is_main and skips.total:
            log.warning("%s unusable training samples: %s", skips.total, skips.summary())
        self.metrics.close()
        barrier(info)
        return FitResult(self.rundir.path, self.rundir.final_model, step, results, skips.total)

    def _finish(self, step: int, results: dict[str, float], evaluated: int) -> dict[str, float]:
        """The final weights (EMA, then WiSE-FT, when on), their evaluation, and the saved files:
        ``model.safetensors`` the final weights; ``model-raw.safetensors`` the trained weights when
        the final ones differ; ``model-finetuned.safetensors`` the weights before WiSE-FT."""
        cfg, info = self.cfg, self.info
        raw = None
        if self.ema is not None or cfg.finetune.wise_ft < 1:  # a copy: the final weights will replace them in the model
            raw = self._weights() or {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        with self._eval_weights():
            if cfg.finetune.wise_ft < 1:
                if info.is_main:
                    self._save_model(self.rundir.finetuned_model, step, self._weights())
                start = load_weights(resolve_checkpoint(cfg.model.init), device=info.device)
                wise_ft_into(self.model, start, alpha=cfg.finetune.wise_ft)
                evaluated = -1  # new weights: evaluate them
            if evaluated != step:
                results = self._evaluate(step, in_place=True)
            weights = self._weights()
            if info.is_main:
                self._save_model(self.rundir.final_model, step, weights)
                if raw is not None:
                    self._save_model(self.rundir.raw_model, step, raw)
        if info.is_main:
            if results:
                atomic_write_text(self.rundir.path / "eval.json", json.dumps({"step": step, **results}, indent=2))
            if self.budget is not None:
                record = {"budget/elapsed_s": self.budget.elapsed(), "budget/seconds": self.budget.seconds}
                self.metrics.log(step, {**record, "budget/steps": step})
        return results

    def _save_model(self, path: Path, step: int, weights: dict[str, torch.Tensor] | None) -> None:
        """``weights`` (None: the model's own state dict) as a clipforge checkpoint at ``path``."""
        provenance = {"run": str(self.rundir.path), "step": step, "train_config": self.cfg.to_dict()}
        save_checkpoint(path, self.model, tokenizer=self.tokenizer, provenance=provenance, state_dict=weights)

    def _budget_tick(self, step: int) -> bool:
        """Time the step; plan the run once measured; True when the budget allows no more steps."""
        if self.budget is None:
            return False
        if self.budget.step_done(step):
            self._announce_plan(step)
        return all_reduce_min_int(0 if self.budget.out_of_time() else 1, self.info) == 0

    def _replan(self, step: int) -> None:
        before = self.budget.planned
        if self.budget.replan(step):
            self._announce_plan(step, log=self.budget.planned != before)

    def _announce_plan(self, step: int, *, log: bool = True) -> None:
        """Every rank takes rank 0's plan (their clocks differ); the log records each new plan."""
        budget = self.budget
        budget.planned = broadcast_object(budget.planned if self.info.is_main else None, self.info)
        self.progress.set_total(budget.planned)
        if not log:
            return
        self.metrics.log(
            step,
            {
                "budget/planned_steps": budget.planned,
                "budget/step_s": budget.step_time,
                "budget/elapsed_s": budget.elapsed(),
                "budget/seconds": budget.seconds,
            },
        )

    def _skip_summary(self):
        """Rows skipped while reading the index, plus every sample skipped during the run on any rank."""
        counts = [self.skips.state_dict()]
        if self.info.distributed:
            counts = [None] * self.info.world_size
            torch.distributed.all_gather_object(counts, self.skips.state_dict())
        total = SkipStats()
        for c in counts:
            total.merge(c)
        total.update(Counter(s.reason for s in load_skips_of(self.dataset)))
        return total

    def _log(self, step: int, loss: torch.Tensor | None, progress: Progress) -> float | None:
        value = None
        if loss is not None:
            value = float(all_reduce_mean(loss, self.info))
            if value != value or value in (float("inf"), float("-inf")):
                raise FloatingPointError(f"step {step}: the loss is {value}; lower `lr=` or use `precision=\"fp32\"`")
        samples_per_s, data_wait = progress.window()
        record = {
            "loss": value,
            "lr": self.optimizer.param_groups[0]["lr"],
            "logit_scale": float(self.model.logit_scale.detach().exp()),
            "samples_per_s": samples_per_s,
            "data_wait": data_wait,
            "epoch": self.data.epoch_of(step - 1),
            "skipped": self.skips.total,
        }
        if self.model.logit_bias is not None:
            record["logit_bias"] = float(self.model.logit_bias.detach())
        if self.optimizer_step.aux_loss is not None:
            record["simclr_loss"] = float(self.optimizer_step.aux_loss)
        self.metrics.log(step, record)
        return value


def _summary(step: int, results: dict[str, float]) -> str:
    parts = [
        f"{k.split('/', 1)[1]}={v:.3f}"
        for k, v in results.items()
        if k.endswith("/top1") or k.endswith("R@1") or k == "zeroshot/mean_top1"
    ]
    return f"step {step}: " + " ".join(parts)
