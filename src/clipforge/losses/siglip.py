"""SigLIP's pairwise sigmoid loss (Zhai et al., 2023), as a pure function.

Every image-text pair is an independent binary problem: with logits ``x_ij = s * I_i.T_j + b``
and labels ``z_ij = +1`` for the matching pair and ``-1`` otherwise,

    loss = -1/N * sum_i sum_j log sigmoid(z_ij * x_ij)

normalised by the number of images as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clipforge.losses._inputs import check_chunk_size, check_features, check_scalar, full_precision
from clipforge.losses.chunked import pairwise_sigmoid_loss
from clipforge.losses.distributed import gather_texts


def siglip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float,
    *,
    chunk_size: int | None = None,
    distributed: bool = False,
) -> Tensor:
    """Pairwise sigmoid (SigLIP) loss of paired ``(n, d)`` features; returns a 0-dim tensor.

    Args:
        image_features, text_features: row ``i`` of each is a matching pair. Not re-normalised.
        logit_scale: the already-exponentiated scale (SigLIP initialises ``log 10``, so 10).
        logit_bias: the learnt bias (SigLIP initialises -10).
        chunk_size: ``None`` materialises the ``(n, n)`` logits; an int uses the exact tiled
            kernel (linear memory, same loss and gradients).
        distributed: every rank passes its local ``n`` pairs. Text features are all-gathered with
            gradient and the rank's loss is its images against all texts, divided by ``n``, so
            ``mean over ranks == single-process loss``; the gradient convention is the one of
            :mod:`clipforge.losses.distributed`.
    """
    check_chunk_size(chunk_size)
    image_features, text_features = check_features(image_features, text_features)
    logit_scale = check_scalar("logit_scale", logit_scale, like=image_features)
    logit_bias = check_scalar("logit_bias", logit_bias, like=image_features)
    n = image_features.shape[0]
    all_text, offset = gather_texts(image_features, text_features, distributed=distributed)  # (W*n, d)

    with full_precision(image_features):
        if chunk_size is None:
            logits = logit_scale * image_features @ all_text.T + logit_bias  # (n, W*n)
            labels = torch.full_like(logits, -1.0)  # (n, W*n)
            labels.diagonal(offset).fill_(1.0)
            total = -F.logsigmoid(labels * logits).sum()
        else:
            total = pairwise_sigmoid_loss(image_features, all_text, logit_scale, logit_bias,
                                          positive_offset=offset, chunk_size=chunk_size)
    return total / n
