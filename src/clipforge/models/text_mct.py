"""Apple's MCT text tower (MobileCLIP-S0, ``text.kind="mct"``): OpenAI's text Transformer between two
convolutional blocks that mix the tokens along the sequence, with train-time branches that fold.

Each convolutional block works on the tokens (B, T, width), convolving each channel along T:

- a RepMixer token mixer, ``x + gamma * (bn_c(dwconv(x)) + bn_s(x) - bn_n(x))``: a depthwise
  ``conv_kernel`` convolution with BatchNorm, a BatchNorm "identity" branch, minus a BatchNorm of the
  input. All linear, so with BatchNorm's running statistics it is one depthwise convolution with a
  bias (``reparam_conv``, what :meth:`MCTTextTower.reparameterize` leaves);
- a conv MLP added with a layer scale: depthwise ``conv_kernel`` convolution + BatchNorm, then a GELU
  MLP ``mlp_ratio`` wide applied to each token (Apple's 1 x 1 convolutions, here ``nn.Linear``).

Apple writes the convolutions as (1, k) Conv2d over a (B, C, 1, T) map; here their parameters are
Conv1d ones, (C, 1, k), the same numbers with the singleton axis dropped
(:mod:`clipforge.convert.apple_mobileclip`). They are computed as that (1, k) Conv2d on the
(B, C, 1, T) view of the (B, T, C) tokens, which PyTorch sees as channels-last: on CPU its depthwise
Conv1d on a (B, C, T) tensor took 8.7 ms for S0's (8, 512, 77) with 11 taps, this 0.39 ms (1 thread),
and the tokens never leave their (B, T, C) layout.
The convolutions zero-pad at the sequence ends, so the output depends on how far a text is padded:
texts are always run at the length given, never cut at the longest text. The tokenizer pads to the
full context, as Apple's does; a shorter input is computed at its own length (the position table's
first rows; Apple's code would interpolate its table to that length instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Activation, TextConfig
from .text import TextTransformer

Kernel = tuple[torch.Tensor, torch.Tensor]  # (weight (C, 1, k), bias (C,)): a depthwise Conv1d


def _bn_scale_shift(bn: nn.BatchNorm1d) -> Kernel:
    """Eval-mode BatchNorm as ``x * scale + shift``: ((C,), (C,))."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    return scale, bn.bias - bn.running_mean * scale


