"""clipforge: train, evaluate, convert and deploy CLIP dual-encoder image-text models.

    import clipforge
    model, tokenizer, transform = clipforge.load("model.safetensors")
    image_emb = model.encode_image(transform(image)[None])
    text_emb = model.encode_text(tokenizer(["a photo of a dog"]))
"""

from .api import Loaded, image_transform, load
from .checkpoint import CheckpointError, save_checkpoint
from .config import ConfigError, ModelConfig, PreprocessConfig, TextConfig, VisionConfig
from .eval.classifier import ZeroShotClassifier
from .losses import clip_loss, siglip_loss
from .models import CLIP, CLIPOutput, create_model, get_model_config, list_models
from .tokenizer import Tokenizer, get_tokenizer, train_bpe
from .version import __version__

__all__ = [
    "__version__",
    "CLIP",
    "CLIPOutput",
    "CheckpointError",
    "ConfigError",
    "Loaded",
    "ModelConfig",
    "PreprocessConfig",
    "TextConfig",
    "Tokenizer",
    "VisionConfig",
    "ZeroShotClassifier",
    "clip_loss",
    "create_model",
    "get_model_config",
    "get_tokenizer",
    "image_transform",
    "list_models",
    "load",
    "save_checkpoint",
    "siglip_loss",
    "train_bpe",
]
