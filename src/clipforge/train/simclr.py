"""SLIP's self-supervised image term: NT-Xent between two augmented views, through a small MLP head.

The head belongs to the training run, not to the saved CLIP model: it is trained with the model
(its own AdamW groups), kept in the run's checkpoints for a resume, and left out of the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..config import PreprocessConfig
from ..data.seeding import mix_seed
from ..data.views import two_views
from ..losses import nt_xent_loss
from .optim import param_groups


class SimCLRHead(nn.Module):
    """``embed_dim -> hidden -> out`` MLP (Linear, LayerNorm, GELU, Linear) on image embeddings."""

    def __init__(self, embed_dim: int, *, hidden: int | None = None, out: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 2 * embed_dim
        out = out or embed_dim
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SimCLRTerm:
    """``term(model, images, step) -> NT-Xent loss`` of two views of ``images`` (B, 3, H, W) through
    ``model.encode_image`` (unnormalised) and the head; the views are drawn from (seed, step)."""

    def __init__(
        self,
        head: SimCLRHead,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        temperature: float,
        seed: int,
    ) -> None:
        self.head, self.mean, self.std = head, tuple(mean), tuple(std)
        self.temperature, self.seed = temperature, seed

    @classmethod
    def for_run(
        cls,
        optimizer: torch.optim.Optimizer,
        *,
        embed_dim: int,
        preprocess: PreprocessConfig,
        weight_decay: float,
        temperature: float,
        seed: int,
        device: torch.device,
    ) -> SimCLRTerm:
        """A new head on ``device`` whose parameters join ``optimizer`` (its own AdamW groups)."""
        head = SimCLRHead(embed_dim).to(device)
        for group in param_groups(head, weight_decay=weight_decay):
            optimizer.add_param_group(group)
        return cls(head, mean=preprocess.mean, std=preprocess.std, temperature=temperature, seed=seed)

    def __call__(self, model: nn.Module, images: Tensor, step: int) -> Tensor:
        generator = torch.Generator(device=images.device).manual_seed(mix_seed(self.seed, step, 0x51C))
        v1, v2 = two_views(images, mean=self.mean, std=self.std, generator=generator)  # 2 x (B, 3, H, W)
        z = model.encode_image(torch.cat([v1, v2]), normalize=False)  # (2B, E)
        z1, z2 = self.head(z.float()).chunk(2)  # 2 x (B, out)
        return nt_xent_loss(z1, z2, temperature=self.temperature)
