"""The Atari vector adapter (envs/atari.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("ale_py")

import envs  # noqa: E402
from envs.atari import AtariVector  # noqa: E402
from test_continual import check_vector_env  # noqa: E402


def test_passes_the_vector_env_checks_in_each_layout():
    for kwargs, shape in (({}, (84, 84, 1)), ({"grayscale": False, "size": 64}, (64, 64, 3)),
                          ({"frame_stack": 2}, (84, 84, 2))):
        env = AtariVector(2, "breakout", num_threads=1, **kwargs)
        assert env.single_observation_space.shape == shape
        check_vector_env(env, steps=15)


def test_returns_are_true_game_scores_and_life_losses_are_terminal_only_with_episodic_life():
    # The same seed and actions with clipped rewards and life-loss terminals, and with raw rewards.
    kwargs = {"repeat_action_probability": 0.0, "num_threads": 1}
    life = AtariVector(2, "breakout", episodic_life=True, **kwargs)
    raw = AtariVector(2, "breakout", reward_clipping=False, **kwargs)
    life.reset(seed=5)
    raw.reset(seed=5)
    rng = np.random.default_rng(0)
    total, lives_lost, games = np.zeros(2), 0, 0
    for _ in range(300):
        a = rng.integers(0, 4, 2)
        obs_l, r_l, te_l, tr_l, info_l = life.step(a)
        obs_r, r_r, te_r, tr_r, info_r = raw.step(a)
        np.testing.assert_array_equal(obs_l, obs_r)  # the game goes on through life losses
        np.testing.assert_array_equal(r_l, np.clip(r_r, -1, 1))
        total += r_r
        game_over = te_r | tr_r
        assert (info_l["_episode"] == game_over).all() and (te_l >= te_r).all()
        np.testing.assert_array_equal(info_l["episode"]["r"][game_over], total[game_over])
        lives_lost += (te_l & ~te_r).sum()
        games += game_over.sum()
        total[game_over] = 0.0
    assert games >= 2 and total.max() > 1 and lives_lost >= 4 * games - 2  # Breakout: 5 lives a game


def test_games_cut_at_the_frame_limit_end_as_truncated():
    env = AtariVector(2, "breakout", max_episode_frames=200, num_threads=1)  # 50 agent steps at frame skip 4
    env.reset(seed=0)
    ends = []
    for t in range(1, 61):
        _, _, terminated, truncated, info = env.step(np.ones(2, int))
        if truncated.any():
            ends.append(t)
            assert truncated.all() and info["_episode"].all() and (info["episode"]["l"] == t).all()
    assert ends == [50]


def test_wmar_setting_from_the_registry():
    env = envs.make_vector("rlmem/atari-ms_pacman-v0", 2, full_action_space=True, grayscale=False, size=64,
                           repeat_action_probability=0.0, num_threads=1)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 64, 64, 3) and obs.dtype == np.uint8 and env.single_action_space.n == 18


def test_bad_arguments_raise_one_line_errors():
    cases = [({"game": "MsPacman"}, "game: unknown Atari game 'MsPacman'; accepted: adventure, "),
             ({"size": 100}, "size: 100 not supported; accepted: 64, 84"),
             ({"frameskip": 0}, "frameskip must be an integer >= 1"),
             ({"repeat_action_probability": 1.5}, "repeat_action_probability must be in [0, 1]")]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as err:
            AtariVector(2, **kwargs)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="seed: expected an int or 2 ints"):
        AtariVector(2, num_threads=1).reset(seed=[1, 2, 3])


def test_ppo_trains_on_atari():
    from agents.ppo import PPO, Agent, PPOConfig

    env = envs.make_vector("rlmem/atari-breakout-v0", 8, size=64, num_threads=1)
    cfg = PPOConfig(num_envs=8, rollout_len=8, total_steps=8 * 8 * 2, num_minibatches=2, update_epochs=1)
    ppo = PPO(env, Agent(env.single_observation_space, int(env.single_action_space.n), "gru"), cfg,
              torch.device("cpu"))
    for _ in range(2):
        assert math.isfinite(ppo.iterate()["policy_loss"])
