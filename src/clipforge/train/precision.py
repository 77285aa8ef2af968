"""Mixed-precision contexts for the training step (CPU and GPU)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import torch


def autocast_for(device: torch.device, dtype: torch.dtype) -> Callable[[], Any]:
    """A factory of autocast contexts (mixed precision; weights and optimiser stay float32).

    On CPU in half precision it also picks the plain ("math") attention kernel: the CPU flash
    kernel's backward is 2x slower than the math one at CLIP's short sequences (bf16, 65 tokens).
    """
    if dtype == torch.float32:
        return contextlib.nullcontext
    if device.type != "cpu":
        return functools.partial(torch.autocast, device_type=device.type, dtype=dtype)
    return functools.partial(_cpu_half_precision, dtype)


@contextlib.contextmanager
def _cpu_half_precision(dtype: torch.dtype):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with torch.autocast(device_type="cpu", dtype=dtype), sdpa_kernel([SDPBackend.MATH]):
        yield


def step_kernels_for(device: torch.device, dtype: torch.dtype) -> Callable[[], Any]:
    """A factory of contexts held for a whole step, backward included: on CPU in half precision,
    the math attention kernel, so that activations recomputed in the backward pass (gradient
    checkpointing) come from the same kernel as the forward pass's (else the recomputation saves
    different tensors and ``torch.utils.checkpoint`` refuses it)."""
    if dtype == torch.float32 or device.type != "cpu":
        return contextlib.nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return functools.partial(sdpa_kernel, [SDPBackend.MATH])
