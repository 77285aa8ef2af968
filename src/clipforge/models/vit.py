"""Vision Transformer image tower (OpenAI CLIP layout)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Activation, VisionConfig
from .layers import LayerNorm, Transformer


class VisionTransformer(nn.Module):
    """Patchify, prepend a class token, add learned positions, pre-norm blocks, project the class token."""

    def __init__(self, cfg: VisionConfig, embed_dim: int, act: Activation) -> None:
        super().__init__()
        assert isinstance(cfg.layers, int)
        width, patch = cfg.width, cfg.patch_size
        self.grid = cfg.image_size // patch
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        scale = width**-0.5
        self.cls_token = nn.Parameter(scale * torch.randn(width))
        self.pos_embed = nn.Parameter(scale * torch.randn(self.grid * self.grid + 1, width))
        self.norm_pre = LayerNorm(width)
        self.transformer = Transformer(width, cfg.layers, cfg.heads, cfg.mlp_ratio, act)
        self.norm_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim))
        self.transformer.init_weights()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> the transformer's input tokens (B, 1 + grid², width)."""
        x = self.patch_embed(images)  # (B, width, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (B, grid², width)
        cls = self.cls_token.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, width)
        x = torch.cat([cls, x], dim=1) + self.pos_embed.to(x.dtype)  # (B, 1 + grid², width)
        return self.norm_pre(x)

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> final-layer tokens (B, 1 + grid², width), class token first."""
        return self.transformer(self.embed(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> unnormalised embeddings (B, embed_dim). Only the class token is
        read, so the last block computes only its row."""
        x = self.embed(images)
        cls_rows = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # (B,)
        x = self.transformer(x, rows=cls_rows)  # (B, width)
        return self.norm_post(x) @ self.proj

    def project_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Per-patch embeddings in the joint space, (B, grid, grid, embed_dim): for explanations."""
        x = self.forward_tokens(images)[:, 1:]  # (B, grid², width)
        x = self.norm_post(x) @ self.proj  # (B, grid², embed_dim)
        return x.view(x.shape[0], self.grid, self.grid, -1)
