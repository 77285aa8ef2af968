"""Deterministic seeds from a few integers, and seeding every RNG a transform may draw from."""

from __future__ import annotations

import random

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit hash (splitmix64 chain) of a few integers: the same in every process and run."""
    h = 0
    for p in parts:
        x = ((h ^ (int(p) & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
        h = x ^ (x >> 31)
    return h >> 1


def seed_all(*parts: int) -> None:
    """Seed torch's CPU generator, numpy and ``random`` from ``mix_seed(*parts)``, so that a sample's
    augmentation depends on the sample's identity only, not on what the process drew before it.

    Called once per sample: ``torch.manual_seed`` would also queue a seeding of every accelerator
    backend, recording a stack trace each time (~120 us, a quarter of a shapes sample's cost), for
    RNGs a data pipeline on the CPU never draws from."""
    s = mix_seed(*parts)
    torch.default_generator.manual_seed(s)
    np.random.seed(s % (1 << 32))
    random.seed(s)
