"""A gymnasium ``Env`` over habitat-sim in a procedural apartment, and its vector form over several simulators.

``HabitatApartment`` loads the stage of scene ``seed`` (``scenes.generate`` then ``scenes.write_glb``), recomputes
the navmesh for it, and places an agent with egocentric sensors: ``rgb`` [H, W, 3] uint8, optionally ``depth``
[H, W, 1] float32 metres, ``gps`` [2] (metres moved since the episode start, in the start frame: forward, left) and
``compass`` [1] (radians turned since the start, counter-clockwise positive). ``info["place"]`` is the id of the
room the agent stands in. Tasks (``tasks.py``) subclass it and add their own observations and rewards.

Rendering is headless through EGL: ``gpu_device_id=-1`` renders with Mesa's software rasteriser on the CPU,
``gpu_device_id=k`` on GPU k. habitat-sim is imported only when an env is built.
"""

from __future__ import annotations

import functools
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from envs.episodes import EpisodeStatistics
from envs.habitat import scenes

HABITAT_INSTALL_DOCS = "https://github.com/facebookresearch/habitat-sim#installation"
ACTIONS = ("stop", "move_forward", "turn_left", "turn_right", "look_up", "look_down")
FORWARD_M, TURN_DEG, LOOK_DEG, LOOK_LIMIT_DEG = 0.25, 30.0, 30.0, 60.0
AGENT_RADIUS, AGENT_HEIGHT, CAMERA_HEIGHT = 0.2, 1.5, 1.1
# Closed envs leave their simulators here, per GPU id, for the next env of this process: starting a simulator
# builds its GL context and image-based-lighting maps, which takes tens of seconds under software rendering.
_IDLE_SIMS: dict[int, list] = {}


def load_habitat_sim():
    """The ``habitat_sim`` module, or an ImportError that says where to get it."""
    try:
        import habitat_sim
        import habitat_sim.utils.common  # noqa: F401  (quaternion helpers, not imported by the package itself)
    except ImportError:
        raise ImportError("rlmem's Habitat environments need habitat-sim, which is not installed here; install "
                          f"it by following habitat-sim's own instructions: {HABITAT_INSTALL_DOCS}") from None
    return habitat_sim


