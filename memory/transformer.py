"""The ``transformer`` memory: a causal transformer over a sliding window of the current episode (TrXL, GTrXL, FCT).

Each step attends to the ``window`` most recent steps of its own episode, itself included; nothing attends across an
episode start. Every layer's projected keys and values of the last ``window - 1`` steps are cached in the state, so
one step costs O(window) and a call over T steps equals T calls of one step. Setting ``window`` to the episode length
(or more) gives the full-context transformer (FCT) baseline: every step attends to the whole episode so far.

Options:
- ``norm="post"``: LayerNorm after each residual addition, as in the original transformer and TrXL.
- ``norm="pre"``: GTrXL's identity-map reordering: LayerNorm on each sub-layer's input and a ReLU on its output, so an
  unbroken identity path runs from input to output; a final LayerNorm normalises the output.
- ``gating="gtrxl"``: GTrXL's GRU-type gate in place of each residual addition. The update gate's fixed bias
  ``-gate_bias`` keeps it mostly closed at initialisation, so every layer starts close to the identity map.
  GTrXL pairs it with ``norm="pre"``; with ``norm="post"`` the LayerNorm follows the gate (the stream is then
  normalised after every sub-layer, so the identity start holds only up to that normalisation).
- ``positions="sinusoidal"``: sinusoidal code of the step's index within its episode, added to the input embedding.
  ``positions="relative"``: a learned per-head bias on the attention logits for each query-key distance, distances
  beyond ``max_distance`` sharing one bias. Cached keys carry no position, so the bias stays valid with the cache.

Gradients and staleness: cached keys/values were computed with the weights of the moment they were cached and enter a
call with gradients stopped, as TrXL's memory does; within one call, gradients flow through all steps. The state also
keeps the inputs of the cached steps, so ``refresh`` can recompute the cache with the current weights (PPO calls it on
stored rollout-start states before replaying them and on its live state after each update). The recomputation is exact
for an env whose episode so far fits in the cache (``step <= window - 1``; always so for the full-context transformer):
every step of it then attended to exactly the steps the cache holds. Past that, the cached steps' deeper-layer keys
depend on steps no longer held, so such an env keeps its cache as it was. Inputs are kept as received (for PPO: encoder
features from acting time), so the encoder's own staleness is not undone.

Deviations from GTrXL (Parisotto et al., 2019): its memory caches layer inputs for a segment-level recurrence and uses
TrXL's relative encoding (sinusoidal relative embeddings with learned content/position biases). Here the memory is a
sliding window of projected keys/values, which makes a step exactly equal to a sequence and costs O(window) per step,
and relative positions are a learned logit bias (as in T5), which needs no re-encoding of cached keys.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from memory.attention import MASKED_LOGIT, MultiHeadAttention
from memory.base import Memory, State

GATINGS = ("none", "gtrxl")
NORMS = ("pre", "post")
POSITIONS = ("sinusoidal", "relative")


def sinusoid(pos: Tensor, width: int, dtype: torch.dtype) -> Tensor:
    """pos [...] int -> [..., width]: ``concat([sin, cos])`` of pos times inverse frequencies ``1e4 ** (-2i / width)``."""
    inv_freq = 1e4 ** (-torch.arange(0, width, 2, device=pos.device, dtype=dtype) / width)
    angle = pos.unsqueeze(-1).to(dtype) * inv_freq
    return torch.cat([angle.sin(), angle.cos()], -1)[..., :width]


def episode_positions(step: Tensor, reset: Tensor) -> tuple[Tensor, Tensor]:
    """step [B] (steps of the episode before this call), reset [T, B] -> position within the episode [T, B] and
    episode number counted from the call start [T, B] (0 = the episode the state carries in)."""
    t = torch.arange(reset.shape[0], device=reset.device).unsqueeze(1)  # [T, 1]
    last_reset = torch.where(reset, t, -1).cummax(0).values
    pos = torch.where(last_reset >= 0, t - last_reset, step + t)
    return pos, reset.long().cumsum(0)


def attention_mask(step: Tensor, episode: Tensor, window: int) -> tuple[Tensor, Tensor]:
    """Which keys each query may see, mask [B, T, M + T], and the query-key distance [T, M + T].

    Keys are the M = window - 1 cached steps (oldest first) followed by this call's T steps; cached entry j lies
    M - j steps before the call and belongs to the current episode only if that is within ``step``.
    """
    T, B = episode.shape
    M = window - 1
    device = episode.device
    dist = torch.arange(T, device=device).unsqueeze(1) + M - torch.arange(M + T, device=device)  # [T, M + T]
    in_window = (dist >= 0) & (dist < window)
    cached_valid = M - torch.arange(M, device=device) <= step.unsqueeze(1)  # [B, M]
    key_valid = torch.cat([cached_valid, torch.ones(B, T, dtype=torch.bool, device=device)], 1)
    key_episode = torch.cat([torch.zeros(B, M, dtype=episode.dtype, device=device), episode.T], 1)  # [B, M + T]
    same_episode = key_episode.unsqueeze(1) == episode.T.unsqueeze(2)  # [B, T, M + T]
    return in_window & same_episode & key_valid.unsqueeze(1), dist


def check_config(width, layers, heads, window, gating, norm, positions, ff_size, max_distance) -> int:
    """Raise a one-line ValueError for a bad option; return the feed-forward size (None means 4 * width)."""
    for arg, value in (("width", width), ("layers", layers), ("heads", heads), ("window", window)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"memory.{arg} must be a positive integer, got {value!r}")
    if width % heads:
        raise ValueError(f"memory.heads must divide memory.width, got heads={heads}, width={width}")
    for arg, value, accepted in (("gating", gating, GATINGS), ("norm", norm, NORMS),
                                 ("positions", positions, POSITIONS)):
        if value not in accepted:
            raise ValueError(f"memory.{arg}: unknown value {value!r}; accepted: {', '.join(accepted)}")
    ff_size = 4 * width if ff_size is None else ff_size
    if not isinstance(ff_size, int) or ff_size < 1:
        raise ValueError(f"memory.ff_size must be a positive integer or None (4 * width), got {ff_size!r}")
    if not isinstance(max_distance, int) or max_distance < 0:
        raise ValueError(f"memory.max_distance must be a non-negative integer, got {max_distance!r}")
    return ff_size


def relative_size(positions: str, window: int, max_distance: int) -> int:
    """Number of distinct relative distances with a learned bias (0 without relative positions)."""
    return min(window - 1, max_distance) + 1 if positions == "relative" else 0


class GRUGate(nn.Module):
    """GTrXL's gate g(x, y) = (1 - z) x + z tanh(W_g y + U_g (r x)), r = sigma(W_r y + U_r x),
    z = sigma(W_z y + U_z x - gate_bias): x is the residual stream, y the sub-layer output."""

    def __init__(self, width: int, gate_bias: float):
        super().__init__()
        self.gate_bias = gate_bias
        for name in ("w_r", "u_r", "w_z", "u_z", "w_g", "u_g"):
            setattr(self, name, nn.Linear(width, width, bias=False))

    def update_gate(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.sigmoid(self.w_z(y) + self.u_z(x) - self.gate_bias)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        r = torch.sigmoid(self.w_r(y) + self.u_r(x))
        candidate = torch.tanh(self.w_g(y) + self.u_g(r * x))
        z = self.update_gate(x, y)
        return (1 - z) * x + z * candidate


class FeedForward(nn.Module):
    def __init__(self, width: int, ff_size: int):
        super().__init__()
        self.linear_0 = nn.Linear(width, ff_size)
        self.linear_1 = nn.Linear(ff_size, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_1(torch.relu(self.linear_0(x)))


class TransformerLayer(nn.Module):
    """Attention over cached + new keys, then a feed-forward block, each joined to the stream by a residual or gate."""

    def __init__(self, width: int, heads: int, ff_size: int, gating: str, norm: str, gate_bias: float,
                 relative_size: int):
        super().__init__()
        self.heads, self.key_size, self.pre_norm = heads, width // heads, norm == "pre"
        self.attention = MultiHeadAttention(width, width, heads, width // heads, model_size=width)
        self.attention_norm = nn.LayerNorm(width)
        self.mlp = FeedForward(width, ff_size)
        self.mlp_norm = nn.LayerNorm(width)
        self.attention_gate = GRUGate(width, gate_bias) if gating == "gtrxl" else None
        self.mlp_gate = GRUGate(width, gate_bias) if gating == "gtrxl" else None
        # relative_bias [heads, distances]; zero at init so attention starts position-blind within the window.
        self.relative_bias = nn.Parameter(torch.zeros(heads, relative_size)) if relative_size else None

    def attend(self, h: Tensor, k_cache: Tensor, v_cache: Tensor, mask: Tensor, dist: Tensor):
        """h [B, T, D], k/v_cache [B, M, D] -> output [B, T, D] and all keys/values [B, M + T, D]."""
        a = self.attention
        k = torch.cat([k_cache, a.key(h)], 1)
        v = torch.cat([v_cache, a.value(h)], 1)
        q = a.query(h).unflatten(-1, (self.heads, self.key_size))  # [B, T, H, K]
        logits = torch.einsum("bthk,bshk->bhts", q, k.unflatten(-1, (self.heads, self.key_size)))
        logits = logits / math.sqrt(self.key_size)
        if self.relative_bias is not None:
            logits = logits + self.relative_bias[:, dist.clamp(0, self.relative_bias.shape[1] - 1)]
        weights = torch.softmax(logits.masked_fill(~mask.unsqueeze(1), MASKED_LOGIT), -1)
        out = torch.einsum("bhts,bshk->bthk", weights, v.unflatten(-1, (self.heads, self.key_size)))
        return a.linear(out.flatten(-2)), k, v

    def join(self, x: Tensor, y: Tensor, gate: GRUGate | None, norm: nn.LayerNorm) -> Tensor:
        """Add (or gate) the sub-layer output y into the stream x."""
        if self.pre_norm:
            y = torch.relu(y)
        out = x + y if gate is None else gate(x, y)
        return out if self.pre_norm else norm(out)

    def forward(self, h, k_cache, v_cache, mask, dist):
        y, k, v = self.attend(self.attention_norm(h) if self.pre_norm else h, k_cache, v_cache, mask, dist)
        h = self.join(h, y, self.attention_gate, self.attention_norm)
        y = self.mlp(self.mlp_norm(h) if self.pre_norm else h)
        return self.join(h, y, self.mlp_gate, self.mlp_norm), k, v


class TransformerMemory(Memory):
    """Sliding-window causal transformer with a key/value cache; see the module docstring for the options.

    State: ``k``/``v [B, layers, window - 1, width]`` (cached keys/values, oldest first, zero where not in the current
    episode), ``x [B, window - 1, input_size]`` (the cached steps' inputs, likewise) and ``step [B]`` (steps of the
    current episode so far). Capacity: ``window`` steps read per step.
    """

    def __init__(self, input_size: int, width: int = 128, layers: int = 2, heads: int = 4, window: int = 64,
                 gating: str = "none", norm: str = "pre", positions: str = "sinusoidal", ff_size: int | None = None,
                 gate_bias: float = 2.0, max_distance: int = 128):
        super().__init__()
        ff_size = check_config(width, layers, heads, window, gating, norm, positions, ff_size, max_distance)
        self.input_size, self.output_size = input_size, width
        self.width, self.window, self.capacity = width, window, window
        self.positions, self.pre_norm = positions, norm == "pre"
        distances = relative_size(positions, window, max_distance)
        self.input = nn.Linear(input_size, width)
        self.layers = nn.ModuleList(TransformerLayer(width, heads, ff_size, gating, norm, gate_bias, distances)
                                    for _ in range(layers))
        self.final_norm = nn.LayerNorm(width) if self.pre_norm else None

    def initial_state(self, batch_size: int, device=None) -> State:
        cache = torch.zeros(batch_size, len(self.layers), self.window - 1, self.width, device=device)
        inputs = torch.zeros(batch_size, self.window - 1, self.input_size, device=device)
        return {"k": cache, "v": cache.clone(), "x": inputs,
                "step": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def forward(self, x, state, reset, context=None):
        self.check_inputs(x, state, reset)
        T, M = x.shape[0], self.window - 1
        cache_shape = (len(self.layers), M, self.width)
        if state["k"].shape[1:] != cache_shape or state["v"].shape[1:] != cache_shape:
            raise ValueError(f"TransformerMemory: state k/v must be [B, {', '.join(map(str, cache_shape))}] "
                             f"(layers, window - 1, width), got {list(state['k'].shape)}")
        if "x" not in state or state["x"].shape[1:] != (M, self.input_size):
            raise ValueError(f"TransformerMemory: state['x'] must be [B, {M}, {self.input_size}] "
                             f"(window - 1, input_size): the cached steps' inputs")
        pos, episode = episode_positions(state["step"], reset)  # [T, B]
        mask, dist = attention_mask(state["step"], episode, self.window)
        h = self.input(x.transpose(0, 1))  # [B, T, D]
        if self.positions == "sinusoidal":
            # Angles in at least float32: bf16 cannot resolve positions of long episodes.
            h = h + sinusoid(pos.T, self.width, torch.promote_types(h.dtype, torch.float32)).to(h.dtype)
        # The cache enters with gradients stopped (see the module docstring).
        k_cache, v_cache = state["k"].detach(), state["v"].detach()
        keys, values = [], []
        for i, layer in enumerate(self.layers):
            h, k, v = layer(h, k_cache[:, i], v_cache[:, i], mask, dist)
            keys.append(k[:, T:])
            values.append(v[:, T:])
        step = pos[-1] + 1
        # Zero the entries outside the current episode so the state holds nothing of earlier episodes.
        keep = (M - torch.arange(M, device=x.device) <= step.unsqueeze(1))[:, None, :, None]  # [B, 1, M, 1]
        inputs = torch.cat([state["x"], x.transpose(0, 1)], 1)[:, T:]  # [B, M, in]
        new_state = {"k": torch.where(keep, torch.stack(keys, 1), 0.0),
                     "v": torch.where(keep, torch.stack(values, 1), 0.0),
                     "x": torch.where(keep[:, 0], inputs, 0.0), "step": step}
        out = self.final_norm(h) if self.pre_norm else h
        return out.transpose(0, 1), new_state

    def refresh(self, state: State) -> State:
        """The state with the cache recomputed from its inputs with the current weights where the episode so far fits
        in it (see the module docstring); differentiable, sync-free, shapes and dtypes unchanged."""
        M, step = self.window - 1, state["step"]
        index = torch.arange(M, device=step.device)
        pos = step[:, None] - M + index  # [B, M]: each cached step's position in its episode; < 0: none cached there
        held = pos >= 0
        dist = index[:, None] - index  # [M, M] query-key distance in steps
        mask = (dist >= 0) & held[:, None, :]  # [B, M, M]
        h = self.input(state["x"])  # [B, M, D]
        if self.positions == "sinusoidal":
            h = h + sinusoid(pos.clamp(min=0), self.width, torch.promote_types(h.dtype, torch.float32)).to(h.dtype)
        none = h.new_zeros(h.shape[0], 0, self.width)
        keys, values = [], []
        for layer in self.layers:
            h, k, v = layer(h, none, none, mask, dist)
            keys.append(k)
            values.append(v)
        exact = (step <= M)[:, None, None, None]
        keep = held[:, None, :, None]
        k = torch.where(exact, torch.where(keep, torch.stack(keys, 1), 0.0), state["k"])
        v = torch.where(exact, torch.where(keep, torch.stack(values, 1), 0.0), state["v"])
        return {**state, "k": k.to(state["k"].dtype), "v": v.to(state["v"].dtype)}
