"""Color-Cubes (Shchendrigin et al., "Memory Retention Is Not Enough to Master Memory Tasks in RL").

``n_cubes`` cubes of distinct colours sit on distinct cells of a ``grid x grid`` board. An episode has ``n_phases``
phases; each phase has a target colour and reaching the cube of that colour gives +1, ends the phase, sends that cube
to a random free cell and assigns a new target (one of the other colours). Finishing the last phase ends the episode
(terminated, ``info["success"] = True``); ``horizon`` steps truncate it. Every step each non-target cube teleports to
a random free cell with probability ``p``. The agent sees the whole board only at the episode start; afterwards the
cubes are hidden except on the step right after a non-target teleport, when an update shows them again:

- ``trivial``: one cube, one phase. Remember where it was: retention only.
- ``medium`` (default): updates show every cube's position and colour. Each update overwrites the map in memory.
- ``extreme``: updates show the cubes' positions only, sorted by cell so the slot order says nothing either; the
  agent must work out which cube moved by comparing with its map (two cubes jumping at once stay ambiguous).

The paper leaves G, N, K, p, the actions and the horizon open; our defaults: a 5 x 5 grid (its figure's size),
4 cubes and 4 phases, ``p = 0.05`` (a given cube has about a 1 in 4 chance of moving during a phase of ~5 steps, so the
map goes stale within an episode, while simultaneous jumps that blur Extreme stay rare) and a horizon of
``4 * (grid - 1)`` steps per phase (twice the longest shortest path, room for a detour). ``level`` picks cubes, phases
and the update style; explicit arguments override them.

Deviation: the reference says the full state is shown at each phase start. Then the target is visible at the start of
every phase and never moves during it, so the teleports would not matter and no rewriting would be needed. We show
the full state only at the episode start and move the reached target silently; ``phase_reveal=True`` restores the
reference wording (a reveal at every phase start) as a retention-only control.

- Actions: 0 up (y+1), 1 right (x+1), 2 down, 3 left, 4 stay; walls block, non-target cubes do not.
- Observation (float32, ``3 + 3N + N^2`` values, positions scaled by ``1 / (grid - 1)``):
  ``[agent x, agent y, target colour one-hot (N), N slots of [x, y, colour one-hot (N)], visible]``. The target is
  always shown; the slots are zero while the cubes are hidden; a full view lists cube ``i`` in slot ``i`` with its
  colour; an Extreme update leaves the colours zero.
- ``info["phases"]``: phases completed in the episode.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor

from envs.gridworld.base import RESET_SLOT, STEP_SLOT, BatchedEnv, SingleEnv
from envs.gridworld.rng import CopyRNG, hash32

UP, RIGHT, DOWN, LEFT, STAY = 0, 1, 2, 3, 4
_DX = (0, 1, 0, -1, 0)
_DY = (1, 0, -1, 0, 0)
HIDDEN, FULL, POSITIONS = 0, 1, 2  # what the current observation shows of the cubes
LEVELS = {"trivial": {"n_cubes": 1, "n_phases": 1, "colours_on_update": True},
          "medium": {"n_cubes": 4, "n_phases": 4, "colours_on_update": True},
          "extreme": {"n_cubes": 4, "n_phases": 4, "colours_on_update": False}}
STEP_SLOTS = 32  # draws a step may make per copy: n_cubes + 2 here


def grid_tables(size: int, device) -> tuple[Tensor, Tensor]:
    """Lookup tables of a ``size x size`` grid: the cell each action leads to ``[C, 5]`` (walls block) and each
    cell's position scaled to [0, 1] ``[C, 2]``, so a move or an observed position costs one indexing op."""
    cells = torch.arange(size * size, device=device)
    x, y = cells // size, cells % size
    nx = (x.unsqueeze(1) + torch.tensor(_DX, device=device)).clamp(0, size - 1)
    ny = (y.unsqueeze(1) + torch.tensor(_DY, device=device)).clamp(0, size - 1)
    return nx * size + ny, torch.stack([x, y], 1).float() / (size - 1)


def shuffled_cells(bits: Tensor, cells: Tensor, taken: Tensor | None = None) -> Tensor:
    """Every cell per copy in a random order drawn from ``bits [B]``, cells in ``taken [B, C]`` last: ``[B, C]``."""
    keys = hash32(bits.unsqueeze(1) + cells)  # one 32-bit key per cell, from one draw per copy
    if taken is not None:
        keys = keys + taken.long() * 2**32
    return keys.argsort(dim=1, stable=True)


