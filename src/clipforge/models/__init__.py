"""CLIP models: plain layers, their inference fast path, ViT and ModifiedResNet image towers, text tower,
dual encoder, factory."""

from .clip import CLIP, CLIPOutput, unit_float32
from .factory import create_model, get_model_config, list_models

__all__ = ["CLIP", "CLIPOutput", "create_model", "get_model_config", "list_models", "unit_float32"]
