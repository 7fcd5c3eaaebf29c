"""Recurrent memories: LSTM and GRU cells unrolled step by step so resets can land on any step of any env."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memory.base import Memory, State, reset_state


class _RecurrentCell(Memory):
    """Shared unroll for single-layer recurrent cells; subclasses name the cell and its state tensors."""

    state_keys: tuple[str, ...]

    def __init__(self, input_size: int, hidden_size: int = 128):
        super().__init__()
        if hidden_size <= 0:
            raise ValueError(f"memory.hidden_size must be a positive integer, got {hidden_size}")
        self.input_size = input_size
        self.output_size = hidden_size
        self.hidden_size = hidden_size
        self.cell = self.make_cell(input_size, hidden_size)
        # Orthogonal recurrent weights and zero biases: the usual stable start for RL (as in CleanRL's PPO-LSTM).
        for name, param in self.cell.named_parameters():
            if "bias" in name:
                nn.init.zeros_(param)
            else:
                nn.init.orthogonal_(param)

    def make_cell(self, input_size: int, hidden_size: int) -> nn.Module:
        raise NotImplementedError

    def cell_step(self, x: Tensor, state: State) -> State:
        raise NotImplementedError

    def initial_state(self, batch_size: int, device=None) -> State:
        return {k: torch.zeros(batch_size, self.hidden_size, device=device) for k in self.state_keys}

    def forward(self, x, state, reset, context=None):
        self.check_inputs(x, state, reset)
        initial = self.initial_state(x.shape[1], x.device)
        outputs = []
        for t in range(x.shape[0]):  # x [T, B, in]
            state = reset_state(state, initial, reset[t])
            state = self.cell_step(x[t], state)
            outputs.append(state["h"])
        return torch.stack(outputs), state  # [T, B, hidden]


class LSTM(_RecurrentCell):
    state_keys = ("h", "c")

    def make_cell(self, input_size, hidden_size):
        return nn.LSTMCell(input_size, hidden_size)

    def cell_step(self, x, state):
        h, c = self.cell(x, (state["h"], state["c"]))
        return {"h": h, "c": c}


class GRU(_RecurrentCell):
    state_keys = ("h",)

    def make_cell(self, input_size, hidden_size):
        return nn.GRUCell(input_size, hidden_size)

    def cell_step(self, x, state):
        return {"h": self.cell(x, state["h"])}
