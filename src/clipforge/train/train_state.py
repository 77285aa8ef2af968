"""A run's resumable state: what a step checkpoint holds besides the weights, and putting it back.

A step checkpoint is the weights (``step-N.safetensors``; sharded runs also ``step-N.dcp/``) and a
state file (``step-N.state.pt``, see :mod:`.run_dir`) with everything else that makes a resumed
run bit-identical to an uninterrupted one: optimiser moments, grad scaler, every RNG, skip
counts, stream positions, the best evaluation so far, the starting model's zero-shot baseline,
LoRA adapters, the EMA, the SimCLR head and the time budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..checkpoint import load_state_dict_strict, load_weights
from ..data import SkipStats
from .budget import TimeBudget
from .distributed import DistInfo
from .ema import EMA
from .lora import adapter_state_dict, load_adapters, merged_state_dict
from .run_dir import RunDir, rng_state, set_rng_state
from .sharding import full_state_dict, load_sharded, save_sharded


@dataclass
class RunParts:
    """The live objects of a run whose state a checkpoint saves (None: not used by this run)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    skips: SkipStats
    scaler: torch.amp.GradScaler | None = None
    ema: EMA | None = None
    simclr_head: nn.Module | None = None
    budget: TimeBudget | None = None
    lora: bool = False  # the model carries LoRA adapters: the state holds them, the weights merge them
    sharded: bool = False  # FSDP2: model and optimiser are saved as every rank's shards


@dataclass
class RunRecords:
    """What a run keeps across a resume besides its objects' state."""

    stream_positions: list[Any] | None = None  # streamed data: each rank's position in its shards
    best: tuple[str, float] | None = None  # the best evaluation so far: (metric, value)
    baseline: dict[str, float] | None = None  # zero-shot results of the starting model (--init)


def saved_weights(parts: RunParts) -> dict[str, torch.Tensor] | None:
    """What a saved model holds when it is not ``model.state_dict()``: the full weights gathered
    from the shards (rank 0; collective), or the LoRA adapters merged into plain weights."""
    if parts.sharded:
        return full_state_dict(parts.model)
    return merged_state_dict(parts.model) if parts.lora else None


def state_dict(parts: RunParts, step: int, records: RunRecords) -> dict[str, Any]:
    """The state file's contents at ``step`` (everything ``torch.load(weights_only=True)`` reads)."""
    return {
        "step": step,
        "optimizer": None if parts.sharded else parts.optimizer.state_dict(),  # sharded: in step-N.dcp/
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "rng": rng_state(),
        "skips": parts.skips.state_dict(),
        "stream_positions": records.stream_positions,
        "best": list(records.best) if records.best else None,
        "baseline": records.baseline,
        "lora": adapter_state_dict(parts.model) if parts.lora else None,
        "ema": parts.ema.state_dict() if parts.ema is not None else None,
        "simclr_head": parts.simclr_head.state_dict() if parts.simclr_head is not None else None,
        "budget": parts.budget.state_dict() if parts.budget is not None else None,
    }


def save_step(
    rundir: RunDir,
    parts: RunParts,
    step: int,
    records: RunRecords,
    *,
    tokenizer: Any,
    provenance: dict[str, Any],
    info: DistInfo,
) -> None:
    """Checkpoint ``step``; every rank calls it (gathering sharded weights is collective), the
    main process writes weights and state (the state last: it commits the step)."""
    state = state_dict(parts, step, records)
    weights = saved_weights(parts)  # collective when sharded
    if parts.sharded:  # each rank's shards of model and optimiser, before the state commits the step
        save_sharded(parts.model, parts.optimizer, rundir.shard_dir(step), info)
    if info.is_main:
        rundir.save(step, parts.model, tokenizer=tokenizer, state=state, provenance=provenance, weights=weights)


def restore_step(rundir: RunDir, parts: RunParts, step: int, *, device: torch.device) -> RunRecords:
    """Put ``step``'s checkpoint back into ``parts`` (weights, optimiser, RNGs, ...); returns its records."""
    state = rundir.load_state(step)
    if parts.lora:  # the frozen base comes from --init (or the seed) as at the start; the adapters from the state
        load_adapters(parts.model, state["lora"])
    elif parts.sharded:
        load_sharded(parts.model, parts.optimizer, rundir.shard_dir(step))
    else:
        source = rundir.weights_file(step)
        load_state_dict_strict(parts.model, load_weights(source, device=device), source=str(source))
    if parts.simclr_head is not None:  # before the optimiser state, which holds the head's moments
        parts.simclr_head.load_state_dict(state["simclr_head"])
    if not parts.sharded:
        parts.optimizer.load_state_dict(state["optimizer"])
    if parts.ema is not None:
        parts.ema.load_state_dict(state["ema"])
    if parts.budget is not None and state.get("budget"):
        parts.budget.load_state_dict(state["budget"])
    if parts.scaler is not None and state["scaler"] is not None:
        parts.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    parts.skips.load_state_dict(state["skips"])
    return RunRecords(
        stream_positions=state["stream_positions"],
        best=tuple(state["best"]) if state["best"] else None,
        baseline=state.get("baseline"),
    )
