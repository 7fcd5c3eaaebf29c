"""Endless T-Maze rules (REFERENCES.md, memory-rewriting tasks), batched = single, seeding and checkpoints."""

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from envs.gridworld.tmaze import FORWARD, LEFT, RIGHT, EndlessTMazeVector
from batched_checks import assert_batched_equals_single

STEP = -0.01
INVALID = -0.02  # step penalty + invalid-action penalty


def single(**kwargs):
    env = gymnasium.make("rlmem/EndlessTMaze-v0", **kwargs).unwrapped
    return env


def cue_of(obs):
    assert obs[0] == 0.0 and obs[1] + obs[2] == 1.0, "the cue is shown at x = 0"
    return LEFT if obs[1] == 1.0 else RIGHT


def walk_to_junction(env, length):
    for _ in range(length):
        obs, r, term, trunc, _ = env.step(FORWARD)
        assert r == pytest.approx(STEP) and not term and not trunc
        assert obs[1] == obs[2] == 0.0, "no cue away from x = 0"
    return obs


def test_correct_turns_pass_every_corridor_then_success():
    env = single(n=3, l_max=4)
    obs, _ = env.reset(seed=0)
    for k in range(3):
        cue = cue_of(obs)
        walk_to_junction(env, 4)
        obs, r, term, trunc, info = env.step(cue)
        assert r == pytest.approx(1.0 + STEP)
        assert info["corridors"] == k + 1
        assert term == (k == 2) and not trunc
    assert info["success"]


def test_wrong_turn_ends_the_episode():
    env = single(n=3, l_max=4)
    obs, _ = env.reset(seed=1)
    wrong = RIGHT if cue_of(obs) == LEFT else LEFT
    walk_to_junction(env, 4)
    _, r, term, trunc, info = env.step(wrong)
    assert r == pytest.approx(-1.0 + STEP) and term and not trunc
    assert not info["success"] and info["corridors"] == 0


def test_invalid_actions_cost_and_do_not_move():
    env = single(n=1, l_max=3)
    obs, _ = env.reset(seed=2)
    cue = cue_of(obs)
    obs2, r, term, _, _ = env.step(cue)  # a turn inside the corridor
    assert r == pytest.approx(INVALID) and not term
    np.testing.assert_array_equal(obs2[0], 0.0)
    walk_to_junction(env, 3)
    obs3, r, term, _, _ = env.step(FORWARD)  # forward at the junction
    assert r == pytest.approx(INVALID) and not term and obs3[0] == 1.0
    _, r, term, _, info = env.step(cue)
    assert term and info["success"]


def test_time_limit_truncates():
    n, l_max = 2, 3
    env = single(n=n, l_max=l_max)
    env.reset(seed=3)
    limit = 6 * (l_max + 1) * n
    for t in range(1, limit + 1):
        _, r, term, trunc, _ = env.step(FORWARD)
        assert not term
        assert trunc == (t == limit)


def test_uniform_lengths_within_bounds_and_varied():
    env = EndlessTMazeVector(num_envs=512, n=2, l_max=7, mode="uniform")
    env.reset(seed=0)
    lengths = [env.length.clone()]
    for _ in range(30):
        env.step(torch.randint(0, 3, (512,)))
        lengths.append(env.length.clone())
    lengths = torch.cat(lengths)
    assert lengths.min() == 1 and lengths.max() == 7
    assert len(torch.unique(lengths)) == 7
    fixed = EndlessTMazeVector(num_envs=64, n=2, l_max=7, mode="fixed")
    fixed.reset(seed=0)
    assert (fixed.length == 7).all()


def test_cues_are_balanced():
    env = EndlessTMazeVector(num_envs=4096, n=1, l_max=2)
    obs, _ = env.reset(seed=0)
    assert abs(obs[:, 1].mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("mode", ["fixed", "uniform"])
def test_vector_equals_single_copies(mode):
    n, kwargs = 5, dict(n=2, l_max=3, mode=mode)
    actions = torch.as_tensor(np.random.default_rng(0).integers(0, 3, (300, n)))
    ends = assert_batched_equals_single(envs.make_vector("rlmem/EndlessTMaze-v0", n, **kwargs),
                                        [single(**kwargs) for _ in range(n)], lambda t: actions[t], steps=300,
                                        seed=11, info_keys=("corridors",))
    assert ends > 20


def test_env_checker_passes():
    check_env(single(n=3, l_max=5))
    check_env(single(n=2, l_max=4, mode="uniform"))


def test_episode_statistics_match_summed_rewards():
    vec = envs.make_vector("rlmem/EndlessTMaze-v0", 8, n=1, l_max=2)
    vec.reset(seed=0)
    running = torch.zeros(8)
    checked = 0
    for _ in range(200):
        _, r, term, trunc, info = vec.step(torch.randint(0, 3, (8,)))
        running += r
        done = term | trunc
        assert torch.equal(info["_episode"], done)
        if done.any():
            torch.testing.assert_close(info["episode"]["r"][done], running[done])
            checked += int(done.sum())
        running[done] = 0
    assert checked > 10


def test_state_dict_restores_mid_episode():
    a = EndlessTMazeVector(num_envs=16, n=3, l_max=4, mode="uniform")
    a.reset(seed=5)
    for _ in range(7):
        a.step(torch.randint(0, 3, (16,)))
    saved = a.state_dict()
    b = EndlessTMazeVector(num_envs=16, n=3, l_max=4, mode="uniform")
    b.load_state_dict(saved)
    for _ in range(40):
        act = torch.randint(0, 3, (16,))
        oa, ra, ta, _, _ = a.step(act)
        ob, rb, tb, _, _ = b.step(act)
        assert torch.equal(oa, ob) and torch.equal(ra, rb) and torch.equal(ta, tb)


@pytest.mark.parametrize("kwargs,field", [({"n": 0}, "n"), ({"l_max": 0}, "l_max"), ({"mode": "random"}, "mode")])
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        EndlessTMazeVector(num_envs=2, **kwargs)


def test_unknown_env_id():
    with pytest.raises(ValueError, match="accepted: .*rlmem/EndlessTMaze-v0"):
        envs.make_vector("rlmem/NoSuchTask-v0", 2)
