"""2-D rotary position embedding (RoPE) for a ViT's patch grid, as EVA-02 and PE-Core use it.

Each attention head's ``head_width`` channels are taken as ``head_width / 2`` consecutive pairs
``(x[2i], x[2i + 1])``, each rotated by an angle. The first half of the pairs rotate with the first
grid coordinate, the second half with the other; within a half, pair ``j`` turns at frequency
``theta ** (-j / (head_width / 4))``. Only queries and keys are rotated, so attention scores depend
on the offset between two patches. Prefix tokens (a class token) are not rotated.
"""

from __future__ import annotations

import torch

from ..config import VisionConfig


class Rope2D:
    """The rotation angles of one tower's grid (no parameters: computed in float32 on demand)."""

    def __init__(self, cfg: VisionConfig, grid: int) -> None:
        self.grid = grid
        self.head_width = cfg.head_width
        self.axes = cfg.rope_axes
        self.offset = cfg.rope_offset
        self.ref_grid = cfg.rope_ref_grid
        self.theta = cfg.rope_theta

    def cos_sin(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (grid², head_width) in float32: the angle of channel ``c`` at patch
        ``p`` (row-major) is that of its pair ``c // 2``."""
        bands = self.head_width // 4
        freqs = self.theta ** -(torch.arange(bands, device=device, dtype=torch.float32) / bands)  # (bands,)
        pos = torch.arange(self.grid, device=device, dtype=torch.float32) + self.offset  # (grid,)
        if self.ref_grid:
            pos = pos / self.grid * self.ref_grid
        rows = pos[:, None].expand(self.grid, self.grid)  # (grid, grid): each patch's row coordinate
        cols = pos[None, :].expand(self.grid, self.grid)  # (grid, grid): its column coordinate
        first, second = (rows, cols) if self.axes == "hw" else (cols, rows)
        angles = torch.cat([first[..., None] * freqs, second[..., None] * freqs], dim=-1)  # (grid, grid, 2·bands)
        angles = angles.reshape(self.grid * self.grid, -1).repeat_interleave(2, dim=-1)  # (grid², head_width)
        return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, prefix: int) -> torch.Tensor:
    """Rotate the channel pairs of ``x`` (B, heads, T, head_width) at positions ``prefix..T-1`` by
    the angles of ``cos``/``sin`` (T - prefix, head_width); computed in float32, returned in x's dtype."""
    head, body = x[:, :, :prefix], x[:, :, prefix:].float()
    pairs = body.unflatten(-1, (-1, 2))  # (B, heads, N, head_width / 2, 2)
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)  # (B, heads, N, head_width)
    rotated = (body * cos + turned * sin).to(x.dtype)
    return torch.cat([head, rotated], dim=2) if prefix else rotated
