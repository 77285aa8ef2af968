"""The towers' fast path: the same results as the plain layers (:mod:`.layers`), computed with less
work, used only where it is provably the same computation.

Two shortcuts, both here and nowhere else:

- **Rows only in the last block.** A tower reads one row per sequence of the last block's output
  (the class token, the end token, the last position), and attention pooling reads one query. Only
  that row's query, attention, projection and MLP are computed; every row still serves as a key and
  value. Exact under autograd too, so it also serves training.
- **The MLP added into the residual stream in place** (``addmm_`` on ``fc2.weight``, the activation
  written into its input). Fresh large buffers cost page faults on CPU, which in bf16 rival the
  matmuls' own time. Eager inference only: no autograd (it needs the inputs kept), no autocast
  (in-place ops are not autocast, so the dtypes would not match), no tracer or ONNX export.

Either shortcut reads ``linear.weight`` rather than calling the module, so it is taken only where
that is the module's whole computation: every module it passes by is of the exact class the plain
layers build (an ``nn.Linear`` may carry a weight parametrization such as LoRA's, which reading
``.weight`` applies), and none of them, nor the module called, has a hook, nor is any global module
hook set. Anything else (a forward hook, a swapped or wrapped Linear, an FSDP unit) runs the plain
modules. :func:`disabled` turns the fast path off, e.g. to compare against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _module
from torch.nn.utils import parametrize
from torch.utils.checkpoint import checkpoint

from .layers import MLP, Attention, AttentionPool, Block, QuickGELU, Rope, Transformer

_ENABLED: ContextVar[bool] = ContextVar("clipforge_fast_path", default=True)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the plain layers only (in this thread or task), e.g. to check the fast path against them."""
    token = _ENABLED.set(False)
    try:
        yield
    finally:
        _ENABLED.reset(token)


def run_transformer(
    transformer: Transformer,
    x: torch.Tensor,
    *,
    causal: bool = False,
    rows: torch.Tensor | None = None,
    rope: Rope | None = None,
) -> torch.Tensor:
    """``transformer(x, causal=causal, rope=rope)``: (B, T, C) -> (B, T, C); with ``rows`` (B,), only
    position ``rows[b]`` of each output sequence, (B, C). With rotary embeddings (``rope``) the MLP is
    still added in place, but the last block computes every row (the rows-only query does not rotate)."""
    if not (_ENABLED.get() and type(transformer) is Transformer and _unhooked(transformer)):
        return _pick(transformer(x, causal=causal, rope=rope), rows)
    last = len(transformer.blocks) - 1
    for i, block in enumerate(transformer.blocks):
        plain = _plain_block(block)
        if plain and i == last and rows is not None and rope is None:
            return _run(transformer, _block_rows, block, x, rows, causal)  # (B, C)
        if plain and _in_place_ok(x):
            x = _block_tokens(block, x, causal, rope)
        else:
            x = _run(transformer, block, x, causal, rope)
    return _pick(x, rows)


def run_attention_pool(pool: AttentionPool, x: torch.Tensor) -> torch.Tensor:
    """``pool(x)``: (B, T, C) -> (B, C)."""
    if not (_ENABLED.get() and type(pool) is AttentionPool and _plain_parts(pool, pool.attn, pool.mlp, pool.norm)):
        return pool(x)
    probe = pool.probe.to(x.dtype).expand(x.shape[0], -1)  # (B, C)
    y = _attend(pool.attn, probe, x)  # (B, C), a fresh tensor
    return _add_mlp(pool.mlp, y, pool.norm(y))


# -- the shortcuts ------------------------------------------------------------------------------


def _block_tokens(block: Block, x: torch.Tensor, causal: bool, rope: Rope | None = None) -> torch.Tensor:
    """``block(x, causal, rope)`` with the MLP added in place: (B, T, C) -> (B, T, C)."""
    x = x + block.attn(block.norm1(x), causal=causal, rope=rope)  # (B, T, C), a fresh tensor
    return _add_mlp(block.mlp, x, block.norm2(x))


def _block_rows(block: Block, x: torch.Tensor, rows: torch.Tensor, causal: bool) -> torch.Tensor:
    """``block(x, causal)[b, rows[b]]`` computing only those rows: x (B, T, C), rows (B,) -> (B, C)."""
    B, T, _ = x.shape
    picked = torch.arange(B, device=x.device), rows
    h = block.norm1(x)  # (B, T, C): every row is a key and a value
    mask = None
    if causal:  # row r sees keys 0..r
        mask = (torch.arange(T, device=x.device) <= rows[:, None]).view(B, 1, 1, T)
    y = x[picked] + _attend(block.attn, h[picked], h, mask=mask)  # (B, C), a fresh tensor
    return _add_mlp(block.mlp, y, block.norm2(y))


