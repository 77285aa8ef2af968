"""The dual encoder: an image tower and a text tower projected into one normalised space."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ENCODER_KINDS, ModelConfig
from .fastvit import FastViT
from .resnet import ModifiedResNet
from .text import TextTransformer
from .text_encoder import EncoderTextTower
from .text_mct import MCTTextTower
from .vit import VisionTransformer

MAX_LOGIT_SCALE = 100.0


def unit_float32(features: torch.Tensor) -> torch.Tensor:
    """(B, E) features of any dtype -> L2-normalised float32 rows.

    Normalising in bf16 leaves norms up to ~1 ± 4e-3, so stored "cosines" could exceed 1 and an
    image would not score 1.0 against itself; every embedding is therefore normalised in float32,
    whatever precision the tower ran in (the losses upcast to float32 anyway)."""
    return F.normalize(features.float(), dim=-1)


class CLIPOutput(NamedTuple):
    image_features: torch.Tensor  # (B, embed_dim), L2-normalised, float32
    text_features: torch.Tensor  # (B, embed_dim), L2-normalised, float32
    logit_scale: torch.Tensor  # scalar, exp(learned log-scale); clamped at 100 for softmax models
    logit_bias: torch.Tensor | None  # scalar, only for models trained with the sigmoid loss


class CLIP(nn.Module):
    """Contrastive image-text model. The forward pass returns features, never a loss."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        if config.vision.kind == "vit":
            self.visual: nn.Module = VisionTransformer(
                config.vision, config.embed_dim, config.act, eps=config.norm_eps
            )
        elif config.vision.kind == "fastvit":
            self.visual = FastViT(config.vision, config.embed_dim)
        else:
            self.visual = ModifiedResNet(config.vision, config.embed_dim)
        self.text: TextTransformer | EncoderTextTower
        if config.text.kind in ENCODER_KINDS:
            self.text = EncoderTextTower(config.text, config.embed_dim, eps=config.norm_eps)
        elif config.text.kind == "mct":
            self.text = MCTTextTower(config.text, config.embed_dim, config.act, eps=config.norm_eps)
        else:
            self.text = TextTransformer(config.text, config.embed_dim, config.act, eps=config.norm_eps)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        self.logit_bias: nn.Parameter | None = None
        if config.init_logit_bias is not None:
            self.logit_bias = nn.Parameter(torch.tensor(float(config.init_logit_bias)))

    @property
    def dtype(self) -> torch.dtype:
        return self.text.token_embed.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.text.token_embed.weight.device

    def encode_image(self, images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Preprocessed images (B, 3, H, W) -> embeddings (B, embed_dim); moved to the model's device
        and dtype. Normalised embeddings are float32 (see :func:`unit_float32`)."""
        x = self.visual(images.to(device=self.device, dtype=self.dtype))
        return unit_float32(x) if normalize else x

    def encode_text(self, tokens: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Token ids (B, T) -> embeddings (B, embed_dim); moved to the model's device. Normalised
        embeddings are float32 (see :func:`unit_float32`)."""
        x = self.text(tokens.to(self.device))
        return unit_float32(x) if normalize else x

    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)``: clamped at 100 (OpenAI's cap) for softmax models; sigmoid-loss
        models use it as trained (SigLIP's reach ~117), as big_vision and transformers do."""
        scale = self.logit_scale.exp()
        return scale if self.logit_bias is not None else scale.clamp(max=MAX_LOGIT_SCALE)

    def logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Normalised features (N, E), (M, E) -> logits (N, M): ``scale * cos (+ logit_bias)``."""
        logits = self.scale() * image_features @ text_features.T  # (N, M)
        return logits + self.logit_bias if self.logit_bias is not None else logits

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> CLIPOutput:
        return CLIPOutput(self.encode_image(images), self.encode_text(tokens), self.scale(), self.logit_bias)

    @torch.no_grad()
    def scale_and_bias(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inference-time (scale, bias) as float32 CPU scalars: ``logits = scale · cos (+ bias)``, the
        scale treated exactly as in training (see :meth:`scale`)."""
        scale = self.logit_scale.detach().float().exp()
        if self.logit_bias is None:
            scale = scale.clamp(max=MAX_LOGIT_SCALE)
        scale = scale.cpu()
        bias = None if self.logit_bias is None else self.logit_bias.detach().float().cpu()
        return scale, bias

    @torch.no_grad()
    def reparameterize(self) -> CLIP:
        """Fold a FastViT image tower's and an MCT text tower's train-time branches into single
        convolutions (MobileCLIP's inference form: same outputs in eval mode, fewer and cheaper
        layers), in place; the config then says ``vision.reparameterized`` / ``text.reparameterized``.
        Other towers have nothing to fold. Returns ``self``."""
        if isinstance(self.visual, FastViT) and not self.config.vision.reparameterized:
            self.visual.reparameterize()
            vision = dataclasses.replace(self.config.vision, reparameterized=True)
            self.config = self.config.replace(vision=vision)
        if isinstance(self.text, MCTTextTower) and not self.config.text.reparameterized:
            self.text.reparameterize()
            self.config = self.config.replace(text=dataclasses.replace(self.config.text, reparameterized=True))
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in the backward pass instead of storing them."""
        self.text.transformer.grad_checkpointing = enable
        if isinstance(self.visual, VisionTransformer):
            self.visual.transformer.grad_checkpointing = enable
        else:
            self.visual.grad_checkpointing = enable
