"""CLIP's symmetric InfoNCE loss, as a pure function.

For a batch of ``N`` pairs with features ``I``, ``T`` (``(N, d)``, used as given: normalise them
before calling if you want cosine similarities) and scale ``s`` (the *exponentiated* logit scale,
``1/tau``), the logits are ``S = s * I @ T.T`` and

    loss = 1/2 * ( mean_i CE(S[i, :], i) + mean_j CE(S[:, j], j) )
         = 1/2 * ( mean_i lse_j S_ij + mean_j lse_i S_ij ) - mean_i S_ii

(``lse`` is log-sum-exp). The positive logit enters through ``exp`` inside the normaliser and as
itself in the numerator: ``CE = -log(exp(S_ii) / sum_j exp(S_ij))``.

Label smoothing ``eps`` replaces each one-hot target by ``(1 - eps) * onehot + eps / N`` (the
convention of ``torch.nn.functional.cross_entropy(label_smoothing=eps)``), which gives
``CE_eps(i) = lse_j S_ij - (1 - eps) S_ii - eps * mean_j S_ij``. The mean of a row of logits is
``s * I_i . mean(T)``, so the smoothed loss needs only the feature means: no logits beyond those
the plain loss uses, the same in the tiled and the distributed kernels.
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
    label_smoothing: float = 0.0,
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
        label_smoothing: ``eps`` in [0, 1): smoothed targets in both directions (see above).
    """
    check_chunk_size(chunk_size)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
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
    loss = 0.5 * (row_lse.mean() + col_lse.mean()) - positives.mean()
    if label_smoothing:
        gathered = all_text is not text_features
        mean_logit = _mean_logit(image_features, text_features, all_text, logit_scale, gathered=gathered)
        loss = loss + label_smoothing * (positives.mean() - mean_logit)
    return loss


def _mean_logit(image_features: Tensor, text_features: Tensor, all_text: Tensor, logit_scale: Tensor,
                *, gathered: bool) -> Tensor:
    """``0.5 * (mean_i mean_j S_ij over this rank's rows + mean_j mean_i S_ij over its columns)``:
    the mean of the image->text rows (local images, all texts) and of the text->image columns
    (local texts, all images), from the feature means alone."""
    with full_precision(image_features):
        image_mean = image_features.mean(dim=0)  # (d,)
        all_image_mean = all_gather_with_grad(image_mean[None]).mean(dim=0) if gathered else image_mean  # (d,)
        rows = logit_scale * image_mean @ all_text.mean(dim=0)
        cols = logit_scale * all_image_mean @ text_features.mean(dim=0)
    return 0.5 * (rows + cols)
