"""HCAM: Hierarchical Chunk Attention Memory (Lampinen et al., "Towards mental time travel", NeurIPS 2021).

``HierarchicalMemoryAttention`` is the paper's read, numerically equal to DeepMind's Haiku reference: score stored
chunks by their keys, keep the top k, attend inside each of them and mix the results by the chunk weights.
``HCAM`` is the agent memory built on it (see its docstring). Both load and export Haiku parameter dicts with the
reference names (``load_haiku_params`` / ``to_haiku_params``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from memory.attention import MultiHeadAttention
from memory.base import Memory, State
from memory.haiku.convert import linear_from_haiku, linear_to_haiku

# The reference fills masked chunk logits with -1e6 (not -inf): an all-masked row still has a top k (ties).
MASKED_CHUNK_LOGIT = -1e6
# Haiku's VarianceScaling draws a normal truncated at 2 std and rescales it by this factor to keep the variance.
_TRUNCATED_NORMAL_STD = 0.87962566103423978


def variance_scaling_(weight: Tensor, scale: float = 2.0) -> None:
    """Haiku's ``VarianceScaling(scale)`` (fan-in, truncated normal) for an ``nn.Linear`` weight [out, in]."""
    std = math.sqrt(scale / weight.shape[1]) / _TRUNCATED_NORMAL_STD
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def reversed_sinusoid(chunk_size: int, dim: int, dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """Position table [C, D]: row i encodes position C-1-i, layout concat([sin, cos]) (the reference's).

    Built with tensor ops on ``device`` (computed in float64, then cast), so no host-to-device copy is needed.
    """
    inv_freq = 1e4 ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)
    angles = torch.outer(torch.arange(chunk_size - 1, -1, -1, dtype=torch.float64, device=device), inv_freq)
    return torch.cat([angles.sin(), angles.cos()], -1).to(dtype)


