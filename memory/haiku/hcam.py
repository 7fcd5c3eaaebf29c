"""Haiku twins of memory/hcam.py: the HCAM read and the ``hcam`` memory, with the PyTorch modules' parameter names.

``to_haiku_params(torch_module)`` gives the params dict these modules take; ``load_haiku_params(torch_module,
params)`` goes the other way. The read scores chunks as the reference does (projecting every key); the PyTorch read
projects the query instead, the same function up to float rounding. The memory's state is the PyTorch one, but
updated functionally: a full chunk is stored at the start of the next step, as in PyTorch, without the in-place
write.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from memory.hcam import MASKED_CHUNK_LOGIT, load_haiku_params, reversed_sinusoid, to_haiku_params

__all__ = ["HierarchicalMemoryAttention", "HCAM", "initial_state", "load_haiku_params", "to_haiku_params"]


def _positions(chunk_size: int, dim: int, dtype) -> np.ndarray:
    """The PyTorch module's position table [C, D] as a numpy array of ``dtype``."""
    return reversed_sinusoid(chunk_size, dim).numpy().astype(dtype)


class HierarchicalMemoryAttention(hk.Module):
    """queries [B, Q, E] over keys [B, M, D], contents [B, M, C, D], optional mask [B, Q, M] -> [B, Q, F].

    ``stop_gradient=False`` (not in the reference) lets gradients reach keys and contents, for the memory's ablation.
    """

    def __init__(self, feature_size: int, k: int, num_heads: int = 1, memory_position_encoding: bool = True,
                 init_scale: float = 2.0, stop_gradient: bool = True, name: str = "hierarchical_memory_attention"):
        super().__init__(name=name)
        self.feature_size, self.k, self.num_heads = feature_size, k, num_heads
        self.memory_position_encoding, self.stop_gradient = memory_position_encoding, stop_gradient
        self.w_init = hk.initializers.VarianceScaling(init_scale)

    def __call__(self, queries, keys, contents, mask=None):
        if self.stop_gradient:
            keys, contents = jax.lax.stop_gradient(keys), jax.lax.stop_gradient(contents)
        query = hk.Linear(self.feature_size, with_bias=False, w_init=self.w_init, name="query")(queries)
        key = hk.Linear(self.feature_size, with_bias=False, w_init=self.w_init, name="key")(keys)
        logits = jnp.einsum("bqf,bmf->bqm", query, key) / np.sqrt(self.feature_size)
        if mask is not None:
            logits = jnp.where(mask, logits, MASKED_CHUNK_LOGIT)
        top_logits, indices = jax.lax.top_k(logits, self.k)  # ties: lowest index first
        weights = jax.nn.softmax(top_logits)  # [B, Q, k]
        if self.memory_position_encoding:
            contents = contents + _positions(contents.shape[2], contents.shape[3], contents.dtype)
        chunks = contents[jnp.arange(contents.shape[0])[:, None, None], indices]  # [B, Q, k, C, D]
        tiled = jnp.broadcast_to(queries[:, :, None, None, :], (*chunks.shape[:3], 1, queries.shape[-1]))
        attention = hk.MultiHeadAttention(self.num_heads, self.feature_size // self.num_heads,
                                          model_size=self.feature_size, w_init=self.w_init, name="within_mem_attn")
        read = attention(tiled, chunks, chunks)[..., 0, :]  # [B, Q, k, F]
        return jnp.sum(weights[..., None] * read, axis=-2)


def initial_state(batch_size: int, width: int = 256, layers: int = 4, chunk_size: int = 16,
                  max_chunks: int = 64) -> dict:
    """The empty memory, laid out as the PyTorch module's state (float32, int32 counters)."""
    return {"keys": jnp.zeros((batch_size, layers, max_chunks, width)),
            "contents": jnp.zeros((batch_size, layers, max_chunks, chunk_size, width)),
            "accumulator": jnp.zeros((batch_size, layers, chunk_size, width)),
            "valid": jnp.zeros((batch_size, max_chunks), bool), "chunks_written": jnp.zeros(batch_size, int),
            "steps_in_chunk": jnp.zeros(batch_size, int)}


