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

from envs.gridworld.base import AUTORESET_SLOT, RESET_SLOT, STEP_SLOT, BatchedEnv, SingleEnv
from envs.gridworld.rng import hash32

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


def cell_keys(bits: Tensor, cells: Tensor) -> Tensor:
    """A 32-bit key per cell from one draw ``bits [...]``: ``[..., C]``. The keys are distinct (fmix32 is a bijection),
    so sorting them puts the cells in a random order."""
    return hash32(bits.unsqueeze(-1) + cells)


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
        self._build_view_tables()
        # A jump is the float32 test bits / 2**32 < p; this bound asks the same without the division.
        self.jump_below = float(np.float32(self.p)) * 2**32
        # The next target after target t with draw r < n - 1: one of the other colours.
        self.other_target = (self.colours.unsqueeze(1) + 1 + torch.arange(n - 1, device=dev)) % n  # [N, N - 1]
        self.reset_slots = torch.arange(RESET_SLOT, RESET_SLOT + 2, device=dev)  # cell order, target
        # A step's draws by column: n jumps (slots STEP_SLOT + i), next target (+ n + 1), cell order (+ n), then its
        # autoreset's cell order and target; the two cell orders side by side, to be hashed together.
        jumps = list(range(STEP_SLOT, STEP_SLOT + n))
        self.step_slots = torch.tensor(jumps + [STEP_SLOT + n + 1, STEP_SLOT + n, AUTORESET_SLOT, AUTORESET_SLOT + 1],
                                       device=dev)
        # One row per copy, so a reset writes it with one op: agent, the cell of the cube of each colour, target,
        # phase, show. Cells are x * grid + y; show says what the current observation shows of the cubes.
        self.state = torch.zeros(num_envs, n + 4, dtype=torch.int64, device=dev)
        self.agent, self.cubes = self.state[:, 0], self.state[:, 1:n + 1]
        self.target, self.phase, self.show = self.state[:, n + 1], self.state[:, n + 2], self.state[:, n + 3]
        self.episode_start = torch.tensor([[0, FULL]], device=dev).expand(num_envs, 2)  # phase, show
        self.autoreset_rows = self.state.clone()  # each step draws the rows its autoreset would start from

    def _build_view_tables(self) -> None:
        """Observation pieces by index: agent and target ``[C * N, 2 + N]``, a slot by (show, cell, slot)
        ``[3 * C, N, 2 + N]`` and the visible flag by show ``[3, 1]``."""
        n, cells = self.n_cubes, self.grid * self.grid
        xy = self.cell_xy.unsqueeze(1).expand(cells, n, 2)
        with_colour = torch.cat([xy, torch.eye(n, device=self.device).expand(cells, n, n)], 2)  # [C, N, 2 + N]
        self.head_table = with_colour.flatten(0, 1)  # row agent * N + target
        slot = {HIDDEN: torch.zeros_like(with_colour), FULL: with_colour,
                POSITIONS: torch.cat([xy, torch.zeros(cells, n, n, device=self.device)], 2)}
        self.slot_table = torch.cat([slot[show] for show in (HIDDEN, FULL, POSITIONS)])  # row show * C + cell
        self.visible_table = torch.tensor([[0.0], [1.0], [1.0]], device=self.device)  # by HIDDEN, FULL, POSITIONS

    def _new_episode_rows(self, order: Tensor, target_bits: Tensor) -> Tensor:
        """State rows ``[B, N + 4]`` of new episodes: the agent, then the cubes, on the first cells of ``order [B, C]``
        (distinct cells), the target drawn from ``target_bits [B, 1]``."""
        return torch.cat([order[:, :self.n_cubes + 1], target_bits % self.n_cubes, self.episode_start], 1)

    def _reset_copies(self, mask):
        bits = self.rng.bits(self.counter, self.reset_slots)
        order = cell_keys(bits[:, 0], self.cells).argsort(dim=1, stable=True)
        torch.where(mask.unsqueeze(1), self._new_episode_rows(order, bits[:, 1:]), self.state, out=self.state)

    def _autoreset_copies(self, mask):
        torch.where(mask.unsqueeze(1), self.autoreset_rows, self.state, out=self.state)

    def _transition(self, action):
        n = self.n_cubes
        self.agent.copy_(self.next_cell[self.agent, action])
        not_target = self.colours != self.target.unsqueeze(1)  # [B, N]
        reached = self.agent == self.cubes.gather(1, self.target.unsqueeze(1)).squeeze(1)
        self.phase += reached
        success = self.phase >= self.n_phases
        next_phase = reached & ~success
        bits = self.rng.bits(self.counter, self.step_slots)  # [B, N + 4]
        jump = (bits[:, :n].float() < self.jump_below) & not_target  # [B, N]
        moves = torch.where(not_target, jump, next_phase.unsqueeze(1))  # the reached target leaves silently
        # Two cell orders from one hash and one sort: this step's, with the occupied cells moved last (the free ones
        # keep their order), and its autoreset's.
        keys = cell_keys(bits[:, n + 1:n + 3], self.cells)  # [B, 2, C]
        keys[:, 0].scatter_(1, self.state[:, :n + 1], 2**32)  # above every key
        order = keys.argsort(dim=2, stable=True)
        self.autoreset_rows = self._new_episode_rows(order[:, 1], bits[:, n + 3:])
        # The k-th mover takes the k-th free cell of a random order: uniform, and no two movers share a cell.
        movers_before = torch.add(moves.cumsum(1), moves, alpha=-1)  # (bool tensors refuse a plain minus)
        torch.where(moves, order[:, 0].gather(1, movers_before), self.cubes, out=self.cubes)
        if n > 1:
            other = self.other_target[self.target, bits[:, n] % (n - 1)]
            torch.where(next_phase, other, self.target, out=self.target)
        torch.mul(jump.any(1), self.update_view, out=self.show)  # HIDDEN is 0
        if self.phase_reveal:
            self.show.masked_fill_(next_phase, FULL)
        return reached.float(), success, {"success": success, "phases": self.phase.clone()}

    def _observe(self):
        slots = self.cubes
        if self.update_view == POSITIONS:  # an update lists cells in order, so slot i says nothing about colour i
            slots = torch.where((self.show == FULL).unsqueeze(1), self.cubes, self.cubes.sort(1).values)
        head = self.head_table[torch.add(self.target, self.agent, alpha=self.n_cubes)]  # [B, 2 + N]
        cubes = self.slot_table[torch.add(slots, self.show.unsqueeze(1), alpha=self.grid ** 2), self.colours]
        return torch.cat([head, cubes.flatten(1), self.visible_table[self.show]], 1)


class ColorCubes(SingleEnv):
    batched_cls = ColorCubesVector
