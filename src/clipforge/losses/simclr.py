"""NT-Xent, SimCLR's contrastive loss between two augmented views of each image (a pure function).

For ``n`` images with projected view features ``z1``, ``z2`` (``(n, d)``), the ``2n`` vectors are
L2-normalised and compared by cosine similarity divided by ``temperature``. Each vector's positive
is the other view of its image; its negatives are the other ``2n - 2`` vectors (itself excluded):

    loss = mean over the 2n anchors a of  -log( exp(sim(a, a+) / t) / sum_{b != a} exp(sim(a, b) / t) )

SLIP (Mu et al., 2022) adds it, weighted, to the CLIP loss of the same images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from clipforge.losses._inputs import check_features, full_precision


def nt_xent_loss(z1: Tensor, z2: Tensor, *, temperature: float = 0.1) -> Tensor:
    """NT-Xent of two ``(n, d)`` views (row ``i`` of each from image ``i``), ``n >= 2``; a 0-dim tensor."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z1, z2 = check_features(z1, z2)
    n = z1.shape[0]
    if n < 2:
        raise ValueError(f"NT-Xent needs at least 2 images (negatives), got {n}")
    with full_precision(z1):
        z = F.normalize(torch.cat([z1, z2]), dim=-1)  # (2n, d)
        sim = z @ z.T / temperature  # (2n, 2n)
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2n,)
        return F.cross_entropy(sim, targets)
