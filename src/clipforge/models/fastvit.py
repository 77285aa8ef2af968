"""MobileCLIP's FastViT / MCi image tower, with its train-time branches and their folding.

A structurally reparameterisable network: at training time several blocks sum parallel linear
branches (a k x k conv + BatchNorm, a 1 x 1 conv + BatchNorm, a BatchNorm "identity"), which at
inference are one k x k convolution with a bias. :meth:`FastViT.reparameterize` folds every such
block in place (outputs equal to float rounding; BatchNorm taken with its running statistics, as in
eval mode), and a tower built from a config with ``reparameterized=True`` has the folded layout.

Layout (sizes from :class:`~clipforge.config.VisionConfig`, ``kind="fastvit"``): a MobileOne stem
(3 x 3 stride 2, depthwise 3 x 3 stride 2, 1 x 1) down to 1/4; stages of RepMixer blocks (a
depthwise conv token mixer and a conv MLP) or, in the last ``attention_stages``, a conditional
positional encoding and self-attention blocks; each later stage entered by a stride-2 7 x 7
depthwise patch embedding; then a MobileOne conv with squeeze-excite to twice the width, global
average pooling and a biased projection. Parameter names follow timm's ``FastVit`` so that
open_clip's weights map by prefix (:mod:`clipforge.convert.open_clip_mobileclip`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import VisionConfig

Kernel = tuple[torch.Tensor, torch.Tensor]  # (weight (out, in / groups, k, k), bias (out,))


def _divisible(value: float, divisor: int) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``): timm's SE widths."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def _identity_kernel(channels: int, groups: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """The k x k grouped convolution that returns its input: (channels, channels / groups, k, k)."""
    per_group = channels // groups
    w = torch.zeros(channels, per_group, k, k, dtype=like.dtype, device=like.device)
    w[torch.arange(channels), torch.arange(channels) % per_group, k // 2, k // 2] = 1.0
    return w


def _fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> Kernel:
    """conv(weight, no bias) then eval-mode ``bn`` -> one conv: scale each output filter, shift the bias."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()  # (out,)
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _pad_to(w: torch.Tensor, k: int) -> torch.Tensor:
    """A smaller centred kernel zero-padded to k x k."""
    p = (k - w.shape[-1]) // 2
    return F.pad(w, [p, p, p, p])


def _folded_conv(cin: int, cout: int, k: int, stride: int, groups: int, kernel: Kernel | None = None) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=True)
    if kernel is not None:
        conv = conv.to(device=kernel[0].device, dtype=kernel[0].dtype)
        with torch.no_grad():
            conv.weight.copy_(kernel[0])
            conv.bias.copy_(kernel[1])
    return conv


