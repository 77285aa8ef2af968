"""Vision Transformer image tower: OpenAI CLIP's layout (class token) or SigLIP's (attention pooling),
with EVA-02's and PE-Core's options (2-D RoPE, SwiGLU, sub-LN, a class token beside attention pooling)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..config import Activation, VisionConfig
from . import fast_path
from .layers import AttentionPool, Block, LayerNorm, Rope, Transformer
from .rope import Rope2D


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


def conv_stem(width: int) -> nn.Sequential:
    """MobileCLIP-B's patch embedding: three convolutions with total stride 16 (see ``VisionConfig.stem``);
    ``{i}.conv`` / ``{i}.bn`` as timm names them."""

    def unit(cin: int, cout: int, k: int, last: bool) -> nn.Sequential:
        layers = {"conv": nn.Conv2d(cin, cout, k, k, bias=last)}
        if not last:
            layers.update(bn=nn.BatchNorm2d(cout), act=nn.GELU())
        return nn.Sequential(OrderedDict(layers))

    quarter = width // 4
    return nn.Sequential(unit(3, quarter, 4, False), unit(quarter, quarter, 2, False), unit(quarter, width, 2, True))


class VisionTransformer(nn.Module):
    """Patchify, add learned positions, pre-norm blocks, pool, project.

    ``pool="cls"``: a class token is prepended and read (its row alone in the last block);
    ``pool="map"``: every token (a class token too, where there is one) is normalised and pooled by
    :class:`AttentionPool`. The blocks and the pool run through :mod:`.fast_path`, which computes the
    same with less work.
    """

    def __init__(self, cfg: VisionConfig, embed_dim: int, act: Activation, *, eps: float = 1e-5) -> None:
        super().__init__()
        assert isinstance(cfg.layers, int)
        width, patch = cfg.width, cfg.patch_size
        eps = cfg.norm_eps if cfg.norm_eps is not None else eps
        self.grid = cfg.image_size // patch
        self.pool = cfg.pool
        self.patch_dropout = cfg.patch_dropout
        if cfg.stem == "conv":
            self.patch_embed: nn.Module = conv_stem(width)
        else:
            self.patch_embed = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=cfg.patch_bias)
        scale = width**-0.5
        self.n_prefix = 1 if cfg.has_class_token else 0
        if self.n_prefix:
            self.cls_token = nn.Parameter(scale * torch.randn(width))
        self.class_pos = cfg.class_pos
        positioned = self.n_prefix if cfg.class_pos else 0
        self.pos_embed = nn.Parameter(scale * torch.randn(positioned + self.grid * self.grid, width))
        self.rope = Rope2D(cfg, self.grid) if cfg.rope else None
        self.norm_pre = LayerNorm(width, eps=eps) if cfg.norm_pre else nn.Identity()
        self.transformer = Transformer(
            Block(width, cfg.heads, cfg.mlp_ratio, act, eps, mlp=cfg.mlp, sub_ln=cfg.sub_ln) for _ in range(cfg.layers)
        )
        self.norm_post = LayerNorm(width, eps=eps)
        if cfg.pool == "map":
            self.attn_pool = AttentionPool(width, cfg.pool_heads or cfg.heads, cfg.mlp_ratio, act, eps)
        self.proj = nn.Parameter(scale * torch.randn(width, embed_dim)) if cfg.project else None
        self.proj_bias = nn.Parameter(torch.zeros(embed_dim)) if cfg.proj_bias else None
        self.transformer.init_weights()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> the transformer's input tokens (B, [1 +] grid², width); in training
        mode with ``patch_dropout``, (B, [1 +] keep, width)."""
        x = self.patch_embed(images)  # (B, width, grid, grid)
        x = x.flatten(2).transpose(1, 2)  # (B, grid², width)
        if not self.class_pos:  # positions on the patches only (MobileCLIP-B; a class token follows)
            x = x + self.pos_embed.to(x.dtype)
        if self.n_prefix:
            cls = self.cls_token.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, width)
            x = torch.cat([cls, x], dim=1)  # (B, 1 + grid², width)
        else:
            x = x.contiguous()  # the fast path updates the residual stream in place through views
        if self.class_pos:
            x = x + self.pos_embed.to(x.dtype)
        if self.training and self.patch_dropout > 0:
            keep = max(1, round((1.0 - self.patch_dropout) * self.grid * self.grid))
            x = drop_patches(x, keep=keep, prefix=self.n_prefix)  # (B, [1 +] keep, width)
            if not self.n_prefix:
                x = x.contiguous()
        return self.norm_pre(x)

    def _rope(self, x: torch.Tensor) -> Rope | None:
        if self.rope is None:
            return None
        cos, sin = self.rope.cos_sin(x.device)  # each (grid², head_width)
        return cos, sin, self.n_prefix

    def forward_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> final-layer tokens (B, [1 +] grid², width), class token first."""
        x = self.embed(images)
        return fast_path.run_transformer(self.transformer, x, rope=self._rope(x))

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            return x
        x = x @ self.proj
        return x + self.proj_bias.to(x.dtype) if self.proj_bias is not None else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> unnormalised embeddings (B, embed_dim). With a class token read
        directly only its row is needed, so the last block computes only that row."""
        x = self.embed(images)
        rope = self._rope(x)
        if self.pool == "map":
            x = self.norm_post(fast_path.run_transformer(self.transformer, x, rope=rope))  # (B, [1 +] grid², width)
            return self._project(fast_path.run_attention_pool(self.attn_pool, x))  # (B, embed_dim)
        cls_rows = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # (B,)
        x = fast_path.run_transformer(self.transformer, x, rows=cls_rows, rope=rope)  # (B, width)
        return self._project(self.norm_post(x))

    def project_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Per-patch embeddings in the joint space, (B, grid, grid, embed_dim): for explanations.
        With attention pooling, each patch is pooled on its own (the probe attending to it alone)."""
        x = self.norm_post(self.forward_tokens(images))  # (B, [1 +] grid², width)
        B = x.shape[0]
        if self.pool == "map":
            x = x[:, self.n_prefix :]  # (B, grid², width)
            pooled = fast_path.run_attention_pool(self.attn_pool, x.reshape(-1, 1, x.shape[-1]))  # (B·grid², width)
            x = pooled.view(B, -1, x.shape[-1])  # (B, grid², width)
        else:
            x = x[:, 1:]  # (B, grid², width)
        x = self._project(x)  # (B, grid², embed_dim)
        return x.view(B, self.grid, self.grid, -1)
