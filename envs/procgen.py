"""Procgen as a gymnasium ``VectorEnv`` over procgen's own vectorised engine (``procgen.ProcgenGym3Env``).

Procgen steps all copies in C++ threads and restarts a finished copy inside the same step: the observation returned
with a done is already the first one of the next episode. That is gymnasium's same-step autoreset, so the adapter
only translates gym3's ``(reward, obs, first)`` into gymnasium's five-tuple and keeps episode statistics. Procgen
reports no time-outs (its games end their own long episodes), so every episode end arrives as ``terminated``; the
last observation of a finished episode is not available (no ``final_obs``).

CoinRun variants of WMAR/ARROW's continual sequence are ``variant`` tags joined by ``+`` (cumulative in the paper):
NB no backgrounds, RT restricted themes, GA generated assets, MA monochrome assets, CA agent not centred.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

# gym3 and procgen declare numpy<2 but run on numpy 2; --no-deps keeps pip from downgrading numpy.
INSTALL = ("pip install --no-deps procgen-mirror==0.10.7 gym3==0.3.3 && "
           "pip install gym==0.26.2 gym-notices imageio cffi filelock")

GAMES = ("bigfish", "bossfight", "caveflyer", "chaser", "climber", "coinrun", "dodgeball", "fruitbot", "heist",
         "jumper", "leaper", "maze", "miner", "ninja", "plunder", "starpilot")
# Modes other than easy/hard exist for some games only; procgen aborts the process on the others, so check first.
MODE_GAMES = {
    "easy": GAMES,
    "hard": GAMES,
    "extreme": ("chaser", "dodgeball", "leaper", "starpilot"),
    "memory": ("caveflyer", "dodgeball", "heist", "jumper", "maze", "miner"),
    "exploration": ("caveflyer", "climber", "coinrun", "heist", "jumper", "leaper", "maze", "ninja"),
}
VARIANT_TAGS = {  # tag -> (procgen option, value that the tag sets)
    "NB": ("use_backgrounds", False),
    "RT": ("restrict_themes", True),
    "GA": ("use_generated_assets", True),
    "MA": ("use_monochrome_assets", True),
    "CA": ("center_agent", False),
}
# WMAR/ARROW's CoinRun sequence: each task adds one change to the previous one.
COINRUN_SEQUENCE = ("", "NB", "NB+RT", "NB+RT+GA", "NB+RT+GA+MA", "NB+RT+GA+MA+CA")
NUM_ACTIONS = 15


def variant_options(variant: str) -> dict[str, bool]:
    """Procgen's rendering options for a ``variant`` such as ``"NB+RT"`` (``""`` is the unmodified game)."""
    options = {"use_backgrounds": True, "restrict_themes": False, "use_generated_assets": False,
               "use_monochrome_assets": False, "center_agent": True}
    for tag in filter(None, variant.split("+")):
        if tag not in VARIANT_TAGS:
            raise ValueError(f"variant: unknown tag {tag!r} in {variant!r}; accepted: tags "
                             f"{', '.join(VARIANT_TAGS)} joined by '+', or '' for the plain game")
        name, value = VARIANT_TAGS[tag]
        options[name] = value
    return options


def load_procgen():
    """procgen's gym3 env class, importing procgen (and old gym, whose import banner is silenced) on first use."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from procgen import ProcgenGym3Env
    except ImportError:
        raise ImportError(f"Procgen envs need procgen; install it with: {INSTALL}") from None
    return ProcgenGym3Env


class ProcgenVector(VectorEnv):
    """``num_envs`` copies of a Procgen game: uint8 observations [N, 64, 64, 3], 15 discrete actions.

    ``num_levels=0`` draws from all levels; otherwise levels ``start_level .. start_level + num_levels - 1``.
    ``info["success"]`` marks episodes that ended by completing the level (read where ``info["_episode"]``).
    Arrays are numpy on the host; ``device`` is accepted for ``envs.make_vector`` and not used.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, num_envs: int, game: str = "coinrun", distribution_mode: str = "hard", num_levels: int = 0,
                 start_level: int = 0, variant: str = "", num_threads: int = 4, device: Any = None):
        if not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        if game not in GAMES:
            raise ValueError(f"game: unknown Procgen game {game!r}; accepted: {', '.join(GAMES)}")
        if distribution_mode not in MODE_GAMES:
            raise ValueError(f"distribution_mode: unknown mode {distribution_mode!r}; "
                             f"accepted: {', '.join(MODE_GAMES)}")
        if game not in MODE_GAMES[distribution_mode]:
            raise ValueError(f"distribution_mode: {game} has no {distribution_mode!r} mode; games with it: "
                             f"{', '.join(MODE_GAMES[distribution_mode])}")
        for name, value in (("num_levels", num_levels), ("start_level", start_level)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if distribution_mode == "exploration" and (num_levels or start_level):
            raise ValueError("num_levels/start_level: exploration mode fixes its own single level; leave both 0")
        self.options = variant_options(variant)  # validates the variant before procgen is touched
        self.gym3_class = load_procgen()
        self.num_envs = num_envs
        self.game, self.variant = game, variant
        self.level_kwargs = {} if distribution_mode == "exploration" else {"num_levels": num_levels,
                                                                             "start_level": start_level}
        self.distribution_mode, self.num_threads = distribution_mode, num_threads
        self.single_observation_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.single_action_space = spaces.Discrete(NUM_ACTIONS)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.episode_return = np.zeros(num_envs, np.float32)
        self.episode_length = np.zeros(num_envs, np.int64)
        self.engine = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start every copy afresh. Procgen seeds all copies from one number, so ``seed`` is one int or None."""
        if seed is not None and not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed: Procgen takes one int for all copies (or None), got {seed!r}")
        self.close_extras()
        # procgen has no reset: a new engine is the only way to restart (and reseed) every copy
        self.engine = self.gym3_class(num=self.num_envs, env_name=self.game, distribution_mode=self.distribution_mode,
                                      num_threads=self.num_threads, rand_seed=None if seed is None else int(seed),
                                      **self.level_kwargs, **self.options)
        self.episode_return[:] = 0.0
        self.episode_length[:] = 0
        _, obs, _ = self.engine.observe()  # gym3 hands out fresh copies of its buffers
        return obs["rgb"], {}

    def step(self, actions):
        if self.engine is None:
            raise RuntimeError("call reset() before step()")
        self.engine.act(as_numpy(actions).astype(np.int32).reshape(self.num_envs))
        reward, obs, first = self.engine.observe()  # obs is already the next episode's start where first is set
        reward = reward.astype(np.float32)
        terminated = first.astype(bool)
        self.episode_return += reward
        self.episode_length += 1
        completed = np.array([i["prev_level_complete"] for i in self.engine.get_info()], dtype=bool)
        info = {"episode": {"r": self.episode_return.copy(), "l": self.episode_length.copy()},
                "_episode": terminated, "success": completed & terminated}
        self.episode_return[terminated] = 0.0
        self.episode_length[terminated] = 0
        return obs["rgb"], reward, terminated, np.zeros(self.num_envs, bool), info

    def close_extras(self, **kwargs):
        if self.engine is not None:
            self.engine.close()
            self.engine = None


def as_numpy(x) -> np.ndarray:
    """Actions as numpy, whether they come as numpy, lists or (possibly GPU) torch tensors."""
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
