"""Model identity: one id for one set of weights, whatever file, device or precision they came in.

The index, the zero-shot classifier and evaluation reports store this id and refuse to mix results
of two models. It hashes the architecture (the config without its display name) and, per tensor, its
name, shape and up to 1024 evenly spaced values rounded to bfloat16 — so an OpenAI ``.pt``, its
clipforge conversion and a bf16 copy on a GPU all have the same id, and it costs milliseconds.
"""

from __future__ import annotations

import hashlib
import json

from torch import nn

from ..config import ModelConfig

SAMPLES_PER_TENSOR = 1024


def model_id(model: nn.Module) -> str:
    """``cf:<16 hex>``: the id of ``model``'s config and weights (see the module docstring)."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if isinstance(config, ModelConfig):
        described = config.to_dict()
        described.pop("name", None)  # the same weights under another name are the same model
        h.update(json.dumps(described, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().flatten()
        sample = flat[:: max(1, flat.numel() // SAMPLES_PER_TENSOR)][:SAMPLES_PER_TENSOR]
        h.update(f"{name}{tuple(tensor.shape)}".encode())
        h.update(sample.to("cpu").bfloat16().float().numpy().tobytes())
    return "cf:" + h.hexdigest()[:16]
