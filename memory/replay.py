"""Sequence replay for world-model agents: a FIFO, a reservoir, and WMAR's mixture of the two.

Each env's steps are cut into chunks of ``chunk_length`` steps that ignore episode boundaries (a ``"reset"`` field
in the spec marks the steps that start episodes). Chunks are the unit of storage; ``sample`` cuts sequences at a
random offset from uniformly chosen stored chunks.

- ``fifo`` keeps the newest ``capacity // chunk_length`` chunks (DreamerV3's replay, WMAR's baseline).
- ``reservoir`` gives every chunk a random key and keeps the chunks with the largest keys: a uniform sample of the
  whole stream, so old tasks stay represented.
- ``wmar`` writes every chunk into a FIFO and a reservoir of ``capacity // 2`` steps each. With
  ``wmar_split="buffer"`` a batch comes whole from one buffer picked 50/50, as in WMAR; ``"half"`` (not in the
  paper) takes the first ``B // 2`` rows from the FIFO and the rest from the reservoir, for steadier batches.

Chunks live in host memory in the spec's dtypes (uint8 images stay uint8: WMAR's float32 buffers cost ~13 GB each);
only sampled batches move to ``device``. Storage is allocated once at full capacity but untouched pages cost no RAM,
and ``nbytes`` counts the stored chunks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

KINDS = ("fifo", "reservoir", "wmar")
SPLITS = ("buffer", "half")
Spec = dict[str, tuple[tuple[int, ...], np.dtype]]
Chunks = dict[str, Tensor]  # field -> [N, chunk_length, *shape]


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _field(name: str, value) -> tuple[tuple[int, ...], torch.dtype]:
    """The (shape, torch dtype) of one spec entry ``(shape tuple, numpy dtype)``."""
    try:
        shape, dtype = value
        shape = tuple(int(n) for n in shape)
        dtype = torch.from_numpy(np.empty(0, dtype=np.dtype(dtype))).dtype
    except (TypeError, ValueError):
        raise ValueError(f"spec[{name!r}]: expected (shape tuple, numpy dtype) with a bool/int/float dtype, "
                         f"got {value!r}") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"spec[{name!r}]: shape must have non-negative sizes, got {shape}")
    return shape, dtype


class _Buffer:
    """``slots`` chunks held in slots ``[0, count)``; subclasses choose the slot a new chunk takes."""

    def __init__(self, slots: int, chunk_length: int, fields: dict[str, tuple[tuple[int, ...], torch.dtype]]):
        self.slots, self.count = slots, 0
        self.data = {name: torch.empty((slots, chunk_length, *shape), dtype=dtype)
                     for name, (shape, dtype) in fields.items()}

    def _put(self, slot: int, chunks: Chunks, i: int) -> None:
        for name, value in self.data.items():
            value[slot] = chunks[name][i]

    def stored(self) -> Chunks:
        return {name: value[:self.count] for name, value in self.data.items()}

    def gather(self, index: Tensor, offset: Tensor, length: int) -> Chunks:
        """Sequences [B, length, ...] from chunks ``index [B]`` starting at step ``offset [B]``."""
        steps = offset[:, None] + torch.arange(length)
        return {name: value[index[:, None], steps] for name, value in self.data.items()}

    def state_dict(self) -> dict:
        # Clones of the used slots only: torch.save would otherwise write the whole preallocated storage.
        return {"count": self.count, "data": {name: value.clone() for name, value in self.stored().items()}}

    def load_state_dict(self, state: dict) -> None:
        self.count = state["count"]
        for name, value in self.data.items():
            value[:self.count] = state["data"][name]


class _FIFO(_Buffer):
    """Keeps the newest ``slots`` chunks in a ring."""

    def __init__(self, slots, chunk_length, fields):
        super().__init__(slots, chunk_length, fields)
        self.written = 0  # chunks ever written; the next one goes to slot written % slots

    def write(self, chunks: Chunks) -> None:
        for i in range(next(iter(chunks.values())).shape[0]):
            self._put(self.written % self.slots, chunks, i)
            self.written += 1
        self.count = min(self.written, self.slots)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "written": self.written}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.written = state["written"]


class _Reservoir(_Buffer):
    """Keeps the ``slots`` chunks with the largest keys; i.i.d. uniform keys make it a uniform sample of the stream."""

    def __init__(self, slots, chunk_length, fields):
        super().__init__(slots, chunk_length, fields)
        self.keys = torch.empty(slots, dtype=torch.float64)

    def write(self, chunks: Chunks, keys: Tensor) -> None:
        for i, key in enumerate(keys.tolist()):
            if self.count < self.slots:
                slot = self.count
                self.count += 1
            else:
                slot = int(self.keys.argmin())
                if key <= self.keys[slot]:
                    continue
            self.keys[slot] = key
            self._put(slot, chunks, i)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "keys": self.keys[:self.count].clone()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.keys[:self.count] = state["keys"]


class Replay:
    """Chunked sequence replay; build it with ``make_replay`` (see the module docstring for the kinds)."""

    def __init__(self, kind: str, capacity: int, chunk_length: int, spec: Spec, num_envs: int, seed: int = 0,
                 device: torch.device | str = "cpu", wmar_split: str = "buffer"):
        if kind not in KINDS:
            raise ValueError(f"kind: unknown replay {kind!r}; accepted: {', '.join(KINDS)}")
        if wmar_split not in SPLITS:
            raise ValueError(f"wmar_split: got {wmar_split!r}; accepted: {', '.join(SPLITS)}")
        for name, value in (("chunk_length", chunk_length), ("num_envs", num_envs), ("capacity", capacity)):
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name}: must be a positive int, got {value!r}")
        buffers = 2 if kind == "wmar" else 1
        if capacity // buffers < chunk_length:
            raise ValueError(f"capacity: must be >= {buffers} * chunk_length = {buffers * chunk_length} "
                             f"for a {kind} replay, got {capacity}")
        if not isinstance(spec, dict) or not spec:
            raise ValueError(f"spec: must be a non-empty dict {{name: (shape tuple, numpy dtype)}}, got {spec!r}")
        self.fields = {name: _field(name, value) for name, value in spec.items()}
        self.kind, self.capacity = kind, int(capacity)
        self.chunk_length, self.num_envs = int(chunk_length), int(num_envs)
        self.device, self.wmar_split = torch.device(device), wmar_split
        self.rng = torch.Generator().manual_seed(seed)

        slots = self.capacity // buffers // self.chunk_length
        self.buffers: list[_Buffer] = []
        if kind in ("fifo", "wmar"):
            self.buffers.append(_FIFO(slots, self.chunk_length, self.fields))
        if kind in ("reservoir", "wmar"):
            self.buffers.append(_Reservoir(slots, self.chunk_length, self.fields))
        # Each env's chunk in progress: field [num_envs, chunk_length, *shape], steps [0, filled) written.
        self.pending = {name: torch.empty((self.num_envs, self.chunk_length, *shape), dtype=dtype)
                        for name, (shape, dtype) in self.fields.items()}
        self.filled = 0

    @property
    def stored_steps(self) -> int:
        """Steps held in all buffers (a chunk in both WMAR buffers counts twice), so at most ``capacity``."""
        return sum(buffer.count for buffer in self.buffers) * self.chunk_length

    @property
    def nbytes(self) -> int:
        """Bytes of the stored chunks (the chunks in progress are not counted)."""
        per_chunk = sum(self.chunk_length * math.prod(shape) * dtype.itemsize
                        for shape, dtype in self.fields.values())
        return sum(buffer.count for buffer in self.buffers) * per_chunk

    def chunks(self, source: int = 0) -> Chunks:
        """The chunks one buffer holds, field -> [N, chunk_length, ...] in slot order (views, not copies).

        ``source`` 0 is the FIFO (or the only buffer), 1 WMAR's reservoir."""
        if not 0 <= source < len(self.buffers):
            raise ValueError(f"source: {self.kind} replay has buffers {list(range(len(self.buffers)))}, got {source}")
        return self.buffers[source].stored()

    def add(self, step: dict) -> None:
        """Append one vector-env step, field -> [num_envs, *shape]; each ``chunk_length`` steps store the chunks."""
        for name, value in self._check_step(step).items():
            self.pending[name][:, self.filled] = value
        self.filled += 1
        if self.filled == self.chunk_length:
            self._store(self.pending)
            self.filled = 0

    def _check_step(self, step: dict) -> dict[str, Tensor]:
        if set(step) != set(self.fields):
            raise ValueError(f"step: fields must be exactly {sorted(self.fields)}, got {sorted(step)}")
        out = {}
        for name, (shape, dtype) in self.fields.items():
            value = torch.as_tensor(step[name]).detach()
            if tuple(value.shape) != (self.num_envs, *shape):
                raise ValueError(f"step[{name!r}]: expected shape {[self.num_envs, *shape]}, got {list(value.shape)}")
            if value.is_floating_point() and not dtype.is_floating_point:
                raise ValueError(f"step[{name!r}]: got {value.dtype} for a {dtype} field; convert it first "
                                 "(a silent cast would truncate it)")
            out[name] = value.to(device="cpu", dtype=dtype)
        return out

    def _store(self, chunks: Chunks) -> None:
        for buffer in self.buffers:
            if isinstance(buffer, _Reservoir):
                buffer.write(chunks, torch.rand(self.num_envs, generator=self.rng, dtype=torch.float64))
            else:
                buffer.write(chunks)

    def sample(self, batch_size: int, length: int) -> dict[str, Tensor]:
        """Sequences field -> [B, length, ...] on ``device``; for wmar also ``"source"`` [B] (0 FIFO, 1 reservoir)."""
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size: must be a positive int, got {batch_size!r}")
        if not _is_int(length) or not 1 <= length <= self.chunk_length:
            raise ValueError(f"length: must be an int in [1, chunk_length={self.chunk_length}], got {length!r}")
        batch_size, length = int(batch_size), int(length)
        if self.buffers[0].count == 0:
            raise RuntimeError(f"replay is empty: chunks are stored every chunk_length={self.chunk_length} steps, "
                               f"{self.filled} added so far")
        rows = self._rows_per_buffer(batch_size)
        parts = []
        for buffer, n in zip(self.buffers, rows):
            index = torch.randint(buffer.count, (n,), generator=self.rng)
            offset = torch.randint(self.chunk_length - length + 1, (n,), generator=self.rng)
            parts.append(buffer.gather(index, offset, length))
        batch = {name: torch.cat([part[name] for part in parts]).to(self.device) for name in self.fields}
        if self.kind == "wmar":
            batch["source"] = torch.repeat_interleave(torch.arange(2), torch.tensor(rows)).to(self.device)
        return batch

    def _rows_per_buffer(self, batch_size: int) -> list[int]:
        if len(self.buffers) == 1:
            return [batch_size]
        if self.wmar_split == "half":
            return [batch_size // 2, batch_size - batch_size // 2]
        reservoir = int(torch.randint(2, (), generator=self.rng))
        return [batch_size * (1 - reservoir), batch_size * reservoir]

    def _config(self) -> dict:
        spec = {name: (list(shape), str(dtype)) for name, (shape, dtype) in self.fields.items()}
        return {"kind": self.kind, "capacity": self.capacity, "chunk_length": self.chunk_length,
                "num_envs": self.num_envs, "spec": spec}

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: stored chunks, chunks in progress, reservoir keys, RNG."""
        return {"config": self._config(), "filled": self.filled, "rng": self.rng.get_state(),
                "pending": {name: value[:, :self.filled].clone() for name, value in self.pending.items()},
                "buffers": [buffer.state_dict() for buffer in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        config = self._config()
        for key, value in state["config"].items():
            if config[key] != value:
                raise ValueError(f"state_dict: {key} is {value!r} in the checkpoint but {config[key]!r} here")
        self.filled = state["filled"]
        self.rng.set_state(state["rng"])
        for name, value in self.pending.items():
            value[:, :self.filled] = state["pending"][name]
        for buffer, buffer_state in zip(self.buffers, state["buffers"]):
            buffer.load_state_dict(buffer_state)


def make_replay(kind: str, capacity: int, chunk_length: int, spec: Spec, num_envs: int, seed: int = 0,
                device: torch.device | str = "cpu", wmar_split: str = "buffer") -> Replay:
    """A ``fifo``, ``reservoir`` or ``wmar`` replay of ``capacity`` env steps in total (module docstring)."""
    return Replay(kind, capacity, chunk_length, spec, num_envs, seed, device, wmar_split)
