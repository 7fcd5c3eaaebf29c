"""The Procgen vector adapter (envs/procgen.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("gym3")

import envs  # noqa: E402
from envs.procgen import COINRUN_SEQUENCE, ProcgenVector, variant_options  # noqa: E402
from test_continual import check_vector_env  # noqa: E402


def test_passes_the_vector_env_checks():
    env = ProcgenVector(3, "starpilot", "easy")
    assert env.single_observation_space.shape == (64, 64, 3) and env.single_observation_space.dtype == np.uint8
    check_vector_env(env, steps=30)


def test_episode_returns_equal_the_summed_rewards_and_ends_are_terminations():
    env = ProcgenVector(16, "jumper", "easy")  # random play ends (and wins) jumper levels often
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    total, length, ends, wins = np.zeros(16), np.zeros(16, int), 0, 0
    for _ in range(200):
        _, reward, terminated, truncated, info = env.step(rng.integers(0, 15, 16))
        total, length = total + reward, length + 1
        assert not truncated.any() and (info["_episode"] == terminated).all()
        done = terminated
        np.testing.assert_allclose(info["episode"]["r"][done], total[done])
        np.testing.assert_array_equal(info["episode"]["l"][done], length[done])
        np.testing.assert_array_equal(info["success"][done], total[done] == 10.0)  # 10 for the carrot
        ends, wins = ends + done.sum(), wins + info["success"].sum()
        total[done], length[done] = 0.0, 0
    assert ends >= 10 and wins >= 1


def test_variants_map_onto_procgen_options_and_change_the_pixels():
    assert variant_options(COINRUN_SEQUENCE[-1]) == {"use_backgrounds": False, "restrict_themes": True,
                                                     "use_generated_assets": True, "use_monochrome_assets": True,
                                                     "center_agent": False}
    assert variant_options("CA") == variant_options("") | {"center_agent": False}
    plain, _ = ProcgenVector(2, "coinrun", num_levels=1, start_level=7).reset(seed=0)
    bare, _ = ProcgenVector(2, "coinrun", num_levels=1, start_level=7, variant="NB").reset(seed=0)
    again, _ = ProcgenVector(2, "coinrun", num_levels=1, start_level=7).reset(seed=0)
    np.testing.assert_array_equal(plain, again)
    assert (plain != bare).any()


def test_memory_mode_from_the_registry():
    env = envs.make_vector("rlmem/procgen-maze-v0", 2, distribution_mode="memory")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 64, 64, 3)
    obs, *_ = env.step(np.zeros(2, int))
    assert obs.shape == (2, 64, 64, 3)


def test_bad_names_raise_one_line_errors():
    cases = [({"game": "coinrunn"}, "game: unknown Procgen game 'coinrunn'; accepted: bigfish, "),
             ({"distribution_mode": "medium"}, "distribution_mode: unknown mode 'medium'; accepted: easy, hard"),
             ({"distribution_mode": "memory"}, "distribution_mode: coinrun has no 'memory' mode; games with it: "
                                               "caveflyer, dodgeball"),
             ({"variant": "NB+XX"}, "variant: unknown tag 'XX' in 'NB+XX'; accepted: tags NB, RT, GA, MA, CA"),
             ({"num_levels": -1}, "num_levels must be a non-negative integer")]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as err:
            ProcgenVector(2, **kwargs)
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="seed: Procgen takes one int"):
        ProcgenVector(2).reset(seed=[1, 2])


def test_ppo_trains_on_procgen():
    from agents.ppo import PPO, Agent, PPOConfig

    env = envs.make_vector("rlmem/procgen-coinrun-v0", 8, distribution_mode="easy")
    cfg = PPOConfig(num_envs=8, rollout_len=8, total_steps=8 * 8 * 2, num_minibatches=2, update_epochs=1)
    ppo = PPO(env, Agent(env.single_observation_space, 15, "gru"), cfg, torch.device("cpu"))
    for _ in range(2):
        assert math.isfinite(ppo.iterate()["policy_loss"])
