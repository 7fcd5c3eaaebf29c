"""Endless T-Maze (Shchendrigin et al., "Memory Retention Is Not Enough to Master Memory Tasks in RL").

A chain of ``n`` corridors. At the start of each corridor (x = 0) the agent sees a left/right cue that makes every
earlier cue obsolete; it walks forward to the junction at x = length and turns. The right turn gives +1 and starts
the next corridor with a fresh cue; the wrong turn gives -1 and ends the episode. Passing all ``n`` corridors ends
the episode with ``info["success"] = True``.

- Observation ``[x / l_max, cue_left, cue_right]`` (float32; the cue is zero away from x = 0).
- Actions: 0 forward, 1 left, 2 right.
- Rewards: every step costs ``step_penalty``; an action that cannot be taken (a turn inside a corridor, forward at
  the junction) costs ``invalid_penalty`` more and does not move the agent; a turn at the junction gives +1 or -1.
  The paper names a small penalty for both without values: 0.01 each is our choice.
- Modes: ``fixed`` (every corridor has length ``l_max``) or ``uniform`` (each length drawn from U[1, l_max]).
- Time limit ``6 * (l_max + 1) * n`` steps (truncation).
- ``info["corridors"]``: corridors passed so far in the episode.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from envs.gridworld.base import RESET_SLOT, STEP_SLOT, BatchedEnv, SingleEnv

FORWARD, LEFT, RIGHT = 0, 1, 2
MODES = ("fixed", "uniform")


class EndlessTMazeVector(BatchedEnv):
    state_keys = ("corridor", "x", "length", "cue")

    def __init__(self, num_envs: int = 1, device="cpu", autoreset: bool = True, n: int = 3, l_max: int = 5,
                 mode: str = "fixed", step_penalty: float = 0.01, invalid_penalty: float = 0.01):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n: number of corridors must be an integer >= 1, got {n!r}")
        if not isinstance(l_max, int) or l_max < 1:
            raise ValueError(f"l_max: corridor length must be an integer >= 1, got {l_max!r}")
        if mode not in MODES:
            raise ValueError(f"mode: unknown mode {mode!r}; accepted: {', '.join(MODES)}")
        super().__init__(num_envs, device, autoreset)
        self.n, self.l_max, self.mode = n, l_max, mode
        self.step_penalty, self.invalid_penalty = float(step_penalty), float(invalid_penalty)
        self.max_steps = 6 * (l_max + 1) * n
        self.single_observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
        self.single_action_space = spaces.Discrete(3)
        self._finish_spaces()
        zeros = lambda: torch.zeros(num_envs, dtype=torch.int64, device=self.device)  # noqa: E731
        self.corridor, self.x, self.length, self.cue = zeros(), zeros(), zeros(), zeros()

    def _corridor_length(self, slot: int):
        if self.mode == "fixed":
            return torch.full_like(self.x, self.l_max)
        return 1 + self.integers(slot, self.l_max)

    def _reset_copies(self, mask):
        self.corridor.masked_fill_(mask, 0)
        self.x.masked_fill_(mask, 0)
        self.length.copy_(torch.where(mask, self._corridor_length(RESET_SLOT), self.length))
        self.cue.copy_(torch.where(mask, self.integers(RESET_SLOT + 1, 2), self.cue))

    def _transition(self, action):
        at_junction = self.x == self.length
        forward = action == FORWARD
        moves = forward & ~at_junction
        turn = ~forward & at_junction
        invalid = ~moves & ~turn
        correct = turn & (action == self.cue + 1)
        wrong = turn & ~correct
        reward = (-self.step_penalty - self.invalid_penalty * invalid.float()
                  + correct.float() - wrong.float())
        self.x += moves.long()
        self.corridor += correct.long()
        success = self.corridor == self.n
        terminated = wrong | success
        # A passed corridor that is not the last one starts the next: x = 0 with a fresh length and cue.
        nxt = correct & ~success
        self.x.masked_fill_(nxt, 0)
        self.length.copy_(torch.where(nxt, self._corridor_length(STEP_SLOT), self.length))
        self.cue.copy_(torch.where(nxt, self.integers(STEP_SLOT + 1, 2), self.cue))
        return reward, terminated, {"success": success, "corridors": self.corridor.clone()}

    def _observe(self):
        at_start = (self.x == 0).float()
        return torch.stack([self.x.float() / self.l_max,
                            at_start * (self.cue == 0).float(),
                            at_start * (self.cue == 1).float()], dim=-1)


class EndlessTMaze(SingleEnv):
    batched_cls = EndlessTMazeVector
