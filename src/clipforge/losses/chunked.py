"""Exact contrastive-loss kernels whose memory grows linearly with the batch.

The similarity matrix ``S = scale * A @ B.T`` (``(n, m)``) is never stored. It is cut into
``chunk_size x chunk_size`` tiles; each tile is computed, used and dropped. Only ``O(n + m)``
statistics (and ``O((n + m) d)`` gradients) are kept, so peak memory is the inputs plus a few tiles.

* :func:`infonce_terms` (CLIP): forward is one pass, one matmul per tile, that updates both
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

from clipforge.losses._inputs import full_precision


def _blocks(size: int, chunk_size: int) -> Iterator[slice]:
    for start in range(0, size, chunk_size):
        yield slice(start, min(start + chunk_size, size))


def _positives(tile: Tensor, rows: slice, cols: slice, offset: int) -> tuple[Tensor, slice]:
    """The tile's positive pairs (column == row + offset) as a diagonal view, and their global rows."""
    k = rows.start + offset - cols.start
    diag = tile.diagonal(k)  # empty when the tile holds no positive pair
    first = rows.start + max(0, -k)
    return diag, slice(first, first + diag.shape[0])


class _InfoNCETerms(torch.autograd.Function):
    """Row and column log-sum-exp, and the positive logits, of ``S = scale * a @ b.T``, tile by tile."""

    # Autocast off inside: its bf16/fp16 addmm tiles would not mix with the float32 accumulators.
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, scale: Tensor, offset: int,
                chunk_size: int) -> tuple[Tensor, Tensor, Tensor]:
        with full_precision(a):
            return _InfoNCETerms._forward(ctx, a, b, scale, offset, chunk_size)

    @staticmethod
    def backward(ctx, g_row: Tensor, g_col: Tensor, g_pos: Tensor):
        with full_precision(g_row):
            return _InfoNCETerms._backward(ctx, g_row, g_col, g_pos)

    @staticmethod
    def _forward(ctx, a: Tensor, b: Tensor, scale: Tensor, offset: int,
                 chunk_size: int) -> tuple[Tensor, Tensor, Tensor]:
        row_lse = a.new_empty(a.shape[0])  # (n,)
        col_lse = a.new_full((b.shape[0],), float("-inf"))  # (m,)
        positives = a.new_empty(a.shape[0])  # (n,): S[i, i + offset]
        for rows in _blocks(a.shape[0], chunk_size):
            a_rows = a[rows] * scale  # (ci, d): the scale folded into this block of rows
            row_acc = a.new_full((rows.stop - rows.start,), float("-inf"))  # (ci,)
            for cols in _blocks(b.shape[0], chunk_size):
                tile = a_rows @ b[cols].T  # (ci, cj)
                row_acc = torch.logaddexp(row_acc, torch.logsumexp(tile, dim=1))
                col_lse[cols] = torch.logaddexp(col_lse[cols], torch.logsumexp(tile, dim=0))
                diag, diag_rows = _positives(tile, rows, cols, offset)
                positives[diag_rows] = diag
            row_lse[rows] = row_acc
        ctx.offset, ctx.chunk_size = offset, chunk_size
        ctx.save_for_backward(a, b, scale, row_lse, col_lse)
        return row_lse, col_lse, positives

    @staticmethod
    def _backward(ctx, g_row: Tensor, g_col: Tensor, g_pos: Tensor):
        a, b, scale, row_lse, col_lse = ctx.saved_tensors
        need_a, need_b, need_scale = ctx.needs_input_grad[:3]
        # d row_lse_i / d S_ij = softmax over the row, d col_lse_j / d S_ij = softmax over the column:
        # G_ij = g_row_i * exp(S_ij - row_lse_i) + g_col_j * exp(S_ij - col_lse_j) (+ g_pos_i if positive).
        g_b = torch.zeros_like(a) if (need_a or need_scale) else None  # (n, d): sum_j G_ij b_j
        grad_b = torch.zeros_like(b) if need_b else None  # (m, d): scale * sum_i G_ij a_i
        for rows in _blocks(a.shape[0], ctx.chunk_size):
            a_rows = a[rows] * scale  # (ci, d)
            for cols in _blocks(b.shape[0], ctx.chunk_size):
                tile = a_rows @ b[cols].T  # (ci, cj), recomputed
                g = torch.sub(tile, row_lse[rows, None]).exp_().mul_(g_row[rows, None])  # (ci, cj)
                g.add_(tile.sub_(col_lse[None, cols]).exp_().mul_(g_col[None, cols]))  # G tile
                diag, diag_rows = _positives(g, rows, cols, ctx.offset)
                diag.add_(g_pos[diag_rows])
                if g_b is not None:
                    g_b[rows].addmm_(g, b[cols])
                if grad_b is not None:
                    grad_b[cols].addmm_(g.T, a_rows)
        # dS/dscale = a @ b.T, so dL/dscale = sum_ij G_ij a_i.b_j = sum_i a_i . (G b)_i: no extra N^2 work.
        grad_scale = torch.dot(a.reshape(-1), g_b.reshape(-1)) if need_scale else None
        grad_a = g_b.mul_(scale) if need_a else None  # in place: no second (n, d) buffer
        return grad_a, grad_b, grad_scale, None, None


def infonce_terms(a: Tensor, b: Tensor, scale: Tensor, *, positive_offset: int = 0,
                  chunk_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """The three terms of InfoNCE over ``S = scale * a @ b.T``, in memory linear in ``n + m``.

    ``a``: ``(n, d)``, ``b``: ``(m, d)``, ``scale``: 0-dim; row ``i``'s positive is column
    ``i + positive_offset``. Returns ``row_lse (n,)`` (log-sum-exp over each row), ``col_lse (m,)``
    (over each column) and ``positives (n,)`` (``S[i, i + positive_offset]``), differentiable
    w.r.t. ``a``, ``b`` and ``scale``. Tiles are ``chunk_size x chunk_size``.
    """
    _check_offset(a.shape[0], b.shape[0], positive_offset)
    return _InfoNCETerms.apply(a, b, scale, positive_offset, chunk_size)


def _check_offset(n: int, m: int, offset: int) -> None:
    if offset < 0 or offset + n > m:
        raise ValueError(f"positive_offset {offset} puts the positives of {n} rows outside {m} columns")


class _PairwiseSigmoidLoss(torch.autograd.Function):
    """``sum_ij -log sigmoid(z_ij (scale * a_i.b_j + bias))`` with ``z = +1`` iff ``j == i + offset``."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, offset: int, chunk_size: int,
                need_grad: bool) -> Tensor:
        with full_precision(a):
            return _PairwiseSigmoidLoss._forward(ctx, a, b, scale, bias, offset, chunk_size, need_grad)

    @staticmethod
    def _forward(ctx, a: Tensor, b: Tensor, scale: Tensor, bias: Tensor, offset: int, chunk_size: int,
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
                _positives(y, rows, cols, offset)[0].neg_()  # y = -z * x: +x on negatives, -x on positives
                total += F.softplus(y).sum()  # -log sigmoid(z x) = softplus(-z x), exact for any sign
                if need_grad:
                    g = y.sigmoid_()  # d/dx softplus(-z x) = -z sigmoid(-z x): sigmoid(y) ...
                    _positives(g, rows, cols, offset)[0].neg_()  # ... times -z: -1 on positives
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
    _check_offset(a.shape[0], b.shape[0], positive_offset)
    need_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (a, b, scale, bias))
    return _PairwiseSigmoidLoss.apply(a, b, scale, bias, positive_offset, chunk_size, need_grad)