def stable_top_k(logits: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top k along the last axis, ties to the lowest index like ``jax.lax.top_k`` (unlike ``torch.topk``)."""
    values, indices = torch.sort(logits, dim=-1, descending=True, stable=True)
    return values[..., :k], indices[..., :k]


def gather_slots(store: Tensor, indices: Tensor) -> Tensor:
    """store [B, M, ...], indices [B, Q, k] -> the selected slots [B, Q, k, ...]."""
    batch = torch.arange(store.shape[0], device=store.device).view(-1, 1, 1)
    return store[batch, indices]


def _positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


class HierarchicalMemoryAttention(nn.Module):
    """The HCAM read: queries [B, Q, E] over chunks (keys [B, M, D], contents [B, M, C, D]) -> [B, Q, F].

    Gradients stop at the keys and contents (the paper's choice). Chunk scoring computes ``q . (W_k k)`` as
    ``(W_k^T q) . k`` so stored keys are never re-projected; it is the reference's function up to float rounding.
    """

    haiku_name = "hierarchical_memory_attention"

    def __init__(self, query_size: int, memory_size: int, feature_size: int, k: int, num_heads: int = 1,
                 memory_position_encoding: bool = True):
        super().__init__()
        _positive(query_size=query_size, memory_size=memory_size, feature_size=feature_size, k=k,
                  num_heads=num_heads)
        if feature_size % num_heads:
            raise ValueError(f"feature_size must be a multiple of num_heads={num_heads}, got {feature_size}")
        if memory_position_encoding and memory_size % 2:
            raise ValueError(f"memory_size must be even with memory_position_encoding=True, got {memory_size}")
        self.feature_size, self.k = feature_size, k
        self.memory_position_encoding = memory_position_encoding
        self.query = nn.Linear(query_size, feature_size, bias=False)
        self.key = nn.Linear(memory_size, feature_size, bias=False)
        self.within_mem_attn = MultiHeadAttention(query_size, memory_size, num_heads, feature_size // num_heads,
                                                  model_size=feature_size)
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                variance_scaling_(layer.weight)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)

    def forward(self, queries: Tensor, keys: Tensor, contents: Tensor, mask: Tensor | None = None) -> Tensor:
        """queries [B, Q, E], keys [B, M, D], contents [B, M, C, D], mask [B, Q, M] bool (True = may read)."""
        batch, num_queries, _ = queries.shape
        if keys.dim() != 3 or contents.shape[:2] != keys.shape[:2] or contents.shape[-1] != keys.shape[-1]:
            raise ValueError(f"keys must be [B, M, D] and contents [B, M, C, D], got {list(keys.shape)} "
                             f"and {list(contents.shape)}")
        if keys.shape[0] != batch:
            raise ValueError(f"queries have batch {batch}, the memory has batch {keys.shape[0]}")
        if keys.shape[1] < self.k:
            raise ValueError(f"the memory holds {keys.shape[1]} chunks, fewer than k={self.k}")
        if mask is not None and (mask.dtype != torch.bool or mask.shape != (batch, num_queries, keys.shape[1])):
            raise ValueError(f"mask must be bool [B, Q, M] = {[batch, num_queries, keys.shape[1]]}, "
                             f"got {mask.dtype} {list(mask.shape)}")
        weights, indices = self.select(queries, keys.detach(), mask)
        return self.attend(queries, gather_slots(contents.detach(), indices), weights)

    def select(self, queries: Tensor, keys: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Chunk weights [B, Q, k] (softmax over the top-k logits) and chunk indices [B, Q, k].

        Chunks are ranked without autograd and the weights recomputed from the k chosen keys, so backward keeps
        only those [B, Q, k, D], not the whole key store: the store may then be updated in place after the read.
        """
        queries_in_key_space = self.query(queries) @ self.key.weight  # [B, Q, D]
        scale = math.sqrt(self.feature_size)
        with torch.no_grad():
            logits = torch.einsum("bqd,bmd->bqm", queries_in_key_space, keys) / scale
            if mask is not None:
                logits = torch.where(mask, logits, torch.full_like(logits, MASKED_CHUNK_LOGIT))
            _, indices = stable_top_k(logits, self.k)
        top_logits = torch.einsum("bqd,bqkd->bqk", queries_in_key_space, gather_slots(keys, indices)) / scale
        if mask is not None:
            top_logits = torch.where(mask.gather(-1, indices), top_logits,
                                     torch.full_like(top_logits, MASKED_CHUNK_LOGIT))
        return torch.softmax(top_logits, dim=-1), indices

    def attend(self, queries: Tensor, chunks: Tensor, weights: Tensor, positions: Tensor | None = None) -> Tensor:
        """Each query attends to the C steps of each of its chunks [B, Q, k, C, D]; mixed by weights [B, Q, k].

        ``positions [C, D]`` is the position table to add (built here when not given). The reference projects every
        step of every chosen chunk to keys and values; with one query per chunk the same function is cheaper read
        the other way round: the query goes into the steps' space (``W_k^T q``), the steps are averaged with the attention weights, and the
        value and output projections (affine, and the chunk weights sum to 1) are applied once to the mix.
        """
        if self.memory_position_encoding:
            if positions is None:
                positions = reversed_sinusoid(chunks.shape[-2], chunks.shape[-1], chunks.dtype, chunks.device)
            chunks = chunks + positions
        mha = self.within_mem_attn
        h, key_size = mha.num_heads, mha.key_size
        q = mha.query(queries).unflatten(-1, (h, key_size))  # [B, Q, H, K]
        q_in = torch.einsum("bqhk,hkd->bqhd", q, mha.key.weight.view(h, key_size, -1))  # [B, Q, H, D]
        # q . b_k is one constant per row of logits: it changes no output, but keeps the reference's (zero) gradient
        bias_logit = (q * mha.key.bias.view(h, key_size)).sum(-1)[:, :, None, :, None]  # [B, Q, 1, H, 1]
        logits = (torch.einsum("bqhd,bqjcd->bqjhc", q_in, chunks) + bias_logit) / math.sqrt(key_size)  # [B,Q,k,H,C]
        step_weights = torch.softmax(logits, dim=-1) * weights[..., None, None]  # chunk weight x step weight
        mixed = torch.einsum("bqjhc,bqjcd->bqhd", step_weights, chunks)  # [B, Q, H, D]
        values = torch.einsum("bqhd,hvd->bqhv", mixed, mha.value.weight.view(h, mha.value_size, -1))
        values = values + mha.value.bias.view(h, mha.value_size)
        return mha.linear(values.flatten(-2))


class HCAMLayer(nn.Module):
    """One pre-LayerNorm layer; with h [B, W] the residual stream and y = norm_attn(h) (the layer's memory input):

    ``h += local_attn(y -> current chunk up to this step) + hierarchical_memory_attention(y -> stored chunks)``
    ``h += mlp_out(gelu(mlp_in(norm_mlp(h))))`` (hidden size 4W).
    """

    def __init__(self, width: int, heads: int, top_k: int, memory_position_encoding: bool):
        super().__init__()
        self.norm_attn = nn.LayerNorm(width)
        self.local_attn = MultiHeadAttention(width, width, heads, width // heads)
        self.hierarchical_memory_attention = HierarchicalMemoryAttention(width, width, width, top_k, heads,
                                                                         memory_position_encoding)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp_in = nn.Linear(width, 4 * width)
        self.mlp_out = nn.Linear(4 * width, width)

    def mlp(self, h: Tensor) -> Tensor:
        return self.mlp_out(nn.functional.gelu(self.mlp_in(self.norm_mlp(h))))


class HCAM(Memory):
    """HCAM agent memory: stacked layers, each reading the current chunk locally and stored chunks hierarchically.

    Per step: x -> ``input`` (Linear to width) -> layers (``HCAMLayer``) -> ``norm_out``. Each layer writes its memory
    input y into its accumulator at the step's position in the chunk; local attention sees positions up to the
    current one (plus the same reversed sinusoid the read adds to stored chunks, so a step keeps its position code
    when its chunk is stored). A chunk is full after C steps; the next step first stores it (its key is the mean of
    its C steps) in slot ``chunks_written % max_chunks``, evicting the oldest chunk, and restarts the accumulator.
    Storing at the start of the next step rather than at the end of the filling one reads the same chunks at every
    step; it makes a step's write depend only on its input state, so repeating a step from the same state writes
    the same values to the same slot (see ``in_place``).

    The store is written in place, one slot per env and step (an env with no full chunk writes its slot's own
    content back), so storing costs the same however many chunks are stored (the read still scores every stored
    key) and needs no host sync: a step can run inside a CUDA graph. ``in_place`` says whose store that is:

    - ``False`` (default): ``forward`` first copies ``keys``/``contents`` (once per call, not per step) and never
      changes the state it is given, as the memory contract asks. A call over T steps pays one copy of the store.
    - ``True``: ``forward`` updates ``keys``/``contents`` of the state it is given, and the state it returns shares
      them. A caller that keeps a state to run from later must copy its tensors (``clone``/``copy_`` or index it
      with an index tensor, which copies); running from a state that later calls have advanced reads chunks they
      stored. One step from the latest state whose result is dropped (a value bootstrap) leaves that state good
      to run from: a step only stores the chunk its input state holds, and the next step from that state stores
      the same values in the same slot. Per-step calls then never copy the store.

    Gradients stop at stored chunks (the paper's choice) and flow through the current chunk and every parameter.
    ``stop_gradient=False`` is an ablation that lets gradients also reach chunks stored during the same call; the
    shared conformance test uses it, because with stopped gradients no small config can give both an output that
    depends on the episode's first input through its chunk and a gradient for the chunk-scoring projections
    (which needs two stored chunks).

    A reset clears the accumulator, counters and slot validity; stale keys/contents stay in the state but are never
    read (their logits are masked and selected empty slots are zeroed), so clearing never copies the large tensors.
    The read of an empty memory matches the reference's read of a zero memory (uniform over its first k slots).

    State (L layers, M = max_chunks, C = chunk_size, D = width): keys [B, L, M, D], contents [B, L, M, C, D],
    accumulator [B, L, C, D], valid [B, M] bool, chunks_written [B] and steps_in_chunk [B] int64 (C: a full chunk
    waits to be stored).
    """

    haiku_name = "hcam"

    def __init__(self, input_size: int, width: int = 256, layers: int = 4, heads: int = 4, chunk_size: int = 16,
                 top_k: int = 8, max_chunks: int = 64, memory_position_encoding: bool = True,
                 stop_gradient: bool = True, in_place: bool = False):
        super().__init__()
        _positive(**{"memory.input_size": input_size, "memory.width": width, "memory.layers": layers,
                     "memory.heads": heads, "memory.chunk_size": chunk_size, "memory.top_k": top_k,
                     "memory.max_chunks": max_chunks})
        if width % heads or width % 2:
            raise ValueError(f"memory.width must be even and a multiple of memory.heads={heads}, got {width}")
        if max_chunks < top_k:
            raise ValueError(f"memory.max_chunks must be >= memory.top_k={top_k}, got {max_chunks}")
        if not isinstance(in_place, bool):
            raise ValueError(f"memory.in_place must be true or false, got {in_place!r}")
        self.input_size, self.output_size = input_size, width
        self.width, self.chunk_size, self.max_chunks = width, chunk_size, max_chunks
        self.stop_gradient, self.in_place = stop_gradient, in_place
        self.memory_position_encoding = memory_position_encoding
        self.input = nn.Linear(input_size, width)
        self.layers = nn.ModuleList(HCAMLayer(width, heads, top_k, memory_position_encoding) for _ in range(layers))
        self.norm_out = nn.LayerNorm(width)
        # Kept on the module's device and dtype, so a step never copies it from the host.
        self.register_buffer("positions", reversed_sinusoid(chunk_size, width, torch.float32), persistent=False)

    def initial_state(self, batch_size: int, device=None) -> State:
        n, m, c, d = len(self.layers), self.max_chunks, self.chunk_size, self.width
        return {"keys": torch.zeros(batch_size, n, m, d, device=device),
                "contents": torch.zeros(batch_size, n, m, c, d, device=device),
                "accumulator": torch.zeros(batch_size, n, c, d, device=device),
                "valid": torch.zeros(batch_size, m, dtype=torch.bool, device=device),
                "chunks_written": torch.zeros(batch_size, dtype=torch.long, device=device),
                "steps_in_chunk": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def forward(self, x, state, reset, context=None):
        self.check_inputs(x, state, reset)
        if not self.in_place:
            state = {**state, "keys": state["keys"].clone(), "contents": state["contents"].clone()}
        outputs = []
        for t in range(x.shape[0]):  # x [T, B, in]
            out, state = self.step(x[t], self.clear(state, reset[t]))
            outputs.append(out)
        return torch.stack(outputs), state  # [T, B, width]

    def clear(self, state: State, reset: Tensor) -> State:
        """Start a new episode where reset [B] is true, without touching the stored keys/contents."""
        keep = ~reset
        return {**state, "accumulator": state["accumulator"] * keep.view(-1, 1, 1, 1).to(state["accumulator"]),
                "valid": state["valid"] & keep[:, None], "chunks_written": state["chunks_written"] * keep,
                "steps_in_chunk": state["steps_in_chunk"] * keep}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x [B, in] -> output [B, width] and the next state; writes the store of ``state`` in place."""
        state = self.store_full_chunks(state)
        position = state["steps_in_chunk"]  # [B]
        slots = torch.arange(self.chunk_size, device=x.device)
        at_position = (slots == position[:, None])[:, :, None]  # [B, C, 1]
        local_mask = (slots <= position[:, None])[:, None, :]  # [B, 1, C]
        keys, contents = state["keys"], state["contents"]
        if self.stop_gradient:
            keys, contents = keys.detach(), contents.detach()
        h = self.input(x)
        accumulators = []
        for i, layer in enumerate(self.layers):
            y = layer.norm_attn(h)
            acc = torch.where(at_position, y[:, None], state["accumulator"][:, i])  # [B, C, D]
            accumulators.append(acc)
            local = layer.local_attn(y[:, None], self.with_positions(acc), self.with_positions(acc), local_mask)
            read = self.read(layer.hierarchical_memory_attention, y, keys[:, i], contents[:, i], state["valid"])
            h = h + local[:, 0] + read
            h = h + layer.mlp(h)
        return self.norm_out(h), {**state, "accumulator": torch.stack(accumulators, 1), "steps_in_chunk": position + 1}

    def with_positions(self, chunk: Tensor) -> Tensor:
        return chunk + self.positions if self.memory_position_encoding else chunk

    def read(self, attention: HierarchicalMemoryAttention, y: Tensor, keys: Tensor, contents: Tensor,
             valid: Tensor) -> Tensor:
        """y [B, D] over keys [B, M, D], contents [B, M, C, D] -> [B, D]; empty slots read as zeros."""
        weights, indices = attention.select(y[:, None], keys, valid[:, None])  # [B, 1, k]
        chunks = gather_slots(contents, indices)  # [B, 1, k, C, D]
        chosen_valid = valid.gather(1, indices[:, 0])[:, None, :, None, None]
        chunks = torch.where(chosen_valid, chunks, torch.zeros((), dtype=chunks.dtype, device=chunks.device))
        return attention.attend(y[:, None], chunks, weights, self.positions)[:, 0]

    def store_full_chunks(self, state: State) -> State:
        """Store each full accumulator in its env's next slot (in place) and restart it; other slots keep theirs."""
        full = state["steps_in_chunk"] == self.chunk_size  # [B]
        slot = state["chunks_written"] % self.max_chunks  # [B]
        batch = torch.arange(full.shape[0], device=full.device)
        chunk = state["accumulator"].detach() if self.stop_gradient else state["accumulator"]  # [B, L, C, D]
        keys, contents = state["keys"], state["contents"]
        keys[batch, :, slot] = torch.where(full[:, None, None], chunk.mean(2), keys[batch, :, slot])
        contents[batch, :, slot] = torch.where(full[:, None, None, None], chunk, contents[batch, :, slot])
        stored = full[:, None] & (torch.arange(self.max_chunks, device=full.device) == slot[:, None])  # [B, M]
        return {**state, "accumulator": state["accumulator"] * (~full).view(-1, 1, 1, 1).to(chunk),
                "valid": state["valid"] | stored, "chunks_written": state["chunks_written"] + full,
                "steps_in_chunk": state["steps_in_chunk"] * ~full}


def haiku_leaves(module: nn.Module) -> dict[str, nn.Module]:
    """Haiku module path of every Linear and LayerNorm inside ``module`` (``layers.0.x`` -> ``layer_0/x``)."""
    leaves = {}
    for name, sub in module.named_modules():
        if isinstance(sub, (nn.Linear, nn.LayerNorm)):
            parts = [p if not p.isdigit() else f"layer_{p}" for p in name.split(".") if p != "layers"]
            leaves["/".join([module.haiku_name, *parts])] = sub
    return leaves


def to_haiku_params(module: HierarchicalMemoryAttention | HCAM) -> dict[str, dict[str, np.ndarray]]:
    """The module's parameters as a Haiku params dict with the reference/Haiku-twin names."""
    params = {}
    for path, leaf in haiku_leaves(module).items():
        if isinstance(leaf, nn.Linear):
            params[path] = linear_to_haiku(leaf)
        else:
            params[path] = {"scale": leaf.weight.detach().cpu().numpy().copy(),
                            "offset": leaf.bias.detach().cpu().numpy().copy()}
    return params


@torch.no_grad()
def load_haiku_params(module: HierarchicalMemoryAttention | HCAM, params: dict) -> None:
    """Copy a Haiku params dict (reference names, e.g. ``hierarchical_memory_attention/query``) into ``module``."""
    leaves = haiku_leaves(module)
    ours = {p for p in params if p.split("/")[0] == module.haiku_name}
    if ours != set(leaves):
        raise ValueError(f"haiku params do not match {type(module).__name__}: missing {sorted(set(leaves) - ours)}, "
                         f"unexpected {sorted(ours - set(leaves))}")
    for path, leaf in leaves.items():
        if isinstance(leaf, nn.Linear):
            linear_from_haiku(leaf, params[path])
            continue
        for torch_param, haiku_key in ((leaf.weight, "scale"), (leaf.bias, "offset")):
            value = torch.as_tensor(np.asarray(params[path][haiku_key]))
            if value.shape != torch_param.shape:
                raise ValueError(f"{path}/{haiku_key} has shape {tuple(value.shape)}, "
                                 f"expected {tuple(torch_param.shape)}")
            torch_param.copy_(value)
