"""OpenAI's ModifiedResNet image tower: three-conv stem, anti-aliased bottlenecks, attention pooling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import VisionConfig


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> (avg-pool when striding) -> 1x1 (x4 channels), with an anti-aliased shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.downsample: nn.Module | None = None
        if stride > 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                nn.Conv2d(inplanes, out, 1, bias=False),
                nn.BatchNorm2d(out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(self.avgpool(y)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class AttentionPool2d(nn.Module):
    """Multi-head attention from the mean token over all spatial tokens, then a projection."""

    def __init__(self, spatial: int, dim: int, heads: int, out_dim: int) -> None:
        super().__init__()
        self.heads = heads
        self.pos_embed = nn.Parameter(torch.randn(spatial * spatial + 1, dim) / dim**0.5)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.c_proj = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # (B, 1 + HW, C)
        x = x + self.pos_embed.to(x.dtype)
        T, nh, hs = x.shape[1], self.heads, C // self.heads
        q = self.q_proj(x[:, :1]).view(B, 1, nh, hs).transpose(1, 2)  # (B, nh, 1, hs)
        k = self.k_proj(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.v_proj(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, nh, 1, hs)
        return self.c_proj(y.reshape(B, C))  # (B, out_dim)


def _lay_out_after_loading(module: ModifiedResNet, _incompatible_keys) -> None:
    module._lay_out_weights()


class ModifiedResNet(nn.Module):
    """The convolutions run in the channels-last layout by default (weights and activations): a
    training step of the quickstart's ResNet takes ~0.7x the time on a CPU (oneDNN), and cuDNN's fast
    kernels want it too. Loading a state dict keeps the layout (a hook); FSDP2, which shards only
    contiguous parameters, switches it off (:meth:`set_memory_format`)."""

    memory_format: torch.memory_format = torch.channels_last

    def __init__(self, cfg: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        assert isinstance(cfg.layers, tuple)
        w = cfg.width
        self.stem = nn.Sequential(
            nn.Conv2d(3, w // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(w // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(w // 2, w // 2, 3, padding=1, bias=False),
            nn.BatchNorm2d(w // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(w // 2, w, 3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
        )
        self._inplanes = w
        self.layer1 = self._make_stage(w, cfg.layers[0], stride=1)
        self.layer2 = self._make_stage(w * 2, cfg.layers[1], stride=2)
        self.layer3 = self._make_stage(w * 4, cfg.layers[2], stride=2)
        self.layer4 = self._make_stage(w * 8, cfg.layers[3], stride=2)
        self.attnpool = AttentionPool2d(cfg.image_size // 32, w * 32, cfg.heads, embed_dim)
        self.grad_checkpointing = False
        self._init_weights()
        self._lay_out_weights()
        self.register_load_state_dict_post_hook(_lay_out_after_loading)  # a function: the model still pickles

    def set_memory_format(self, memory_format: torch.memory_format) -> None:
        """Run the convolutions in ``memory_format`` (``torch.channels_last`` or
        ``torch.contiguous_format``); the outputs are the same up to rounding."""
        self.memory_format = memory_format
        self._lay_out_weights()

    def _lay_out_weights(self) -> None:
        """Conv weights in :attr:`memory_format`, in place: the parameters stay the same objects (an
        optimiser holds them), also after ``load_state_dict(..., assign=True)`` handed in others."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(memory_format=self.memory_format)

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        std = self.attnpool.c_proj.in_features**-0.5
        for lin in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(lin.weight, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                nn.init.zeros_(block.bn3.weight)  # each residual branch starts as identity

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> last-stage feature map (B, 32 * width, H / 32, W / 32)."""
        x = self.stem(images.to(self.stem[0].weight.dtype, memory_format=self.memory_format))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.attnpool(self.forward_features(images))
