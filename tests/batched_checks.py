"""Shared check for batched gridworld tasks: N copies stepped together equal N single envs seeded seed + i."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def _copy(value, i):
    if isinstance(value, dict):
        return {k: _copy(v, i) for k, v in value.items()}
    return value[i].numpy()


def _assert_equal(single, batched):
    if isinstance(single, dict):
        for k in single:
            _assert_equal(single[k], batched[k])
    else:
        np.testing.assert_array_equal(np.asarray(single), batched)


def assert_batched_equals_single(batched, singles: list, actions: Callable[[int], torch.Tensor], steps: int,
                                 seed: int = 0, info_keys: tuple[str, ...] = ()) -> int:
    """Step ``batched`` and each of ``singles`` with ``actions(t) [N]`` for ``steps`` steps, checking observations,
    rewards, terminations, truncations, the final observation at episode ends and ``info_keys`` step for step.
    Single envs are reset by hand where the batched one autoresets. Returns the number of episode ends seen."""
    obs, info = batched.reset(seed=seed)
    singles_obs = []
    for i, s in enumerate(singles):
        o, inf = s.reset(seed=seed + i)
        _assert_info(inf, info, i, info_keys)
        singles_obs.append(o)
    ends = 0
    for t in range(steps):
        for i, o in enumerate(singles_obs):
            _assert_equal(o, _copy(obs, i))
        action = actions(t)
        obs, reward, terminated, truncated, info = batched.step(action)
        for i, s in enumerate(singles):
            o, r, te, tr, inf = s.step(int(action[i]))
            assert (r, te, tr) == (reward[i].item(), terminated[i].item(), truncated[i].item()), (t, i)
            if te or tr:
                ends += 1
                _assert_equal(o, _copy(info["final_obs"], i))
                o, reset_info = s.reset()
                inf = inf | reset_info  # after an autoreset, info describing the observation is the new episode's
            _assert_info(inf, info, i, info_keys)
            singles_obs[i] = o
    return ends


def _assert_info(single_info: dict, batched_info: dict, i: int, keys: tuple[str, ...]) -> None:
    for key in keys:
        if key in single_info or key in batched_info:
            assert single_info[key] == batched_info[key][i].item(), (key, i)
