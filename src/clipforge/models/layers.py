"""Transformer building blocks shared by the image and text towers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import Activation

# PyTorch's LayerNorm kernels accumulate half-precision inputs in float32, so the plain module is
# accurate for bf16/fp16 weights; an explicit float32 round trip costs ~3x the time on CPU.
LayerNorm = nn.LayerNorm


class QuickGELU(nn.Module):
    """OpenAI's sigmoid approximation of GELU: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def activation_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)`` written into ``x`` (inference only: autograd needs the input kept)."""
    if isinstance(act, nn.GELU):
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    if isinstance(act, QuickGELU):
        return x.mul_(torch.mul(x, 1.702).sigmoid_())
    return act(x)


def make_activation(act: Activation) -> nn.Module:
    if act == "quick_gelu":
        return QuickGELU()
    if act == "gelu":
        return nn.GELU()
    if act == "gelu_tanh":  # the tanh approximation (SigLIP's "gelu_pytorch_tanh")
        return nn.GELU(approximate="tanh")
    raise ValueError(f"unknown activation {act!r}")


class Attention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection and SDPA."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, *, causal: bool = False, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C). With ``rows`` (B,), only position ``rows[b]`` of each sequence
        queries (the others still serve as keys and values): -> (B, C)."""
        B, T, C = x.shape
        nh, hs = self.heads, C // self.heads
        if rows is None:
            qkv = self.qkv(x).view(B, T, 3, nh, hs)  # (B, T, 3, nh, hs)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hs)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # (B, nh, T, hs)
            y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
            return self.proj(y)
        picked = x[torch.arange(B, device=x.device), rows]  # (B, C)
        mask = None
        if causal:  # row r sees keys 0..r
            mask = (torch.arange(T, device=x.device) <= rows[:, None]).view(B, 1, 1, T)
        return self.attend(picked, x, mask=mask)

    def attend(self, query: torch.Tensor, x: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        """One query token per sequence attending over ``x``: query (B, C), x (B, T, C) -> (B, C)."""
        B, T, C = x.shape
        nh, hs = self.heads, C // self.heads
        w, b = self.qkv.weight, self.qkv.bias  # q, k, v stacked along the output dim
        q = F.linear(query, w[:C], b[:C]).view(B, nh, 1, hs)  # (B, nh, 1, hs)
        kv = F.linear(x, w[C:], b[C:]).view(B, T, 2, nh, hs)  # (B, T, 2, nh, hs)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, 1, hs)
        return self.proj(y.reshape(B, C))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act: Activation) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_activation(act)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def add_to_(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``residual += self(x)`` with no temporary beyond the hidden activation (inference only).
        Fresh large buffers cost page faults on CPU, which in bf16 rival the matmuls' own time."""
        h = activation_(self.act, self.fc1(x))  # (..., hidden)
        out = residual.view(-1, residual.shape[-1])  # (N, C), shares residual's memory
        out.addmm_(h.view(-1, h.shape[-1]), self.fc2.weight.t())
        return residual.add_(self.fc2.bias)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, act: Activation, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), act)

    def forward(self, x: torch.Tensor, causal: bool = False, rows: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with ``rows`` (B,), only the output at ``rows[b]``: (B, C)."""
        a = self.attn(self.norm1(x), causal=causal, rows=rows)  # (B, T, C) or (B, C)
        if rows is not None:
            x = x[torch.arange(x.shape[0], device=x.device), rows]  # (B, C)
        x = x + a
        if _in_place_ok(x) and self.mlp.fc2.bias is not None and x.is_contiguous():
            return self.mlp.add_to_(x, self.norm2(x))  # x is ours (made just above): update it in place
        return x + self.mlp(self.norm2(x))


def _in_place_ok(x: torch.Tensor) -> bool:
    """Eager inference: no autograd graph to keep, no tracer that could mis-record in-place ops,
    and no autocast (in-place ops are not cast, so the dtypes would not match)."""
    return not (
        torch.is_grad_enabled()
        or torch.is_autocast_enabled(x.device.type)
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
    )


class Transformer(nn.Module):
    """A stack of pre-norm blocks with optional activation checkpointing."""

    def __init__(
        self, dim: int, layers: int, heads: int, mlp_ratio: float, act: Activation, eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, act, eps) for _ in range(layers))
        self.grad_checkpointing = False

    def forward(
        self, x: torch.Tensor, *, causal: bool = False, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C). With ``rows`` (B,), the caller reads only position ``rows[b]``
        of the output: the last block computes just those, and the result is (B, C)."""
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            block_rows = rows if i == last else None
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, block_rows, use_reentrant=False)
            else:
                x = block(x, causal, block_rows)
        if rows is not None and last < 0:  # no blocks: pick the rows here
            x = x[torch.arange(x.shape[0], device=x.device), rows]
        return x

    def init_weights(self) -> None:
        """OpenAI's initialisation: projections into the residual stream scaled by depth."""
        dim = self.blocks[0].attn.proj.in_features if len(self.blocks) else 1
        attn_std = dim**-0.5
        proj_std = dim**-0.5 * (2 * max(len(self.blocks), 1)) ** -0.5
        fc_std = (2 * dim) ** -0.5
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=attn_std)
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.normal_(block.attn.proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.proj.bias)
            nn.init.normal_(block.mlp.fc1.weight, std=fc_std)
            nn.init.zeros_(block.mlp.fc1.bias)
            nn.init.normal_(block.mlp.fc2.weight, std=proj_std)
            nn.init.zeros_(block.mlp.fc2.bias)


class AttentionPool(nn.Module):
    """Multi-head attention pooling (SigLIP's "MAP" head): a learned probe token attends over the
    tokens, then a pre-norm MLP is added to the result. (B, T, C) -> (B, C)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, act: Activation, eps: float = 1e-5) -> None:
        super().__init__()
        self.probe = nn.Parameter(dim**-0.5 * torch.randn(dim))
        self.attn = Attention(dim, heads)
        self.norm = LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, int(dim * mlp_ratio), act)
        nn.init.xavier_uniform_(self.attn.qkv.weight)
        nn.init.zeros_(self.attn.qkv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probe = self.probe.to(x.dtype).expand(x.shape[0], -1)  # (B, C)
        y = self.attn.attend(probe, x)  # (B, C)
        return y + self.mlp(self.norm(y))
