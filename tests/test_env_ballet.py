"""Ballet (HCAM's 2D task) as a batched gridworld: reference facts, rules, oracle/random, batched == single copies."""

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from envs.gridworld import ballet_assets as A
from envs.gridworld.ballet import HOMES, LEVELS, SIZE, VOCAB, Ballet, BalletVector
from batched_checks import assert_batched_equals_single

CENTRE = 5 * SIZE + 5
N_, NE, E_, SE, S_, SW, W_, NW = range(8)


def staged(homes, dances, target, **kwargs):
    """One copy with a chosen layout: dancer k at homes[k] doing dance dances[k] (names); ``target`` an index."""
    env = BalletVector(1, autoreset=False, num_dancers=len(homes), obs_mode="symbolic", **kwargs)
    env.reset(seed=0)
    env.home[0] = torch.tensor([r * SIZE + c for r, c in homes])
    env.dance[0] = torch.tensor([A.DANCE_NAMES.index(d) for d in dances])
    env.target[0] = target
    return env


def step(env, action):
    return env.step(torch.tensor([action]))


def watch(env):
    for _ in range(env.watch_steps):
        obs, reward, terminated, truncated, _ = step(env, NE)
        assert reward[0] == 0 and not terminated[0] and not truncated[0]
    assert env.agent[0] == CENTRE  # actions were ignored
    return obs


