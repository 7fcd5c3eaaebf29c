"""Habitat envs: the clear error without habitat-sim (runs everywhere); where habitat-sim is installed, reset/step,
motion and sensors, place ids, seeds, the stage's orientation, both tasks' reward rules and the vector form."""

import importlib.util
import math
import sys

import numpy as np
import pytest

import envs
from envs.habitat import scenes
from envs.habitat.env import ACTIONS, TURN_DEG, load_habitat_sim

needs_habitat = pytest.mark.skipif(importlib.util.find_spec("habitat_sim") is None,
                                   reason="habitat-sim is not installed")
A = {name: i for i, name in enumerate(ACTIONS)}


def test_missing_habitat_sim_raises_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "habitat_sim", None)  # as if it were not installed
    from envs.habitat.tasks import MultiObjectNav
    with pytest.raises(ImportError, match="habitat-sim.*github.com/facebookresearch/habitat-sim"):
        load_habitat_sim()
    with pytest.raises(ImportError, match="habitat-sim's own instructions"):
        MultiObjectNav()


@pytest.mark.parametrize("kwargs, field", [({"resolution": 8}, "resolution"), ({"gpu_device_id": -2}, "gpu_device_id"),
                                           ({"rows": 9}, "rows"), ({"trial_steps": 0}, "trial_steps"),
                                           ({"success_radius": 5.0}, "success_radius"), ({"found_by": "x"}, "found_by"),
                                           ({"render_mode": "human"}, "render_mode")])
def test_bad_arguments_raise_before_habitat_is_needed(kwargs, field, monkeypatch):
    monkeypatch.setitem(sys.modules, "habitat_sim", None)
    from envs.habitat.tasks import MultiObjectNav
    with pytest.raises(ValueError, match=field):
        MultiObjectNav(**kwargs)


def test_registered_ids():
    assert {"rlmem/habitat-objnav-v0", "rlmem/habitat-placerecall-v0"} <= set(envs.ids())


@pytest.fixture
def nav():  # closed envs hand their simulator to the next env: only the first test pays for starting one
    from envs.habitat.tasks import MultiObjectNav
    env = MultiObjectNav(resolution=64, depth=True, trial_steps=40, rows=2, cols=3)
    yield env
    env.close()


def navigable_near(env, obj, low, high):
    """A navigable plan point in ``obj``'s room at ``low..high`` metres from it, and the angle facing it."""
    rng = np.random.default_rng(0)
    while True:
        angle, dist = rng.uniform(0, 2 * math.pi), rng.uniform(low, high)
        x, y = obj["centre"][0] + dist * math.cos(angle), obj["centre"][1] + dist * math.sin(angle)
        point = np.array(scenes.plan_to_world(x, y), np.float32)
        if scenes.room_at(env.plan, x, y) == obj["room"] and env.sim.pathfinder.is_navigable(point):
            return env.sim.pathfinder.snap_point(point), angle + math.pi


@needs_habitat
def test_reset_and_step_give_observations_in_the_space(nav):
    obs, info = nav.reset(seed=11)
    assert nav.observation_space.contains(obs) and info["scene"] == 11
    assert obs["rgb"].shape == (64, 64, 3) and obs["depth"].shape == (64, 64, 1) and obs["rgb"].std() > 5
    assert np.all(obs["gps"] == 0) and obs["compass"][0] == 0
    assert info["place"] == scenes.room_at(nav.plan, *nav._plan_pose()[:2]) >= 0
    for action in range(len(ACTIONS)):
        obs, reward, terminated, truncated, info = nav.step(action)
        assert nav.observation_space.contains(obs) and isinstance(reward, float) and not terminated


@needs_habitat
def test_motion_gps_compass_and_look(nav):
    nav.reset(seed=12)
    obs, *_ = nav.step(A["turn_left"])
    assert obs["compass"][0] == pytest.approx(math.radians(TURN_DEG), abs=1e-4) and np.allclose(obs["gps"], 0)
    before = obs
    obs, *_ = nav.step(A["look_down"])
    assert not np.array_equal(obs["rgb"], before["rgb"]) and np.array_equal(obs["gps"], before["gps"])
    obs, *_ = nav.step(A["look_up"])
    np.testing.assert_array_equal(obs["rgb"], before["rgb"])
    obs, *_ = nav.step(A["stop"])
    np.testing.assert_array_equal(obs["rgb"], before["rgb"])
    # Forward moves 0.25 m along the heading (GPS is in the start frame: 30 degrees to the left of forward).
    nav.reset(seed=12)
    obs, *_ = nav.step(A["move_forward"])
    moved = np.hypot(*obs["gps"])
    if moved > 0:  # not blocked by a wall
        assert moved == pytest.approx(0.25, abs=1e-3) and obs["gps"][0] == pytest.approx(0.25, abs=1e-3)


@needs_habitat
def test_seed_names_the_scene_and_the_start(nav):
    first, info = nav.reset(seed=21)
    plan = nav.plan
    again, _ = nav.reset(seed=21)
    np.testing.assert_array_equal(first["rgb"], again["rgb"])
    other, info2 = nav.reset(seed=22)
    assert info2["scene"] == 22 and nav.plan != plan and nav.plan == scenes.generate(22, rows=2, cols=3)
    _, info = nav.reset()  # unseeded: a scene drawn from the env's generator
    assert nav.plan == scenes.generate(info["scene"], rows=2, cols=3)


