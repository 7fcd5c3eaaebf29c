"""The ``none`` memory: a pass-through that makes the agent feed-forward (the memoryless baseline)."""

from __future__ import annotations

from memory.base import Memory


class NoMemory(Memory):
    def __init__(self, input_size: int):
        super().__init__()
        self.input_size = input_size
        self.output_size = input_size

    def initial_state(self, batch_size, device=None):
        return {}

    def forward(self, x, state, reset, context=None):
        self.check_inputs(x, state, reset)
        return x, state