def _identity(channels: int, k: int, like: torch.Tensor) -> torch.Tensor:
    """The depthwise k-tap kernel that returns its input: (channels, 1, k)."""
    w = torch.zeros(channels, 1, k, dtype=like.dtype, device=like.device)
    w[:, 0, k // 2] = 1.0
    return w


def _depthwise(dim: int, k: int, *, bias: bool) -> nn.Conv1d:
    return nn.Conv1d(dim, dim, k, padding=k // 2, groups=dim, bias=bias)


def _along_tokens(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` (depthwise) along the sequence of tokens (B, T, C) -> (B, T, C); see the module docstring."""
    x4 = x.transpose(1, 2).unsqueeze(2)  # (B, C, 1, T), channels-last strides: no copy
    y = F.conv2d(x4, conv.weight.unsqueeze(2), conv.bias, padding=(0, conv.weight.shape[-1] // 2), groups=conv.groups)
    return y.squeeze(2).transpose(1, 2)  # (B, T, C)


def _norm_tokens(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the channels of tokens (B, T, C) -> (B, T, C)."""
    return bn(x.transpose(1, 2)).transpose(1, 2)


class SeqConvBN(nn.Module):
    """A depthwise, bias-free convolution along the sequence, then BatchNorm: (B, T, C) -> (B, T, C)."""

    def __init__(self, dim: int, k: int) -> None:
        super().__init__()
        self.conv = _depthwise(dim, k, bias=False)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _norm_tokens(self.bn, _along_tokens(self.conv, x))

    def kernel(self) -> Kernel:
        scale, shift = _bn_scale_shift(self.bn)
        return self.conv.weight * scale[:, None, None], shift


class SeqRepMixer(nn.Module):
    """``x + gamma * (conv(x) + skip(x) - norm(x))`` over (B, T, C): ``conv`` a :class:`SeqConvBN`,
    ``skip`` and ``norm`` BatchNorms. Folded: ``reparam_conv``, one biased depthwise convolution."""

    def __init__(self, dim: int, k: int, *, folded: bool) -> None:
        super().__init__()
        self.dim, self.k = dim, k
        self.reparam_conv: nn.Conv1d | None = None
        self.conv: SeqConvBN | None = None
        self.skip: nn.BatchNorm1d | None = None
        self.norm: nn.BatchNorm1d | None = None
        self.gamma: nn.Parameter | None = None
        if folded:
            self.reparam_conv = _depthwise(dim, k, bias=True)
            return
        self.conv = SeqConvBN(dim, k)
        self.skip = nn.BatchNorm1d(dim)
        self.norm = nn.BatchNorm1d(dim)
        self.gamma = nn.Parameter(1e-5 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return _along_tokens(self.reparam_conv, x)
        assert self.conv is not None and self.skip is not None and self.norm is not None and self.gamma is not None
        return x + self.gamma * (self.conv(x) + _norm_tokens(self.skip, x) - _norm_tokens(self.norm, x))

    def kernel(self) -> Kernel:
        """The one depthwise convolution equal to the block (eval-mode BatchNorm)."""
        if self.reparam_conv is not None:
            assert self.reparam_conv.bias is not None
            return self.reparam_conv.weight, self.reparam_conv.bias
        assert self.conv is not None and self.skip is not None and self.norm is not None and self.gamma is not None
        wc, bc = self.conv.kernel()  # (C, 1, k), (C,)
        s_skip, b_skip = _bn_scale_shift(self.skip)
        s_norm, b_norm = _bn_scale_shift(self.norm)
        eye = _identity(self.dim, self.k, wc)  # (C, 1, k)
        branches = wc + eye * (s_skip - s_norm)[:, None, None]
        return eye + self.gamma[:, None, None] * branches, self.gamma * (bc + b_skip - b_norm)

    def fold(self) -> None:
        if self.reparam_conv is not None:
            return
        w, b = (t.detach() for t in self.kernel())
        conv = _depthwise(self.dim, self.k, bias=True).to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        self.reparam_conv = conv
        self.conv = self.skip = self.norm = self.gamma = None


class SeqConvMlp(nn.Module):
    """Depthwise conv + BN along the sequence, then a per-token GELU MLP: (B, T, C) -> (B, T, C)."""

    def __init__(self, dim: int, k: int, hidden: int) -> None:
        super().__init__()
        self.conv = SeqConvBN(dim, k)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(self.conv(x))))


class ConvMixerBlock(nn.Module):
    """A RepMixer then a layer-scaled conv MLP: tokens (B, T, C) -> (B, T, C)."""

    def __init__(self, dim: int, k: int, mlp_ratio: float, *, folded: bool) -> None:
        super().__init__()
        self.token_mixer = SeqRepMixer(dim, k, folded=folded)
        self.mlp = SeqConvMlp(dim, k, int(dim * mlp_ratio))
        self.gamma = nn.Parameter(1e-5 * torch.ones(dim))
        nn.init.trunc_normal_(self.mlp.conv.conv.weight, std=0.02)
        for fc in (self.mlp.fc1, self.mlp.fc2):
            nn.init.trunc_normal_(fc.weight, std=0.02)
            nn.init.zeros_(fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.token_mixer(x)  # (B, T, C)
        return x + self.gamma * self.mlp(x)


class MCTTextTower(TextTransformer):
    """:class:`~.text.TextTransformer` with a :class:`ConvMixerBlock` before (``conv_in``) and after
    (``conv_out``) its Transformer blocks; see the module docstring and
    :class:`~clipforge.config.TextConfig` (``kind="mct"``)."""

    def __init__(self, cfg: TextConfig, embed_dim: int, act: Activation, *, eps: float = 1e-5) -> None:
        super().__init__(cfg, embed_dim, act, eps=eps)
        folded = cfg.reparameterized
        self.conv_in = ConvMixerBlock(cfg.width, cfg.conv_kernel, cfg.mlp_ratio, folded=folded)
        self.conv_out = ConvMixerBlock(cfg.width, cfg.conv_kernel, cfg.mlp_ratio, folded=folded)
        # ``skip_padding`` is inherited and ignored: the convolutions see the padding, so no batch is cut

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T), T <= context_length -> unnormalised embeddings (B, embed_dim)."""
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"got {tokens.shape[1]} tokens, the model's context length is {self.context_length}")
        rows = self.read_rows(tokens)  # (B,)
        T = tokens.shape[1]
        x = self.token_embed(tokens) + self.pos_embed[:T].to(self.token_embed.weight.dtype)  # (B, T, width)
        x = self.conv_in(x)
        x = self.conv_out(self.transformer(x, causal=self.causal))  # (B, T, width): every row feeds conv_out
        x = x[torch.arange(x.shape[0], device=x.device), rows]  # (B, width)
        x = self.norm_final(x) @ self.proj  # (B, embed_dim)
        return x + self.proj_bias.to(x.dtype) if self.proj_bias is not None else x

    @property
    def reparameterized(self) -> bool:
        return all(m.token_mixer.reparam_conv is not None for m in (self.conv_in, self.conv_out))

    def reparameterize(self) -> None:
        """Fold both RepMixers' train-time branches into one depthwise convolution each, in place."""
        self.conv_in.token_mixer.fold()
        self.conv_out.token_mixer.fold()
