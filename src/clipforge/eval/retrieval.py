"""Image-text retrieval recall@k in both directions, with several captions per image.

Text -> image: a caption's query is a hit at k when its own image is among the k most similar
images. Image -> text: an image's query is a hit at k when *any* of its captions is among the k
most similar captions. Ranks count the strictly better wrong answers, so ties favour the query.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def retrieval_metrics(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Sequence[int] | Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Recall@k both ways from normalised embeddings: ``image_emb (N, E)``, ``text_emb (M, E)`` and
    ``text_to_image[j]`` = the index of caption ``j``'s image.

    Returns ``{"text_to_image_R@1": ..., "image_to_text_R@1": ..., ...}`` (floats in [0, 1]) and the
    mean/median rank (1-based) of the correct answer both ways.
    """
    owner = torch.as_tensor(text_to_image, dtype=torch.long, device=image_emb.device)  # (M,)
    n, m = image_emb.shape[0], text_emb.shape[0]
    if owner.shape != (m,):
        raise ValueError(
            f"text_to_image must give one image index per caption ({m}), got shape {tuple(owner.shape)}"
        )
    if n == 0 or m == 0:
        raise ValueError("retrieval needs at least one image and one caption")
    if int(owner.min()) < 0 or int(owner.max()) >= n:
        raise ValueError(f"text_to_image holds an image index outside 0..{n - 1}")
    if torch.bincount(owner, minlength=n).min() == 0:
        raise ValueError("every image needs at least one caption")
    image_emb, text_emb = image_emb.float(), text_emb.float().to(image_emb.device)

    t2i_rank = torch.empty(m, dtype=torch.long, device=image_emb.device)
    for s in range(0, m, chunk_size):
        sim = text_emb[s : s + chunk_size] @ image_emb.T  # (c, N)
        own = owner[s : s + chunk_size]
        correct = sim.gather(1, own[:, None])  # (c, 1)
        t2i_rank[s : s + chunk_size] = (sim > correct).sum(dim=1)

    i2t_rank = torch.empty(n, dtype=torch.long, device=image_emb.device)
    for s in range(0, n, chunk_size):
        sim = image_emb[s : s + chunk_size] @ text_emb.T  # (c, M)
        mine = owner[None, :] == torch.arange(s, s + sim.shape[0], device=sim.device)[:, None]  # (c, M)
        best = sim.masked_fill(~mine, float("-inf")).max(dim=1, keepdim=True).values  # (c, 1)
        i2t_rank[s : s + chunk_size] = ((sim > best) & ~mine).sum(dim=1)

    out: dict[str, float] = {}
    for name, rank in (("text_to_image", t2i_rank), ("image_to_text", i2t_rank)):
        for k in ks:
            out[f"{name}_R@{k}"] = (rank < k).float().mean().item()
        out[f"{name}_mean_rank"] = (rank.float() + 1).mean().item()
        out[f"{name}_median_rank"] = (rank.float() + 1).median().item()
    return out
