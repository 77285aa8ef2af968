"""Causal Transformer text tower; features are read at the end-of-text token."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Activation, TextConfig
from .layers import LayerNorm, Transformer


class TextTransformer(nn.Module):
    """Token + position embedding, causal pre-norm blocks, final norm at the end token, projection.

    The end-of-text token has the largest id in the vocabulary, so its position is ``argmax``.
    Attention is causal and the features are read at that position, so tokens after the longest
    text of a batch cannot change the result: with ``skip_padding`` (default) the batch is cut to
    that length before encoding. For the same reason the last block computes only the end-token
    rows.
    """

    def __init__(self, cfg: TextConfig, embed_dim: int, act: Activation) -> None:
        super().__init__()
        self.context_length = cfg.context_length
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, act)
        self.norm_final = LayerNorm(cfg.width)
        self.proj = nn.Parameter(torch.empty(cfg.width, embed_dim))
        self.skip_padding = True
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        nn.init.normal_(self.proj, std=cfg.width**-0.5)
        self.transformer.init_weights()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T), T <= context_length -> unnormalised embeddings (B, embed_dim)."""
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"got {tokens.shape[1]} tokens, the model's context length is {self.context_length}")
        eot = tokens.argmax(dim=-1)  # (B,)
        if self.skip_padding:
            tokens = tokens[:, : int(eot.max()) + 1]  # (B, T') with T' = longest real text
        T = tokens.shape[1]
        x = self.token_embed(tokens) + self.pos_embed[:T].to(self.token_embed.weight.dtype)  # (B, T, width)
        x = self.transformer(x, causal=True, rows=eot)  # (B, width): the last block computes only the eot rows
        return self.norm_final(x) @ self.proj
