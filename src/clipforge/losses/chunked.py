"""Exact contrastive-loss kernels whose memory grows linearly with the batch.

The similarity matrix ``S = scale * A @ B.T`` (``(n, m)``) is never stored. It is cut into
``chunk_size x chunk_size`` tiles; each tile is computed, used and dropped. Only ``O(n + m)``
statistics (and ``O((n + m) d)`` gradients) are kept, so peak memory is the inputs plus a few tiles.

* :func:`pairwise_logsumexp` (CLIP): forward is one pass, one matmul per tile, that updates both
  the per-row and the per-column log-sum-exp online (each tile reduced with its own per-row and
  per-column maxima, so large scales cannot overflow or underflow whole rows). Backward is one pass
  that recomputes each tile once and produces both feature gradients from it (three matmuls per
  tile). Four ``N^2 d`` matmuls in all, against six for a materialised two-direction loss.
* :func:`pairwise_sigmoid_loss` (SigLIP): the loss is a plain sum over tiles, so its gradient does
  not depend on any global statistic. The single pass computes the loss *and*, when a gradient will
  be needed, the gradients for a unit upstream gradient; backward only rescales them. Three
  matmuls per tile and no recomputation; memory stays linear (the gradients are input-sized).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor


def _blocks(size: int, chunk_size: int) -> Iterator[slice]:
    for start in range(0, size, chunk_size):
        yield slice(start, min(start + chunk_size, size))


class _PairwiseLogSumExp(torch.autograd.Function):
    """``(row_lse, col_lse)`` of ``S = scale * a @ b.T`` without storing ``S``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, scale: Tensor, chunk_size: int) -> tuple[Tensor, Tensor]:
        row_lse = a.new_empty(a.shape[0])  # (n,)
        col_lse = a.new_full((b.shape[0],), float("-inf"))  # (m,)
        for rows in _blocks(a.shape[0], chunk_size):
            a_rows = a[rows] * scale  # (ci, d): the scale folded into this block of rows
            row_acc = a.new_full((rows.stop - rows.start,), float("-inf"))  # (ci,)
            for cols in _blocks(b.shape[0], chunk_size):
                tile = a_rows @ b[cols].T  # (ci, cj)
                row_acc = torch.logaddexp(row_acc, torch.logsumexp(tile, dim=1))
                col_lse[cols] = torch.logaddexp(col_lse[cols], torch.logsumexp(tile, dim=0))
            row_lse[rows] = row_acc
        ctx.chunk_size = chunk_size
        ctx.save_for_backward(a, b, scale, row_lse, col_lse)
        return row_lse, col_lse

    @staticmethod
    def backward(ctx, g_row: Tensor, g_col: Tensor):
        a, b, scale, row_lse, col_lse = ctx.saved_tensors
        need_a, need_b, need_scale = ctx.needs_input_grad[:3]
        # d row_lse_i / d S_ij = softmax over the row, d col_lse_j / d S_ij = softmax over the column:
        # G_ij = g_row_i * exp(S_ij - row_lse_i) + g_col_j * exp(S_ij - col_lse_j).
        g_b = torch.zeros_like(a) if (need_a or need_scale) else None  # (n, d): sum_j G_ij b_j
        grad_b = torch.zeros_like(b) if need_b else None  # (m, d): scale * sum_i G_ij a_i
        for rows in _blocks(a.shape[0], ctx.chunk_size):
            a_rows = a[rows] * scale  # (ci, d)
            for cols in _blocks(b.shape[0], ctx.chunk_size):
                tile = a_rows @ b[cols].T  # (ci, cj), recomputed
                g = torch.sub(tile, row_lse[rows, None]).exp_().mul_(g_row[rows, None])  # (ci, cj)
                g.add_(tile.sub_(col_lse[None, cols]).exp_().mul_(g_col[None, cols]))  # G tile
                if g_b is not None:
                    g_b[rows].addmm_(g, b[cols])
                if grad_b is not None:
                    grad_b[cols].addmm_(g.T, a_rows)
        # dS/dscale = a @ b.T, so dL/dscale = sum_ij G_ij a_i.b_j = sum_i a_i . (G b)_i: no extra N^2 work.
        grad_scale = torch.dot(a.reshape(-1), g_b.reshape(-1)) if need_scale else None
        grad_a = g_b.mul_(scale) if need_a else None  # in place: no second (n, d) buffer
        return grad_a, grad_b, grad_scale, None


