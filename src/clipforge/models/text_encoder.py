"""Bidirectional encoder text towers (``text.kind`` ``"roberta"`` / ``"m2m100"``): the multilingual
XLM-RoBERTa towers of open_clip's ``xlm-roberta-*`` models and the M2M100 / NLLB encoder of NLLB-CLIP,
in clipforge's own blocks (no ``transformers`` at inference).

Both number positions as RoBERTa does: real tokens ``pad_id + 1, pad_id + 2, ...``, every padding
token at ``pad_id``; both mask the padding keys out of attention, pool (mean over the real tokens,
the first token, or BERT's ``tanh`` pooler on it) and project (linear, open_clip's MLP, or nothing).

- ``roberta``: token + learned position + token type (one type, row 0) embeddings, a LayerNorm,
  post-norm blocks (:class:`~.layers.PostNormBlock`) with exact GELU.
- ``m2m100``: token embeddings times ``sqrt(width)`` + fixed sinusoidal positions (``[sin, cos]`` of
  ``position * 10000 ** (-j / (width / 2 - 1))``, zeros at the padding position), pre-norm blocks
  with ReLU, a final LayerNorm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TextConfig
from .layers import Block, LayerNorm, PostNormBlock, Transformer


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


def sinusoidal_positions(positions: torch.Tensor, width: int, pad_id: int) -> torch.Tensor:
    """M2M100's fixed position embeddings: ids (B, T) -> (B, T, width) float32, zeros at ``pad_id``."""
    half = width // 2
    freq = torch.exp(torch.arange(half, device=positions.device).float() * -(math.log(10000) / (half - 1)))
    angles = positions.float().unsqueeze(-1) * freq  # (B, T, half)
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # (B, T, 2 * half)
    if width % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb.masked_fill((positions == pad_id).unsqueeze(-1), 0.0)


class EncoderTextTower(nn.Module):
    """Bidirectional encoder text tower; see :class:`~clipforge.config.TextConfig` (``kind`` ``"roberta"``
    or ``"m2m100"``)."""

    def __init__(self, cfg: TextConfig, embed_dim: int, *, eps: float = 1e-5) -> None:
        super().__init__()
        assert cfg.pad_id is not None  # TextConfig.validate: an encoder tower has one
        self.context_length = cfg.context_length
        self.pool = cfg.pool
        self.pad_id = cfg.pad_id
        self.roberta = cfg.kind == "roberta"
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.embed_scale = 1.0 if self.roberta else math.sqrt(cfg.width)
        self.pos_embed: nn.Parameter | None = None
        self.type_embed: nn.Parameter | None = None
        self.norm_embed: nn.Module | None = None
        self.norm_final: nn.Module | None = None
        if self.roberta:
            self.pos_embed = nn.Parameter(torch.empty(cfg.max_positions, cfg.width))
            self.type_embed = nn.Parameter(torch.zeros(cfg.width))
            self.norm_embed = LayerNorm(cfg.width, eps=eps)
            nn.init.normal_(self.pos_embed, std=0.02)
        else:
            self.norm_final = LayerNorm(cfg.width, eps=eps)
        # the blocks' activation is the text model's own (XLM-R: exact GELU, M2M100: ReLU), whatever the image tower's
        kind = PostNormBlock if self.roberta else Block
        act = "gelu" if self.roberta else "relu"
        self.transformer = Transformer(kind(cfg.width, cfg.heads, cfg.mlp_ratio, act, eps) for _ in range(cfg.layers))
        self.pooler = nn.Linear(cfg.width, cfg.width) if cfg.pool == "cls" else None
        self.proj: nn.Parameter | None = None
        self.proj_mlp: ProjectionMLP | None = None
        if cfg.proj == "linear":
            self.proj = nn.Parameter(torch.empty(cfg.width, embed_dim))
            nn.init.normal_(self.proj, std=cfg.width**-0.5)
        elif cfg.proj == "mlp":
            self.proj_mlp = ProjectionMLP(cfg.width, embed_dim)
        nn.init.normal_(self.token_embed.weight, std=0.02)
        self.transformer.init_weights()

    def positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """RoBERTa's position ids: (B, T) -> (B, T), ``pad_id + 1 + index among the real tokens``,
        ``pad_id`` at padding."""
        real = (tokens != self.pad_id).long()  # (B, T)
        return torch.cumsum(real, dim=1) * real + self.pad_id

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> the first block's input (B, T, width)."""
        dtype = self.token_embed.weight.dtype
        positions = self.positions(tokens)  # (B, T)
        if self.pos_embed is not None and self.type_embed is not None and self.norm_embed is not None:
            x = self.token_embed(tokens) + self.type_embed.to(dtype)  # (B, T, width)
            return self.norm_embed(x + self.pos_embed.to(dtype)[positions])
        x = self.token_embed(tokens) * self.embed_scale  # (B, T, width)
        return x + sinusoidal_positions(positions, x.shape[-1], self.pad_id).to(dtype)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T), T <= context_length -> unnormalised embeddings (B, embed_dim)."""
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"got {tokens.shape[1]} tokens, the model's context length is {self.context_length}")
        real = tokens != self.pad_id  # (B, T)
        x = self.transformer(self.embed(tokens), mask=real[:, None, None, :])  # (B, T, width); keys: (B, 1, 1, T)
        if self.norm_final is not None:
            x = self.norm_final(x)
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