class ColorCubesVector(BatchedEnv):
    state_keys = ("agent", "cubes", "target", "phase", "show")

    def __init__(self, num_envs: int = 1, device="cpu", autoreset: bool = True, level: str = "medium",
                 grid: int = 5, n_cubes: int | None = None, n_phases: int | None = None, p: float = 0.05,
                 horizon: int | None = None, phase_reveal: bool = False):
        if level not in LEVELS:
            raise ValueError(f"level: unknown level {level!r}; accepted: {', '.join(LEVELS)}")
        n_cubes = LEVELS[level]["n_cubes"] if n_cubes is None else n_cubes
        n_phases = LEVELS[level]["n_phases"] if n_phases is None else n_phases
        if not isinstance(grid, int) or grid < 2:
            raise ValueError(f"grid: board side must be an integer >= 2, got {grid!r}")
        most = min(STEP_SLOTS - 2, (grid * grid - 1) // 2)  # every cube can jump to a free cell at once
        if not isinstance(n_cubes, int) or not 1 <= n_cubes <= most:
            raise ValueError(f"n_cubes: must be an integer in [1, {most}] for grid {grid}, got {n_cubes!r}")
        if not isinstance(n_phases, int) or n_phases < 1:
            raise ValueError(f"n_phases: must be an integer >= 1, got {n_phases!r}")
        if not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p: teleport probability must be a number in [0, 1], got {p!r}")
        horizon = 4 * (grid - 1) * n_phases if horizon is None else horizon
        if not isinstance(horizon, int) or horizon < 1:
            raise ValueError(f"horizon: must be an integer >= 1, got {horizon!r}")
        super().__init__(num_envs, device, autoreset)
        self.level, self.grid, self.n_cubes, self.n_phases, self.p = level, grid, n_cubes, n_phases, float(p)
        self.update_view = FULL if LEVELS[level]["colours_on_update"] else POSITIONS
        self.phase_reveal = phase_reveal
        self.max_steps = horizon
        n, dev = n_cubes, self.device
        self.single_observation_space = spaces.Box(0.0, 1.0, (3 + 3 * n + n * n,), np.float32)
        self.single_action_space = spaces.Discrete(5)
        self._finish_spaces()
        self.next_cell, self.cell_xy = grid_tables(grid, dev)
        self.cells = torch.arange(grid * grid, device=dev)
        self.colours = torch.arange(n, device=dev)
        self.eye = torch.eye(n, device=dev)
        # Several draws per copy from one hash call: the same numbers as self.integers(slot) at each slot.
        self.rng_rows = CopyRNG(self.seeds.unsqueeze(1))
        self.reset_slots = torch.arange(RESET_SLOT, RESET_SLOT + 2, device=dev)  # cell order, target
        self.step_slots = torch.arange(STEP_SLOT, STEP_SLOT + n + 2, device=dev)  # n jumps, cell order, next target
        self.agent = torch.zeros(num_envs, dtype=torch.int64, device=dev)  # cell = x * grid + y
        self.cubes = torch.zeros(num_envs, n, dtype=torch.int64, device=dev)  # cell of the cube of colour i
        self.target = torch.zeros(num_envs, dtype=torch.int64, device=dev)
        self.phase = torch.zeros(num_envs, dtype=torch.int64, device=dev)
        self.show = torch.zeros(num_envs, dtype=torch.int64, device=dev)

    def _draw(self, slots: Tensor) -> Tensor:
        return self.rng_rows.bits(self.counter.unsqueeze(1), slots)  # [N, len(slots)]

    def _occupied(self) -> Tensor:
        """Cells holding a cube or the agent, ``[B, C]`` bool."""
        return (self.cubes.unsqueeze(2) == self.cells).any(1) | (self.agent.unsqueeze(1) == self.cells)

    def _reset_copies(self, mask):
        bits = self._draw(self.reset_slots)
        cells = shuffled_cells(bits[:, 0], self.cells)[:, :self.n_cubes + 1]  # distinct: agent, then the cubes
        self.agent.copy_(torch.where(mask, cells[:, 0], self.agent))
        self.cubes.copy_(torch.where(mask.unsqueeze(1), cells[:, 1:], self.cubes))
        self.target.copy_(torch.where(mask, bits[:, 1] % self.n_cubes, self.target))
        self.phase.masked_fill_(mask, 0)
        self.show.masked_fill_(mask, FULL)

    def _transition(self, action):
        n = self.n_cubes
        self.agent.copy_(self.next_cell[self.agent, action])
        is_target = self.colours == self.target.unsqueeze(1)  # [B, N]
        reached = self.agent == self.cubes.gather(1, self.target.unsqueeze(1)).squeeze(1)
        self.phase += reached.long()
        success = self.phase >= self.n_phases
        next_phase = reached & ~success
        bits = self._draw(self.step_slots)
        jump = (bits[:, :n].float() * (1.0 / 4294967296.0) < self.p) & ~is_target  # [B, N]
        moves = jump | (is_target & next_phase.unsqueeze(1))  # the reached target leaves silently
        # The k-th mover takes the k-th free cell of a random order: uniform, and no two movers share a cell.
        free_first = shuffled_cells(bits[:, n], self.cells, self._occupied())
        rank = (moves.long().cumsum(1) - 1).clamp_(min=0)
        self.cubes.copy_(torch.where(moves, free_first.gather(1, rank), self.cubes))
        if n > 1:
            other = (self.target + 1 + bits[:, n + 1] % (n - 1)) % n
            self.target.copy_(torch.where(next_phase, other, self.target))
        show = torch.where(jump.any(1), self.update_view, HIDDEN)
        if self.phase_reveal:
            show = torch.where(next_phase, FULL, show)
        self.show.copy_(show)
        return reached.float(), success, {"success": success, "phases": self.phase.clone()}

    def _observe(self):
        full = (self.show == FULL).unsqueeze(1)
        visible = (self.show != HIDDEN).float().unsqueeze(1)  # [B, 1]
        slots = self.cubes
        if self.update_view == POSITIONS:  # an update lists cells in order, so slot i says nothing about colour i
            slots = torch.where(full, self.cubes, self.cubes.sort(1).values)
        colour = self.eye * full.unsqueeze(2)  # [B, N, N]
        cubes = torch.cat([self.cell_xy[slots], colour], 2).flatten(1) * visible  # [B, N * (2 + N)]
        return torch.cat([self.cell_xy[self.agent], self.eye[self.target], cubes, visible], 1)


class ColorCubes(SingleEnv):
    batched_cls = ColorCubesVector
