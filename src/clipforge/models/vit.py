"""Vision Transformer image tower: OpenAI CLIP's layout (class token) or SigLIP's (attention pooling)."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Activation, VisionConfig
from . import fast_path
from .layers import AttentionPool, LayerNorm, Transformer


def drop_patches(tokens: torch.Tensor, *, keep: int, prefix: int) -> torch.Tensor:
    """FLIP's random patch dropout: tokens (B, prefix + N, W) -> (B, prefix + keep, W), keeping the
    ``prefix`` tokens (the class token) and ``keep`` of the ``N`` patch tokens, chosen at random
    per image from torch's RNG (in their original order)."""
    B, n = tokens.shape[0], tokens.shape[1] - prefix
    if not 1 <= keep <= n:
        raise ValueError(f"keep must be in [1, {n}], got {keep}")
    scores = torch.rand(B, n, device=tokens.device)  # (B, N)
    kept = scores.topk(keep, dim=1).indices.sort(dim=1).values + prefix  # (B, keep)
    head = torch.arange(prefix, device=tokens.device).expand(B, prefix)  # (B, prefix)
    index = torch.cat([head, kept], dim=1)  # (B, prefix + keep)
    return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[2]))  # (B, prefix + keep, W)


class VisionTransformer(nn.Module):
    """Patchify, add learned positions, pre-norm blocks, pool, project.

    ``pool="cls"``: a class token is prepended and read (its row alone in the last block);
    ``pool="map"``: every patch token is normalised and pooled by :class:`AttentionPool`.
    The blocks and the pool run through :mod:`.fast_path`, which computes the same with less work.
    """

    def __init__(self, cfg: VisionConfig, embed_dim: int, act: Activation, *, eps: float = 1e-5) -> None:
        super().__init__()
        assert isinstance(cfg.layers, int)
        width, patch = cfg.width, cfg.patch_size
        self.grid = cfg.image_size // patch
        self.pool = cfg.pool
        self.patch_dropout = cfg.patch_dropout
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=cfg.patch_bias)
        scale = width**-0.5
        n_prefix = 1 if cfg.pool == "cls" else 0
        if cfg.pool == "cls":
            self.cls_token = nn.Parameter(scale * torch.randn(width))
        self.pos_embed = nn.Parameter(scale * torch.randn(n_prefix + self.grid * self.grid, width))
        self.norm_pre = LayerNorm(width, eps=eps) if cfg.norm_pre else nn.Identity()
        self.transformer = Transformer(width, cfg.layers, cfg.heads, cfg.mlp_ratio, act, eps)
        self.norm_post = LayerNorm(width, eps=eps)
        if cfg.pool == "map":
            self.attn_pool = AttentionPool(width, cfg.heads, cfg.mlp_ratio, act, eps)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim)) if cfg.project else None
        self.transformer.init_weights()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> the transformer's input tokens (B, [1 +] grid², width); in training
        mode with ``patch_dropout``, (B, [1 +] keep, width)."""
        x = self.patch_embed(images)  # (B, width, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (B, grid², width)
        if self.pool == "map":
            x = x.contiguous()  # the fast path updates the residual stream in place through views
        else:
            cls = self.cls_token.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, width)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + grid², width)
        x = x + self.pos_embed.to(x.dtype)
        if self.training and self.patch_dropout > 0:
            prefix = 0 if self.pool == "map" else 1
            keep = max(1, round((1.0 - self.patch_dropout) * self.grid * self.grid))
            x = drop_patches(x, keep=keep, prefix=prefix)  # (B, prefix + keep, width)
            if self.pool == "map":
                x = x.contiguous()
        return self.norm_pre(x)

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> final-layer tokens (B, [1 +] grid², width), class token first."""
        return fast_path.run_transformer(self.transformer, self.embed(images))

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.proj if self.proj is not None else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> unnormalised embeddings (B, embed_dim). With a class token only its
        row is read, so the last block computes only that row."""
        x = self.embed(images)
        if self.pool == "map":
            x = self.norm_post(fast_path.run_transformer(self.transformer, x))  # (B, grid², width)
            return self._project(fast_path.run_attention_pool(self.attn_pool, x))  # (B, embed_dim)
        cls_rows = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # (B,)
        x = fast_path.run_transformer(self.transformer, x, rows=cls_rows)  # (B, width)
        return self._project(self.norm_post(x))

    def project_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Per-patch embeddings in the joint space, (B, grid, grid, embed_dim): for explanations.
        With attention pooling, each patch is pooled on its own (the probe attending to it alone)."""
        x = self.norm_post(self.forward_tokens(images))  # (B, [1 +] grid², width)
        B = x.shape[0]
        if self.pool == "map":
            pooled = fast_path.run_attention_pool(self.attn_pool, x.reshape(-1, 1, x.shape[-1]))  # (B·grid², width)
            x = pooled.view(B, -1, x.shape[-1])  # (B, grid², width)
        else:
            x = x[:, 1:]  # (B, grid², width)
        x = self._project(x)  # (B, grid², embed_dim)
        return x.view(B, self.grid, self.grid, -1)
