"""The run directory: resolved config, tokenizer, metrics, and atomic training checkpoints.

Layout of ``<out>/<name>/``::

    run.json                      the resolved TrainConfig
    tokenizer.json                the tokenizer the run uses (so a resume never re-trains it)
    metrics.jsonl                 one JSON object per logged step / evaluation
    checkpoints/step-000200.safetensors   weights (+ config, tokenizer) via clipforge.checkpoint
    checkpoints/step-000200.state.pt      optimiser, grad scaler, RNG states, step, counters
    checkpoints/step-000200.dcp/          sharded (FSDP) runs: model + optimiser shards of every rank
    checkpoints/best.safetensors  the best evaluation so far (best.json says which step/metric)
    model.safetensors             the final weights (their EMA with ema_decay; WiSE-FT-merged with wise_ft < 1)
    model-raw.safetensors         with ema_decay or wise_ft: the weights as the optimiser left them
    model-finetuned.safetensors   with wise_ft < 1: the weights before the WiSE-FT merge (the EMA when on)

Every file is written to a temporary name, fsynced and renamed, and a step counts as saved only
when both its weights and its state exist: a process killed at any moment leaves the previous
complete checkpoint intact, and ``latest_step`` finds it. A step whose state cannot be written (a
full disk) is removed at once; one cut short by a kill is removed by the next start (``sweep``).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import save_checkpoint
from ..fileio import atomic_write, atomic_write_text, sweep_temporaries
from .config import TrainConfig

_STEP_RE = re.compile(r"^step-(\d+)\.state\.pt$")


def rng_state() -> dict[str, Any]:
    """Every random state the loop can touch, in a form ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class RunDir:
    """Paths of one run and the operations on its checkpoints. Only the main process writes."""

    def __init__(self, path: str | Path, *, keep_last: int = 2) -> None:
        self.path = Path(path)
        self.keep_last = keep_last

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def config_file(self) -> Path:
        return self.path / "run.json"

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def final_model(self) -> Path:
        return self.path / "model.safetensors"

    @property
    def raw_model(self) -> Path:
        return self.path / "model-raw.safetensors"

    @property
    def finetuned_model(self) -> Path:
        return self.path / "model-finetuned.safetensors"

    @property
    def best_model(self) -> Path:
        return self.checkpoints / "best.safetensors"

    def weights_file(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}.safetensors"

    def shard_dir(self, step: int) -> Path:
        """Sharded (FSDP) runs: every rank's shards of model and optimiser (torch.distributed.checkpoint)."""
        return self.checkpoints / f"step-{step:06d}.dcp"

    def state_file(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}.state.pt"

    def saved_steps(self) -> list[int]:
        """Steps with a complete checkpoint (weights and state both present), ascending."""
        if not self.checkpoints.is_dir():
            return []
        steps = []
        for p in self.checkpoints.iterdir():
            m = _STEP_RE.match(p.name)
            if m and self.weights_file(int(m.group(1))).is_file():
                steps.append(int(m.group(1)))
        return sorted(steps)

    def sweep(self) -> list[Path]:
        """Remove what a process killed mid-save left in the run folder and its checkpoints:
        temporaries, and the weights (or shards) of a step whose state was never written."""
        removed = sweep_temporaries(self.path) + sweep_temporaries(self.checkpoints)
        complete = set(self.saved_steps())
        for step in sorted(self._started_steps() - complete):
            removed += self._discard(step)
        return removed

    def _started_steps(self) -> set[int]:
        """Steps with any file of their checkpoint (weights, state or shards)."""
        if not self.checkpoints.is_dir():
            return set()
        pattern = re.compile(r"^step-(\d+)\.(safetensors|state\.pt|dcp)$")
        return {int(m.group(1)) for p in self.checkpoints.iterdir() if (m := pattern.match(p.name))}

    def _discard(self, step: int) -> list[Path]:
        """Remove every file of ``step``'s checkpoint, state first (so it is never complete
        meanwhile); returns what was removed."""
        removed = []
        for path in (self.state_file(step), self.weights_file(step)):
            if path.is_file():
                path.unlink()
                removed.append(path)
        if self.shard_dir(step).is_dir():
            shutil.rmtree(self.shard_dir(step), ignore_errors=True)
            removed.append(self.shard_dir(step))
        return removed

    def latest_step(self) -> int | None:
        steps = self.saved_steps()
        return steps[-1] if steps else None

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        *,
        tokenizer: Any,
        state: dict[str, Any],
        provenance: dict[str, Any],
        weights: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Weights first (``weights`` instead of ``model.state_dict()`` when given), then the state
        that makes the step resumable, then prune old steps. When either cannot be written (a full
        disk), nothing of the step is kept and the ``OSError`` says what to change."""
        try:
            save_checkpoint(
                self.weights_file(step), model, tokenizer=tokenizer, provenance=provenance, state_dict=weights
            )
            atomic_write(self.state_file(step), lambda tmp: torch.save(state, tmp))
        except BaseException as e:  # a full disk, or an interrupt between the two files
            self._discard(step)
            if not isinstance(e, OSError):
                raise
            advice = "nothing of this step was kept; free space, keep fewer checkpoints (`keep_last=`) or choose `out=`"
            raise OSError(e.errno, f"{e.strerror}; {advice}", e.filename) from e
        for old in self.saved_steps()[: -self.keep_last]:
            self.state_file(old).unlink(missing_ok=True)  # state first: a half-pruned step is never "complete"
            self.weights_file(old).unlink(missing_ok=True)
            shutil.rmtree(self.shard_dir(old), ignore_errors=True)

    def load_state(self, step: int) -> dict[str, Any]:
        return torch.load(self.state_file(step), map_location="cpu", weights_only=True)

    def save_best(self, step: int, metric: str, value: float, *, copy: bool = True) -> None:
        """Record the best step; ``copy``: its weights file becomes ``best.safetensors`` (else the
        caller has written that file, e.g. with the EMA weights)."""
        if copy:
            src = self.weights_file(step)
            atomic_write(self.best_model, lambda tmp: shutil.copyfile(src, tmp))
        atomic_write_text(
            self.checkpoints / "best.json",
            json.dumps({"step": step, "metric": metric, "value": value}, indent=2),
        )


# Keys that may change between an interrupted run and its resumption without changing the result.
RESUMABLE_CHANGES = frozenset(
    {"workers", "progress", "log_every", "save_every", "keep_last", "eval_every", "steps"}
    | {"report_to", "project", "regression_tolerance", "time_budget"}
)


def resolve_run_dir(cfg: TrainConfig, *, resume: bool) -> Path:
    """``out/name``; without a name, a new timestamped directory (or, to resume, the newest run)."""
    out = Path(cfg.checkpoint.out)
    if cfg.checkpoint.name:
        return out / cfg.checkpoint.name
    if resume:
        runs = sorted((p for p in out.glob("*") if (p / "run.json").is_file()), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise FileNotFoundError(f"`resume=True`: no run directory with a run.json under {out}")
        return runs[-1]
    return out / datetime.now().strftime("%Y%m%d-%H%M%S")


def check_resumable(stored: TrainConfig, given: TrainConfig, where: Path) -> None:
    a, b = stored.to_flat(), given.to_flat()  # flat names: RESUMABLE_CHANGES and the message use them
    changed = sorted(k for k in a if a[k] != b[k] and k not in RESUMABLE_CHANGES | {"name", "out"})
    if changed:
        detail = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in changed)
        raise ValueError(f"cannot resume {where}: the config differs from its run.json ({detail})")
