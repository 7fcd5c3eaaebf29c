"""Room Ballet (SAT's place-centric task): wander, views, queries, rewards, oracle/random, batched == single."""

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

import envs
from envs.gridworld import ballet_assets as A
from envs.gridworld.room_ballet import QUERIES, VIEW, RoomBallet, RoomBalletVector, layout
from batched_checks import assert_batched_equals_single


def expected_query(rooms, kind, num_rooms):
    """The room a query asks about, computed from the wander [visits] in plain Python."""
    if kind == "oldest":
        return rooms[0]
    if kind == "newest":
        return rooms[-1]
    counts = [rooms.count(r) for r in range(num_rooms)]
    first = [rooms.index(r) if r in rooms else len(rooms) for r in range(num_rooms)]
    visited = [r for r in range(num_rooms) if counts[r]]
    if kind == "least_visited":
        return min(visited, key=lambda r: (counts[r], first[r]))
    return max(visited, key=lambda r: (counts[r], -first[r]))


def dancer_cell(view):
    """Flat index of the one dancer sprite in a symbolic view [7, 7] (None if there is none)."""
    cells = (view.flatten() >= A.FIRST_DANCER).nonzero()
    assert len(cells) <= 1
    return int(cells[0]) if len(cells) else None


def first_episodes(env, policy):
    env.reset(seed=321)
    success = torch.zeros(env.num_envs, dtype=torch.bool)
    finished = torch.zeros(env.num_envs, dtype=torch.bool)
    for _ in range(env.max_steps):
        _, _, terminated, truncated, info = env.step(policy(env))
        done = terminated | truncated
        success |= done & ~finished & info["success"]
        finished |= done
    return success, finished


@pytest.mark.parametrize("kwargs, field", [
    ({"grid": 4}, "grid"), ({"visits": 1}, "visits"), ({"min_stay": 3}, "min_stay"),
    ({"min_stay": 5, "max_stay": 4}, "max_stay"), ({"query": "median"}, "query"), ({"obs_mode": "depth"}, "obs_mode"),
    ({"num_envs": -1}, "num_envs"),
])
def test_bad_arguments_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        RoomBalletVector(**kwargs)


def test_short_dances_are_loops_told_apart_by_three_moves():
    offsets = A.dance_offsets(A.SHORT_DANCES)
    assert (offsets[:, -1] == 0).all() and np.abs(offsets).max() == 1
    openings = {tuple(seq.split()[:3]) for seq in A.SHORT_DANCES.values()}
    assert len(openings) == len(A.SHORT_DANCES) >= 9  # enough for one per room of a 3x3 block
    for name in ("up_and_down", "left_and_right", "plus_cw", "times_ccw"):  # these open their Ballet namesakes
        assert A.DANCES[name].startswith(A.SHORT_DANCES[name])


@pytest.mark.parametrize("grid", [2, 3])
def test_wander_walks_through_doorways_and_lingers(grid):
    env = RoomBalletVector(300, grid=grid)
    env.reset(seed=1)
    rooms, ends = env.rooms.numpy(), env.ends.numpy()
    a, b = np.divmod(rooms, grid)
    assert ((np.abs(np.diff(a)) + np.abs(np.diff(b))) == 1).all()  # each move goes to a neighbouring room
    stays = np.diff(np.concatenate([np.zeros((300, 1), dtype=np.int64), ends], 1))
    assert stays.min() == env.min_stay and stays.max() == env.max_stay
    assert ends[:, -1].max() + 1 <= env.max_steps <= 64
    assert len({tuple(r) for r in rooms}) > 150  # visit orders differ between episodes (2x2: 512 walks)
    assert len(set(np.bincount(rooms[0], minlength=grid * grid).tolist())) > 1  # and counts between rooms
    assert np.bincount(rooms[:, 0], minlength=grid * grid).min() > 10  # every room can come first
    # The doorways make every room's walls look different, so the view alone tells the room.
    views = env.room_views.numpy()
    assert len({v.tobytes() for v in views}) == grid * grid
    assert views.shape == (grid * grid, VIEW * VIEW) and layout(grid).shape == (6 * grid + 1,) * 2


@pytest.mark.parametrize("grid", [2, 3])
@pytest.mark.parametrize("kind", QUERIES)
def test_query_asks_about_the_right_room(grid, kind):
    env = RoomBalletVector(200, grid=grid, query=kind)
    env.reset(seed=2)
    for i in range(env.num_envs):
        rooms = env.rooms[i].tolist()
        assert env.query_room[i] == expected_query(rooms, kind, grid * grid)
        assert env.query_kind[i] == QUERIES.index(kind)
    counts = torch.zeros(200, grid * grid, dtype=torch.int64).scatter_add_(1, env.rooms, torch.ones_like(env.rooms))
    top = counts.topk(2, 1).values
    assert (top[:, 0] > top[:, 1]).float().mean() > 0.95  # ties are rare: the wander avoids them


def test_mixed_draws_every_query_type():
    env = RoomBalletVector(400, query="mixed")
    env.reset(seed=3)
    assert torch.bincount(env.query_kind, minlength=4).min() > 60


