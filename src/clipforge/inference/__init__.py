"""Inference: load any model reference once, then embed and score with it.

:func:`load_model` resolves a reference (path, pretrained name, Hub id) onto a device and dtype;
:class:`Encoder` bundles model, tokenizer, transform and :func:`model_id` for search, serving and
embedding jobs. Sits below eval/index/serve, above models/tokenizer/convert/pretrained.
"""

from .encoder import Encoder
from .identity import model_id
from .loading import LazyTokenizer, LoadedModel, image_transform, load_model, tokenizer_for

__all__ = ["Encoder", "LazyTokenizer", "LoadedModel", "image_transform", "load_model", "model_id", "tokenizer_for"]
