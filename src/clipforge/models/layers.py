"""Transformer building blocks shared by the image and text towers, written as the textbook computes
them: every projection is a call of its ``nn.Linear``, so forward hooks, LoRA parametrizations and
swapped Linear modules all apply. The inference shortcuts (the last block computing only the rows a
tower reads, the MLP added into the residual stream in place) live apart, in :mod:`.fast_path`."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import Activation
from .rope import apply_rope

# PyTorch's LayerNorm kernels accumulate half-precision inputs in float32, so the plain module is
# accurate for bf16/fp16 weights; an explicit float32 round trip costs ~3x the time on CPU.
LayerNorm = nn.LayerNorm


class QuickGELU(nn.Module):
    """OpenAI's sigmoid approximation of GELU: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(act: Activation) -> nn.Module:
    if act == "quick_gelu":
        return QuickGELU()
    if act == "gelu":
        return nn.GELU()
    if act == "gelu_tanh":  # the tanh approximation (SigLIP's "gelu_pytorch_tanh")
        return nn.GELU(approximate="tanh")
    if act == "relu":  # M2M100 / NLLB text encoders
        return nn.ReLU()
    raise ValueError(f"unknown activation {act!r}")


Rope = tuple[torch.Tensor, torch.Tensor, int]  # (cos, sin) (N, head_width) and the unrotated prefix length


class Attention(nn.Module):
    """Multi-head attention with one fused q/k/v projection and SDPA: self-attention over ``x``, or,
    given ``context``, the queries of ``x`` attending over the keys and values of ``context``.
    ``sub_ln`` normalises the heads' concatenated output before the projection (EVA-02's sub-LN);
    ``rope`` rotates queries and keys (:mod:`.rope`)."""

    def __init__(self, dim: int, heads: int, *, sub_ln: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.norm = LayerNorm(dim, eps=eps) if sub_ln else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool = False,
        context: torch.Tensor | None = None,
        rope: Rope | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C); with ``context`` (B, S, C), keys and values come from it.
        ``mask`` (B, 1, 1, S) bool: the keys each sequence may attend to (False: padding)."""
        B, T, C = x.shape
        nh, hs = self.heads, C // self.heads
        qkv = self.qkv(x).view(B, T, 3, nh, hs)  # (B, T, 3, nh, hs)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hs)
        if context is not None:
            S = context.shape[1]
            kv = self.qkv(context).view(B, S, 3, nh, hs)  # (B, S, 3, nh, hs)
            _, k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, nh, S, hs)
        if rope is not None:
            cos, sin, prefix = rope
            q, k = apply_rope(q, cos, sin, prefix=prefix), apply_rope(k, cos, sin, prefix=prefix)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return self.proj(self.norm(y))


class MLP(nn.Module):
    """``fc2(act(fc1 x))``; ``sub_ln`` normalises the hidden activation before ``fc2``."""

    def __init__(self, dim: int, hidden: int, act: Activation, *, sub_ln: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = make_activation(act)
        self.norm = LayerNorm(hidden, eps=eps) if sub_ln else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.act(self.fc1(x))))


class SwiGLU(nn.Module):
    """SiLU-gated MLP: ``fc2(silu(fc1_gate x) * fc1 x)`` (EVA-02), ``sub_ln`` as in :class:`MLP`."""

    def __init__(self, dim: int, hidden: int, *, sub_ln: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        self.fc1_gate = nn.Linear(dim, hidden)
        self.fc1 = nn.Linear(dim, hidden)
        self.norm = LayerNorm(hidden, eps=eps) if sub_ln else nn.Identity()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(F.silu(self.fc1_gate(x)) * self.fc1(x)))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x)). ``mlp="swiglu"`` and
    ``sub_ln`` are EVA-02's options (see :class:`~clipforge.config.VisionConfig`)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        act: Activation,
        eps: float = 1e-5,
        *,
        mlp: str = "plain",
        sub_ln: bool = False,
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, sub_ln=sub_ln, eps=eps)
        self.norm2 = LayerNorm(dim, eps=eps)
        self.mlp: nn.Module = (
            SwiGLU(dim, hidden, sub_ln=sub_ln, eps=eps)
            if mlp == "swiglu"
            else MLP(dim, hidden, act, sub_ln=sub_ln, eps=eps)
        )

    def forward(
        self, x: torch.Tensor, causal: bool = False, rope: Rope | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        x = x + self.attn(self.norm1(x), causal=causal, rope=rope, mask=mask)
        return x + self.mlp(self.norm2(x))


class PostNormBlock(Block):
    """Post-norm residual block (BERT / RoBERTa): x = ln(x + attn(x)), then x = ln(x + mlp(x)). Same
    parameters as :class:`Block`; a class of its own so that the fast path (which computes pre-norm
    blocks) never takes it for one."""

    def forward(
        self, x: torch.Tensor, causal: bool = False, rope: Rope | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        x = self.norm1(x + self.attn(x, causal=causal, rope=rope, mask=mask))
        return self.norm2(x + self.mlp(x))


class Transformer(nn.Module):
    """A stack of residual blocks (:class:`Block` or :class:`PostNormBlock`, built by the tower with
    its options) with optional activation checkpointing."""

    def __init__(self, blocks: Iterable[Block]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.grad_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,
        *,
        causal: bool = False,
        rope: Rope | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); ``mask`` (B, 1, 1, T) bool, the keys each sequence attends to."""
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, rope, mask, use_reentrant=False)
            else:
                x = block(x, causal, rope, mask)
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
            for fc1 in (block.mlp.fc1, getattr(block.mlp, "fc1_gate", None)):
                if fc1 is not None:
                    nn.init.normal_(fc1.weight, std=fc_std)
                    nn.init.zeros_(fc1.bias)
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
        probe = self.probe.to(x.dtype).expand(x.shape[0], 1, -1)  # (B, 1, C)
        y = self.attn(probe, context=x)[:, 0]  # (B, C)
        return y + self.mlp(self.norm(y))
