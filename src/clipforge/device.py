"""Device and precision selection (CPU, CUDA) without import-time side effects."""

from __future__ import annotations

import functools
from pathlib import Path

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` picks CUDA when available, else CPU; anything else is passed to torch."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


def default_precision(device: torch.device) -> torch.dtype:
    """The fastest accurate inference dtype: bf16 on capable GPUs/CPUs, else fp32."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.bfloat16
    return torch.float32


def parse_precision(precision: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (or a dtype) -> a dtype."""
    if isinstance(precision, torch.dtype):
        return precision
    table = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if precision == "auto":
        return default_precision(device)
    if precision not in table:
        raise ValueError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    return table[precision]
