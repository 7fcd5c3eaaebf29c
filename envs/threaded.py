"""Env stepping for the PPO rollout: host envs step in background threads, their results staged for the device.

``GroupedVector`` joins G independent host vector envs into one ``VectorEnv``: group g owns the columns
``[g * n, (g + 1) * n)``. ``HostStepper`` steps each group in its own thread, so the policy can act for one group
while the others step (procgen's C++ engine and ale-py release the GIL while they step). Each step's results go into
pinned host buffers in that thread and reach the device through non-blocking copies; observations keep their dtype
(uint8 images stay bytes until the encoder). ``DeviceStepper`` offers the same ``send``/``receive`` interface for a
batched env that already steps on the device: no threads, no copies, so a rollout over it can be a CUDA graph.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from envs.procgen import as_numpy


def on_device(env: VectorEnv) -> bool:
    """Batched rlmem tasks step their copies as tensors on a device (and are checkpointable); others are host envs."""
    return hasattr(env, "state_dict")


class GroupedVector(VectorEnv):
    """``groups`` (host vector envs with the same spaces and copy count n) as one env of ``len(groups) * n`` copies.

    ``step`` steps the groups one after the other; ``HostStepper`` steps them concurrently instead.
    """

    def __init__(self, groups: list[VectorEnv]):
        if not groups:
            raise ValueError("groups must be a non-empty list of vector envs")
        first = groups[0]
        for i, env in enumerate(groups):
            if (env.num_envs, env.single_observation_space, env.single_action_space) != \
                    (first.num_envs, first.single_observation_space, first.single_action_space):
                raise ValueError(f"groups[{i}] differs from groups[0] in copy count or spaces; groups must be "
                                 f"built from the same config")
        self.groups = list(groups)
        self.group_size = first.num_envs
        self.num_envs = first.num_envs * len(groups)
        self.columns = [slice(g * self.group_size, (g + 1) * self.group_size) for g in range(len(groups))]
        self.metadata = first.metadata
        self.single_observation_space = first.single_observation_space
        self.single_action_space = first.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset every group; an int ``seed`` gives group g the seed ``seed + g * n``, so no two groups share one
        (for Atari, whose copy i takes ``seed + i``, the copies are seeded exactly as one env of all copies)."""
        results = [env.reset(seed=None if seed is None else int(seed) + g * self.group_size, options=options)
                   for g, env in enumerate(self.groups)]
        return _concat([obs for obs, _ in results]), _merge_infos([info for _, info in results])

    def step(self, actions):
        actions = as_numpy(actions)
        results = [env.step(actions[cols]) for env, cols in zip(self.groups, self.columns)]
        obs, reward, terminated, truncated, infos = zip(*results)
        return _concat(obs), _concat(reward), _concat(terminated), _concat(truncated), _merge_infos(infos)

    def close_extras(self, **kwargs):
        for env in self.groups:
            env.close()


