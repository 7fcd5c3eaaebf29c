"""Memory modules behind one interface; ``memory.make(name, input_size, **config)`` builds any registered one."""

from __future__ import annotations

import inspect
from typing import Callable

from memory.base import Memory, State, cat_states, detach_state, index_state, reset_state, state_to
from memory.feedforward import NoMemory
from memory.hcam import HCAM
from memory.memo import MemoMemory
from memory.recurrent import GRU, LSTM
from memory.sat import SAT
from memory.transformer import TransformerMemory

REGISTRY: dict[str, Callable[..., Memory]] = {}


def register(name: str, builder: Callable[..., Memory]) -> None:
    """Make ``builder(input_size, **config)`` available as ``memory.make(name, ...)`` and in configs."""
    if name in REGISTRY:
        raise ValueError(f"memory {name!r} is already registered")
    REGISTRY[name] = builder


def names() -> list[str]:
    return sorted(REGISTRY)


def make(name: str, input_size: int, **config) -> Memory:
    if name not in REGISTRY:
        raise ValueError(f"memory.name: unknown memory {name!r}; accepted: {', '.join(names())}")
    builder = REGISTRY[name]
    params = inspect.signature(builder).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [p for p in params if p != "input_size"]
        for key in config:
            if key not in params:
                raise ValueError(f"memory.{key}: not an option of memory {name!r}; accepted: "
                                 f"{', '.join(accepted) or '(none)'}")
    return builder(input_size, **config)


register("none", NoMemory)
register("lstm", LSTM)
register("gru", GRU)
register("hcam", HCAM)
register("transformer", TransformerMemory)
register("memo", MemoMemory)
register("sat", SAT)

__all__ = ["Memory", "State", "make", "names", "register", "REGISTRY", "reset_state", "index_state",
           "cat_states", "detach_state", "state_to"]