def pairwise_logsumexp(a: Tensor, b: Tensor, scale: Tensor, *, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Row- and column-wise log-sum-exp of ``scale * a @ b.T`` in linear memory.

    ``a``: ``(n, d)``, ``b``: ``(m, d)``, ``scale``: 0-dim. Returns ``(row_lse (n,), col_lse (m,))``,
    differentiable w.r.t. ``a``, ``b`` and ``scale``.
    """
    return _PairwiseLogSumExp.apply(a, b, scale, chunk_size)


class _PairwiseSigmoidLoss(torch.autograd.Function):
    """``sum_ij -log sigmoid(z_ij (scale * a_i.b_j + bias))`` with ``z = +1`` iff ``j == i + offset``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, offset: int, chunk_size: int,
                need_grad: bool) -> Tensor:
        total = a.new_zeros(())
        if need_grad:
            g_b = torch.zeros_like(a)  # (n, d): sum_j G_ij b_j
            grad_b = torch.zeros_like(b)  # (m, d)
            grad_bias = a.new_zeros(())
        for rows in _blocks(a.shape[0], chunk_size):
            a_rows = a[rows] * scale  # (ci, d)
            for cols in _blocks(b.shape[0], chunk_size):
                y = torch.addmm(bias, a_rows, b[cols].T)  # (ci, cj) logits x
                # Positives of this tile lie on its diagonal number k (an empty view when there are none).
                k = rows.start + offset - cols.start
                y.diagonal(k).neg_()  # y = -z * x: +x on negatives, -x on positives
                total += F.softplus(y).sum()  # -log sigmoid(z x) = softplus(-z x), exact for any sign
                if need_grad:
                    g = y.sigmoid_()  # d/dx softplus(-z x) = -z sigmoid(-z x): sigmoid(y) ...
                    g.diagonal(k).neg_()  # ... times -z = +1 on negatives, -1 on positives
                    g_b[rows].addmm_(g, b[cols])
                    grad_b[cols].addmm_(g.T, a_rows)
                    grad_bias += g.sum()
        if need_grad:
            grad_scale = torch.dot(a.reshape(-1), g_b.reshape(-1))
            ctx.save_for_backward(g_b.mul_(scale), grad_b, grad_scale, grad_bias)
        ctx.need_grad = need_grad
        return total

    @staticmethod
    def backward(ctx, grad_total: Tensor):
        if not ctx.need_grad:
            raise RuntimeError("pairwise_sigmoid_loss ran with grad mode off; it cannot backpropagate")
        grad_a, grad_b, grad_scale, grad_bias = ctx.saved_tensors
        return grad_total * grad_a, grad_total * grad_b, grad_total * grad_scale, grad_total * grad_bias, \
            None, None, None


def pairwise_sigmoid_loss(a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, *, positive_offset: int = 0,
                          chunk_size: int) -> Tensor:
    """Sum over all pairs of the SigLIP pair loss, in linear memory (not normalised).

    ``a``: ``(n, d)``, ``b``: ``(m, d)``, ``scale``/``bias``: 0-dim. Pair ``(i, j)`` is positive
    iff ``j == i + positive_offset``. Differentiable w.r.t. ``a``, ``b``, ``scale`` and ``bias``.
    """
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, scale, bias))
    return _PairwiseSigmoidLoss.apply(a, b, scale, bias, positive_offset, chunk_size, need_grad)