def toward(agent, goal):
    """The compass action from cell ``agent`` toward cell ``goal`` [N]."""
    dr = torch.sign(goal // SIZE - agent // SIZE)
    dc = torch.sign(goal % SIZE - agent % SIZE)
    moves = torch.as_tensor(A.MOVES)
    return ((moves[:, 0] == dr[:, None]) & (moves[:, 1] == dc[:, None])).int().argmax(1)


def first_episodes(env, policy, steps):
    """Success of each copy's first finished episode (False where it never finished)."""
    env.reset(seed=123)
    success = torch.zeros(env.num_envs, dtype=torch.bool)
    finished = torch.zeros(env.num_envs, dtype=torch.bool)
    for _ in range(steps):
        _, _, terminated, truncated, info = env.step(policy(env))
        done = terminated | truncated
        success |= done & ~finished & info["success"]
        finished |= done
    return success, finished


def test_levels_set_the_paper_settings():
    for name, (n, delay, max_steps) in LEVELS.items():
        env = BalletVector(1, level=name, obs_mode="symbolic")
        assert (env.num_dancers, env.dance_delay, env.max_steps) == (n, delay, max_steps)
        assert env.watch_steps == n * (15 + delay)
    assert set(LEVELS) == {f"{n}_delay{d}" for n in (2, 4, 8) for d in (16, 48)}
    assert LEVELS["8_delay48"][2] == 1024 and LEVELS["2_delay16"][2] == 320
    default = BalletVector(1)
    assert (default.num_dancers, default.dance_delay, default.max_steps, default.obs_mode) == (2, 16, 320, "rgb")


@pytest.mark.parametrize("kwargs, field", [
    ({"level": "3_delay16"}, "level"), ({"level": "2_delay16", "num_dancers": 2}, "level"),
    ({"num_dancers": 0}, "num_dancers"), ({"num_dancers": 9}, "num_dancers"), ({"dance_delay": -1}, "dance_delay"),
    ({"max_steps": 0}, "max_steps"), ({"obs_mode": "pixels"}, "obs_mode"), ({"num_envs": 0}, "num_envs"),
])
def test_bad_arguments_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BalletVector(**kwargs)


def test_assets_match_the_reference():
    offsets = A.dance_offsets(A.DANCES)
    assert offsets.shape == (13, 17, 2)
    assert (offsets[:, -1] == 0).all() and np.abs(offsets).max() == 1  # every dance ends at home, within a 3x3 square
    assert len(A.SHAPES) == 15 and len(A.COLOURS) == 19 and A.NUM_SPRITES == 3 + 15 * 19
    table = A.sprite_table()
    assert len({t.tobytes() for t in table}) == A.NUM_SPRITES  # every sprite looks different
    assert (table[A.WALL] == 40).all() and (table[A.AGENT] == 255).all() and (table[A.FLOOR] == 0).all()
    assert VOCAB[0] == "watch" and VOCAB[1:] == A.DANCE_NAMES


def test_reset_shuffles_a_fresh_layout():
    env = BalletVector(300, level="8_delay16", obs_mode="symbolic")
    env.reset(seed=5)
    homes = {r * SIZE + c for r, c in HOMES}
    for i in range(env.num_envs):
        assert set(env.home[i].tolist()) == homes  # 8 dancers fill the 8 spots
        assert len(set(env.dance[i].tolist())) == 8 and len(set(env.sprite[i].tolist())) == 8
    assert (env.agent == CENTRE).all()
    assert torch.bincount(env.target, minlength=8).min() > 15  # every dancer is sometimes the target
    assert torch.bincount(env.home[:, 0], minlength=SIZE * SIZE)[list(homes)].min() > 15
    assert len(set(env.dance.flatten().tolist())) == 13


def test_dancers_dance_one_at_a_time_on_the_reference_clock():
    env = staged([(2, 2), (5, 8), (8, 5)], ["zee", "circle_cw", "chevron_up"], 0, dance_delay=5)
    offsets = A.dance_offsets(A.DANCES)
    period = 15 + 5
    assert env.watch_steps == 3 * period
    homes = env.home[0].clone()
    obs = env._observe()
    for elapsed in range(env.watch_steps + 1):
        grid = obs["image"][0].flatten()  # the agent stays at the centre, so its view is the room
        assert grid[CENTRE] == A.AGENT
        assert obs["instruction"][0] == (0 if elapsed < env.watch_steps else 1 + A.DANCE_NAMES.index("zee"))
        for k in range(3):
            # Dancer k has made min(16, elapsed + 1 - k * period) moves: the reset frame already holds one.
            done = int(np.clip(elapsed + 1 - k * period, 0, 16))
            dr, dc = offsets[env.dance[0, k], done]
            assert grid[homes[k] + dr * SIZE + dc] == env.sprite[0, k]
        obs, *_ = step(env, S_)


def test_actions_count_only_once_the_instruction_shows():
    env = staged([(2, 5), (8, 5)], ["zee", "circle_ccw"], 1, dance_delay=16)
    for _ in range(env.watch_steps - 1):
        step(env, S_)
    obs, *_ = step(env, S_)  # the reference's "ignored first action": sent while "watch" still showed
    assert env.agent[0] == CENTRE and VOCAB[obs["instruction"][0]] == "circle_ccw"
    step(env, S_)
    assert env.agent[0] == 6 * SIZE + 5


@pytest.mark.parametrize("target, goal, reward", [(0, 0, 1.0), (0, 1, 0.0), (1, 1, 1.0)])
def test_touching_a_dancer_ends_the_episode(target, goal, reward):
    env = staged([(2, 2), (8, 8)], ["up_and_down", "times_cw"], target, dance_delay=2)
    watch(env)
    for _ in range(2):
        obs, r, terminated, truncated, info = step(env, NW if goal == 0 else SE)
        assert r[0] == 0 and not terminated[0]
    obs, r, terminated, truncated, info = step(env, NW if goal == 0 else SE)
    assert r[0] == reward and terminated[0] and not truncated[0] and info["success"][0] == (reward == 1)
    assert obs["image"][0, 5, 5] == env.sprite[0, goal]  # the touched dancer is drawn over the agent


def test_walls_block_moves_without_sliding():
    env = staged([(2, 2)], ["zee"], 0, dance_delay=1)
    watch(env)
    for _ in range(6):
        step(env, E_)
    assert env.agent[0] == 5 * SIZE + 9
    step(env, NE)  # a diagonal into the wall does not slide along it
    assert env.agent[0] == 5 * SIZE + 9
    for _ in range(5):
        step(env, N_)
    assert env.agent[0] == 1 * SIZE + 9
    step(env, NW)
    assert env.agent[0] == 1 * SIZE + 9


def test_time_limit_truncates():
    env = staged([(2, 2)], ["zee"], 0, dance_delay=1, max_steps=20)
    for t in range(20):
        _, reward, terminated, truncated, info = step(env, S_)
        assert reward[0] == 0 and not terminated[0] and bool(truncated[0]) == (t == 19)
    assert not info["success"][0]


def test_oracle_solves_and_random_stays_near_chance():
    env = BalletVector(300, level="4_delay16", obs_mode="symbolic")
    target_home = lambda e: e.home.gather(1, e.target[:, None]).squeeze(1)  # noqa: E731
    success, finished = first_episodes(env, lambda e: toward(e.agent, target_home(e)), env.watch_steps + 4)
    assert finished.all() and success.float().mean() >= 0.99

    env = BalletVector(400, level="2_delay16", obs_mode="symbolic")
    gen = torch.Generator().manual_seed(0)
    success, finished = first_episodes(env, lambda e: torch.randint(0, 8, (e.num_envs,), generator=gen),
                                       env.max_steps)
    assert finished.all() and success.float().mean() < 0.5 + 0.07  # chance is 1/2 of the episodes that touch


def test_random_touches_pick_the_target_at_chance():
    env = BalletVector(400, num_dancers=4, dance_delay=1, max_steps=400, obs_mode="symbolic")
    gen = torch.Generator().manual_seed(1)
    env.reset(seed=9)
    touched = successes = 0
    for _ in range(400):
        _, _, terminated, _, info = env.step(torch.randint(0, 8, (env.num_envs,), generator=gen))
        touched += int(terminated.sum())
        successes += int(info["success"].sum())
    assert touched > 300 and abs(successes / touched - 0.25) < 0.06


@pytest.mark.parametrize("obs_mode", ["symbolic", "rgb"])
def test_batched_equals_single_copies(obs_mode):
    n, kwargs = 4, {"num_dancers": 2, "dance_delay": 1, "max_steps": 45, "obs_mode": obs_mode}
    batched = BalletVector(n, **kwargs)
    gen = torch.Generator().manual_seed(0)
    # Head for dancer 0's spot half the time, so episodes end by touches as well as by the time limit.
    actions = lambda t: torch.where(torch.rand(n, generator=gen) < 0.5,  # noqa: E731
                                    toward(batched.agent, batched.home[:, 0]), torch.randint(0, 8, (n,), generator=gen))
    ends = assert_batched_equals_single(batched, [Ballet(**kwargs) for _ in range(n)], actions, steps=140, seed=11,
                                        info_keys=("success",))
    assert ends >= 8


@pytest.mark.parametrize("obs_mode", ["symbolic", "rgb"])
def test_check_env(obs_mode):
    env = gymnasium.make("rlmem/Ballet-v0", obs_mode=obs_mode, num_dancers=3, dance_delay=2, render_mode="rgb_array")
    check_env(env.unwrapped)


def test_vector_env_from_the_registry_on_cpu():
    env = envs.make_vector("rlmem/Ballet-v0", 3, device="cpu", level="2_delay16", obs_mode="symbolic")
    obs, _ = env.reset(seed=0)
    assert obs["image"].shape == (3, SIZE, SIZE) and obs["image"].dtype == torch.int64
    for _ in range(5):
        obs, reward, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains({k: v.numpy() for k, v in obs.items()})
    single = gymnasium.make("rlmem/Ballet-v0", render_mode="rgb_array")
    single.reset(seed=0)
    assert single.observation_space["image"].shape == (99, 99, 3)


def test_rgb_is_the_symbolic_view_drawn_and_render_shows_the_room():
    symbolic = BalletVector(2, num_dancers=3, obs_mode="symbolic")
    rgb = BalletVector(2, num_dancers=3, obs_mode="rgb")
    a, _ = symbolic.reset(seed=3)
    b, _ = rgb.reset(seed=3)
    table = A.sprite_table()
    for _ in range(3):
        ids = a["image"].numpy()  # [N, 11, 11]
        pixels = table[ids].transpose(0, 1, 3, 2, 4, 5).reshape(2, 99, 99, 3)
        np.testing.assert_array_equal(b["image"].numpy(), pixels)
        assert b["image"].dtype == torch.uint8 and (b["image"][:, 45:54, 45:54] == 255).all()  # agent at centre
        a, *_ = symbolic.step(torch.zeros(2, dtype=torch.long))
        b, *_ = rgb.step(torch.zeros(2, dtype=torch.long))
    # With the agent at the centre of the room the egocentric view is the whole room.
    np.testing.assert_array_equal(rgb.render_rgb().numpy(), b["image"].numpy())
    env = Ballet(render_mode="rgb_array", obs_mode="symbolic")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (99, 99, 3) and frame.dtype == np.uint8


def test_reference_scenario_one_dancer():
    """The reference's own test: one dancer doing up_and_down at (2, 8) is reached by the 4th NE after 30 steps."""
    env = staged([(2, 8)], ["up_and_down"], 0, dance_delay=16)
    env.sprite[0, 0] = A.dancer_sprite(A.SHAPES.index("plus"), A.COLOUR_NAMES.index("orange"))
    for _ in range(30):
        obs, *_ = step(env, N_)
        assert VOCAB[obs["instruction"][0]] == "watch"
    for i in range(4):
        obs, reward, terminated, *_ = step(env, NE)
        assert VOCAB[obs["instruction"][0]] == "up_and_down" and bool(terminated[0]) == (i == 3)
    assert reward[0] == 1.0


def test_state_dict_restores_every_copy():
    kwargs = {"num_dancers": 3, "dance_delay": 1, "max_steps": 60, "obs_mode": "symbolic"}
    env, copy = BalletVector(3, **kwargs), BalletVector(3, **kwargs)
    env.reset(seed=7)
    gen = torch.Generator().manual_seed(0)
    actions = torch.randint(0, 8, (90, 3), generator=gen)
    for a in actions[:40]:
        env.step(a)
    copy.load_state_dict(env.state_dict())
    for a in actions[40:]:
        (obs, reward, *_), (obs2, reward2, *_) = env.step(a), copy.step(a)
        assert torch.equal(obs["image"], obs2["image"]) and torch.equal(reward, reward2)