@pytest.mark.parametrize("grid", [2, 3])
def test_views_follow_the_wander(grid):
    env = RoomBalletVector(1, grid=grid, autoreset=False)
    obs, info = env.reset(seed=4)
    rooms, ends = env.rooms[0].tolist(), [0] + env.ends[0].tolist()
    offsets = A.dance_offsets(A.SHORT_DANCES)
    seen = set()
    for visit, room in enumerate(rooms):
        for frame in range(ends[visit + 1] - ends[visit]):
            view = obs["image"][0]
            assert info["place"] == room and obs["query_type"][0] == 0 and obs["query_room"][0] == grid * grid
            assert torch.equal(view.flatten()[:VIEW] == A.WALL, env.room_views[room][:VIEW] == A.WALL)
            assert view[1, 1] == A.AGENT
            # The room's own dancer, restarted on entry: frame f shows it after f moves of its loop.
            dr, dc = offsets[env.dance[0, room], frame % 4]
            assert dancer_cell(view) == (3 + dr) * VIEW + 3 + dc
            assert view.flatten()[dancer_cell(view)] == env.sprite[0, room]
            seen.add(int(env.sprite[0, room]))
            obs, reward, terminated, truncated, info = env.step(torch.tensor([0]))
            assert reward[0] == 0 and not terminated[0] and not truncated[0]
    assert len(seen) == len(set(rooms))  # a dancer shows only in its own room
    assert (obs["image"] == A.FLOOR).all()  # the query: nothing to see, memory must answer
    assert obs["query_type"][0] == 1 + env.query_kind[0] and obs["query_room"][0] == env.query_room[0]
    assert info["place"] == grid * grid


@pytest.mark.parametrize("right", [True, False])
def test_the_answer_ends_the_episode(right):
    env = RoomBalletVector(1, autoreset=False)
    env.reset(seed=5)
    length = int(env.ends[0, -1])
    gen = torch.Generator().manual_seed(0)
    for _ in range(length):  # anything goes while wandering
        _, reward, terminated, _, _ = env.step(torch.randint(0, 10, (1,), generator=gen))
        assert reward[0] == 0 and not terminated[0]
    answer = env.answer()
    _, reward, terminated, truncated, info = env.step(answer if right else (answer + 1) % 10)
    assert reward[0] == float(right) and terminated[0] and not truncated[0] and info["success"][0] == right


def test_oracle_solves_and_random_stays_near_chance():
    env = RoomBalletVector(300, grid=3)
    success, finished = first_episodes(env, lambda e: e.answer())
    assert finished.all() and success.float().mean() >= 0.99
    env = RoomBalletVector(600)
    gen = torch.Generator().manual_seed(0)
    success, finished = first_episodes(env, lambda e: torch.randint(0, 10, (e.num_envs,), generator=gen))
    assert finished.all() and abs(success.float().mean().item() - 0.1) < 0.04


@pytest.mark.parametrize("obs_mode", ["symbolic", "rgb"])
def test_batched_equals_single_copies(obs_mode):
    n, kwargs = 4, {"grid": 2, "visits": 3, "min_stay": 4, "max_stay": 6, "obs_mode": obs_mode}
    batched = RoomBalletVector(n, **kwargs)
    gen = torch.Generator().manual_seed(0)
    # Answer right half the time, so episodes end with successes as well as failures.
    actions = lambda t: torch.where(torch.rand(n, generator=gen) < 0.5, batched.answer(),  # noqa: E731
                                    torch.randint(0, 10, (n,), generator=gen))
    ends = assert_batched_equals_single(batched, [RoomBallet(**kwargs) for _ in range(n)], actions, steps=70,
                                        seed=21, info_keys=("place",))
    assert ends >= 8


@pytest.mark.parametrize("obs_mode", ["symbolic", "rgb"])
def test_check_env(obs_mode):
    env = gymnasium.make("rlmem/RoomBallet-v0", obs_mode=obs_mode, grid=3, render_mode="rgb_array")
    check_env(env.unwrapped)


def test_vector_env_from_the_registry_on_cpu():
    env = envs.make_vector("rlmem/RoomBallet-v0", 3, device="cpu")
    obs, info = env.reset(seed=0)
    assert obs["image"].shape == (3, VIEW, VIEW) and info["place"].dtype == torch.int64
    for _ in range(5):
        obs, _, _, _, info = env.step(env.action_space.sample())
    assert info["place"].shape == (3,) and env.num_places == 5
    assert env.observation_space.contains({k: v.numpy() for k, v in obs.items()})


def test_rgb_is_the_symbolic_view_drawn_and_render_shows_the_block():
    symbolic = RoomBalletVector(2, grid=3, obs_mode="symbolic")
    rgb = RoomBalletVector(2, grid=3, obs_mode="rgb")
    a, _ = symbolic.reset(seed=3)
    b, _ = rgb.reset(seed=3)
    table = A.sprite_table()
    pixels = table[a["image"].numpy()].transpose(0, 1, 3, 2, 4, 5).reshape(2, 63, 63, 3)
    np.testing.assert_array_equal(b["image"].numpy(), pixels)
    frames = rgb.render_rgb()
    assert frames.shape == (2, 19 * 9, 19 * 9, 3) and frames.dtype == torch.uint8
    env = RoomBallet(render_mode="rgb_array")
    env.reset(seed=0)
    assert env.render().shape == (13 * 9, 13 * 9, 3)


def test_state_dict_restores_every_copy():
    env, copy = RoomBalletVector(3), RoomBalletVector(3)
    env.reset(seed=7)
    for _ in range(30):
        env.step(env.answer())
    copy.load_state_dict(env.state_dict())
    for _ in range(80):
        (obs, reward, *_), (obs2, reward2, *_) = env.step(env.answer()), copy.step(copy.answer())
        assert all(torch.equal(obs[k], obs2[k]) for k in obs) and torch.equal(reward, reward2)
