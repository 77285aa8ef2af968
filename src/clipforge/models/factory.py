"""Named architectures (JSON files in ``model_configs/``) and model construction."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from ..config import ConfigError, ModelConfig
from .clip import CLIP


def _config_dir():
    return resources.files("clipforge") / "model_configs"


def list_models() -> list[str]:
    """Names of the built-in architectures, sorted."""
    return sorted(p.name[: -len(".json")] for p in _config_dir().iterdir() if p.name.endswith(".json"))


def get_model_config(name_or_path: str | Path) -> ModelConfig:
    """A built-in architecture by name (e.g. ``"ViT-B-32"``), or a config JSON file."""
    path = Path(name_or_path)
    if path.suffix == ".json" and path.is_file():
        return ModelConfig.from_json(path)
    entry = _config_dir() / f"{name_or_path}.json"
    if not entry.is_file():
        names = list_models()
        lowered = {n.lower(): n for n in names}
        hint = f" Did you mean {lowered[str(name_or_path).lower()]!r}?" if str(name_or_path).lower() in lowered else ""
        raise ConfigError(f"unknown model {str(name_or_path)!r}.{hint} Known: {', '.join(names)}")
    cfg = ModelConfig.from_json(entry.read_text())
    return cfg if cfg.name else cfg.replace(name=str(name_or_path))


def create_model(
    name_or_config: str | Path | ModelConfig,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> CLIP:
    """Build a randomly initialised model from a name, a JSON file or a :class:`ModelConfig`."""
    cfg = name_or_config if isinstance(name_or_config, ModelConfig) else get_model_config(name_or_config)
    model = CLIP(cfg)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model
