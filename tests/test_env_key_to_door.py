"""Dark Key-to-Door: its rules, an oracle and a random policy, batched = single copies, the gymnasium checker."""

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers rlmem/*)
from envs.gridworld.key_to_door import DOWN, LEFT, RIGHT, STAY, UP, DarkKeyToDoor, DarkKeyToDoorVector
from batched_checks import assert_batched_equals_single


def make(n=1, **kw):
    env = DarkKeyToDoorVector(num_envs=n, **kw)
    env.reset(seed=0)
    return env


def place(env, agent, key, door):
    """Put copy 0's agent at ``agent`` (x, y) and its key and door on the given cells, at an episode start."""
    env.agent[0] = agent[0] * env.size + agent[1]
    env.key[0], env.door[0] = key[0] * env.size + key[1], door[0] * env.size + door[1]
    env.has_key[0], env.t[0] = False, 0


def step(env, action):
    obs, reward, terminated, truncated, info = env.step(torch.tensor([action]))
    return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info


def test_key_then_door_ends_the_episode_not_the_trial():
    env = make()
    place(env, (4, 4), key=(5, 4), door=(3, 4))
    _, r, *_ = step(env, LEFT)
    assert r == 0.0  # the door without the key is just a cell
    obs, r, *_ = step(env, RIGHT)
    assert r == 0.0 and obs[2] == 0.0
    obs, r, term, trunc, info = step(env, RIGHT)
    assert r == 1.0 and obs[2] == 1.0 and not info["episode_start"][0]
    _, r, *_ = step(env, STAY)
    assert r == 0.0  # the key pays once
    step(env, LEFT)
    obs, r, term, trunc, info = step(env, LEFT)
    assert r == 1.0 and not term and not trunc
    assert info["episode_start"][0] and info["doors"][0] == 1 and info["success"][0] == 1.0
    assert obs[2] == 0.0 and obs[3] == 0.0  # has_key cleared, clock back to 0
    assert env.key[0] == 5 * 9 + 4 and env.door[0] == 3 * 9 + 4  # same layout for the whole trial


def test_episode_time_limit_and_trial_end():
    env = make(episode_len=5, trial_len=12)
    place(env, (0, 0), key=(8, 8), door=(8, 7))
    starts = []
    for t in range(12):
        obs, r, term, trunc, info = step(env, STAY)
        starts.append(bool(info["episode_start"][0]))
        assert r == 0.0 and not trunc
        if t < 4:
            assert obs[3] == pytest.approx((t + 1) / 5)
    assert starts == [False] * 4 + [True] + [False] * 4 + [True] + [False] * 2
    assert term  # the trial's step budget ends the gymnasium episode
    assert info["success"][0] == 0.0 and info["doors"][0] == 0
    assert env.elapsed[0] == 0  # autoreset started a new trial


def test_key_and_door_on_one_cell():
    env = make()
    place(env, (2, 2), key=(2, 3), door=(2, 3))
    assert step(env, UP)[1] == 1.0  # arriving picks up the key
    _, r, _, _, info = step(env, STAY)
    assert r == 1.0 and info["episode_start"][0]


def test_walls_and_observation_scale():
    env = make()
    place(env, (0, 8), key=(4, 4), door=(5, 5))
    obs = step(env, LEFT)[0]
    obs = step(env, UP)[0]
    assert obs[:2].tolist() == [0.0, 1.0]
    obs = step(env, DOWN)[0]
    assert obs[1] == pytest.approx(7 / 8)


def run_trial(env, policy):
    """Run every copy for one trial; return the final info."""
    env.reset(seed=0)
    for _ in range(env.trial_len):
        _, _, terminated, _, info = env.step(policy(env))
    assert terminated.all()
    return info


def oracle(env):
    """Greedy moves to the key, then the door: it knows the hidden layout."""
    goal = torch.where(env.has_key, env.door, env.key)
    dx, dy = goal // env.size - env.agent // env.size, goal % env.size - env.agent % env.size
    return torch.where(dx > 0, RIGHT, torch.where(dx < 0, LEFT, torch.where(dy > 0, UP, torch.where(
        dy < 0, DOWN, STAY))))


def test_oracle_opens_the_door_in_every_episode():
    info = run_trial(DarkKeyToDoorVector(num_envs=256), oracle)
    assert (info["success"] == 1.0).all()
    assert info["doors"].min() >= 500 // 50  # every episode takes at most 2 * 16 + 1 steps


def test_random_policy_rarely_opens_the_door():
    g = torch.Generator().manual_seed(0)
    info = run_trial(DarkKeyToDoorVector(num_envs=256), lambda env: torch.randint(0, 5, (env.num_envs,), generator=g))
    assert info["success"].mean() < 0.1  # about 0.03


@pytest.mark.parametrize("kw", [{}, {"size": 3, "episode_len": 4, "trial_len": 10}])
def test_batched_equals_single_copies(kw):
    n = 6
    actions = torch.as_tensor(np.random.default_rng(0).integers(0, 5, (60, n)))
    assert_batched_equals_single(DarkKeyToDoorVector(num_envs=n, **kw), [DarkKeyToDoor(**kw) for _ in range(n)],
                                 lambda t: actions[t], steps=60, seed=11, info_keys=("episode_start",))


def test_state_dict_restores_into_a_differently_seeded_env():
    kw = {"size": 3, "episode_len": 4, "trial_len": 10}
    a, b = DarkKeyToDoorVector(num_envs=16, **kw), DarkKeyToDoorVector(num_envs=16, **kw)
    a.reset(seed=5)
    b.reset(seed=99)
    actions = torch.as_tensor(np.random.default_rng(0).integers(0, 5, (50, 16)))
    for t in range(7):
        a.step(actions[t])
    b.load_state_dict(a.state_dict())
    for t in range(7, 50):  # past episode and trial starts, so the copies' seeds must have come across too
        for x, y in zip(a.step(actions[t])[:4], b.step(actions[t])[:4]):
            assert torch.equal(x, y), t


def test_gymnasium_checker_and_registration():
    check_env(gymnasium.make("rlmem/DarkKeyToDoor-v0").unwrapped)
    env = gymnasium.make("rlmem/DarkKeyToDoor-v0", size=5)
    assert env.observation_space.shape == (4,) and env.action_space.n == 5
    vec = envs.make_vector("rlmem/DarkKeyToDoor-v0", num_envs=3, device="cpu")
    assert vec.reset(seed=0)[0].shape == (3, 4)


@pytest.mark.parametrize("kw, name", [({"size": 1}, "size"), ({"size": 4.5}, "size"),
                                      ({"episode_len": 0}, "episode_len"),
                                      ({"episode_len": 50, "trial_len": 40}, "trial_len")])
def test_bad_arguments_raise(kw, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        DarkKeyToDoorVector(num_envs=1, **kw)