class ConvBN(nn.Module):
    """A bias-free convolution (padding k // 2) followed by BatchNorm."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))

    def kernel(self) -> Kernel:
        return _fold_bn(self.conv.weight, self.bn)


class SqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(fc2(relu(fc1(mean_hw x))))`` with 1 x 1 convs."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)  # (B, C, 1, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class MobileOneBlock(nn.Module):
    """``act(se(sum of branches))``; branches: ``conv_kxk`` (k x k conv + BN), ``conv_scale`` (1 x 1
    conv + BN, when k > 1), ``identity`` (BN alone, when shapes allow); folded: ``reparam_conv``."""

    def __init__(
        self, cin: int, cout: int, k: int, *, stride: int = 1, groups: int = 1, se_hidden: int = 0,
        act: bool = True, scale_branch: bool = True, conv_branch: bool = True, folded: bool = False,
    ) -> None:  # fmt: skip
        super().__init__()
        self.shape = (cin, cout, k, stride, groups)
        self.se = SqueezeExcite(cout, se_hidden) if se_hidden else nn.Identity()
        self.act = nn.GELU() if act else nn.Identity()
        self.reparam_conv: nn.Conv2d | None = None
        self.identity: nn.BatchNorm2d | None = None
        self.conv_kxk: nn.ModuleList | None = None
        self.conv_scale: ConvBN | None = None
        if folded:
            self.reparam_conv = _folded_conv(cin, cout, k, stride, groups)
            return
        if cin == cout and stride == 1:
            self.identity = nn.BatchNorm2d(cin)
        if conv_branch:
            self.conv_kxk = nn.ModuleList([ConvBN(cin, cout, k, stride, groups)])
        if k > 1 and scale_branch:
            self.conv_scale = ConvBN(cin, cout, 1, stride, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.se(self.reparam_conv(x)))
        out = self.identity(x) if self.identity is not None else 0
        if self.conv_scale is not None:
            out = out + self.conv_scale(x)
        for branch in self.conv_kxk or ():
            out = out + branch(x)
        return self.act(self.se(out))

    def kernel(self) -> Kernel:
        """The one conv equal to the sum of the branches (eval-mode BatchNorm)."""
        if self.reparam_conv is not None:
            return self.reparam_conv.weight, self.reparam_conv.bias
        cin, cout, k, _, groups = self.shape
        parts: list[Kernel] = [b.kernel() for b in self.conv_kxk or ()]
        if self.conv_scale is not None:
            w, b = self.conv_scale.kernel()
            parts.append((_pad_to(w, k), b))
        if self.identity is not None:
            ref = self.identity.weight
            parts.append(_fold_bn(_identity_kernel(cin, groups, k, ref), self.identity))
        return sum(w for w, _ in parts), sum(b for _, b in parts)  # type: ignore[return-value]

    def fold(self) -> None:
        if self.reparam_conv is not None:
            return
        kernel = tuple(t.detach() for t in self.kernel())
        self.reparam_conv = _folded_conv(*self.shape, kernel=kernel)  # type: ignore[arg-type]
        self.identity = self.conv_kxk = self.conv_scale = None


class LargeKernelConv(nn.Module):
    """RepLKNet's k x k conv with a parallel small-kernel conv (each + BN), then SE and GELU; folded:
    ``reparam_conv``."""

    def __init__(self, cin: int, cout: int, k: int, small: int, *, stride: int, se_hidden: int, folded: bool) -> None:
        super().__init__()
        self.shape = (cin, cout, k, stride, cin)  # depthwise-grouped: groups = cin
        self.reparam_conv: nn.Conv2d | None = None
        self.large_conv: ConvBN | None = None
        self.small_conv: ConvBN | None = None
        if folded:
            self.reparam_conv = _folded_conv(*self.shape)
        else:
            self.large_conv = ConvBN(cin, cout, k, stride, cin)
            self.small_conv = ConvBN(cin, cout, small, stride, cin)
        self.se = SqueezeExcite(cout, se_hidden) if se_hidden else nn.Identity()
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            out = self.reparam_conv(x)
        else:
            assert self.large_conv is not None and self.small_conv is not None
            out = self.large_conv(x) + self.small_conv(x)
        return self.act(self.se(out))

    def fold(self) -> None:
        if self.reparam_conv is not None:
            return
        assert self.large_conv is not None and self.small_conv is not None
        (wl, bl), (ws, bs) = self.large_conv.kernel(), self.small_conv.kernel()
        kernel = ((wl + _pad_to(ws, wl.shape[-1])).detach(), (bl + bs).detach())
        self.reparam_conv = _folded_conv(*self.shape, kernel=kernel)
        self.large_conv = self.small_conv = None


class ChannelScale(nn.Module):
    """Learned per-channel scale of a residual branch (layer scale), ``gamma`` (C, 1, 1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(1e-5 * torch.ones(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class RepMixer(nn.Module):
    """Token mixing ``x + gamma * (mixer(x) - norm(x))``: ``mixer`` a depthwise MobileOne block, ``norm``
    its BatchNorm alone. All linear, so it folds into one depthwise conv (``reparam_conv``)."""

    def __init__(self, dim: int, k: int = 3, *, folded: bool) -> None:
        super().__init__()
        self.dim, self.k = dim, k
        self.reparam_conv: nn.Conv2d | None = None
        if folded:
            self.reparam_conv = _folded_conv(dim, dim, k, 1, dim)
            return
        self.norm = MobileOneBlock(dim, dim, k, groups=dim, act=False, scale_branch=False, conv_branch=False)
        self.mixer = MobileOneBlock(dim, dim, k, groups=dim, act=False)
        self.layer_scale = ChannelScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        return x + self.layer_scale(self.mixer(x) - self.norm(x))

    def fold(self) -> None:
        if self.reparam_conv is not None:
            return
        (wm, bm), (wn, bn) = self.mixer.kernel(), self.norm.kernel()
        gamma = self.layer_scale.gamma  # (dim, 1, 1)
        w = _identity_kernel(self.dim, self.dim, self.k, wm) + gamma[..., None] * (wm - wn)  # (dim, 1, k, k)
        b = gamma.reshape(-1) * (bm - bn)
        self.reparam_conv = _folded_conv(self.dim, self.dim, self.k, 1, self.dim, kernel=(w.detach(), b.detach()))
        del self.norm, self.mixer, self.layer_scale


class RepCPE(nn.Module):
    """Conditional positional encoding ``x + dwconv7x7(x)``; folded: the identity added to the kernel."""

    def __init__(self, dim: int, k: int = 7, *, folded: bool) -> None:
        super().__init__()
        self.dim, self.k = dim, k
        self.reparam_conv: nn.Conv2d | None = None
        self.pos_enc: nn.Conv2d | None = None
        if folded:
            self.reparam_conv = _folded_conv(dim, dim, k, 1, dim)
        else:
            self.pos_enc = _folded_conv(dim, dim, k, 1, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.reparam_conv(x)
        assert self.pos_enc is not None
        return x + self.pos_enc(x)

    def fold(self) -> None:
        if self.pos_enc is None:
            return
        w = _identity_kernel(self.dim, self.dim, self.k, self.pos_enc.weight) + self.pos_enc.weight
        kernel = (w.detach(), self.pos_enc.bias.detach())
        self.reparam_conv = _folded_conv(self.dim, self.dim, self.k, 1, self.dim, kernel=kernel)
        self.pos_enc = None


class ConvMlp(nn.Module):
    """Depthwise 7 x 7 conv + BN, then a 1 x 1 conv MLP (GELU)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv = ConvBN(dim, dim, 7, groups=dim)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.conv(x))))


class RepMixerBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, *, folded: bool) -> None:
        super().__init__()
        self.token_mixer = RepMixer(dim, folded=folded)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale = ChannelScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)
        return x + self.layer_scale(self.mlp(x))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvAttention(nn.Module):
    """Multi-head self-attention over the H x W positions of a (B, C, H, W) map (no qkv bias)."""

    def __init__(self, dim: int, head_width: int) -> None:
        super().__init__()
        self.heads = dim // head_width
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        t = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        q, k, v = self.qkv(t).view(B, H * W, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, HW, hw)
        t = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, H * W, C)  # (B, HW, C)
        return self.proj(t).transpose(1, 2).reshape(B, C, H, W)


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, head_width: int, norm: str) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(dim) if norm == "batch" else LayerNorm2d(dim, eps=1e-5)
        self.token_mixer = ConvAttention(dim, head_width)
        self.layer_scale_1 = ChannelScale(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))
        self.layer_scale_2 = ChannelScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.layer_scale_1(self.token_mixer(self.norm(x)))
        return x + self.layer_scale_2(self.mlp(x))


class PatchEmbed(nn.Module):
    """Stride-2 downsampling between stages: a 7 x 7 large-kernel conv (3 x 3 beside it), then a 1 x 1
    MobileOne block."""

    def __init__(self, cin: int, cout: int, *, se: bool, folded: bool) -> None:
        super().__init__()
        se_hidden = _divisible(cout * 0.25, 8) if se else 0
        self.proj = nn.Sequential(
            LargeKernelConv(cin, cout, 7, 3, stride=2, se_hidden=se_hidden, folded=folded),
            MobileOneBlock(cout, cout, 1, folded=folded),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Stage(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int, cfg: VisionConfig, *, attention: bool, se: bool) -> None:
        super().__init__()
        folded = cfg.reparameterized
        self.downsample = PatchEmbed(cin, cout, se=se, folded=folded) if cin != cout else nn.Identity()
        self.pos_emb = RepCPE(cout, folded=folded) if attention else nn.Identity()
        self.blocks = nn.Sequential(*[
            AttentionBlock(cout, cfg.mlp_ratio, cfg.head_width, cfg.attention_norm) if attention
            else RepMixerBlock(cout, cfg.mlp_ratio, folded=folded)
            for _ in range(depth)
        ])  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.pos_emb(self.downsample(x)))


class FastViT(nn.Module):
    """Images (B, 3, H, W) -> unnormalised embeddings (B, embed_dim); see the module docstring."""

    def __init__(self, cfg: VisionConfig, embed_dim: int) -> None:
        super().__init__()
        assert isinstance(cfg.layers, tuple)
        w, folded, n = cfg.width, cfg.reparameterized, len(cfg.layers)
        self.stem = nn.Sequential(
            MobileOneBlock(3, w, 3, stride=2, scale_branch=cfg.stem_scale_branch, folded=folded),
            MobileOneBlock(w, w, 3, stride=2, groups=w, scale_branch=cfg.stem_scale_branch, folded=folded),
            MobileOneBlock(w, w, 1, folded=folded),
        )
        widths = [w << i for i in range(n)]
        self.stages = nn.Sequential(*[
            Stage(widths[max(i - 1, 0)], widths[i], depth, cfg,
                  attention=i >= n - cfg.attention_stages, se=i >= n - cfg.se_stages)
            for i, depth in enumerate(cfg.layers)
        ])  # fmt: skip
        final = 2 * widths[-1]
        self.final_conv = MobileOneBlock(
            widths[-1], final, 3, groups=widths[-1], se_hidden=_divisible(final / 16, 1), folded=folded
        )
        self.proj = nn.Linear(final, embed_dim)
        self.grad_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, ConvMlp):
                for conv in (m.fc1, m.fc2):
                    nn.init.trunc_normal_(conv.weight, std=0.02)
                    nn.init.zeros_(conv.bias)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> final feature map (B, 2 * last width, H / 2^(n+1), W / 2^(n+1))."""
        x = self.stem(images)  # (B, width, H / 4, W / 4)
        for stage in self.stages:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(stage, x, use_reentrant=False)
            else:
                x = stage(x)
        return self.final_conv(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(images).mean((2, 3))  # (B, 2 * last width)
        return self.proj(x)  # (B, embed_dim)

    def blocks(self) -> list[nn.Module]:
        """Every RepMixer and attention block, in order (the units that LiT unlocking and FSDP count)."""
        return [block for stage in self.stages for block in stage.blocks]

    @property
    def reparameterized(self) -> bool:
        """Whether every reparameterisable block is in its folded, single-conv form."""
        return all(m.reparam_conv is not None for m in self.modules() if isinstance(m, _FOLDABLE))

    def reparameterize(self) -> None:
        """Fold every train-time branch into one convolution, in place (see the module docstring)."""
        for m in list(self.modules()):  # a RepMixer folds its two MobileOne blocks itself, first
            if isinstance(m, _FOLDABLE):
                m.fold()


_FOLDABLE = (MobileOneBlock, LargeKernelConv, RepMixer, RepCPE)
