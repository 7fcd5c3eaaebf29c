"""Counter-based random numbers, one independent stream per env copy.

Copy ``i`` of a batched env draws ``hash(seed_i, step_i, slot)``: its numbers depend only on its own seed, its own
step count and which draw of the step it is, never on the other copies. So N copies stepped together equal N single
copies seeded ``seed + i`` step for step, on any device.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF


def _mul32_(x: Tensor, c: int) -> Tensor:
    """x = (x * c) mod 2**32 in place, for int64 0 <= x < 2**32 and 0 <= c < 2**32. A factor c >= 2**31 is replaced
    by c - 2**32, which has the same low 32 bits in the product and keeps |x * c| < 2**63: no int64 overflow."""
    x *= c - 2**32 if c >= 2**31 else c
    return x.bitwise_and_(_MASK32)


def _fmix32_(x: Tensor) -> Tensor:
    """The murmur3 fmix32 finaliser, in place on int64 ``x`` holding 32-bit values."""
    x ^= x >> 16
    _mul32_(x, 0x85EBCA6B)
    x ^= x >> 13
    _mul32_(x, 0xC2B2AE35)
    x ^= x >> 16
    return x


def hash32(x: Tensor) -> Tensor:
    """fmix32 of the low 32 bits of each value of an int64 tensor (a new tensor)."""
    return _fmix32_(x & _MASK32)


class CopyRNG:
    """Per-copy random streams; ``seed [N]`` and ``step [N]`` are int64 tensors owned by the env."""

    SLOTS = 64  # draws per step and copy; envs number their draws below this

    def __init__(self, seed: Tensor):
        self.seed = seed
        self.seed_hash = hash32(seed)  # every draw starts from it; it changes only when the seeds do

    def reseed(self) -> None:
        """Refresh the seeds' hash after ``seed`` was rewritten; in place, so a captured CUDA graph sees it."""
        self.seed_hash.copy_(hash32(self.seed))

    def bits(self, step: Tensor, slot: int | Tensor) -> Tensor:
        """32-bit draws: ``[N]`` at one slot, or ``[N, k]`` at each of ``slot [k]`` (one hash call for all)."""
        if isinstance(slot, Tensor):
            counter, seed_hash = torch.add(slot, step.unsqueeze(1), alpha=self.SLOTS), self.seed_hash.unsqueeze(1)
        else:
            counter, seed_hash = step * self.SLOTS + slot, self.seed_hash
        x = _fmix32_(seed_hash ^ (counter & _MASK32))
        x ^= counter >> 32
        return _fmix32_(x)

    def uniform(self, step: Tensor, slot: int) -> Tensor:
        """Floats in [0, 1), one per copy."""
        return self.bits(step, slot).to(torch.float32) * (1.0 / 4294967296.0)

    def integers(self, step: Tensor, slot: int, high: int | Tensor) -> Tensor:
        """Integers in [0, high), one per copy; ``high`` may be per copy."""
        return (self.bits(step, slot) % high).to(torch.int64)