class HabitatApartment(gymnasium.Env):
    """An agent in a procedural apartment: ``reset(seed=s)`` loads scene ``s``; an unseeded reset draws a scene
    from ``range(num_scenes)`` (any scene if None), so autoresets of a vector env start trials in drawn scenes.

    Actions are ``ACTIONS``: stop (no motion), move forward 0.25 m, turn 30 degrees left/right, look 30 degrees
    up/down (within +-60). ``rows``/``cols``/``objects_per_room`` shape the apartment (``scenes.generate``).
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, resolution: int = 128, depth: bool = False, gpu_device_id: int = -1, rows: int = 2,
                 cols: int = 2, objects_per_room: int = 1, num_scenes: int | None = None, hfov: float = 90.0,
                 render_mode: str | None = None):
        if not isinstance(resolution, int) or not 16 <= resolution <= 1024:
            raise ValueError(f"resolution must be an integer in 16..1024 (square frames), got {resolution!r}")
        if not isinstance(gpu_device_id, int) or gpu_device_id < -1:
            raise ValueError(f"gpu_device_id must be -1 (CPU, Mesa) or a GPU index >= 0, got {gpu_device_id!r}")
        if num_scenes is not None and (not isinstance(num_scenes, int) or num_scenes < 1):
            raise ValueError(f"num_scenes must be a positive integer or None, got {num_scenes!r}")
        if not 30.0 <= hfov <= 150.0:
            raise ValueError(f"hfov must be in [30, 150] degrees, got {hfov!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode: {render_mode!r} not supported; accepted: None, 'rgb_array'")
        scenes.generate(0, rows, cols, objects_per_room)  # checks the layout arguments before habitat is loaded
        self.hs = load_habitat_sim()
        self.resolution, self.depth, self.gpu_device_id, self.hfov = resolution, depth, gpu_device_id, hfov
        self.num_scenes = num_scenes or 2**31
        self.layout = {"rows": rows, "cols": cols, "objects_per_room": objects_per_room}
        self.render_mode = render_mode
        self.action_space = spaces.Discrete(len(ACTIONS))
        self.observation_space = spaces.Dict(self._sensor_spaces() | self._task_spaces())
        self.scene_dir = Path(tempfile.mkdtemp(prefix="rlmem-habitat-"))
        self.sim = None
        self.plan: dict = {}
        self.scene_seed = -1

    def _sensor_spaces(self) -> dict[str, spaces.Space]:
        r = self.resolution
        sensors = {"rgb": spaces.Box(0, 255, (r, r, 3), np.uint8)}
        if self.depth:
            sensors["depth"] = spaces.Box(0.0, np.inf, (r, r, 1), np.float32)
        return sensors | {"gps": spaces.Box(-np.inf, np.inf, (2,), np.float32),
                          "compass": spaces.Box(-np.pi, np.pi, (1,), np.float32)}

    # --- what a task writes ---------------------------------------------------------------------------------
    def _task_spaces(self) -> dict[str, spaces.Space]:
        return {}

    def _task_reset(self) -> None:
        """Draw the task's episode (from ``self.np_random``) after the agent is placed."""

    def _task_step(self, action: int) -> tuple[float, bool, bool, dict]:
        """Apply ``action`` (moving the agent where it is a motion); return reward, terminated, truncated, info."""
        self._act(action)
        return 0.0, False, False, {}

    def _task_obs(self) -> dict[str, Any]:
        return {}

    # --- the gymnasium API ----------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        scene_seed = seed if seed is not None else int(self.np_random.integers(self.num_scenes))
        if scene_seed != self.scene_seed:
            self._load_scene(scene_seed)
        self._place_agent()
        self._task_reset()
        return self._observe(), self._info()

    def step(self, action):
        reward, terminated, truncated, info = self._task_step(int(action))
        return self._observe(), float(reward), terminated, truncated, self._info() | info

    def render(self):
        if self.render_mode == "rgb_array":
            return self.sim.get_sensor_observations()["rgb"][..., :3].copy()
        return None

    def close(self):
        if self.sim is not None:
            _IDLE_SIMS.setdefault(self.gpu_device_id, []).append(self.sim)
            self.sim = None
        shutil.rmtree(self.scene_dir, ignore_errors=True)

    # --- the scene and the agent ----------------------------------------------------------------------------
    def _load_scene(self, seed: int) -> None:
        self.plan = scenes.generate(seed, **self.layout)
        stage = scenes.write_glb(self.plan, self.scene_dir / f"apartment-{seed}.glb")
        config = self._sim_config(stage, seed)
        if self.sim is None and _IDLE_SIMS.get(self.gpu_device_id):
            self.sim = _IDLE_SIMS[self.gpu_device_id].pop()
        if self.sim is None:
            self.sim = self.hs.Simulator(config)
        else:
            self.sim.reconfigure(config)
        self.scene_seed = seed

    def _sim_config(self, stage: Path, seed: int):
        hs = self.hs
        sim_cfg = hs.SimulatorConfiguration()
        sim_cfg.scene_id = str(stage)
        sim_cfg.gpu_device_id = self.gpu_device_id
        sim_cfg.enable_physics = False
        sim_cfg.random_seed = seed
        sim_cfg.allow_sliding = True
        sim_cfg.navmesh_settings = hs.nav.NavMeshSettings()
        sim_cfg.navmesh_settings.set_defaults()  # a navmesh is computed for the stage when it loads
        sim_cfg.navmesh_settings.agent_radius = AGENT_RADIUS
        sim_cfg.navmesh_settings.agent_height = AGENT_HEIGHT
        sensors = [self._camera("rgb", hs.SensorType.COLOR)]
        if self.depth:
            sensors.append(self._camera("depth", hs.SensorType.DEPTH))
        act = hs.agent.ActionSpec
        amount = hs.agent.ActuationSpec
        actions = {"move_forward": act("move_forward", amount(amount=FORWARD_M)),
                   "turn_left": act("turn_left", amount(amount=TURN_DEG)),
                   "turn_right": act("turn_right", amount(amount=TURN_DEG)),
                   "look_up": act("look_up", amount(amount=LOOK_DEG, constraint=LOOK_LIMIT_DEG)),
                   "look_down": act("look_down", amount(amount=LOOK_DEG, constraint=LOOK_LIMIT_DEG))}
        agent = hs.agent.AgentConfiguration(height=AGENT_HEIGHT, radius=AGENT_RADIUS,
                                            sensor_specifications=sensors, action_space=actions)
        return hs.Configuration(sim_cfg, [agent])

    def _camera(self, uuid: str, kind):
        spec = self.hs.CameraSensorSpec()
        spec.uuid, spec.sensor_type = uuid, kind
        spec.resolution = [self.resolution, self.resolution]
        spec.position = [0.0, CAMERA_HEIGHT, 0.0]
        spec.hfov = self.hfov
        return spec

    def _place_agent(self) -> None:
        """A random navigable start in a random room, clear of the objects, facing a multiple of 30 degrees."""
        while True:  # most draws are navigable: rooms are open floor apart from a few objects
            room = self.plan["rooms"][int(self.np_random.integers(len(self.plan["rooms"])))]
            x0, y0, x1, y1 = room["rect"]
            x, y = self.np_random.uniform((x0 + 0.4, y0 + 0.4), (x1 - 0.4, y1 - 0.4))
            if min(math.dist((x, y), o["centre"]) for o in self.plan["objects"]) < 0.9:
                continue
            point = np.array(scenes.plan_to_world(x, y), np.float32)
            if self.sim.pathfinder.is_navigable(point):
                break
        heading = math.radians(TURN_DEG) * int(self.np_random.integers(12))
        self._set_pose(self.sim.pathfinder.snap_point(point), heading)
        self.start = self._plan_pose()

    def _set_pose(self, world_point, heading: float) -> None:
        """Put the agent at ``world_point`` facing plan angle ``heading`` (radians from +x, counter-clockwise),
        with the camera level."""
        state = self.hs.agent.AgentState()
        state.position = np.asarray(world_point, np.float32)
        # The agent looks along its local -Z; yaw phi about +Y faces plan angle phi + pi/2.
        state.rotation = self.hs.utils.common.quat_from_angle_axis(heading - math.pi / 2, np.array([0.0, 1.0, 0.0]))
        self.sim.get_agent(0).set_state(state)

    def _plan_pose(self) -> tuple[float, float, float]:
        """The agent's plan position and heading ``(x, y, angle)``."""
        state = self.sim.get_agent(0).get_state()
        q = state.rotation
        yaw = 2.0 * math.atan2(q.y, q.w)
        return float(state.position[0]), float(-state.position[2]), _wrap(yaw + math.pi / 2)

    def _act(self, action: int) -> None:
        if ACTIONS[action] != "stop":
            self.sim.get_agent(0).act(ACTIONS[action])

    def _observe(self) -> dict[str, Any]:
        frames = self.sim.get_sensor_observations()
        obs = {"rgb": np.ascontiguousarray(frames["rgb"][..., :3])}
        if self.depth:
            obs["depth"] = np.asarray(frames["depth"], np.float32)[..., None]
        x, y, angle = self._plan_pose()
        x0, y0, angle0 = self.start
        c, s = math.cos(angle0), math.sin(angle0)
        obs["gps"] = np.array([c * (x - x0) + s * (y - y0), -s * (x - x0) + c * (y - y0)], np.float32)
        obs["compass"] = np.array([_wrap(angle - angle0)], np.float32)
        return obs | self._task_obs()

    def _info(self) -> dict[str, Any]:
        x, y, _ = self._plan_pose()
        return {"place": scenes.room_at(self.plan, x, y), "scene": self.scene_seed}


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def make_vector(env_cls: type[HabitatApartment], num_envs: int, processes: bool = True, device: Any = None,
                **kwargs) -> gymnasium.vector.VectorEnv:
    """``num_envs`` simulators as one ``VectorEnv`` with same-step autoreset: one per process (``processes``,
    each process owning its own EGL context) or all in this process. Copy i of ``reset(seed=s)`` loads scene
    ``s + i``. ``device`` is accepted for ``envs.make_vector`` and not used: arrays stay numpy on the host.
    Episode statistics are reported every step (``envs.episodes``), as training and evaluation read them."""
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
    make = functools.partial(env_cls, **kwargs)
    if processes:
        vec = AsyncVectorEnv([make] * num_envs, context="forkserver", autoreset_mode=AutoresetMode.SAME_STEP)
    else:
        vec = SyncVectorEnv([make] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    return EpisodeStatistics(vec)
