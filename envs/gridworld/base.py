"""The shared frame for gridworld tasks written once as batched array programs.

A task subclasses :class:`BatchedEnv` and writes three array functions over all copies at once: ``_reset_copies``
(start a new episode where a mask is true), ``_transition`` (apply one action per copy) and ``_observe``. The base
class turns that into a gymnasium ``VectorEnv`` whose arrays are torch tensors on a chosen device (thousands of copies
step together on a GPU), with same-step autoreset, time limits, episode statistics, per-copy seeding and a
checkpointable state. :class:`SingleEnv` runs one copy on the CPU as a plain numpy ``gymnasium.Env``.

Everything is written with masks (``torch.where``), never Python branches on tensor values, so a step never waits on
the GPU and copy ``i`` of N copies behaves exactly as a single copy seeded ``seed + i``.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from envs.gridworld.rng import CopyRNG

# Draws made while resetting a copy use slots [0, 32); draws made by a step use [32, 64).
RESET_SLOT, STEP_SLOT = 0, 32
# Slot s + SLOTS at step t is slot s at step t + 1: a step can draw its autoreset's numbers in its own hash call.
AUTORESET_SLOT = CopyRNG.SLOTS + RESET_SLOT


class BatchedEnv(VectorEnv):
    """N copies of a task as one torch program. Subclasses set the spaces and ``max_steps`` in ``__init__``."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}
    single_observation_space: gymnasium.Space
    single_action_space: gymnasium.Space
    max_steps: int  # episodes longer than this are truncated
    state_keys: tuple[str, ...] = ()  # the task's own per-copy state tensors, for state_dict()

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", autoreset: bool = True):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.autoreset = autoreset
        n = num_envs
        self.seeds = torch.arange(n, dtype=torch.int64, device=self.device)
        # Two clocks that every step advances, as rows of one tensor so that one add moves both.
        self.clocks = torch.zeros(2, n, dtype=torch.int64, device=self.device)
        self.counter = self.clocks[0]  # steps since seeding: the RNG clock
        self.elapsed = self.clocks[1]  # steps in the current episode
        self.episode_return = torch.zeros(n, dtype=torch.float32, device=self.device)
        self.rng = CopyRNG(self.seeds)
        self._seeded = False

    def _finish_spaces(self) -> None:
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    # --- what a task writes -------------------------------------------------------------------------------------
    def _reset_copies(self, mask: Tensor) -> None:
        """Start a new episode in the copies where ``mask [N]`` is true; draw at slots ``RESET_SLOT + k``."""
        raise NotImplementedError

    def _autoreset_copies(self, mask: Tensor) -> None:
        """The reset right after a step, which has already advanced the clock. A task whose ``_transition`` drew
        these numbers (at slots ``AUTORESET_SLOT + k``) overrides this to reuse them: one hash call fewer."""
        self._reset_copies(mask)

    def _transition(self, action: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Apply ``action [N]``; return ``reward [N] float32``, ``terminated [N] bool`` and per-copy info tensors."""
        raise NotImplementedError

    def _observe(self) -> Tensor | dict[str, Tensor]:
        raise NotImplementedError

    def _observation_info(self) -> dict[str, Tensor]:
        """Per-copy info describing the observation being returned (e.g. the agent's place); none by default."""
        return {}

    # --- helpers for tasks --------------------------------------------------------------------------------------
    def uniform(self, slot: int) -> Tensor:
        return self.rng.uniform(self.counter, slot)

    def integers(self, slot: int, high: int | Tensor) -> Tensor:
        return self.rng.integers(self.counter, slot, high)

    # --- the gymnasium API --------------------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is None and not self._seeded:
            seed = int(np.random.SeedSequence().generate_state(1)[0] >> 1)
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"seed: expected an int or {self.num_envs} ints, got {len(seeds)}")
            self.seeds.copy_(torch.tensor(seeds, dtype=torch.int64))
            self.rng.reseed()
            self.counter.zero_()
            self._seeded = True
        everything = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        self._reset_copies(everything)
        self._clear_episode_stats(everything)
        return self._observe(), self._observation_info()

    def step(self, actions):
        action = torch.as_tensor(actions, device=self.device).long().view(self.num_envs)
        reward, terminated, task_info = self._transition(action)
        self.clocks += 1
        length = self.elapsed.clone()
        done = terminated | (length >= self.max_steps)
        truncated = done ^ terminated  # the time limit, where the task did not end the episode itself
        info: dict[str, Any] = dict(task_info)
        info["episode"] = {"r": self.episode_return.add_(reward).clone(), "l": length}
        info["_episode"] = done
        obs = self._observe()
        if self.autoreset:
            info["final_obs"], info["_final_obs"] = obs, done
            self._autoreset_copies(done)
            self._clear_episode_stats(done)
            obs = self._observe()
        info |= self._observation_info()  # after the autoreset: it describes the returned observation
        return obs, reward, terminated, truncated, info

    def _clear_episode_stats(self, mask: Tensor) -> None:
        self.elapsed.masked_fill_(mask, 0)
        self.episode_return.masked_fill_(mask, 0.0)

    # --- checkpointing ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Tensor]:
        keys = ("seeds", "counter", "elapsed", "episode_return") + self.state_keys
        return {k: getattr(self, k).clone() for k in keys}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for k, v in state.items():
            getattr(self, k).copy_(v.to(self.device))
        self.rng.reseed()
        self._seeded = True


class SingleEnv(gymnasium.Env):
    """One copy of a batched task on the CPU, with numpy arrays: the plain gymnasium ``Env`` of a task."""

    batched_cls: type[BatchedEnv]

    def __init__(self, render_mode: str | None = None, **task_kwargs):
        self.core = self.batched_cls(num_envs=1, device="cpu", autoreset=False, **task_kwargs)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self.metadata = {"render_modes": self.core.metadata["render_modes"], "render_fps": 8}
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode: {render_mode!r} not supported; accepted: {self.metadata['render_modes']}")
        self.render_mode = render_mode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None and not self.core._seeded:
            seed = int(self.np_random.integers(2**31))
        obs, info = self.core.reset(seed=seed)
        return _first_copy(obs), _first_copy_info(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.core.step(torch.tensor([int(action)]))
        return _first_copy(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), _first_copy_info(info)

    def render(self):
        if self.render_mode == "rgb_array":
            return self.core.render_rgb()[0].cpu().numpy()
        return None


def _first_copy(obs: Tensor | dict[str, Tensor]):
    """Copy 0 of a batched observation as numpy; scalars become numpy scalars, as gymnasium spaces sample them."""
    if isinstance(obs, dict):
        return {k: _first_copy(v) for k, v in obs.items()}
    value = obs[0].cpu().numpy()
    return value[()] if value.ndim == 0 else value


def _first_copy_info(info: dict) -> dict:
    return {k: v[0].item() for k, v in info.items() if isinstance(v, Tensor) and not k.startswith("_")}
