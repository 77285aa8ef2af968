"""Device and precision selection (CPU, CUDA) without import-time side effects."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` picks CUDA when available (GPU ``$LOCAL_RANK`` in a process torchrun
    started), else CPU; anything else is passed to torch."""
    if device is None or device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if "LOCAL_RANK" in os.environ:
            return torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        return torch.device("cuda")
    return torch.device(device)


#: Overrides the CPU probe: ``1`` acts as on an AVX512-BF16 machine (``auto`` = bf16), ``0`` as on
#: an AVX2-only one (``auto`` = fp32). The test suite forces both ways through it.
CPU_BF16_ENV = "CLIPFORGE_CPU_BF16"


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), or when
    ``$CLIPFORGE_CPU_BF16`` says so (``1``/``0`` force the answer either way)."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    if forced:
        raise ValueError(f"${CPU_BF16_ENV} must be 1 or 0, got {forced!r}")
    return _cpuinfo_has_fast_bf16()


@functools.lru_cache(maxsize=1)
def _cpuinfo_has_fast_bf16() -> bool:
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


_PRECISIONS = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
               "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def parse_precision(precision: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (or a dtype) -> a dtype."""
    if isinstance(precision, torch.dtype):
        return precision
    if precision == "auto":
        return default_precision(device)
    if precision not in _PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    return _PRECISIONS[precision]


def precision_name(dtype: torch.dtype) -> str:
    """A dtype as the precision name the commands take: ``torch.bfloat16`` -> ``"bf16"``."""
    if dtype not in _NAMES:
        raise ValueError(f"no precision name for {dtype}")
    return _NAMES[dtype]
