"""CLIP's symmetric InfoNCE loss, as a pure function.

For a batch of ``N`` pairs with features ``I``, ``T`` (``(N, d)``, used as given: normalise them
before calling if you want cosine similarities) and scale ``s`` (the *exponentiated* logit scale,
``1/tau``), the logits are ``S = s * I @ T.T`` and

    loss = 1/2 * ( mean_i CE(S[i, :], i) + mean_j CE(S[:, j], j) )
         = 1/2 * ( mean_i lse_j S_ij + mean_j lse_i S_ij ) - mean_i S_ii

(``lse`` is log-sum-exp). The positive logit enters through ``exp`` inside the normaliser and as
itself in the numerator: ``CE = -log(exp(S_ii) / sum_j exp(S_ij))``.
"""

from __future__ import annotations

from torch import Tensor

from clipforge.losses._inputs import check_chunk_size, check_features, check_scalar, full_precision
from clipforge.losses.chunked import infonce_terms
from clipforge.losses.distributed import all_gather_with_grad, gather_texts


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    *,
    chunk_size: int | None = None,
    distributed: bool = False,
) -> Tensor:
    """Symmetric InfoNCE (CLIP) loss of paired ``(n, d)`` features; returns a 0-dim tensor.

    Args:
        image_features, text_features: row ``i`` of each is a matching pair. Not re-normalised.
        logit_scale: the already-exponentiated scale ``1/tau`` (a tensor to learn it, or a float).
        chunk_size: ``None`` materialises the ``(n, n)`` logits (fastest for small batches). An int
            uses the exact tiled kernel (tiles of ``chunk_size x chunk_size``): same loss and
            gradients, memory linear in the batch.
        distributed: every rank passes its local ``n`` pairs (``n`` equal on all ranks). Text
            features are all-gathered with gradient; the rank's loss is the local loss of its own
            images against all texts and its own texts against all images (column log-sum-exp
            combined across ranks), so ``mean over ranks == single-process loss of the global
            batch``; see :mod:`clipforge.losses.distributed` for the DDP gradient convention.
    """
    check_chunk_size(chunk_size)
    image_features, text_features = check_features(image_features, text_features)
    logit_scale = check_scalar("logit_scale", logit_scale, like=image_features)
    n = image_features.shape[0]
    all_text, offset = gather_texts(image_features, text_features, distributed=distributed)  # (W*n, d)

    with full_precision(image_features):
        if chunk_size is None:
            logits = logit_scale * image_features @ all_text.T  # (n, W*n)
            row_lse = logits.logsumexp(dim=1)  # (n,): each local image against every text
            col_lse = logits.logsumexp(dim=0)  # (W*n,): every text against the local images
            positives = logit_scale * (image_features * text_features).sum(dim=-1)  # (n,): S[i, i + offset]
        else:
            row_lse, col_lse, positives = infonce_terms(image_features, all_text, logit_scale,
                                                        positive_offset=offset, chunk_size=chunk_size)

    if all_text is not text_features:
        # Text -> image needs each text against *all* images: combine the per-rank partial sums.
        col_lse = all_gather_with_grad(col_lse[None]).logsumexp(dim=0)  # (W, W*n) -> (W*n,)
        col_lse = col_lse[offset : offset + n]  # (n,): this rank's texts
    return 0.5 * (row_lse.mean() + col_lse.mean()) - positives.mean()
