"""Episode statistics the rlmem way, for vector envs that do not keep their own (gymnasium's Sync/Async vectors).

PPO, Dreamer and evaluation read ``info["episode"]`` (``{"r": return so far, "l": length so far}`` for every copy)
and ``info["_episode"]`` (the copies whose episode ended on this step) after every step, as the batched gridworlds,
Procgen and Atari adapters report them. gymnasium's ``RecordEpisodeStatistics`` adds them only on steps where some
episode ends, so it does not serve here.
"""

from __future__ import annotations

import numpy as np
from gymnasium.vector import VectorEnv, VectorWrapper


class EpisodeStatistics(VectorWrapper):
    """Running return and length per copy, reported every step and zeroed where an episode ends (same-step
    autoreset: the observation returned there already starts the next episode)."""

    def __init__(self, env: VectorEnv):
        super().__init__(env)
        self.episode_return = np.zeros(env.num_envs, np.float32)
        self.episode_length = np.zeros(env.num_envs, np.int64)

    def reset(self, *, seed=None, options=None):
        self.episode_return[:] = 0.0
        self.episode_length[:] = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        ended = np.asarray(terminated) | np.asarray(truncated)
        self.episode_return += np.asarray(reward, np.float32)
        self.episode_length += 1
        info = dict(info) | {"episode": {"r": self.episode_return.copy(), "l": self.episode_length.copy()},
                             "_episode": ended}
        self.episode_return[ended] = 0.0
        self.episode_length[ended] = 0
        return obs, reward, terminated, truncated, info
