"""Text tower: OpenAI's causal Transformer read at the end token, or SigLIP's bidirectional one read
at the last position."""

from __future__ import annotations

import torch
from torch import nn

from ..config import Activation, TextConfig
from . import fast_path
from .layers import Block, LayerNorm, Transformer


class TextTransformer(nn.Module):
    """Token + position embedding, pre-norm blocks, final norm at the pooled position, projection.

    ``pool="eot"`` (OpenAI): the end-of-text token has the largest id in the vocabulary, so its
    position is ``argmax``. With causal attention, tokens after the longest text of a batch cannot
    change the result: with ``skip_padding`` (default) the batch is cut to that length first.
    ``pool="last"`` (SigLIP): texts are padded to the full context and the features are read at the
    last position, which with bidirectional attention depends on every token, padding included.
    ``pool="eos"`` (MetaCLIP 2): as ``"eot"``, at the first ``eos_id`` token (position 0 when a text
    has none, as transformers does).
    Either way only one row per text is read, so the last block computes only those rows (in
    :mod:`.fast_path`, where that is the plain computation).
    """

    def __init__(self, cfg: TextConfig, embed_dim: int, act: Activation, *, eps: float = 1e-5) -> None:
        super().__init__()
        self.context_length = cfg.context_length
        self.causal = cfg.causal
        self.pool = cfg.pool
        self.eos_id = cfg.eos_id
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos_embed = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(Block(cfg.width, cfg.heads, cfg.mlp_ratio, act, eps) for _ in range(cfg.layers))
        self.norm_final = LayerNorm(cfg.width, eps=eps)
        self.proj = nn.Parameter(torch.empty(cfg.width, embed_dim))
        self.proj_bias = nn.Parameter(torch.zeros(embed_dim)) if cfg.proj_bias else None
        self.skip_padding = True
        nn.init.normal_(self.token_embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.01)
        nn.init.normal_(self.proj, std=cfg.width**-0.5)
        self.transformer.init_weights()

    def read_rows(self, tokens: torch.Tensor) -> torch.Tensor:
        """The position each text's features are read at: token ids (B, T) -> (B,)."""
        if self.pool == "eot":
            return tokens.argmax(dim=-1)
        if self.pool == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)  # the first end token
        return torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T), T <= context_length -> unnormalised embeddings (B, embed_dim)."""
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"got {tokens.shape[1]} tokens, the model's context length is {self.context_length}")
        rows = self.read_rows(tokens)  # (B,)
        if self.pool != "last" and self.skip_padding and self.causal:
            tokens = tokens[:, : int(rows.max()) + 1]  # (B, T') with T' = longest real text
        T = tokens.shape[1]
        x = self.token_embed(tokens) + self.pos_embed[:T].to(self.token_embed.weight.dtype)  # (B, T, width)
        x = fast_path.run_transformer(self.transformer, x, causal=self.causal, rows=rows)  # (B, width)
        x = self.norm_final(x) @ self.proj  # (B, embed_dim)
        return x + self.proj_bias.to(x.dtype) if self.proj_bias is not None else x