def _concat(parts):
    if isinstance(parts[0], dict):
        return {k: _concat([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate([np.asarray(p) for p in parts])


def _merge_infos(infos) -> dict:
    """Concatenate the groups' infos key by key. A key that only some groups sent on this step (``final_obs`` and
    its ``_final_obs`` mask) is zero-filled for the others, which reads as "not set" through its mask."""
    merged = {}
    for key in dict.fromkeys(k for info in infos for k in info):
        template = next(info[key] for info in infos if key in info)
        parts = [info[key] if key in info else _zeros_like(template) for info in infos]
        merged[key] = _merge_infos(parts) if isinstance(template, dict) else _concat(parts)
    return merged


def _zeros_like(x):
    return {k: _zeros_like(v) for k, v in x.items()} if isinstance(x, dict) else np.zeros_like(np.asarray(x))


# --- steppers ---------------------------------------------------------------------------------------------------------

class Step(NamedTuple):
    """One env step of a group of n copies, as tensors on the training device."""
    obs: Tensor | dict[str, Tensor]  # [n, ...] in the env's dtype
    reward: Tensor  # [n] float32
    done: Tensor  # [n] bool: terminated or truncated
    episode: Tensor | None  # [4, n] float32: episode ended, its return, length, success (None: env gives none)
    context: dict[str, Tensor]  # key -> [n] int64, for the memory's context keys


class DeviceStepper:
    """Steps a batched env that lives on the training device, in the caller's thread, as one group."""

    def __init__(self, env: VectorEnv, context_keys: tuple[str, ...] = ()):
        self.env, self.context_keys = env, tuple(context_keys)
        self.columns = [slice(0, env.num_envs)]
        self.result: tuple | None = None

    def send(self, group: int, actions: Tensor) -> None:
        self.result = self.env.step(actions)

    def close(self) -> None:
        """Nothing to release: the env steps in the caller's thread."""

    def receive(self, group: int) -> Step:
        obs, reward, terminated, truncated, info = self.result
        episode = None
        if "episode" in info:
            ended = info["_episode"].float()
            success = info["success"].float() if "success" in info else torch.zeros_like(ended)
            episode = torch.stack([ended, info["episode"]["r"].float(), info["episode"]["l"].float(), success])
        return Step(obs, reward.float(), terminated | truncated, episode,
                    {k: info[k].long() for k in self.context_keys})


class HostStepper:
    """Steps host vector envs ``groups`` (numpy on the CPU), each in its own thread, for a learner on ``device``.

    ``send(g, actions)`` returns at once: group g's thread waits until the actions have reached pinned host memory,
    steps the env and writes the results into group g's pinned buffers. ``receive(g)`` waits for that step and
    starts non-blocking copies of its results to the device. A group has one step in flight at a time.
    """

    def __init__(self, groups: list[VectorEnv], device: torch.device, context_keys: tuple[str, ...] = ()):
        self.groups, self.device, self.context_keys = list(groups), device, tuple(context_keys)
        n = groups[0].num_envs
        self.columns = [slice(g * n, (g + 1) * n) for g in range(len(groups))]
        pin = device.type == "cuda"  # pinning needs CUDA; on a CPU learner the copies are plain
        space = groups[0].single_observation_space
        self.staged = [self._buffers(space, n, torch.device("cpu"), pin) for _ in groups]
        self.landed = [self._buffers(space, n, device, False) for _ in groups]
        self.actions = [torch.empty(n, dtype=torch.int64, pin_memory=pin) for _ in groups]
        self.actions_ready = [torch.cuda.Event() if pin else None for _ in groups]
        self.pool = ThreadPoolExecutor(len(groups), thread_name_prefix="env-step")
        self.pending: list[Future | None] = [None] * len(groups)

    def _buffers(self, space: spaces.Space, n: int, device: torch.device, pin: bool) -> dict[str, Any]:
        """Room for one step of n copies: obs, rows [reward, done, ended, return, length, success], context ids."""
        empty = lambda shape, dtype: torch.empty(shape, dtype=dtype, device=device, pin_memory=pin)  # noqa: E731
        return {"obs": _space_map(lambda s: empty((n, *s.shape), _torch_dtype(s.dtype)), space),
                "scalars": empty((6, n), torch.float32),
                "context": empty((len(self.context_keys), n), torch.int64)}

    def send(self, group: int, actions: Tensor) -> None:
        self.actions[group].copy_(actions, non_blocking=True)
        if self.actions_ready[group] is not None:
            self.actions_ready[group].record()
        self.pending[group] = self.pool.submit(self._step, group)

    def _step(self, group: int) -> None:
        """Runs in group's thread: one env step, its results written into the group's host buffers."""
        if self.actions_ready[group] is not None:
            self.actions_ready[group].synchronize()
        obs, reward, terminated, truncated, info = self.groups[group].step(self.actions[group].numpy())
        staged = self.staged[group]
        _copy(staged["obs"], obs)
        scalars = staged["scalars"]
        scalars[0] = torch.as_tensor(reward)
        scalars[1] = torch.as_tensor(terminated | truncated)
        scalars[2:] = 0.0
        if "episode" in info:
            scalars[2] = torch.as_tensor(info["_episode"])
            scalars[3] = torch.as_tensor(info["episode"]["r"])
            scalars[4] = torch.as_tensor(info["episode"]["l"])
            if "success" in info:
                scalars[5] = torch.as_tensor(info["success"])
        for i, key in enumerate(self.context_keys):
            staged["context"][i] = torch.as_tensor(info[key])

    def receive(self, group: int) -> Step:
        self.pending[group].result()  # raises here what the env raised in its thread
        staged, landed = self.staged[group], self.landed[group]
        _copy(landed["obs"], staged["obs"], non_blocking=True)
        landed["scalars"].copy_(staged["scalars"], non_blocking=True)
        landed["context"].copy_(staged["context"], non_blocking=True)
        scalars = landed["scalars"]
        return Step(landed["obs"], scalars[0], scalars[1].bool(), scalars[2:],
                    {k: landed["context"][i] for i, k in enumerate(self.context_keys)})

    def close(self) -> None:
        self.pool.shutdown()


def make_stepper(env: VectorEnv, groups: int, device: torch.device, context_keys: tuple[str, ...] = ()):
    """The stepper for ``env``: on-device envs step as one group; host envs as ``groups`` groups, which for
    ``groups > 1`` are the groups of a ``GroupedVector``."""
    if on_device(env):
        return DeviceStepper(env, context_keys)
    return HostStepper(env.groups if groups > 1 else [env], device, context_keys)


def _space_map(fn, space: spaces.Space):
    return {k: fn(s) for k, s in space.spaces.items()} if isinstance(space, spaces.Dict) else fn(space)


def _torch_dtype(dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


def _copy(dst, src, non_blocking: bool = False) -> None:
    """Copy (dicts of) arrays or tensors ``src`` into the tensors ``dst``."""
    if isinstance(dst, dict):
        for k in dst:
            dst[k].copy_(torch.as_tensor(src[k]), non_blocking=non_blocking)
    else:
        dst.copy_(torch.as_tensor(src), non_blocking=non_blocking)
