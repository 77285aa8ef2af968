"""clipforge: train, evaluate, convert and deploy CLIP dual-encoder image-text models."""

__version__ = "0.1.0"