@needs_habitat
def test_place_is_the_room_the_agent_stands_in(nav):
    nav.reset(seed=31)
    for obj in nav.plan["objects"]:
        point, heading = navigable_near(nav, obj, 1.0, 2.0)
        nav._set_pose(point, heading)
        _, _, _, _, info = nav.step(A["stop"])
        assert info["place"] == obj["room"]


@needs_habitat
def test_stage_is_upright_objects_show_their_colour_ahead(nav):
    """The .glb is read Z-up as written: facing an object from 1.5 m, the middle-lower image shows its colour."""
    nav.reset(seed=41)
    names = list(scenes.COLOURS)
    palette = np.array([scenes.COLOURS[n] for n in names])
    palette = palette / np.linalg.norm(palette, axis=1, keepdims=True)
    for obj in nav.plan["objects"]:
        point, heading = navigable_near(nav, obj, 1.4, 1.6)
        nav._set_pose(point, heading)
        obs, *_ = nav.step(A["stop"])
        patch = obs["rgb"][44:52, 30:34].reshape(-1, 3).astype(float).mean(0)  # below centre: objects are short
        assert names[int(np.argmax(palette @ (patch / np.linalg.norm(patch))))] == obj["colour"]
        assert 0.8 < obs["depth"][48, 32, 0] < 2.0  # the object ahead, not a far wall


@needs_habitat
@pytest.mark.parametrize("found_by", ["reach", "stop"])
def test_objnav_rewards_finding_the_target_then_names_the_next(found_by):
    from envs.habitat.tasks import MultiObjectNav
    env = MultiObjectNav(resolution=32, trial_steps=5 + (found_by == "stop"), found_by=found_by, step_penalty=0.01)
    obs, _ = env.reset(seed=5)
    target = env.plan["objects"][env.target]
    assert obs["target"] == target["kind"]
    env._set_pose(*navigable_near(env, target, 0.5, 0.9))
    obs, reward, _, _, info = env.step(A["look_down"])  # no motion: still near
    if found_by == "stop":
        assert reward == pytest.approx(-0.01) and not info["found"]
        obs, reward, _, _, info = env.step(A["stop"])
    assert reward == pytest.approx(0.99) and info["found"] and info["targets_found"] == 1
    assert obs["target"] != target["kind"] and obs["target"] == env.plan["objects"][env.target]["kind"]
    far = next(o for o in env.plan["objects"] if o["room"] != env.plan["objects"][env.target]["room"])
    env._set_pose(*navigable_near(env, far, 0.5, 0.9))
    for t in range(4):
        _, reward, terminated, truncated, info = env.step(A["stop"])
        assert not info["found"] and not terminated and truncated == (t == 3)
    env.close()


@needs_habitat
def test_objnav_shortest_path_follower_finds_targets_in_one_trial():
    from envs.habitat.tasks import MultiObjectNav
    env = MultiObjectNav(resolution=32, trial_steps=300, rows=2, cols=2)
    env.reset(seed=9)
    follower = env.sim.make_greedy_follower(0, goal_radius=0.25, stop_key="stop", forward_key="move_forward",
                                            left_key="turn_left", right_key="turn_right")
    goal, targets, found = None, [], 0
    for _ in range(300):
        if env.target not in targets[-1:]:
            targets.append(env.target)
            goal = navigable_near(env, env.plan["objects"][env.target], 0.45, 0.7)[0]
        key = follower.next_action_along(goal)
        _, reward, _, truncated, info = env.step(A[key or "stop"])
        found += info["found"]
        assert reward == float(info["found"])
    assert truncated and found >= 3 and len(targets) == found + 1
    env.close()


@needs_habitat
def test_place_recall_walk_query_and_answer():
    from envs.habitat.tasks import PlaceRecall
    env = PlaceRecall(resolution=32, visits=5, view_steps=2, rows=2, cols=2)
    for right in (True, False):
        obs, info = env.reset(seed=3 + right)
        places = [info["place"]]
        for _ in range(5 * 2 - 1):
            assert obs["query"] == 0
            obs, reward, terminated, _, info = env.step(0)
            places.append(info["place"])
            assert reward == 0 and not terminated
        assert places == [r for r in env.rooms for _ in range(2)]  # the walk shows each visited room in turn
        obs, reward, terminated, _, info = env.step(0)
        assert obs["query"] == env.query_room + 1 and env.query_room in env.rooms and reward == 0
        answer = env.answer() if right else (env.answer() + 1) % scenes.NUM_KINDS
        _, reward, terminated, _, info = env.step(answer)
        assert terminated and reward == float(right) and info["success"] == right
    env.close()


@needs_habitat
def test_vector_form_steps_several_simulators():
    # In this process: a simulator per process would start its own GL context, tens of seconds on Mesa.
    vec = envs.make_vector("rlmem/habitat-objnav-v0", 2, resolution=32, trial_steps=3, num_scenes=4,
                           processes=False)
    obs, info = vec.reset(seed=50)
    assert obs["rgb"].shape == (2, 32, 32, 3) and list(info["scene"]) == [50, 51]
    for t in range(3):
        obs, reward, terminated, truncated, info = vec.step(np.array([A["turn_left"]] * 2))
        assert vec.observation_space.contains(obs)
    # Same-step autoreset: the next trials already run, in scenes drawn from range(num_scenes).
    assert truncated.all() and set(info["scene"]) <= set(range(4)) and np.all(obs["gps"] == 0)
    vec.close()
