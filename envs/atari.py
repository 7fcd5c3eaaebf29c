"""Atari as a gymnasium ``VectorEnv`` over ALE's threaded vector engine (``ale_py.vector_env.AtariVectorEnv``).

The engine does the preprocessing (frame skip, max-pool, grey or RGB, resizing, no-op starts, sticky actions) in C++
threads. It defaults to next-step autoreset; we ask it for same-step autoreset (the observation returned with a done
is the first of the next game, the finished game's last one is in ``info["final_obs"]``), which is what our PPO
expects. Observations are laid out [H, W, C] for our image encoders: C is the frame stack, times 3 for RGB.

Two things the engine would do differently are done here instead:
- Rewards come from the engine unclipped; we clip them (``reward_clipping``) after adding the true reward to the
  episode return, so ``info["episode"]["r"]`` is the game score.
- ``episodic_life``: ALE's own flag restarts the whole game at every life loss. We keep the game going and only
  report the life loss as ``terminated`` (the DQN convention), detected as a drop in ``info["lives"]``. Episode
  statistics (``info["episode"]``, ``info["_episode"]``) still cover whole games.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.procgen import as_numpy

INSTALL = "pip install ale-py==0.12.1"
# Registered as rlmem/atari-<game>-v0: WMAR/ARROW's sequence (and ARROW's two extra games), Breakout and Pong.
GAMES = ("ms_pacman", "boxing", "crazy_climber", "frostbite", "seaquest", "enduro", "breakout", "pong")
SIZES = (64, 84)


def load_ale():
    try:
        import ale_py.vector_env
        from ale_py import roms
    except ImportError:
        raise ImportError(f"Atari envs need ale-py; install it with: {INSTALL}") from None
    return ale_py.vector_env.AtariVectorEnv, roms.get_all_rom_ids()


class AtariVector(VectorEnv):
    """``num_envs`` copies of an Atari game with uint8 observations [N, size, size, C].

    Defaults follow Machado et al. (2018): sticky actions 0.25, no life-loss terminals, minimal action set; WMAR's
    setting is ``repeat_action_probability=0, full_action_space=True, grayscale=False, size=64``.
    ``max_episode_frames`` counts emulator frames (before frame skip); a game cut there ends as ``truncated``.
    Arrays are numpy on the host; ``device`` is accepted for ``envs.make_vector`` and not used.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int, game: str = "breakout", frameskip: int = 4, maxpool: bool = True,
                 grayscale: bool = True, size: int = 84, frame_stack: int = 1,
                 repeat_action_probability: float = 0.25, full_action_space: bool = False,
                 episodic_life: bool = False, reward_clipping: bool = True, noop_max: int = 30,
                 max_episode_frames: int = 108_000, num_threads: int = 0, device: Any = None):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        for name, value, low in (("frameskip", frameskip, 1), ("frame_stack", frame_stack, 1),
                                 ("noop_max", noop_max, 0), ("max_episode_frames", max_episode_frames, 1),
                                 ("num_threads", num_threads, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if size not in SIZES:
            raise ValueError(f"size: {size!r} not supported; accepted: {', '.join(map(str, SIZES))}")
        if not 0.0 <= repeat_action_probability <= 1.0:
            raise ValueError(f"repeat_action_probability must be in [0, 1], got {repeat_action_probability!r}")
        engine_class, roms = load_ale()
        if game not in roms:
            raise ValueError(f"game: unknown Atari game {game!r}; accepted: {', '.join(roms)}")
        self.engine = engine_class(
            game, num_envs, num_threads=num_threads, max_num_frames_per_episode=max_episode_frames,
            repeat_action_probability=repeat_action_probability, full_action_space=full_action_space,
            autoreset_mode=AutoresetMode.SAME_STEP, img_height=size, img_width=size, grayscale=grayscale,
            stack_num=frame_stack, frameskip=frameskip, maxpool=maxpool, noop_max=noop_max,
            episodic_life=False, reward_clipping=False)
        self.num_envs, self.game = num_envs, game
        self.episodic_life, self.reward_clipping = episodic_life, reward_clipping
        channels = frame_stack * (1 if grayscale else 3)
        self.single_observation_space = spaces.Box(0, 255, (size, size, channels), np.uint8)
        self.single_action_space = spaces.Discrete(self.engine.single_action_space.n)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.episode_return = np.zeros(num_envs, np.float32)
        self.episode_length = np.zeros(num_envs, np.int64)
        self.lives = np.zeros(num_envs, np.int32)

    def _layout(self, obs: np.ndarray) -> np.ndarray:
        """Engine frames [N, S, H, W] or [N, S, H, W, 3] -> [N, H, W, C] (a view when S = 1)."""
        n, s, h, w = obs.shape[:4]
        if s == 1:
            return obs.reshape(n, h, w, -1)
        moved = np.moveaxis(obs, 1, 3)  # [N, H, W, S] or [N, H, W, S, 3]
        return np.ascontiguousarray(moved).reshape(n, h, w, -1)

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Start every copy afresh; ``seed`` is an int (copy i gets seed + i), one int per copy, or None."""
        if seed is not None and not isinstance(seed, (int, np.integer)):
            seed = np.asarray(seed, dtype=np.int64)
            if seed.shape != (self.num_envs,):
                raise ValueError(f"seed: expected an int or {self.num_envs} ints, got shape {seed.shape}")
        obs, info = self.engine.reset(seed=None if seed is None else seed if isinstance(seed, np.ndarray)
                                      else int(seed))
        self.episode_return[:] = 0.0
        self.episode_length[:] = 0
        self.lives[:] = info["lives"]
        return self._layout(obs), {"lives": info["lives"]}

    def step(self, actions):
        obs, reward, terminated, truncated, engine_info = self.engine.step(
            np.ascontiguousarray(as_numpy(actions), dtype=np.int64).reshape(self.num_envs))
        reward = reward.astype(np.float32)
        game_over = terminated | truncated
        self.episode_return += reward
        self.episode_length += 1
        info = {"episode": {"r": self.episode_return.copy(), "l": self.episode_length.copy()},
                "_episode": game_over, "lives": engine_info["lives"]}
        if "final_obs" in engine_info:  # the engine sends it only on steps where some game ended
            info["final_obs"], info["_final_obs"] = self._layout(engine_info["final_obs"]), game_over
        if self.episodic_life:  # a life lost mid-game ends the agent's episode; the game goes on
            terminated = terminated | ((engine_info["lives"] < self.lives) & ~game_over)
        self.lives[:] = engine_info["lives"]
        self.episode_return[game_over] = 0.0
        self.episode_length[game_over] = 0
        if self.reward_clipping:
            reward = np.clip(reward, -1.0, 1.0)
        return self._layout(obs), reward, terminated, truncated, info

    def close_extras(self, **kwargs):
        self.engine.close()
