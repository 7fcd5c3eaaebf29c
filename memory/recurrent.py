"""Recurrent memories: LSTM and GRU whose resets can land on any step of any env.

Acting (T = 1) steps the cell. On a GPU, a training unroll (T > 1) cuts every column at its resets into segments,
packs the segments as variable-length sequences and runs them through cuDNN's multi-step kernel in one call: a
segment starts from the stored state or, after a reset, from zeros, so the result equals stepping the cell with
resets, without a Python loop over time. The CPU keeps the step loop (PyTorch's CPU kernel for packed sequences of
unequal lengths is far slower than the loop), and so does CUDA-graph capture, which forbids the one host copy the
packing needs.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from memory.base import Memory, State, reset_state

# The cell's four weights are separate tensors, so cuDNN copies them into one buffer per call (cheap at these
# sizes) and would warn about it on every unroll.
warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")


class _RecurrentCell(Memory):
    """Shared step and unroll for single-layer recurrent cells; subclasses name the cell and its state tensors."""

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

    def packed_unroll(self, data: Tensor, batch_sizes: Tensor, state: State) -> tuple[Tensor, State]:
        """Runs packed sequences (``data [N, in]``, CPU ``batch_sizes``) from ``state`` ([S, hidden] per key)."""
        raise NotImplementedError

    def initial_state(self, batch_size: int, device=None) -> State:
        return {k: torch.zeros(batch_size, self.hidden_size, device=device) for k in self.state_keys}

    def forward(self, x, state, reset, context=None):
        self.check_inputs(x, state, reset)
        if x.shape[0] == 1 or not x.is_cuda or torch.cuda.is_current_stream_capturing():
            return self.step_loop(x, state, reset)
        return self.segment_unroll(x, state, reset)

    def step_loop(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        initial = self.initial_state(x.shape[1], x.device)
        outputs = []
        for t in range(x.shape[0]):  # x [T, B, in]
            state = reset_state(state, initial, reset[t])
            state = self.cell_step(x[t], state)
            outputs.append(state["h"])
        return torch.stack(outputs), state  # [T, B, hidden]

    def segment_unroll(self, x: Tensor, state: State, reset: Tensor) -> tuple[Tensor, State]:
        T, B = reset.shape
        seg = Segments(reset.cpu())
        order = seg.packed_order.to(x.device, non_blocking=True)   # [T*B] flat (t, b) index of each packed row
        start_col = seg.column.to(x.device, non_blocking=True)     # [S] column of each segment, longest first
        fresh = seg.fresh.to(x.device, non_blocking=True)          # [S] segment starts at a reset
        dtype = self.cell.weight_ih.dtype  # cuDNN's RNN takes one dtype, the weights', also under autocast
        start = {k: torch.where(fresh[:, None], 0.0, v[start_col]).to(dtype) for k, v in state.items()}
        with torch.autocast(x.device.type, enabled=False):
            out, final = self.packed_unroll(x.reshape(T * B, -1)[order].to(dtype), seg.batch_sizes, start)
        rows = seg.packed_row.to(x.device, non_blocking=True)      # [T*B] packed row of each flat (t, b)
        last = seg.last_of_column.to(x.device, non_blocking=True)  # [B] segment that ends each column
        return out[rows].view(T, B, -1), {k: v[last] for k, v in final.items()}


class Segments:
    """The reset-free pieces of ``reset [T, B]`` (on the CPU), sorted longest first as packed sequences need."""

    def __init__(self, reset: Tensor):
        T, B = reset.shape
        starts = reset.clone()
        starts[0] = True
        col, t0 = starts.t().nonzero(as_tuple=True)               # [S] by column, then time
        same_col_next = torch.zeros_like(col, dtype=torch.bool)
        same_col_next[:-1] = col[1:] == col[:-1]
        t1 = torch.full_like(t0, T)
        t1[:-1] = torch.where(same_col_next[:-1], t0[1:], T)
        length = t1 - t0
        by_length = torch.sort(length, descending=True, stable=True).indices
        self.column = col[by_length]
        self.fresh = reset[t0, col][by_length]
        length, t0 = length[by_length], t0[by_length]
        step = torch.arange(T)
        alive = step[:, None] < length[None, :]                   # [T, S] segment s has a step i
        self.batch_sizes = alive.sum(1)[: int(length[0])]
        flat = (t0[None, :] + step[:, None]) * B + self.column[None, :]
        self.packed_order = flat[alive]                           # row-major: step i, then segment: packed order
        self.packed_row = torch.empty_like(self.packed_order)
        self.packed_row[self.packed_order] = torch.arange(len(self.packed_order))  # its inverse
        rank = torch.empty_like(by_length)
        rank[by_length] = torch.arange(len(by_length))
        self.last_of_column = rank[~same_col_next]                # the last segment of each column, in order


class LSTM(_RecurrentCell):
    state_keys = ("h", "c")

    def make_cell(self, input_size, hidden_size):
        return nn.LSTMCell(input_size, hidden_size)

    def cell_step(self, x, state):
        h, c = self.cell(x, (state["h"], state["c"]))
        return {"h": h, "c": c}

    def packed_unroll(self, data, batch_sizes, state):
        weights = [self.cell.weight_ih, self.cell.weight_hh, self.cell.bias_ih, self.cell.bias_hh]
        hx = (state["h"][None], state["c"][None])
        out, h, c = torch.lstm(data, batch_sizes, hx, weights, True, 1, 0.0, self.training, False)
        return out, {"h": h[0], "c": c[0]}


class GRU(_RecurrentCell):
    state_keys = ("h",)

    def make_cell(self, input_size, hidden_size):
        return nn.GRUCell(input_size, hidden_size)

    def cell_step(self, x, state):
        return {"h": self.cell(x, state["h"])}

    def packed_unroll(self, data, batch_sizes, state):
        weights = [self.cell.weight_ih, self.cell.weight_hh, self.cell.bias_ih, self.cell.bias_hh]
        out, h = torch.gru(data, batch_sizes, state["h"][None], weights, True, 1, 0.0, self.training, False)
        return out, {"h": h[0]}