class _Layer(hk.Module):
    """One step of torch ``HCAMLayer``: h [B, W] -> (h, accumulator [B, C, W])."""

    def __init__(self, width, heads, top_k, memory_position_encoding, stop_gradient, name):
        super().__init__(name=name)
        self.width, self.heads, self.top_k = width, heads, top_k
        self.memory_position_encoding, self.stop_gradient = memory_position_encoding, stop_gradient

    def __call__(self, h, accumulator, position, keys, contents, valid):
        y = hk.LayerNorm(-1, True, True, name="norm_attn")(h)
        chunk_size = accumulator.shape[1]
        accumulator = jnp.where((jnp.arange(chunk_size) == position[:, None])[:, :, None], y[:, None], accumulator)
        local_keys = accumulator
        if self.memory_position_encoding:
            local_keys = accumulator + _positions(chunk_size, self.width, accumulator.dtype)
        local_mask = (jnp.arange(chunk_size) <= position[:, None])[:, None, None, :]  # [B, H, 1, C]
        local = hk.MultiHeadAttention(self.heads, self.width // self.heads, name="local_attn",
                                      w_init=hk.initializers.VarianceScaling(1.0))(
            y[:, None], local_keys, local_keys, local_mask)[:, 0]
        empty_as_zero = jnp.where(valid[:, :, None, None], contents, 0.0)
        read = HierarchicalMemoryAttention(self.width, self.top_k, self.heads, self.memory_position_encoding,
                                           stop_gradient=self.stop_gradient)(y[:, None], keys, empty_as_zero,
                                                                             valid[:, None])[:, 0]
        h = h + local + read
        z = hk.LayerNorm(-1, True, True, name="norm_mlp")(h)
        z = hk.Linear(self.width, name="mlp_out")(jax.nn.gelu(hk.Linear(4 * self.width, name="mlp_in")(z),
                                                              approximate=False))
        return h + z, accumulator


class HCAM(hk.Module):
    """The ``hcam`` memory (see memory/hcam.py): x [T, B, in], state, reset [T, B] -> ([T, B, width], state)."""

    def __init__(self, width: int = 256, layers: int = 4, heads: int = 4, chunk_size: int = 16, top_k: int = 8,
                 max_chunks: int = 64, memory_position_encoding: bool = True, stop_gradient: bool = True,
                 name: str = "hcam"):
        super().__init__(name=name)
        self.width, self.num_layers, self.heads, self.top_k = width, layers, heads, top_k
        self.chunk_size, self.max_chunks = chunk_size, max_chunks
        self.memory_position_encoding, self.stop_gradient = memory_position_encoding, stop_gradient

    def __call__(self, x, state, reset):
        project = hk.Linear(self.width, name="input")
        layers = [_Layer(self.width, self.heads, self.top_k, self.memory_position_encoding, self.stop_gradient,
                         name=f"layer_{i}") for i in range(self.num_layers)]
        norm_out = hk.LayerNorm(-1, True, True, name="norm_out")

        def step(state, inputs):
            x_t, reset_t = inputs
            state = self._store_full_chunks(self._clear(state, reset_t))
            h, accumulators = project(x_t), []
            for i, layer in enumerate(layers):
                h, acc = layer(h, state["accumulator"][:, i], state["steps_in_chunk"], state["keys"][:, i],
                               state["contents"][:, i], state["valid"])
                accumulators.append(acc)
            return {**state, "accumulator": jnp.stack(accumulators, 1),
                    "steps_in_chunk": state["steps_in_chunk"] + 1}, norm_out(h)

        state, outputs = hk.scan(step, state, (x, reset))
        return outputs, state

    @staticmethod
    def _clear(state, reset):
        keep = ~reset
        return {**state, "accumulator": state["accumulator"] * keep[:, None, None, None],
                "valid": state["valid"] & keep[:, None], "chunks_written": state["chunks_written"] * keep,
                "steps_in_chunk": state["steps_in_chunk"] * keep}

    def _store_full_chunks(self, state):
        full = state["steps_in_chunk"] == self.chunk_size  # [B]
        slot = state["chunks_written"] % self.max_chunks
        write = full[:, None] & (jnp.arange(self.max_chunks) == slot[:, None])  # [B, M]
        chunk = jax.lax.stop_gradient(state["accumulator"]) if self.stop_gradient else state["accumulator"]
        return {"keys": jnp.where(write[:, None, :, None], chunk.mean(2)[:, :, None], state["keys"]),
                "contents": jnp.where(write[:, None, :, None, None], chunk[:, :, None], state["contents"]),
                "accumulator": state["accumulator"] * ~full[:, None, None, None], "valid": state["valid"] | write,
                "chunks_written": state["chunks_written"] + full, "steps_in_chunk": state["steps_in_chunk"] * ~full}
