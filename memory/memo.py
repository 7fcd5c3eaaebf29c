"""The ``memo`` memory: a transformer that remembers through summary tokens (Gupta et al., "Memo", NeurIPS 2025).

The episode is cut into segments. Each segment is read as one causal sequence
``[summary memory ; segment tokens ; summary queries]``: ``summary_length`` learned queries follow the segment's last
token, and their final-layer outputs are written to the summary memory, which later segments read as input
embeddings. Raw tokens of earlier segments are never read. Positions (a sinusoid added to each input embedding, as the
``transformer`` memory's) count from 0 over that sequence, so they restart every segment. A segment still running
when the call ends (a tail shorter than its length) has made no summary yet; it goes on in the next call.

Segment lengths: fixed at ``segment_length`` in eval mode; in training mode (``self.training``) each segment's length
is drawn uniformly from the integers in [0.8 L, 1.2 L] at the step that starts it, from torch's global generator on
the input's device, and kept in the state (``length``). Running token by token or over a whole sequence makes the
same draws in the same order, so with the same generator state both give the same boundaries. A segment that is in
progress keeps its length whatever the mode of later calls.

Memory: ``mode="memo"`` appends each new summary and drops the oldest beyond ``max_summaries`` summaries (default
32), so the state stays bounded for streaming evaluation past the training horizon. ``mode="rmt"`` (the paper's
recurrent-memory ablation) overwrites: the memory holds the newest summary only (``max_summaries`` must be 1 or
unset). Gradients flow through every summary back to the tokens that made it; ``truncate=True`` stops them at each
summary as it is written (an ablation that the paper found to hurt; as summaries are read only by later segments,
it also leaves the summary queries without gradient).

Streaming cost: the state keeps the summaries, their per-layer keys/values and the current segment's inputs and
per-layer keys/values; a step attends to at most ``max_summaries * summary_length + ceil(1.2 L)`` keys. The sequence
forward runs the same step T times, so a step equals a sequence exactly. A step never waits on the device: it always
computes the summary pass and the re-encoding of the summary memory and keeps them only for envs whose segment ends
there, so a step (and an update's unroll) can be captured in a CUDA graph; the price is that every step pays for the
summary pass (``summary_length`` queries) and the re-encoding (``max_summaries * summary_length`` tokens), not only
the steps that end a segment.

Stale caches (``refresh``): the cached keys/values were made with the weights of the moment they were written.
``refresh`` recomputes them with the current weights, as the paper refreshes its caches after each update: PPO calls
it on each stored rollout-start state before replaying it and on its live state after each update. It re-encodes the
summaries and reruns the current segment's stored inputs against them, which gives exactly the keys/values a fresh
run would make from the same summaries and inputs; under autograd (PPO's replay) they carry gradients to the weights,
while the stored summaries and inputs get none. The summaries themselves are kept as they were written: each is the
output of an earlier segment whose raw tokens the state no longer holds (holding every token of the episode would
make the state grow without bound), so they cannot be recomputed; they enter as data, like observations. Inputs are
kept as the memory received them (for PPO: encoder features from acting time), so the encoder's staleness remains.

Defaults are scaled for gridworld tasks (width 128, 2 layers, 4 heads, L 32, 8 summary queries); the paper used
width 256, 4 layers, 8 heads, L 256, 32 summary queries.

Deviations from the paper: layers are the ``transformer`` memory's pre-norm layers (GTrXL's ordering with a ReLU on
each sub-layer output, reused so that every attention memory here shares one layer); positions are sinusoidal rather
than learned, so no table bounds the sequence length; the summary memory is bounded by ``max_summaries`` also in
training, because the state has a fixed shape (the paper keeps every summary of a rollout); and segment lengths are
drawn per segment, not once per batch as in the authors' off-policy code.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from memory.base import Memory, State, reset_state
from memory.transformer import TransformerLayer, check_config, sinusoid

MODES = ("memo", "rmt")
DEFAULT_MAX_SUMMARIES = 32


def length_range(segment_length: int) -> tuple[int, int]:
    """Integer segment lengths drawn in training: [ceil(0.8 L), floor(1.2 L)]."""
    return -(-4 * segment_length // 5), 6 * segment_length // 5


def check_memo_config(segment_length, summary_length, max_summaries, mode, truncate) -> int:
    """Raise a one-line ValueError for a bad Memo option; return the number of summaries the memory holds."""
    for arg, value in (("segment_length", segment_length), ("summary_length", summary_length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"memory.{arg} must be a positive integer, got {value!r}")
    if mode not in MODES:
        raise ValueError(f"memory.mode: unknown value {mode!r}; accepted: {', '.join(MODES)}")
    if not isinstance(truncate, bool):
        raise ValueError(f"memory.truncate must be true or false, got {truncate!r}")
    if max_summaries is not None and (not isinstance(max_summaries, int) or isinstance(max_summaries, bool)
                                      or max_summaries < 1):
        raise ValueError(f"memory.max_summaries must be a positive integer or None, got {max_summaries!r}")
    if mode == "rmt":
        if max_summaries not in (None, 1):
            raise ValueError(f"memory.max_summaries must be 1 or None with memory.mode='rmt' (it keeps one "
                             f"summary), got {max_summaries!r}")
        return 1
    return DEFAULT_MAX_SUMMARIES if max_summaries is None else max_summaries


class MemoMemory(Memory):
    """Summary-token transformer memory; see the module docstring.

    State (C = max_summaries * summary_length summary tokens, S = ceil(1.2 L) segment slots, N layers, D = width):
    ``summaries [B, C, D]`` (newest last; the valid ones are the last ``valid.sum()``), ``valid [B, C]`` bool,
    ``memory_k``/``memory_v [B, N, C, D]`` (each layer's keys/values of the summary tokens),
    ``segment_x [B, S, input_size]`` (the current segment's inputs, in order; ``refresh`` reruns them),
    ``segment_k``/``segment_v [B, N, S, D]`` (keys/values of the current segment's tokens, in order),
    ``position [B]`` (tokens of the current segment so far) and ``length [B]`` (its length; 0 = not started).
    Everything is zero in the initial state. Capacity: C + S keys read per step.
    """

    def __init__(self, input_size: int, width: int = 128, layers: int = 2, heads: int = 4, segment_length: int = 32,
                 summary_length: int = 8, max_summaries: int | None = None, mode: str = "memo",
                 truncate: bool = False, ff_size: int | None = None):
        super().__init__()
        max_summaries = check_memo_config(segment_length, summary_length, max_summaries, mode, truncate)
        ff_size = check_config(width, layers, heads, segment_length, "none", "pre", "sinusoidal", ff_size, 0)
        self.input_size, self.output_size, self.width = input_size, width, width
        self.segment_length, self.summary_length, self.mode, self.truncate = segment_length, summary_length, mode, truncate
        self.max_summaries = max_summaries
        self.memory_size = max_summaries * summary_length
        self.segment_slots = length_range(segment_length)[1]
        self.capacity = self.memory_size + self.segment_slots
        self.input = nn.Linear(input_size, width)
        self.summary_queries = nn.Parameter(torch.randn(summary_length, width))
        self.layers = nn.ModuleList(TransformerLayer(width, heads, ff_size, "none", "pre", 0.0, 0)
                                    for _ in range(layers))
        self.final_norm = nn.LayerNorm(width)

    def initial_state(self, batch_size: int, device=None) -> State:
        n, c, s, d = len(self.layers), self.memory_size, self.segment_slots, self.width
        memory_kv = torch.zeros(batch_size, n, c, d, device=device)
        segment_kv = torch.zeros(batch_size, n, s, d, device=device)
        counter = torch.zeros(batch_size, dtype=torch.long, device=device)
        return {"summaries": torch.zeros(batch_size, c, d, device=device),
                "valid": torch.zeros(batch_size, c, dtype=torch.bool, device=device),
                "memory_k": memory_kv, "memory_v": memory_kv.clone(),
                "segment_x": torch.zeros(batch_size, s, self.input_size, device=device),
                "segment_k": segment_kv, "segment_v": segment_kv.clone(),
                "position": counter, "length": counter.clone()}

    def forward(self, x, state, reset, context=None):
        self.check_inputs(x, state, reset)
        self.check_state(state)
        empty = {k: torch.zeros_like(v) for k, v in state.items()}
        outputs = []
        for t in range(x.shape[0]):  # x [T, B, in]
            out, state = self.step(x[t], reset_state(state, empty, reset[t]))
            outputs.append(out)
        return torch.stack(outputs), state  # [T, B, width]

    def check_state(self, state: State) -> None:
        expected = self.initial_state(1, "meta")
        if state.keys() != expected.keys():
            raise ValueError(f"MemoMemory: state keys must be {sorted(expected)}, got {sorted(state)}")
        for key, value in expected.items():
            if state[key].shape[1:] != value.shape[1:]:
                raise ValueError(f"MemoMemory: state[{key!r}] must be [B, {', '.join(map(str, value.shape[1:]))}], "
                                 f"got {list(state[key].shape)}")

    def positions(self, pos: Tensor, dtype: torch.dtype) -> Tensor:
        """pos [...] -> sinusoid [..., D]; angles in at least float32 (bf16 cannot resolve long sequences)."""
        return sinusoid(pos, self.width, torch.promote_types(dtype, torch.float32)).to(dtype)

    def start_segments(self, state: State, device) -> State:
        """Give each env whose segment has not started (length 0) its length: drawn in training, L in eval."""
        low, high = length_range(self.segment_length)
        batch = state["length"].shape[0]
        if self.training and low < high:
            drawn = torch.randint(low, high + 1, (batch,), device=device)
        else:
            drawn = torch.full((batch,), self.segment_length, device=device)
        return {**state, "length": torch.where(state["length"] == 0, drawn, state["length"])}

    def step(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        """x [B, in] -> output [B, D] and the next state; a segment's last token also writes its summary."""
        state = self.start_segments(state, x.device)
        pos, valid = state["position"], state["valid"]
        slots = torch.arange(self.segment_slots, device=x.device)
        h = self.input(x)[:, None]  # [B, 1, D]
        h = h + self.positions((valid.sum(1) + pos)[:, None], h.dtype)
        # Keys: summary tokens, the segment's earlier tokens, the token itself.
        mask = torch.cat([valid, slots < pos[:, None], torch.ones_like(valid[:, :1])], 1)[:, None]  # [B, 1, C+S+1]
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            h, k, v = layer(h, torch.cat([state["memory_k"][:, i], state["segment_k"][:, i]], 1),
                            torch.cat([state["memory_v"][:, i], state["segment_v"][:, i]], 1), mask, None)
            keys.append(k[:, -1])
            values.append(v[:, -1])
        at = (slots == pos[:, None])[:, None, :, None]  # [B, 1, S, 1]
        state = {**state, "position": pos + 1,
                 "segment_x": torch.where(at[:, 0], x[:, None], state["segment_x"]),
                 "segment_k": torch.where(at, torch.stack(keys, 1)[:, :, None], state["segment_k"]),
                 "segment_v": torch.where(at, torch.stack(values, 1)[:, :, None], state["segment_v"])}
        # Computed for every env at every step, kept where a segment ends: no host sync (see the module docstring).
        state = self.end_segments(state, state["position"] == state["length"])
        return self.final_norm(h[:, 0]), state

    def summarise(self, state: State) -> Tensor:
        """Final-layer outputs of the summary queries after the current segment: [B, summary_length, D]."""
        valid, length = state["valid"], state["length"]
        batch, n = valid.shape[0], self.summary_length
        queries = torch.arange(n, device=valid.device)
        pos = (valid.sum(1) + length)[:, None] + queries  # [B, n]
        h = self.summary_queries.expand(batch, n, self.width) + self.positions(pos, self.summary_queries.dtype)
        seen = torch.arange(self.segment_slots, device=valid.device) < length[:, None]  # [B, S]
        causal = (queries[:, None] >= queries).expand(batch, n, n)
        mask = torch.cat([valid[:, None].expand(-1, n, -1), seen[:, None].expand(-1, n, -1), causal], -1)
        for i, layer in enumerate(self.layers):
            h, _, _ = layer(h, torch.cat([state["memory_k"][:, i], state["segment_k"][:, i]], 1),
                            torch.cat([state["memory_v"][:, i], state["segment_v"][:, i]], 1), mask, None)
        return self.final_norm(h)

    def encode_memory(self, summaries: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """Each layer's keys/values of the summary tokens read as a causal sequence: [B, N, C, D] each, zero where
        invalid."""
        batch, c = valid.shape
        h = summaries + self.positions((valid.long().cumsum(1) - 1).clamp(min=0), summaries.dtype)
        index = torch.arange(c, device=valid.device)
        mask = (index[:, None] >= index) & valid[:, None, :]  # [B, C, C]
        none = summaries.new_zeros(batch, 0, self.width)
        keys, values = [], []
        for layer in self.layers:
            h, k, v = layer(h, none, none, mask, None)
            keys.append(k)
            values.append(v)
        keep = valid[:, None, :, None]
        return torch.where(keep, torch.stack(keys, 1), 0.0), torch.where(keep, torch.stack(values, 1), 0.0)

    def end_segments(self, state: State, complete: Tensor) -> State:
        """Where complete [B]: write the segment's summary to the memory and start a new segment."""
        summary = self.summarise(state)
        if self.truncate:
            summary = summary.detach()
        n = self.summary_length
        # Append and drop the oldest summary; with room for one summary (rmt) this overwrites it.
        summaries = torch.cat([state["summaries"][:, n:], summary], 1)
        valid = torch.cat([state["valid"][:, n:], torch.ones_like(state["valid"][:, :n])], 1)
        memory_k, memory_v = self.encode_memory(summaries, valid)
        done = complete.view(-1, 1, 1, 1)
        return {"summaries": torch.where(done[..., 0], summaries, state["summaries"]),
                "valid": torch.where(done[:, :, 0, 0], valid, state["valid"]),
                "memory_k": torch.where(done, memory_k, state["memory_k"]),
                "memory_v": torch.where(done, memory_v, state["memory_v"]),
                "segment_x": torch.where(done[:, 0], 0.0, state["segment_x"]),
                "segment_k": torch.where(done, 0.0, state["segment_k"]),
                "segment_v": torch.where(done, 0.0, state["segment_v"]),
                "position": torch.where(complete, 0, state["position"]),
                "length": torch.where(complete, 0, state["length"])}

    def encode_segment(self, state: State, memory_k: Tensor, memory_v: Tensor) -> tuple[Tensor, Tensor]:
        """Each layer's keys/values of the current segment's stored inputs, read causally after the summary memory
        given by ``memory_k``/``memory_v [B, N, C, D]``: [B, N, S, D] each, zero in slots not yet reached."""
        valid, pos = state["valid"], state["position"]
        slots = torch.arange(self.segment_slots, device=pos.device)
        h = self.input(state["segment_x"])  # [B, S, D]
        h = h + self.positions(valid.sum(1)[:, None] + slots, h.dtype)
        seen = slots < pos[:, None]  # [B, S]
        causal = (slots[:, None] >= slots) & seen[:, None]  # [B, S, S]
        mask = torch.cat([valid[:, None].expand(-1, self.segment_slots, -1), causal], -1)  # [B, S, C + S]
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            h, k, v = layer(h, memory_k[:, i], memory_v[:, i], mask, None)
            keys.append(k[:, self.memory_size:])
            values.append(v[:, self.memory_size:])
        keep = seen[:, None, :, None]
        return torch.where(keep, torch.stack(keys, 1), 0.0), torch.where(keep, torch.stack(values, 1), 0.0)

    def refresh(self, state: State) -> State:
        """The state with its cached keys/values recomputed with the current weights (the module docstring says
        what is recomputed and what is kept); differentiable, sync-free, shapes and dtypes unchanged."""
        memory_k, memory_v = self.encode_memory(state["summaries"], state["valid"])
        segment_k, segment_v = self.encode_segment(state, memory_k, memory_v)
        fresh = {"memory_k": memory_k, "memory_v": memory_v, "segment_k": segment_k, "segment_v": segment_v}
        return {**state, **{k: v.to(state[k].dtype) for k, v in fresh.items()}}
