"""The memory contract every memory module obeys (see DESIGN.md, "The memory contract").

A memory maps a sequence of inputs ``x [T, B, input_size]`` to outputs ``[T, B, output_size]``, carrying a state
between calls. The state is a flat dict of batch-first tensors ``[B, ...]`` so rollouts can store it, index it by
env, concatenate it, checkpoint it and move it between devices. ``reset[t, b]`` marks that env ``b`` starts a new
episode at step ``t``: from that step on the env behaves as if it had started from ``initial_state``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = dict[str, Tensor]


class Memory(nn.Module):
    """Base class: subclasses set ``input_size``/``output_size`` and implement ``initial_state`` and ``forward``."""

    input_size: int
    output_size: int
    # Context keys ("place", "task") this memory reads; the agent checks they are provided.
    context_keys: tuple[str, ...] = ()

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        raise NotImplementedError

    def forward(self, x: Tensor, state: State, reset: Tensor,
                context: dict[str, Tensor] | None = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def refresh(self, state: State) -> State:
        """``state`` with whatever it caches from the weights (projected keys/values) recomputed with the current
        weights. PPO calls it on stored rollout-start states before replaying them and on its live state after each
        update. The default returns the state unchanged: right for memories that cache no projections (a recurrent
        hidden state cannot be recomputed without the inputs before it, which the state does not hold)."""
        return state

    def check_inputs(self, x: Tensor, state: State, reset: Tensor) -> None:
        """One-line errors for the shape mistakes callers make most."""
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(f"{type(self).__name__}: x must be [T, B, {self.input_size}], got {list(x.shape)}")
        if reset.shape != x.shape[:2]:
            raise ValueError(f"{type(self).__name__}: reset must be [T, B] = {list(x.shape[:2])}, "
                             f"got {list(reset.shape)}")
        for key, value in state.items():
            if value.shape[0] != x.shape[1]:
                raise ValueError(f"{type(self).__name__}: state[{key!r}] has batch {value.shape[0]}, "
                                 f"x has batch {x.shape[1]}")


def reset_state(state: State, initial: State, reset: Tensor) -> State:
    """Replace the state of envs where ``reset [B]`` is true by their initial state."""
    out = {}
    for key, value in state.items():
        mask = reset.view(-1, *([1] * (value.dim() - 1)))
        out[key] = torch.where(mask, initial[key], value)
    return out


# Helpers for code that stores, slices and moves states (rollouts, checkpoints).

def index_state(state: State, index) -> State:
    return {k: v[index] for k, v in state.items()}


def cat_states(states: list[State]) -> State:
    return {k: torch.cat([s[k] for s in states]) for k in states[0]}


def detach_state(state: State) -> State:
    return {k: v.detach() for k, v in state.items()}


def state_to(state: State, device) -> State:
    return {k: v.to(device) for k, v in state.items()}
