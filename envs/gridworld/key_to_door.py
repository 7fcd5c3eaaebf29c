"""Dark Key-to-Door, the meta-RL gridworld of Algorithm Distillation (Laskin et al. 2022) as used by Memo.

A ``size x size`` room holds an invisible key and an invisible door, placed uniformly at random once per *trial* and
kept for the whole trial (they may share a cell, as in the original 81^2 task space). A trial of ``trial_len`` steps
is cut into *episodes* of at most ``episode_len`` steps. Reaching the key gives +1 (once per episode); reaching the door
while holding the key gives +1 and ends the episode. The agent sees only where it is, so it must find the key and the
door by exploring and remember them across episodes to collect them faster in later ones.

- The gymnasium episode is the *trial*: its end is ``terminated`` (the step budget is part of the task, no reward
  follows it) and it is where a memory is reset. Episode boundaries inside a trial are not gymnasium boundaries: at
  the step that ends an episode the returned observation already shows the next episode's start (agent at a fresh
  start cell, ``has_key`` cleared, ``t`` back to 0) and ``info["episode_start"]`` is true.
- Start cell: uniform and fresh at every episode start, following AD's description of the task (a random initial
  location each episode). Re-implementations differ: AMAGO draws one start per trial, CORL's toy-meta-gym uses the
  centre, a minimal AD replication a corner.
- Observation ``[x / (size-1), y / (size-1), has_key, t / episode_len]`` (float32, all in [0, 1]); ``t`` counts the
  steps taken in the current episode.
- Actions: 0 up (y+1), 1 right (x+1), 2 down, 3 left, 4 stay; moves into a wall leave the agent in place.
- Key and door on one cell: arriving there picks up the key; the door opens on a later step there (e.g. stay).
- ``info["doors"]``: doors reached so far in the trial. ``info["success"]``: doors / finished episodes, where an
  episode finishes at its door or its time limit; the episode cut short by the trial's end is not counted (it never
  had its full time), so an agent that opens the door in every episode scores 1.0. Read both at the trial's end.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from envs.gridworld.base import RESET_SLOT, STEP_SLOT, BatchedEnv, SingleEnv
from envs.gridworld.color_cubes import DOWN, LEFT, RIGHT, STAY, UP, grid_tables  # noqa: F401  (same actions)
from envs.gridworld.rng import CopyRNG


class DarkKeyToDoorVector(BatchedEnv):
    state_keys = ("agent", "key", "door", "has_key", "t", "doors", "finished")

    def __init__(self, num_envs: int = 1, device="cpu", autoreset: bool = True, size: int = 9,
                 episode_len: int = 50, trial_len: int = 500):
        if not isinstance(size, int) or size < 2:
            raise ValueError(f"size: room side must be an integer >= 2, got {size!r}")
        if not isinstance(episode_len, int) or episode_len < 1:
            raise ValueError(f"episode_len: must be an integer >= 1, got {episode_len!r}")
        if not isinstance(trial_len, int) or trial_len < episode_len:
            raise ValueError(f"trial_len: must be an integer >= episode_len ({episode_len}), got {trial_len!r}")
        super().__init__(num_envs, device, autoreset)
        self.size, self.episode_len, self.trial_len = size, episode_len, trial_len
        self.max_steps = trial_len
        self.single_observation_space = spaces.Box(0.0, 1.0, (4,), np.float32)
        self.single_action_space = spaces.Discrete(5)
        self._finish_spaces()
        self.next_cell, self.cell_xy = grid_tables(size, self.device)
        # Several draws per copy from one hash call: the same numbers as self.integers(slot) at each slot.
        self.rng_rows = CopyRNG(self.seeds.unsqueeze(1))
        self.reset_slots = torch.arange(RESET_SLOT, RESET_SLOT + 3, device=self.device)
        zeros = lambda: torch.zeros(num_envs, dtype=torch.int64, device=self.device)  # noqa: E731
        self.agent, self.key, self.door = zeros(), zeros(), zeros()  # cells: x * size + y
        self.has_key = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self.t, self.doors, self.finished = zeros(), zeros(), zeros()

    def _reset_copies(self, mask):
        cells = self.rng_rows.integers(self.counter.unsqueeze(1), self.reset_slots, self.size * self.size)  # [N, 3]
        self.key.copy_(torch.where(mask, cells[:, 0], self.key))
        self.door.copy_(torch.where(mask, cells[:, 1], self.door))
        self._place_agent(mask, cells[:, 2])
        for v in (self.doors, self.finished):
            v.masked_fill_(mask, 0)

    def _place_agent(self, mask, cell):
        """Start an episode where ``mask``: the agent at ``cell``, no key, clock at 0."""
        self.agent.copy_(torch.where(mask, cell, self.agent))
        self.has_key.masked_fill_(mask, False)
        self.t.masked_fill_(mask, 0)

    def _transition(self, action):
        self.agent.copy_(self.next_cell[self.agent, action])
        got_key = (self.agent == self.key) & ~self.has_key
        opened = (self.agent == self.door) & self.has_key  # needs the key from an earlier step
        self.has_key |= got_key
        self.t += 1
        episode_over = opened | (self.t >= self.episode_len)
        self.doors += opened.long()
        self.finished += episode_over.long()
        terminated = self.elapsed + 1 >= self.trial_len
        next_episode = episode_over & ~terminated
        self._place_agent(next_episode, self.integers(STEP_SLOT, self.size * self.size))
        success = self.doors.float() / self.finished.clamp(min=1).float()
        reward = (got_key | opened).float()  # exclusive: picking up needs no key, opening needs one
        return reward, terminated, {"success": success, "doors": self.doors.clone(), "episode_start": next_episode}

    def _observe(self):
        return torch.cat([self.cell_xy[self.agent], self.has_key.float().unsqueeze(1),
                          self.t.float().unsqueeze(1) / self.episode_len], 1)


class DarkKeyToDoor(SingleEnv):
    batched_cls = DarkKeyToDoorVector
