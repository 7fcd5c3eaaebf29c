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

from envs.gridworld.base import AUTORESET_SLOT, RESET_SLOT, STEP_SLOT, BatchedEnv, SingleEnv
from envs.gridworld.color_cubes import DOWN, LEFT, RIGHT, STAY, UP, grid_tables  # noqa: F401  (same actions)


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
        dev = self.device
        self.next_cell, cell_xy = grid_tables(size, dev)
        # The observation's [x, y, has_key] by one index: row 2 * cell + has_key.
        has_key = torch.tensor([[0.0], [1.0]], device=dev)
        self.place_table = torch.cat([cell_xy.repeat_interleave(2, 0), has_key.repeat(size * size, 1)], 1)
        self.reset_slots = torch.arange(RESET_SLOT, RESET_SLOT + 3, device=dev)  # key, door, start cells
        # A step's draws: the next episode's start cell; then its autoreset's key, door and start cells.
        self.step_slots = torch.cat([torch.tensor([STEP_SLOT], device=dev), self.reset_slots + AUTORESET_SLOT])
        # One row per copy, so a reset writes it with one op: the key, door and agent cells (x * size + y), the
        # steps taken in the episode, doors reached and episodes finished in the trial.
        self.state = torch.zeros(num_envs, 6, dtype=torch.int64, device=dev)
        self.key, self.door, self.agent, self.t, self.doors, self.finished = self.state.unbind(1)
        self.has_key = torch.zeros(num_envs, dtype=torch.bool, device=dev)
        self.autoreset_cells = torch.zeros(num_envs, 3, dtype=torch.int64, device=dev)  # each step redraws them

    def _reset_copies(self, mask):
        self._start_trials(mask, self.rng.bits(self.counter, self.reset_slots) % self.size ** 2)

    def _autoreset_copies(self, mask):
        self._start_trials(mask, self.autoreset_cells)

    def _start_trials(self, mask, cells):
        """New trials where ``mask [B]``: key, door and agent at ``cells [B, 3]``, all counts zero, no key."""
        torch.where(mask.unsqueeze(1), cells, self.state[:, :3], out=self.state[:, :3])
        self.state[:, 3:].masked_fill_(mask.unsqueeze(1), 0)
        self.has_key.masked_fill_(mask, False)

    def _transition(self, action):
        self.agent.copy_(self.next_cell[self.agent, action])
        got_key = (self.agent == self.key) & ~self.has_key
        opened = (self.agent == self.door) & self.has_key  # needs the key from an earlier step
        self.has_key |= got_key
        self.t += 1
        episode_over = opened | (self.t >= self.episode_len)
        self.doors += opened
        self.finished += episode_over
        terminated = self.elapsed >= self.trial_len - 1  # this step is the trial's last
        next_episode = episode_over & ~terminated
        cells = self.rng.bits(self.counter, self.step_slots) % self.size ** 2
        self.autoreset_cells = cells[:, 1:]
        # The next episode of the trial: the agent at a fresh start, no key, clock at 0.
        torch.where(next_episode, cells[:, 0], self.agent, out=self.agent)
        self.has_key.masked_fill_(next_episode, False)
        self.t.masked_fill_(next_episode, 0)
        success = self.doors / self.finished.clamp(min=1)  # float32
        reward = (got_key | opened).float()  # exclusive: picking up needs no key, opening needs one
        return reward, terminated, {"success": success, "doors": self.doors.clone(), "episode_start": next_episode}

    def _observe(self):
        place = self.place_table[torch.add(self.has_key, self.agent, alpha=2)]
        return torch.cat([place, self.t.unsqueeze(1) / self.episode_len], 1)  # int / int: float32


class DarkKeyToDoor(SingleEnv):
    batched_cls = DarkKeyToDoorVector
