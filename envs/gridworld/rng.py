"""Counter-based random numbers, one independent stream per env copy.

Copy ``i`` of a batched env draws ``hash(seed_i, step_i, slot)``: its numbers depend only on its own seed, its own
step count and which draw of the step it is, never on the other copies. So N copies stepped together equal N single
copies seeded ``seed + i`` step for step, on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2**32 for int64 x < 2**32 without int64 overflow: multiply by c's two 16-bit halves."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + ((x * hi) & 0xFFFF) * 65536) & _MASK32


def hash32(x: Tensor) -> Tensor:
    """A 32-bit integer finaliser (the murmur3 fmix32 constants) on int64 tensors holding 32-bit values."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x85EBCA6B)
    x = x ^ (x >> 13)
    x = _mul32(x, 0xC2B2AE35)
    return x ^ (x >> 16)


class CopyRNG:
    """Per-copy random streams; ``seed [N]`` and ``step [N]`` are int64 tensors owned by the env."""

    SLOTS = 64  # draws per step and copy; envs number their draws below this

    def __init__(self, seed: Tensor):
        self.seed = seed

    def bits(self, step: Tensor, slot: int, copies: Tensor | None = None) -> Tensor:
        seed = self.seed if copies is None else self.seed[copies]
        counter = step * self.SLOTS + slot
        return hash32(hash32(hash32(seed) ^ (counter & _MASK32)) ^ (counter >> 32))

    def uniform(self, step: Tensor, slot: int) -> Tensor:
        """Floats in [0, 1), one per copy."""
        return self.bits(step, slot).to(torch.float32) * (1.0 / 4294967296.0)

    def integers(self, step: Tensor, slot: int, high: int | Tensor) -> Tensor:
        """Integers in [0, high), one per copy; ``high`` may be per copy."""
        return (self.bits(step, slot) % high).to(torch.int64)
