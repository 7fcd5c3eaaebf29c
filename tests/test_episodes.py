"""envs.episodes.EpisodeStatistics: episode return and length every step, matching a hand-summed reward stream."""

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from envs.episodes import EpisodeStatistics


def test_statistics_every_step_match_hand_summed_rewards():
    vec = EpisodeStatistics(SyncVectorEnv([lambda: gymnasium.make("CartPole-v1")] * 3,
                                          autoreset_mode=AutoresetMode.SAME_STEP))
    vec.reset(seed=0)
    running, ended_returns, reported = np.zeros(3), [], []
    rng = np.random.default_rng(0)
    for _ in range(300):
        obs, reward, terminated, truncated, info = vec.step(rng.integers(0, 2, 3))
        running += reward
        np.testing.assert_allclose(info["episode"]["r"], running)  # present on every step, for every copy
        done = terminated | truncated
        np.testing.assert_array_equal(info["_episode"], done)
        ended_returns += list(running[done])
        reported += list(info["episode"]["r"][done])
        running[done] = 0.0
    assert len(ended_returns) >= 3 and ended_returns == reported
    vec.close()
