"""Experiment trackers behind ``report_to``: TensorBoard, Weights & Biases, MLflow (any subset).

Each receives the run's resolved config once and then the same scalars as ``metrics.jsonl``, at
the same steps. Each is an optional extra (``pip install 'clipforge[wandb]'`` ...); naming one that
is not installed is an error with that hint, before training starts. A resumed run continues the
same W&B / MLflow run: their ids are kept in ``<run dir>/tracking.json``.

* TensorBoard writes ``<run dir>/tensorboard/``.
* W&B honours its own environment (``WANDB_MODE=offline``, ``WANDB_API_KEY``, ``WANDB_ENTITY``...);
  its files go under ``<run dir>/wandb/``.
* MLflow logs to ``MLFLOW_TRACKING_URI`` when set (a server, ``sqlite:///mlflow.db`` ...), else to
  a local file store ``<out>/mlruns`` (``mlflow ui --backend-store-uri <out>/mlruns``; MLflow 3
  needs ``MLFLOW_ALLOW_FILE_STORE=true`` to read it, which clipforge sets for its own process).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Protocol

from ..fileio import atomic_write_text
from ..optional import require

TRACKERS = ("tensorboard", "wandb", "mlflow")
_MLFLOW_KEY = re.compile(r"[^A-Za-z0-9_\-. :/]")


class Tracker(Protocol):
    def log(self, step: int, scalars: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def parse_report_to(text: str) -> list[str]:
    """``"tensorboard,wandb"`` → ``["tensorboard", "wandb"]``; an unknown name is a ValueError."""
    names = [n.strip().lower() for n in text.split(",") if n.strip() and n.strip().lower() != "none"]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"report_to: unknown tracker(s) {', '.join(unknown)} (choose from {', '.join(TRACKERS)})")
    return list(dict.fromkeys(names))


class TensorBoardTracker:
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        tb = require(
            "torch.utils.tensorboard", extra="tensorboard", purpose="`report_to=tensorboard`", package="tensorboard"
        )
        self.writer = tb.SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", 0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    def __init__(self, run_dir: Path, config: dict[str, Any], *, project: str, run_id: str | None) -> None:
        wandb = require("wandb", extra="wandb", purpose="`report_to=wandb`")
        self.run = wandb.init(
            project=project,
            name=run_dir.name,
            id=run_id,
            resume="allow",
            dir=str(run_dir),
            config=config,
            reinit="create_new",
        )
        self.id = self.run.id

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowTracker:
    def __init__(self, run_dir: Path, config: dict[str, Any], *, project: str, run_id: str | None) -> None:
        mlflow = require("mlflow", extra="mlflow", purpose="`report_to=mlflow`", package="mlflow-skinny")
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # a local file store; MLflow 3 asks for an explicit opt-in to it
            uri = (run_dir.parent / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        if run_id is None:
            experiment = self.client.get_experiment_by_name(project)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(project)
            run = self.client.create_run(experiment_id, run_name=run_dir.name)
            run_id = run.info.run_id
            params = [mlflow.entities.Param(k, json.dumps(v)[:500]) for k, v in sorted(config.items())]
            self.client.log_batch(run_id, params=params)
        self.id = run_id
        self._metric = mlflow.entities.Metric

    def log(self, step: int, scalars: dict[str, float]) -> None:
        import time

        now = int(time.time() * 1000)
        metrics = [self._metric(_MLFLOW_KEY.sub("_", k), v, now, step) for k, v in scalars.items()]
        self.client.log_batch(self.id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.id)


def open_trackers(report_to: str, *, run_dir: Path, config: dict[str, Any], project: str) -> list[Tracker]:
    """The trackers ``report_to`` names, started (or, on resume, reattached to their runs)."""
    names = parse_report_to(report_to)
    ids_file = run_dir / "tracking.json"
    ids = json.loads(ids_file.read_text()) if ids_file.is_file() else {}
    trackers: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir, config))
        elif name == "wandb":
            trackers.append(WandbTracker(run_dir, config, project=project, run_id=ids.get("wandb")))
            ids["wandb"] = trackers[-1].id
        else:
            trackers.append(MlflowTracker(run_dir, config, project=project, run_id=ids.get("mlflow")))
            ids["mlflow"] = trackers[-1].id
    if ids:
        atomic_write_text(ids_file, json.dumps(ids, indent=2))
    return trackers


def scalars_of(values: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a metrics record (what trackers can plot)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
