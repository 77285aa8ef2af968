"""Text tower of the BERT / RoBERTa family (``text.kind="roberta"``): the multilingual XLM-RoBERTa
towers of open_clip's ``xlm-roberta-*`` models, in clipforge's own blocks (no ``transformers`` at
inference).

Embeddings: token + learned position + token type (one type, row 0), then a LayerNorm. Positions
follow RoBERTa: real tokens are numbered ``pad_id + 1, pad_id + 2, ...`` and every padding token
sits at ``pad_id``. The encoder is a stack of post-norm blocks (:class:`~.layers.PostNormBlock`,
exact GELU) whose attention ignores the padding keys. The features are pooled (mean over the real
tokens, the first token, or BERT's ``tanh`` pooler on it) and projected (linear, open_clip's MLP, or
nothing).
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import TextConfig
from .layers import LayerNorm, Transformer


class ProjectionMLP(nn.Module):
    """open_clip's ``proj_type="mlp"`` head: ``fc2(gelu(fc1 x))``, no biases, hidden ``(width + out) // 2``."""

    def __init__(self, width: int, out: int) -> None:
        super().__init__()
        hidden = (width + out) // 2
        self.fc1 = nn.Linear(width, hidden, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EncoderTextTower(nn.Module):
    """Bidirectional encoder text tower; see :class:`~clipforge.config.TextConfig` (``kind="roberta"``)."""

    def __init__(self, cfg: TextConfig, embed_dim: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        assert cfg.pad_id is not None  # TextConfig.validate: a roberta tower has one
        self.context_length = cfg.context_length
        self.pool = cfg.pool
        self.pad_id = cfg.pad_id
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.empty(cfg.max_positions, cfg.width))
        self.type_embed = nn.Parameter(torch.zeros(cfg.width))
        self.norm_embed = LayerNorm(cfg.width, eps=eps)
        # the blocks' activation is the exact GELU whatever the image tower uses (XLM-R's hidden_act)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, "gelu", eps, post_norm=True)
        self.pooler = nn.Linear(cfg.width, cfg.width) if cfg.pool == "cls" else None
        self.proj: nn.Parameter | None = None
        self.proj_mlp: ProjectionMLP | None = None
        if cfg.proj == "linear":
            self.proj = nn.Parameter(torch.empty(cfg.width, embed_dim))
            nn.init.normal_(self.proj, std=cfg.width**-0.5)
        elif cfg.proj == "mlp":
            self.proj_mlp = ProjectionMLP(cfg.width, embed_dim)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        self.transformer.init_weights()

    def positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """RoBERTa's position ids: (B, T) -> (B, T), ``pad_id + 1 + index among the real tokens``,
        ``pad_id`` at padding."""
        real = (tokens != self.pad_id).long()  # (B, T)
        return torch.cumsum(real, dim=1) * real + self.pad_id

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T), T <= context_length -> unnormalised embeddings (B, embed_dim)."""
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"got {tokens.shape[1]} tokens, the model's context length is {self.context_length}")
        real = tokens != self.pad_id  # (B, T)
        dtype = self.token_embed.weight.dtype
        x = self.token_embed(tokens) + self.type_embed.to(dtype)  # (B, T, width)
        x = self.norm_embed(x + self.pos_embed.to(dtype)[self.positions(tokens)])
        x = self.transformer(x, mask=real[:, None, None, :])  # (B, T, width); keys: (B, 1, 1, T)
        if self.pool == "mean":
            w = real.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
            x = (x * w).sum(dim=1) / w.sum(dim=1)  # (B, width)
        else:
            x = x[:, 0]  # (B, width)
            if self.pooler is not None:
                x = torch.tanh(self.pooler(x))
        if self.proj is not None:
            return x @ self.proj  # (B, embed_dim)
        return self.proj_mlp(x) if self.proj_mlp is not None else x
