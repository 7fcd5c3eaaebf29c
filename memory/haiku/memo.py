"""Haiku twin of the ``memo`` memory (``memory/memo.py``) and parameter converters both ways.

Same computation, state keys and parameter names (``<name>/summary_queries``, ``<name>/input``,
``<name>/layer_<i>/...``, ``<name>/final_norm``); ``position``/``length`` are int32 here, JAX's default integer.
Every step computes the summary pass and keeps it only where a segment ends (``jnp.where``, no host sync), as the
torch module does. ``refresh`` is torch-only (PPO). In training (``is_training=True``) segment lengths are drawn with
``hk.next_rng_key()``, so they differ from torch's draws; in eval both use ``segment_length``.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

from memory.haiku.transformer import TransformerLayer, _layer_norm, haiku_to_torch as _haiku_to_torch, sinusoid
from memory.haiku.transformer import torch_to_haiku as _torch_to_haiku
from memory.memo import MemoMemory as TorchMemoMemory, check_memo_config, length_range
from memory.transformer import check_config

NAME = "memo"


class MemoMemory(hk.Module):
    """``memory.memo.MemoMemory`` in Haiku: ``(x [T, B, in], state, reset [T, B], is_training) -> (out, state)``."""

    def __init__(self, input_size: int, width: int = 128, layers: int = 2, heads: int = 4, segment_length: int = 32,
                 summary_length: int = 8, max_summaries: int | None = None, mode: str = "memo",
                 truncate: bool = False, ff_size: int | None = None, name: str = NAME):
        super().__init__(name=name)
        max_summaries = check_memo_config(segment_length, summary_length, max_summaries, mode, truncate)
        self.ff_size = check_config(width, layers, heads, segment_length, "none", "pre", "sinusoidal", ff_size, 0)
        self.input_size, self.width, self.num_layers, self.heads = input_size, width, layers, heads
        self.segment_length, self.summary_length, self.truncate = segment_length, summary_length, truncate
        self.memory_size = max_summaries * summary_length
        self.segment_slots = length_range(segment_length)[1]

    def initial_state(self, batch_size: int) -> dict:
        n, c, s, d = self.num_layers, self.memory_size, self.segment_slots, self.width
        counter = jnp.zeros((batch_size,), jnp.int32)
        return {"summaries": jnp.zeros((batch_size, c, d), jnp.float32),
                "valid": jnp.zeros((batch_size, c), bool),
                "memory_k": jnp.zeros((batch_size, n, c, d), jnp.float32),
                "memory_v": jnp.zeros((batch_size, n, c, d), jnp.float32),
                "segment_x": jnp.zeros((batch_size, s, self.input_size), jnp.float32),
                "segment_k": jnp.zeros((batch_size, n, s, d), jnp.float32),
                "segment_v": jnp.zeros((batch_size, n, s, d), jnp.float32),
                "position": counter, "length": counter}

    def __call__(self, x, state, reset, is_training: bool = False):
        # Submodules are built once per call and reused at every step, so their names match torch's.
        self.input = hk.Linear(self.width, name="input")
        self.layers = [TransformerLayer(self.heads, self.ff_size, "none", "pre", 0.0, 0, name=f"layer_{i}")
                       for i in range(self.num_layers)]
        self.final_norm = _layer_norm("final_norm")
        self.queries = hk.get_parameter("summary_queries", [self.summary_length, self.width], x.dtype,
                                        init=hk.initializers.RandomNormal())

        def step(state, inputs):  # one time step: x [B, in], reset [B]
            x_t, reset_t = inputs
            state = {k: jnp.where(reset_t.reshape(-1, *[1] * (v.ndim - 1)), jnp.zeros_like(v), v)
                     for k, v in state.items()}
            out, state = self._step(x_t, self._start_segments(state, is_training))
            return state, out

        # A scan, not an unrolled loop: the compiled program does not grow with T.
        state, outputs = hk.scan(step, state, (x, reset))
        return outputs, state

    def _start_segments(self, state, is_training):
        low, high = length_range(self.segment_length)
        batch = state["length"].shape[0]
        if is_training and low < high:
            drawn = jax.random.randint(hk.next_rng_key(), (batch,), low, high + 1, jnp.int32)
        else:
            drawn = jnp.full((batch,), self.segment_length, jnp.int32)
        return {**state, "length": jnp.where(state["length"] == 0, drawn, state["length"]).astype(jnp.int32)}

    def _attend(self, i, h, state, mask):
        k = jnp.concatenate([state["memory_k"][:, i], state["segment_k"][:, i]], 1)
        v = jnp.concatenate([state["memory_v"][:, i], state["segment_v"][:, i]], 1)
        return self.layers[i](h, k, v, mask, None)

    def _step(self, x, state):
        pos, valid = state["position"], state["valid"]
        slots = jnp.arange(self.segment_slots)
        h = self.input(x)[:, None] + sinusoid((valid.sum(1) + pos)[:, None], self.width)
        mask = jnp.concatenate([valid, slots < pos[:, None], jnp.ones_like(valid[:, :1])], 1)[:, None]
        keys, values = [], []
        for i in range(self.num_layers):
            h, k, v = self._attend(i, h, state, mask)
            keys.append(k[:, -1])
            values.append(v[:, -1])
        at = (slots == pos[:, None])[:, None, :, None]
        state = {**state, "position": pos + 1,
                 "segment_x": jnp.where(at[:, 0], x[:, None], state["segment_x"]),
                 "segment_k": jnp.where(at, jnp.stack(keys, 1)[:, :, None], state["segment_k"]),
                 "segment_v": jnp.where(at, jnp.stack(values, 1)[:, :, None], state["segment_v"])}
        state = self._end_segments(state, state["position"] == state["length"])
        return self.final_norm(h[:, 0]), state

    def _summarise(self, state):
        valid, length = state["valid"], state["length"]
        batch, n = valid.shape[0], self.summary_length
        queries = jnp.arange(n)
        h = self.queries + sinusoid((valid.sum(1) + length)[:, None] + queries, self.width)
        seen = jnp.arange(self.segment_slots) < length[:, None]
        causal = jnp.broadcast_to(queries[:, None] >= queries, (batch, n, n))
        mask = jnp.concatenate([jnp.broadcast_to(valid[:, None], (batch, n, valid.shape[1])),
                                jnp.broadcast_to(seen[:, None], (batch, n, self.segment_slots)), causal], -1)
        for i in range(self.num_layers):
            h, _, _ = self._attend(i, h, state, mask)
        return self.final_norm(h)

    def _encode_memory(self, summaries, valid):
        batch, c = valid.shape
        h = summaries + sinusoid(jnp.clip(jnp.cumsum(valid, 1) - 1, 0), self.width)
        index = jnp.arange(c)
        mask = (index[:, None] >= index) & valid[:, None, :]
        none = jnp.zeros((batch, 0, self.width), summaries.dtype)
        keys, values = [], []
        for layer in self.layers:
            h, k, v = layer(h, none, none, mask, None)
            keys.append(k)
            values.append(v)
        keep = valid[:, None, :, None]
        return jnp.where(keep, jnp.stack(keys, 1), 0.0), jnp.where(keep, jnp.stack(values, 1), 0.0)

    def _end_segments(self, state, complete):
        summary = self._summarise(state)
        if self.truncate:
            summary = jax.lax.stop_gradient(summary)
        n = self.summary_length
        summaries = jnp.concatenate([state["summaries"][:, n:], summary], 1)
        valid = jnp.concatenate([state["valid"][:, n:], jnp.ones_like(state["valid"][:, :n])], 1)
        memory_k, memory_v = self._encode_memory(summaries, valid)
        done = complete.reshape(-1, 1, 1, 1)
        return {"summaries": jnp.where(done[..., 0], summaries, state["summaries"]),
                "valid": jnp.where(done[:, :, 0, 0], valid, state["valid"]),
                "memory_k": jnp.where(done, memory_k, state["memory_k"]),
                "memory_v": jnp.where(done, memory_v, state["memory_v"]),
                "segment_x": jnp.where(done[:, 0], 0.0, state["segment_x"]),
                "segment_k": jnp.where(done, 0.0, state["segment_k"]),
                "segment_v": jnp.where(done, 0.0, state["segment_v"]),
                "position": jnp.where(complete, 0, state["position"]),
                "length": jnp.where(complete, 0, state["length"])}


def torch_to_haiku(module: TorchMemoMemory, name: str = NAME) -> dict:
    """The torch module's parameters as a Haiku params dict for ``MemoMemory(name=name)``."""
    return _torch_to_haiku(module, name)


def haiku_to_torch(params: dict, module: TorchMemoMemory, name: str = NAME) -> None:
    """Copy a Haiku params dict into the torch module in place; structure and shapes must match."""
    _haiku_to_torch(params, module, name)
