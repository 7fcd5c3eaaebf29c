"""The ``sat`` memory: Spatially-Aware Transformer memory (Cho, Yoon, Ahn, "Spatially-Aware Transformer for Embodied
Agents", ICLR 2024), an episodic memory whose tokens know where they were seen.

Needs ``context["place"] [T, B]`` (int place ids in ``[0, num_places)``, from env ``info["place"]``). ``eviction`` is
one of ``allocator.STRATEGIES`` (fixed), or ``"ama"``: then ``context["strategy"] [T, B]`` (ids into ``STRATEGIES``,
chosen per episode by an ``allocator.Allocator``) is needed as well; PPO runs that allocator for a memory that reads
``"strategy"`` (``agents/allocation.py``), configured by ``allocator`` (a dict of ``allocator.OPTIONS``).

Block, per step t of env b (D = width):

- ``h = input(x_t)``; h is written to the bounded token store of ``memory/allocator.py`` (``capacity`` slots,
  evicting under ``eviction`` when full) with its place id and step.
- Every stored token j is embedded as ``e_j = norm(token_j + spatial[place_j] + time[age_j])``: ``spatial`` is a
  fixed sinusoid over place ids, ``time`` one over memory order (``age_j`` = how many stored tokens are newer;
  0 = the token written this step). The query is the current token's own entry ``q = e_t``.
- ``organisation="fifo"`` (SAT-FIFO): ``read = attention(q -> all stored entries)``, masked to valid slots.
  ``organisation="place"`` (SAT-PM): entries are grouped by place, oldest first, each place's run padded to a
  multiple of ``chunk_size`` and split into chunks (padding masked); ``HierarchicalMemoryAttention`` (HCAM's read,
  chunk = place-chunk) scores each chunk by the mean of its valid entries, keeps the ``top_k`` and attends inside
  them, mixing by the chunk weights.
- Output ``h + read`` [B, D].

State: the token store (tokens [B, N, D], places/stamps [B, N], valid [B, N], visits [B, P], last_place/step [B]).
Capacity: ``capacity`` tokens. The store enters a call with gradients stopped (tokens of earlier calls were made by
older weights); within a call gradients flow through the stored tokens. A reset empties the env's store.

Deviations from the paper: its SAT is a multi-layer transformer over the memory; here one read with a residual, which
keeps a step cheap. The spatial code is the sinusoid with its sin and cos halves swapped, so place p and memory
position p add different vectors. HCAM's ``attend`` has no padding mask and adds its
own in-chunk positions, so the place read uses the module's ``select`` and its ``within_mem_attn`` with the padding
mask (memory order is already in the entries).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from memory.allocator import OPTIONS, STRATEGIES, empty_store, write
from memory.attention import MultiHeadAttention
from memory.base import Memory, State, reset_state
from memory.hcam import HierarchicalMemoryAttention, gather_slots
from memory.transformer import sinusoid

ORGANISATIONS = ("fifo", "place")
EVICTIONS = STRATEGIES + ("ama",)


def spatial_table(num_places: int, width: int) -> Tensor:
    """Place codes [P, D]: the sinusoid of each place id with its sin and cos halves swapped."""
    return sinusoid(torch.arange(num_places), width, torch.float64).roll(width // 2, -1).float()


def age_ranks(stamps: Tensor, valid: Tensor) -> Tensor:
    """How many valid tokens are newer than each token [B, N] (0 = the newest)."""
    newer = valid[:, None, :] & (stamps[:, None, :] > stamps[:, :, None])  # [B, i, j]: j newer than i
    return newer.sum(-1)


def group_by_place(entries: Tensor, places: Tensor, stamps: Tensor, valid: Tensor, num_places: int,
                   chunk_size: int) -> tuple[Tensor, Tensor]:
    """entries [B, N, D] -> chunks [B, P * K, C, D] and their mask [B, P * K, C] (True = a stored entry).

    Place p owns chunks p*K .. p*K + K-1 (K = ceil(N / C)); its entries fill them oldest first, so its run is padded
    to a multiple of C and the rest of its chunks are empty.
    """
    batch, n, width = entries.shape
    per_place = math.ceil(n / chunk_size) * chunk_size
    same_place = places[:, None, :] == places[:, :, None]  # [B, i, j]
    older_here = valid[:, None, :] & same_place & (stamps[:, None, :] < stamps[:, :, None])  # j older, same place
    target = places * per_place + older_here.sum(-1)  # [B, N]
    dump = num_places * per_place  # invalid slots land here and are cut off
    target = torch.where(valid, target, dump)
    grouped = entries.new_zeros(batch, dump + 1, width).scatter(1, target[..., None].expand(-1, -1, width), entries)
    mask = torch.zeros(batch, dump + 1, dtype=torch.bool, device=entries.device).scatter(1, target, valid)
    chunks = per_place // chunk_size
    return (grouped[:, :dump].view(batch, num_places * chunks, chunk_size, width),
            mask[:, :dump].view(batch, num_places * chunks, chunk_size))


def check_ids(context: dict | None, key: str, shape: tuple, limit: int, what: str) -> Tensor:
    """context[key] as int64 [T, B], or a one-line ValueError when missing, misshapen or outside [0, limit)."""
    if context is None or key not in context:
        raise ValueError(f"SAT needs context[{key!r}]: {what} [T, B] (from env info[{key!r}])")
    ids = context[key]
    if ids.shape != shape or ids.is_floating_point():
        raise ValueError(f"SAT: context[{key!r}] must be int [T, B] = {list(shape)}, got {ids.dtype} "
                         f"{list(ids.shape)}")
    # Range checks read the values back to the host, which a CUDA graph capture cannot do: skipped while capturing.
    capturing = ids.is_cuda and torch.cuda.is_current_stream_capturing()
    if not capturing and ids.numel() and (ids.min() < 0 or ids.max() >= limit):
        raise ValueError(f"SAT: context[{key!r}] must lie in [0, {limit}), got values "
                         f"{ids.min().item()}..{ids.max().item()}")
    return ids.long()


def check_allocator(allocator, eviction) -> None:
    if allocator is None:
        return
    if eviction != "ama":
        raise ValueError(f"memory.allocator: configures AMA, so it needs memory.eviction=ama, got {eviction!r}")
    unknown = [key for key in allocator if key not in OPTIONS] if isinstance(allocator, dict) else [allocator]
    if unknown:
        raise ValueError(f"memory.allocator: unknown option {unknown[0]!r}; accepted: {', '.join(OPTIONS)}")


def check_config(num_places, width, heads, capacity, organisation, eviction, chunk_size, top_k) -> None:
    for arg, value in (("num_places", num_places), ("width", width), ("heads", heads), ("capacity", capacity),
                       ("chunk_size", chunk_size), ("top_k", top_k)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"memory.{arg} must be a positive integer, got {value!r}")
    if width % heads or width % 2:
        raise ValueError(f"memory.width must be even and a multiple of memory.heads={heads}, got {width}")
    for arg, value, accepted in (("organisation", organisation, ORGANISATIONS), ("eviction", eviction, EVICTIONS)):
        if value not in accepted:
            raise ValueError(f"memory.{arg}: unknown value {value!r}; accepted: {', '.join(accepted)}")
    chunks = num_places * math.ceil(capacity / chunk_size)
    if organisation == "place" and top_k > chunks:
        raise ValueError(f"memory.top_k must be <= the {chunks} place-chunks (num_places * ceil(capacity / "
                         f"chunk_size)), got {top_k}")


class SAT(Memory):
    """Spatially-aware episodic memory; see the module docstring for the block, options and state."""

    def __init__(self, input_size: int, num_places: int | None = None, width: int = 64, heads: int = 4,
                 capacity: int = 64, organisation: str = "fifo", eviction: str = "fifo", chunk_size: int = 8,
                 top_k: int = 4, allocator: dict | None = None):
        super().__init__()
        check_config(num_places, width, heads, capacity, organisation, eviction, chunk_size, top_k)
        check_allocator(allocator, eviction)
        self.input_size, self.output_size = input_size, width
        self.num_places, self.width, self.capacity = num_places, width, capacity
        self.organisation, self.eviction, self.chunk_size = organisation, eviction, chunk_size
        self.context_keys = ("place", "strategy") if eviction == "ama" else ("place",)
        self.allocator_options = dict(allocator or {})  # for the agent that runs the Allocator
        self.input = nn.Linear(input_size, width)
        self.norm = nn.LayerNorm(width)
        if organisation == "fifo":
            self.attention = MultiHeadAttention(width, width, heads, width // heads, model_size=width)
        else:
            self.attention = HierarchicalMemoryAttention(width, width, width, top_k, heads,
                                                         memory_position_encoding=False)
        self.register_buffer("spatial", spatial_table(num_places, width), persistent=False)
        self.register_buffer("time", sinusoid(torch.arange(capacity), width, torch.float64).float(),
                             persistent=False)

    def initial_state(self, batch_size: int, device=None) -> State:
        return empty_store(batch_size, self.capacity, self.width, self.num_places, device)

    def forward(self, x, state, reset, context=None):
        self.check_inputs(x, state, reset)
        if state["tokens"].shape[1:] != (self.capacity, self.width):
            raise ValueError(f"SAT: state['tokens'] must be [B, {self.capacity}, {self.width}] (capacity, width), "
                             f"got {list(state['tokens'].shape)}")
        place = check_ids(context, "place", reset.shape, self.num_places, "int place ids")
        if self.eviction == "ama":
            strategy = check_ids(context, "strategy", reset.shape, len(STRATEGIES), "eviction strategy ids")
        else:
            strategy = torch.full_like(place, STRATEGIES.index(self.eviction))
        batch = x.shape[1]
        initial = empty_store(batch, self.capacity, self.width, self.num_places, x.device, state["tokens"].dtype)
        state = {**state, "tokens": state["tokens"].detach()}
        h = self.input(x)  # [T, B, D]
        outputs = []
        for t in range(x.shape[0]):
            state = write(reset_state(state, initial, reset[t]), h[t], place[t], strategy[t])
            outputs.append(h[t] + self.read(state))
        return torch.stack(outputs), state

    def embed(self, tokens: Tensor, places: Tensor, ages: Tensor) -> Tensor:
        """tokens [B, N, D] + spatial code of places [B, N] + time code of ages [B, N], before the norm."""
        return tokens + self.spatial[places] + self.time[ages]

    def read(self, store: State) -> Tensor:
        """The current token's read [B, D] of the store (which already holds it)."""
        valid = store["valid"]
        entries = self.norm(self.embed(store["tokens"], store["places"], age_ranks(store["stamps"], valid)))
        newest = store["stamps"].masked_fill(~valid, -1).argmax(1)  # [B]
        query = entries.gather(1, newest[:, None, None].expand(-1, 1, self.width))  # [B, 1, D]
        if self.organisation == "fifo":
            return self.attention(query, entries, entries, valid[:, None, :])[:, 0]
        chunks, mask = group_by_place(entries, store["places"], store["stamps"], valid, self.num_places,
                                      self.chunk_size)
        return self.read_places(query, chunks, mask)

    def read_places(self, query: Tensor, chunks: Tensor, mask: Tensor) -> Tensor:
        """query [B, 1, D] over place-chunks [B, M, C, D] with mask [B, M, C]: top-k chunks by mean entry."""
        count = mask.sum(-1, keepdim=True)  # [B, M, 1]
        keys = chunks.sum(2) / count.clamp(min=1)  # mean of each chunk's entries (padding is zero) [B, M, D]
        weights, indices = self.attention.select(query, keys, (count[..., 0] > 0)[:, None, :])  # [B, 1, k]
        chosen, chosen_mask = gather_slots(chunks, indices), gather_slots(mask, indices)  # [B, 1, k, C, (D)]
        tiled = query[:, :, None, None, :].expand(*chosen.shape[:3], 1, self.width)  # [B, 1, k, 1, D]
        read = self.attention.within_mem_attn(tiled, chosen, chosen, chosen_mask[..., None, :]).squeeze(-2)
        return (weights[..., None] * read).sum(-2)[:, 0]