def _attend(attn: Attention, query: torch.Tensor, x: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``attn(query[:, None], context=x)[:, 0]`` with q projected for the query rows alone and k, v for
    ``x`` alone: query (B, C), x (B, T, C) -> (B, C)."""
    B, T, C = x.shape
    nh, hs = attn.heads, C // attn.heads
    w, b = attn.qkv.weight, attn.qkv.bias  # (3C, C), (3C,): q, k, v stacked along the output dim
    q = F.linear(query, w[:C], None if b is None else b[:C]).view(B, nh, 1, hs)  # (B, nh, 1, hs)
    kv = F.linear(x, w[C:], None if b is None else b[C:]).view(B, T, 2, nh, hs)  # (B, T, 2, nh, hs)
    k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, nh, T, hs)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, 1, hs)
    return attn.proj(y.reshape(B, C))  # (B, C)


def _add_mlp(mlp: MLP, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``residual + mlp(x)``; ``residual`` must be a fresh tensor of the caller's, as it may be
    updated in place (with no temporary beyond the hidden activation)."""
    fc2 = mlp.fc2
    if not (_in_place_ok(residual) and fc2.bias is not None and residual.is_contiguous()):
        return residual + mlp(x)
    weight = fc2.weight  # (C, hidden)
    if residual.dtype != weight.dtype:
        return residual + mlp(x)
    h = _activation_(mlp.act, mlp.fc1(x))  # (..., hidden)
    out = residual.view(-1, residual.shape[-1])  # (N, C), shares residual's memory
    out.addmm_(h.reshape(-1, h.shape[-1]), weight.t())  # (N, hidden) @ (hidden, C)
    return residual.add_(fc2.bias)


def _activation_(act: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``act(x)``, written into ``x`` for the activations the layers build."""
    if type(act) is nn.GELU:
        return torch.ops.aten.gelu_(x, approximate=act.approximate)
    if type(act) is QuickGELU:
        return x.mul_(torch.mul(x, 1.702).sigmoid_())
    return act(x)


def _run(transformer: Transformer, fn: Callable[..., torch.Tensor], *args: object) -> torch.Tensor:
    """``fn(*args)``, under activation checkpointing where the transformer asks for it."""
    if transformer.grad_checkpointing and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def _pick(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """(B, T, C) -> (B, C) at ``rows`` (B,); unchanged without rows."""
    return x if rows is None else x[torch.arange(x.shape[0], device=x.device), rows]


# -- when the shortcuts are the plain computation -----------------------------------------------


def _in_place_ok(x: torch.Tensor) -> bool:
    """Eager inference: no autograd graph to keep, no tracer that could mis-record in-place ops,
    and no autocast (in-place ops are not cast, so the dtypes would not match)."""
    return not (
        torch.is_grad_enabled()
        or torch.is_autocast_enabled(x.device.type)
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
    )


def _plain_block(block: nn.Module) -> bool:
    return type(block) is Block and _plain_parts(block, block.attn, block.mlp, block.norm1, block.norm2)


def _plain_parts(owner: nn.Module, attn: nn.Module, mlp: nn.Module, *norms: nn.Module) -> bool:
    """``owner``'s attention and MLP are the plain layers' own with plain Linears, and no module the
    shortcuts pass by (or call with other shapes) has a hook."""
    if not (type(attn) is Attention and type(mlp) is MLP):
        return False
    if type(attn.norm) is not nn.Identity or type(mlp.norm) is not nn.Identity:  # sub-LN: not in the shortcuts
        return False
    linears = (attn.qkv, attn.proj, mlp.fc1, mlp.fc2)
    return all(_plain_linear(m) for m in linears) and all(
        _unhooked(m) for m in (owner, attn, mlp, mlp.act, *norms, *linears)
    )


def _plain_linear(m: nn.Module) -> bool:
    """An ``nn.Linear``, possibly with a parametrized weight (its forward reads ``self.weight`` too)."""
    if type(m) is nn.Linear:
        return True
    return parametrize.is_parametrized(m) and type(m).__bases__ == (nn.Linear,) and type(m).forward is nn.Linear.forward


def _unhooked(m: nn.Module) -> bool:
    """No hook would run if ``m`` were called: none of its own, and no global module hook.

    The one place that reads torch's private hook tables (``Module._forward_hooks`` and the
    ``torch.nn.modules.module._global_*_hooks`` dicts), the same ones ``Module.__call__`` checks:
    torch has no public "does this module have hooks" query, and a shortcut that skipped a user's
    hook would change results silently. ``test_fast_path.py`` registers each kind of hook through
    the public ``register_*`` functions and checks that the plain modules then run."""
    return not (
        m._forward_hooks
        or m._forward_pre_hooks
        or m._backward_hooks
        or m._backward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )
