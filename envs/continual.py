"""Continual-learning task sequences: one vector env that trains on a list of tasks in turn.

Each task is a registered ``rlmem/`` vector env built with the same number of copies. The sequence spends
``steps_per_task`` env steps (summed over copies, the unit of PPO's ``total_steps``) on each task, in the given or
reversed order, ``cycles`` times, then stays on the last task. ``info["task"]`` ([N] int64) holds the active task's
index in ``tasks`` (the same index whatever the order), so memories can read it as the ``"task"`` context and logs
can name it. At a switch every copy starts a fresh episode of the next task: the cut episodes end as ``truncated``
and are left out of the episode statistics (they measure nothing about either task).

Tasks must share the observation space. Action counts may differ: the sequence offers the largest count and an
action a task does not have is replaced by action 0 (NOOP in Atari). Evaluation builds one task alone with
``make_task`` (see ``experiments/continual_metrics.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.procgen import as_numpy

TASK_KEYS = ("id", "kwargs", "name", "random", "reference")


def check_task(i: int, task: dict) -> dict:
    """A task entry with its defaults: ``id`` (required), ``kwargs``, ``name``, ``random`` and ``reference`` scores."""
    if not isinstance(task, dict) or "id" not in task:
        raise ValueError(f"tasks[{i}]: expected a mapping with at least an 'id', got {task!r}")
    unknown = sorted(set(task) - set(TASK_KEYS))
    if unknown:
        raise ValueError(f"tasks[{i}]: unknown key {unknown[0]!r}; accepted: {', '.join(TASK_KEYS)}")
    return {"kwargs": {}, "name": task["id"], "random": 0.0, "reference": 1.0} | dict(task)


def sequence_segments(num_tasks: int, steps_per_task: int, num_envs: int, cycles: int = 1,
                      reverse: bool = False) -> list[tuple[int, int, int]]:
    """``(task, first step, end step)`` of every segment, in env steps summed over copies."""
    order = list(range(num_tasks))[::-1] if reverse else list(range(num_tasks))
    length = (steps_per_task // num_envs) * num_envs  # a switch happens between whole vector steps
    return [(task, k * length, (k + 1) * length) for k, task in enumerate(order * cycles)]


class ContinualVector(VectorEnv):
    """Trains on ``tasks`` in turn. ``task_kwargs`` are shared constructor arguments that each task's own override."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int, tasks: list[dict], steps_per_task: int, cycles: int = 1,
                 reverse: bool = False, task_kwargs: dict | None = None, device: Any = "cpu"):
        if not isinstance(tasks, (list, tuple)) or not tasks:
            raise ValueError(f"tasks must be a non-empty list of {{id, kwargs, ...}} mappings, got {tasks!r}")
        self.tasks = [check_task(i, t) for i, t in enumerate(tasks)]
        self.num_tasks = len(self.tasks)  # info["task"] lies in [0, num_tasks) (what AMA's allocator conditions on)
        if not isinstance(cycles, int) or cycles < 1:
            raise ValueError(f"cycles must be a positive integer, got {cycles!r}")
        if not isinstance(steps_per_task, int) or steps_per_task < num_envs:
            raise ValueError(f"steps_per_task must be an integer >= num_envs ({num_envs}), got {steps_per_task!r}")
        self.num_envs, self.device = num_envs, device
        self.task_kwargs = dict(task_kwargs or {})
        self.steps_per_task = steps_per_task
        self.vector_steps_per_task = steps_per_task // num_envs  # a switch happens after this many step() calls
        self.segments = sequence_segments(len(self.tasks), steps_per_task, num_envs, cycles, reverse)
        self.schedule = [task for task, _, _ in self.segments]  # task index of each segment
        self.envs = [self.make_task(i, num_envs) for i in range(len(self.tasks))]
        first = self.envs[0]
        for i, env in enumerate(self.envs):
            if env.single_observation_space != first.single_observation_space:
                raise ValueError(f"tasks[{i}] ({self.tasks[i]['name']}): observation space "
                                 f"{env.single_observation_space} differs from tasks[0]'s "
                                 f"{first.single_observation_space}; a sequence needs one observation space")
            if not isinstance(env.single_action_space, spaces.Discrete):
                raise ValueError(f"tasks[{i}]: action space {env.single_action_space}; accepted: Discrete")
        self.num_actions = [int(env.single_action_space.n) for env in self.envs]
        self.single_observation_space = first.single_observation_space
        self.single_action_space = spaces.Discrete(max(self.num_actions))
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.step_count = 0  # step() calls since reset
        self.seed_base: int | None = None
        self.seed_base: int | None = None

    def make_task(self, index: int, num_envs: int) -> VectorEnv:
        """Task ``index`` alone as a vector env of ``num_envs`` copies (for training here, or for evaluation)."""
        import envs

        task = self.tasks[index]
        return envs.make_vector(task["id"], num_envs, device=self.device, **(self.task_kwargs | task["kwargs"]))

    @property
    def total_steps(self) -> int:
        """Env steps (summed over copies) until the last segment ends."""
        return self.segments[-1][2]

    @property
    def active(self) -> int:
        """Index (into ``tasks``) of the task being trained."""
        segment = min(self.step_count // self.vector_steps_per_task, len(self.schedule) - 1)
        return self.schedule[segment]

    def seek(self, step_count: int):
        """Continue the sequence ``step_count`` step() calls after the last reset (a resumed run): the active
        task's copies start fresh episodes, seeded as that reset's seed asks. Returns ``(obs, info)``."""
        if isinstance(step_count, bool) or not isinstance(step_count, (int, np.integer)) or step_count < 0:
            raise ValueError(f"step_count: a non-negative int of step() calls, got {step_count!r}")
        self.step_count = int(step_count)
        return self._start(self.active)

    def _start(self, task: int):
        seed = None if self.seed_base is None else self.seed_base + 1009 * task + self.step_count
        obs, info = self.envs[task].reset(seed=seed)
        return obs, self._with_task(info, task)

    def _with_task(self, info: dict, task: int) -> dict:
        return dict(info) | {"task": np.full(self.num_envs, task, dtype=np.int64)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Back to the first segment. ``seed`` (an int) seeds each task start reproducibly."""
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed: a task sequence takes one int (or None), got {seed!r}")
        self.seed_base = None if seed is None else int(seed)
        self.step_count = 0
        return self._start(self.active)

    def step(self, actions):
        task = self.active
        action = as_numpy(actions).astype(np.int64).reshape(self.num_envs)
        action = np.where(action < self.num_actions[task], action, 0)
        obs, reward, terminated, truncated, info = self.envs[task].step(action)
        self.step_count += 1
        if self.active != task:  # the segment ended: cut every episode and start the next task
            obs, start_info = self._start(self.active)
            truncated = ~terminated
            info = dict(info) | {"_episode": info["_episode"] & terminated}
            info = {k: v for k, v in info.items() if k in ("episode", "_episode", "success")} | start_info
        return obs, reward, terminated, truncated, self._with_task(info, self.active)

    def close_extras(self, **kwargs):
        for env in self.envs:
            env.close()
